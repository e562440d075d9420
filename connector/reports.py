"""What operators read: runs with their actions, as plain data for the CLI to print."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from connector.store import Action, Run, Store


def run_reports(store: Store, *, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    with store.session() as session:
        query = select(Run).options(selectinload(Run.actions)).order_by(Run.id.desc()).limit(limit)
        if state == "failed":
            query = query.where(Run.actions.any(Action.state == "failed"))
        elif state is not None:
            query = query.where(Run.state == state)
        return [_report(run) for run in session.scalars(query)]


def _report(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "crm": run.crm,
        "account": run.account,
        "deal_id": run.deal_id,
        "playbook_id": run.playbook_id,
        "playbook_version": run.playbook_version,
        "state": run.state,
        "trigger": run.trigger,
        "note": run.note,
        "created_at": run.created_at.isoformat(),
        "actions": [
            {
                "id": a.id,
                "step_id": a.step_id,
                "kind": a.kind,
                "state": a.state,
                "due_at": a.due_at.isoformat(),
                "attempts": a.attempts,
                "last_error": a.last_error,
            }
            for a in run.actions
        ],
    }
