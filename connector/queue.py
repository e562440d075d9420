"""The queue: the only writer of event, run and action state.

Events (the inbox) and actions (the outbox) are claimed the same way: a short
transaction marks due rows ``running`` with a lease (``FOR UPDATE SKIP LOCKED`` on
Postgres, one writer on SQLite), the work happens outside any transaction, and a
second short transaction settles the row. A row whose lease ran out (its worker
died) is claimed again; for an action, when that lease ran out is handed to the
claimant, as the moment after which the dead attempt wrote nothing; an attempt that ended
with its outcome unknown (a timeout, a lost reply) leaves the same mark on the pending row.

Every state change below is a named function; each checks its move against this
table (``TRANSITIONS``, which a test compares with the table) and refuses any other.
An action's owner is the worker that claimed it (``claimed_by``): a worker settles,
renews or releases only what it still holds (``_held``), so a worker whose lease ran
out and was taken over writes nothing. Events have no owner column: one handled
twice starts no second run, so for them it is enough that the row is still running.

======  =========  =========  ================================================
table   from       to         function
======  =========  =========  ================================================
event   new        pending    insert_events
event   pending    running    claim
event   running    running    claim (the holder's lease ran out)
event   running    pending    release, retry_later
event   running    done       settle_event
event   running    ignored    settle_event
event   running    failed     settle_event
run     new        active     insert_run
run     active     done       close_run_if_finished
run     done       active     reopen_runs
run     active     cancelled  cancel_run
run     done       cancelled  cancel_run
action  new        pending    new_action
action  new        waiting    new_action
action  new        skipped    new_action
action  pending    running    claim
action  running    running    claim (the holder's lease ran out)
action  running    pending    release, retry_later
action  running    done       settle_action
action  running    skipped    settle_action
action  running    failed     settle_action
action  failed     pending    retry_failed
action  waiting    pending    release_waiting
action  pending    cancelled  cancel_run
action  waiting    cancelled  cancel_run
======  =========  =========  ================================================

Two functions move only when pending rows are due, changing no state: ``wake_waiting_events``
(every playbook loads again) and ``resume_account`` (an account installed again: what waited
because it was disconnected is due now).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Connection, CursorResult, and_, or_, select, update
from sqlalchemy.orm import Session

from connector.store import Action, Event, Run, Schedule
from connector.store.db import dialect_insert, insert


class EventState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    IGNORED = "ignored"
    FAILED = "failed"


class RunState(StrEnum):
    ACTIVE = "active"
    DONE = "done"
    CANCELLED = "cancelled"


class ActionState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # for another action's outcome (a referral's follow-up waits for the contact)
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"  # parked: an operator retries it
    CANCELLED = "cancelled"


NEW = "new"  # a row's "from" before it exists
OPEN_ACTION_STATES = (ActionState.PENDING, ActionState.RUNNING, ActionState.WAITING)
Table = type[Event] | type[Run] | type[Action]
QueueTable = type[Event] | type[Action]

TRANSITIONS: dict[str, frozenset[tuple[str, str]]] = {
    "event": frozenset(
        {
            (NEW, "pending"),
            ("pending", "running"),
            ("running", "running"),
            ("running", "pending"),
            ("running", "done"),
            ("running", "ignored"),
            ("running", "failed"),
        }
    ),
    "run": frozenset(
        {
            (NEW, "active"),
            ("active", "done"),
            ("done", "active"),
            ("active", "cancelled"),
            ("done", "cancelled"),
        }
    ),
    "action": frozenset(
        {
            (NEW, "pending"),
            (NEW, "waiting"),
            (NEW, "skipped"),
            ("pending", "running"),
            ("running", "running"),
            ("running", "pending"),
            ("running", "done"),
            ("running", "skipped"),
            ("running", "failed"),
            ("failed", "pending"),
            ("waiting", "pending"),
            ("pending", "cancelled"),
            ("waiting", "cancelled"),
        }
    ),
}


class IllegalTransition(RuntimeError):
    """A state change the table does not allow: a bug in the caller, never a user's doing."""


def check(table: Table, source: str, target: str) -> None:
    name = table.__tablename__.rstrip("s")
    if (str(source), str(target)) not in TRANSITIONS[name]:
        raise IllegalTransition(f"{name} {source} → {target} is not an allowed transition")


def _move(
    session: Session, table: Table, sources: Iterable[str], target: str, *where: Any, **values: Any
) -> int:
    """Move the rows matching ``where`` from one of ``sources`` to ``target``; how many moved."""
    sources = tuple(sources)
    for source in sources:
        check(table, source, target)
    statement = (
        update(table)
        .where(table.state.in_([str(s) for s in sources]), *where)
        .values(state=str(target), **values)
    )
    return _rows(session, statement)


