"""The feedback loop: survey answers and referrals that come back through personal links.

Everything a client submits is stored and turned into outbox actions in one unit of
work: the answer written back to the CRM, the steps its score unlocks, and a record of
the steps it rules out. The CRM calls happen later, in the worker.

Each link is used once: a survey link gives one answer, a referral link one
submission (unique rows decide, so two posts at the same instant make one answer and
one "already sent" page, never an error). Links of a cancelled run are closed: they
show the closed page and write nothing. The run's row is locked while a submission is
written, so a cancel and a submission never interleave. Reading the link itself is
``connector.links``'s; reading the form is the web layer's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from connector import queue
from connector.errors import LinkProblem, Problem
from connector.links import Claims
from connector.models import AnswerSpec, Deal, ReferralSpec, TaskSpec, category
from connector.planner import PlanContext, at_workday_start, plan_follow_ups, resolve_owner
from connector.playbooks.loader import from_pinned
from connector.playbooks.model import Playbook, Step
from connector.playbooks.offsets import add_business_days
from connector.queue import ActionState, RunState
from connector.runs import TASK, follow_up_actions, new_action, skipped_action
from connector.settings import Settings
from connector.store import Action, Answer, Referral, Run
from connector.store.db import insert
from connector.usecases import checklist
from connector.usecases.accounts import account_context
from connector.usecases.uow import UnitOfWork

COMMENT_LIMIT = 5000


@dataclass(frozen=True)
class LinkPage:
    """What a survey or referral page shows."""

    claims: Claims
    company: str
    first_name: str
    tone: str
    ask: tuple[str, ...] = ()


@dataclass(frozen=True)
class Referred:
    """What a client sent on the referral page (already checked by the web layer)."""

    name: str
    email: str
    company: str
    note: str
    testimonial: bool
    case_study: bool


def open_link(uow: UnitOfWork, claims: Claims) -> LinkPage:
    """The page a link shows, or LinkProblem: its run is gone or cancelled, or it was used."""
    run = uow.session.get(Run, claims.run)
    if run is None:
        raise LinkProblem("forged")
    if run.state == RunState.CANCELLED:
        raise LinkProblem("closed")
    if claims.kind == "referral" and _referred(uow.session, run.id, claims.step):
        raise LinkProblem("sent")
    if claims.kind != "referral" and _answered(uow.session, run.id, claims.step):
        raise LinkProblem("used")
    return _page(run, claims)


def _open_run(session: Session, claims: Claims) -> Run:
    """The link's run, locked until the submission is written; LinkProblem when it is gone or cancelled."""
    run = session.get(Run, claims.run, with_for_update=True)
    if run is None:
        raise LinkProblem("forged")
    if run.state == RunState.CANCELLED:
        raise LinkProblem("closed")
    return run


@contextmanager
def _once(problem: Problem) -> Iterator[None]:
    """A unique row another request wrote first (a race the inserts did not see): the link is used."""
    try:
        yield
    except IntegrityError:
        raise LinkProblem(problem) from None


def _page(run: Run, claims: Claims) -> LinkPage:
    deal = Deal.model_validate(run.deal)
    playbook = from_pinned(run.playbook)
    step = _step(playbook, claims.step)
    contact = next((c for c in deal.contacts if c.id == claims.contact), deal.primary_contact)
    company = deal.company.name if deal.company else deal.name
    ask = tuple(step.referral.ask) if step and step.referral else ()
    first_name = (contact.first_name or contact.full_name) if contact else ""
    return LinkPage(claims, company, first_name, playbook.tone, ask)


def _step(playbook: Playbook, step_id: str) -> Step | None:
    return next((s for s in playbook.steps if s.id == step_id), None)


def _answered(session: Session, run_id: int, step_id: str) -> bool:
    return session.scalar(select(Answer.id).filter_by(run_id=run_id, step_id=step_id)) is not None


def _referred(session: Session, run_id: int, step_id: str) -> bool:
    return session.scalar(select(Referral.id).filter_by(run_id=run_id, step_id=step_id)) is not None


# --- survey answers -----------------------------------------------------------


def record_answer(uow: UnitOfWork, settings: Settings, claims: Claims, score: int, comment: str) -> Answer:
    """Store the answer once, and queue its write-back and the steps it unlocks.

    LinkProblem("used") when the link was answered before, "closed" when its run is cancelled.
    """
    with _once("used"):
        answer = _record_answer(uow, settings, claims, score, comment)
        uow.session.flush()  # a concurrent answer's rows conflict here, not at commit
        return answer


