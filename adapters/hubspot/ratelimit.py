"""The budget every HubSpot call to one account shares, across all of Offboard's processes.

HubSpot counts each app's requests to an account in a rolling 10-second window (100 to 250
depending on the plan; the account's other apps have windows of their own), every app's
requests to the account against one daily limit, and search requests at about 5 per second.
``Limits.acquire`` waits, in the calling thread, until a request fits both windows and any
hold a 429 or an exhausted ``X-HubSpot-RateLimit-Remaining`` imposed. Waiting here rather
than failing keeps every action alive: the worker never drops one because of a limit.

The windows and the holds live in the database (``connector.budget.DatabaseLedger``), so the
web and worker processes on every machine keep to HUBSPOT_RATE_LIMIT_PER_10S together, with
no per-process split to configure. ``shared_limits`` gives each process one ``Limits`` per
account, so its threads queue for the budget in order. Without a store (a one-off command,
tests on a fake clock) the windows are the process's own.
"""

from __future__ import annotations

import hashlib
import threading
import time
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

from connector import metrics
from connector.budget import (
    DatabaseLedger,
    Ledger,
    MemoryLedger,
    Seconds,
    SharedWindow,
    Sleep,
    acquire_together,
)

if TYPE_CHECKING:
    from adapters.hubspot.settings import HubSpotSettings
    from connector.store import Store

# HubSpot stamps a request when it arrives; these cover the spread of network delays between
# two of ours, so its own count of a window never sees one more than ours did.
GENERAL_MARGIN_SECONDS = 0.25
SEARCH_MARGIN_SECONDS = 0.05


class Limits:
    """The general and search windows of one account, and holds imposed by HubSpot's answers."""

    def __init__(
        self,
        per_10s: int,
        search_per_s: int,
        *,
        ledger: Ledger | None = None,
        key: str = "hubspot",
        now: Seconds = time.monotonic,
        sleep: Sleep = time.sleep,
    ) -> None:
        ledger = ledger if ledger is not None else MemoryLedger(now)
        self.general = SharedWindow(
            ledger, f"{key}:general", per_10s, 10.0, margin=GENERAL_MARGIN_SECONDS, sleep=sleep
        )
        self.search = SharedWindow(
            ledger, f"{key}:search", search_per_s, 1.0, margin=SEARCH_MARGIN_SECONDS, sleep=sleep
        )
        self.now = now  # this process's clock, for its own timing (not the windows')
        self._daily_left: float | None = None
        self._lock = threading.Lock()

    def acquire(self, *, search: bool = False) -> None:
        """Wait until one more request may go, and count it."""
        with self._lock:  # this process's waiting threads queue here, in order
            waited = acquire_together([self.general, self.search] if search else [self.general])
        if waited:
            metrics.rate_limit_wait("hubspot", waited)

    def hold(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (after a 429, or when HubSpot says none remain): every
        request takes the general window, so holding it holds them all, in every process."""
        self.general.hold(seconds)

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """Read X-HubSpot-RateLimit-*: another app of ours (or another deployment) may have spent
        the 10-second window, and the account's other apps the daily limit."""
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
        """The share of the account's daily budget left, as of HubSpot's last answer to this process."""
        return self._daily_left


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def account_key(settings: HubSpotSettings, account: str | None = None) -> str:
    """The windows' key for an account: the portal id when known, else the token's (hashed) —
    the same in every process of a deployment, and never the token itself."""
    if account is None:
        account = settings.access_token.get_secret_value() if settings.access_token else ""
    digest = hashlib.sha256(f"{settings.api_base_url}|{account}".encode()).hexdigest()
    return f"hubspot:{digest[:32]}"


_SHARED: weakref.WeakKeyDictionary[Store, dict[str, Limits]] = weakref.WeakKeyDictionary()
_LOCAL: dict[str, Limits] = {}
_SHARED_LOCK = threading.Lock()


def shared_limits(
    settings: HubSpotSettings, store: Store | None = None, *, account: str | None = None
) -> Limits:
    """This process's limits for an account (made on first use): counted in ``store`` with every
    other process, or in this process alone without one."""
    key = account_key(settings, account)
    with _SHARED_LOCK:
        made = _SHARED.setdefault(store, {}) if store is not None else _LOCAL
        if key not in made:
            ledger = DatabaseLedger(store) if store is not None else None
            made[key] = Limits(
                settings.rate_limit_per_10s, settings.search_rate_limit_per_s, ledger=ledger, key=key
            )
        return made[key]
