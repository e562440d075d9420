"""Start runs and lay their actions into the outbox, in the caller's transaction.

A deal has one open (active or done) run at a time: whichever trigger comes
first starts it, and every later one finds it already there. Only a cancelled run
(the deal re-opened) makes room: the next close starts the playbook's next
generation, with idempotency keys of its own.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from connector.models import Deal, NoteSpec, PropertyUpdate, TaskSpec
from connector.planner import Plan, PlannedStep
from connector.playbooks.loader import LoadedPlaybook, from_pinned
from connector.playbooks.offsets import add_business_days
from connector.store import Action, AuditEntry, Run
from connector.store.db import insert

TASK_BATCH = "tasks"


def idempotency_key(run: Run, name: str) -> str:
    """Stable across retries and processes: the CRM-side marker of this write.

    A first generation's keys leave the generation out, so they are what they were
    before runs had generations.
    """
    raw = f"{run.crm}|{run.account}|{run.deal_id}|{run.playbook_id}|{name}"
    if run.generation and run.generation > 1:
        raw = f"{raw}|{run.generation}"
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Started:
    run: Run
    created: bool


def start_run(
    session: Session,
    *,
    deal: Deal,
    loaded: LoadedPlaybook,
    plan: Plan,
    trigger: str,
    event_id: int | None,
    now: datetime,
) -> Started:
    """Create the run and its actions, or return the run this deal already has for the playbook."""
    values = {
        "crm": deal.crm,
        "account": deal.account,
        "deal_id": deal.id,
        "playbook_id": loaded.id,
        "playbook_version": loaded.playbook.version,
        "playbook_hash": loaded.hash,
        "generation": _next_generation(session, deal, loaded.id),
        "playbook": loaded.pinned(),
        "deal": deal.model_dump(mode="json"),
        "trigger": trigger,
        "anchor_at": _midnight(plan),
        "event_id": event_id,
        "state": "active",
        "note": plan.anchor_note,
        "created_at": now,
        "updated_at": now,
    }
    # No conflict target: both the one-open-run-per-deal index and the generation's key count.
    statement = insert(session, Run).values(**values).on_conflict_do_nothing().returning(Run.id)
    run_id = session.execute(statement).scalar()
    if run_id is None:
        return Started(_existing_run(session, deal, loaded.id), created=False)
    run = session.get_one(Run, run_id)
    for action in actions_for(run, deal, plan, now):
        session.add(action)
    session.add(
        AuditEntry(
            actor="worker",
            verb="run.started",
            run_id=run.id,
            crm=deal.crm,
            detail={
                "playbook": loaded.id,
                "version": loaded.playbook.version,
                "trigger": trigger,
                "deal": deal.id,
            },
            at=now,
        )
    )
    return Started(run, created=True)


def _existing_run(session: Session, deal: Deal, playbook_id: str) -> Run:
    """The run that stopped this one: the deal's open run, or (a race lost) the playbook's latest."""
    runs = session.scalars(
        select(Run).filter_by(crm=deal.crm, account=deal.account, deal_id=deal.id).order_by(Run.id.desc())
    ).all()
    open_runs = [run for run in runs if run.state != "cancelled"]
    same = [run for run in runs if run.playbook_id == playbook_id]
    return (open_runs or same)[0]


def _next_generation(session: Session, deal: Deal, playbook_id: str) -> int:
    """One more than the deal's latest run of this playbook (all cancelled, or the insert stops)."""
    latest = session.scalar(
        select(func.max(Run.generation)).filter_by(
            crm=deal.crm, account=deal.account, deal_id=deal.id, playbook_id=playbook_id
        )
    )
    return (latest or 0) + 1


def _midnight(plan: Plan) -> datetime:
    from datetime import UTC, time

    return datetime.combine(plan.anchor, time(0), tzinfo=UTC)


def actions_for(run: Run, deal: Deal, plan: Plan, now: datetime) -> list[Action]:
    """The outbox rows for a plan's unconditional steps.

    All tasks go in one action, written at once so the CSM sees the whole
    checklist (each task keeps its own due date) in as few CRM calls as the
    CRM allows. Every other step is its own action, due at its own time.
    Conditional steps wait for the answer they depend on.
    """
    now_steps = [s for s in plan.steps if not s.conditional]
    tasks = [s for s in now_steps if s.kind == "task"]
    actions = []
    if tasks:
        payload = {"tasks": [task_spec(s, deal).model_dump(mode="json") for s in tasks]}
        actions.append(new_action(run, TASK_BATCH, "tasks", payload, now, now))
    for step in now_steps:
        if step.kind == "task":
            continue
        due = max(step.due_at or now, now)
        actions.append(new_action(run, step.step_id, step.kind, step_payload(step, deal), due, now))
        if "deadline_at" in step.detail:
            actions.append(deadline_action(run, step, now))
    return actions


