"""What this process knows of each idempotency key's attempts: when to look before writing.

Salesforce's reads are consistent, so what an earlier attempt wrote can always be found by
its marker; but looking costs a query per action, and almost every write is a first one.
So the adapter looks only when an attempt's outcome is unknown: the core says so
(``Write.unsure_since``, or ``outcome_unknown`` for a single write: an earlier attempt
timed out, lost its reply, or its worker died), or an attempt in this process met an
``OutcomeUnknown`` or was left half written. A key this process has written is
remembered (the last few thousand), so writing it again returns what was written.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from datetime import datetime
from typing import Any

REMEMBERED = 10_000  # written keys kept, oldest forgotten first


class Attempts:
    """Shared by the threads of one process that write through the same adapter."""

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._unsure: set[str] = set()
        self._written: OrderedDict[str, Any] = OrderedDict()
        self._remembered = remembered
        self._lock = threading.Lock()

    def outcome_unknown(self, key: str, since: datetime | None = None) -> None:
        """An attempt of ``key`` may have written (until ``since``): the next one looks first.

        Salesforce's reads show a write at once, so when it could last have written does not matter.
        """
        with self._lock:
            self._unsure.add(key)

    def unsure(self, key: str, since: datetime | None = None) -> bool:
        """Whether the next write of ``key`` must look for what an earlier attempt wrote."""
        with self._lock:
            return since is not None or key in self._unsure

    def wrote(self, key: str, result: Any) -> None:
        """``key`` is written, with this result: nothing is unsure about it any more."""
        with self._lock:
            self._unsure.discard(key)
            self._written[key] = result
            self._written.move_to_end(key)
            while len(self._written) > self._remembered:
                self._written.popitem(last=False)

    def written(self, key: str) -> Any | None:
        """What this process wrote for ``key``, or None."""
        with self._lock:
            return self._written.get(key)
