"""Two worker processes on Postgres never exceed a shared budget of N calls in any 10 s window,
as HubSpot itself counts them (the fake's own log, stamped when each request arrives).

Each worker alone would send N calls a window: both are kept busy by a backlog far larger
than the budget, so without one budget between them HubSpot would see up to 2N. The fake's
own limit is far above N, so it never answers 429 and never slows anyone down: only
Offboard's shared window keeps the count at N.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support import harness
from tests.support.hubspot import stage_event

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]

BUDGET = 20  # HUBSPOT_RATE_LIMIT_PER_10S: the whole deployment's, both workers together
WINDOW = 10.0  # HubSpot's rolling window, in seconds
DEALS = 200  # a backlog neither worker gets through in the test's time, however few calls a deal takes
DELIVERY = 50  # events per webhook POST
TIMEOUT = 45.0  # for the fake to see the calls of three windows


@pytest.fixture
def db_url(postgres_url: str) -> str:
    """Postgres only: the processes share the budget through it (SQLite serves one machine)."""
    return postgres_url


def test_two_workers_never_exceed_the_shared_budget_in_any_window(store, fake, cluster):
    deals = harness.portal_with_deals(fake, DEALS)
    fake.latency = harness.LATENCY_SECONDS
    running = cluster(2, HUBSPOT_RATE_LIMIT_PER_10S=str(BUDGET)).start()
    try:
        sender = harness.Sender(running.webhook_url)
        events = [stage_event(deal, "closedwon", event_id=n + 1) for n, deal in enumerate(deals)]
        for start in range(0, len(events), DELIVERY):
            sender.deliver(events[start : start + DELIVERY])
        # Three windows' worth: the budget binds at the start and across two window edges.
        deadline = time.monotonic() + TIMEOUT
        while len(fake.log) <= 2 * BUDGET:
            assert time.monotonic() < deadline, f"only {len(fake.log)} calls\n{running.tail()}"
            time.sleep(0.2)
    finally:
        running.kill_all()  # nothing more reaches the fake: its log is the whole story

    statuses = [status for _at, _route, status in fake.log]
    harness.report(
        "shared budget",
        budget=BUDGET,
        workers=len(running.workers),
        calls=len(fake.log),
        most_in_10s=fake.max_in_window(WINDOW),
        natural_429s=fake.natural_429s,
        span_s=round((fake.log[-1][0] - fake.log[0][0]).total_seconds(), 1),
    )
    assert fake.natural_429s == 0 and 429 not in statuses, statuses
    assert fake.max_in_window(WINDOW) == BUDGET, running.tail()  # reached, never passed
    # Both workers spent from the one budget: each started runs, reading its deals from HubSpot.
    for worker in running.workers:
        assert "started: deal" in _log(worker.log), running.tail()


def _log(path: Path) -> str:
    return path.read_text(errors="replace")
