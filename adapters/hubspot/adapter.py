"""The HubSpot adapter: the CRM port (and inbound events) on top of ``HubSpotApi``.

Tasks and notes are created through ``CreateOnce`` (a marker per record, searched before
writing), so an action retried after an unknown outcome never writes twice. Property
updates are naturally idempotent; a referral's contact is unique by email in HubSpot.
"""

from __future__ import annotations

import logging
import time as pytime
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from adapters.base import BudgetAware, CrmAdapter, Ending, InboundAdapter, OutcomeAware, SweepWindow
from adapters.hubspot import records, webhook
from adapters.hubspot.api import HubSpotApi
from adapters.hubspot.once import CreateOnce
from adapters.hubspot.records import associated_ids, day, decimal, token
from adapters.hubspot.settings import HubSpotSettings
from adapters.hubspot.setup import (
    EXIT_CATEGORY,
    LAST_EXIT_SCORE,
    LAST_SURVEY_KIND,
    REFERRED_BY,
    SURVEY_KIND,
    SURVEY_LINK,
    SURVEY_REF,
    SURVEY_SENT_AT,
)
from adapters.hubspot.stages import StageBook
from connector.clock import Clock, utcnow
from connector.errors import CrmPermanent
from connector.models import (
    AnswerSpec,
    Company,
    Contact,
    Deal,
    DealChange,
    Invite,
    NoteSpec,
    Owner,
    PropertyUpdate,
    ReferralSpec,
    TaskSpec,
)

log = logging.getLogger("offboard.hubspot")

MAX_CONTACTS = 10  # associated contacts read per deal
DAILY_RESERVE = 0.1  # share of the daily budget kept for urgent writes (tasks) and other apps
OBJECT_TYPES = {"deal": "deals", "company": "companies", "contact": "contacts"}
DEAL_PROPERTIES = (
    "dealname",
    "amount",
    "deal_currency_code",
    "pipeline",
    "dealstage",
    "closedate",
    "hubspot_owner_id",
)


