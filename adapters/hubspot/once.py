"""Creating tasks and notes once, though HubSpot has no idempotency header.

Every record an action writes carries a marker of the action's idempotency key
(``records.marked``). Before writing, one CONTAINS_TOKEN search finds what an earlier
attempt created, and only the rest is created. HubSpot's search index trails its writes by
a few seconds, so right after an attempt whose outcome is unknown (5xx, timeout, dropped
connection) a search that finds nothing is not trusted: the caller is asked to come back
later (CrmTransient) rather than risk writing twice.
"""

from __future__ import annotations

from typing import Any

from adapters.hubspot import records
from adapters.hubspot.api import BATCH_LIMIT, HubSpotApi, chunks
from adapters.hubspot.errors import OutcomeUnknown
from connector.errors import CrmTransient

INDEX_LAG_SECONDS = 20.0  # how long HubSpot's search may miss a record just written
BODY = {"tasks": "hs_task_body", "notes": "hs_note_body"}  # where the marker goes


class CreateOnce:
    def __init__(self, api: HubSpotApi) -> None:
        self.api = api
        self._unsure: dict[str, float] = {}  # idempotency key → when an attempt's outcome was lost

    def create(
        self, object_type: str, inputs: list[dict[str, Any]], key: str, found: dict[int, str] | None = None
    ) -> list[str]:
        """Create what an earlier attempt of ``key`` did not (``found``, or searched); every id, in order."""
        ids = self.existing(object_type, key) if found is None else found
        missing = [n for n in range(len(inputs)) if n not in ids]
        if missing:
            self._trust_search(key)
            for chunk in chunks(missing, BATCH_LIMIT):  # one batch/create call per 100
                ids.update(self._create_chunk(object_type, inputs, chunk, key))
        self._unsure.pop(key, None)
        return [ids[n] for n in range(len(inputs))]

    def existing(self, object_type: str, key: str) -> dict[int, str]:
        """What earlier attempts of ``key`` created, by position."""
        body = BODY[object_type]
        marker = {"property_name": body, "operator": "CONTAINS_TOKEN", "value": records.token(key)}
        found: dict[int, str] = {}
        for record in self.api.search(object_type, [marker], [body]):
            position = records.position((record.properties or {}).get(body), key)
            if position is not None:
                found.setdefault(position, str(record.id))
        return found

    def _trust_search(self, key: str) -> None:
        since = self._unsure.get(key)
        if since is not None and self.api.limits.now() - since < INDEX_LAG_SECONDS:
            raise CrmTransient(
                "an earlier attempt may have written these; waiting for HubSpot's search index "
                "to show them before writing again"
            )

    def _create_chunk(
        self, object_type: str, inputs: list[dict[str, Any]], chunk: list[int], key: str
    ) -> dict[int, str]:
        try:
            created = self.api.create_batch(object_type, [inputs[n] for n in chunk])
        except OutcomeUnknown:
            self._unsure[key] = self.api.limits.now()
            raise
        # HubSpot does not promise the input order in a batch answer: the markers say which is which.
        body = BODY[object_type]
        by_marker = {records.position((r.properties or {}).get(body), key): str(r.id) for r in created}
        if set(by_marker) == set(chunk):
            return {n: by_marker[n] for n in chunk}
        return {n: str(r.id) for n, r in zip(chunk, created, strict=True)}
