"""The account's HubSpot budget: a rolling window, holds after 429s, and HubSpot's headers.

These run on one process's windows (a fake clock); tests/integration/test_shared_budget.py
runs the same windows in the database, shared by threads and processes.
"""

from __future__ import annotations

import threading

import pytest

from adapters.hubspot.ratelimit import (
    GENERAL_MARGIN_SECONDS,
    SEARCH_MARGIN_SECONDS,
    Limits,
    account_key,
    shared_limits,
)
from connector.budget import DatabaseLedger, MemoryLedger, Window
from connector.settings import load_settings
from connector.store import Store

# A full 10-second window lets the next call go once its oldest call is this far behind.
SPAN = 10.0 + GENERAL_MARGIN_SECONDS


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def limits(per_10s: int = 3, search_per_s: int = 2) -> tuple[Limits, FakeTime]:
    clock = FakeTime()
    return Limits(per_10s, search_per_s, now=clock, sleep=clock.sleep), clock


def test_a_rolling_window_lets_a_call_go_once_the_oldest_leaves_it():
    clock = FakeTime()
    ledger, window = MemoryLedger(clock), Window("hubspot:a:general", 2, 10.0)
    for at in (0.0, 4.0):
        clock.now = at
        assert ledger.take([window]) == 0.0
    clock.now = 5.0
    assert ledger.take([window]) == 5.0  # nothing counted: it did not fit
    clock.now = 10.0
    assert ledger.take([window]) == 0.0  # (0, 10]: the call at 0 has left
    assert ledger.take([window]) == 4.0  # the calls at 4 and 10 fill it again


def test_acquire_waits_rather_than_exceeding_the_budget():
    budget, clock = limits(per_10s=3)
    sent = []
    for _ in range(7):
        budget.acquire()
        sent.append(clock.now)
    assert sent == [1000.0] * 3 + [1000.0 + SPAN] * 3 + [1000.0 + 2 * SPAN]


def test_search_calls_also_keep_to_their_per_second_limit():
    budget, clock = limits(per_10s=100, search_per_s=2)
    for _ in range(5):
        budget.acquire(search=True)
    assert clock.now == pytest.approx(1000.0 + 2 * (1.0 + SEARCH_MARGIN_SECONDS))
    waited = clock.now
    budget.acquire()  # other calls do not wait for the search window
    assert clock.now == waited


def test_a_hold_stops_every_call_until_it_ends():
    budget, clock = limits()
    budget.hold(10)
    budget.acquire()
    assert clock.now == 1010.0


def test_headers_saying_nothing_remains_hold_for_one_interval():
    budget, clock = limits(per_10s=100)
    budget.observe(
        {"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    )
    budget.acquire()
    assert clock.now == 1010.0
    budget.observe({"X-HubSpot-RateLimit-Daily": "1000", "X-HubSpot-RateLimit-Daily-Remaining": "50"})
    assert budget.daily_left() == 0.05


def test_threads_share_one_budget():
    budget, clock = limits(per_10s=5)
    threads = [threading.Thread(target=budget.acquire) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert clock.now == 1000.0 + 2 * SPAN  # 5 + 5 + 2


def test_one_limits_per_account_and_process():
    a = load_settings(HUBSPOT_ACCESS_TOKEN="pat-a", HUBSPOT_RATE_LIMIT_PER_10S=50).crm("hubspot")
    b = load_settings(HUBSPOT_ACCESS_TOKEN="pat-b").crm("hubspot")
    assert shared_limits(a) is shared_limits(a)
    assert shared_limits(a) is not shared_limits(b)
    assert shared_limits(a).general.budget == 50


def test_with_a_store_the_windows_are_counted_in_it_per_store(tmp_path):
    portal = load_settings(HUBSPOT_ACCESS_TOKEN="pat-a").crm("hubspot")
    one, other = (Store.from_url(f"sqlite:///{tmp_path / name}.db") for name in ("one", "other"))
    limits = shared_limits(portal, one)
    assert isinstance(limits.general.ledger, DatabaseLedger) and limits.general.ledger.store is one
    assert limits.search.ledger is limits.general.ledger
    assert shared_limits(portal, one) is limits
    assert shared_limits(portal, other) is not limits
    assert shared_limits(portal) is not limits  # no store: this process's own windows


def test_an_account_key_names_the_portal_or_the_tokens_hash_never_the_token():
    portal = load_settings(HUBSPOT_ACCESS_TOKEN="pat-na1-secret-token").crm("hubspot")
    by_token = account_key(portal)
    assert by_token.startswith("hubspot:") and "secret" not in by_token
    assert account_key(portal) == by_token  # every process of the deployment agrees
    assert account_key(portal, "62515") != by_token
    other = load_settings(HUBSPOT_ACCESS_TOKEN="pat-na1-other-token").crm("hubspot")
    assert account_key(other) != by_token
