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
            states = _read(store, adapters, crm, account)
        except (ConnectorError, CrmError) as exc:
            report.problems[name] = str(exc)
            log.warning("tracking pass for %s cut short: %s", name, exc)
            continue
        with unit_of_work(store, actor=actor, clock=lambda: now) as uow:
            report.changed[name] = checklist.apply(uow, settings, crm, account, states or [])
            for run in _unfinished(uow.session, crm, account):
                checklist.refresh(uow, settings, run)
            if states is not None:
                _move_cursor(uow.session, crm, account, now)
        report.read[name] = len(states or [])
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


def _read(store: Store, adapters: Mapping[str, CrmAdapter], crm: str, account: str) -> list[TaskState] | None:
    """The account's tracked tasks changed since its last pass; None when its CRM cannot read tasks."""
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
    since = cursor.checked_at - MARGIN if cursor is not None else None
    states: list[TaskState] = []
    for start in range(0, len(ids), CHUNK):
        states += adapter.read_tasks(ids[start : start + CHUNK], changed_since=since)
    return states


def _unfinished(session: Session, crm: str, account: str) -> list[Run]:
    return list(
        session.scalars(
            select(Run)
            .where(Run.crm == crm, Run.account == account, Run.finished_at.is_(None))
            .where(Run.state != RunState.CANCELLED, Run.id.in_(select(ChecklistTask.run_id)))
            .order_by(Run.id)
        )
    )


def _move_cursor(session: Session, crm: str, account: str, now: datetime) -> None:
    statement = insert(session, TrackCursor).values(crm=crm, account=account, checked_at=now)
    session.execute(
        statement.on_conflict_do_update(index_elements=["crm", "account"], set_={"checked_at": now})
    )
