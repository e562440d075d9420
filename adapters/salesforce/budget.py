"""The org's daily API allocation, as every response's ``Sforce-Limit-Info`` header reports it.

Other integrations draw on the same allocation, so past a configured share
Offboard holds back non-urgent work (the worker asks ``deferral_reason``).

The figures are the org's, not this process's: every answer reports the whole org's usage,
so each of Offboard's processes reads what all of them (and every other integration) have
spent, and nothing needs counting in the database. A process that has not called for a
while holds a stale reading: it never holds work back on one (a stale reading past the
share is refreshed first), and one under the share is corrected by its next call's answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from simple_salesforce import Salesforce
from simple_salesforce.util import Usage

# A reading older than this is refreshed before it is used to hold work back:
# while work waits no other call refreshes it, and it would never clear.
STALE_AFTER_SECONDS = 300.0


@dataclass
class ApiBudget:
    share: float
    clock: Callable[[], float] = time.monotonic
    used: int | None = None
    total: int | None = None
    seen_at: float | None = field(default=None, repr=False)
    # Answers of calls in flight together arrive on several threads: each reading is kept whole.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def observe(self, header: str | None) -> None:
        """Record a ``Sforce-Limit-Info`` value (``api-usage=18/5000…``), parsed as simple-salesforce does."""
        if not header:
            return
        usage = Salesforce.parse_api_usage(header).get("api-usage")
        if isinstance(usage, Usage) and usage.total > 0:
            with self._lock:
                self.used, self.total, self.seen_at = usage.used, usage.total, self.clock()

    @property
    def fraction(self) -> float | None:
        with self._lock:
            used, total = self.used, self.total
        if used is None or not total:
            return None
        return used / total

    @property
    def stale(self) -> bool:
        return self.seen_at is None or self.clock() - self.seen_at > STALE_AFTER_SECONDS

    def over(self) -> bool:
        fraction = self.fraction
        return fraction is not None and fraction > self.share

    def reason(self) -> str | None:
        """A sentence for ``offboard runs`` and the logs when usage is past the share, else None."""
        fraction = self.fraction
        if fraction is None or fraction <= self.share:
            return None
        return (
            f"Salesforce daily API usage {_percent(fraction)} ({self.used}/{self.total}) is past the "
            f"{_percent(self.share)} budget; non-urgent work waits"
        )


def _percent(fraction: float) -> str:
    return f"{fraction * 100:.2f}".rstrip("0").rstrip(".") + "%"
