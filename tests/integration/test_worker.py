"""The worker: events become runs, actions reach the sandbox CRM once, failures retry or park."""

from __future__ import annotations

import os
import socket
import threading
import time
from datetime import UTC, datetime

import yaml
from click.testing import CliRunner
from sqlalchemy import select

from adapters.sandbox import SandboxAdapter
from connector import heartbeat
from connector.store import Action, AuditEntry, Event, Run, WorkerBeat
from tests.support.harness import tasks_per_run
from tests.support.helpers import BUNDLED_PLAYBOOKS, deal_closed_event, signed


def deliver(client, event):
    body, headers = signed(event)
    reply = client.post("/webhooks/generic", data=body, headers=headers)
    assert reply.status_code == 202, reply.get_data(as_text=True)


def actions(store):
    with store.session() as session:
        return list(session.scalars(select(Action).order_by(Action.id)))


def test_a_closed_deal_gets_its_checklist_with_due_dates_from_the_anchor(client, services):
    deliver(client, deal_closed_event())
    services.worker().run_until_idle()
    tasks = {t.step_id: t for t in services.adapters["sandbox"].tasks("D-1")}
    # completed-project counts from the contract end, 2026-12-31, at 09:00 UTC.
    assert tasks["confirm-end-date"].due_at == datetime(2026, 12, 1, 9, 0, tzinfo=UTC)  # -30d
    assert tasks["data-retention"].due_at == datetime(2027, 1, 7, 9, 0, tzinfo=UTC)  # +7d
    assert tasks["follow-up"].due_at == datetime(2027, 2, 11, 9, 0, tzinfo=UTC)  # +6w
    assert tasks["confirm-end-date"].subject == "Confirm the end date with Acme Corp"
    assert tasks["confirm-end-date"].owner_id == "owner-1"
    assert tasks["final-invoice"].owner_id == "finance-1"  # role:finance from OFFBOARD_ROLES
    assert tasks["confirm-end-date"].contact_id == "contact-1"
    assert tasks["confirm-end-date"].company_id == "company-1"
    # Conditional steps wait for the survey answer; steps after a task wait for it to be completed.
    assert "detractor-call" not in tasks and "future-work" not in tasks
    assert "revoke-access" not in tasks and "thank-you" not in tasks
    assert len(tasks) == tasks_per_run()


def test_steps_due_later_wait_for_their_time(client, services, clock, store):
    deliver(client, deal_closed_event())
    worker = services.worker()
    worker.run_until_idle()
    survey = next(a for a in actions(store) if a.kind == "survey")
    assert survey.state == "pending"
    assert survey.due_at == datetime(2027, 1, 1, 9, 0, tzinfo=UTC)  # exit-nps: +1d from the end
    clock.now = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)
    worker.run_until_idle()
    survey = next(a for a in actions(store) if a.kind == "survey")
    assert survey.state == "done"
    deadline = next(a for a in actions(store) if a.kind == "deadline")
    assert (deadline.state, deadline.due_at) == ("pending", datetime(2027, 1, 6, 9, 0, tzinfo=UTC))  # +5d
    with store.session() as session:
        assert session.scalars(select(Run)).one().state == "active"  # still waiting for an answer
    clock.now = deadline.due_at
    worker.run_until_idle()
    with store.session() as session:
        assert session.scalars(select(Run)).one().state == "done"


def test_event_for_a_deal_no_playbook_matches_is_ignored_with_reason(client, services, store, tmp_path):
    import shutil

    shutil.copy(services.settings.playbooks / "completed-project.yaml", tmp_path)
    services.playbooks.folder = tmp_path
    services.playbooks.check_every = 0
    deliver(client, deal_closed_event(outcome="lost"))
    services.worker().run_until_idle()
    with store.session() as session:
        event = session.scalars(select(Event)).one()
        assert (event.state, event.outcome) == ("ignored", "no playbook matches this deal")
        assert session.scalars(select(Run)).all() == []


