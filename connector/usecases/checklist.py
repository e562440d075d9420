"""The live checklist: what the CRM says about a run's tasks, and what follows from it.

A run's task steps join the checklist as they are written (``tasks_written``). A task event
or the tracking pass then tells us a task was completed, re-opened or given its evidence
(``apply``): a completion without the evidence its step requires leaves the step
``needs_evidence`` and asks the person who completed it, once; a completion releases the
steps waiting on it, dated from that moment (``release``); and the deal's progress
properties follow, in at most one pending update per deal (``refresh``). When every task
step that still counts is completed, the run is finished and its record is queued.
Everything happens in the caller's unit of work.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from connector import queue
from connector.checklist import Facts, Item, ItemState, find_evidence, progress
from connector.models import Deal, PropertyUpdate, RecordSpec, TaskSpec, TaskState
from connector.planner import PlanContext, at_workday_start, plan_follow_ups, resolve_owner
from connector.playbooks.loader import from_pinned
from connector.playbooks.model import Playbook, Step
from connector.queue import ActionState, RunState
from connector.record import RECORD_STEP, Line, record_for
from connector.runs import TASK, TASK_BATCH, follow_up_actions, new_action
from connector.settings import Settings
from connector.store import Action, Answer, ChecklistTask, Run
from connector.usecases import projection
from connector.usecases.accounts import account_context
from connector.usecases.uow import UnitOfWork

log = logging.getLogger("offboard.checklist")
PROGRESS = "progress"  # step ids of a run's progress updates: progress:1, progress:2…
OPEN_ACTIONS = (ActionState.PENDING, ActionState.WAITING)


def tasks_written(
    uow: UnitOfWork, settings: Settings, run: Run, specs: Sequence[TaskSpec], ids: Sequence[str]
) -> int:
    """The playbook's task steps among tasks just written join the checklist; their
    escalations are queued; the deal's progress follows. How many joined."""
    playbook = from_pinned(run.playbook)
    steps = {step.id: step for step in playbook.steps if step.task is not None}
    joined = []
    listed = {item.step_id for item in _items(uow.session, run.id)}  # one query, not one per task
    for spec, task_id in zip(specs, ids, strict=True):
        step = steps.get(spec.step_id)
        if step is None or spec.step_id in listed:
            continue
        listed.add(spec.step_id)
        assert step.task is not None
        item = ChecklistTask(
            run_id=run.id,
            crm=run.crm,
            account=run.account,
            step_id=spec.step_id,
            task_id=str(task_id),
            title=spec.title[:255],
            owner_id=spec.owner_id,
            due_at=spec.due_at,
            status=ItemState.OPEN,
            evidence_required=step.task.evidence == "required",
            created_at=uow.now,
            updated_at=uow.now,
        )
        uow.session.add(item)
        joined.append((step, item))
    uow.session.flush()
    ctx = account_context(uow.session, settings, run.crm, run.account, uow.now)
    deal = Deal.model_validate(run.deal)
    uow.session.add_all(
        _escalation(run, deal, step, item, ctx) for step, item in joined if step.task and step.task.escalate
    )
    refresh(uow, settings, run)
    return len(joined)


def _escalation(run: Run, deal: Deal, step: Step, item: ChecklistTask, ctx: PlanContext) -> Action:
    """The check, due once the task is overdue by the step's ``escalate.overdue``."""
    assert step.task is not None and step.task.escalate is not None
    rule = step.task.escalate
    day = rule.overdue.apply(item.due_at.astimezone(ctx.zone).date())
    due = max(at_workday_start(day, ctx.zone), item.due_at)
    payload = {
        "task_step": step.id,
        "task_id": item.task_id,
        "title": item.title,
        "owner_id": resolve_owner(rule.to, deal, ctx),
        "deal_id": deal.id,
        "company_id": deal.company.id if deal.company else None,
        "contact_id": deal.primary_contact.id if deal.primary_contact else None,
        "due_at": item.due_at.isoformat(),
        "overdue": str(rule.overdue),
    }
    return new_action(
        run, f"{step.id}:escalation", "escalation", payload, due, ctx.now, state=ActionState.PENDING
    )


