"""Call budgets shared by every process that talks to one CRM account.

A CRM counts an account's calls in a rolling window (HubSpot: 100 to 250 per 10 seconds per
app and account, about 5 searches a second) however many of our processes make them. So the
budget is kept where every process sees it: ``SharedWindow(ledger, key, budget, seconds)``
lets at most ``budget`` calls through in any ``seconds``-long window, all processes together,
and ``acquire()`` waits in the calling thread until one more call fits. Waiting, not failing:
a limit never costs an action an attempt.

Two ledgers keep the windows:

- ``DatabaseLedger(store)``: a sliding log per key in the database (``rate_calls``), counted
  under a lock on the key's row (``rate_windows``, ``SELECT … FOR UPDATE``). On Postgres the
  calls are stamped by the database's clock (``clock_timestamp()``), so workers on machines
  whose clocks disagree still count the same window. SQLite shares the same tables: its write
  transactions (``BEGIN IMMEDIATE``) already serialise every process on the file, and those
  processes share one machine and so one clock, which stamps the calls. One write per call
  is cheap next to a CRM round trip, and ``serve --workers N`` then keeps to one budget too.
- ``MemoryLedger``: one process's windows, on an injectable clock (tests, one-off commands).

A sliding log, not a token bucket: a bucket that refills continuously lets a full bucket go
at the end of one window and a refill at the start of the next, up to twice the budget
within one window as the CRM counts it.

The CRM stamps a call when it arrives, after a network delay that varies from call to call;
a window's ``margin`` counts calls over ``seconds + margin`` so that a call delayed by up to
``margin`` more than an earlier one still lands in a window the CRM sees within budget.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy import insert as plain_insert

from connector.store.db import insert
from connector.store.tables import RateCall, RateWindow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from connector.store import Store

Seconds = Callable[[], float]
Sleep = Callable[[float], None]

# The shortest wait: a clock with coarse ticks must still move past the window's edge.
MIN_WAIT = 0.001


@dataclass(frozen=True)
class Window:
    """At most ``budget`` calls in any ``seconds + margin`` (half-open: (t - span, t]) for ``key``."""

    key: str
    budget: int
    seconds: float
    margin: float = 0.0

    @property
    def span(self) -> float:
        return self.seconds + self.margin


class Ledger(Protocol):
    """Where windows are counted: one process's memory, or the database every process shares."""

    def take(self, windows: Sequence[Window]) -> float:
        """Count one call in every window and return 0.0 if it fits them all now and no hold
        stands; otherwise count nothing and return the seconds to wait before asking again."""
        ...

    def hold(self, key: str, seconds: float) -> None:
        """Let no call through ``key``'s window for ``seconds`` from now (the CRM said stop)."""
        ...


class SharedWindow:
    """One budget (``budget`` calls in any ``seconds``) for ``key``, counted in ``ledger``."""

    def __init__(
        self,
        ledger: Ledger,
        key: str,
        budget: int,
        seconds: float,
        *,
        margin: float = 0.0,
        sleep: Sleep = time.sleep,
    ) -> None:
        if budget < 1 or seconds <= 0 or margin < 0:
            raise ValueError(f"a window needs a budget of at least 1 and a positive span: {key}")
        self.ledger = ledger
        self.window = Window(key, budget, seconds, margin)
        self.sleep = sleep

    @property
    def key(self) -> str:
        return self.window.key

    @property
    def budget(self) -> int:
        return self.window.budget

    def acquire(self) -> float:
        """Wait until one more call fits, and count it; the seconds waited."""
        return acquire_together([self])

    def hold(self, seconds: float) -> None:
        self.ledger.hold(self.key, seconds)


def acquire_together(windows: Sequence[SharedWindow]) -> float:
    """Wait until one more call fits every window (all in one ledger), count it in each at the
    same moment, and return the seconds waited.

    Together, not one after the other: a call counted in a first window while it waits for a
    second would be stamped earlier than it is sent, and the first window would free its slot
    too soon.
    """
    ledger, sleep = windows[0].ledger, windows[0].sleep
    if any(w.ledger is not ledger for w in windows):
        raise ValueError("windows acquired together must share one ledger")
    shapes = [w.window for w in windows]
    waited = 0.0
    while True:
        wait = ledger.take(shapes)
        if wait <= 0:
            return waited
        wait = max(wait, MIN_WAIT)
        sleep(wait)
        waited += wait


