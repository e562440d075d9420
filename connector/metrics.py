"""What ``GET /metrics`` shows, in Prometheus text format (prometheus-client).

Offboard runs as several processes, web and workers, on one machine or many,
all sharing one database. So every number is read from that database when
Prometheus scrapes, whichever process answers:

- state that already lives in the tables is counted there at scrape time: queue
  depth (events and actions by state and kind), action outcomes, retries and
  parkings, each worker's heartbeat age (``workers``), the sweep's schedule;
- numbers only one process sees (webhook answers, CRM calls, 429s, rate-limit
  waits) are counted in memory by thin hooks (``event_received``, ``crm_call``,
  ``rate_limit_wait``) and added to ``metric_counts`` every few seconds.

Why the database and not prometheus-client's multiprocess mode: that mode shares
counters through files in one directory, so it cannot add up processes on two
machines (the Postgres layout), needs that directory set up before the library is
imported in every process, and loses what a process counted when its container
goes. A small upsert every few seconds per process costs nothing next to the
work counted. What a process counted in its last few seconds is lost if it is
killed; a graceful exit writes it.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from connector.store import Action, AuditEntry, Event, MetricCount, Schedule, Store, WorkerBeat
from connector.store.db import insert

log = logging.getLogger("offboard.metrics")
FLUSH_SECONDS = 10.0
OPEN_EVENT_STATES = ("pending", "running", "failed")
OPEN_ACTION_STATES = ("pending", "running", "waiting", "failed")
FINAL_ACTION_STATES = ("done", "failed", "skipped", "cancelled")

# name in metric_counts → (metric name without _total, help, label names)
COUNTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "events_received": (
        "offboard_events_received",
        "Inbound webhook requests by source and HTTP answer",
        ("source", "answer"),
    ),
    "crm_calls": ("offboard_crm_calls", "HTTP answers from the CRM by CRM and status", ("crm", "status")),
    "crm_rate_limited": ("offboard_crm_rate_limited", "429 answers from the CRM", ("crm",)),
    "rate_limit_waits": (
        "offboard_crm_rate_limit_waits",
        "Calls held back to stay within the CRM's rate budget",
        ("crm",),
    ),
    "rate_limit_wait_seconds": (
        "offboard_crm_rate_limit_wait_seconds",
        "Seconds spent waiting for the CRM's rate budget",
        ("crm",),
    ),
}


class _Tally:
    """This process's counts not yet in the database."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending: dict[tuple[str, str], float] = {}
        self.database_url: str | None = None
        self.flusher_pid: int | None = None
        self.failing = False  # the last write to the database failed

    def add(self, name: str, labels: dict[str, str], amount: float = 1.0) -> None:
        key = (name, _labels_text(tuple(sorted(labels.items()))))
        with self.lock:
            self.pending[key] = self.pending.get(key, 0.0) + amount
        self._ensure_flusher()

    def take(self) -> dict[tuple[str, str], float]:
        with self.lock:
            taken, self.pending = self.pending, {}
        return taken

    def give_back(self, counts: dict[tuple[str, str], float]) -> None:
        with self.lock:
            for key, amount in counts.items():
                self.pending[key] = self.pending.get(key, 0.0) + amount

    def _ensure_flusher(self) -> None:
        # Started lazily, in the process that counts: a thread started before a fork does not
        # run in the child, and web processes are forked after start-up.
        if self.database_url is None or self.flusher_pid == os.getpid():
            return
        with self.lock:
            if self.flusher_pid == os.getpid():
                return
            self.flusher_pid = os.getpid()
        try:
            store = Store.from_url(self.database_url)
        except Exception:  # counting must never break the call it counts
            log.warning("metrics: cannot open the database; counts stay in this process", exc_info=True)
            return
        threading.Thread(target=_flush_forever, args=(store,), name="offboard-metrics", daemon=True).start()
        atexit.register(flush, store)


@functools.lru_cache(maxsize=1024)
def _labels_text(labels: tuple[tuple[str, str], ...]) -> str:
    """The labels as stored (sorted JSON); counted on every webhook, so worked out once each."""
    return json.dumps(dict(labels), sort_keys=True)


_tally = _Tally()


def record_into(database_url: str) -> None:
    """Counts of this process (and of processes forked from it) go to this database in the background."""
    _tally.database_url = database_url


# --- the hooks ------------------------------------------------------------------


def event_received(source: str, status: int) -> None:
    """A webhook request was answered: ``source`` is the endpoint, ``status`` the HTTP answer."""
    _tally.add("events_received", {"source": source, "answer": str(status)})


def crm_call(crm: str, status: int | str) -> None:
    """The CRM answered an HTTP call (``status`` 0 or "error": no answer at all)."""
    _tally.add("crm_calls", {"crm": crm, "status": str(status)})
    if str(status) == "429":
        _tally.add("crm_rate_limited", {"crm": crm})


def rate_limit_wait(crm: str, seconds: float) -> None:
    """A call waited ``seconds`` for the CRM's rate budget before it was sent."""
    _tally.add("rate_limit_waits", {"crm": crm})
    _tally.add("rate_limit_wait_seconds", {"crm": crm}, seconds)


# --- into the database ----------------------------------------------------------


