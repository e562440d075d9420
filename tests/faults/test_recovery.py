"""Recovery with the default settings: ``offboard serve`` (web and worker in one process) is
SIGKILLed four times while 40 signed HubSpot events arrive, and is restarted each time.

Every accepted deal has its tasks, none twice, within two minutes of the last restart. The
default lease is short and renewed while held, so what a killed process claimed is taken
over within seconds; an action taken over waits for HubSpot's search index to show what the
killed attempt wrote (the fake's search lags behind its writes) before writing the rest.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from adapters.hubspot.settings import HubSpotSettings
from connector.store import Store
from tests.support import harness
from tests.support.hubspot import FakeHubSpot

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

EVENTS = 40
KILLS = 4
MAX_BATCH = 3
SEND_SECONDS = 8.0  # the deliveries, and the kills among them, are spread over this long
PROMISE_SECONDS = 120.0  # everything written within this of the last restart
# HubSpot's index trails its writes: here by nearly the lag the settings allow for, so a
# taken-over action that searched at once would miss what the killed attempt wrote last.
SEARCH_LAG_SECONDS = 18.0


def test_four_kills_of_serve_with_default_settings_recover_within_two_minutes(
    db_url: str, store: Store, fake: FakeHubSpot, tmp_path: Path
) -> None:
    harness.only_on(store, "sqlite")  # the default database; the full size runs both
    seed = harness.seed(11)
    rng = random.Random(seed)
    deals = harness.portal_with_deals(fake, EVENTS)
    fake.latency = harness.LATENCY_SECONDS
    fake.search_lag = harness.timedelta(seconds=SEARCH_LAG_SECONDS)
    assert HubSpotSettings.model_fields["search_lag_seconds"].default > SEARCH_LAG_SECONDS
    env = harness.default_env(db_url, fake.url)  # type: ignore[attr-defined]
    serving = harness.Cluster(env, tmp_path, workers=0, with_worker=True)
    try:
        started = time.monotonic()
        serving.start()
        sender = harness.Sender(serving.webhook_url)
        chaos = harness.Chaos(serving, rng, server_kills=KILLS, worker_kills=0, window=SEND_SECONDS).start()
        try:
            sender.send_all(harness.batches_for(deals, rng, MAX_BATCH), SEND_SECONDS)
        finally:
            chaos.finish()
        assert chaos.total == KILLS
        left = PROMISE_SECONDS - (time.monotonic() - chaos.last_restart)
        quiet = harness.wait_until_quiet(store, events=EVENTS, runs=EVENTS, timeout=left, tail=serving.tail)
        recovered = time.monotonic() - chaos.last_restart
        outcome = harness.check_exactly_once(fake, store, deals, sender)
        codes = serving.stop()
    finally:
        serving.kill_all()
    assert set(codes.values()) == {0}, f"{codes}\n{serving.tail()}"
    assert recovered <= PROMISE_SECONDS
    harness.report(
        "recovery",
        database="sqlite" if store.is_sqlite else "postgres",
        seed=seed,
        events=EVENTS,
        kills=chaos.total,
        deliveries=sender.deliveries,
        resent=sender.resent,
        tasks=outcome.tasks,
        reclaimed_actions=outcome.reclaimed_actions,
        reclaimed_events=outcome.reclaimed_events,
        task_creates=fake.calls["POST /crm/v3/objects/tasks/batch/create"],
        quiet_s=round(quiet, 1),
        after_last_restart_s=round(recovered, 1),
        total_s=harness.since(started),
    )