class MemoryLedger:
    """Windows of this process only, on ``now`` (monotonic seconds by default)."""

    def __init__(self, now: Seconds = time.monotonic) -> None:
        self.now = now
        self._sent: dict[str, deque[float]] = {}
        self._held: dict[str, float] = {}
        self._lock = threading.Lock()

    def take(self, windows: Sequence[Window]) -> float:
        with self._lock:
            now = self.now()
            wait = max(self._wait(window, now) for window in windows)
            wait = max([wait] + [self._held.get(w.key, now) - now for w in windows])
            if wait > 0:
                return wait
            for window in windows:
                self._sent[window.key].append(now)
            return 0.0

    def hold(self, key: str, seconds: float) -> None:
        with self._lock:
            self._held[key] = max(self._held.get(key, 0.0), self.now() + seconds)

    def _wait(self, window: Window, now: float) -> float:
        sent = self._sent.setdefault(window.key, deque())
        while sent and sent[0] <= now - window.span:
            sent.popleft()
        if len(sent) < window.budget:
            return 0.0
        return sent[len(sent) - window.budget] + window.span - now


class DatabaseLedger:
    """Windows every process shares, in the store's ``rate_windows`` and ``rate_calls``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def take(self, windows: Sequence[Window]) -> float:
        with self.store.session() as session:
            held_until = self._lock(session, sorted({w.key for w in windows}))
            now = self._now(session)  # read once the locks are ours: the wait for them is past
            waits = [self._wait(session, window, now) for window in windows]
            if held_until is not None:
                waits.append((held_until - now).total_seconds())
            wait = max(waits)
            if wait > 0:
                return wait
            self._record(session, windows, now)
            return 0.0

    def hold(self, key: str, seconds: float) -> None:
        with self.store.session() as session:
            self._lock(session, [key])
            until = self._now(session) + timedelta(seconds=seconds)
            session.execute(
                update(RateWindow)
                .where(
                    RateWindow.key == key,
                    or_(RateWindow.held_until.is_(None), RateWindow.held_until < until),
                )
                .values(held_until=until)
            )

    @staticmethod
    def _lock(session: Session, keys: list[str]) -> datetime | None:
        """Lock the keys' rows, in key order (no two processes wait on each other); the latest hold."""
        session.execute(
            insert(session, RateWindow).values([{"key": k} for k in keys]).on_conflict_do_nothing()
        )
        held = [
            session.scalar(select(RateWindow.held_until).where(RateWindow.key == key).with_for_update())
            for key in keys
        ]
        return max((h for h in held if h is not None), default=None)

    @staticmethod
    def _now(session: Session) -> datetime:
        """The database's clock on Postgres (one clock for every machine); this machine's on SQLite."""
        if session.get_bind().dialect.name == "postgresql":
            stamp: datetime = session.execute(select(func.clock_timestamp())).scalar_one()
            return stamp.astimezone(UTC)
        return datetime.now(UTC)

    @staticmethod
    def _wait(session: Session, window: Window, now: datetime) -> float:
        since = now - timedelta(seconds=window.span)
        session.execute(delete(RateCall).where(RateCall.key == window.key, RateCall.at <= since))
        # The call that must leave the window before another fits: the budget-th newest.
        leaving = session.scalar(
            select(RateCall.at)
            .where(RateCall.key == window.key)
            .order_by(RateCall.at.desc())
            .offset(window.budget - 1)
            .limit(1)
        )
        return 0.0 if leaving is None else (leaving - since).total_seconds()

    @staticmethod
    def _record(session: Session, windows: Sequence[Window], now: datetime) -> None:
        session.execute(plain_insert(RateCall), [{"key": w.key, "at": now} for w in windows])
