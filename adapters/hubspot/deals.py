"""Reading HubSpot deals, one at a time or many together, and what a stage-change event means.

One deal is read with its associations in one call (v3), then its owner, company and
contacts. The deals of many events are read together: the deals by batch read, their
companies and contacts through the v4 associations batch read, then those companies and
contacts by batch read: a handful of calls for a hundred deals instead of four each.
Owners change rarely: each is read once and kept for a few minutes; the pipelines (which
stage is closed, won or lost) are kept by ``StageBook``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from adapters.base import Results
from adapters.hubspot import records, webhook
from adapters.hubspot.api import HubSpotApi
from adapters.hubspot.records import associated_ids, day, decimal
from adapters.hubspot.stages import StageBook
from connector.clock import Clock
from connector.errors import CrmError, CrmPermanent
from connector.models import Company, Deal, DealChange, Owner

log = logging.getLogger("offboard.hubspot")

MAX_CONTACTS = 10  # associated contacts read per deal
OWNER_SECONDS = 300.0  # how long an owner read is trusted
DEAL_PROPERTIES = (
    "dealname",
    "amount",
    "deal_currency_code",
    "pipeline",
    "dealstage",
    "closedate",
    "hubspot_owner_id",
)
# v4 association type ids: deal_to_company (the primary company), deal_to_contact
PRIMARY_COMPANY, DEAL_CONTACT = 5, 3
# A stage change, and whether the new stage is closed.
Plan = tuple[webhook.StageChange, bool]


@dataclass(frozen=True)
class Parts:
    """What a deal is built from, however it was read."""

    record: Any
    company: Company | None
    contact_records: list[Any]
    owner: Owner | None


@dataclass
class Read:
    """The deals of many events as the batch reads found them: records, associated ids, owners."""

    deals: dict[str, Any]
    company_of: dict[str, list[str]]
    contacts_of: dict[str, list[str]]
    companies: dict[str, Company] = field(default_factory=dict)
    contacts: dict[str, Any] = field(default_factory=dict)
    owners: dict[str, Owner | CrmError | None] = field(default_factory=dict)


class Owners:
    """Deal owners by id, each read once per few minutes (owners rarely change)."""

    def __init__(self, api: HubSpotApi, clock: Clock, seconds: float = OWNER_SECONDS) -> None:
        self.api, self.clock, self.seconds = api, clock, seconds
        self._known: dict[str, tuple[Owner, datetime]] = {}

    def get(self, owner_id: str | None) -> Owner | None:
        if not owner_id:
            return None
        known = self._known.get(owner_id)
        now = self.clock()
        if known is not None and now - known[1] < timedelta(seconds=self.seconds):
            return known[0]
        try:
            owner = records.owner(self.api.owner(owner_id), owner_id)
        except CrmPermanent as exc:
            if exc.status != 404:
                raise
            owner = records.owner(None, owner_id)  # a deactivated user still owns the deal
        self._known[owner_id] = (owner, now)
        return owner


class DealReader:
    def __init__(
        self,
        api: HubSpotApi,
        *,
        account: Callable[[], str],
        contract_type: str,
        contract_end: str,
        clock: Clock,
    ) -> None:
        self.api, self.account = api, account
        self.contract_type, self.contract_end = contract_type, contract_end
        self.stages = StageBook(api.deal_pipelines)
        self.owners = Owners(api, clock)

    @property
    def properties(self) -> tuple[str, ...]:
        return (*DEAL_PROPERTIES, self.contract_type, self.contract_end)

    # --- events ----------------------------------------------------------------------------

    def interpret(self, kind: str, payload: dict[str, Any]) -> DealChange | None:
        plan = self._plan(kind, payload)
        if plan is None:
            return None
        change, closed = plan
        return self._closed(change, self.fetch(change.deal_id)) if closed else self._reopened(change)

    def interpret_many(self, events: Sequence[tuple[str, dict[str, Any]]]) -> Results[DealChange | None]:
        """Each event's meaning (as ``interpret``), the closed deals read together."""
        plans: list[Plan | CrmError | None] = []
        for kind, payload in events:
            try:
                plans.append(self._plan(kind, payload))
            except CrmError as exc:
                plans.append(exc)
        closing = [p[0].deal_id for p in plans if isinstance(p, tuple) and p[1]]
        wanted = list(dict.fromkeys(closing))
        deals = self.fetch_many(wanted) if len(wanted) > 1 else {i: _tried(self.fetch, i) for i in wanted}
        results: Results[DealChange | None] = []
        for plan in plans:
            if not isinstance(plan, tuple):
                results.append(plan)
                continue
            change, closed = plan
            deal = deals[change.deal_id] if closed else None
            if isinstance(deal, CrmError):
                results.append(deal)
            elif deal is not None:
                results.append(self._closed(change, deal))
            else:
                results.append(_tried(self._reopened, change))
        return results

    def _plan(self, kind: str, payload: dict[str, Any]) -> Plan | None:
        """The stage change an event reports (None: not one) and whether its stage is closed."""
        change = webhook.stage_change(kind, payload)
        if change is None:
            return None
        account = self.account()
        if change.portal_id != account:
            raise CrmPermanent(
                f"event from HubSpot portal {change.portal_id}, but the token is for portal {account}"
            )
        stage = self.stages.get(change.stage_id)
        if stage is None:
            raise CrmPermanent(f"deal stage {change.stage_id!r} is in none of portal {account}'s pipelines")
        return change, stage.closed

    def _closed(self, change: webhook.StageChange, deal: Deal) -> DealChange | None:
        if not deal.closed:  # re-opened since: the later event says so
            log.info("deal %s closed and re-opened before we looked; nothing to start", deal.id)
            return None
        return DealChange(deal=deal, change="closed", occurred_at=change.occurred_at)

    def _reopened(self, change: webhook.StageChange) -> DealChange | None:
        """An open stage: a re-opening only if the stage before this change was a closed one."""
        record = self.api.get(
            "deals", change.deal_id, ("dealname", "dealstage", "pipeline"), history=("dealstage",)
        )
        props = record.properties or {}
        current = self.stages.get(props.get("dealstage"))
        if current is None or current.closed:  # closed again since: that event starts the run
            return None
        before = self.stages.get(_value_before(record, change))
        if before is None or not before.closed:
            return None
        deal = Deal(
            crm="hubspot",
            account=self.account(),
            id=str(record.id),
            name=props.get("dealname") or f"Deal {record.id}",
            pipeline=props.get("pipeline") or None,
            stage=props.get("dealstage") or None,
        )
        return DealChange(deal=deal, change="reopened", occurred_at=change.occurred_at)

    # --- deals -----------------------------------------------------------------------------

    def fetch(self, deal_id: str) -> Deal:
        record = self.api.get("deals", deal_id, self.properties, associations=("contacts", "companies"))
        company_ids = associated_ids(record, "companies", "deal_to_company")
        company = (
            records.company(self.api.get("companies", company_ids[0], ("name", "domain")))
            if company_ids
            else None
        )
        contact_ids = associated_ids(record, "contacts", "deal_to_contact")[:MAX_CONTACTS]
        found = {str(r.id): r for r in self._contacts(contact_ids)}
        owner = self.owners.get((record.properties or {}).get("hubspot_owner_id"))
        return self._deal(Parts(record, company, [found[i] for i in contact_ids if i in found], owner))

    def fetch_many(self, deal_ids: Sequence[str]) -> dict[str, Deal | CrmError]:
        """Many deals with their owners, companies and contacts, in batch calls: each deal, or the
        CrmError it alone met (deleted: 404). A call that fails is raised: every deal's error."""
        deals = {str(r.id): r for r in self.api.read_batch("deals", deal_ids, self.properties)}
        companies = self.api.associations_batch("deals", "companies", list(deals))
        contacts = self.api.associations_batch("deals", "contacts", list(deals))
        read = Read(
            deals=deals,
            company_of={d: _ordered(companies.get(d, []), PRIMARY_COMPANY)[:1] for d in deals},
            contacts_of={d: _ordered(contacts.get(d, []), DEAL_CONTACT)[:MAX_CONTACTS] for d in deals},
        )
        company_ids = list(dict.fromkeys(i for ids in read.company_of.values() for i in ids))
        for record in self.api.read_batch("companies", company_ids, ("name", "domain")):
            read.companies[str(record.id)] = records.company(record)
        contact_ids = list(dict.fromkeys(i for ids in read.contacts_of.values() for i in ids))
        read.contacts.update((str(r.id), r) for r in self._contacts(contact_ids))
        for record in deals.values():  # each owner once, whatever comes of it
            owner_id = (record.properties or {}).get("hubspot_owner_id")
            if owner_id and owner_id not in read.owners:
                read.owners[owner_id] = _tried(self.owners.get, owner_id)
        found: dict[str, Deal | CrmError] = {}
        for deal_id in deal_ids:
            try:
                found[deal_id] = self._assemble(deal_id, read)
            except CrmError as exc:
                found[deal_id] = exc
        return found

    def _assemble(self, deal_id: str, read: Read) -> Deal:
        record = read.deals.get(deal_id)
        if record is None:
            raise CrmPermanent(
                f"HubSpot rejected the request to read deals {deal_id} (404): not found", status=404
            )
        company = None
        company_ids = read.company_of.get(deal_id, [])
        if company_ids:
            if company_ids[0] not in read.companies:  # as a single read of a deleted company fails
                message = f"HubSpot rejected the request to read companies {company_ids[0]} (404): not found"
                raise CrmPermanent(message, status=404)
            company = read.companies[company_ids[0]]
        owner = read.owners.get((record.properties or {}).get("hubspot_owner_id") or "")
        if isinstance(owner, CrmError):
            raise owner
        contacts = [read.contacts[i] for i in read.contacts_of.get(deal_id, []) if i in read.contacts]
        return self._deal(Parts(record, company, contacts, owner))

    def _contacts(self, ids: list[str]) -> list[Any]:
        return self.api.read_batch("contacts", ids, ("email", "firstname", "lastname")) if ids else []

    def _deal(self, parts: Parts) -> Deal:
        record = parts.record
        props = {k: v for k, v in (record.properties or {}).items() if v is not None}
        stage = self.stages.get(props.get("dealstage"))
        closed = bool(stage and stage.closed)
        # HubSpot has no primary contact on deals: the first associated one stands in.
        contacts = tuple(records.contact(r, primary=n == 0) for n, r in enumerate(parts.contact_records))
        return Deal(
            crm="hubspot",
            account=self.account(),
            id=str(record.id),
            name=props.get("dealname") or f"Deal {record.id}",
            outcome=("won" if stage and stage.won else "lost") if closed else None,
            closed=closed,
            amount=decimal(props.get("amount")),
            currency=props.get("deal_currency_code") or None,
            pipeline=props.get("pipeline") or None,
            stage=props.get("dealstage") or None,
            close_date=day(props.get("closedate")),
            contract_type=props.get(self.contract_type) or None,
            contract_end=day(props.get(self.contract_end)),
            owner=parts.owner,
            company=parts.company,
            contacts=contacts,
            properties=props,
        )


def _ordered(links: list[Any], primary: int) -> list[str]:
    """Associated ids from a v4 read, those of the ``primary`` type first, no repeats."""
    typed = [
        (str(link.to_object_id), {int(t.type_id) for t in link.association_types or []}) for link in links
    ]
    ordered = [i for i, types in typed if primary in types] + [i for i, _ in typed]
    return list(dict.fromkeys(ordered))


def _tried(call: Callable[[Any], Any], arg: Any) -> Any:
    try:
        return call(arg)
    except CrmError as exc:
        return exc


def _value_before(record: Any, change: webhook.StageChange) -> str | None:
    """The dealstage value before the one this event reports, from the property's history."""
    history = (record.properties_with_history or {}).get("dealstage") or []
    entries = sorted(history, key=lambda entry: entry.timestamp, reverse=True)  # newest first
    matches = [n for n, entry in enumerate(entries) if entry.value == change.stage_id]
    if not matches:
        return None
    if change.occurred_at is not None:
        at = change.occurred_at
        matches.sort(key=lambda n: abs((entries[n].timestamp - at).total_seconds()))
    index = matches[0] + 1
    return str(entries[index].value) if index < len(entries) else None
