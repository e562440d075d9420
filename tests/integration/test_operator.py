"""Operator tools: see parked actions, put them back, cancel runs; every change audited."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from connector.cli import main
from connector.store import Action, AuditEntry, Run
from tests.conftest import deal_closed_event, signed


@pytest.fixture
def cli(services, monkeypatch):
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args))

    return invoke


def parked_run(client, services, deal_id="D-1"):
    services.adapters["sandbox"].inject(
        "create_tasks", "permanent", times=1, message="sandbox: owner 42 inactive"
    )
    body, headers = signed(deal_closed_event(deal_id))
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()


def audit(store, verb):
    with store.session() as session:
        return list(session.scalars(select(AuditEntry).where(AuditEntry.verb == verb)))


def catch_up(clock):
    """The CLI stamps real time; let the test's worker see it."""
    clock.now = datetime.now(UTC)


def test_failed_then_retry_round_trip(client, services, store, cli, clock):
    parked_run(client, services)
    listed = cli("failed")
    assert listed.exit_code == 0
    assert "completed-project/tasks (tasks, 1 attempt(s))" in listed.output
    assert "CrmPermanent: sandbox: owner 42 inactive" in listed.output
    (row,) = json.loads(cli("failed", "--format", "json").output)
    assert services.adapters["sandbox"].tasks("D-1") == []

    retried = cli("retry", str(row["id"]))  # the cause is gone: the fault was for one call
    assert retried.exit_code == 0, retried.output
    assert f"1 action(s) back in the queue: {row['id']}" in retried.output
    catch_up(clock)
    services.worker().run_until_idle()
    assert len(services.adapters["sandbox"].tasks("D-1")) == 12
    assert cli("failed").output.strip() == "no failed actions"
    (entry,) = audit(store, "action.retried")
    assert (entry.actor, entry.action_id) == ("cli", row["id"])
    assert "owner 42 inactive" in entry.detail["previous_error"]


def test_retry_all_and_unknown_ids(client, services, store, cli, clock):
    parked_run(client, services, "D-1")
    parked_run(client, services, "D-2")
    assert "2 action(s) back in the queue" in cli("retry", "--all").output
    catch_up(clock)
    services.worker().run_until_idle()
    assert len(services.adapters["sandbox"].tasks()) == 24
    missing = cli("retry", "999")
    assert missing.exit_code == 1
    assert "not failed (or no such action): 999" in missing.output
    assert cli("retry").exit_code == 2  # neither ids nor --all


def test_cancel_a_run(client, services, store, cli):
    body, headers = signed(deal_closed_event())
    client.post("/webhooks/generic", data=body, headers=headers)
    services.worker().run_until_idle()
    with store.session() as session:
        run_id = session.scalars(select(Run.id)).one()
    result = cli("cancel", str(run_id), "--reason", "client asked us to stop")
    assert result.exit_code == 0
    assert f"run {run_id} cancelled; 2 pending action(s) will not be written" in result.output
    with store.session() as session:
        states = {a.kind: a.state for a in session.scalars(select(Action))}
    assert states["survey"] == "cancelled"
    (entry,) = audit(store, "run.cancelled")
    assert entry.detail == {"reason": "client asked us to stop", "actions_cancelled": 2}
    assert cli("cancel", "999").exit_code == 1
