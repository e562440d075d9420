"""The tracking pass: every ``OFFBOARD_TRACK_INTERVAL_SECONDS``, read back the tasks of every
checklist not yet finished, so a task webhook that never came costs minutes, not the record.

Per CRM account: the tasks changed since the account's last pass (``track_cursors``, less a
margin for the CRM's clock) are read in the CRM's batch reads, within its budget, and applied
as a task event would be (``connector.usecases.checklist.apply``); then every unfinished
checklist of the account is brought up to date (a task that fell overdue). A pass cut short by
the CRM keeps the old cursor, so the next one asks again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.base import CrmAdapter, TaskReader
from connector.checklist import ItemState
from connector.errors import ConnectorError, CrmError
from connector.models import TaskState
from connector.queue import RunState
from connector.settings import Settings
from connector.store import ChecklistTask, Run, Store
from connector.store.db import insert
from connector.store.tables import TrackCursor
from connector.usecases import checklist
from connector.usecases.performing import adapter_for
from connector.usecases.uow import unit_of_work

log = logging.getLogger("offboard.track")

MARGIN = timedelta(minutes=5)  # tasks changed this long before the last pass are read again
CHUNK = 500  # task ids per read (the adapter splits them into its CRM's batch size)
EVERY = timedelta(days=1)  # how often a pass reads every tracked task, changed or not


@dataclass
class TrackReport:
    read: dict[str, int] = field(default_factory=dict)  # tasks read back, per crm:account
    changed: dict[str, int] = field(default_factory=dict)  # checklist rows that changed
    problems: dict[str, str] = field(default_factory=dict)  # accounts whose pass was cut short


def track(
    settings: Settings,
    store: Store,
    adapters: Mapping[str, CrmAdapter],
    now: datetime,
    *,
    actor: str = "track",
) -> TrackReport:
    """One tracking pass over every account with a checklist under way."""
    report = TrackReport()
    for crm, account in _accounts(store):
        name = f"{crm}:{account}"
        try:
            found = _read(store, adapters, crm, account, now)
        except (ConnectorError, CrmError) as exc:
            report.problems[name] = str(exc)
            log.warning("tracking pass for %s cut short: %s", name, exc)
            continue
        states = found.states if found is not None else []
        with unit_of_work(store, actor=actor, clock=lambda: now) as uow:
            report.changed[name] = checklist.apply(uow, settings, crm, account, states)
            if found is not None and found.every:  # asked for every task: the missing ones are gone
                report.changed[name] += checklist.deleted(uow, settings, crm, account, found.missing)
            if found is not None:
                _move_cursor(uow.session, crm, account, now, every=found.every)
        report.read[name] = len(states)
        for run_id in _past_due(store, crm, account, now):  # fallen overdue (or further behind)
            with unit_of_work(store, actor=actor, clock=lambda: now) as uow:
                checklist.refresh(uow, settings, uow.session.get_one(Run, run_id))
    return report


def _accounts(store: Store) -> list[tuple[str, str]]:
    with store.read() as session:
        rows = session.execute(
            select(ChecklistTask.crm, ChecklistTask.account)
            .join(Run, Run.id == ChecklistTask.run_id)
            .where(Run.finished_at.is_(None), Run.state != RunState.CANCELLED)
            .distinct()
        ).all()
    return sorted((str(crm), str(account)) for crm, account in rows)


@dataclass(frozen=True)
class Read:
    """What one account's pass read: the tasks, and whether it asked for every tracked one."""

    states: list[TaskState]
    every: bool
    asked: list[str]

    @property
    def missing(self) -> list[str]:
        """Tasks asked for and not answered: deleted in the CRM (only meaningful when ``every``)."""
        answered = {state.id for state in self.states}
        return [task_id for task_id in self.asked if task_id not in answered]


def _read(
    store: Store, adapters: Mapping[str, CrmAdapter], crm: str, account: str, now: datetime
) -> Read | None:
    """The account's tracked tasks changed since its last pass (every one of them once a day, so
    a task deleted in the CRM is noticed); None when its CRM cannot read tasks."""
    adapter = adapter_for(adapters, crm, account)
    if not isinstance(adapter, TaskReader):
        return None
    with store.read() as session:
        ids = list(
            session.scalars(
                select(ChecklistTask.task_id)
                .join(Run, Run.id == ChecklistTask.run_id)
                .where(
                    ChecklistTask.crm == crm,
                    ChecklistTask.account == account,
                    ChecklistTask.status != ItemState.CANCELLED,
                    Run.finished_at.is_(None),
                    Run.state != RunState.CANCELLED,
                )
                .order_by(ChecklistTask.id)
            )
        )
        cursor = session.get(TrackCursor, (crm, account))
    every = cursor is None or cursor.every_at is None or now - cursor.every_at >= EVERY
    since = None if every or cursor is None else cursor.checked_at - MARGIN
    states: list[TaskState] = []
    for start in range(0, len(ids), CHUNK):
        states += adapter.read_tasks(ids[start : start + CHUNK], changed_since=since)
    return Read(states, every, ids)


def _past_due(store: Store, crm: str, account: str, now: datetime) -> list[int]:
    """The account's unfinished runs with a task still open past its due time: time alone changes
    their status (overdue) and their projection. Each is brought up to date in a transaction of
    its own, so a pass over many runs never holds the database's write lock for long; runs whose
    tasks changed were brought up to date as the change was applied."""
    with store.read() as session:
        return list(
            session.scalars(
                select(Run.id)
                .join(ChecklistTask, ChecklistTask.run_id == Run.id)
                .where(Run.crm == crm, Run.account == account, Run.finished_at.is_(None))
                .where(Run.state != RunState.CANCELLED)
                .where(
                    ChecklistTask.status.in_([ItemState.OPEN, ItemState.NEEDS_EVIDENCE]),
                    ChecklistTask.due_at <= now,
                )
                .distinct()
                .order_by(Run.id)
            )
        )


def _move_cursor(session: Session, crm: str, account: str, now: datetime, *, every: bool) -> None:
    values: dict[str, datetime] = {"checked_at": now, **({"every_at": now} if every else {})}
    statement = insert(session, TrackCursor).values(crm=crm, account=account, **values)
    session.execute(statement.on_conflict_do_update(index_elements=["crm", "account"], set_=values))
