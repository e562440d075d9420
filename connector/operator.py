"""Operator changes to the outbox: retry parked actions, cancel runs. Each one is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from connector.store import Action, AuditEntry, Run, Store
from connector.worker import cancel_run


def failed_actions(store: Store) -> list[dict[str, Any]]:
    with store.session() as session:
        rows = session.execute(
            select(Action, Run).join(Run).where(Action.state == "failed").order_by(Action.id)
        ).all()
        return [
            {
                "id": a.id,
                "run_id": r.id,
                "crm": r.crm,
                "deal_id": r.deal_id,
                "playbook_id": r.playbook_id,
                "step_id": a.step_id,
                "kind": a.kind,
                "attempts": a.attempts,
                "last_error": a.last_error,
                "updated_at": a.updated_at.isoformat(),
            }
            for a, r in rows
        ]


def retry(store: Store, ids: list[int] | None, *, actor: str, now: datetime) -> list[int]:
    """Put parked actions back in the queue, due now, with fresh attempts. None: every parked action."""
    with store.session() as session:
        query = select(Action).where(Action.state == "failed")
        if ids is not None:
            query = query.where(Action.id.in_(ids))
        actions = list(session.scalars(query.order_by(Action.id)))
        for action in actions:
            session.add(
                AuditEntry(
                    actor=actor,
                    verb="action.retried",
                    run_id=action.run_id,
                    action_id=action.id,
                    detail={"previous_error": action.last_error, "attempts": action.attempts},
                    at=now,
                )
            )
            action.state, action.attempts, action.due_at, action.claimed_by = "pending", 0, now, None
        run_ids = {a.run_id for a in actions}
        if run_ids:
            session.execute(
                update(Run).where(Run.id.in_(run_ids), Run.state == "done").values(state="active")
            )
        return [a.id for a in actions]


def cancel(store: Store, run_id: int, *, actor: str, now: datetime, reason: str) -> int | None:
    """Cancel a run's pending actions; None when there is no such run."""
    with store.session() as session:
        run = session.get(Run, run_id)
        if run is None:
            return None
        return cancel_run(session, run, reason=reason, actor=actor, now=now)