def test_a_transient_failure_is_retried_and_succeeds(client, services, store):
    services.adapters["sandbox"].inject("create_tasks", "transient", times=2)
    deliver(client, deal_closed_event())
    services.worker().run_until_idle()
    batch = actions(store)[0]
    assert (batch.kind, batch.state, batch.attempts) == (
        "task",
        "done",
        1,
    )  # two quick retries inside
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def test_a_longer_outage_goes_back_in_the_queue_with_backoff(client, services, store, clock):
    services.adapters["sandbox"].inject("create_tasks", "transient", times=4)  # > 3 quick tries
    deliver(client, deal_closed_event())
    worker = services.worker()
    worker.run_until_idle()
    batch = actions(store)[0]
    assert batch.state == "pending"
    assert "CrmTransient" in batch.last_error
    assert (batch.due_at - clock.now).total_seconds() >= 60 * 0.8  # OFFBOARD_RETRY_BASE_SECONDS=60
    clock.advance(minutes=2)
    worker.run_until_idle()
    batch = actions(store)[0]
    assert (batch.state, batch.attempts) == ("done", 2)
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def test_a_lost_reply_does_not_create_the_tasks_twice(client, services, store):
    services.adapters["sandbox"].inject("create_tasks", "lost_reply", times=1)
    deliver(client, deal_closed_event())
    services.worker().run_until_idle()
    assert actions(store)[0].state == "done"
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def test_a_permanent_failure_parks_the_action_and_runs_shows_it(client, services, store, monkeypatch):
    services.adapters["sandbox"].inject("create_tasks", "permanent", times=1)
    deliver(client, deal_closed_event())
    services.worker().run_until_idle()
    batch = actions(store)[0]
    assert batch.state == "failed"
    assert batch.attempts == 1
    assert "CrmPermanent: sandbox: injected permanent failure" in batch.last_error
    assert services.adapters["sandbox"].tasks("D-1") == []
    with store.session() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.verb == "action.failed")).one()
        assert audit.action_id == batch.id

    from connector.cli import main

    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))
    result = CliRunner().invoke(main, ["runs"])
    assert result.exit_code == 0, result.output
    version = yaml.safe_load((BUNDLED_PLAYBOOKS / "completed-project.yaml").read_text())["version"]
    assert f"completed-project@v{version}" in result.output
    assert f"action {batch.id} tasks: CrmPermanent: sandbox: injected permanent failure" in result.output
    failed_only = CliRunner().invoke(main, ["runs", "--state", "failed", "--format", "json"])
    assert '"state": "failed"' in failed_only.output


def test_transient_failures_past_the_attempt_limit_park_the_action(client, services, store, clock):
    services.adapters["sandbox"].inject("create_tasks", "transient", times=1000)
    deliver(client, deal_closed_event())
    worker = services.worker()
    for _ in range(services.settings.max_attempts + 2):
        worker.run_until_idle()
        clock.advance(hours=2)
    batch = actions(store)[0]
    assert (batch.state, batch.attempts) == ("failed", services.settings.max_attempts)


def test_rate_limits_wait_without_using_up_attempts(client, services, store, clock):
    services.adapters["sandbox"].inject("create_tasks", "rate_limited", times=20)
    deliver(client, deal_closed_event())
    worker = services.worker()
    for _ in range(20):
        worker.run_until_idle()
        clock.advance(seconds=2)  # the sandbox asks for 1 s
    worker.run_until_idle()
    batch = actions(store)[0]
    assert (batch.state, batch.attempts) == ("done", 1)
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def test_a_worker_that_died_leaves_its_actions_to_be_reclaimed_after_the_lease(
    client, services, store, clock
):
    deliver(client, deal_closed_event())
    dead = services.worker("dead")
    dead.process_events()
    claimed = dead._claim(Action)  # claims, then "dies" before executing
    assert claimed and all(a.state == "running" for a in actions(store)[:1])
    alive = services.worker("alive")
    assert alive.execute_due_actions() == 0  # still leased
    clock.advance(seconds=services.settings.lease_seconds + 1)
    alive.run_until_idle()
    assert actions(store)[0].state == "done"
    assert actions(store)[0].claimed_by == "alive"
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def test_a_reopened_deal_cancels_pending_actions(client, services, store):
    deliver(client, deal_closed_event())
    services.worker().run_until_idle()
    reopened = deal_closed_event() | {"id": "evt-reopen", "type": "deal.reopened"}
    deliver(client, reopened)
    services.worker().run_until_idle()
    with store.session() as session:
        run = session.scalars(select(Run)).one()
        assert run.state == "cancelled"
    states = {a.kind: a.state for a in actions(store)}
    assert states == {
        "task": "done",
        "property": "done",
        "survey": "cancelled",
        "deadline": "cancelled",
        "escalation": "cancelled",  # the final invoice's, due once it is overdue
    }


