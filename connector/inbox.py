"""Accept inbound events: store them once, before anything answers the sender.

Group commit. Webhooks come in bursts, many requests at a time, and a transaction per
request would make them queue for the database's write lock (SQLite has one writer) and
for a flush to disk each. So the requests of one process share transactions: each hands
its verified items to the process's ``Inbox``; a request that finds a writer's place free
(one on SQLite, a few on Postgres) stores its items, and those that find every place taken
wait, and are then stored together, in one transaction, by the next request given a place,
which wakes each with its own answer. A request therefore still answers only after the
transaction holding its events has committed ("stored before the 2xx"), and N requests
arriving together cost one lock, one commit and one flush instead of N.

A request's items are always stored together, in one transaction. If a shared
transaction fails, each request's items are stored again in a transaction of their own,
so a request whose items the database refuses fails alone; when the database itself is
away (a connection refused, a lock not granted in time), every request of the group
gets the error at once instead of each waiting its own turn to fail.

Served in turn. The server's front answers webhook requests itself, on its one thread
(``connector.serve``): each request of a round runs until it stores its events and waits
there (``serve_in_turn``; greenlets, so a request's code stays plain sequential code), and
once every request of the round has finished or waits, the waiting ones are stored
together, in one transaction, and each then finishes with its own answer. So a burst costs
no thread hand-off per request (a thread blocked for its transaction and woken again), which
under load took more of the machine than storing did.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import greenlet
from sqlalchemy import Connection, bindparam, select
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from connector import queue
from connector.store import Event, Store, direct

log = logging.getLogger("offboard.inbox")

KNOWN_CHUNK = 500  # keys per query: well under every database's limit on bound parameters
# Items per shared transaction: HubSpot sends up to 100 events per request, so a group holds
# a few full requests, and a transaction stays short enough that the next group never waits long.
GROUP_ITEMS = 500
# Requests writing at once per process on Postgres, each in its own transaction on its own
# connection (SQLite has one writer, so one).
POSTGRES_WRITERS = 2


@dataclass(frozen=True)
class Incoming:
    source: str
    account: str
    event_key: str
    kind: str
    payload: Any


@dataclass(frozen=True)
class Accepted:
    event_id: int
    duplicate: bool


def accept(store: Store, items: list[Incoming], now: datetime) -> list[Accepted]:
    """Store every item in one transaction; a redelivered item is recognised, not stored twice.

    Returns once that transaction has committed; concurrent callers in this process may
    share it (see the module docstring). Raises whatever kept the items from being stored.
    """
    return inbox_for(store).accept(items, now)


def store_items(session: Session, items: list[Incoming], now: datetime) -> list[Accepted]:
    """``accept`` in the caller's transaction."""
    return store_batches(session, [(items, now)])[0]


Key = tuple[str, str, str]  # source, account, event key


def store_batches(
    session: Session | Connection, batches: list[tuple[list[Incoming], datetime]]
) -> list[list[Accepted]]:
    """Several deliveries' items (each with the time it arrived) in the caller's transaction, in one
    statement; for each delivery, what became of each item. The first of the same key is the one
    stored, any later one (in the inbox already, or earlier in these) is a duplicate."""
    first = _first_of_each_key(batches)
    new_ids = queue.insert_events(session, list(first.values()))
    known = _ids_of(session, set(first) - set(new_ids))
    return _answers(batches, new_ids, known)


def _store_direct(
    store: Store, batches: list[tuple[list[Incoming], datetime]], held: direct.Held
) -> list[list[Accepted]]:
    """``store_batches`` in a transaction of its own, run on the driver (``connector.store.direct``):
    the webhook path's write, where SQLAlchemy's work per execution cost more than the INSERT."""
    insert, lookup = _statements(store)
    first = _first_of_each_key(batches)
    rows = [insert.bind(row) for row in queue.new_events(list(first.values()))]  # bound before the lock
    with direct.transaction(store, held) as transaction:
        if store.is_sqlite:
            new_ids, again = _inserted(transaction.inserted(insert, rows), list(first))
        else:
            new_ids = {(s, a, k): int(i) for i, s, a, k in transaction.returned(insert, rows)}
            # In the inbox already: a redelivery.
            again = [(key, range(0)) for key in first if key not in new_ids]
        found = transaction.first_rows(
            lookup, [lookup.bind(dict(zip(_KEY_COLUMNS, key, strict=True))) for key, _ in again]
        )
    known: dict[Key, int] = {}
    for (key, ids), row in zip(again, found, strict=True):
        if row is None:
            continue
        if int(row[0]) in ids:  # given by this transaction's statement
            new_ids[key] = int(row[0])
        else:
            known[key] = int(row[0])
    return _answers(batches, new_ids, known)


