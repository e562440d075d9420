"""Several workers on one Postgres outbox never execute the same action twice."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from sqlalchemy import func, select

from adapters.sandbox import SandboxAdapter
from connector.store import Action
from tests.support.harness import tasks_per_run
from tests.support.helpers import deal_closed_event, make_settings, signed

pytestmark = pytest.mark.postgres


class Recording(SandboxAdapter):
    """The sandbox CRM, slowed down a little and counting every write it is asked for."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def create_tasks(self, tasks, key):
        with self._lock:
            self.calls[key] += 1
        time.sleep(0.005)
        return super().create_tasks(tasks, key)

    def update_properties(self, update, key):
        with self._lock:
            self.calls[key] += 1
        return super().update_properties(update, key)


@pytest.fixture
def db_url(postgres_url: str) -> str:
    return postgres_url


@pytest.fixture
def settings(db_url: str):
    # Small claims, so the forty deals' work is spread over the four workers.
    return make_settings(db_url, OFFBOARD_WORKER_BATCH="5")


def test_four_workers_on_postgres_share_the_outbox_without_overlap(client, services, store):
    recording = Recording(store)
    services.adapters["sandbox"] = recording
    deals = 40
    for n in range(deals):
        body, headers = signed(deal_closed_event(f"D-{n}"))
        assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202

    workers = [services.worker(f"w{i}") for i in range(4)]
    handled = Counter()
    barrier = threading.Barrier(len(workers))

    def work(worker) -> None:
        barrier.wait()
        handled[worker.worker_id] = worker.run_until_idle(max_ticks=1000)

    threads = [threading.Thread(target=work, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    with store.session() as session:
        states = Counter(session.scalars(select(Action.state)))
        written = session.scalar(select(func.count()).select_from(Action).where(Action.state == "done"))
        done = Counter(session.scalars(select(Action.step_id).where(Action.state == "done")))
    # Per deal: the checklist batch, the playbook's property update and the first progress update.
    assert done == {"tasks": deals, "offboarding-status": deals, "progress:1": deals}
    assert states["done"] == written == deals * 3
    assert recording.calls and max(recording.calls.values()) == 1, "an action was executed twice"
    assert len(recording.calls) == written
    assert sum(1 for n in handled.values() if n) >= 2, f"only one worker did anything: {handled}"
    assert len(recording.tasks()) == deals * tasks_per_run()
