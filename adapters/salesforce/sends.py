"""Survey and referral sends: a SurveyInvitation, or an ``emailSimple`` action, logged as a done Task.

Salesforce Surveys send the invitation when the org has a survey set up for that
kind (``SALESFORCE_SURVEY_IDS``); otherwise the link goes by email. Either way a
completed Task on the contact records the send, and that Task is the marker: found,
nothing is sent again. It is looked for only when an earlier attempt's outcome is
unknown (``adapters.salesforce.attempts``).

Many sends share calls where Salesforce answers per record: the survey invitations go in
one sObject Collections call, the log Tasks in another, and the looking in one query. The
emails go one ``emailSimple`` call each: how a call with several inputs treats the others
when one is refused is not documented, and an email sent twice is worse than a call more.
So that the org's latency does not set their pace, a batch's emails are in flight together
(``SalesforceClient.each``), each call with its own outcome: one refused, or whose reply is
lost, fails (or leaves unsure) only its own send.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import adapters.salesforce.soql as soql
import adapters.salesforce.tasks as tasks
from adapters.base import Results, Write
from adapters.salesforce.collections import chunks, write_all
from adapters.salesforce.errors import error_list
from adapters.salesforce.writes import TaskWriter, check_id
from connector.clock import Clock
from connector.errors import CrmError, CrmPermanent, OutcomeUnknown
from connector.models import Invite

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


class InviteSender:
    def __init__(
        self,
        writer: TaskWriter,
        *,
        survey_ids: dict[str, str],
        community_id: str | None,
        clock: Clock,
    ) -> None:
        self.writer, self.client, self.attempts = writer, writer.client, writer.attempts
        self.survey_ids, self.community_id, self.clock = survey_ids, community_id, clock

    def send(self, invite: Invite, key: str) -> str:
        """Send the invite once, then log it as a completed Task on the contact (``send_many`` of one)."""
        (result,) = self.send_many([Write(key, invite)])
        if isinstance(result, CrmError):
            raise result
        return result

    def send_many(self, writes: Sequence[Write[Invite]]) -> Results[str]:
        """Each send's log Task id, or the error it alone met.

        The log Task is the marker: found, nothing is sent again. The one window left is a
        send whose log Task was not written (its reply lost, or refused); the send is tried
        again, as a resend is better than a silent gap in the playbook.
        """
        results: list[Any] = [self.attempts.written(w.key) for w in writes]
        todo = [n for n, r in enumerate(results) if r is None and _checked(writes[n].item, results, n)]
        unsure = {n for n in todo if self.attempts.unsure(writes[n].key, writes[n].unsure_since)}
        marks = {n: tasks.marker(writes[n].key, "sent") for n in todo}
        found = self.writer.find(
            {("WhatId", writes[n].item.deal_id) for n in unsure}, {marks[n] for n in unsure}
        )
        for n in (n for n in unsure if marks[n] in found):
            results[n] = found[marks[n]]
            self.attempts.wrote(writes[n].key, results[n])
        ready = [n for n in todo if results[n] is None]
        hows = self._survey_invitations([writes[n] for n in ready], [n in unsure for n in ready])
        for n, how in zip(ready, hows, strict=True):
            results[n] = how
        by_email = [n for n in ready if results[n] is None]
        for n, how in zip(
            by_email, self.client.each(self._email, [writes[n] for n in by_email]), strict=True
        ):
            results[n] = how
        sent = [n for n in ready if isinstance(results[n], str)]
        self._log([writes[n] for n in sent], [str(results[n]) for n in sent], results, sent)
        return results

    def _log(self, writes: list[Write[Invite]], hows: list[str], results: list[Any], at: list[int]) -> None:
        """Log each send as a completed Task on its contact, in calls of 200."""
        picklists = self.writer.picklists()
        plans = []
        for write, how in zip(writes, hows, strict=True):
            invite, mark = write.item, tasks.marker(write.key, "sent")
            label = INVITE_LABELS[invite.kind]
            record = tasks.logged(
                subject=f"{label} sent",
                body=f"{label} sent {how}.\n{invite.link}",
                on=self.clock().astimezone(self.writer.zone).date(),
                deal_id=invite.deal_id,
                contact_id=str(invite.contact_id),
                picklists=picklists,
                mark=mark,
                marker_field=self.writer.marker_field,
            )
            plans.append([(mark, record, ("WhatId", invite.deal_id))])
        try:
            logged: list[Any] = self.writer.write_marked(writes, plans, found={})
        except CrmError as exc:
            logged = [exc] * len(writes)
        for n, write, outcome in zip(at, writes, logged, strict=True):
            if isinstance(outcome, CrmError):  # sent, not logged: the next attempt looks first
                self.attempts.outcome_unknown(write.key)
                results[n] = outcome
            else:
                results[n] = outcome[0]
                self.attempts.wrote(write.key, results[n])

    def _survey_invitations(
        self, writes: list[Write[Invite]], unsure: list[bool]
    ) -> list[str | CrmError | None]:
        """A SurveyInvitation for each contact whose survey kind the org has (Feedback Management),
        in one call; the org's Flow emails it. None for the sends that go by email.

        Guests answer on the Experience Cloud site (CommunityId), which Salesforce
        requires for an invitation that allows guest responses.
        """
        hows: list[str | CrmError | None] = [None] * len(writes)
        named = {n: _invitation_name(w) for n, w in enumerate(writes) if self.survey_ids.get(w.item.kind)}
        if named and not self.community_id:
            refused = CrmPermanent(
                "salesforce: guest survey invitations need SALESFORCE_COMMUNITY_ID "
                "(the Experience Cloud site)"
            )
            return [refused if n in named else None for n in range(len(writes))]
        existing = self._invitations_named([named[n] for n in named if unsure[n]])
        new = [n for n in named if named[n] not in existing]
        records = [[self._invitation(writes[n].item, named[n])] for n in new]
        try:
            created = [error for _, error in write_all(self.client, "POST", "composite/sobjects", records)]
        except CrmError as exc:
            created = [exc] * len(new)
        for n, error in zip(new, created, strict=True):
            if isinstance(error, OutcomeUnknown):
                self.attempts.outcome_unknown(writes[n].key)
            hows[n] = error
        for n in named:
            hows[n] = hows[n] or f"as Salesforce survey invitation {named[n]}"
        return hows

    def _invitations_named(self, names: list[str]) -> set[str]:
        found: set[str] = set()
        for some in chunks(sorted(names)):
            found |= {str(r["Name"]) for r in self.client.query_pages(soql.survey_invitations(some))}
        return found

    def _invitation(self, invite: Invite, name: str) -> dict[str, Any]:
        return {
            "attributes": {"type": "SurveyInvitation"},
            "Name": name,
            "SurveyId": self.survey_ids[invite.kind],
            "CommunityId": self.community_id,
            "ParticipantId": invite.contact_id,
            "OptionsAllowGuestUserResponse": True,
            "OptionsAllowParticipantAccessTheirResponse": False,
            "OptionsCollectAnonymousResponse": False,
        }

    def _email(self, write: Write[Invite]) -> str | CrmError:
        invite = write.item
        if not invite.email:
            return CrmPermanent("salesforce: the contact has no email address to send the link to")
        subject, question = EMAILS[invite.kind]
        inputs = {
            "emailAddresses": invite.email,
            "emailSubject": invite.subject(subject),
            "emailBody": f"Hello,\n\n{question}\n\n{invite.link}\n\n{invite.closing()}",
            "senderType": "CurrentUser",
        }
        try:
            answers = self.client.rest(
                "actions/standard/emailSimple", method="POST", json={"inputs": [inputs]}
            )
        except OutcomeUnknown as exc:
            self.attempts.outcome_unknown(write.key)
            return exc
        except CrmPermanent as exc:  # a refused input answers 400 with the action's answers
            return _refused(exc.detail) or exc
        except CrmError as exc:
            return exc
        return _refused(answers) or f"by email to {invite.email}"


def _refused(answers: Any) -> CrmPermanent | None:
    """The error of an ``emailSimple`` answer whose input failed (its codes named), else None."""
    failed = [a for a in error_list(answers) if "isSuccess" in a and not a["isSuccess"]]
    if not failed:
        return None
    errors = [dict(e) for a in failed for e in a.get("errors") or [] if isinstance(e, dict)]
    summary = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors[:5])
    return CrmPermanent(
        f"salesforce: the emailSimple action failed: {summary or 'no reason given'}",
        status=400,
        detail=errors,
    )


def _invitation_name(write: Write[Invite]) -> str:
    return f"Offboard {write.item.kind.upper()} {write.key[:16]}"


def _checked(invite: Invite, results: list[Any], n: int) -> bool:
    """Whether the invite names an Opportunity and a Contact by id; if not, its error goes in ``results``."""
    try:
        check_id(invite.deal_id, "Opportunity")
        check_id(str(invite.contact_id), "Contact")
    except CrmPermanent as exc:
        results[n] = exc
        return False
    return True
