"""Operator changes to the outbox: list and retry parked actions, cancel runs. Each change is audited.

None of these may make a webhook wait. Listings are read transactions, a page
at a time; bulk writes go in batches of a few hundred rows, each its own short
transaction, so SQLite's single write lock is free again within milliseconds
and the web and the workers get it between batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select

from connector import queue
from connector.queue import ActionState, RunState
from connector.runs import TASK
from connector.store import Action, AuditEntry, Run, Store
from connector.usecases import offboarding
from connector.usecases.uow import UnitOfWork, unit_of_work

PAGE = 500  # failed actions per read transaction
BATCH = 250  # actions per write transaction
# SQLite has no queue for its write lock: a waiting writer polls (every 100 ms at most). Leaving
# the lock free between batches at least as long as a batch held it lets every poll have an even
# chance, so a webhook waits about one batch, however many batches there are.
SQLITE_MIN_GAP_SECONDS = 0.02


def failed_pages(store: Store, *, limit: int, after: int = 0, page: int = PAGE) -> Iterator[dict[str, Any]]:
    """Parked actions in id order (ids above ``after``), at most ``limit``, read page by page."""
    remaining, cursor = limit, after
    while remaining > 0:
        size = min(page, remaining)
        with store.read() as session:
            rows = session.execute(
                select(Action, Run)
                .join(Run)
                .where(Action.state == ActionState.FAILED, Action.id > cursor)
                .order_by(Action.id)
                .limit(size)
            ).all()
            items = [_failed_row(a, r) for a, r in rows]
        yield from items
        if len(items) < size:
            return
        remaining, cursor = remaining - len(items), items[-1]["id"]


def failed_count(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).where(Action.state == ActionState.FAILED)) or 0)


def failed_actions(store: Store) -> list[dict[str, Any]]:
    """Every parked action (tests and small outboxes; the CLI reads ``failed_pages``)."""
    return list(failed_pages(store, limit=2**63 - 1))


def _failed_row(action: Action, run: Run) -> dict[str, Any]:
    return {
        "id": action.id,
        "run_id": run.id,
        "crm": run.crm,
        "deal_id": run.deal_id,
        "playbook_id": run.playbook_id,
        "step_id": action.step_id,
        "kind": action.kind,
        "attempts": action.attempts,
        "last_error": action.last_error,
        "updated_at": action.updated_at.isoformat(),
    }


def retry(store: Store, ids: list[int] | None, *, actor: str, now: datetime, batch: int = BATCH) -> list[int]:
    """Put parked actions back in the queue, due now, with fresh attempts. None: every parked action.

    Returns the ids put back; ids that were not parked are left alone.
    """
    retried: list[int] = []
    for chunk in _batches(store, ids, batch):
        started = time.monotonic()
        with unit_of_work(store, actor=actor, now=now) as uow:
            retried += _retry_batch(uow, chunk)
        if store.is_sqlite:
            time.sleep(max(SQLITE_MIN_GAP_SECONDS, time.monotonic() - started))
    return retried


def _batches(store: Store, ids: list[int] | None, size: int) -> Iterator[list[int]]:
    if ids is not None:
        unique = sorted(set(ids))
        for start in range(0, len(unique), size):
            yield unique[start : start + size]
        return
    cursor = 0
    while True:
        with store.read() as session:
            query = select(Action.id).where(Action.state == ActionState.FAILED, Action.id > cursor)
            chunk = list(session.scalars(query.order_by(Action.id).limit(size)))
        if not chunk:
            return
        yield chunk
        cursor = chunk[-1]


def _retry_batch(uow: UnitOfWork, chunk: list[int]) -> list[int]:
    rows = uow.session.execute(
        select(Action.id, Action.run_id, Action.last_error, Action.attempts).where(
            Action.id.in_(chunk), Action.state == ActionState.FAILED
        )
    ).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    uow.audit_many(
        "action.retried",
        [
            {"run_id": r.run_id, "action_id": r.id, "previous_error": r.last_error, "attempts": r.attempts}
            for r in rows
        ],
    )
    queue.retry_failed(uow.session, ids, now=uow.now)
    queue.reopen_runs(uow.session, {row.run_id for row in rows}, now=uow.now)
    return sorted(ids)


@dataclass(frozen=True)
class Cancellation:
    """What ``cancel`` did, or found: enough for the operator to know where the run stands."""

    run_id: int
    already: bool  # the run was cancelled before; nothing changed now
    actions_cancelled: int
    tasks_written: int  # tasks already in the CRM: cancelling does not close them
    at: datetime
    reason: str | None
    actor: str | None


def cancel(store: Store, run_id: int, *, actor: str, now: datetime, reason: str) -> Cancellation | None:
    """Cancel a run's pending actions; None when there is no such run. Cancelling twice changes nothing."""
    with unit_of_work(store, actor=actor, now=now) as uow:
        run = uow.session.get(Run, run_id)
        if run is None:
            return None
        written = _tasks_written(uow.session, run_id)
        if run.state == RunState.CANCELLED:
            return _earlier_cancellation(uow.session, run, written)
        count = offboarding.cancel(uow, run, reason=reason)
        return Cancellation(run_id, False, count, written, now, reason, actor)


def _tasks_written(session: Any, run_id: int) -> int:
    results = session.scalars(
        select(Action.result).where(
            Action.run_id == run_id, Action.kind == TASK, Action.state == ActionState.DONE
        )
    )
    return sum(len((result or {}).get("task_ids") or []) for result in results)


def _earlier_cancellation(session: Any, run: Run, written: int) -> Cancellation:
    entry = session.scalar(
        select(AuditEntry)
        .where(AuditEntry.run_id == run.id, AuditEntry.verb == "run.cancelled")
        .order_by(AuditEntry.id.desc())
        .limit(1)
    )
    if entry is None:  # cancelled before cancellations were audited
        return Cancellation(run.id, True, 0, written, run.updated_at, run.note, None)
    reason = (entry.detail or {}).get("reason", run.note)
    return Cancellation(run.id, True, 0, written, entry.at, reason, entry.actor)
