"""Survey sends and referral asks: a personal link put in front of a contact.

The link is signed when the invitation goes out (``connector.links``) and never stored.
Surveys keep a ledger of sends per contact (``contact_touches``), so a contact who got
a survey of a kind recently is not asked again by another run (survey fatigue).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select, update

from adapters.base import CrmAdapter, InviteBatches, Results, Write
from connector import links
from connector.actions.base import Handler
from connector.errors import CrmError, CrmPermanent, Skip
from connector.models import Invite, InviteKind, SurveyKind
from connector.playbooks.loader import from_pinned
from connector.playbooks.offsets import add_business_days
from connector.store import Action, ContactTouch, Run
from connector.usecases.accounts import account_settings
from connector.usecases.uow import UnitOfWork


class InvitePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_id: str
    deal_id: str
    contact_id: str | None = None
    email: str | None = None
    run_id: int = 0  # not stored: the action's run, added when the payload is read
    # Not stored either: an installed account's own brand, looked up before the send.
    sender: str | None = None
    reply_to: str | None = None


class SurveyPayload(InvitePayload):
    survey: SurveyKind
    answers: str  # the survey step an answer belongs to: this one, or the one a reminder follows
    deadline_at: datetime | None = None

    @property
    def reminder(self) -> bool:
        return self.answers != self.step_id


class ReferralPayload(InvitePayload):
    ask: list[str]


@dataclass(frozen=True)
class Touch:
    """An earlier survey sent to the same contact."""

    kind: str
    sent_at: datetime
    run_id: int


def fatigue(touches: Iterable[Touch], *, kind: str, run_id: int, now: datetime, days: int) -> str | None:
    """Why a ``kind`` survey may not go to a contact with these earlier sends, or None.

    No second survey of a kind within ``days`` from another run; 0 days turns the rule off.
    """
    if not days:
        return None
    since = now - timedelta(days=days)
    earlier = [t for t in touches if t.kind == kind and t.run_id != run_id and t.sent_at >= since]
    if not earlier:
        return None
    last = max(earlier, key=lambda t: t.sent_at)
    return (
        f"the contact got a {last.kind.upper()} survey on {last.sent_at:%Y-%m-%d} "
        f"(run {last.run_id}); no second one within {days} days"
    )


class _InviteHandler(Handler[Any]):
    def parse(self, action: Action) -> Any:
        payload = super().parse(action)
        return payload.model_copy(update={"run_id": action.run_id})

    def before(self, uow: UnitOfWork, run: Run, action: Action, payload: Any) -> None:
        """An installed account's invitations go out under its own brand."""
        own = account_settings(uow.session, self.settings, run.crm, run.account)
        if own is not None:
            payload.sender, payload.reply_to = own.brand_name, own.brand_reply_to

    def perform(self, adapter: CrmAdapter, payload: Any, key: str) -> dict[str, Any]:
        return {"invite_id": adapter.send_invite(self.invite(payload), key)}

    def batches(self, adapter: CrmAdapter) -> bool:
        return isinstance(adapter, InviteBatches)

    def perform_many(self, adapter: CrmAdapter, writes: Sequence[Write[Any]]) -> Results[dict[str, Any]]:
        assert isinstance(adapter, InviteBatches)
        invites: list[Write[Invite] | CrmPermanent] = []
        for write in writes:
            try:
                invites.append(Write(write.key, self.invite(write.item), write.unsure_since))
            except CrmPermanent as exc:  # no contact to send to: this one alone fails
                invites.append(exc)
        ready = [w for w in invites if isinstance(w, Write)]
        sent = iter(adapter.send_invites_many(ready) if ready else [])
        return [w if isinstance(w, CrmPermanent) else _sent(next(sent)) for w in invites]

    def invite(self, payload: InvitePayload) -> Invite:
        """The invitation with its personal link, signed now."""
        if not payload.contact_id:
            raise CrmPermanent("the deal has no contact to send this to")
        stored = payload.model_dump(mode="json", exclude={"run_id", "sender", "reply_to"})
        purpose, claims = links.invite_claims(payload.run_id, self.kind, payload.step_id, stored)
        kind: InviteKind = claims["kind"]
        secret = self.settings.secret_key.get_secret_value()
        return Invite(
            step_id=payload.step_id,
            kind=kind,
            deal_id=payload.deal_id,
            contact_id=payload.contact_id,
            email=payload.email,
            link=links.make_link(self.settings.public_url, secret, purpose, claims),
            sender=payload.sender or self.settings.brand_name,
            reply_to=payload.reply_to or self.settings.brand_reply_to,
        )


def _sent(outcome: str | CrmError) -> dict[str, Any] | CrmError:
    return outcome if isinstance(outcome, CrmError) else {"invite_id": outcome}


class ReferralHandler(_InviteHandler):
    """A referral, testimonial or case-study ask, sent only to clients whose answer unlocked it."""

    kind = "referral"
    payload = ReferralPayload


class SurveyHandler(_InviteHandler):
    """An NPS, CSAT or CES survey send (or a reminder of one)."""

    kind = "survey"
    payload = SurveyPayload

    def before(self, uow: UnitOfWork, run: Run, action: Action, payload: SurveyPayload) -> None:
        super().before(uow, run, action, payload)
        if payload.reminder or not payload.contact_id:
            return  # reminders belong to their own survey
        days = self.settings.survey_fatigue_days
        rows = uow.session.execute(
            select(ContactTouch.kind, ContactTouch.sent_at, ContactTouch.run_id).where(
                ContactTouch.crm == run.crm,
                ContactTouch.account == run.account,
                ContactTouch.contact_id == payload.contact_id,
                ContactTouch.sent_at >= uow.now - timedelta(days=days),
            )
        ).all()
        touches = [Touch(kind, sent_at, run_id) for kind, sent_at, run_id in rows]
        reason = fatigue(touches, kind=payload.survey, run_id=run.id, now=uow.now, days=days)
        if reason is not None:
            raise Skip(reason)

    def after(
        self, uow: UnitOfWork, run: Run, action: Action, payload: SurveyPayload, result: dict[str, Any]
    ) -> None:
        """The send goes in the contact's ledger; its answer window counts from now."""
        uow.session.add(
            ContactTouch(
                crm=run.crm,
                account=run.account,
                contact_id=payload.contact_id,
                kind=payload.survey,
                run_id=run.id,
                sent_at=uow.now,
            )
        )
        if not payload.reminder:
            _move_deadline(uow, run, payload.step_id)


def _move_deadline(uow: UnitOfWork, run: Run, step_id: str) -> None:
    """A survey went out: its answer window counts from the send, not from when it was planned.

    Its deadline (which runs the reminder and the no-answer steps) moves to the send + the
    survey's ``deadline`` window when that is later than planned, so a survey sent late (a
    backdated deal, a retried or deferred send) is not followed by its reminder seconds later.
    """
    playbook = from_pinned(run.playbook)
    step = next((s for s in playbook.steps if s.id == step_id and s.survey), None)
    if step is None or step.survey is None:
        return
    sent_at = uow.now
    day = step.survey.deadline.apply(sent_at.date())
    if playbook.weekends == "next_weekday":
        day = add_business_days(day, 0)
    deadline = datetime.combine(day, sent_at.timetz())
    uow.session.execute(
        update(Action)
        .where(
            Action.run_id == run.id,
            Action.step_id == f"{step_id}:deadline",
            Action.state == "pending",
            Action.due_at < deadline,
        )
        .values(due_at=deadline, updated_at=sent_at)
    )