def _record_answer(uow: UnitOfWork, settings: Settings, claims: Claims, score: int, comment: str) -> Answer:
    session = uow.session
    run = _open_run(session, claims)
    answer_id = session.execute(
        insert(session, Answer)
        .values(
            run_id=run.id,
            step_id=claims.step,
            contact_id=claims.contact,
            kind=claims.kind,
            score=score,
            comment=comment[:COMMENT_LIMIT],
            answered_at=uow.now,
        )
        .on_conflict_do_nothing()
        .returning(Answer.id)
    ).scalar()
    if answer_id is None:
        raise LinkProblem("used")
    answer = session.get_one(Answer, answer_id)
    session.add(_write_back(run, Deal.model_validate(run.deal), answer, uow.now))
    uow.audit("survey.answered", run_id=run.id, crm=run.crm, step=claims.step, kind=claims.kind, score=score)
    unlock(uow, settings, run, claims.step, score)  # a late answer to a finished run counts
    return answer


def _write_back(run: Run, deal: Deal, answer: Answer, now: datetime) -> Action:
    spec = AnswerSpec(
        step_id=answer.step_id,
        kind=answer.kind,  # type: ignore[arg-type]  # stored from a validated Claims.kind
        score=answer.score,
        category=category(answer.kind, answer.score),
        comment=answer.comment,
        deal_id=deal.id,
        contact_id=answer.contact_id,
        answered_at=answer.answered_at,
    )
    return new_action(run, f"{answer.step_id}:answer", "answer", spec.model_dump(mode="json"), now, now)


def unlock(uow: UnitOfWork, settings: Settings, run: Run, survey_step: str, score: int | None) -> int:
    """Queue the steps waiting on ``survey_step`` whose condition now holds; record the ones ruled out.

    ``score`` is None when the survey's deadline passed without an answer. Steps
    that already have an action (queued or skipped earlier) are left alone.
    """
    session, now = uow.session, uow.now
    playbook = from_pinned(run.playbook)
    deal = Deal.model_validate(run.deal)
    taken = set(session.scalars(select(Action.step_id).where(Action.run_id == run.id)))
    kinds = {step.id: step.kind for step in playbook.steps}
    waiting = [
        s
        for s in playbook.steps
        if s.waits_on(survey_step)
        and s.id not in taken
        and all(kinds.get(dep) == "survey" for dep in s.after_ids)  # a task among them: checklist's
    ]
    due, skipped = _sort_out(waiting, score)
    ctx = account_context(session, settings, run.crm, run.account, now)
    session.add_all(follow_up_actions(run, deal, plan_follow_ups(deal, playbook, ctx, due), now))
    if due:
        queue.reopen_runs(session, [run.id], now=now)  # a done run owes the CRM these new actions
    session.add_all(skipped_action(run, step.id, step.kind, f"skipped: {why}", now) for step, why in skipped)
    if score is not None:
        due_count = len(due) + checklist.release(uow, settings, run)  # steps after a task and this survey
        checklist.refresh(uow, settings, run)
        return due_count
    return len(due)


def _sort_out(waiting: list[Step], score: int | None) -> tuple[list[Step], list[tuple[Step, str]]]:
    """Which waiting steps an answer (or its absence, ``None``) lets go, and which it rules out, why."""
    due: list[Step] = []
    skipped: list[tuple[Step, str]] = []
    for step in waiting:
        when = step.body.when
        if score is None:
            if when is not None and when.answered is False:
                due.append(step)
            continue  # steps on the score wait: a late answer may still come
        if when is None:
            due.append(step)
            continue
        holds, why = when.holds_for(score)
        if holds:
            due.append(step)
        else:
            skipped.append((step, why))
    return due, skipped


def deadline_passed(uow: UnitOfWork, settings: Settings, run: Run, survey_step: str) -> dict[str, Any]:
    """The answer window of ``survey_step`` closed: run its no-answer steps unless it was answered."""
    if _answered(uow.session, run.id, survey_step):
        return {"answered": True}
    sent = uow.session.scalar(select(Action.state).filter_by(run_id=run.id, step_id=survey_step))
    if sent != ActionState.DONE:
        return {"answered": False, "queued": 0, "note": f"the survey was not sent ({sent})"}
    if run.state == RunState.CANCELLED:
        return {"answered": False, "queued": 0, "note": "run is cancelled"}
    return {"answered": False, "queued": unlock(uow, settings, run, survey_step, None)}


# --- referrals ------------------------------------------------------------------