class Budgeted(SandboxAdapter):
    """The sandbox CRM with a daily budget an operator can watch run low."""

    reason: str | None = None

    def deferral_reason(self) -> str | None:
        return self.reason


def test_non_urgent_actions_wait_while_the_budget_is_low(client, services, store, clock, monkeypatch):
    budgeted = Budgeted(store)
    budgeted.reason = "daily API usage 85% is past the 80% budget"
    services.adapters["sandbox"] = budgeted
    deliver(client, deal_closed_event())
    worker = services.worker()
    worker.run_until_idle()
    states = {a.step_id: (a.state, a.last_error) for a in actions(store)}
    assert states["tasks"] == ("done", None)  # the checklist is urgent
    deferred = ("pending", "deferred: daily API usage 85% is past the 80% budget")
    assert states["offboarding-status"] == deferred
    assert states["progress:1"] == deferred  # the checklist's progress on the deal is not urgent either
    from connector.cli import main

    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))
    shown = CliRunner().invoke(main, ["runs"]).output
    assert "offboarding-status" in shown
    assert "deferred: daily API usage 85% is past the 80% budget" in shown

    budgeted.reason = None
    clock.advance(seconds=services.settings.defer_seconds + 1)
    worker.run_until_idle()
    prop = next(a for a in actions(store) if a.step_id == "offboarding-status")
    assert (prop.state, prop.attempts) == ("done", 1)


# --- deals closed long ago ----------------------------------------------------------------


def test_a_deal_closed_more_than_30_days_ago_starts_nothing_and_says_why(client, services, store):
    assert services.settings.max_close_age_days == 30  # the default
    deliver(client, deal_closed_event(close_date="2026-10-20"))  # 31 days before the clock's 2026-11-20
    services.worker().run_until_idle()
    with store.session() as session:
        event = session.scalars(select(Event)).one()
        assert (event.state, event.outcome) == (
            "ignored",
            "closed on 2026-10-20, more than 30 days ago; nothing started",
        )
        assert session.scalars(select(Run)).all() == []
    assert services.adapters["sandbox"].tasks("D-1") == []


def test_a_deal_closed_30_days_ago_still_starts(client, services, store):
    deliver(client, deal_closed_event(close_date="2026-10-21"))
    services.worker().run_until_idle()
    with store.session() as session:
        assert session.scalars(select(Run)).one().deal_id == "D-1"


def test_a_close_age_of_0_days_means_no_limit(db_url, store, clock):
    from connector.services import build
    from connector.web import create_app
    from tests.support.helpers import make_settings

    services = build(make_settings(db_url, OFFBOARD_MAX_CLOSE_AGE_DAYS=0), store=store, clock=clock)
    deliver(create_app(services).test_client(), deal_closed_event(close_date="2024-05-02"))
    services.worker().run_until_idle()
    with store.session() as session:
        assert session.scalars(select(Event)).one().state == "done"
        assert session.scalars(select(Run)).one().deal_id == "D-1"


# --- heartbeats -------------------------------------------------------------------------------


def eventually(check, within: float = 5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"not within {within} s")


def beats(store):
    with store.session() as session:
        return list(session.scalars(select(WorkerBeat)))


def test_a_running_worker_keeps_a_heartbeat_row_and_removes_it_on_stop(services, store, clock, monkeypatch):
    monkeypatch.setattr(heartbeat, "BEAT_SECONDS", 0.05)
    worker = services.worker("worker-beating")
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,))
    thread.start()
    try:
        (row,) = eventually(lambda: beats(store))
        assert (row.id, row.pid, row.host) == ("worker-beating", os.getpid(), socket.gethostname())
        assert row.started_at == row.beat_at == clock.now
        clock.advance(seconds=30)
        eventually(lambda: [b for b in beats(store) if b.beat_at == clock.now])
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    assert beats(store) == []
