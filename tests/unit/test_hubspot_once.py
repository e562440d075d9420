"""``CreateOnce`` is shared by the worker's groups, each written in a thread of its own."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime

from adapters.hubspot.once import CreateOnce

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def test_keys_told_unsure_from_many_threads_at_once_are_all_kept() -> None:
    """Each thread tells of its own keys while the others prune and add theirs: none is dropped,
    so none is written again without the search for what its lost attempt created."""
    once = CreateOnce(api=None, clock=lambda: NOW)  # type: ignore[arg-type]  # no call is made
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as the interpreter can
    try:
        threads = [
            threading.Thread(target=lambda n=n: [once.outcome_unknown(f"{n}-{k}", NOW) for k in range(1500)])
            for n in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(before)
    missing = [f"{n}-{k}" for n in range(8) for k in range(1500) if not once.unsure(f"{n}-{k}")]
    assert missing == []