def apply(uow: UnitOfWork, settings: Settings, crm: str, account: str, states: Iterable[TaskState]) -> int:
    """What the CRM says about these tasks, applied to their checklist rows; how many changed.

    Tasks that belong to no checklist of this account are left alone."""
    by_id = {state.id: state for state in states}
    if not by_id:
        return 0
    items = uow.session.scalars(
        select(ChecklistTask)
        .where(
            ChecklistTask.crm == crm,
            ChecklistTask.account == account,
            ChecklistTask.task_id.in_(list(by_id)),
            ChecklistTask.status != ItemState.CANCELLED,
        )
        .with_for_update()
    ).all()
    touched: dict[int, Run] = {}
    for item in items:
        if _apply_one(uow, item, by_id[item.task_id]):
            touched[item.run_id] = uow.session.get_one(Run, item.run_id)
    for run in touched.values():
        if run.state != RunState.CANCELLED:
            release(uow, settings, run)
            refresh(uow, settings, run)
    return len(touched)


def _apply_one(uow: UnitOfWork, item: ChecklistTask, state: TaskState) -> bool:
    """One task's news; whether its checklist row changed."""
    if not state.completed:
        if item.status == ItemState.OPEN:
            return False
        _set(item, status=ItemState.OPEN, completed_at=None, completed_by=None, evidence=None)
        uow.audit("task.reopened", run_id=item.run_id, crm=item.crm, step=item.step_id, task=item.task_id)
        return True
    evidence = find_evidence(state)
    if item.status == ItemState.COMPLETED and (evidence == item.evidence or not item.evidence_required):
        return False
    done_at = state.completed_at or state.modified_at or uow.now
    if item.evidence_required and evidence is None:
        if item.status == ItemState.NEEDS_EVIDENCE:
            return False
        _set(
            item,
            status=ItemState.NEEDS_EVIDENCE,
            completed_at=done_at,
            completed_by=state.completed_by,
        )
        ask = _evidence_ask(uow, item, state)
        if ask is not None:
            uow.session.add(ask)
        uow.audit(
            "task.needs_evidence", run_id=item.run_id, crm=item.crm, step=item.step_id, task=item.task_id
        )
        return True
    _set(item, status=ItemState.COMPLETED, completed_at=item.completed_at or done_at,
         completed_by=item.completed_by or state.completed_by, evidence=evidence)  # fmt: skip
    uow.audit("task.completed", run_id=item.run_id, crm=item.crm, step=item.step_id, task=item.task_id,
              evidence=evidence is not None)  # fmt: skip
    return True


def deleted(uow: UnitOfWork, settings: Settings, crm: str, account: str, task_ids: Sequence[str]) -> int:
    """Tasks deleted in the CRM no longer count (as if cancelled there); one already completed
    stays completed. How many checklist rows changed."""
    if not task_ids:
        return 0
    items = uow.session.scalars(
        select(ChecklistTask).where(
            ChecklistTask.crm == crm,
            ChecklistTask.account == account,
            ChecklistTask.task_id.in_(list(task_ids)),
            ChecklistTask.status.in_([ItemState.OPEN, ItemState.NEEDS_EVIDENCE]),
        )
    ).all()
    for item in items:
        _set(item, status=ItemState.CANCELLED)
        uow.audit("task.deleted", run_id=item.run_id, crm=crm, step=item.step_id, task=item.task_id)
    for run_id in sorted({item.run_id for item in items}):
        refresh(uow, settings, uow.session.get_one(Run, run_id))
    return len(items)


def _set(item: ChecklistTask, **values: object) -> None:
    for name, value in values.items():  # flushed with the unit of work
        setattr(item, name, value)


def _evidence_ask(uow: UnitOfWork, item: ChecklistTask, state: TaskState) -> Action | None:
    """One task asking whoever completed the task (else its owner) for the evidence."""
    run = uow.session.get_one(Run, item.run_id)
    step_id = f"{item.step_id}:evidence"
    if uow.session.scalar(select(Action.id).filter_by(run_id=run.id, step_id=step_id)) is not None:
        return None
    deal = Deal.model_validate(run.deal)
    spec = TaskSpec(
        step_id=step_id,
        title=f"Add evidence: {item.title}"[:255],
        body=(
            f"'{item.title}' was completed without evidence. Add a line starting with "
            "'Evidence:' to that task saying what was done (a ticket, a confirmation), or attach a "
            "file to it; the offboarding record keeps it."
        ),
        due_at=uow.now,
        owner_id=state.completed_by or item.owner_id,
        priority="high",
        deal_id=deal.id,
        company_id=deal.company.id if deal.company else None,
        contact_id=deal.primary_contact.id if deal.primary_contact else None,
    )
    queue.reopen_runs(uow.session, [run.id], now=uow.now)
    return new_action(run, step_id, TASK, {"tasks": [spec.model_dump(mode="json")]}, uow.now, uow.now)


# --- steps that wait on steps -------------------------------------------------------------------