def _inserted(
    statements: list[tuple[int, range]], keys: list[Key]
) -> tuple[dict[Key, int], list[tuple[Key, range]]]:
    """SQLite's new ids, from the ids each statement gave (``direct.Transaction.inserted``): a
    statement that inserted all its rows gave them in order; of one that skipped some (stored
    before), the keys are looked up, and those whose id it gave are new."""
    new_ids: dict[Key, int] = {}
    again: list[tuple[Key, range]] = []
    start = 0
    for carried, ids in statements:
        chunk, start = keys[start : start + carried], start + carried
        if len(ids) == carried:
            new_ids.update(zip(chunk, ids, strict=True))
        else:
            again += [(key, ids) for key in chunk]
    return new_ids, again


def _first_of_each_key(batches: list[tuple[list[Incoming], datetime]]) -> dict[Key, dict[str, Any]]:
    """The row of each key's first item, in key order: two transactions writing the same keys
    lock them in the same order, so on Postgres one waits for the other instead of deadlocking."""
    first: dict[Key, dict[str, Any]] = {}
    for items, now in batches:
        for item in items:
            first.setdefault(_key(item), _row(item, now))
    return {key: first[key] for key in sorted(first)}


def _answers(
    batches: list[tuple[list[Incoming], datetime]], new_ids: dict[Key, int], known: dict[Key, int]
) -> list[list[Accepted]]:
    """For each delivery, each item's event id, and whether it was stored before (or earlier here)."""
    ids = {**known, **new_ids}
    fresh = set(new_ids)
    answers = []
    for items, _ in batches:
        answer = []
        for item in items:
            key = _key(item)
            answer.append(Accepted(ids[key], duplicate=key not in fresh))
            fresh.discard(key)
        answers.append(answer)
    return answers


_KEY_COLUMNS = ("source", "account", "event_key")


def _statements(store: Store) -> tuple[direct.Compiled, direct.Compiled]:
    """The inbox's INSERT and its look-up of a stored event's id, compiled for ``store`` once."""
    found = _compiled.get(store)
    if found is None:
        table = Event.__table__
        dialect = store.engine.dialect.name
        # No RETURNING on SQLite: see direct.Transaction.inserted.
        written = queue.event_insert(dialect, returning=not store.is_sqlite)
        insert = direct.Compiled(store, written, table, queue.EVENT_COLUMNS)
        by_key = select(Event.id).where(*(table.c[name] == bindparam(name) for name in _KEY_COLUMNS))
        found = _compiled[store] = (insert, direct.Compiled(store, by_key, table, _KEY_COLUMNS))
    return found


_compiled: weakref.WeakKeyDictionary[Store, tuple[direct.Compiled, direct.Compiled]] = (
    weakref.WeakKeyDictionary()
)


def _key(item: Incoming) -> Key:
    return (item.source, item.account, item.event_key)


def _row(item: Incoming, now: datetime) -> dict[str, Any]:
    return {
        "source": item.source,
        "account": item.account,
        "event_key": item.event_key,
        "kind": item.kind,
        "payload": item.payload,
        "received_at": now,
    }


def _ids_of(session: Session | Connection, keys: set[Key]) -> dict[Key, int]:
    """The ids of events the inbox holds already."""
    found: dict[Key, int] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), KNOWN_CHUNK):
        chunk = ordered[start : start + KNOWN_CHUNK]
        query = select(Event.id, Event.source, Event.account, Event.event_key).where(
            Event.source.in_({source for source, _, _ in chunk}),
            Event.event_key.in_({key for _, _, key in chunk}),
        )
        found.update(((s, a, k), int(i)) for i, s, a, k in session.execute(query))
    return {key: found[key] for key in keys}


class NotStored(Exception):
    """The items were not stored (nothing of the request was); ``retry`` when the database was
    away or busy, so the sender's redelivery will likely be stored."""

    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry

    @classmethod
    def from_error(cls, error: BaseException) -> NotStored:
        """Named after the database's error, its first line only (the rest quotes the statement
        and the payload's values)."""
        cause = getattr(error, "orig", None) or error
        first = (str(cause).splitlines() or [""])[0]
        return cls(
            f"{type(cause).__name__}: {first}", retry=isinstance(error, OperationalError | InterfaceError)
        )


