"""The process's HubSpot budget: a rolling window, holds after 429s, and HubSpot's headers."""

from __future__ import annotations

import threading

from adapters.hubspot.ratelimit import Limits, RollingWindow, shared_limits
from connector.settings import load_settings


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
    window = RollingWindow(2, 10.0)
    window.record(0.0)
    window.record(4.0)
    assert window.wait(5.0) == 5.0
    assert window.wait(10.0) == 0.0  # (0, 10]: the call at 0 has left


def test_acquire_waits_rather_than_exceeding_the_budget():
    budget, clock = limits(per_10s=3)
    sent = []
    for _ in range(7):
        budget.acquire()
        sent.append(clock.now)
    assert sent == [1000.0, 1000.0, 1000.0, 1010.0, 1010.0, 1010.0, 1020.0]


def test_search_calls_also_keep_to_their_per_second_limit():
    budget, clock = limits(per_10s=100, search_per_s=2)
    for _ in range(5):
        budget.acquire(search=True)
    assert clock.now == 1002.0
    budget.acquire()  # other calls do not wait for the search window
    assert clock.now == 1002.0


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
    assert clock.now == 1020.0  # 5 + 5 + 2


def test_one_limits_per_account_and_process():
    a = load_settings(HUBSPOT_ACCESS_TOKEN="pat-a", HUBSPOT_RATE_LIMIT_PER_10S=50).crm("hubspot")
    b = load_settings(HUBSPOT_ACCESS_TOKEN="pat-b").crm("hubspot")
    assert shared_limits(a) is shared_limits(a)
    assert shared_limits(a) is not shared_limits(b)
    assert shared_limits(a).general.budget == 50
