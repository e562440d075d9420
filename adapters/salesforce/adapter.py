"""The Salesforce adapter: Opportunities in, Tasks, notes, field updates and survey sends out.

Reads: one SOQL query fetches an Opportunity with its Account, Owner, contract
fields and contact roles (a relationship subquery); the events of many Opportunities
are read 200 to a query (``batches``). Writes: Tasks go in sObject Collections calls of
200, shared by the actions of many deals, and a note is a ContentNote linked to the
Opportunity, Account and contact (``writes``); field updates are a PATCH on the record,
or a Collections PATCH for many (``batches``); survey sends are a SurveyInvitation or an
``emailSimple`` action, logged either way as a completed Task (``sends``); a referral is
a Lead (``referrals``). A record refused inside a batch fails only its own action.
The checklist is read back (``checklist``: task events, Tasks 200 to a query with their
files), and the offboarding record goes on the Opportunity as a file and a note (``files``).

No duplicates after an unknown outcome: see ``adapters.salesforce.tasks`` and
``adapters.salesforce.attempts`` (what an attempt wrote is looked for only when its
outcome is unknown). Notes carry their marker in the title, survey invitations in their name.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import adapters.salesforce.batches as batches
import adapters.salesforce.checklist as checklist
import adapters.salesforce.ids as ids
import adapters.salesforce.soql as soql
from adapters.base import Connection, Ending, Results, SweepWindow, Write
from adapters.salesforce.attempts import Attempts
from adapters.salesforce.auth import choose, installed
from adapters.salesforce.budget import ApiBudget
from adapters.salesforce.client import API_VERSION, SalesforceClient
from adapters.salesforce.files import RecordWriter
from adapters.salesforce.picklists import TaskPicklists
from adapters.salesforce.records import CRM, resolve, to_deal
from adapters.salesforce.referrals import ReferralWriter
from adapters.salesforce.sends import InviteSender
from adapters.salesforce.settings import SalesforceSettings
from adapters.salesforce.writes import Note, NoteWriter, TaskWriter, check_id
from connector.clock import Clock, utcnow
from connector.errors import CrmError, CrmPermanent, SettingsInvalid
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
from connector.settings import Settings

log = logging.getLogger("offboard.salesforce")


class SalesforceAdapter:
    name = CRM

    def __init__(
        self,
        client: SalesforceClient,
        *,
        org_id: str | None,
        zone: ZoneInfo,
        type_field: str = "Type",
        end_field: str = "Contract.EndDate",
        marker_field: str | None = None,
        survey_ids: dict[str, str] | None = None,
        community_id: str | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self.client = client
        self.zone = zone
        self.type_field = type_field
        self.end_field = end_field
        self._account = ids.short(org_id) if org_id else None
        self.attempts = Attempts()
        self.tasks = TaskWriter(client, zone, marker_field, self.attempts)
        self.notes = NoteWriter(client, self.attempts)
        self.sends = InviteSender(
            self.tasks, survey_ids=dict(survey_ids or {}), community_id=community_id, clock=clock
        )
        self.referrals = ReferralWriter(client, self.fetch_deal)
        self.task_reads = checklist.TaskReads(client)
        self.records = RecordWriter(client, self.notes, self.attempts)

    @classmethod
    def for_connection(cls, connection: Connection) -> SalesforceAdapter:
        """Checks the connection's settings now; logs in on the first call, not here."""
        settings = SalesforceSettings.of(connection.settings)
        community_id = settings.community_id
        if community_id and not ids.is_id(community_id):
            raise SettingsInvalid(
                f"SALESFORCE_COMMUNITY_ID: {community_id!r} is not a Salesforce id "
                "(the site's Network id, 0DB…)"
            )
        if connection.token is not None:  # installed by OAuth: the keeper's sessions
            auth = installed(connection.token, connection.instance_url)
        else:
            auth = choose(settings, API_VERSION)
        client = SalesforceClient(auth, ApiBudget(share=settings.api_budget_share))
        marker = settings.task_marker_field
        return cls(
            client,
            org_id=connection.account or settings.org_id,
            zone=connection.zone,
            type_field=soql.field_path(settings.contract_type_field, "SALESFORCE_CONTRACT_TYPE_FIELD"),
            end_field=soql.field_path(settings.contract_end_field, "SALESFORCE_CONTRACT_END_FIELD"),
            marker_field=soql.field_path(marker, "SALESFORCE_TASK_MARKER_FIELD") if marker else None,
            survey_ids=settings.survey_ids,
            community_id=community_id,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SalesforceAdapter:
        """The adapter for the environment's org (``SALESFORCE_*``)."""
        return cls.for_connection(Connection.from_environment(settings, CRM))

    @property
    def account(self) -> str:
        """The org id's 15-character form: SALESFORCE_ORG_ID, else asked of the org once."""
        if self._account is None:
            (org,) = self.client.query(soql.organization())
            self._account = ids.short(org["Id"])
        return self._account

    # --- the API budget ----------------------------------------------------

    def deferral_reason(self) -> str | None:
        """Why non-urgent work should wait (daily API usage past the budget share), or None."""
        budget = self.client.budget
        if budget.over() and budget.stale:
            self._refresh_usage()
        return budget.reason()  # the worker logs it and shows it in `offboard runs`

    def _refresh_usage(self) -> None:
        try:
            self.client.call(lambda sf: sf.limits())  # the answer's header updates the budget
        except CrmError as exc:
            log.warning("salesforce: could not refresh the API usage: %s", exc)

    # --- inbound -----------------------------------------------------------

    def interpret(self, kind: str, payload: dict[str, Any]) -> DealChange | TaskChange | None:
        """A closed Opportunity, fetched whole; an open one is a re-opening; a task event is a
        ``TaskChange`` (completed, re-opened, or changed: ``checklist``); None for other objects.

        Outbound messages arrive out of order, so the Opportunity is fetched and its
        state now decides: a stale "open" message never cancels a run of a closed deal.
        """
        change = checklist.task_change(kind, payload)
        if change is not None:
            return change
        record_id = batches.opportunity_id(kind, payload)
        return None if record_id is None else batches.interpret(payload, self.fetch_deal(record_id))

    def interpret_many(
        self, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> Results[DealChange | TaskChange | None]:
        """What each event means, as ``interpret``; the Opportunities read 200 to a query."""
        return batches.interpret_many(self.client, events, self._extra_fields(), self._deal)

    # --- reads -------------------------------------------------------------

    def fetch_deal(self, deal_id: str) -> Deal:
        check_id(deal_id, "Opportunity")
        records = self.client.query(soql.opportunity(deal_id, self._extra_fields()))
        if not records:
            raise CrmPermanent(f"salesforce: no Opportunity {deal_id!r}", status=404)
        return self._deal(records[0])

    def deals_ending(self, window: SweepWindow) -> Iterable[Ending]:
        """One SOQL query, a page of up to 2,000 ids and contract ends per call."""
        listed = []
        for record in self.client.query_pages(soql.contracts_ending(self.end_field, window)):
            end = resolve(record, self.end_field)
            if end:
                day = date.fromisoformat(str(end)[:10])
                listed.append(Ending(crm=self.name, account=self.account, id=record["Id"], contract_end=day))
        return listed

    def read_tasks(self, task_ids: Sequence[str], changed_since: datetime | None = None) -> list[TaskState]:
        """The checklist Tasks as the org holds them, 200 to a query, with their files (``checklist``)."""
        return self.task_reads.read(task_ids, changed_since)

    def task_url(self, task_id: str) -> str | None:
        """The Task's Lightning page on the org's instance (known once logged in)."""
        check_id(task_id, "Task")
        return f"https://{self.client.instance()}/lightning/r/Task/{task_id}/view"

    def _deal(self, record: dict[str, Any]) -> Deal:
        return to_deal(record, account=self.account, type_field=self.type_field, end_field=self.end_field)

    def _extra_fields(self) -> list[str]:
        return [self.type_field, self.end_field]

    # --- writes -------------------------------------------------------------

    def create_tasks(self, specs: Sequence[TaskSpec], key: str) -> list[str]:
        return self.tasks.create(specs, key)

    def add_note(self, note: NoteSpec, key: str) -> str:
        """A ContentNote (Lightning's Notes) linked to the Opportunity, its Account and contact.

        ContentNote rather than the classic Note: it is what the Notes related
        list shows in Lightning, and one note can be linked to several records.
        """
        return self.notes.note(f"Offboarding: {note.step_id}", note.body, _linked(note), key)

    def update_properties(self, update: PropertyUpdate, key: str) -> None:
        """PATCH the record: setting the same values again is harmless, so no marker is needed."""
        sobject, fields = batches.field_values(update)
        self.client.rest(f"sobjects/{sobject}/{update.object_id}", method="PATCH", json=fields)

    def write_record(self, record: RecordSpec, key: str) -> str:
        """The record as a file on the Opportunity and a note naming it, once for ``key`` (``files``)."""
        return self.records.write(record, key)

    def record_answer(self, answer: AnswerSpec, key: str) -> str:
        """The answer on the contact (three custom fields) and as a note on the deal and contact."""
        check_id(answer.contact_id, "Contact")
        fields = {
            "Offboard_Last_Survey_Kind__c": answer.kind,
            "Offboard_Last_Exit_Score__c": answer.score,
            "Offboard_Exit_Category__c": answer.category,
        }
        self.client.rest(f"sobjects/Contact/{answer.contact_id}", method="PATCH", json=fields)
        body = f"{answer.kind.upper()} answer: {answer.score} ({answer.category})"
        if answer.comment:
            body += f"\n\n{answer.comment}"
        return self.notes.note(body.splitlines()[0], body, [answer.deal_id, answer.contact_id], key)

    def create_referral(self, referral: ReferralSpec, key: str) -> str:
        """A Lead for the referred person, unless a Contact or Lead has that email (``referrals``)."""
        return self.referrals.create(referral)

    def send_invite(self, invite: Invite, key: str) -> str:
        """Send once, logged as a completed Task on the contact; return that Task's id (``sends``)."""
        return self.sends.send(invite, key)

    def picklists(self) -> TaskPicklists:
        """The org's Task picklists, described once per process."""
        return self.tasks.picklists()

    # --- many actions at once, and unknown outcomes ----------------------------

    def create_tasks_many(self, writes: Sequence[Write[Sequence[TaskSpec]]]) -> Results[list[str]]:
        return self.tasks.create_many(writes)

    def add_notes_many(self, writes: Sequence[Write[NoteSpec]]) -> Results[str]:
        notes: list[Write[Note] | CrmError] = []
        for write in writes:
            spec = write.item
            try:
                note = Note.of(f"Offboarding: {spec.step_id}", spec.body, _linked(spec), write.key)
                notes.append(Write(write.key, note, write.unsure_since))
            except CrmPermanent as exc:  # a bad id: this note alone fails
                notes.append(exc)
        ready = [n for n in notes if isinstance(n, Write)]
        written = iter(self.notes.notes_many(ready) if ready else [])
        return [n if isinstance(n, CrmError) else next(written) for n in notes]

    def update_properties_many(self, writes: Sequence[Write[PropertyUpdate]]) -> Results[None]:
        return batches.update_many(self.client, writes)

    def send_invites_many(self, writes: Sequence[Write[Invite]]) -> Results[str]:
        return self.sends.send_many(writes)

    def outcome_unknown(self, key: str, since: datetime) -> None:
        """An earlier attempt of ``key`` may have written: its next write looks for it first."""
        self.attempts.outcome_unknown(key, since)


def _linked(note: NoteSpec) -> list[str | None]:
    return [note.deal_id, note.company_id, note.contact_id]
