"""The HubSpot adapter: the CRM port (and inbound events) on top of ``HubSpotApi``.

Tasks and notes are created through ``CreateOnce`` (a marker per record, searched for only
when an earlier attempt's outcome is unknown), so an action retried after an unknown outcome
never writes twice. Property updates are naturally idempotent; a referral's contact is
unique by email in HubSpot. Many actions' writes share HubSpot's batch calls
(``batches.BatchWriter``); deals are read one at a time or many together (``deals.DealReader``).
Checklist tasks are read back in batches (``tasks``), a task's status change arrives as a
webhook event that needs no read, and the offboarding record is a file and a note on the deal
(``record_file.RecordFiler``).
"""

from __future__ import annotations

import time as pytime
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from adapters.base import (
    BudgetAware,
    CrmAdapter,
    DealBatches,
    Ending,
    InboundAdapter,
    InviteBatches,
    NoteBatches,
    OutcomeAware,
    PropertyBatches,
    RecordWriter,
    Results,
    SweepWindow,
    TaskBatches,
    TaskReader,
    Write,
)
from adapters.hubspot import records, tasks, webhook
from adapters.hubspot.api import HubSpotApi
from adapters.hubspot.batches import OBJECT_TYPES, SETUP_HINT, BatchWriter, one
from adapters.hubspot.deals import DealReader
from adapters.hubspot.once import CreateOnce
from adapters.hubspot.record_file import RecordFiler
from adapters.hubspot.records import day
from adapters.hubspot.settings import HubSpotSettings
from adapters.hubspot.setup import EXIT_CATEGORY, LAST_EXIT_SCORE, LAST_SURVEY_KIND, REFERRED_BY
from connector.clock import Clock, utcnow
from connector.errors import CrmPermanent
from connector.models import (
    AnswerSpec,
    Deal,
    DealChange,
    Invite,
    NoteSpec,
    PropertyUpdate,
    RecordSpec,
    ReferralSpec,
    TaskChange,
    TaskSpec,
    TaskState,
)

DAILY_RESERVE = 0.1  # share of the daily budget kept for urgent writes (tasks) and other apps


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
        self.once = CreateOnce(api, lag_seconds=settings.search_lag_seconds, clock=clock, sleep=sleep)
        self.batches = BatchWriter(api, self.once, clock)
        self.deals = DealReader(
            api,
            account=lambda: self.account,
            contract_type=self.contract_type_property,
            contract_end=self.contract_end_property,
            clock=clock,
        )
        self.filer = RecordFiler(api, self.once, clock)
        self.user_owners = tasks.UserOwners(api)
        self._account: str | None = None
        self._ui_domain = "app.hubspot.com"

    @property
    def account(self) -> str:
        """The portal id, read once: runs are keyed by it, and webhooks must come from it."""
        if self._account is None:
            details = self.api.account_details()
            self._ui_domain = str(details.get("uiDomain") or self._ui_domain)  # app-eu1… for EU portals
            self._account = str(details["portalId"])
        return self._account

    # --- inbound and reads (``deals.DealReader``) ----------------------------

    def interpret(self, kind: str, payload: dict[str, Any]) -> DealChange | TaskChange | None:
        """A task's status change says what it means (no call); a stage change reads the deal."""
        change = webhook.task_change(kind, payload)
        return change if change is not None else self.deals.interpret(kind, payload)

    def interpret_many(
        self, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> Results[DealChange | TaskChange | None]:
        """The events' deals read together: a few batch reads for a hundred deals."""
        changes = [webhook.task_change(kind, payload) for kind, payload in events]
        rest = [event for event, change in zip(events, changes, strict=True) if change is None]
        deals = iter(self.deals.interpret_many(rest) if rest else [])
        return [change if change is not None else next(deals) for change in changes]

    def read_tasks(self, task_ids: Sequence[str], changed_since: datetime | None = None) -> list[TaskState]:
        """Checklist tasks as HubSpot holds them: 100 per batch read, deleted ones left out."""
        return tasks.read_tasks(self.api, task_ids, changed_since, self.user_owners)

    def task_url(self, task_id: str) -> str | None:
        portal = self.account  # read first: it learns the portal's app domain too
        return tasks.task_url(self._ui_domain, portal, task_id)

    def fetch_deal(self, deal_id: str) -> Deal:
        return self.deals.fetch(deal_id)

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

    # --- writes ------------------------------------------------------------

    def outcome_unknown(self, key: str, since: datetime) -> None:
        """An earlier attempt of ``key`` (its worker died, its call timed out) may have written until
        ``since``: the next write with ``key`` waits for HubSpot's search index, then looks first."""
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
                raise CrmPermanent(f"{exc} {SETUP_HINT}", status=400, detail=exc.detail) from exc
            raise

    def write_record(self, record: RecordSpec, key: str) -> str:
        """The record as a private file in HubSpot and a note on the deal that carries it, once."""
        return self.filer.write(record, key)

    def send_invite(self, invite: Invite, key: str) -> str:
        """Set the contact properties the admin's workflow emails from, and log a note."""
        sent: str = one(self.batches.invites, Write(key, invite))
        return sent

    # --- many actions at once (``batches.BatchWriter``) ----------------------

    def create_tasks_many(self, writes: Sequence[Write[Sequence[TaskSpec]]]) -> Results[list[str]]:
        return self.batches.tasks(writes)

    def add_notes_many(self, writes: Sequence[Write[NoteSpec]]) -> Results[str]:
        return self.batches.notes(writes)

    def update_properties_many(self, writes: Sequence[Write[PropertyUpdate]]) -> Results[None]:
        return self.batches.properties(writes)

    def send_invites_many(self, writes: Sequence[Write[Invite]]) -> Results[str]:
        return self.batches.invites(writes)

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


if TYPE_CHECKING:  # mypy checks the adapter against both ports
    _crm_port: type[CrmAdapter] = HubSpotAdapter
    _inbound_port: type[InboundAdapter] = HubSpotAdapter
    _budget_port: type[BudgetAware] = HubSpotAdapter
    _outcome_port: type[OutcomeAware] = HubSpotAdapter
    _task_batches: type[TaskBatches] = HubSpotAdapter
    _note_batches: type[NoteBatches] = HubSpotAdapter
    _property_batches: type[PropertyBatches] = HubSpotAdapter
    _invite_batches: type[InviteBatches] = HubSpotAdapter
    _deal_batches: type[DealBatches] = HubSpotAdapter
    _task_reader: type[TaskReader] = HubSpotAdapter
    _record_writer: type[RecordWriter] = HubSpotAdapter
