"""The CRM-neutral words the core speaks: deals, people, and the writes a run owes.

Adapters translate their CRM's records into these and back; nothing here knows
which CRM a deal came from beyond the ``crm`` name.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Outcome = Literal["won", "lost"]
TaskPriority = Literal["low", "normal", "high"]
TaskType = Literal["todo", "call", "email"]
SurveyKind = Literal["nps", "csat", "ces"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Owner(_Model):
    id: str
    name: str | None = None
    email: str | None = None


class Company(_Model):
    id: str
    name: str
    domain: str | None = None


class Contact(_Model):
    id: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    primary: bool = False

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first_name, self.last_name) if p) or (self.email or "")


class Deal(_Model):
    """A deal (HubSpot) or opportunity (Salesforce), as much as a playbook needs of it."""

    crm: str
    account: str
    id: str
    name: str
    outcome: Outcome | None = None
    closed: bool = False
    amount: Decimal | None = None
    currency: str | None = None
    pipeline: str | None = None
    stage: str | None = None
    close_date: date | None = None
    contract_type: str | None = None
    contract_end: date | None = None
    owner: Owner | None = None
    company: Company | None = None
    contacts: tuple[Contact, ...] = ()
    properties: dict[str, Any] = Field(default_factory=dict)

    @property
    def primary_contact(self) -> Contact | None:
        for contact in self.contacts:
            if contact.primary:
                return contact
        return self.contacts[0] if self.contacts else None


class DealChange(_Model):
    """What an inbound event means to the core: a deal closed, or re-opened after closing."""

    deal: Deal
    change: Literal["closed", "reopened"]
    occurred_at: datetime | None = None


class TaskState(_Model):
    """A checklist task as the CRM holds it now: what the tracking pass and a task event read back.

    ``body`` is plain text (a CRM that stores HTML gives it with the tags removed and line
    breaks kept), so the core can find the ``Evidence:`` line a CSM added; ``attachments``
    names the files attached to the task (any file counts as evidence).
    """

    id: str
    completed: bool
    completed_at: datetime | None = None
    # Who completed it, where the CRM says, as the id its tasks are assigned to (a HubSpot owner).
    completed_by: str | None = None
    owner_id: str | None = None
    body: str = ""
    attachments: tuple[str, ...] = ()
    modified_at: datetime | None = None


class TaskChange(_Model):
    """What an inbound event means when it is about a checklist task: its status changed.

    ``completed`` is None when the event does not say (read the task); a task re-opened in
    the CRM comes as ``completed=False``.
    """

    task_id: str
    completed: bool | None = None
    occurred_at: datetime | None = None


class RecordSpec(_Model):
    """The offboarding record, written on the deal when its checklist is done: a note with
    ``body`` and the same record attached as a file (``filename``, ``content``) an auditor can
    download from the CRM."""

    step_id: str
    deal_id: str
    title: str
    body: str
    filename: str
    content: str
    content_type: str = "text/markdown"


class TaskSpec(_Model):
    """One checklist task to create in the CRM."""

    step_id: str
    title: str
    body: str = ""
    due_at: datetime
    owner_id: str | None = None
    priority: TaskPriority = "normal"
    type: TaskType = "todo"
    deal_id: str
    company_id: str | None = None
    contact_id: str | None = None


class NoteSpec(_Model):
    step_id: str
    body: str
    deal_id: str
    company_id: str | None = None
    contact_id: str | None = None


class PropertyUpdate(_Model):
    step_id: str
    object: Literal["deal", "company", "contact"]
    object_id: str
    properties: dict[str, str]


InviteKind = Literal["nps", "csat", "ces", "referral"]


class Invite(_Model):
    """A personal link put in front of a contact: a survey, or a referral/testimonial ask."""

    step_id: str
    kind: InviteKind
    deal_id: str
    contact_id: str
    email: str | None = None
    link: str
    # Who is asking (OFFBOARD_BRAND_NAME, OFFBOARD_BRAND_REPLY_TO): the texts that ask for an answer say so.
    sender: str | None = None
    reply_to: str | None = None

    def subject(self, text: str) -> str:
        """An email subject that names the sender."""
        return f"{text} · {self.sender}" if self.sender else text

    def closing(self) -> str:
        """The end of a message that asks for an answer: thanks, who is asking, where to reply."""
        lines = ["Thank you.", *([self.sender] if self.sender else [])]
        if self.reply_to:
            lines.append(f"Questions? Write to {self.reply_to}.")
        return "\n".join(lines)


Category = Literal["promoter", "passive", "detractor"]


def category(kind: str, score: int) -> Category:
    """NPS buckets; CSAT (1-5) and CES (1-7) bucketed the same way at their top and bottom."""
    high, low = {"nps": (9, 6), "csat": (5, 3), "ces": (6, 4)}[kind]
    if score >= high:
        return "promoter"
    return "detractor" if score <= low else "passive"


class AnswerSpec(_Model):
    """A survey answer to write back to the CRM: on the contact, and as a note on the deal."""

    step_id: str
    kind: SurveyKind
    score: int
    category: Category
    comment: str = ""
    deal_id: str
    contact_id: str
    answered_at: datetime


class ReferralSpec(_Model):
    """Someone a happy client introduced: a new contact (HubSpot) or lead (Salesforce)."""

    step_id: str
    deal_id: str
    referrer_contact_id: str
    referrer_name: str | None = None
    referrer_company: str | None = None
    deal_name: str | None = None
    first_name: str
    last_name: str = ""
    email: str
    company: str = ""
    note: str = ""