@dataclass(eq=False)
class _Ticket:
    """One request's items, and what became of them once its transaction ended."""

    items: list[Incoming]
    now: datetime
    accepted: list[Accepted] = field(default_factory=list)
    error: BaseException | None = None
    done: bool = False
    # Held while the request waits; released once, by the writer that either stored it or
    # handed it a turn to write. Each waiting thread is woken once, and only for itself.
    wake: threading.Lock = field(default_factory=threading.Lock)


class Inbox:
    """One process's way into the inbox: concurrent requests share transactions (group commit).

    Up to ``writers`` requests write at once, each on a connection of its own: one on SQLite,
    which has one writer anyway; a few on Postgres, where a write is mostly a round trip and
    a flush to disk, which several transactions can wait for together. A request that finds a
    writer's place free writes its own items. The others queue; a writer whose transaction
    has ended wakes those it stored and hands its place to the oldest still waiting, which
    writes, in one transaction, its own items and every queued one behind it (``_take_group``).
    """

    def __init__(self, store: Store, group_items: int = GROUP_ITEMS, writers: int | None = None) -> None:
        self.store = store
        self.group_items = group_items
        self.writers = writers or (1 if store.is_sqlite else POSTGRES_WRITERS)
        self._lock = threading.Lock()  # guards what follows, held for moments only
        self._waiting: deque[_Ticket] = deque()
        self._busy = 0  # writers now writing
        self._free = [direct.Held(store) for _ in range(self.writers)]  # a connection per writer
        self._in_turn: direct.Held | None = None  # the connection of requests served in turn

    def accept(self, items: list[Incoming], now: datetime) -> list[Accepted]:
        """Store ``items`` in one transaction, maybe shared with other requests'; see ``accept``.

        Raises NotStored (from the database's error) when the transaction did not commit.
        """
        if not items:
            return []
        ticket = _Ticket(list(items), now)
        served = greenlet.getcurrent()
        if isinstance(served, _InTurn):
            served.wait_for_store(self, ticket)
            return self._outcome(ticket)
        with self._lock:
            writes = self._busy < self.writers
            if writes:
                self._busy += 1
            else:
                ticket.wake.acquire()
                self._waiting.append(ticket)
        if not writes:
            ticket.wake.acquire()  # stored by another request, or handed a turn to write
        if not ticket.done:
            self._write(ticket)
        return self._outcome(ticket)

    @staticmethod
    def _outcome(ticket: _Ticket) -> list[Accepted]:
        if ticket.error is not None:
            # A fresh exception per request: the same error may be raised in many requests.
            raise NotStored.from_error(ticket.error) from ticket.error
        return ticket.accepted

    def store_waiting(self, tickets: Sequence[_Ticket]) -> None:
        """Store the tickets of requests served in turn (``serve_in_turn``), ``group_items`` at most
        per transaction, on a connection of their own; each ends done. On SQLite the write turn
        orders this writer and the threads' (``Store.write_turn``); on Postgres they write at once."""
        if self._in_turn is None:
            self._in_turn = direct.Held(self.store)
        group: list[_Ticket] = []
        size = 0
        for ticket in tickets:
            if group and size + len(ticket.items) > self.group_items:
                self._store_group(group, self._in_turn)
                group, size = [], 0
            group.append(ticket)
            size += len(ticket.items)
        if group:
            self._store_group(group, self._in_turn)

    def _write(self, mine: _Ticket) -> None:
        """Store ``mine`` and the queue behind it, then hand this writer's place on."""
        with self._lock:
            held = self._free.pop()
            group = self._take_group(mine)
        try:
            self._store_group(group, held)
        finally:
            with self._lock:
                self._free.append(held)
                following = self._waiting.popleft() if self._waiting else None
                if following is None:
                    self._busy -= 1
            for ticket in group:
                if ticket is not mine:
                    ticket.wake.release()
            if following is not None:
                following.wake.release()  # its thread writes next, in this writer's place

    def _take_group(self, first: _Ticket) -> list[_Ticket]:
        group, size = [first], len(first.items)
        while self._waiting and size + len(self._waiting[0].items) <= self.group_items:
            size += len(self._waiting[0].items)
            group.append(self._waiting.popleft())
        return group

    def _store_group(self, group: list[_Ticket], held: direct.Held) -> None:
        """Every ticket of the group ends done: stored, or with the error that stopped it."""
        try:
            try:
                self._store_together(group, held)
            except DBAPIError as exc:
                if not exc.connection_invalidated:
                    raise
                # The held connection was gone (a database restarted since it was last used):
                # once more on a new one. Nothing was stored, or, were it the commit's answer
                # that was lost, the insert skips what is there and reads back its ids.
                self._store_together(group, held)
        except (OperationalError, InterfaceError) as exc:
            _fail(group, exc)  # the database is away or locked: the same for every request
        except Exception as exc:
            if len(group) == 1:
                _fail(group, exc)
            for ticket in group:  # whose items does the database refuse? the others are stored
                self._store_alone(ticket, held)
        finally:
            # Only an interruption (KeyboardInterrupt, SystemExit) leaves a ticket here.
            _fail(group, RuntimeError("interrupted before the transaction ended"))

    def _store_together(self, group: list[_Ticket], held: direct.Held) -> None:
        results = _store_direct(self.store, [(ticket.items, ticket.now) for ticket in group], held)
        for ticket, accepted in zip(group, results, strict=True):
            ticket.accepted, ticket.done = accepted, True

    def _store_alone(self, ticket: _Ticket, held: direct.Held) -> None:
        if ticket.done:
            return
        try:
            self._store_together([ticket], held)
        except Exception as exc:
            _fail([ticket], exc)