def _held(table: QueueTable, worker_id: str) -> list[Any]:
    """The ownership guard: the row is still running, and (actions) still this worker's."""
    guard = [table.state == "running"]
    if table is Action:
        guard.append(Action.claimed_by == worker_id)
    return guard


def _due_column(table: QueueTable) -> Any:
    return Event.available_at if table is Event else Action.due_at


def _note_column(table: QueueTable) -> str:
    return "outcome" if table is Event else "last_error"


# --- new rows ---------------------------------------------------------------------


def insert_events(db: Session | Connection, rows: list[dict[str, Any]]) -> dict[tuple[str, str, str], int]:
    """Store events, each once, in one statement: each row has source, account, event_key, kind,
    payload and received_at. Returns the ids of the events stored now, by (source, account, key);
    one already in the inbox, or listed before, is not stored again and not in the answer.

    ``db`` is the caller's ORM session or a plain connection in a transaction."""
    new = new_events(rows)
    if not new:
        return {}
    dialect = db.get_bind().dialect if isinstance(db, Session) else db.dialect
    return {(s, a, k): int(i) for i, s, a, k in db.execute(event_insert(dialect.name), new)}


def new_events(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Events as ``event_insert`` stores them: pending, available from their arrival."""
    check(Event, NEW, EventState.PENDING)
    pending = {"state": str(EventState.PENDING), "attempts": 0}
    return [{**row, **pending, "available_at": row["received_at"]} for row in rows]


EVENT_COLUMNS = (
    "source",
    "account",
    "event_key",
    "kind",
    "payload",
    "received_at",
    "state",
    "attempts",
    "available_at",
)


@functools.cache
def event_insert(dialect: str, *, returning: bool = True) -> Any:
    """The events INSERT of a dialect, built once: building it costs more than running it. A row
    already in the inbox (same source, account and key) is skipped and returns nothing; with
    ``returning=False`` no row returns anything (``connector.inbox`` reads SQLite's new ids off
    the statement instead)."""
    table = Event.__table__
    statement = dialect_insert(dialect, table).on_conflict_do_nothing(
        index_elements=["source", "account", "event_key"]
    )
    if returning:
        statement = statement.returning(table.c.id, table.c.source, table.c.account, table.c.event_key)
    return statement


def insert_run(session: Session, values: dict[str, Any]) -> int | None:
    """Insert an active run; None when the deal already has an open one (or this generation exists)."""
    check(Run, NEW, RunState.ACTIVE)
    statement = (
        insert(session, Run)
        .values(**values, state=str(RunState.ACTIVE))
        .on_conflict_do_nothing()
        .returning(Run.id)
    )
    run_id = session.execute(statement).scalar()
    return None if run_id is None else int(run_id)


def new_action(
    *,
    run_id: int,
    step_id: str,
    kind: str,
    payload: dict[str, Any],
    key: str,
    due: datetime,
    now: datetime,
    state: ActionState = ActionState.PENDING,
    note: str | None = None,
) -> Action:
    """An outbox row, not yet added to a session: pending, waiting for another action, or skipped."""
    check(Action, NEW, state)
    return Action(
        run_id=run_id,
        step_id=step_id,
        kind=kind,
        payload=payload,
        due_at=due,
        state=str(state),
        attempts=0,
        idempotency_key=key,
        last_error=note,
        created_at=now,
        updated_at=now,
    )


# --- claiming, holding, giving back --------------------------------------------------


@dataclass
class Claimed:
    """Rows leased to one worker, and (actions) which were taken over from a dead holder and when
    its lease ran out."""

    rows: list[Any]
    reclaimed: dict[int, datetime] = field(default_factory=dict)


def claim(
    session: Session, table: QueueTable, *, worker_id: str, now: datetime, lease: timedelta, limit: int
) -> Claimed:
    """Lease up to ``limit`` due rows (or rows whose holder's lease ran out) to this worker."""
    check(table, EventState.PENDING, EventState.RUNNING)
    check(table, EventState.RUNNING, EventState.RUNNING)
    due = _due_column(table)
    found = session.execute(
        select(table.id, table.lease_until)
        .where(
            or_(
                and_(table.state == "pending", due <= now),
                and_(table.state == "running", table.lease_until < now),
            )
        )
        .order_by(due, table.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    ids = [row_id for row_id, _ in found]
    if not ids:
        return Claimed([])
    owner = {"claimed_by": worker_id} if table is Action else {}
    session.execute(
        update(table)
        .where(table.id.in_(ids))
        .values(state="running", lease_until=now + lease, attempts=table.attempts + 1, **owner)
    )
    rows = list(session.scalars(select(table).where(table.id.in_(ids)).order_by(table.id)).all())
    session.expunge_all()
    reclaimed = {row_id: held for row_id, held in found if held is not None} if table is Action else {}
    return Claimed(rows, reclaimed)


def renew(session: Session, table: QueueTable, ids: Iterable[int], *, worker_id: str, until: datetime) -> int:
    """Extend the leases of rows this worker still holds; how many it still holds."""
    ids = list(ids)
    if not ids:
        return 0
    statement = update(table).where(table.id.in_(ids), *_held(table, worker_id)).values(lease_until=until)
    return _rows(session, statement)


def release(
    session: Session,
    table: QueueTable,
    ids: Iterable[int],
    *,
    worker_id: str,
    keep_lease: dict[int, datetime] | None = None,
) -> int:
    """Give back rows claimed and not started: pending at once, the claim's attempt returned.

    An action taken over from a dead holder keeps that holder's lease end (``keep_lease``),
    so whoever claims it next still knows its outcome is unknown.
    """
    ids, keep_lease = list(ids), keep_lease or {}
    groups: list[tuple[datetime | None, list[int]]] = [(None, [i for i in ids if i not in keep_lease])]
    groups += [(keep_lease[i], [i]) for i in ids if i in keep_lease]
    owner = {"claimed_by": None} if table is Action else {}
    released = 0
    for lease_until, chosen in groups:
        if chosen:
            released += _move(
                session,
                table,
                [EventState.RUNNING],
                EventState.PENDING,
                table.id.in_(chosen),
                *_held(table, worker_id),
                lease_until=lease_until,
                attempts=table.attempts - 1,
                **owner,
            )
    return released


def retry_later(
    session: Session,
    table: QueueTable,
    row_id: int,
    *,
    worker_id: str,
    due: datetime,
    attempts: int,
    note: str,
    unsure_since: datetime | None = None,
) -> int:
    """Back to pending, due at ``due``, with ``attempts`` counted and why it waits.

    ``unsure_since``: an attempt whose outcome is unknown may have written until then; it is
    kept where a dead holder's lease end is kept, so whoever claims the row next knows.
    """
    due_name = "available_at" if table is Event else "due_at"
    owner = {"claimed_by": None} if table is Action else {}
    return _move(
        session,
        table,
        [EventState.RUNNING],
        EventState.PENDING,
        table.id == row_id,
        *_held(table, worker_id),
        lease_until=unsure_since,
        attempts=attempts,
        **{due_name: due, _note_column(table): note},
        **owner,
    )


def still_held(
    session: Session, table: QueueTable, ids: Iterable[int], *, worker_id: str, until: datetime
) -> set[int]:
    """Renew the leases of the rows this worker still holds, and say which those are (a lease may
    have run out and the row been taken over)."""
    ids = list(ids)
    if not ids:
        return set()
    statement = (
        update(table)
        .where(table.id.in_(ids), *_held(table, worker_id))
        .values(lease_until=until)
        .returning(table.id)
    )
    return {int(row_id) for row_id in session.scalars(statement)}


# --- settling -------------------------------------------------------------------------


def settle_event(session: Session, event_id: int, state: EventState, *, note: str, now: datetime) -> int:
    """A handled event's end: done, ignored (nothing to do) or failed (parked)."""
    return _move(
        session,
        Event,
        [EventState.RUNNING],
        state,
        Event.id == event_id,
        outcome=note,
        lease_until=None,
        processed_at=now,
    )


def settle_action(
    session: Session,
    action_id: int,
    state: ActionState,
    *,
    worker_id: str,
    now: datetime,
    result: dict[str, Any] | None = None,
    error: str | None = None,
) -> bool:
    """An action's end, if this worker still holds it: done, skipped, or failed (parked for an operator).

    False when its lease ran out and another worker took it over: that one settles it.
    """
    finished = {"result": result, "done_at": now} if state is not ActionState.FAILED else {}
    moved = _move(
        session,
        Action,
        [ActionState.RUNNING],
        state,
        Action.id == action_id,
        *_held(Action, worker_id),
        lease_until=None,
        last_error=error,
        updated_at=now,
        **finished,
    )
    return moved > 0


def retry_failed(session: Session, ids: list[int], *, now: datetime) -> int:
    """Parked actions back in the queue, due now, with fresh attempts."""
    return _move(
        session,
        Action,
        [ActionState.FAILED],
        ActionState.PENDING,
        Action.id.in_(ids),
        attempts=0,
        due_at=now,
        claimed_by=None,
        lease_until=None,
        updated_at=now,
    )


def release_waiting(session: Session, action_id: int, *, payload: dict[str, Any], now: datetime) -> int:
    """An action waiting for another's outcome may go now, with what that outcome told it."""
    return _move(
        session,
        Action,
        [ActionState.WAITING],
        ActionState.PENDING,
        Action.id == action_id,
        payload=payload,
        due_at=now,
        updated_at=now,
    )


# --- runs -----------------------------------------------------------------------------


def lock_runs(session: Session, run_ids: Iterable[int]) -> None:
    """Hold these runs until the transaction ends, in id order (so two holders never deadlock).

    Groups of actions settle in transactions of their own, side by side: each must see the
    others' settled actions before it decides a run is finished, or none would close it.
    """
    ids = sorted(set(run_ids))
    if ids:
        session.execute(select(Run.id).where(Run.id.in_(ids)).order_by(Run.id).with_for_update())


def close_run_if_finished(session: Session, run_id: int, *, now: datetime) -> int:
    """An active run with nothing left to write is done (its row locked first: see ``lock_runs``)."""
    lock_runs(session, [run_id])
    open_action = session.scalar(
        select(Action.id)
        .where(Action.run_id == run_id, Action.state.in_([str(s) for s in OPEN_ACTION_STATES]))
        .limit(1)
    )
    if open_action is not None:
        return 0
    return _move(session, Run, [RunState.ACTIVE], RunState.DONE, Run.id == run_id, updated_at=now)


def reopen_runs(session: Session, run_ids: Iterable[int], *, now: datetime) -> int:
    """Done runs that owe the CRM new actions (an operator's retry, a late answer) are active again."""
    ids = list(run_ids)
    if not ids:
        return 0
    return _move(session, Run, [RunState.DONE], RunState.ACTIVE, Run.id.in_(ids), updated_at=now)


def cancel_run(session: Session, run: Run, *, reason: str, now: datetime) -> int:
    """Cancel a run and its actions not yet written; how many actions were cancelled.

    An action already running finishes: its CRM write may be under way.
    """
    cancelled = _move(
        session,
        Action,
        [ActionState.PENDING, ActionState.WAITING],
        ActionState.CANCELLED,
        Action.run_id == run.id,
        last_error=reason,
        updated_at=now,
    )
    _move(
        session,
        Run,
        [RunState.ACTIVE, RunState.DONE],
        RunState.CANCELLED,
        Run.id == run.id,
        note=reason,
        updated_at=now,
    )
    session.refresh(run)
    return cancelled


# --- schedules and waiting events --------------------------------------------------------


def wake_waiting_events(session: Session, *, prefix: str, now: datetime) -> int:
    """Pending events held back with an outcome starting ``prefix`` are due now (no state change)."""
    statement = (
        update(Event)
        .where(Event.state == "pending", Event.available_at > now, Event.outcome.startswith(prefix))
        .values(available_at=now)
    )
    return _rows(session, statement)


def disconnected_note(crm: str, account: str) -> str:
    """How the note of work held back by a disconnected account begins (``errors.Disconnected``)."""
    return f"the {crm} account {account} is disconnected"


def resume_account(session: Session, crm: str, account: str, now: datetime) -> int:
    """An account installed again: its pending actions and events held back because it was
    disconnected are due now; how many.

    No state changes (they stay ``pending``, their attempts as they were): only ``due_at`` and
    ``available_at`` move, as the worker's own deferral moved them. It is written here, beside
    the state changes, because the queue owns every row it hands out. Work merely planned for
    later (a survey in three days) keeps its time: only rows whose note says the account was
    disconnected move.
    """
    note = disconnected_note(crm, account)
    runs = select(Run.id).where(Run.crm == crm, Run.account == account)
    actions = (
        update(Action)
        .where(
            Action.state == ActionState.PENDING,
            Action.run_id.in_(runs),
            Action.due_at > now,
            Action.last_error.startswith(note, autoescape=True),
        )
        .values(due_at=now)
    )
    events = (
        update(Event)
        .where(
            Event.state == EventState.PENDING,
            Event.source == crm,
            Event.account == account,
            Event.available_at > now,
            Event.outcome.startswith(note, autoescape=True),
        )
        .values(available_at=now)
    )
    return _rows(session, actions) + _rows(session, events)


def take_schedule(session: Session, name: str, *, now: datetime, interval: timedelta) -> bool:
    """True for the one caller that moves schedule ``name`` forward, when it is due."""
    session.execute(insert(session, Schedule).values(name=name, next_at=now).on_conflict_do_nothing())
    moved = _rows(
        session,
        update(Schedule).where(Schedule.name == name, Schedule.next_at <= now).values(next_at=now + interval),
    )
    return moved > 0


def _rows(session: Session, statement: Any) -> int:
    """Execute an UPDATE and return how many rows it changed."""
    result = cast("CursorResult[Any]", session.execute(statement))
    return int(result.rowcount or 0)
