"""The Salesforce adapter: Opportunities in, Tasks, notes, field updates and survey sends out.

Reads: one SOQL query fetches an Opportunity with its Account, Owner, contract
fields and contact roles (a relationship subquery). Writes: a run's Tasks go in
one sObject Collections call per 200; a note is a ContentNote linked to the
Opportunity, Account and contact in one composite call; field updates are a
PATCH on the record; survey sends are a SurveyInvitation (when the org has
Salesforce Surveys set up for that kind) or an ``emailSimple`` action, logged
either way as a completed Task on the contact.

No duplicates after an unknown outcome: see ``adapters.salesforce.tasks``.
Notes carry their marker in the title, survey invitations in their name.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

import adapters.salesforce.ids as ids
import adapters.salesforce.soql as soql
import adapters.salesforce.tasks as tasks
from adapters.base import Ending, SweepWindow
from adapters.salesforce.auth import choose
from adapters.salesforce.budget import ApiBudget
from adapters.salesforce.client import API_VERSION, SalesforceClient
from adapters.salesforce.errors import error_list, record_errors
from adapters.salesforce.picklists import TaskPicklists
from adapters.salesforce.records import CRM, resolve, to_deal
from connector.clock import Clock, utcnow
from connector.errors import CrmError, CrmPermanent, PayloadInvalid, SettingsInvalid
from connector.models import (
    AnswerSpec,
    Deal,
    DealChange,
    Invite,
    NoteSpec,
    PropertyUpdate,
    ReferralSpec,
    TaskSpec,
)
from connector.settings import Settings

log = logging.getLogger("offboard.salesforce")

_UNKNOWN = "\0unknown"  # not described yet (None is a real answer: the org has no such value)
NOT_PROVIDED = "[not provided]"  # what Web-to-Lead writes for a required value it was not given

SOBJECTS = {"deal": "Opportunity", "company": "Account", "contact": "Contact"}
INVITE_LABELS = {
    "nps": "NPS survey",
    "csat": "CSAT survey",
    "ces": "CES survey",
    "referral": "Referral request",
}
EMAILS = {
    "nps": ("One quick question", "How likely are you to recommend us to a friend or colleague?"),
    "csat": ("How did we do?", "How satisfied are you with the work we did together?"),
    "ces": ("How easy were we to work with?", "How easy was it to work with us?"),
    "referral": (
        "Would you recommend us?",
        "If you were happy with our work, we would love a referral or a few words.",
    ),
}


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
        self.marker_field = marker_field
        self.survey_ids = dict(survey_ids or {})
        self.community_id = community_id
        self.clock = clock
        self._account = ids.short(org_id) if org_id else None
        self._picklists: TaskPicklists | None = None
        self._referral_source: str | None = _UNKNOWN

    @classmethod
    def from_settings(cls, settings: Settings) -> SalesforceAdapter:
        """Checks the settings now; logs in on the first call, not here."""
        marker_field = settings.salesforce_task_marker_field
        community_id = settings.salesforce_community_id
        if community_id and not ids.is_id(community_id):
            raise SettingsInvalid(
                f"SALESFORCE_COMMUNITY_ID: {community_id!r} is not a Salesforce id "
                "(the site's Network id, 0DB…)"
            )
        client = SalesforceClient(
            choose(settings, API_VERSION), ApiBudget(share=settings.salesforce_api_budget_share)
        )
        return cls(
            client,
            org_id=settings.salesforce_org_id,
            zone=settings.zone,
            type_field=soql.field_path(
                settings.salesforce_contract_type_field, "SALESFORCE_CONTRACT_TYPE_FIELD"
            ),
            end_field=soql.field_path(
                settings.salesforce_contract_end_field, "SALESFORCE_CONTRACT_END_FIELD"
            ),
            marker_field=soql.field_path(marker_field, "SALESFORCE_TASK_MARKER_FIELD")
            if marker_field
            else None,
            survey_ids=settings.salesforce_survey_ids,
            community_id=community_id,
        )

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

    def interpret(self, kind: str, payload: dict[str, Any]) -> DealChange | None:
        """A closed Opportunity, fetched whole; an open one is a re-opening; None for other objects.

        Outbound messages arrive out of order, so the Opportunity is fetched and its
        state now decides: a stale "open" message never cancels a run of a closed deal.
        """
        if kind != "opportunity":
            return None
        record_id = payload.get("Id")
        if not ids.is_id(record_id):
            raise PayloadInvalid(f"salesforce: the stored notification has no Opportunity Id ({record_id!r})")
        deal = self.fetch_deal(str(record_id))
        if _flag(payload.get("IsClosed")) is False:
            return None if deal.closed else DealChange(deal=deal, change="reopened")
        if not deal.closed:
            return None
        return DealChange(deal=deal, change="closed")

    # --- reads -------------------------------------------------------------

    def fetch_deal(self, deal_id: str) -> Deal:
        _check_id(deal_id, "Opportunity")
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

    def _deal(self, record: dict[str, Any]) -> Deal:
        return to_deal(record, account=self.account, type_field=self.type_field, end_field=self.end_field)

    def _extra_fields(self) -> list[str]:
        return [self.type_field, self.end_field]

    # --- writes: tasks -------------------------------------------------------

    def create_tasks(self, specs: Sequence[TaskSpec], key: str) -> list[str]:
        if not specs:
            return []
        picklists = self.picklists()
        marks = [tasks.marker(key, n) for n in range(len(specs))]
        records = [
            tasks.record(spec, picklists, self.zone, mark=mark, marker_field=self.marker_field)
            for spec, mark in zip(specs, marks, strict=True)
        ]
        if self.marker_field:
            return self._upsert(records)
        return self._create_missing(records, marks, {tasks.found_on(spec) for spec in specs})

    def _create_missing(
        self, records: list[dict[str, Any]], marks: list[str], on: set[tuple[str, str]]
    ) -> list[str]:
        existing = self._existing_marks(on)
        missing = [
            (mark, record) for mark, record in zip(marks, records, strict=True) if mark not in existing
        ]
        if len(missing) < len(marks):
            log.info(
                "salesforce: %d of %d task(s) already exist; creating the rest",
                len(marks) - len(missing),
                len(marks),
            )
        for batch in tasks.chunks(missing):
            created = self._collections("POST", "composite/sobjects", [record for _, record in batch])
            existing.update(zip([mark for mark, _ in batch], created, strict=True))
        return [existing[mark] for mark in marks]

    def _upsert(self, records: list[dict[str, Any]]) -> list[str]:
        path = f"composite/sobjects/Task/{self.marker_field}"
        return [
            task_id for batch in tasks.chunks(records) for task_id in self._collections("PATCH", path, batch)
        ]

    def _collections(self, method: str, path: str, records: list[dict[str, Any]]) -> list[str]:
        """One sObject Collections call; all or none of the records are written."""
        results = self.client.rest(path, method=method, json={"allOrNone": True, "records": records})
        failed = record_errors(list(results or []))
        if failed is not None:
            raise failed
        return [str(result["id"]) for result in results]

    def _existing_marks(self, places: set[tuple[str, str]]) -> dict[str, str]:
        """Marker → Task id among the Tasks at each (relation field, record id)."""
        found: dict[str, str] = {}
        for relation, record_id in sorted(places):
            for task in self.client.query_pages(soql.tasks_on(record_id, relation)):
                mark = tasks.marker_in(task.get("Description"))
                if mark:
                    found[mark] = task["Id"]
        return found

    def picklists(self) -> TaskPicklists:
        """The org's Task picklists, described once per process."""
        if self._picklists is None:
            self._picklists = TaskPicklists.from_describe(self.client.rest("sobjects/Task/describe"))
        return self._picklists

    # --- writes: notes and fields ---------------------------------------------

    def add_note(self, note: NoteSpec, key: str) -> str:
        """A ContentNote (Lightning's Notes) linked to the Opportunity, its Account and contact.

        ContentNote rather than the classic Note: it is what the Notes related
        list shows in Lightning, and one note can be linked to several records.
        """
        linked = [note.deal_id, note.company_id, note.contact_id]
        return self._note(f"Offboarding: {note.step_id}", note.body, linked, key)

    def _note(self, title: str, body: str, linked: list[str | None], key: str) -> str:
        """Create the note once: its title carries a marker, looked for on the first linked record."""
        records = [r for r in dict.fromkeys(linked) if r]
        for record_id in records:
            _check_id(record_id, "record")
        title = f"{title[:240]} [{key[:12]}]"
        existing = self._note_titled(records[0], title)
        if existing:
            return existing
        answers = self._composite(_note_requests(title, body, records))
        return str(answers[0]["body"]["id"])

    def _note_titled(self, record_id: str, title: str) -> str | None:
        for link in self.client.query_pages(soql.notes_on(record_id)):
            if (link.get("ContentDocument") or {}).get("Title") == title:
                return str(link["ContentDocumentId"])
        return None

    def _composite(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One composite call (counts once against the API limits); all or none take effect."""
        answer = self.client.rest(
            "composite", method="POST", json={"allOrNone": True, "compositeRequest": requests}
        )
        parts = list((answer or {}).get("compositeResponse") or [])
        failed = [p for p in parts if int(p.get("httpStatusCode", 500)) >= 300]
        if failed or len(parts) != len(requests):
            errors = [e for p in failed for e in error_list(p.get("body"))]
            causes = [e for e in errors if e.get("errorCode") != "PROCESSING_HALTED"] or errors
            summary = "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in causes[:5])
            raise CrmPermanent(f"salesforce: composite request refused: {summary}", status=400, detail=causes)
        return parts

    def update_properties(self, update: PropertyUpdate, key: str) -> None:
        """PATCH the record: setting the same values again is harmless, so no marker is needed."""
        sobject = SOBJECTS[update.object]
        _check_id(update.object_id, sobject)
        fields = {api_name(name): value for name, value in update.properties.items()}
        self.client.rest(f"sobjects/{sobject}/{update.object_id}", method="PATCH", json=fields)

    # --- writes: survey answers and referrals -------------------------------------

    def record_answer(self, answer: AnswerSpec, key: str) -> str:
        """The answer on the contact (three custom fields) and as a note on the deal and contact."""
        _check_id(answer.contact_id, "Contact")
        fields = {
            "Offboard_Last_Survey_Kind__c": answer.kind,
            "Offboard_Last_Exit_Score__c": answer.score,
            "Offboard_Exit_Category__c": answer.category,
        }
        self.client.rest(f"sobjects/Contact/{answer.contact_id}", method="PATCH", json=fields)
        body = f"{answer.kind.upper()} answer: {answer.score} ({answer.category})"
        if answer.comment:
            body += f"\n\n{answer.comment}"
        return self._note(body.splitlines()[0], body, [answer.deal_id, answer.contact_id], key)

    def create_referral(self, referral: ReferralSpec, key: str) -> str:
        """A Lead for the person a client referred, unless a Contact or Lead already has that email.

        Looking the email up first is also what keeps a retried call from
        creating the Lead twice.
        """
        email = referral.email.strip().lower()
        for sobject in ("Contact", "Lead"):
            found = self.client.query(soql.person_by_email(sobject, email))
            if found:
                return str(found[0]["Id"])
        fields = {
            "FirstName": referral.first_name[:40],
            "LastName": (referral.last_name or NOT_PROVIDED)[:80],
            "Email": email,
            "Company": (referral.company or NOT_PROVIDED)[:255],
            "LeadSource": self._lead_source(),
            "Description": f"{self._referred_by(referral)}\n\n{referral.note}".strip(),
        }
        created = self.client.rest(
            "sobjects/Lead", method="POST", json={k: v for k, v in fields.items() if v}
        )
        return str(created["id"])

    def _referred_by(self, referral: ReferralSpec) -> str:
        """Who introduced the Lead, on which Opportunity: by name for people, with the ids for lookups.

        A Lead has no standard field pointing at a Contact or an Opportunity, so
        the attribution is the Lead's Description (and its Lead Source).
        """
        referrer, opportunity = referral.referrer_name, referral.deal_name
        if referrer and opportunity:
            return _attribution(referral, referrer, opportunity)
        try:
            deal = self.fetch_deal(referral.deal_id)
        except CrmPermanent as exc:
            if exc.status != 404:
                raise
            log.warning("salesforce: opportunity %s is gone; the referral names ids only", referral.deal_id)
        else:
            opportunity = deal.name
            contact = next((c for c in deal.contacts if c.id == referral.referrer_contact_id), None)
            referrer = contact.full_name if contact else None
        return _attribution(referral, referrer, opportunity)

    def _lead_source(self) -> str | None:
        """The org's Lead Source value for referrals (e.g. Partner Referral), described once."""
        if self._referral_source is _UNKNOWN:
            describe = self.client.rest("sobjects/Lead/describe")
            fields = {f["name"]: f for f in describe.get("fields", [])}
            values = [
                v["value"]
                for v in (fields.get("LeadSource") or {}).get("picklistValues") or []
                if v.get("active")
            ]
            self._referral_source = next((v for v in values if "referral" in v.casefold()), None)
        return self._referral_source

    # --- writes: survey and referral sends -------------------------------------

    def send_invite(self, invite: Invite, key: str) -> str:
        """Send the invite once, then log it as a completed Task on the contact; return that Task's id.

        The log Task is the marker: found, nothing is sent again. The one window
        left is a send whose reply was lost before the Task was written; it is
        retried, as a resend is better than a silent gap in the playbook.
        """
        _check_id(invite.deal_id, "Opportunity")
        _check_id(invite.contact_id, "Contact")
        mark = tasks.marker(key, "sent")
        done = self._sent_already(invite.deal_id, mark)
        if done:
            return done
        survey_id = self.survey_ids.get(invite.kind)
        how = self._survey_invitation(invite, survey_id, key) if survey_id else self._email(invite)
        label = INVITE_LABELS[invite.kind]
        record = tasks.logged(
            subject=f"{label} sent",
            body=f"{label} sent {how}.\n{invite.link}",
            on=self.clock().astimezone(self.zone).date(),
            deal_id=invite.deal_id,
            contact_id=invite.contact_id,
            picklists=self.picklists(),
            mark=mark,
            marker_field=self.marker_field,
        )
        if self.marker_field:
            return self._upsert([record])[0]
        return self._collections("POST", "composite/sobjects", [record])[0]

    def _sent_already(self, deal_id: str, mark: str) -> str | None:
        if self.marker_field:
            found = self.client.query(soql.tasks_marked(self.marker_field, [mark]))
            return str(found[0]["Id"]) if found else None
        return self._existing_marks({("WhatId", deal_id)}).get(mark)

    def _survey_invitation(self, invite: Invite, survey_id: str, key: str) -> str:
        """A SurveyInvitation for the contact (Feedback Management); the org's Flow emails it.

        Guests answer on the Experience Cloud site (CommunityId), which Salesforce
        requires for an invitation that allows guest responses.
        """
        if not self.community_id:
            raise CrmPermanent(
                "salesforce: guest survey invitations need SALESFORCE_COMMUNITY_ID "
                "(the Experience Cloud site)"
            )
        name = f"Offboard {invite.kind.upper()} {key[:16]}"
        if not self.client.query(soql.survey_invitation(name)):
            self.client.rest(
                "sobjects/SurveyInvitation",
                method="POST",
                json={
                    "Name": name,
                    "SurveyId": survey_id,
                    "CommunityId": self.community_id,
                    "ParticipantId": invite.contact_id,
                    "OptionsAllowGuestUserResponse": True,
                    "OptionsAllowParticipantAccessTheirResponse": False,
                    "OptionsCollectAnonymousResponse": False,
                },
            )
        return f"as Salesforce survey invitation {name}"

    def _email(self, invite: Invite) -> str:
        if not invite.email:
            raise CrmPermanent("salesforce: the contact has no email address to send the link to")
        subject, question = EMAILS[invite.kind]
        inputs = {
            "emailAddresses": invite.email,
            "emailSubject": invite.subject(subject),
            "emailBody": f"Hello,\n\n{question}\n\n{invite.link}\n\n{invite.closing()}",
            "senderType": "CurrentUser",
        }
        answers = self.client.rest("actions/standard/emailSimple", method="POST", json={"inputs": [inputs]})
        failed = [a for a in answers or [] if not a.get("isSuccess")]
        if failed:
            errors = [e for a in failed for e in a.get("errors") or []]
            raise CrmPermanent("salesforce: the emailSimple action failed", status=400, detail=errors)
        return f"by email to {invite.email}"


def api_name(name: str) -> str:
    """A playbook property name as a Salesforce field: ``offboarding_status`` → ``Offboarding_Status__c``.

    Names that already look like API names (``Description``, ``Custom__c``) pass
    unchanged, so one playbook works on HubSpot and Salesforce alike.
    """
    if "__" in name or name[:1].isupper():
        return soql.field_path(name, "playbook property")
    custom = "_".join(part.capitalize() for part in name.split("_") if part) + "__c"
    return soql.field_path(custom, "playbook property")


def _note_requests(title: str, body: str, linked: list[str]) -> list[dict[str, Any]]:
    base = f"/services/data/v{API_VERSION}/sobjects"
    content = "".join(f"<p>{html.escape(line)}</p>" for line in body.splitlines() or [""])
    requests = [
        {
            "method": "POST",
            "url": f"{base}/ContentNote",
            "referenceId": "note",
            "body": {"Title": title, "Content": base64.b64encode(content.encode()).decode()},
        }
    ]
    for n, record_id in enumerate(linked):
        requests.append(
            {
                "method": "POST",
                "url": f"{base}/ContentDocumentLink",
                "referenceId": f"link{n}",
                # ShareType I: whoever can see the record can see the note.
                "body": {"ContentDocumentId": "@{note.id}", "LinkedEntityId": record_id, "ShareType": "I"},
            }
        )
    return requests


def _check_id(value: str, sobject: str) -> None:
    # Ids end up in URL paths and come from stored payloads: refuse anything else here.
    if not ids.is_id(value):
        raise CrmPermanent(f"salesforce: {value!r} is not a {sobject} id", status=400)


def _flag(value: Any) -> bool | None:
    """An outbound message's "true"/"false" (or a Flow's JSON boolean) as a bool; None if absent."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return None


def _attribution(referral: ReferralSpec, referrer: str | None, opportunity: str | None) -> str:
    who = f"contact {referral.referrer_contact_id}"
    if referrer:
        who = f"{referrer} ({who})"
    if referral.referrer_company:
        who += f" of {referral.referrer_company}"
    deal_text = f'"{opportunity}" ({referral.deal_id})' if opportunity else referral.deal_id
    return f"Referred by {who}, on opportunity {deal_text}."
