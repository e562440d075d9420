"""Operator tools: see parked actions, put them back, cancel runs; every change audited."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from connector.cli import main
from connector.store import Action, AuditEntry, Run
from tests.support.harness import tasks_per_run
from tests.support.helpers import deal_closed_event, signed


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
    assert "completed-project/tasks (task, 1 attempt(s))" in listed.output
    assert "CrmPermanent: sandbox: owner 42 inactive" in listed.output
    (row,) = json.loads(cli("failed", "--format", "json").output)
    assert services.adapters["sandbox"].tasks("D-1") == []

    retried = cli("retry", str(row["id"]))  # the cause is gone: the fault was for one call
    assert retried.exit_code == 0, retried.output
    assert f"1 action(s) back in the queue: {row['id']}" in retried.output
    catch_up(clock)
    services.worker().run_until_idle()
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()
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
    assert len(services.adapters["sandbox"].tasks()) == 2 * tasks_per_run()
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
        pending = {a.step_id for a in session.scalars(select(Action).where(Action.state == "pending"))}
    # The survey, its deadline, and the final invoice's escalation are still to come.
    assert pending == {"exit-nps", "exit-nps:deadline", "final-invoice:escalation"}
    result = cli("cancel", str(run_id), "--reason", "client asked us to stop")
    assert result.exit_code == 0
    assert f"run {run_id} cancelled; {len(pending)} pending action(s) will not be written" in result.output
    with store.session() as session:
        states = {a.step_id: a.state for a in session.scalars(select(Action))}
    assert {states[step] for step in pending} == {"cancelled"}
    assert states["tasks"] == "done"
    (entry,) = audit(store, "run.cancelled")
    assert entry.detail == {"reason": "client asked us to stop", "actions_cancelled": len(pending)}
    assert cli("cancel", "999").exit_code == 1


def one_run(client, services, store, deal_id="D-1"):
    body, headers = signed(deal_closed_event(deal_id))
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    with store.session() as session:
        return session.scalars(select(Run.id).where(Run.deal_id == deal_id)).one()


def test_runs_shows_what_comes_next_and_why_anything_is_stuck(client, services, store, cli):
    active = one_run(client, services, store, "D-1")
    parked_run(client, services, "D-2")
    with store.session() as session:  # a referral follow-up held until its contact exists
        session.add(
            Action(
                run_id=active,
                step_id="referral-ask:follow-up",
                kind="task",
                payload={"tasks": [], "after": "referral-ask"},
                due_at=datetime(2027, 2, 1, tzinfo=UTC),
                state="waiting",
                idempotency_key="test-waiting-follow-up",
            )
        )
    text = cli("runs").output
    blocks = {block.split()[0]: block for block in ("\n" + text).split("\nrun ")[1:]}
    assert "checklist: not_started" in blocks[str(active)]
    # The first thing due: the final invoice's escalation, 2bd after the invoice's due date (2026-12-21).
    assert "next: final-invoice:escalation (escalation) due 2026-12-23 09:00 UTC" in blocks[str(active)]
    assert "waiting: action" in blocks[str(active)]
    assert "referral-ask:follow-up waits for referral-ask" in blocks[str(active)]
    (parked,) = [block for run_id, block in blocks.items() if run_id != str(active)]
    assert "failed: action" in parked and "tasks: CrmPermanent: sandbox: owner 42 inactive" in parked
    assert "full" not in text  # two runs, under the limit: no paging hint


def test_cancel_twice_says_it_was_already_cancelled(client, services, store, cli):
    run_id = one_run(client, services, store)
    first = cli("cancel", str(run_id), "--reason", "client asked us to stop")
    assert first.exit_code == 0
    second = cli("cancel", str(run_id), "--reason", "again")
    assert second.exit_code == 0, second.output
    assert "cancelled; " not in second.output
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d UTC"
    said = rf"run {run_id} was already cancelled on {when} by cli: client asked us to stop"
    assert re.search(said, second.output), second.output
    (entry,) = audit(store, "run.cancelled")  # the second cancel changed nothing
    assert entry.detail["reason"] == "client asked us to stop"


def test_cancel_says_the_tasks_already_written_stay_open(client, services, store, cli):
    run_id = one_run(client, services, store)
    written = len(services.adapters["sandbox"].tasks("D-1"))
    assert written == tasks_per_run()
    result = cli("cancel", str(run_id))
    assert f"{written} task(s) already written stay open in the CRM" in result.output
    assert len(services.adapters["sandbox"].tasks("D-1")) == written  # nothing in the CRM changed
    parked_run(client, services, "D-2")  # nothing written: nothing to say about tasks
    with store.session() as session:
        parked = session.scalars(select(Run.id).where(Run.deal_id == "D-2")).one()
    assert "stay open" not in cli("cancel", str(parked)).output


def test_sandbox_faults_are_listed_and_cleared(client, services, store, cli):
    sandbox = services.adapters["sandbox"]
    assert cli("sandbox", "faults").output.strip() == "no faults: the sandbox CRM answers normally"
    assert cli("sandbox", "fail", "create_tasks", "--kind", "permanent", "--times", "2").exit_code == 0
    assert cli("sandbox", "fail", "send_invite").exit_code == 0
    listed = cli("sandbox", "fail", "--list").output
    assert "create_tasks  permanent  2 more call(s)" in listed
    assert "send_invite  transient  1 more call(s)" in listed
    assert cli("sandbox", "faults").output == listed

    cleared = cli("sandbox", "fail", "create_tasks", "--times", "0")
    assert "cleared 1 create_tasks fault(s)" in cleared.output
    assert [(f.operation, f.remaining) for f in sandbox.faults()] == [("send_invite", 1)]
    one_run(client, services, store)  # the cleared fault no longer strikes
    assert len(sandbox.tasks("D-1")) == tasks_per_run()

    assert "cleared 1 fault(s)" in cli("sandbox", "fail", "--clear").output
    assert sandbox.faults() == []
    assert cli("sandbox", "fail").exit_code == 2  # neither an operation, --list nor --clear
    assert cli("sandbox", "fail", "add_note", "--clear").exit_code == 2


def test_failed_pages_with_limit_and_after(client, services, store, cli):
    parked_run(client, services, "D-1")
    parked_run(client, services, "D-2")
    (first, second) = [row["id"] for row in json.loads(cli("failed", "--format", "json").output)]
    page = cli("failed", "--limit", "1").output
    assert page.startswith(f"action {first} ") and f"action {second} " not in page
    assert f"(1 of 2 failed action(s) shown: `--after {first}` shows the next ones)" in page
    rest = cli("failed", "--after", str(first)).output
    assert rest.startswith(f"action {second} ") and "shown" not in rest
    one = json.loads(cli("failed", "--limit", "1", "--format", "json").output)
    assert [row["id"] for row in one] == [first]