def _fail(tickets: list[_Ticket], error: BaseException) -> None:
    for ticket in tickets:
        if not ticket.done:
            ticket.error, ticket.done = error, True


class _InTurn(greenlet.greenlet):  # type: ignore[misc]
    """One request served in turn (``serve_in_turn``); ``waiting`` while its events wait to be stored."""

    waiting: tuple[Inbox, _Ticket] | None = None

    def wait_for_store(self, inbox: Inbox, ticket: _Ticket) -> None:
        self.waiting = (inbox, ticket)
        self.parent.switch()  # back to serve_in_turn, which resumes this once the ticket is done


def serve_in_turn(requests: Sequence[Callable[[], object]]) -> None:
    """Run each of ``requests`` on this thread, one after another. One that stores events
    (``accept``) waits there; once every request has finished or waits, the waiting ones'
    events are stored, one transaction per inbox (``Inbox.store_waiting``), and each goes on
    from where it waited with its own outcome. An exception a request lets out is logged."""
    waiting = [served for served in (_InTurn(request) for request in requests) if _go_on(served)]
    while waiting:
        by_inbox: dict[Inbox, list[_Ticket]] = {}
        for served in waiting:
            assert served.waiting is not None
            inbox, ticket = served.waiting
            by_inbox.setdefault(inbox, []).append(ticket)
        for inbox, tickets in by_inbox.items():
            inbox.store_waiting(tickets)
        waiting = [served for served in waiting if _go_on(served)]


def _go_on(served: _InTurn) -> bool:
    """Run ``served`` until it finishes (False) or waits for its events to be stored (True)."""
    served.waiting = None
    try:
        served.switch()
    except Exception:
        log.exception("a request served in turn failed")
        return False
    return served.waiting is not None


_inboxes: weakref.WeakKeyDictionary[Store, Inbox] = weakref.WeakKeyDictionary()
_inboxes_lock = threading.Lock()


def inbox_for(store: Store) -> Inbox:
    """The one ``Inbox`` of ``store`` in this process (made on first use, after any fork)."""
    with _inboxes_lock:
        found = _inboxes.get(store)
        if found is None:
            found = _inboxes[store] = Inbox(store)
        return found


def known(store: Store, source: str, keys: Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of these (account, event key) pairs the inbox already holds for ``source``."""
    wanted = sorted(set(keys))
    found: set[tuple[str, str]] = set()
    for start in range(0, len(wanted), KNOWN_CHUNK):
        chunk = wanted[start : start + KNOWN_CHUNK]
        with store.read() as session:
            rows = session.execute(
                select(Event.account, Event.event_key).where(
                    Event.source == source, Event.event_key.in_([key for _, key in chunk])
                )
            ).all()
        found.update((account, key) for account, key in rows)
    return found & set(wanted)