class HubSpotAdapter:
    name = "hubspot"

    def __init__(
        self,
        settings: HubSpotSettings,
        api: HubSpotApi,
        *,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] = pytime.sleep,
    ) -> None:
        self.api = api
        self.clock = clock
        self.contract_type_property = settings.contract_type_property
        self.contract_end_property = settings.contract_end_property
        self.stages = StageBook(api.deal_pipelines)
        self.once = CreateOnce(api, lag_seconds=settings.search_lag_seconds, clock=clock, sleep=sleep)
        self._account: str | None = None

    @property
    def account(self) -> str:
        """The portal id, read once: runs are keyed by it, and webhooks must come from it."""
        if self._account is None:
            self._account = str(self.api.account_details()["portalId"])
        return self._account

    # --- inbound -----------------------------------------------------------

    def interpret(self, kind: str, payload: dict[str, Any]) -> DealChange | None:
        change = webhook.stage_change(kind, payload)
        if change is None:
            return None
        if change.portal_id != self.account:
            raise CrmPermanent(
                f"event from HubSpot portal {change.portal_id}, but the token is for portal {self.account}"
            )
        stage = self.stages.get(change.stage_id)
        if stage is None:
            raise CrmPermanent(
                f"deal stage {change.stage_id!r} is in none of portal {self.account}'s pipelines"
            )
        if stage.closed:
            return self._closed(change)
        return self._reopened(change)

    def _closed(self, change: webhook.StageChange) -> DealChange | None:
        deal = self.fetch_deal(change.deal_id)
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
        previous = _value_before(record, change)
        before = self.stages.get(previous)
        if before is None or not before.closed:
            return None
        deal = Deal(
            crm=self.name,
            account=self.account,
            id=str(record.id),
            name=props.get("dealname") or f"Deal {record.id}",
            pipeline=props.get("pipeline") or None,
            stage=props.get("dealstage") or None,
        )
        return DealChange(deal=deal, change="reopened", occurred_at=change.occurred_at)

    # --- reads -------------------------------------------------------------

    def fetch_deal(self, deal_id: str) -> Deal:
        properties = (*DEAL_PROPERTIES, self.contract_type_property, self.contract_end_property)
        record = self.api.get("deals", deal_id, properties, associations=("contacts", "companies"))
        props = {k: v for k, v in (record.properties or {}).items() if v is not None}
        stage = self.stages.get(props.get("dealstage"))
        company_ids = associated_ids(record, "companies", "deal_to_company")
        closed = bool(stage and stage.closed)
        return Deal(
            crm=self.name,
            account=self.account,
            id=str(record.id),
            name=props.get("dealname") or f"Deal {record.id}",
            outcome=("won" if stage and stage.won else "lost") if closed else None,
            closed=closed,
            amount=decimal(props.get("amount")),
            currency=props.get("deal_currency_code") or None,
            pipeline=props.get("pipeline") or None,
            stage=props.get("dealstage") or None,
            close_date=day(props.get("closedate")),
            contract_type=props.get(self.contract_type_property) or None,
            contract_end=day(props.get(self.contract_end_property)),
            owner=self._owner(props.get("hubspot_owner_id")),
            company=self._company(company_ids[0]) if company_ids else None,
            contacts=self._contacts(associated_ids(record, "contacts", "deal_to_contact")),
            properties=props,
        )

    def deals_ending(self, window: SweepWindow) -> Iterable[Ending]:
        """One search request per page of 100 deals, for ids and contract ends only."""
        ending = self.contract_end_property
        everything = [_between(ending, window.start, window.end)]
        groups = [everything]
        if window.changed_since is not None:
            since = {"property_name": "hs_lastmodifieddate", "operator": "GTE"}
            groups = [[*everything, since | {"value": records.millis(window.changed_since)}]]
            if window.new_from is not None:  # the days that came into the window since the last sweep
                groups.append([_between(ending, window.new_from, window.end)])
        listed = []
        for found in self.api.search_any("deals", groups, [ending]):
            end = day((found.properties or {}).get(ending))
            if end is not None:
                listed.append(Ending(crm=self.name, account=self.account, id=str(found.id), contract_end=end))
        return listed

    def _owner(self, owner_id: str | None) -> Owner | None:
        if not owner_id:
            return None
        try:
            return records.owner(self.api.owner(owner_id), owner_id)
        except CrmPermanent as exc:
            if exc.status != 404:
                raise
            return records.owner(None, owner_id)  # a deactivated user still owns the deal

    def _company(self, company_id: str) -> Company:
        return records.company(self.api.get("companies", company_id, ("name", "domain")))

    def _contacts(self, ids: list[str]) -> tuple[Contact, ...]:
        wanted = ids[:MAX_CONTACTS]
        if not wanted:
            return ()
        read = self.api.read_batch("contacts", wanted, ("email", "firstname", "lastname"))
        found = {str(r.id): r for r in read}
        ordered = [found[i] for i in wanted if i in found]
        # HubSpot has no primary contact on deals: the first associated one stands in.
        return tuple(records.contact(r, primary=n == 0) for n, r in enumerate(ordered))

    # --- writes ------------------------------------------------------------

    def outcome_unknown(self, key: str, since: datetime) -> None:
        """A dead worker's attempt of ``key`` may have written until ``since``: HubSpot's search
        may not show it yet, so the next write with ``key`` waits for the index first."""
        self.once.outcome_unknown(key, since)

    def create_tasks(self, tasks: Sequence[TaskSpec], key: str) -> list[str]:
        inputs = [records.task_input(task, key, n) for n, task in enumerate(tasks)]
        return self.once.create("tasks", inputs, key)

    def add_note(self, note: NoteSpec, key: str) -> str:
        data = records.note_input(note.body, key, self.clock(), records.note_targets(note))
        return self.once.create("notes", [data], key)[0]

    def update_properties(self, update: PropertyUpdate, key: str) -> None:
        try:
            self.api.update(OBJECT_TYPES[update.object], update.object_id, update.properties)
        except CrmPermanent as exc:
            if exc.status == 400:
                raise CrmPermanent(
                    f"{exc} (if a property is missing, run `offboard hubspot setup`)",
                    status=400,
                    detail=exc.detail,
                ) from exc
            raise

    def send_invite(self, invite: Invite, key: str) -> str:
        """Set the contact properties the admin's workflow emails from, and log a note."""
        done = self.once.existing("notes", key)
        if 0 in done:  # the note is written last: the whole send happened
            return done[0]
        now = self.clock()
        self.api.update(
            "contacts",
            invite.contact_id,
            {
                SURVEY_KIND: invite.kind,
                SURVEY_LINK: invite.link,
                SURVEY_SENT_AT: records.millis(now),
                SURVEY_REF: token(key),  # the same on a retry: the workflow does not re-enroll
            },
        )
        what = "referral ask" if invite.kind == "referral" else f"{invite.kind.upper()} survey"
        sender = f" on behalf of {invite.sender}" if invite.sender else ""
        body = f"Offboard sent the {what}{sender} to {invite.email or 'the contact'}: {invite.link}"
        note = records.note_input(body, key, now, {"contacts": invite.contact_id, "deals": invite.deal_id})
        return self.once.create("notes", [note], key, found=done)[0]

    def record_answer(self, answer: AnswerSpec, key: str) -> str:
        """The score on the contact (properties a list or workflow can use), and a note."""
        self.api.update(
            "contacts",
            answer.contact_id,
            {
                LAST_SURVEY_KIND: answer.kind,
                LAST_EXIT_SCORE: str(answer.score),
                EXIT_CATEGORY: answer.category,
            },
        )
        body = f"{answer.kind.upper()} answer: {answer.score} ({answer.category})"
        if answer.comment:
            body += f"\n\n{answer.comment}"
        targets = {"contacts": answer.contact_id, "deals": answer.deal_id}
        note = records.note_input(body, key, answer.answered_at, targets)
        return self.once.create("notes", [note], key)[0]

    def create_referral(self, referral: ReferralSpec, key: str) -> str:
        """The referred person as a contact on the deal, attributed to the client who introduced them.

        The new contact is associated to the deal and names the referrer in
        ``offboard_referred_by``; one note on the new contact, the referrer and the deal says
        who introduced whom, with the client's words. HubSpot keeps one contact per email and
        answers 409 naming the existing one: that also makes a retried create (after a lost
        answer) find the contact it made. A contact that existed before is left as it is;
        the note still records the introduction on it.
        """
        referrer, referrer_id = self._referrer(referral)
        contact_id = self._referred_contact(referral, referrer)
        deal = self.api.get("deals", referral.deal_id, ("dealname",))
        deal_name = (deal.properties or {}).get("dealname") or f"deal {referral.deal_id}"
        name = " ".join(p for p in (referral.first_name, referral.last_name) if p)
        body = f"{name}{f' ({referral.company})' if referral.company else ''} was referred by {referrer}"
        body += f" of {referral.referrer_company}" if referral.referrer_company else ""
        body += f', at the end of the deal "{deal_name}", on Offboard\'s referral page.'
        if referral.note:
            body += f"\n\n{referral.note}"
        targets: dict[str, records.Target] = {
            "contacts": (contact_id, referrer_id) if referrer_id else contact_id,
            "deals": referral.deal_id,
        }
        self.once.create("notes", [records.note_input(body, key, self.clock(), targets)], key)
        return contact_id

    def _referrer(self, referral: ReferralSpec) -> tuple[str, str | None]:
        """Who referred, as a CSM reads it, and their contact id (None once deleted from HubSpot)."""
        try:
            found = self.api.get("contacts", referral.referrer_contact_id, ("email", "firstname", "lastname"))
        except CrmPermanent as exc:
            if exc.status != 404:
                raise
            return f"contact {referral.referrer_contact_id}", None  # deleted since: the id still says who
        return records.person(found), str(found.id)

    def _referred_contact(self, referral: ReferralSpec, referrer: str) -> str:
        by = f"{referrer}, {referral.referrer_company}" if referral.referrer_company else referrer
        properties = {
            "email": referral.email.strip().lower(),
            "firstname": referral.first_name,
            "lastname": referral.last_name,
            "company": referral.company,
            REFERRED_BY: by,
        }
        data = {
            "properties": {k: v for k, v in properties.items() if v},
            "associations": records.associations(records.CONTACT_TO, {"deals": referral.deal_id}),
        }
        try:
            return str(self.api.create("contacts", data).id)
        except CrmPermanent as exc:
            existing = records.existing_id(exc)
            if existing is not None:
                return existing
            if exc.status == 400 and REFERRED_BY in str(exc):
                raise CrmPermanent(
                    f"{exc} (run `offboard hubspot setup` to create it)", status=400, detail=exc.detail
                ) from exc
            raise

    def deferral_reason(self) -> str | None:
        """Non-urgent writes wait while HubSpot's daily budget is nearly spent (other apps share it)."""
        left = self.api.limits.daily_left()
        if left is None or left >= DAILY_RESERVE:
            return None
        return f"only {left:.0%} of the HubSpot account's daily API budget is left"


def _between(name: str, start: date, end: date) -> dict[str, str]:
    """A search filter: the date property ``name`` falls on a day from ``start`` to ``end``."""
    low = datetime.combine(start, time(0), tzinfo=UTC)
    high = datetime.combine(end, time(0), tzinfo=UTC) + timedelta(days=1, milliseconds=-1)
    return {
        "property_name": name,
        "operator": "BETWEEN",
        "value": records.millis(low),
        "high_value": records.millis(high),
    }


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


if TYPE_CHECKING:  # mypy checks the adapter against both ports
    _crm_port: type[CrmAdapter] = HubSpotAdapter
    _inbound_port: type[InboundAdapter] = HubSpotAdapter
    _budget_port: type[BudgetAware] = HubSpotAdapter
    _outcome_port: type[OutcomeAware] = HubSpotAdapter
