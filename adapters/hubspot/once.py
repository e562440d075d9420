"""Creating tasks and notes once, though HubSpot has no idempotency header.

Every record an action writes carries a marker of the action's idempotency key
(``records.marked``). Before writing, one CONTAINS_TOKEN search finds what an earlier
attempt created, and only the rest is created. HubSpot's search index trails its writes by
a few seconds, so right after an attempt whose outcome is unknown (5xx, timeout, dropped
connection) a search that finds nothing is not trusted: the caller is asked to come back
later (CrmTransient) rather than risk writing twice.

A new process knows nothing of what an earlier one tried. When the worker claims an action
again after its lease ran out (the worker that held it died mid-way), it says so
(``outcome_unknown``): the next search for that key first waits until the index lag has
passed since the dead attempt could last have written, so what it wrote is found, not
written again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from adapters.hubspot import records
from adapters.hubspot.api import BATCH_LIMIT, HubSpotApi, chunks
from adapters.hubspot.errors import OutcomeUnknown
from connector.clock import Clock, utcnow
from connector.errors import CrmTransient

INDEX_LAG_SECONDS = 20.0  # how long HubSpot's search may miss a record just written
BODY = {"tasks": "hs_task_body", "notes": "hs_note_body"}  # where the marker goes


class CreateOnce:
    def __init__(
        self,
        api: HubSpotApi,
        *,
        lag_seconds: float = INDEX_LAG_SECONDS,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.lag_seconds = lag_seconds
        self.clock = clock
        self._sleep = sleep
        self._unsure: dict[str, float] = {}  # idempotency key → when an attempt's outcome was lost
        self._settles: dict[str, datetime] = {}  # idempotency key → when a dead attempt's writes show

    def outcome_unknown(self, key: str, since: datetime) -> None:
        """An attempt of ``key`` in another process may have written until ``since``."""
        now = self.clock()  # keys never searched (a property update) are forgotten once settled
        self._settles = {k: at for k, at in self._settles.items() if at > now}
        self._settles[key] = since + timedelta(seconds=self.lag_seconds)

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
        self._wait_for_index(key)
        body = BODY[object_type]
        marker = {"property_name": body, "operator": "CONTAINS_TOKEN", "value": records.token(key)}
        found: dict[int, str] = {}
        for record in self.api.search(object_type, [marker], [body]):
            position = records.position((record.properties or {}).get(body), key)
            if position is not None:
                found.setdefault(position, str(record.id))
        return found

    def _wait_for_index(self, key: str) -> None:
        """Wait out the index lag after a dead attempt of ``key``, so the search sees what it wrote.

        Waiting here, not in the queue: the worker renews the action's lease meanwhile, and a
        back-off in the queue would cost an attempt and far longer than the lag.
        """
        settles = self._settles.pop(key, None)
        if settles is None:
            return
        wait = (settles - self.clock()).total_seconds()
        if wait > 0:
            self._sleep(wait)

    def _trust_search(self, key: str) -> None:
        since = self._unsure.get(key)
        if since is not None and self.api.limits.now() - since < self.lag_seconds:
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
