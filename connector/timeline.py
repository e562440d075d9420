"""Planned against actual for a run under way, and where it is heading (``offboard plan``, ``runs``).

Pure functions, no database: the caller passes the plan the run was laid out with, the playbook,
the deal, a ``PlanContext`` (its ``now`` is the moment of the projection) and what the CRM says of
each step (``StepActual``). For every task step this says when it was planned, when it is now
expected (or was done), how late or early, and whether the checklist will finish in time.

- **Planned**: each step it waits on done on its own planned day, chains followed.
- **Projected**: what is known replaces the plan: a completed step counts from its completion, an
  open one from the later of its due time and now; a step not released yet cannot go out before now.
- **Surveys** count as done at their send plus their answer window (``deadline``), the latest an
  answer is waited for, unless the answer is known (a completed survey: its answer time).
- A step whose ``when`` may rule it out (or that waits on such a step) is shown with its condition
  and counts for nothing until it is released; one that waits on a skipped or cancelled step will
  not run.
- **At risk**: a ``deadline: contract_end`` task projected after the contract end; or the checklist
  projected to finish after the contract end when the plan finished by it (a playbook that plans
  work after the contract end on purpose, a follow-up call weeks later, is not at risk for that).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from connector.models import Deal
from connector.planner import Plan, PlanContext, at_workday_start, condition_of
from connector.playbooks import graph
from connector.playbooks.model import Playbook, Step

ACTUAL_STATES = ("open", "completed", "skipped", "cancelled", "needs_evidence")
NOT_RUN = ("skipped", "cancelled")


@dataclass(frozen=True)
class StepActual:
    """What the CRM says of one step of a run.

    ``due_at``: the due (or send) time as written to the CRM; None while the step is not released.
    ``state``: one of open, completed, skipped, cancelled, needs_evidence (completed in the CRM,
    its evidence still missing: not done yet). For a survey, ``completed_at`` is its answer.
    """

    due_at: datetime | None
    completed_at: datetime | None
    state: str


@dataclass(frozen=True)
class Row:
    """One task step: planned against projected (or actual)."""

    step_id: str
    title: str
    planned_due: datetime
    projected_due: datetime | None  # None: it will not run
    completed_at: datetime | None
    # completed, open, needs_evidence, skipped, cancelled; waiting (not released); conditional
    # (its condition may rule it out); not_run (it waits on a step that will not run)
    status: str
    finish: datetime | None  # done, or projected to be; None when it may never run or will not
    late_days: int | None  # the finish's day minus the planned due's day (negative: early)
    note: str | None = None  # what it waits for, or the condition it runs on
    by_contract_end: bool = False  # `deadline: contract_end`

    @property
    def counts(self) -> bool:
        return self.finish is not None


@dataclass(frozen=True)
class Timeline:
    rows: list[Row]
    zone: ZoneInfo
    now: datetime
    contract_end: date | None
    planned_finish: datetime | None
    projected_finish: datetime | None
    risks: list[str]

    @property
    def at_risk(self) -> bool:
        return bool(self.risks)

    @property
    def risk(self) -> str | None:
        """One sentence per risk, which step and by how much; None when on course."""
        return "; ".join(self.risks) or None

    def day(self, moment: datetime) -> date:
        return moment.astimezone(self.zone).date()


@dataclass
class _Dates:
    """Working state: per step id, when it happens and when it counts as done."""

    at: dict[str, datetime]
    done: dict[str, datetime]


def project(
    plan: Plan, playbook: Playbook, deal: Deal, ctx: PlanContext, actuals: dict[str, StepActual]
) -> Timeline:
    """The run's timeline as of ``ctx.now``.

    ``plan``: laid out as the run was (``planner.plan`` with the run's start as ``now``), so
    the planned column is what the worker wrote. ``actuals``: step id → what the CRM says; a step
    missing there is not released yet.
    """
    laid = graph.order(playbook)
    if laid is None:
        raise ValueError(f"playbook {playbook.id}: the steps' `after` make a cycle")
    planned = _Dates({}, {})
    projected = _Dates({}, {})
    fate: dict[str, str | None] = {}  # None: runs; "conditional" or "not_run"
    for step in laid:
        actual = actuals.get(step.id)
        _lay_planned(step, plan, playbook, ctx, planned)
        _lay_projected(step, plan, playbook, ctx, actual, projected)
        fate[step.id] = _fate(step, actual, fate)
    rows = [_row(s, plan, playbook, ctx, actuals.get(s.id), planned, projected, fate) for s in laid if s.task]
    rows.sort(key=lambda r: (r.planned_due, r.step_id))
    unconditional = [r for r in rows if not _maybe_in_plan(playbook, r.step_id)]
    planned_finish = max((r.planned_due for r in unconditional), default=None)
    projected_finish = max((r.finish for r in rows if r.finish is not None), default=None)
    timeline = Timeline(rows, ctx.zone, ctx.now, deal.contract_end, planned_finish, projected_finish, [])
    return replace(timeline, risks=_risks(timeline))


def _lay_planned(step: Step, plan: Plan, playbook: Playbook, ctx: PlanContext, dates: _Dates) -> None:
    """When ``step`` happens if everything before it happens as planned."""
    laid_out = next((s for s in plan.steps if s.step_id == step.id), None)
    if laid_out is not None and laid_out.due_at is not None:
        dates.at[step.id] = laid_out.due_at
    else:
        dates.at[step.id] = _after(step, _done_before(step, dates), playbook, ctx)
    dates.done[step.id] = _done(step, dates.at[step.id], playbook, ctx)


def _lay_projected(
    step: Step, plan: Plan, playbook: Playbook, ctx: PlanContext, actual: StepActual | None, dates: _Dates
) -> None:
    """When ``step`` happens given what is known, and when it will count as done."""
    if actual is not None and actual.due_at is not None:
        at = actual.due_at
    else:
        laid_out = next((s for s in plan.steps if s.step_id == step.id), None)
        if step.after_ids or laid_out is None or laid_out.due_at is None:
            at = _after(step, _done_before(step, dates), playbook, ctx)
        else:
            at = laid_out.due_at
        at = max(at, ctx.now)  # not released yet: it cannot go out in the past
    dates.at[step.id] = at
    if actual is not None and actual.state == "completed" and actual.completed_at is not None:
        dates.done[step.id] = actual.completed_at
    elif step.survey is not None:
        dates.done[step.id] = _done(step, at, playbook, ctx)
    else:
        dates.done[step.id] = max(at, ctx.now)  # open: done at the earliest now


def _after(step: Step, done: list[datetime], playbook: Playbook, ctx: PlanContext) -> datetime:
    """``step``'s time counted from the last of the steps it waits for (as ``plan_follow_ups``)."""
    if not done:
        return ctx.now
    since = max(done)
    offset = graph.offset_of(step)
    if offset is None:
        return since
    day = graph.day_after(offset, since.astimezone(ctx.zone).date(), playbook)
    return max(at_workday_start(day, ctx.zone), since)


def _done_before(step: Step, dates: _Dates) -> list[datetime]:
    return [dates.done[i] for i in step.after_ids if i in dates.done]


def _done(step: Step, at: datetime, playbook: Playbook, ctx: PlanContext) -> datetime:
    """When a step that happens at ``at`` counts as done: a survey at the end of its window."""
    if step.survey is None:
        return at
    day = graph.day_after(step.survey.deadline, at.astimezone(ctx.zone).date(), playbook)
    return max(at_workday_start(day, ctx.zone), at)


def _fate(step: Step, actual: StepActual | None, fate: dict[str, str | None]) -> str | None:
    """None: the step runs (or ran); "not_run": it will not; "conditional": it may not."""
    if actual is not None:
        return "not_run" if actual.state in NOT_RUN else None
    before = [fate.get(i) for i in step.after_ids]
    if "not_run" in before:
        return "not_run"
    if step.body.when is not None or "conditional" in before:
        return "conditional"
    return None


def _maybe_in_plan(playbook: Playbook, step_id: str) -> bool:
    """Whether the playbook itself may rule the step out (a `when` on it or on a step it waits on)."""
    step = playbook.step(step_id)
    return step.body.when is not None or any(_maybe_in_plan(playbook, i) for i in step.after_ids)


def _row(
    step: Step,
    plan: Plan,
    playbook: Playbook,
    ctx: PlanContext,
    actual: StepActual | None,
    planned: _Dates,
    projected: _Dates,
    fate: dict[str, str | None],
) -> Row:
    assert step.task is not None
    laid_out = next((s for s in plan.steps if s.step_id == step.id), None)
    title = laid_out.title if laid_out is not None else step.id
    status = actual.state if actual is not None else fate[step.id] or "waiting"
    runs = fate[step.id] is None
    finish = projected.done[step.id] if runs else None
    late = None
    if finish is not None:
        late = (_local(finish, ctx) - _local(planned.at[step.id], ctx)).days
    note = None
    if status == "conditional" or (status == "waiting" and step.after_ids):
        note = condition_of(step, playbook)
    elif status == "not_run":
        note = "waits on " + ", ".join(i for i in step.after_ids if fate.get(i) == "not_run")
    return Row(
        step_id=step.id,
        title=title,
        planned_due=planned.at[step.id],
        projected_due=projected.at[step.id] if status not in ("not_run", *NOT_RUN) else None,
        completed_at=actual.completed_at if actual is not None else None,
        status=status,
        finish=finish,
        late_days=late,
        note=note,
        by_contract_end=step.task.deadline == "contract_end",
    )


def _local(moment: datetime, ctx: PlanContext) -> date:
    return moment.astimezone(ctx.zone).date()


def _risks(timeline: Timeline) -> list[str]:
    """Which step puts the contract end at risk, and by how much."""
    end = timeline.contract_end
    if end is None:
        return []
    risks = []
    for row in timeline.rows:
        if row.by_contract_end and row.finish is not None and timeline.day(row.finish) > end:
            late = (timeline.day(row.finish) - end).days
            verb = "was done" if row.status == "completed" else "is projected to be done"
            risks.append(
                f"{row.step_id} {verb} on {_date(timeline.day(row.finish))}, {_days(late)} after the "
                f"contract end ({_date(end)}) it must be done by"
            )
    finish, planned = timeline.projected_finish, timeline.planned_finish
    if (
        finish is not None
        and timeline.day(finish) > end
        and (planned is None or timeline.day(planned) <= end)
    ):
        last = max((r for r in timeline.rows if r.finish is not None), key=lambda r: r.finish or finish)
        late = (timeline.day(finish) - end).days
        risks.append(
            f"the checklist is projected to finish on {_date(timeline.day(finish))} ({last.step_id}), "
            f"{_days(late)} after the contract end ({_date(end)})"
        )
    return risks


def _date(day: date) -> str:
    return f"{day:%a %d %b %Y}"


def _days(count: int) -> str:
    return f"{count} day" if abs(count) == 1 else f"{count} days"


def _lateness(row: Row) -> str:
    if row.late_days is None:
        return ""
    if row.late_days == 0:
        return "on time"
    word = "late" if row.late_days > 0 else "early"
    return f"{_days(abs(row.late_days))} {word}"


def _status(row: Row) -> str:
    said = {
        "completed": "completed",
        "open": "open",
        "needs_evidence": "completed, needs evidence",
        "waiting": "not released yet",
        "conditional": "may not run",
        "not_run": "will not run",
        "skipped": "skipped",
        "cancelled": "cancelled",
    }.get(row.status, row.status)
    lateness = _lateness(row)
    if lateness and row.status != "completed":
        lateness = f"projected {lateness}" if row.late_days else "on course"
    parts = [
        said,
        lateness,
        row.note or "",
        "must be done by the contract end" if row.by_contract_end else "",
    ]
    return "; ".join(p for p in parts if p)


def render_timeline(timeline: Timeline) -> list[str]:
    """The timeline as text: one line per task step, then the projected finish and the risks."""
    width = max([len("step"), *(len(r.step_id) for r in timeline.rows)])
    day = "%Y-%m-%d %a"
    header = f"  {'step':<{width}}  {'planned':<14}  {'projected/actual':<16}  {'done at':<16}  status"
    lines = [
        f"Planned against actual (dates in {timeline.zone.key}, as of {_moment(timeline, timeline.now)}):"
    ]
    lines.append(header)
    for row in timeline.rows:
        planned = f"{timeline.day(row.planned_due):{day}}"
        projected = f"{timeline.day(row.projected_due):{day}}" if row.projected_due else "-"
        done = _moment(timeline, row.completed_at) if row.completed_at else "-"
        lines.append(
            f"  {row.step_id:<{width}}  {planned:<14}  {projected:<16}  {done:<16}  {_status(row)}".rstrip()
        )
    lines.append("")
    lines.append(_finish_line(timeline))
    lines += [f"  at risk: {risk}" for risk in timeline.risks]
    return lines


def _moment(timeline: Timeline, moment: datetime) -> str:
    return f"{moment.astimezone(timeline.zone):%Y-%m-%d %H:%M}"


def _finish_line(timeline: Timeline) -> str:
    finish, planned, end = timeline.projected_finish, timeline.planned_finish, timeline.contract_end
    if finish is None:
        return "projected finish: nothing left that is sure to run"
    text = f"projected finish {timeline.day(finish):%Y-%m-%d %a}"
    notes = []
    if planned is not None:
        notes.append(f"planned {timeline.day(planned):%Y-%m-%d %a}")
    if end is None:
        notes.append("the deal has no contract end date")
    elif timeline.day(finish) > end:
        verdict = "at risk" if timeline.at_risk else "as the playbook plans"
        notes.append(f"after the contract end on {end:%Y-%m-%d %a}: {verdict}")
    else:
        notes.append(f"by the contract end on {end:%Y-%m-%d %a}")
        if timeline.at_risk:
            notes.append("at risk")
    return f"{text} ({'; '.join(notes)})"