def record_referral(uow: UnitOfWork, settings: Settings, claims: Claims, form: Referred) -> int:
    """Store the link's one submission and queue it for the CRM; the number of actions queued.

    LinkProblem("sent") when the link was used before (or by a concurrent post),
    LinkProblem("closed") when its run is cancelled.
    """
    with _once("sent"):
        queued = _record_referral(uow, settings, claims, form)
        uow.session.flush()  # a concurrent submission's rows conflict here, not at commit
        return queued


def _record_referral(uow: UnitOfWork, settings: Settings, claims: Claims, form: Referred) -> int:
    session, now = uow.session, uow.now
    run = _open_run(session, claims)
    referral_id = session.execute(
        insert(session, Referral)
        .values(
            run_id=run.id,
            step_id=claims.step,
            referrer_contact_id=claims.contact,
            name=form.name,
            email=form.email,
            company=form.company,
            note=form.note,
            testimonial=form.testimonial,
            case_study=form.case_study,
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(Referral.id)
    ).scalar()
    if referral_id is None:
        raise LinkProblem("sent")
    deal = Deal.model_validate(run.deal)
    ctx = account_context(session, settings, run.crm, run.account, now)
    actions: list[Action] = []
    if form.email:
        actions += _introduction(run, deal, claims, form, referral_id, ctx)
    for consent in ("testimonial", "case_study"):
        if getattr(form, consent):
            actions += _consent(session, run, deal, claims, consent, ctx)
    session.add_all(actions)
    uow.audit("referral.received", run_id=run.id, crm=run.crm, step=claims.step, actions=len(actions))
    return len(actions)


def _introduction(
    run: Run, deal: Deal, claims: Claims, form: Referred, referral_id: int, ctx: PlanContext
) -> list[Action]:
    first, _, last = form.name.partition(" ")
    spec = ReferralSpec(
        step_id=claims.step,
        deal_id=deal.id,
        referrer_contact_id=claims.contact,
        referrer_name=_referrer(deal, claims),
        referrer_company=deal.company.name if deal.company else None,
        deal_name=deal.name,
        first_name=first,
        last_name=last,
        email=form.email,
        company=form.company,
        note=form.note,
    )
    step_id = f"{claims.step}:referral:{referral_id}"
    title = (
        f"Follow up with {form.name}"
        + (f" ({form.company})" if form.company else "")
        + f", introduced by {_referrer(deal, claims)}"
    )
    task = _task(deal, ctx, f"{step_id}:follow-up", title, form.note, resolve_owner("deal_owner", deal, ctx))
    now = ctx.now
    # The follow-up waits for the new contact, so the task can point at the person to call.
    follow_up = new_action(
        run, f"{step_id}:follow-up", TASK, {"tasks": [task], "after": step_id}, now, now,
        state=ActionState.WAITING,
    )  # fmt: skip
    return [new_action(run, step_id, "referral_contact", spec.model_dump(mode="json"), now, now), follow_up]


def _consent(
    session: Session, run: Run, deal: Deal, claims: Claims, consent: str, ctx: PlanContext
) -> list[Action]:
    step_id = f"{claims.step}:{consent}"
    if session.scalar(select(Action.id).filter_by(run_id=run.id, step_id=step_id)) is not None:
        return []
    what = "a testimonial" if consent == "testimonial" else "a case study"
    title = f"{_referrer(deal, claims)} agreed to {what}"
    company = deal.company.name if deal.company else deal.name
    body = f"{_referrer(deal, claims)} ({company}) said yes on the referral page."
    task = _task(deal, ctx, step_id, title, body, resolve_owner("role:marketing", deal, ctx))
    return [new_action(run, step_id, TASK, {"tasks": [task]}, ctx.now, ctx.now)]


def _referrer(deal: Deal, claims: Claims) -> str:
    contact = next((c for c in deal.contacts if c.id == claims.contact), None)
    return (contact.full_name if contact else "") or "the client"


def _task(
    deal: Deal, ctx: PlanContext, step_id: str, title: str, body: str, owner: str | None
) -> dict[str, Any]:
    contact = deal.primary_contact
    due = at_workday_start(add_business_days(ctx.today, 1), ctx.zone)
    return TaskSpec(
        step_id=step_id,
        title=title[:255],
        body=body,
        due_at=due,
        owner_id=owner,
        priority="high",
        type="todo",
        deal_id=deal.id,
        company_id=deal.company.id if deal.company else None,
        contact_id=contact.id if contact else None,
    ).model_dump(mode="json")
