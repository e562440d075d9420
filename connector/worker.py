"""The worker: a loop that claims due events and actions, hands them on, and keeps what it holds.

What happens to claimed rows is decided elsewhere: events by ``connector.usecases.events``,
actions by ``connector.usecases.performing`` (by kind and CRM account together, through
their kind's handler), failures by ``connector.retry``, every state change by
``connector.queue``. This module keeps the loop, the leases and stopping.

Leases are short (``OFFBOARD_LEASE_SECONDS``, 20 s), so a dead worker's rows come back
within seconds, as unknown outcomes (``OutcomeAware``). A live worker keeps what it holds:
a lease keeper renews the leases of the rows it claimed and has not finished, and before
each group the worker checks it still holds its rows, so work that outlasts a lease (a
slow CRM, a rate-limit wait) is never done by two workers at once. On SIGTERM the worker
stops claiming, finishes the groups in hand, and puts the rest back for any worker.

While ``run_forever`` runs, the contract-end sweep has a thread of its own (the
``schedules`` row lets one worker at a time sweep), and the worker's row in ``workers``
shows it alive (``heartbeat``).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
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
from connector.usecases.tracking import track

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
        self._in_hand: dict[QueueTable, set[int]] = {Event: set(), Action: set()}  # renewed, never put back
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
            self.track_when_due()
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
        by_source: dict[tuple[str, str], list[Any]] = {}
        for event in events:
            by_source.setdefault((event.source, event.account), []).append(event)
        self._work_through(Event, list(by_source.values()), self.events.process_group)
        return len(events)

    def execute_due_actions(self) -> int:
        """Claim due actions and write them: by kind and CRM account together, several groups in
        flight at once (``OFFBOARD_WORKER_CONCURRENCY``), each within its CRM's budget."""
        if self.stopping:
            return 0
        actions = self._claim(Action)
        groups = self.performer.groups(actions, self._reclaimed) if actions else []
        self._work_through(Action, groups, self.performer.perform_group, self.settings.worker_concurrency)
        return len(actions)

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

    def _work_through(
        self,
        table: QueueTable,
        groups: list[list[Any]],
        handle: Callable[[list[Any]], None],
        at_once: int = 1,
    ) -> None:
        """Handle claimed groups of rows, each only while this worker still holds its rows.

        On a stop, the groups not reached are put back; so are they if handling one raises
        (that one stays leased, and comes back when the lease runs out).
        """
        with self._held_lock:
            self._held[table].update(_id(row) for group in groups for row in group)
        try:
            if at_once > 1 and len(groups) > 1:
                with ThreadPoolExecutor(min(at_once, len(groups)), thread_name_prefix=self.worker_id) as pool:
                    list(pool.map(lambda group: self._handle(table, group, handle), groups))
            else:
                for group in groups:
                    self._handle(table, group, handle)
        finally:
            self.release()

    def _handle(self, table: QueueTable, group: list[Any], handle: Callable[[list[Any]], None]) -> None:
        if self.stopping:
            return
        ids = {_id(row) for row in group}
        with self._held_lock:
            self._held[table] -= ids
        mine = self._still_held(table, ids)
        group = [row for row in group if _id(row) in mine]
        if not group:
            return
        with self._held_lock:
            self._in_hand[table] |= mine
        try:
            handle(group)
        finally:
            with self._held_lock:
                self._in_hand[table] -= mine

    def _still_held(self, table: QueueTable, ids: set[int]) -> set[int]:
        until = self.clock() + timedelta(seconds=self.settings.lease_seconds)
        with self.store.session() as session:
            held = queue.still_held(session, table, ids, worker_id=self.worker_id, until=until)
        for row_id in sorted(ids - held):
            name = table.__name__.lower()
            log.warning("%s %s was taken over after its lease ran out; not running it", name, row_id)
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
                table: sorted(self._held[table] | self._in_hand[table]) for table in (Event, Action)
            }
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
            try:
                self.track_when_due()
            except Exception:  # the next schedule tries again
                log.exception("worker %s: the tracking pass failed", self.worker_id)
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

    def track_when_due(self) -> None:
        """Run the tracking pass (open checklists' tasks read back) if this worker moves its schedule."""
        interval = self.settings.track_interval_seconds
        if interval <= 0:
            return
        now = self.clock()
        with self.store.session() as session:
            due = queue.take_schedule(session, "track", now=now, interval=timedelta(seconds=interval))
        if due:
            track(self.settings, self.store, self.adapters, now, actor=self.worker_id)

    def sweep(self, now: datetime | None = None, *, stop: threading.Event | None = None) -> SweepReport:
        return sweep(self.settings, self.store, self.adapters, self.playbooks, now or self.clock(), stop=stop)


def _id(row: Any) -> int:  # a group holds events, or actions on their way (``Due``)
    return int(row.action.id if hasattr(row, "action") else row.id)


def _thread(target: Callable[[threading.Event], None], stop: threading.Event, name: str) -> threading.Thread:
    thread = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
    thread.start()
    return thread
