"""SIGTERM: the worker (``offboard worker``, or the thread of ``offboard serve``) stops claiming,
finishes the action in hand, and puts back every row it claimed and had not started, so
another worker takes them at once instead of after the lease.

HubSpot answers the call that writes the checklists slowly, so the signal arrives while the
worker holds a batch of actions and is in the middle of its first group (the runs' tasks,
written together); one group at a time, so the property updates are still waiting.
"""

from __future__ import annotations

import signal
import time

import pytest
from sqlalchemy import select

from connector.demo import wait_for
from connector.store import Action, Store
from tests.support import harness
from tests.support.hubspot import FakeHubSpot, stage_event
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.faults, pytest.mark.e2e]

CREATE = "POST /crm/v3/objects/tasks/batch/create"
DEALS = 5  # ten actions due now, one batch: the tasks group, then the properties group
ONE_GROUP_AT_A_TIME = {"OFFBOARD_WORKER_CONCURRENCY": "1"}


def _due_actions(store: Store) -> list[Action]:
    """The actions due when the runs start: each run's checklist batch and its playbook's property
    step (not the progress updates queued once the checklist is written)."""
    with store.session() as session:
        rows = session.scalars(
            select(Action)
            .where(Action.kind.in_(("task", "property")), Action.step_id.not_like("progress:%"))
            .order_by(Action.id)
        ).all()
        session.expunge_all()
        return list(rows)


def _delivered(fake: FakeHubSpot, server: ServerProcess, *, slow: float) -> tuple[list[str], harness.Sender]:
    """DEALS closed-won deals, their events accepted; HubSpot's task create answers in ``slow`` s."""
    deals = harness.portal_with_deals(fake, DEALS)
    fake.slow_routes = {CREATE: slow}
    sender = harness.Sender(f"{server.url}/webhooks/hubspot")
    sender.deliver([stage_event(deal, "closedwon", event_id=n + 1) for n, deal in enumerate(deals)])
    return deals, sender


def _in_the_first_action(fake: FakeHubSpot) -> None:
    assert wait_for(lambda: fake.calls[CREATE] >= 1, 20), "the worker never reached its first group"


def _check_put_back(store: Store, log: str) -> list[Action]:
    actions = _due_actions(store)
    assert len(actions) == 2 * DEALS
    in_hand = [a for a in actions if a.kind == "task"]
    rest = [a for a in actions if a.kind != "task"]
    assert {(a.kind, a.state) for a in in_hand} == {("task", "done")}, log  # the group in hand finished
    assert [(a.kind, a.state, a.lease_until, a.claimed_by, a.attempts) for a in rest] == [
        ("property", "pending", None, None, 0)
    ] * len(rest), log
    return actions


def test_sigterm_stops_a_worker_after_the_action_in_hand_and_puts_back_the_rest(db_url, store, fake, cluster):
    harness.only_on(store, "sqlite")
    running = cluster(1, **ONE_GROUP_AT_A_TIME)
    running.server.start()
    deals, sender = _delivered(fake, running.server, slow=1.5)
    worker = running.workers[0].start()
    _in_the_first_action(fake)
    signalled = time.monotonic()
    assert worker.stop(timeout=20) == 0
    stopped_in = time.monotonic() - signalled
    log = worker.log.read_text()
    assert "claimed row(s) put back" in log, log[-3000:]
    _check_put_back(store, log[-3000:])
    assert len(fake.records("tasks")) == DEALS * harness.tasks_per_run()  # the group in hand, once

    # Another worker takes the rest at once: no lease to wait out.
    fake.slow_routes = {}
    restarted = time.monotonic()
    worker.start()
    quiet = harness.wait_until_quiet(store, events=DEALS, runs=DEALS, timeout=30, tail=running.tail)
    took = time.monotonic() - restarted
    harness.check_exactly_once(fake, store, deals, sender)
    assert took < harness.LEASE_SECONDS, f"the put-back actions waited {took:.1f}s"
    codes = running.stop()
    assert set(codes.values()) == {0}, codes
    harness.report(
        "sigterm-worker",
        database="sqlite" if store.is_sqlite else "postgres",
        stopped_in_s=round(stopped_in, 1),
        rest_done_in_s=round(took, 1),
        quiet_s=round(quiet, 1),
    )


def test_sigterm_stops_the_serve_worker_thread_after_the_action_in_hand_and_puts_back_the_rest(
    db_url, store, fake, tmp_path
):
    harness.only_on(store, "sqlite")
    env = harness.process_env(db_url, fake.url, **ONE_GROUP_AT_A_TIME)  # type: ignore[attr-defined]
    server = ServerProcess(env, log=tmp_path / "serve.log")  # with its worker thread
    server.start()
    try:
        deals, sender = _delivered(fake, server, slow=1.5)
        _in_the_first_action(fake)
        signalled = time.monotonic()
        assert server.stop(signal.SIGTERM) == 0
        stopped_in = time.monotonic() - signalled
        log = server.log.read_text()
        assert "claimed row(s) put back" in log, log[-3000:]
        _check_put_back(store, log[-3000:])

        fake.slow_routes = {}
        restarted = time.monotonic()
        server.start()
        harness.wait_until_quiet(
            store, events=DEALS, runs=DEALS, timeout=30, tail=lambda: server.log.read_text()
        )
        took = time.monotonic() - restarted
        harness.check_exactly_once(fake, store, deals, sender)
        assert server.stop() == 0
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop(signal.SIGKILL)
    harness.report(
        "sigterm-serve",
        database="sqlite" if store.is_sqlite else "postgres",
        stopped_in_s=round(stopped_in, 1),
        rest_done_in_s=round(took, 1),
    )


def test_a_second_signal_leaves_at_once_and_the_action_in_hand_comes_back_after_its_lease(
    db_url, store, fake, cluster
):
    harness.full_size_only()
    running = cluster(1, **ONE_GROUP_AT_A_TIME)
    running.server.start()
    deals, sender = _delivered(fake, running.server, slow=3.0)
    worker = running.workers[0].start()
    _in_the_first_action(fake)
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.signal(signal.SIGTERM)
    assert worker.process is not None and worker.process.wait(timeout=10) == 128 + signal.SIGTERM
    actions = _due_actions(store)
    in_hand = [a for a in actions if a.kind == "task"]
    rest = [a for a in actions if a.kind != "task"]
    # The group in hand may have reached HubSpot: it stays leased, and comes back when the
    # lease runs out (HubSpot's search shows by then whatever it wrote). The rest are put back.
    assert {(a.state, a.claimed_by is not None, a.lease_until is not None) for a in in_hand} == {
        ("running", True, True)
    }
    assert {(a.state, a.lease_until) for a in rest} == {("pending", None)}

    fake.slow_routes = {}
    worker.start()
    harness.wait_until_quiet(store, events=DEALS, runs=DEALS, timeout=30, tail=running.tail)
    harness.check_exactly_once(fake, store, deals, sender)
    # claimed again, once its lease ran out
    assert {a.attempts for a in _due_actions(store) if a.kind == "task"} == {2}
    assert set(running.stop().values()) == {0}
