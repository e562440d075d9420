"""``make bench``: how fast Offboard answers webhooks and works through its outbox.

Each figure is printed beside a baseline measured in the same run on the same
machine, and as a ratio to it, so results compare across machines:

- webhook: a signed generic event stored in the inbox, against ``GET /healthz``
  (the same Flask stack doing nothing), through the WSGI test client;
- worker: events turned into runs and their checklist written to the sandbox
  CRM, against writing the same tasks to the sandbox directly;
- memory: the worker's peak allocation (tracemalloc) per 100 events.

SQLite in a temporary folder; ``OFFBOARD_BENCH_DATABASE_URL`` points it at Postgres.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import func, select

from connector import generic
from connector.generic import GenericEvent
from connector.models import TaskSpec
from connector.services import build
from connector.settings import load_settings
from connector.store import Run, Store
from connector.store.migrate import upgrade
from connector.web import create_app
from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET, deal_closed_today

REQUESTS = int(os.environ.get("OFFBOARD_BENCH_REQUESTS", "400"))
DEALS = int(os.environ.get("OFFBOARD_BENCH_DEALS", "200"))


def timed(call: Callable[[], object], times: int) -> list[float]:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return samples


def summary(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        url = os.environ.get("OFFBOARD_BENCH_DATABASE_URL") or f"sqlite:///{Path(folder) / 'bench.db'}"
        store = Store.from_url(url)
        upgrade(store.engine)
        settings = load_settings(
            OFFBOARD_DATABASE_URL=url,
            OFFBOARD_PLAYBOOKS=str(BUNDLED_PLAYBOOKS),
            OFFBOARD_WEBHOOK_SECRET=WEBHOOK_SECRET,
            OFFBOARD_SWEEP_INTERVAL_SECONDS=0,
        )
        services = build(settings, store=store)
        rows = [*bench_webhook(services), *bench_worker(services)]
        print(f"Offboard benchmarks ({store.engine.dialect.name}, {REQUESTS} requests, {DEALS} deals)\n")
        print(f"{'measure':<34}{'Offboard':>14}{'baseline':>14}{'ratio':>8}")
        for name, value, baseline, unit in rows:
            ratio = f"{value / baseline:.1f}x" if baseline else "-"
            print(f"{name:<34}{value:>10.2f} {unit:<3}{baseline:>10.2f} {unit:<3}{ratio:>8}")
        store.dispose()


def bench_webhook(services):  # type: ignore[no-untyped-def]
    client = create_app(services).test_client()
    counter = iter(range(10**9))

    def post() -> None:
        n = next(counter)
        body = json.dumps(deal_closed_today(f"W-{n}"))
        headers = generic.sign(WEBHOOK_SECRET, f"msg_bench_{n}", datetime.now(UTC), body)
        assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202

    def health() -> None:
        assert client.get("/healthz").status_code == 200

    post_median, post_p99 = summary(timed(post, REQUESTS))
    health_median, health_p99 = summary(timed(health, REQUESTS))
    return [
        ("webhook accept, median", post_median, health_median, "ms"),
        ("webhook accept, p99", post_p99, health_p99, "ms"),
    ]


def bench_worker(services):  # type: ignore[no-untyped-def]
    client = create_app(services).test_client()
    for n in range(DEALS):
        body = json.dumps(deal_closed_today(f"B-{n}"))
        headers = generic.sign(WEBHOOK_SECRET, f"msg_worker_{n}", datetime.now(UTC), body)
        client.post("/webhooks/generic", data=body, headers=headers)
    worker = services.worker()
    tracemalloc.start()
    start = time.perf_counter()
    worker.run_until_idle(max_ticks=10**6)
    elapsed = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    baseline = direct_writes(services, 12)
    processed = DEALS + REQUESTS  # the webhook bench's deals are in the inbox too
    with services.store.session() as session:
        started = session.scalar(select(func.count()).select_from(Run))
    assert started == processed, f"{started} runs started for {processed} deals: the figures would mislead"
    return [
        ("worker, per deal (12 tasks)", elapsed / processed * 1000, baseline * 1000, "ms"),
        ("worker peak memory / 100 deals", peak / processed * 100 / 2**20, 0.0, "MiB"),
    ]


def direct_writes(services, tasks_per_deal: int) -> float:  # type: ignore[no-untyped-def]
    """Seconds per deal to write a deal's tasks straight into the sandbox CRM."""
    sandbox = services.adapters["sandbox"]
    deal = GenericEvent.model_validate(deal_closed_today("X")).to_deal("sandbox")
    specs = [
        TaskSpec(step_id=f"s{i}", title=f"Task {i}", due_at=datetime.now(UTC), deal_id=deal.id)
        for i in range(tasks_per_deal)
    ]
    samples = timed(lambda: sandbox.create_tasks(specs, f"direct-{time.perf_counter_ns()}"), 50)
    return statistics.median(samples)


if __name__ == "__main__":
    main()