def deadline_action(run: Run, survey: PlannedStep, now: datetime) -> Action:
    """An internal action, due when the survey's answer window closes: it runs the no-answer steps."""
    due = datetime.fromisoformat(survey.detail["deadline_at"])
    payload = {"survey_step": survey.step_id}
    return new_action(run, f"{survey.step_id}:deadline", "deadline", payload, max(due, now), now)


def follow_up_actions(run: Run, deal: Deal, steps: list[PlannedStep], now: datetime) -> list[Action]:
    """Actions for conditional steps whose condition came true: each step its own action."""
    actions = []
    for step in steps:
        due = max(step.due_at or now, now)
        if step.kind == "task":
            payload = {"tasks": [task_spec(step, deal).model_dump(mode="json")]}
            actions.append(new_action(run, step.step_id, "tasks", payload, now, now))
        else:
            actions.append(new_action(run, step.step_id, step.kind, step_payload(step, deal), due, now))
    return actions


def skipped_action(run: Run, step_id: str, kind: str, reason: str, now: datetime) -> Action:
    """The record of a conditional step that will not run, and why."""
    action = new_action(run, step_id, kind, {}, now, now)
    action.state = "skipped"
    action.last_error = reason
    return action


def new_action(
    run: Run, step_id: str, kind: str, payload: dict[str, Any], due: datetime, now: datetime
) -> Action:
    """A pending outbox row for ``run``, keyed so the same step never queues twice."""
    return Action(
        run_id=run.id,
        step_id=step_id,
        kind=kind,
        payload=payload,
        due_at=due,
        state="pending",
        attempts=0,
        idempotency_key=idempotency_key(run, step_id),
        created_at=now,
        updated_at=now,
    )


def task_spec(step: PlannedStep, deal: Deal) -> TaskSpec:
    assert step.due_at is not None
    contact = deal.primary_contact
    return TaskSpec(
        step_id=step.step_id,
        title=step.title,
        body=step.body,
        due_at=step.due_at,
        owner_id=step.owner_id,
        priority=step.detail.get("priority", "normal"),
        type=step.detail.get("type", "todo"),
        deal_id=deal.id,
        company_id=deal.company.id if deal.company else None,
        contact_id=contact.id if contact else None,
    )


def step_payload(step: PlannedStep, deal: Deal) -> dict[str, Any]:
    """What an action needs at execution time, as JSON."""
    contact = deal.primary_contact
    company_id = deal.company.id if deal.company else None
    if step.kind == "note":
        return NoteSpec(
            step_id=step.step_id,
            body=step.body,
            deal_id=deal.id,
            company_id=company_id,
            contact_id=contact.id if contact else None,
        ).model_dump(mode="json")
    if step.kind == "property":
        target = step.detail["object"]
        object_id = deal.id if target == "deal" else company_id
        return PropertyUpdate(
            step_id=step.step_id,
            object=target,
            object_id=object_id or deal.id,
            properties=step.detail["set"],
        ).model_dump(mode="json")
    return {
        "step_id": step.step_id,
        "deal_id": deal.id,
        "contact_id": contact.id if contact else None,
        "email": contact.email if contact else None,
        **{k: v for k, v in step.detail.items() if k not in ("offset", "was_due")},
    }


def survey_sent(session: Session, action: Action, sent_at: datetime) -> None:
    """A survey went out: its answer window counts from ``sent_at``, not from when it was planned.

    Its deadline (which runs the reminder and the no-answer steps) moves to
    ``sent_at`` + the survey's ``deadline`` window when that is later than planned,
    so a survey sent late (a backdated deal, a retried or deferred send) is not
    followed by its reminder seconds later. Reminders have no window of their own.
    """
    if action.kind != "survey" or action.payload.get("answers", action.step_id) != action.step_id:
        return
    run = session.get_one(Run, action.run_id)
    playbook = from_pinned(run.playbook)
    step = next((s for s in playbook.steps if s.id == action.step_id and s.survey), None)
    if step is None or step.survey is None:
        return
    day = step.survey.deadline.apply(sent_at.date())
    if playbook.weekends == "next_weekday":
        day = add_business_days(day, 0)
    deadline = datetime.combine(day, sent_at.timetz())
    session.execute(
        update(Action)
        .where(
            Action.run_id == run.id,
            Action.step_id == f"{action.step_id}:deadline",
            Action.state == "pending",
            Action.due_at < deadline,
        )
        .values(due_at=deadline, updated_at=sent_at)
    )