def facts(session: Session, run: Run, items: Sequence[ChecklistTask] | None = None) -> Facts:
    rows = items if items is not None else _items(session, run.id)
    actions = dict(session.execute(select(Action.step_id, Action.state).where(Action.run_id == run.id)).all())
    answered = dict(
        session.execute(select(Answer.step_id, Answer.score).where(Answer.run_id == run.id)).all()
    )
    closed = frozenset(
        step.removesuffix(":deadline")
        for step, state in actions.items()
        if step.endswith(":deadline") and state == ActionState.DONE
    )
    return Facts({i.step_id: i.status for i in rows}, actions, answered, closed)


def release(uow: UnitOfWork, settings: Settings, run: Run) -> int:
    """Queue the steps waiting on a task (or on a task and a survey) whose every dependency is
    now done, dated from the latest of them; steps waiting on surveys alone are
    ``feedback.unlock``'s. How many were queued."""
    session, playbook = uow.session, from_pinned(run.playbook)
    items = {item.step_id: item for item in _items(session, run.id)}
    taken = set(session.scalars(select(Action.step_id).where(Action.run_id == run.id))) | set(items)
    answers = {a.step_id: a for a in session.scalars(select(Answer).where(Answer.run_id == run.id))}
    kinds = {step.id: step.kind for step in playbook.steps}
    ready: list[tuple[Step, datetime]] = []
    for step in playbook.steps:
        deps = step.after_ids
        if step.id in taken or not deps or all(kinds.get(d) == "survey" for d in deps):
            continue
        moments = [_done_at(dep, kinds.get(dep), items, answers, step) for dep in deps]
        if all(m is not None for m in moments):
            ready.append((step, max(m for m in moments if m is not None)))
    if not ready:
        return 0
    deal = Deal.model_validate(run.deal)
    ctx = account_context(session, settings, run.crm, run.account, uow.now)
    for step, since in ready:
        planned = plan_follow_ups(deal, playbook, ctx, [step], since=since)
        session.add_all(follow_up_actions(run, deal, planned, uow.now))
        uow.audit("step.released", run_id=run.id, crm=run.crm, step=step.id, since=since.isoformat())
    queue.reopen_runs(session, [run.id], now=uow.now)
    return len(ready)


def _done_at(
    dep: str, kind: str | None, items: dict[str, ChecklistTask], answers: dict[str, Answer], step: Step
) -> datetime | None:
    """When ``dep`` was done for ``step``'s purposes, or None while it is not."""
    if kind == "survey":
        answer = answers.get(dep)
        when = step.body.when
        if answer is None or (
            when is not None and when.score is not None and not when.score.holds(answer.score)
        ):
            return None
        return answer.answered_at
    item = items.get(dep)
    return item.completed_at if item is not None and item.status == ItemState.COMPLETED else None


# --- progress on the deal, and the record -------------------------------------------------------


def refresh(uow: UnitOfWork, settings: Settings, run: Run) -> None:
    """Bring the run's checklist status up to date; queue the deal's progress properties when they
    changed (one pending update per deal), and the record once the checklist is finished."""
    session = uow.session
    playbook = from_pinned(run.playbook)
    if not any(step.task is not None for step in playbook.steps):
        return  # no checklist: a playbook of surveys and notes alone
    items = _items(session, run.id)
    cancelled = run.state == RunState.CANCELLED
    rows = [Item(i.step_id, i.status, i.due_at) for i in items]
    now = progress(playbook, facts(session, run, items), rows, uow.now, cancelled=cancelled)
    run.status = str(now.status)
    ctx = account_context(session, settings, run.crm, run.account, uow.now)
    properties = now.properties(f"{run.playbook_id}@{run.playbook_version}", ctx.zone)
    if not _tasks_unwritten(session, run, playbook):  # else: the write's own refresh queues it
        _queue_progress(uow, run, properties)
    if not cancelled and not now.finished:
        projection.flag_risk(uow, settings, run)
    if now.finished and run.finished_at is None:
        run.finished_at = uow.now
        record = record_of(session, run, playbook, items, ctx.zone, uow.now)
        session.add(new_action(run, RECORD_STEP, "record", record.model_dump(mode="json"), uow.now, uow.now))
        queue.reopen_runs(session, [run.id], now=uow.now)
        uow.audit("run.checklist_complete", run_id=run.id, crm=run.crm, done=now.done, total=now.total)


