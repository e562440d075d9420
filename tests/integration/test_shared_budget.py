"""Shared call budgets in the database, on SQLite and Postgres: threads and processes together
never put more than the budget in any window, a full window waits, a hold stops everyone.

Every window is checked from the stamps the ledger itself gave the calls it let through (the
database's clock on Postgres), not from the callers' own clocks.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import connector.budget
from connector.budget import DatabaseLedger, SharedWindow, Window, acquire_together
from connector.store import Store
from connector.store.tables import RateCall


class RecordingLedger(DatabaseLedger):
    """The database's ledger, also keeping the stamp of every call it let through."""

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.stamps: list[datetime] = []
        self._stamps_lock = threading.Lock()

    def _record(self, session: Session, windows: Sequence[Window], now: datetime) -> None:
        super()._record(session, windows, now)
        with self._stamps_lock:
            self.stamps.append(now)


def most_in_any_window(stamps: list[datetime], seconds: float) -> int:
    """The most stamps in any half-open window (t - seconds, t]."""
    times = sorted(stamps)
    span, most, start = timedelta(seconds=seconds), 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - span:
            start += 1
        most = max(most, end - start + 1)
    return most


def calls_in(store: Store, key: str) -> list[datetime]:
    with store.read() as session:
        return list(session.scalars(select(RateCall.at).where(RateCall.key == key).order_by(RateCall.at)))


def test_a_full_window_waits_for_its_oldest_call_to_leave(store):
    ledger = RecordingLedger(store)
    window = SharedWindow(ledger, "crm:a:general", 3, 1.0)
    started = time.monotonic()
    assert [window.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert time.monotonic() - started < 0.9  # three fit at once
    waited = window.acquire()
    assert time.monotonic() - started >= 0.95 and waited > 0.5
    stamps = ledger.stamps
    assert len(stamps) == 4 and stamps[3] - stamps[0] >= timedelta(seconds=1.0)
    in_window = [stamp for stamp in stamps if stamp > stamps[3] - timedelta(seconds=1.0)]
    assert calls_in(store, "crm:a:general") == in_window  # those that left it are pruned
    assert stamps[0] not in in_window


def test_threads_together_never_exceed_the_budget_in_any_window(store):
    ledger = RecordingLedger(store)
    budget, seconds, calls, threads = 4, 0.5, 20, 8
    window = SharedWindow(ledger, "crm:b:general", budget, seconds)
    left = iter(range(calls))
    left_lock = threading.Lock()

    def work() -> None:
        while True:
            with left_lock:
                if next(left, None) is None:
                    return
            window.acquire()

    started = time.monotonic()
    workers = [threading.Thread(target=work) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=30)
    assert len(ledger.stamps) == calls
    assert most_in_any_window(ledger.stamps, seconds) == budget  # full, never over
    # 20 calls at 4 per half second: the last four go once the first sixteen's windows are past.
    assert max(ledger.stamps) - min(ledger.stamps) >= timedelta(seconds=seconds * (calls // budget - 1))
    assert time.monotonic() - started >= seconds * (calls // budget - 1)


def _spend(url: str, key: str, calls: int, budget: int, seconds: float, out: multiprocessing.Queue) -> None:
    """One process's share of the work: ``calls`` calls through the shared window."""
    store = Store.from_url(url)
    ledger = RecordingLedger(store)
    window = SharedWindow(ledger, key, budget, seconds)
    for _ in range(calls):
        window.acquire()
    store.dispose()
    out.put([stamp.isoformat() for stamp in ledger.stamps])


def test_processes_on_one_database_share_the_window(db_url, store):
    budget, seconds, calls = 4, 0.5, 8
    spawn = multiprocessing.get_context("spawn")  # engines must not cross a fork
    out = spawn.Queue()
    processes = [
        spawn.Process(target=_spend, args=(db_url, "crm:c:general", calls, budget, seconds, out))
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    results = [out.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=30)
        assert process.exitcode == 0
    stamps = [datetime.fromisoformat(stamp) for result in results for stamp in result]
    assert len(stamps) == 2 * calls
    # Each alone would have sent its eight at four per window; together they kept to four.
    assert most_in_any_window(stamps, seconds) == budget
    assert max(stamps) - min(stamps) >= timedelta(seconds=seconds * (2 * calls // budget - 1))


def test_a_hold_stops_every_process_until_it_ends(store):
    one = SharedWindow(DatabaseLedger(store), "crm:d:general", 100, 10.0)
    other = SharedWindow(DatabaseLedger(store), "crm:d:general", 100, 10.0)  # as another process
    one.hold(0.6)
    started = time.monotonic()
    other.acquire()
    assert time.monotonic() - started >= 0.5
    other.hold(0.4)
    one.hold(0.1)  # a shorter hold never cuts a longer one short
    started = time.monotonic()
    one.acquire()
    assert time.monotonic() - started >= 0.3


def test_windows_acquired_together_count_one_call_at_one_moment(store):
    ledger = DatabaseLedger(store)
    general = SharedWindow(ledger, "crm:e:general", 10, 10.0)
    search = SharedWindow(ledger, "crm:e:search", 1, 0.5)
    acquire_together([general, search])
    started = time.monotonic()
    acquire_together([general, search])  # the search window is full: both wait, neither counts early
    assert time.monotonic() - started >= 0.45
    general_calls, search_calls = calls_in(store, "crm:e:general"), calls_in(store, "crm:e:search")
    assert len(general_calls) == 2 and general_calls[1] - general_calls[0] >= timedelta(seconds=0.5)
    assert search_calls == general_calls[1:]  # the first search has left its window (pruned)


def test_calls_that_left_their_window_are_pruned(store):
    window = SharedWindow(DatabaseLedger(store), "crm:f:general", 10, 0.2)
    for _ in range(3):
        window.acquire()
    time.sleep(0.3)
    window.acquire()
    assert len(calls_in(store, "crm:f:general")) == 1


def test_on_postgres_the_databases_clock_counts_not_the_processs(store, monkeypatch):
    if store.is_sqlite:
        pytest.skip("SQLite serves one machine: its processes share one clock")
    ledger = DatabaseLedger(store)
    window = Window("crm:g:general", 2, 10.0)
    assert ledger.take([window]) == 0.0
    assert ledger.take([window]) == 0.0

    class AnHourAhead(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def, override]
            return datetime.now(tz or UTC) + timedelta(hours=1)

    monkeypatch.setattr(connector.budget, "datetime", AnHourAhead)  # this machine's clock is off
    assert ledger.take([window]) > 9.0  # the window is still full by the database's clock
