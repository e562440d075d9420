"""Survey and referral sends: a SurveyInvitation, or an ``emailSimple`` action, logged as a done Task.

Salesforce Surveys send the invitation when the org has a survey set up for that
kind (``SALESFORCE_SURVEY_IDS``); otherwise the link goes by email. Either way a
completed Task on the contact records the send, and that Task is the marker: found,
nothing is sent again.
"""

from __future__ import annotations

import adapters.salesforce.soql as soql
import adapters.salesforce.tasks as tasks
from adapters.salesforce.writes import TaskWriter, check_id
from connector.clock import Clock
from connector.errors import CrmPermanent
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
        self.writer, self.client = writer, writer.client
        self.survey_ids, self.community_id, self.clock = survey_ids, community_id, clock

    def send(self, invite: Invite, key: str) -> str:
        """Send the invite once, then log it as a completed Task on the contact; return that Task's id.

        The log Task is the marker: found, nothing is sent again. The one window
        left is a send whose reply was lost before the Task was written; it is
        retried, as a resend is better than a silent gap in the playbook.
        """
        check_id(invite.deal_id, "Opportunity")
        check_id(invite.contact_id, "Contact")
        mark = tasks.marker(key, "sent")
        done = self.writer.find(invite.deal_id, mark)
        if done:
            return done
        survey_id = self.survey_ids.get(invite.kind)
        how = self._survey_invitation(invite, survey_id, key) if survey_id else self._email(invite)
        label = INVITE_LABELS[invite.kind]
        record = tasks.logged(
            subject=f"{label} sent",
            body=f"{label} sent {how}.\n{invite.link}",
            on=self.clock().astimezone(self.writer.zone).date(),
            deal_id=invite.deal_id,
            contact_id=invite.contact_id,
            picklists=self.writer.picklists(),
            mark=mark,
            marker_field=self.writer.marker_field,
        )
        return self.writer.write_one(record)

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
