"""HubSpot fails for a stretch; afterwards every action completes, each task is written once,
and the calls made during the outage stay under the bound the backoff promises.

The outage has three parts: quick failures (500, 502, 503, connections reset before or after
HubSpot did the work), then stalls that end in a gateway timeout, then 429s (a single 429
stops a process's calls for HubSpot's 10 s window, so they come last, not to hide the rest).

The bound, for an outage of D seconds and P worker processes:

- an item (an event, or an action) is claimed again only after its backoff: after its k-th
  failed claim at least 0.8 x min(base x 2^(k-1), max) seconds (the jitter takes up to 20 %
  off). So it is claimed at most C(D) times in the outage: one more than the number of such
  waits that fit in D. A 429 sends it back for HubSpot's 10 s window, longer than any backoff
  step here (OFFBOARD_RETRY_MAX_SECONDS < 10): that only makes C smaller;
- in one claim every call fails, and each failure ends an attempt: an action makes at most
  OFFBOARD_INLINE_RETRIES attempts per claim, an event one;
- the one exception is a 429 the API client waits out in-process and retries: after one, the
  whole process sends nothing for 10 s, so at most floor(D / 10) + 1 such retries per process;
- a live worker keeps its leases (the lease keeper), so no item is claimed twice at once.

Per item:  calls <= C(D) x (1 for an event, OFFBOARD_INLINE_RETRIES for an action) + P x (floor(D/10) + 1)
In all:    calls <= P x (floor(D/10) + 1) + C(D) x (E + OFFBOARD_INLINE_RETRIES x A)

with E events and A actions (tasks and a property update per deal) that could be in flight.
Each call is told to its item by what it carries: the deal read (the event), the deal update
(the property action), the marker token in a task search or create (the tasks action).

With many items in flight a worker is kept busy going round them, and would stay under these
bounds even without backoff; ``test_backoff_spaces_the_retries_of_each_item`` keeps only three
in flight, where a worker without backoff goes well over them (with
OFFBOARD_RETRY_BASE_SECONDS=0 it made 24, 23 and 7 calls against bounds of 13, 13 and 5).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from datetime import UTC, datetime

import pytest

from connector.demo import wait_for
from tests.support import harness
from tests.support.faults import Fault
from tests.support.hubspot import stage_event

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

QUICK = [500, 502, 503, Fault.RESET, Fault.LOST_REPLY]
STALLS = [Fault.TIMEOUT]
RATE_LIMITED = [Fault.RATE_LIMITED]
STALL_SECONDS = 1.0
RATE_LIMIT_WAIT = 10.0  # HubSpot's ten-second window: what a 429 makes the client wait

DEAL = re.compile(r"/crm/v3/objects/deals/(\d+)")
TOKEN = re.compile(rb"ob[0-9a-f]{20}")


def claims_within(seconds: float, base: float, cap: float) -> int:
    """The most claims one item can get in ``seconds`` when every claim fails (see the module doc)."""
    claims, elapsed = 1, 0.0
    while True:
        wait = 0.8 * min(base * 2 ** (claims - 1), cap)
        if elapsed + wait > seconds:
            return claims
        elapsed += wait
        claims += 1


def in_process_429s(seconds: float, processes: int) -> int:
    return processes * (int(seconds // RATE_LIMIT_WAIT) + 1)


def item_bound(kind: str, seconds: float, processes: int) -> int:
    per_claim = 1 if kind == "event" else harness.INLINE_RETRIES
    claims = claims_within(seconds, harness.RETRY_BASE_SECONDS, harness.RETRY_MAX_SECONDS)
    return claims * per_claim + in_process_429s(seconds, processes)


def total_bound(seconds: float, *, processes: int, events: int, actions: int) -> int:
    claims = claims_within(seconds, harness.RETRY_BASE_SECONDS, harness.RETRY_MAX_SECONDS)
    return in_process_429s(seconds, processes) + claims * (events + harness.INLINE_RETRIES * actions)


def item_of(method: str, path: str, body: bytes) -> str:
    """Which event or action made a call: "event <deal>", "property <deal>", "tasks <token>".

    A batch update of several deals' properties is one item, "property <deal>,<deal>…".
    """
    deal = DEAL.fullmatch(path)
    if deal:
        return f"{'event' if method == 'GET' else 'property'} {deal[1]}"
    if path == "/crm/v3/objects/deals/batch/update":
        ids = [str(i.get("id")) for i in json.loads(body or b"{}").get("inputs", [])]
        return f"property {','.join(ids)}"
    marker = TOKEN.search(body or b"")
    if path.startswith("/crm/v3/objects/tasks/") and marker:
        return f"tasks {marker[0].decode()}"
    return "other"


def test_claims_within_follows_the_backoff():
    # base 0.5 s: waits of at least 0.4, 0.8, 1.6, 3.2, 6.4 s (then capped at 0.8 x 8 s)
    assert claims_within(0.39, 0.5, 8) == 1
    assert claims_within(1.3, 0.5, 8) == 3
    assert claims_within(6.1, 0.5, 8) == 5
    assert claims_within(12.5, 0.5, 8) == 6
    assert claims_within(18.9, 0.5, 8) == 7


def test_item_of_tells_each_call_to_its_event_or_action():
    assert item_of("GET", "/crm/v3/objects/deals/1004", b"") == "event 1004"
    assert item_of("PATCH", "/crm/v3/objects/deals/1004", b"{}") == "property 1004"
    search = b'{"filterGroups": [{"filters": [{"value": "ob0123456789abcdef0123"}]}]}'
    assert item_of("POST", "/crm/v3/objects/tasks/search", search) == "tasks ob0123456789abcdef0123"
    assert item_of("GET", "/crm/v3/owners/101", b"") == "other"
    update = b'{"inputs": [{"id": "1004", "properties": {"offboard_status": "in_progress"}}]}'
    assert item_of("POST", "/crm/v3/objects/deals/batch/update", update) == "property 1004"


def test_an_outage_ends_with_every_action_done_once_and_a_bounded_number_of_calls(
    db_url, store, fake, cluster
):
    scale = harness.size()
    seed = harness.seed(11)
    rng = random.Random(seed)
    workers = 1 if store.is_sqlite else 2
    planned = scale.outage_seconds * 2  # quick failures, then stalls and 429s for half as long each
    assert harness.RETRY_MAX_SECONDS < RATE_LIMIT_WAIT
    assert claims_within(planned, harness.RETRY_BASE_SECONDS, harness.RETRY_MAX_SECONDS) + 3 < (
        harness.MAX_ATTEMPTS
    ), "the outage would use up every attempt: nothing could complete after it"
    deals = harness.portal_with_deals(fake, scale.outage_events)
    fake.latency = 0.01
    fake.stall_seconds = STALL_SECONDS
    batches = harness.batches_for(deals, rng, scale.max_batch)
    before, during = batches[: len(batches) // 3], batches[len(batches) // 3 :]

    started = time.monotonic()
    running = cluster(workers).start()
    sender = harness.Sender(running.webhook_url)
    sender.send_all(before, 1.0)
    fake.outage(QUICK, seed=seed)
    outage_start = datetime.now(UTC)
    try:
        sender.send_all(during, scale.outage_seconds / 2)  # the rest arrive while HubSpot is down
        for statuses, until in ((STALLS, 1.0), (RATE_LIMITED, 1.5), (None, 2.0)):
            time.sleep(
                max(scale.outage_seconds * until - (datetime.now(UTC) - outage_start).total_seconds(), 0)
            )
            if statuses:
                fake.outage(statuses, seed=seed)
    finally:
        outage_end = datetime.now(UTC)
        fake.recover()
    outage = (outage_end - outage_start).total_seconds()
    calls = [
        (item_of(m, p, b), status)
        for at, m, p, b, status in fake.requests
        if outage_start <= at <= outage_end
    ]
    recovered = time.monotonic()

    quiet_after = harness.wait_until_quiet(
        store, events=len(deals), runs=len(deals), timeout=scale.quiet_timeout, tail=running.tail
    )
    outcome = harness.check_exactly_once(fake, store, deals, sender)
    codes = running.stop()
    assert set(codes.values()) == {0}, f"{codes}\n{running.tail()}"

    per_item = Counter(item for item, _status in calls)
    busiest = {
        kind: max((n for item, n in per_item.items() if item.startswith(kind)), default=0)
        for kind in ("event", "tasks", "property")
    }
    bounds = {kind: item_bound(kind, outage, workers) for kind in busiest}
    bound = total_bound(outage, processes=workers, events=len(deals), actions=2 * len(deals))
    harness.report(
        "outage",
        database="sqlite" if store.is_sqlite else "postgres",
        scale=scale.name,
        seed=seed,
        events=len(deals),
        workers=workers,
        outage_s=round(outage, 1),
        calls_during_outage=len(calls),
        bound=bound,
        items_called=len([item for item in per_item if item != "other"]),
        busiest_item=busiest,
        item_bounds=bounds,
        failures_served={str(s): n for s, n in sorted(Counter(s for _item, s in calls).items(), key=str)},
        tasks=outcome.tasks,
        lost=len(outcome.missing_markers),
        duplicated=len(outcome.duplicated_markers),
        reclaimed_actions=outcome.reclaimed_actions,
        reclaimed_events=outcome.reclaimed_events,
        done_after_recovery_s=round(time.monotonic() - recovered, 1),
        quiet_s=round(quiet_after, 1),
        total_s=harness.since(started),
    )
    assert calls and all(status not in (200, 201) for _item, status in calls)
    over = {item: n for item, n in per_item.items() if item != "other" and n > bounds[item.split()[0]]}
    assert not over, f"calls during a {outage:.1f}s outage beyond the backoff's bound {bounds}: {over}"
    assert len(calls) <= bound, f"{len(calls)} calls during a {outage:.1f}s outage; backoff allows {bound}"


def test_backoff_spaces_the_retries_of_each_item(db_url, store, fake, cluster):
    """Few items in flight, failing fast: here a worker without backoff would call again at every
    poll (dozens of calls per item); with it, each item stays under its bound.

    HubSpot refuses the writes (503) from the start: deal A's event is processed, its tasks
    and property actions fail. Then everything fails, and deal B's event arrives. After D
    seconds everything works again."""
    harness.only_on(store, "postgres")
    workers = 1
    seconds = harness.size().outage_seconds + 1.0
    deals = harness.portal_with_deals(fake, 2)
    fake.latency = 0.01
    running = cluster(workers).start()
    sender = harness.Sender(running.webhook_url)
    writes = ("POST /crm/v3/objects/tasks/batch/create", "POST /crm/v3/objects/deals/batch/update")
    started = datetime.now(UTC)
    for route in writes:
        fake.inject(503, times=10**6, route=route)
    sender.deliver([stage_event(deals[0], "closedwon", event_id=1)])
    assert wait_for(lambda: fake.calls["POST /crm/v3/objects/deals/batch/update"] >= 1, 10)
    fake.outage(QUICK, seed=harness.seed(3))
    sender.deliver([stage_event(deals[1], "closedwon", event_id=2)])
    time.sleep(max(seconds - (datetime.now(UTC) - started).total_seconds(), 0))
    ended = datetime.now(UTC)
    fake.faults.clear()
    fake.recover()
    outage = (ended - started).total_seconds()
    per_item = Counter(item_of(m, p, b) for at, m, p, b, _status in fake.requests if started <= at <= ended)

    harness.wait_until_quiet(store, events=2, runs=2, timeout=60, tail=running.tail)
    harness.check_exactly_once(fake, store, deals, sender)
    assert set(running.stop().values()) == {0}
    wanted = {f"event {deals[1]}", f"property {deals[0]}"} | {i for i in per_item if i.startswith("tasks")}
    bounds = {item: item_bound(item.split()[0], outage, workers) for item in wanted}
    harness.report(
        "backoff",
        database="sqlite" if store.is_sqlite else "postgres",
        outage_s=round(outage, 1),
        calls={item: per_item[item] for item in sorted(wanted)},
        bounds=bounds,
    )
    assert len(wanted) == 3 and all(per_item[item] >= 2 for item in wanted)  # each failed and was retried
    over = {item: per_item[item] for item in wanted if per_item[item] > bounds[item]}
    assert not over, f"beyond the backoff's bound {bounds}: {over}"