def flush(store: Store) -> None:
    """Add this process's pending counts to ``metric_counts`` (kept for later if the database fails)."""
    counts = _tally.take()
    if not counts:
        return
    try:
        with store.session() as session:
            for (name, labels), amount in sorted(counts.items()):
                statement = insert(session, MetricCount).values(name=name, labels=labels, value=amount)
                session.execute(
                    statement.on_conflict_do_update(
                        index_elements=["name", "labels"],
                        set_={"value": MetricCount.value + statement.excluded.value},
                    )
                )
    except Exception:
        _tally.give_back(counts)
        # Said once per outage, not every few seconds while the database is away.
        if not _tally.failing:
            log.warning("metrics: could not write counters; they are kept for the next try", exc_info=True)
        _tally.failing = True
    else:
        _tally.failing = False


def _flush_forever(store: Store) -> None:
    while True:
        threading.Event().wait(FLUSH_SECONDS)
        flush(store)


# --- read at scrape time --------------------------------------------------------


class StoreCollector(Collector):
    """Every metric, read from the shared database when Prometheus scrapes."""

    def __init__(self, store: Store, clock: Any, sweep_interval_seconds: int) -> None:
        self.store = store
        self.clock = clock
        self.sweep_interval = sweep_interval_seconds

    def collect(self) -> Iterator[Metric]:
        flush(self.store)  # this process's own counts are part of the answer
        now: datetime = self.clock()
        with self.store.read() as session:  # a scrape never takes SQLite's write lock
            yield from _counters(session)
            yield from _queues(session)
            yield from _outcomes(session)
            yield from _workers(session, now)
            yield from _sweep(session, self.sweep_interval)


def _counters(session: Any) -> Iterator[Metric]:
    rows: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in COUNTERS}
    for row in session.scalars(select(MetricCount)):
        if row.name in rows:
            rows[row.name].append((json.loads(row.labels), row.value))
    for name, (metric, text, label_names) in COUNTERS.items():
        family = CounterMetricFamily(metric, text, labels=label_names)
        for labels, value in rows[name]:
            family.add_metric([labels.get(n, "") for n in label_names], value)
        yield family


def _queues(session: Any) -> Iterator[Metric]:
    family = GaugeMetricFamily(
        "offboard_queue_depth",
        "Events and actions not yet settled, by state and kind",
        labels=("queue", "state", "kind"),
    )
    for queue, table, states in (
        ("events", Event, OPEN_EVENT_STATES),
        ("actions", Action, OPEN_ACTION_STATES),
    ):
        for state in states:  # every open state shows, at 0 when empty
            family.add_metric([queue, state, ""], 0.0)
        query = (
            select(table.state, table.kind, func.count())
            .where(table.state.in_(states))
            .group_by(table.state, table.kind)
        )
        for state, kind, count in session.execute(query):
            family.add_metric([queue, state, kind], float(count))
    yield family


def _outcomes(session: Any) -> Iterator[Metric]:
    outcomes = CounterMetricFamily(
        "offboard_action_outcomes",
        "Actions by final state (done, failed, skipped, cancelled) and kind",
        labels=("kind", "outcome"),
    )
    retries = CounterMetricFamily(
        "offboard_action_retries", "Attempts beyond the first, by kind", labels=("kind",)
    )
    query = select(
        Action.kind,
        Action.state,
        func.count(),
        func.sum(case((Action.attempts > 1, Action.attempts - 1), else_=0)),
    ).group_by(Action.kind, Action.state)
    retried: dict[str, float] = {}
    for kind, state, count, extra in session.execute(query):
        if state in FINAL_ACTION_STATES:
            outcomes.add_metric([kind, state], float(count))
        retried[kind] = retried.get(kind, 0.0) + float(extra or 0)
    for kind, value in sorted(retried.items()):
        retries.add_metric([kind], value)
    parkings = CounterMetricFamily(
        "offboard_action_parkings", "Actions parked as failed (retried or not since), by CRM", labels=("crm",)
    )
    parked = (
        select(AuditEntry.crm, func.count())
        .where(AuditEntry.verb == "action.failed")
        .group_by(AuditEntry.crm)
    )
    for crm, count in session.execute(parked):
        parkings.add_metric([crm or ""], float(count))
    yield from (outcomes, retries, parkings)


def _workers(session: Any, now: datetime) -> Iterator[Metric]:
    age = GaugeMetricFamily(
        "offboard_worker_heartbeat_age_seconds",
        "Seconds since each worker's last heartbeat",
        labels=("worker",),
    )
    beats = list(session.execute(select(WorkerBeat.id, WorkerBeat.beat_at)))
    for worker, beat_at in beats:
        age.add_metric([worker], max((now - beat_at).total_seconds(), 0.0))
    yield age
    yield GaugeMetricFamily("offboard_workers", "Workers that have a heartbeat row", value=float(len(beats)))


def _sweep(session: Any, interval: int) -> Iterator[Metric]:
    next_at = session.scalar(select(Schedule.next_at).where(Schedule.name == "sweep"))
    following = GaugeMetricFamily(
        "offboard_sweep_next_timestamp_seconds", "When the next contract-end sweep is due (Unix time)"
    )
    last = GaugeMetricFamily(
        "offboard_sweep_last_timestamp_seconds", "When the last contract-end sweep was taken (Unix time)"
    )
    if next_at is not None:
        following.add_metric([], next_at.timestamp())
        if interval > 0:
            last.add_metric([], next_at.timestamp() - interval)
    yield from (following, last)