def cancelled(uow: UnitOfWork, run: Run) -> None:
    """A cancelled run's checklist: its open tasks no longer count, and the deal says cancelled
    (with how far it got), where its progress was shown."""
    session = uow.session
    playbook = from_pinned(run.playbook)
    items = _items(session, run.id)
    if not items:
        return  # nothing was written to the CRM's deal yet
    rows = [Item(i.step_id, i.status, i.due_at) for i in items]
    final = progress(playbook, facts(session, run, items), rows, uow.now, cancelled=True)
    still_open = [ItemState.OPEN, ItemState.NEEDS_EVIDENCE]
    session.execute(
        update(ChecklistTask)
        .where(ChecklistTask.run_id == run.id, ChecklistTask.status.in_(still_open))
        .values(status=ItemState.CANCELLED, updated_at=uow.now)
    )
    run.status = str(final.status)
    properties = final.properties(f"{run.playbook_id}@{run.playbook_version}", ZoneInfo("UTC"))
    _queue_progress(uow, run, properties)


def _tasks_unwritten(session: Session, run: Run, playbook: Playbook) -> bool:
    """Whether checklist tasks of the run are queued and not yet written (a step just released):
    the deal's progress waits for them, so it is written once, with them counted."""
    steps = [TASK_BATCH, *(step.id for step in playbook.steps if step.task is not None)]
    return (
        session.scalar(
            select(Action.id)
            .where(Action.run_id == run.id, Action.kind == TASK, Action.step_id.in_(steps))
            .where(Action.state.in_([ActionState.PENDING, ActionState.RUNNING]))
            .limit(1)
        )
        is not None
    )


def _queue_progress(uow: UnitOfWork, run: Run, properties: dict[str, str]) -> None:
    session = uow.session
    previous = session.scalars(
        select(Action)
        .where(Action.run_id == run.id, Action.step_id.like(f"{PROGRESS}:%"))
        .order_by(Action.id.desc())
    ).first()
    if previous is not None and previous.payload.get("properties") == properties:
        return
    deal = Deal.model_validate(run.deal)
    update_ = PropertyUpdate(step_id=PROGRESS, object="deal", object_id=deal.id, properties=properties)
    payload = update_.model_dump(mode="json")
    if previous is not None and previous.state == ActionState.PENDING:
        moved = session.execute(
            update(Action)
            .where(Action.id == previous.id, Action.state == ActionState.PENDING)
            .values(payload=payload)
        )
        if moved.rowcount:  # type: ignore[attr-defined]
            return  # the update not yet written takes the new values
    sequence = _sequence(previous.step_id) + 1 if previous is not None else 1
    session.add(new_action(run, f"{PROGRESS}:{sequence}", "property", payload, uow.now, uow.now))
    queue.reopen_runs(session, [run.id], now=uow.now)


def _sequence(step_id: str) -> int:
    tail = step_id.rpartition(":")[2]
    return int(tail) if tail.isdigit() else 0


def _items(session: Session, run_id: int) -> list[ChecklistTask]:
    return list(
        session.scalars(
            select(ChecklistTask).where(ChecklistTask.run_id == run_id).order_by(ChecklistTask.id)
        )
    )


def record_of(
    session: Session,
    run: Run,
    playbook: Playbook,
    items: Sequence[ChecklistTask],
    zone: ZoneInfo,
    now: datetime,
) -> RecordSpec:
    """The run's record as it stands: every step, the tasks with who completed them and when."""
    by_step = {item.step_id: item for item in items}
    actions = {a.step_id: a for a in session.scalars(select(Action).where(Action.run_id == run.id))}
    answers = {a.step_id: a for a in session.scalars(select(Answer).where(Answer.run_id == run.id))}
    lines = [
        _line(step, by_step.get(step.id), actions.get(step.id), answers.get(step.id))
        for step in playbook.steps
    ]
    deal = Deal.model_validate(run.deal)
    return record_for(deal, playbook, lines, started=run.created_at, finished=now, zone=zone)


def _line(step: Step, item: ChecklistTask | None, action: Action | None, answer: Answer | None) -> Line:
    if item is not None:
        return Line(step.id, step.kind, item.title, str(item.status), owner=item.owner_id,
                    planned=item.due_at, done_at=item.completed_at, done_by=item.completed_by,
                    evidence=item.evidence)  # fmt: skip
    if answer is not None:
        note = f"{answer.kind.upper()} {answer.score}" + (f": {answer.comment}" if answer.comment else "")
        return Line(
            step.id,
            step.kind,
            f"{answer.kind.upper()} survey",
            "answered",
            done_at=answer.answered_at,
            note=note,
        )
    if action is None:
        return Line(step.id, step.kind, step.kind, "not needed", note="its condition did not come true")
    return Line(
        step.id, step.kind, step.kind, str(action.state), done_at=action.done_at, note=action.last_error
    )
