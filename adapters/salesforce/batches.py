"""Field updates of many actions together, and the reads behind many inbound events.

Field updates are an sObject Collections PATCH of up to 200 records (``allOrNone:
false``): setting the same values again is harmless, so they carry no marker and a retry
simply sets them again. Two updates of one record never share a call (Salesforce refuses
a record twice in one request); a record it refuses fails only its own action.

The inbound events of many Opportunities are read with one SOQL ``IN`` query per 200
Opportunities, each with its Account, Owner, contract fields and contact roles, and each
event is then read exactly as ``interpret`` reads one. A task event needs no read: it is a
``TaskChange`` (``checklist``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import adapters.salesforce.ids as ids
import adapters.salesforce.soql as soql
from adapters.base import Results, Write
from adapters.salesforce.checklist import task_change
from adapters.salesforce.client import SalesforceClient
from adapters.salesforce.collections import chunks, write_all
from adapters.salesforce.writes import check_id
from connector.errors import CrmError, CrmPermanent, PayloadInvalid, SettingsInvalid
from connector.models import Deal, DealChange, PropertyUpdate, TaskChange

SOBJECTS = {"deal": "Opportunity", "company": "Account", "contact": "Contact"}


def api_name(name: str) -> str:
    """A playbook property name as a Salesforce field: ``offboarding_status`` → ``Offboarding_Status__c``.

    Names that already look like API names (``Description``, ``Custom__c``) pass
    unchanged, so one playbook works on HubSpot and Salesforce alike.
    """
    if "__" in name or name[:1].isupper():
        return soql.field_path(name, "playbook property")
    custom = "_".join(part.capitalize() for part in name.split("_") if part) + "__c"
    return soql.field_path(custom, "playbook property")


def field_values(update: PropertyUpdate) -> tuple[str, dict[str, Any]]:
    """The sObject and the field values of an update; CrmPermanent for a bad id or field name.

    An empty value clears the field: Salesforce takes null for that on every field type, while
    an empty string is refused by date, number and picklist fields (INVALID_TYPE_ON_FIELD_IN_RECORD).
    """
    sobject = SOBJECTS[update.object]
    check_id(update.object_id, sobject)
    try:
        return sobject, {api_name(name): value or None for name, value in update.properties.items()}
    except SettingsInvalid as exc:
        raise CrmPermanent(f"salesforce: {exc}", status=400) from exc


def update_many(client: SalesforceClient, writes: Sequence[Write[PropertyUpdate]]) -> Results[None]:
    """Each update made (None), or the error it alone met: one PATCH per 200 records."""
    results: list[Any] = [None] * len(writes)
    records: list[tuple[int, dict[str, Any]]] = []
    for n, write in enumerate(writes):
        try:
            sobject, fields = field_values(write.item)
        except CrmPermanent as exc:
            results[n] = exc
            continue
        records.append((n, {"attributes": {"type": sobject}, "Id": write.item.object_id, **fields}))
    # One record per group, each group in its own call when it names a record the call already has.
    groups = [[record] for _, record in records]
    done = write_all(client, "PATCH", "composite/sobjects", groups, distinct=lambda r: ids.short(r["Id"]))
    for (n, _), (_, error) in zip(records, done, strict=True):
        results[n] = error
    return results


def interpret(payload: dict[str, Any], deal: Deal) -> DealChange | None:
    """What a notification about ``deal`` means, the Opportunity as the org has it now.

    Outbound messages arrive out of order, so the org's state decides: a stale "open"
    message never cancels a run of a closed deal.
    """
    if _flag(payload.get("IsClosed")) is False:
        return None if deal.closed else DealChange(deal=deal, change="reopened")
    if not deal.closed:
        return None
    return DealChange(deal=deal, change="closed")


def opportunity_id(kind: str, payload: dict[str, Any]) -> str | None:
    """The Opportunity an event is about; None for other objects; PayloadInvalid without an Id."""
    if kind != "opportunity":
        return None
    record_id = payload.get("Id")
    if not ids.is_id(record_id):
        raise PayloadInvalid(f"salesforce: the stored notification has no Opportunity Id ({record_id!r})")
    return str(record_id)


def interpret_many(
    client: SalesforceClient,
    events: Sequence[tuple[str, dict[str, Any]]],
    extra: Sequence[str],
    to_deal: Callable[[dict[str, Any]], Deal],
) -> Results[DealChange | TaskChange | None]:
    """What each event means, as ``interpret``; the Opportunities read 200 to a query.

    An event's own problem (no Id: PayloadInvalid; an Opportunity the org does not have:
    CrmPermanent) is its result; a query that fails is the result of its events.
    """
    wanted: list[Any] = []
    for kind, payload in events:
        try:
            wanted.append(task_change(kind, payload) or opportunity_id(kind, payload))
        except PayloadInvalid as exc:
            wanted.append(exc)
    records: dict[str, dict[str, Any] | CrmError] = {}
    for some in chunks(sorted({ids.short(w) for w in wanted if isinstance(w, str)})):
        try:
            records |= {ids.short(r["Id"]): r for r in client.query_pages(soql.opportunities(some, extra))}
        except CrmError as exc:
            records |= dict.fromkeys(some, exc)
    results: list[Any] = []
    for (_, payload), want in zip(events, wanted, strict=True):
        if not isinstance(want, str):
            results.append(want)  # a task event, not an Opportunity (None), or no Id (PayloadInvalid)
            continue
        record = records.get(ids.short(want))
        if record is None:
            results.append(CrmPermanent(f"salesforce: no Opportunity {want!r}", status=404))
        elif isinstance(record, CrmError):
            results.append(record)
        else:
            results.append(interpret(payload, to_deal(record)))
    return results


def _flag(value: Any) -> bool | None:
    """An outbound message's "true"/"false" (or a Flow's JSON boolean) as a bool; None if absent."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None
