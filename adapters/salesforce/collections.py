"""sObject Collections with ``allOrNone: false``: up to 200 records a call, each with its own outcome.

Salesforce answers such a call 200 with one result per record, in order: ``{id, success:
true}`` or ``{success: false, errors: [...]}``. A record it refuses fails only the action
it belongs to; the records of other actions in the same call are written. Writes of many
actions are packed into calls without splitting an action's records across two calls
where they fit in one, so an action is rarely left half written by a call that fails whole.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

from adapters.salesforce.attempts import Attempts
from adapters.salesforce.client import SalesforceClient
from adapters.salesforce.errors import record_error
from connector.errors import CrmError, CrmPermanent, OutcomeUnknown

T = TypeVar("T")
LIMIT = 200  # records per sObject Collections call
IDS_PER_QUERY = 200  # ids in one SOQL IN list: a query well under the URL's length limit


def collect(
    client: SalesforceClient, method: str, path: str, records: list[dict[str, Any]]
) -> list[str | CrmError]:
    """One call: each record's id, or the error Salesforce gave that record alone."""
    answers = client.rest(path, method=method, json={"allOrNone": False, "records": records})
    answers = list(answers or [])
    if len(answers) != len(records):
        raise CrmPermanent(f"salesforce: {len(answers)} results for {len(records)} records", detail=answers)
    return [str(a["id"]) if a.get("success") else record_error(a) for a in answers]


def write_all(
    client: SalesforceClient,
    method: str,
    path: str,
    groups: list[list[dict[str, Any]]],
    distinct: Callable[[dict[str, Any]], Hashable] | None = None,
) -> list[tuple[dict[int, str], CrmError | None]]:
    """Every group's records (one group per action) in calls of 200: the ids written, by
    position in the group, and the group's first error.

    A call that fails whole fails the groups in it; when every call failed whole, an error
    is raised instead (every action of the batch shares it): an unknown outcome if any was.
    """
    outcomes: list[tuple[dict[int, str], CrmError | None]] = [({}, None) for _ in groups]
    calls, failed = pack(groups, distinct=distinct), []
    for call in calls:
        try:
            answers: Sequence[str | CrmError] = collect(client, method, path, [r for _, _, r in call])
        except CrmError as exc:
            failed.append(exc)
            answers = [exc] * len(call)
        for (g, position, _), answer in zip(call, answers, strict=True):
            created, error = outcomes[g]
            if isinstance(answer, str):
                created[position] = answer
            else:
                outcomes[g] = (created, error or answer)
    if calls and len(failed) == len(calls):  # an unknown outcome first: every action then looks next time
        raise next((e for e in failed if isinstance(e, OutcomeUnknown)), failed[0])
    return outcomes


def undo(
    client: SalesforceClient, attempts: Attempts, key: str, created: list[str], error: CrmError
) -> CrmError:
    """What a failed action comes to: left as if not tried (the records it wrote now are
    removed again), or, when that cannot be known, unsure, so its next attempt looks first."""
    if not isinstance(error, OutcomeUnknown) and (not created or delete(client, created)):
        return error
    attempts.outcome_unknown(key)
    if isinstance(error, OutcomeUnknown):
        return error
    return OutcomeUnknown(
        f"{error} (and {len(created)} record(s) it wrote could not be removed)", detail=error.detail
    )


def delete(client: SalesforceClient, record_ids: Sequence[str]) -> bool:
    """Delete the records (an action's half-written ones); whether every one is gone."""
    try:
        for chunk in chunks(list(record_ids), LIMIT):
            answers = client.rest(
                "composite/sobjects", method="DELETE", params={"ids": ",".join(chunk), "allOrNone": "false"}
            )
            if not all(a.get("success") for a in answers or []):
                return False
    except CrmError:
        return False
    return True


def pack(
    groups: Sequence[Sequence[T]], size: int = LIMIT, distinct: Callable[[T], Hashable] | None = None
) -> list[list[tuple[int, int, T]]]:
    """Each group's items as (group, position, item), in calls of at most ``size``.

    A group that fits in the call being filled goes whole into it, else a new call starts;
    only a group larger than a call is split. With ``distinct``, no two items of a call share
    its value (Salesforce refuses the same record twice in one update).
    """
    calls: list[list[tuple[int, int, T]]] = []
    current: list[tuple[int, int, T]] = []
    seen: set[Hashable] = set()
    for g, group in enumerate(groups):
        keys = {distinct(item) for item in group} if distinct else set()
        if current and (len(current) + len(group) > size or keys & seen):
            calls.append(current)
            current, seen = [], set()
        for position, item in enumerate(group):
            if len(current) == size:
                calls.append(current)
                current, seen = [], set()
            current.append((g, position, item))
        seen |= keys
    if current:
        calls.append(current)
    return calls


def chunks(items: list[T], size: int = IDS_PER_QUERY) -> list[list[T]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
