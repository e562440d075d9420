"""A HubSpot slow enough that a worker's claimed batch of actions takes longer than the lease.

Two workers share the outbox. The deals are read quickly, so the runs' actions pile up and
one worker claims a batch of them; the call that writes their tasks then takes longer than
the lease, and search shows a record a second after it was written, as HubSpot's index does.
If a lease ran out while its worker was alive and busy, the other worker would take the same
actions over, as an unknown outcome, and search for what the first one wrote: searches, and
the same tasks twice once the index lags. A live worker keeps what it holds (it renews its
leases, and checks it still holds an action before running it); only a dead one's come back.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from tests.support import harness
from tests.support.hubspot import stage_event

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

WRITES = {
    "POST /crm/v3/objects/tasks/batch/create": harness.LEASE_SECONDS + 2.0,  # outlasts the lease
    "POST /crm/v3/objects/deals/batch/update": 0.4,
}


def test_a_batch_that_outlasts_its_lease_is_not_taken_from_a_live_worker(db_url, store, fake, cluster):
    harness.only_on(store, "postgres")  # several worker processes: Postgres deployments
    deals = harness.portal_with_deals(fake, 10)
    fake.slow_routes = dict(WRITES)
    fake.search_lag = timedelta(seconds=1)
    started = time.monotonic()
    running = cluster(2).start()
    sender = harness.Sender(running.webhook_url)
    sender.deliver([stage_event(deal, "closedwon", event_id=n + 1) for n, deal in enumerate(deals)])
    quiet_after = harness.wait_until_quiet(
        store, events=len(deals), runs=len(deals), timeout=90, tail=running.tail
    )
    creates = fake.calls["POST /crm/v3/objects/tasks/batch/create"]
    searches = fake.calls["POST /crm/v3/objects/tasks/search"]
    harness.report(
        "slow",
        database="sqlite" if store.is_sqlite else "postgres",
        events=len(deals),
        workers=2,
        lease_s=harness.LEASE_SECONDS,
        tasks=len(fake.records("tasks")),
        task_searches=searches,
        task_creates=creates,
        quiet_s=round(quiet_after, 1),
        total_s=harness.since(started),
    )
    harness.check_exactly_once(fake, store, deals, sender)
    # Each action ran once, by the worker that claimed it: nobody took one over as an unknown
    # outcome (which would have searched), and the tasks went out in a call or two per claim.
    assert searches == 0 and 1 <= creates < len(deals), (searches, creates)
    codes = running.stop()
    assert set(codes.values()) == {0}, f"{codes}\n{running.tail()}"
