"""SIGKILL the server and the workers at random moments while HubSpot delivers a few hundred
events: afterwards the fake HubSpot holds every run's tasks exactly once.

Every deal gets one ``closedwon`` event; the batches are delivered until they get a 2xx
(re-sent when the server died mid-request, never re-sent after a 2xx). Meanwhile a seeded
schedule SIGKILLs the web process or a worker process and restarts it. Then the test waits
for the processes to finish everything and counts the tasks per deal and per marker.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.support import harness

pytestmark = [pytest.mark.faults, pytest.mark.e2e]


def test_kills_lose_nothing_and_write_nothing_twice(db_url, store, fake, cluster):
    scale = harness.size()
    seed = harness.seed(7)
    rng = random.Random(seed)
    workers = 1 if store.is_sqlite else 2
    deals = harness.portal_with_deals(fake, scale.events)
    fake.latency = harness.LATENCY_SECONDS  # work takes time, so kills land in the middle of it
    fake.search_lag = harness.SEARCH_LAG  # what a killed worker wrote last is not found at once
    batches = harness.batches_for(deals, rng, scale.max_batch)

    started = time.monotonic()
    running = cluster(workers).start()
    sender = harness.Sender(running.webhook_url)
    chaos = harness.Chaos(
        running,
        rng,
        server_kills=scale.server_kills,
        worker_kills=scale.worker_kills,
        window=scale.send_seconds + scale.chaos_tail,
    ).start()
    try:
        sender.send_all(batches, scale.send_seconds)
        sent_at = harness.since(started)
    finally:
        chaos.finish()  # the last kills land while the backlog drains
    quiet_after = harness.wait_until_quiet(
        store, events=len(deals), runs=len(deals), timeout=scale.quiet_timeout, tail=running.tail
    )
    outcome = harness.check_exactly_once(fake, store, deals, sender)
    codes = running.stop()
    assert set(codes.values()) == {0}, f"{codes}\n{running.tail()}"

    harness.report(
        "kills",
        database="sqlite" if store.is_sqlite else "postgres",
        scale=scale.name,
        seed=seed,
        events=len(deals),
        batches=len(batches),
        deliveries=sender.deliveries,
        resent=sender.resent,
        delivery_failures=dict(sender.failures),
        workers=workers,
        kills=dict(chaos.kills),
        kills_total=chaos.total,
        tasks=outcome.tasks,
        lost=len(outcome.missing_markers),
        duplicated=len(outcome.duplicated_markers),
        reclaimed_actions=outcome.reclaimed_actions,
        reclaimed_events=outcome.reclaimed_events,
        task_searches=fake.calls["POST /crm/v3/objects/tasks/search"],
        task_creates=fake.calls["POST /crm/v3/objects/tasks/batch/create"],
        sent_s=sent_at,
        quiet_s=round(quiet_after, 1),
        total_s=harness.since(started),
    )
    assert chaos.total == scale.server_kills + scale.worker_kills
