"""The worker: a loop that claims due events and actions, hands each to its use case, and keeps what it holds.

What happens to a claimed row is decided elsewhere: an event by
``connector.usecases.events``, an action by ``connector.usecases.performing`` (through
its kind's handler), a failure by ``connector.retry``, and every state change by
``connector.queue``. This module keeps the loop, the leases and stopping.

Leases are short (``OFFBOARD_LEASE_SECONDS``, 20 s), so a dead worker's rows come back
within seconds; an action taken over that way tells its adapter that the dead attempt's
outcome is unknown (``OutcomeAware``), so a CRM whose reads lag behind its writes waits
for them before writing. A live worker keeps what it holds: while ``run_forever`` runs, a
lease keeper renews the leases of the rows it has claimed and not finished, and before
each row the worker checks it still holds it. So a batch that takes longer than the
lease (a slow CRM, a rate-limit wait) is never worked by two workers at once. On SIGTERM
the worker stops claiming, finishes the row in hand, and puts the rest back for any
worker to take at once.

While ``run_forever`` runs, the contract-end sweep has a thread of its own (a slow CRM
listing never holds up events and actions; the ``schedules`` row still lets one worker
at a time sweep), and the worker's row in ``workers`` shows it alive (``heartbeat``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from adapters.base import CrmAdapter
from connector import heartbeat, queue
from connector.clock import Clock, utcnow
from connector.settings import Settings
from connector.store import Action, Event, Store
from connector.usecases.events import EventProcessor
from connector.usecases.offboarding import Playbooks
from connector.usecases.performing import ActionPerformer
from connector.usecases.sweep import SweepReport, sweep

log = logging.getLogger("offboard.worker")

SWEEP_JOIN_SECONDS = 10.0  # how long a stopping worker waits for its sweep to reach a stopping point
QueueTable = type[Event] | type[Action]


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        adapters: Mapping[str, CrmAdapter],
        playbooks: Playbooks,
        *,
        clock: Clock = utcnow,
        worker_id: str | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings, self.store, self.adapters, self.playbooks = settings, store, adapters, playbooks
        self.clock = clock
        self.worker_id = worker_id or f"worker-{uuid.uuid4().hex[:8]}"
        self.events = EventProcessor(
            settings, store, adapters, playbooks, worker_id=self.worker_id, clock=clock
        )
        self.performer = ActionPerformer(
            settings, store, adapters, worker_id=self.worker_id, clock=clock, sleep=sleep
        )
        self._stop: threading.Event | None = None  # run_forever's: once set, nothing more is claimed
        # Rows claimed and not yet started, by table: the lease keeper renews them, release() puts them back.
        self._held: dict[QueueTable, set[int]] = {Event: set(), Action: set()}
        self._in_hand: tuple[QueueTable, int] | None = None  # renewed, never put back
        self._held_lock = threading.Lock()
        # Actions of the batch in hand taken over from a dead attempt: id → when its lease ran out.
        self._reclaimed: dict[int, datetime] = {}
        self._lease_writes = threading.Lock()  # the keeper's and release()'s updates never cross (Postgres)
        self._sweeps_inline = True  # run_forever sweeps in a thread of its own instead

    # --- the loop --------------------------------------------------------

    def tick(self) -> int:
        """Process what is due now; return how many events and actions were handled."""
        if self._sweeps_inline:
            self.sweep_when_due()
        return self.process_events() + self.execute_due_actions()

    def run_until_idle(self, max_ticks: int = 100) -> int:
        """Tick until nothing is due (tests, the demo, ``offboard worker --once``)."""
        total = 0
        for _ in range(max_ticks):
            done = self.tick()
            total += done
            if not done:
                break
        return total

    def run_forever(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; then finish the row in hand, put back the rest, and return."""
        log.info("worker %s started", self.worker_id)
        self._stop = stop
        heartbeat.start(self.store, self.worker_id, self.clock())
        keeper_stop = threading.Event()
        keeper = _thread(self._keep_leases, keeper_stop, f"{self.worker_id}-leases")
        sweeper = self._start_sweeper(stop)
        try:
            while not stop.is_set():
                try:
                    busy = self.tick()
                except Exception:  # keep the loop alive; the row that failed comes back after its lease
                    log.exception("worker tick failed")
                    busy = 0
                if not busy:
                    stop.wait(self.settings.worker_poll_seconds)
        finally:
            keeper_stop.set()
            keeper.join()
            released = self.release()
            self._stop_sweeper(sweeper)
            heartbeat.stop(self.store, self.worker_id)
            self._stop = None
            log.info("worker %s stopped (%d claimed row(s) put back)", self.worker_id, released)

    @property
    def stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def process_events(self) -> int:
        if self.stopping:
            return 0
        self.events.wake_waiting()
        events = self._claim(Event)
        self._work_through(Event, events, self.events.process)
        return len(events)

    def execute_due_actions(self) -> int:
        if self.stopping:
            return 0
        actions = self._claim(Action)
        self._work_through(Action, actions, self._perform)
        return len(actions)

    def _perform(self, action: Action) -> None:
        self.performer.perform(action, reclaimed_since=self._reclaimed.get(action.id))

    # --- claiming, holding, giving back ------------------------------------------

    def _claim(self, table: QueueTable) -> list[Any]:
        """Lease up to a batch of due rows to this worker (see ``queue.claim``)."""
        lease = timedelta(seconds=self.settings.lease_seconds)
        with self.store.session() as session:
            claimed = queue.claim(
                session,
                table,
                worker_id=self.worker_id,
                now=self.clock(),
                lease=lease,
                limit=self.settings.worker_batch,
            )
        if table is Action:
            self._reclaimed = claimed.reclaimed
        return list(claimed.rows)

    def _work_through(self, table: QueueTable, rows: list[Any], handle: Callable[[Any], None]) -> None:
        """Handle claimed rows in turn, each only while this worker still holds it.

        On a stop, the rows not reached are put back; so are they if handling one raises
        (that one stays leased, and comes back when the lease runs out).
        """
        with self._held_lock:
            self._held[table].update(row.id for row in rows)
        try:
            for row in rows:
                if self.stopping:
                    break
                with self._held_lock:
                    self._held[table].discard(row.id)
                if not self._still_held(table, row.id):
                    continue
                with self._held_lock:
                    self._in_hand = (table, row.id)
                try:
                    handle(row)
                finally:
                    with self._held_lock:
                        self._in_hand = None
        finally:
            self.release()

    def _still_held(self, table: QueueTable, row_id: int) -> bool:
        until = self.clock() + timedelta(seconds=self.settings.lease_seconds)
        with self.store.session() as session:
            held = queue.still_held(session, table, row_id, worker_id=self.worker_id, until=until)
        if not held:
            log.warning(
                "%s %s was taken over after its lease ran out; not running it", table.__name__.lower(), row_id
            )
        return held

    def release(self) -> int:
        """Put back every row this worker claimed and has not started: pending, lease cleared.

        Any worker may take them at once; the claim's attempt is given back, since nothing
        was tried. A row whose handling had started is not put back: if it ended half-way (the
        process is being forced down), it comes back when its lease runs out, by which time
        the CRM shows what it wrote.
        """
        with self._held_lock:
            events, actions = sorted(self._held[Event]), sorted(self._held[Action])
            self._held[Event].clear()
            self._held[Action].clear()
        if not events and not actions:
            return 0
        with self._lease_writes, self.store.session() as session:
            released = queue.release(session, Event, events, worker_id=self.worker_id)
            released += queue.release(
                session, Action, actions, worker_id=self.worker_id, keep_lease=self._reclaimed
            )
        return released

    def _keep_leases(self, stop: threading.Event) -> None:
        """Beat the worker's heartbeat, and renew the leases of the rows it holds, every few seconds."""
        while not stop.wait(min(heartbeat.BEAT_SECONDS, self.settings.lease_seconds / 3)):
            try:
                heartbeat.beat(self.store, self.worker_id, self.clock())
                self._renew_leases()
            except Exception:  # the next round tries again; a lease that runs out meanwhile is safe
                log.exception("worker %s could not renew its leases", self.worker_id)

    def _renew_leases(self) -> None:
        with self._held_lock:
            held: dict[QueueTable, list[int]] = {
                Event: sorted(self._held[Event]),
                Action: sorted(self._held[Action]),
            }
            in_hand = self._in_hand
        if in_hand is not None:
            held[in_hand[0]].append(in_hand[1])
        if not held[Event] and not held[Action]:
            return
        until = self.clock() + timedelta(seconds=self.settings.lease_seconds)
        with self._lease_writes, self.store.session() as session:
            for table, ids in held.items():
                queue.renew(session, table, ids, worker_id=self.worker_id, until=until)

    # --- the contract-end sweep ---------------------------------------------

    def _start_sweeper(self, stop: threading.Event) -> threading.Thread:
        """Sweep in a thread beside the loop, so a long sweep never holds up events and actions."""
        self._sweeps_inline = False
        return _thread(self._sweep_beside, stop, f"{self.worker_id}-sweep")

    def _sweep_beside(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.sweep_when_due(stop)
            except Exception:  # the next schedule tries again
                log.exception("worker %s: the contract-end sweep failed", self.worker_id)
            stop.wait(self.settings.worker_poll_seconds)

    def _stop_sweeper(self, sweeper: threading.Thread) -> None:
        # A sweep stops between two CRM calls; one still waiting on the CRM is left to its
        # daemon thread: what it queued is queued, and the next sweep lists the rest again.
        sweeper.join(timeout=SWEEP_JOIN_SECONDS)
        self._sweeps_inline = True

    def sweep_when_due(self, stop: threading.Event | None = None) -> None:
        """Run the sweep if this worker is the one to move its schedule forward."""
        interval = self.settings.sweep_interval_seconds
        if interval <= 0:
            return
        now = self.clock()
        with self.store.session() as session:
            due = queue.take_schedule(session, "sweep", now=now, interval=timedelta(seconds=interval))
        if due:
            self.sweep(now, stop=stop)

    def sweep(self, now: datetime | None = None, *, stop: threading.Event | None = None) -> SweepReport:
        return sweep(self.settings, self.store, self.adapters, self.playbooks, now or self.clock(), stop=stop)


def _thread(target: Callable[[threading.Event], None], stop: threading.Event, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread
