"""What a run owes the CRM: its plan laid out as outbox actions, each with its idempotency key.

Starting a run is a use case (``connector.usecases.offboarding``); this module only
turns planned steps into actions, in the caller's transaction.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, time
from typing import Any

from connector import queue
from connector.models import Deal, NoteSpec, PropertyUpdate, TaskSpec
from connector.planner import Plan, PlannedStep
from connector.queue import ActionState
from connector.store import Action, Run

TASK_BATCH = "tasks"  # the step id of a run's first tasks, written together (kept: keys derive from it)
TASK = "task"  # the action kind, named like the playbook's step kind


def idempotency_key(run: Run, name: str) -> str:
    """Stable across retries and processes: the CRM-side marker of this write.

    A first generation's keys leave the generation out, so they are what they were
    before runs had generations.
    """
    raw = f"{run.crm}|{run.account}|{run.deal_id}|{run.playbook_id}|{name}"
    if run.generation and run.generation > 1:
        raw = f"{raw}|{run.generation}"
    return hashlib.sha256(raw.encode()).hexdigest()


def anchor_midnight(plan: Plan) -> datetime:
    """The plan's anchor day as the run stores it."""
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
        actions.append(new_action(run, TASK_BATCH, TASK, payload, now, now))
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
            actions.append(new_action(run, step.step_id, TASK, payload, now, now))
        else:
            actions.append(new_action(run, step.step_id, step.kind, step_payload(step, deal), due, now))
    return actions


def skipped_action(run: Run, step_id: str, kind: str, reason: str, now: datetime) -> Action:
    """The record of a conditional step that will not run, and why."""
    return new_action(run, step_id, kind, {}, now, now, state=ActionState.SKIPPED, note=reason)


def new_action(
    run: Run,
    step_id: str,
    kind: str,
    payload: dict[str, Any],
    due: datetime,
    now: datetime,
    *,
    state: ActionState = ActionState.PENDING,
    note: str | None = None,
) -> Action:
    """An outbox row for ``run``, keyed so the same step never queues twice."""
    key = idempotency_key(run, step_id)
    return queue.new_action(
        run_id=run.id,
        step_id=step_id,
        kind=kind,
        payload=payload,
        key=key,
        due=due,
        now=now,
        state=state,
        note=note,
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
