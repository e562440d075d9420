"""The budget every HubSpot call of this process shares.

HubSpot counts each app's requests to an account in a rolling 10-second window (100 to 250
depending on the plan; the account's other apps have windows of their own), every app's
requests to the account against one daily limit, and search requests at about 5 per second.
``Limits.acquire`` waits, in the calling thread, until a request fits both windows and any
hold a 429 or an exhausted ``X-HubSpot-RateLimit-Remaining`` imposed. Waiting here rather
than failing keeps every action alive: the worker never drops one because of a limit.

One ``Limits`` per account and process (``shared_limits``); with several processes, give
each its share of the app's 10-second window through HUBSPOT_RATE_LIMIT_PER_10S.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from connector import metrics

if TYPE_CHECKING:
    from adapters.hubspot.settings import HubSpotSettings

Seconds = Callable[[], float]
Sleep = Callable[[float], None]

# The shortest wait: a clock with coarse ticks must still move past the window's edge.
MIN_WAIT = 0.001


class RollingWindow:
    """At most ``budget`` calls in any ``seconds``-long window (half-open: (t - seconds, t])."""

    def __init__(self, budget: int, seconds: float) -> None:
        self.budget = budget
        self.seconds = seconds
        self._sent: deque[float] = deque()

    def wait(self, now: float) -> float:
        """Seconds until one more call fits; 0 when it fits now."""
        while self._sent and self._sent[0] <= now - self.seconds:
            self._sent.popleft()
        if len(self._sent) < self.budget:
            return 0.0
        return self._sent[len(self._sent) - self.budget] + self.seconds - now

    def record(self, now: float) -> None:
        self._sent.append(now)


class Limits:
    """The general and search windows, and holds imposed by HubSpot's answers."""

    def __init__(
        self,
        per_10s: int,
        search_per_s: int,
        *,
        now: Seconds = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        self.general = RollingWindow(per_10s, 10.0)
        self.search = RollingWindow(search_per_s, 1.0)
        self.now = now
        self._sleep = sleep
        self._held_until = 0.0
        self._daily_left: float | None = None
        self._lock = threading.Lock()

    def acquire(self, *, search: bool = False) -> None:
        """Wait until one more request may go, and count it."""
        waited = 0.0
        with self._lock:  # waiting threads queue here, in order
            while True:
                now = self.now()
                wait = max(
                    self._held_until - now,
                    self.general.wait(now),
                    self.search.wait(now) if search else 0.0,
                )
                if wait <= 0:
                    self.general.record(now)
                    if search:
                        self.search.record(now)
                    if waited:
                        metrics.rate_limit_wait("hubspot", waited)
                    return
                self._sleep(max(wait, MIN_WAIT))
                waited += max(wait, MIN_WAIT)

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (after a 429, or when HubSpot says none remain)."""
        self._held_until = max(self._held_until, self.now() + seconds)

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """Read X-HubSpot-RateLimit-*: this app's other processes may have spent the 10-second
        window, and the account's other apps the daily limit."""
        if not headers:
            return
        remaining = _number(headers.get("X-HubSpot-RateLimit-Remaining"))
        if remaining is not None and remaining <= 0:
            interval = _number(headers.get("X-HubSpot-RateLimit-Interval-Milliseconds")) or 10_000
            self.hold(interval / 1000)
        daily = _number(headers.get("X-HubSpot-RateLimit-Daily"))
        daily_left = _number(headers.get("X-HubSpot-RateLimit-Daily-Remaining"))
        if daily and daily_left is not None:
            self._daily_left = daily_left / daily

    def daily_left(self) -> float | None:
        """The share of the account's daily budget left, as of HubSpot's last answer."""
        return self._daily_left


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


_SHARED: dict[str, Limits] = {}
_SHARED_LOCK = threading.Lock()


def shared_limits(settings: HubSpotSettings) -> Limits:
    """The process's limits for this token's account (one per token, made on first use)."""
    token = settings.access_token.get_secret_value() if settings.access_token else ""
    key = hashlib.sha256(f"{settings.api_base_url}|{token}".encode()).hexdigest()
    with _SHARED_LOCK:
        if key not in _SHARED:
            _SHARED[key] = Limits(settings.rate_limit_per_10s, settings.search_rate_limit_per_s)
        return _SHARED[key]
