"""A run under way, planned against actual: the plan it was laid out with, what the CRM says of
each step, and where it is heading (``connector.timeline``). ``offboard plan --crm X --deal Y``
shows it; the checklist's refresh flags a run whose projection runs past the contract end.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from connector import planner, queue
from connector.errors import PlaybookError
from connector.models import Deal, NoteSpec
from connector.playbooks.loader import from_pinned
from connector.runs import new_action
from connector.settings import Settings
from connector.store import Action, Answer, ChecklistTask, Run, Store
from connector.timeline import StepActual, Timeline, project, render_timeline
from connector.usecases.accounts import account_context
from connector.usecases.uow import UnitOfWork

SETTLED = {"skipped": "skipped", "cancelled": "cancelled"}
AT_RISK = "at-risk"  # the step id of the note saying a run is at risk


def timeline_of(session: Session, settings: Settings, run: Run, now: datetime) -> Timeline | None:
    """The run's timeline as of ``now``; None when its plan cannot be laid out again (a template
    that fails for the deal's data now, a cycle — neither passes validation)."""
    playbook = from_pinned(run.playbook)
    deal = Deal.model_validate(run.deal)
    started = account_context(session, settings, run.crm, run.account, run.created_at)
    try:
        laid_out = planner.plan(deal, playbook, started)
        return project(laid_out, playbook, deal, replace(started, now=now), actuals(session, run))
    except (PlaybookError, ValueError):
        return None


def actuals(session: Session, run: Run) -> dict[str, StepActual]:
    """What the CRM says of each released step: tasks from the checklist, surveys from their
    send and answer, steps ruled out from their actions."""
    found: dict[str, StepActual] = {}
    for action in session.scalars(select(Action).where(Action.run_id == run.id)):
        if action.state in SETTLED:
            found[action.step_id] = StepActual(None, None, SETTLED[action.state])
        elif action.kind == "survey":
            found[action.step_id] = StepActual(action.due_at, None, "open")
    for answer in session.scalars(select(Answer).where(Answer.run_id == run.id)):
        sent = found.get(answer.step_id)
        found[answer.step_id] = StepActual(sent.due_at if sent else None, answer.answered_at, "completed")
    for item in session.scalars(select(ChecklistTask).where(ChecklistTask.run_id == run.id)):
        found[item.step_id] = StepActual(item.due_at, item.completed_at, str(item.status))
    return found


def flag_risk(uow: UnitOfWork, settings: Settings, run: Run) -> str | None:
    """Keep the run's ``at_risk`` up to date; the first time it is at risk, say so on the deal in a
    note (once per run). The risk sentence, or None when on course."""
    timeline = timeline_of(uow.session, settings, run, uow.now)
    risk = timeline.risk if timeline is not None else None
    if risk == run.at_risk:
        return risk
    run.at_risk = risk
    if (
        risk is not None
        and uow.session.scalar(select(Action.id).filter_by(run_id=run.id, step_id=AT_RISK)) is None
    ):
        assert timeline is not None and timeline.projected_finish is not None
        finish = timeline.day(timeline.projected_finish).isoformat()
        deal = Deal.model_validate(run.deal)
        note = NoteSpec(
            step_id=AT_RISK,
            body=f"Offboarding at risk: projected to finish {finish}. {risk}",
            deal_id=deal.id,
        )
        uow.session.add(new_action(run, AT_RISK, "note", note.model_dump(mode="json"), uow.now, uow.now))
        queue.reopen_runs(uow.session, [run.id], now=uow.now)
        uow.audit("run.at_risk", run_id=run.id, crm=run.crm, risk=risk)
    return risk


@dataclass(frozen=True)
class UnderWay:
    """A deal's run under way, for ``offboard plan``."""

    run_id: int
    playbook: str
    timeline: Timeline

    def lines(self) -> list[str]:
        return [f"Run {self.run_id} under way ({self.playbook}):", *render_timeline(self.timeline)]

    def as_json(self) -> dict[str, Any]:
        t = self.timeline
        return {
            "run_id": self.run_id,
            "playbook": self.playbook,
            "planned_finish": t.planned_finish,
            "projected_finish": t.projected_finish,
            "at_risk": t.risk,
            "steps": [
                {
                    "step_id": r.step_id,
                    "planned": r.planned_due,
                    "projected": r.projected_due,
                    "completed_at": r.completed_at,
                    "status": r.status,
                    "late_days": r.late_days,
                }
                for r in t.rows
            ],
        }


def under_way(store: Store, settings: Settings, deal: Deal, now: datetime) -> UnderWay | None:
    """The deal's open (not cancelled) run with its timeline as of ``now``, or None."""
    with store.read() as session:
        run = session.scalars(
            select(Run)
            .filter_by(crm=deal.crm, account=deal.account, deal_id=deal.id)
            .where(Run.state != "cancelled")
            .order_by(Run.id.desc())
        ).first()
        if run is None:
            return None
        timeline = timeline_of(session, settings, run, now)
        if timeline is None:
            return None
        return UnderWay(run.id, f"{run.playbook_id}@v{run.playbook_version}", timeline)
