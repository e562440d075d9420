"""The live checklist against the sandbox CRM: completion read back by the tracking pass, steps
that wait on steps, escalation once, evidence, progress on the deal, and the record."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from connector.services import build
from connector.store import Action, ChecklistTask, Run
from connector.usecases.tracking import track
from tests.support.helpers import deal_closed_event, make_settings, signed
from tests.support.playbooks import LIVE_CHECKLIST

PLAYBOOK = LIVE_CHECKLIST
ROLES = {"finance": "finance-1", "manager": "manager-1", "it": "it-1"}


@pytest.fixture
def playbook() -> str:
    return PLAYBOOK


@pytest.fixture
def services(db_url, store, clock, tmp_path: Path, playbook: str):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "live.yaml").write_text(playbook)
    settings = make_settings(
        db_url,
        OFFBOARD_PLAYBOOKS=str(folder),
        OFFBOARD_ROLES=ROLES,
        OFFBOARD_WORKER_CONCURRENCY=1,
        OFFBOARD_TRACK_INTERVAL_SECONDS=0,  # the tests run the tracking pass themselves (``passes``)
    )
    return build(settings, store=store, clock=clock)


@pytest.fixture
def sandbox(services):
    return services.adapters["sandbox"]


@pytest.fixture
def started(client, services):
    body, headers = signed(deal_closed_event())
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()


def at(day: int, hour: int = 10) -> datetime:
    return datetime(2026, 11, day, hour, tzinfo=UTC)


def passes(services, clock, when: datetime) -> None:
    """Time moves to ``when``; a tracking pass reads the tasks back; the worker writes what follows."""
    clock.now = when
    track(services.settings, services.store, services.adapters, when)
    services.worker().run_until_idle()


def task(sandbox, title: str):
    (found,) = [t for t in sandbox.tasks("D-1") if t.subject == title]
    return found


def deal_progress(sandbox) -> tuple[str, str, str]:
    values = sandbox.properties("deal", "D-1")
    return values["offboard_status"], values["offboard_progress"], values["offboard_next_due"]


def items(store) -> dict[str, str]:
    with store.read() as session:
        return {i.step_id: i.status for i in session.scalars(select(ChecklistTask))}


def test_the_checklist_lives_from_not_started_to_the_record(services, sandbox, store, clock, started):
    assert sorted(t.subject for t in sandbox.tasks("D-1")) == [
        "Send the final invoice",
        "Transfer Acme Corp's data",
    ]
    assert items(store) == {"transfer-data": "open", "final-invoice": "open"}
    assert deal_progress(sandbox) == ("not_started", "0/4", "2026-11-23")
    assert sandbox.properties("deal", "D-1")["offboard_playbook"] == "live-checklist@1"

    # Transfer done on Tuesday with its evidence: revocation is released, due a business day later.
    sandbox.complete_task(
        task(sandbox, "Transfer Acme Corp's data").id, by="owner-1", evidence="ticket 42", at=at(24)
    )
    passes(services, clock, at(24, 11))
    revoke = task(sandbox, "Revoke access")
    assert revoke.due_at == at(25, 9) and revoke.owner_id == "it-1"
    assert deal_progress(sandbox) == ("overdue", "1/4", "2026-11-23")  # the invoice was due Monday

    # Revoked without evidence: the run waits for it and the person who did it is asked, once.
    sandbox.complete_task(revoke.id, by="it-1", at=at(25, 12))
    passes(services, clock, at(25, 13))
    passes(services, clock, at(25, 14))
    assert items(store)["revoke-access"] == "needs_evidence"
    (ask,) = [t for t in sandbox.tasks("D-1") if t.subject.startswith("Add evidence")]
    assert ask.owner_id == "it-1" and "Evidence:" in ask.body
    assert deal_progress(sandbox)[0] == "needs_evidence"
    sandbox.add_evidence(revoke.id, file="access-removed.pdf", at=at(25, 15))
    passes(services, clock, at(25, 16))
    assert items(store)["revoke-access"] == "completed"

    # The invoice, done late, releases the thank-you dated from it; the thank-you finishes the run.
    sandbox.complete_task(task(sandbox, "Send the final invoice").id, by="finance-1", at=at(26, 10))
    passes(services, clock, at(26, 11))
    thanks = task(sandbox, "Thank Pat")
    assert thanks.due_at == at(27, 9)
    assert deal_progress(sandbox) == ("in_progress", "3/4", "2026-11-27")
    sandbox.complete_task(thanks.id, by="owner-1", at=at(27, 10))
    passes(services, clock, at(27, 11))
    assert deal_progress(sandbox) == ("complete", "4/4", "")

    (record,) = sandbox.files("D-1")
    for step in ("transfer-data", "final-invoice", "revoke-access", "thank-you"):
        assert f"| {step} |" in record.content
    assert "ticket 42" in record.content and "file: access-removed.pdf" in record.content
    assert record.filename == "offboarding-record-sandbox-D-1.md"
    (note,) = [n for n in sandbox.notes("D-1") if n.id == record.note_id]
    assert "revoke-access: completed by it-1" in note.body
    with store.read() as session:
        run = session.scalars(select(Run)).one()
        assert (run.status, run.state) == ("complete", "done") and run.finished_at == at(27, 11)


def test_an_overdue_task_is_escalated_once_across_restarts(services, sandbox, store, clock, started):
    # The invoice was due Monday 09:00; two business days later it is still open.
    passes(services, clock, at(25, 8))
    assert not [t for t in sandbox.tasks("D-1") if t.subject.startswith("Overdue")]
    passes(services, clock, at(25, 10))
    for hour in (11, 12):  # later passes, each with a fresh worker (a restart)
        passes(services, clock, at(25, hour))
    (escalation,) = [t for t in sandbox.tasks("D-1") if t.subject.startswith("Overdue")]
    assert escalation.subject == "Overdue: Send the final invoice" and escalation.owner_id == "manager-1"
    assert "still open" in escalation.body
    assert len([n for n in sandbox.notes("D-1") if n.body.startswith("Escalated:")]) == 1


def test_a_task_completed_before_it_is_overdue_is_not_escalated(services, sandbox, store, clock, started):
    sandbox.complete_task(task(sandbox, "Send the final invoice").id, by="finance-1", at=at(24))
    clock.now = at(25, 10)  # no tracking pass ran: the escalation reads the task itself
    services.worker().run_until_idle()
    assert not [t for t in sandbox.tasks("D-1") if t.subject.startswith("Overdue")]
    assert items(store)["final-invoice"] == "completed"
    with store.read() as session:
        (state,) = session.scalars(select(Action.state).where(Action.step_id == "final-invoice:escalation"))
    assert state == "done"


def test_a_task_reopened_in_the_crm_counts_as_open_again(services, sandbox, store, clock, started):
    invoice = task(sandbox, "Send the final invoice").id
    sandbox.complete_task(invoice, by="finance-1", at=at(23))
    passes(services, clock, at(23, 11))
    assert items(store)["final-invoice"] == "completed"
    sandbox.reopen_task(invoice, at=at(23, 12))
    passes(services, clock, at(23, 13))
    assert items(store)["final-invoice"] == "open"
    assert deal_progress(sandbox)[1] == "0/4"


RISKY = PLAYBOOK.replace(
    """owner: "role:it",
           evidence: required}""",
    """owner: "role:it",
           evidence: required, deadline: contract_end}""",
)


@pytest.mark.parametrize("playbook", [RISKY])
def test_a_run_projected_past_the_contract_end_is_flagged_and_plan_shows_planned_against_actual(
    client, services, sandbox, store, clock, tmp_path, monkeypatch
):
    from click.testing import CliRunner

    from connector.cli import main

    assert "deadline: contract_end" in RISKY
    body, headers = signed(deal_closed_event(contract_end="2026-11-25"))
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    passes(services, clock, at(23, 11))  # on course: the transfer is due today
    with store.read() as session:
        assert session.scalars(select(Run.at_risk)).one() is None

    # Thursday, the transfer still open: revocation cannot be done by Wednesday's contract end.
    passes(services, clock, at(26, 11))
    with store.read() as session:
        risk = session.scalars(select(Run.at_risk)).one()
    assert risk is not None and "revoke-access" in risk and "contract end" in risk
    (note,) = [n for n in sandbox.notes("D-1") if n.body.startswith("Offboarding at risk")]
    assert "revoke-access" in note.body and "projected to finish" in note.body
    passes(services, clock, at(26, 15))
    assert len([n for n in sandbox.notes("D-1") if n.body.startswith("Offboarding at risk")]) == 1

    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))
    monkeypatch.setenv("OFFBOARD_ROLES", '{"finance": "finance-1", "manager": "manager-1", "it": "it-1"}')
    shown = CliRunner().invoke(
        main, ["plan", "--crm", "sandbox", "--deal", "D-1", "--now", "2026-11-26T11:00"]
    )
    assert shown.exit_code == 0, shown.output
    assert "under way" in shown.output and "Planned against actual" in shown.output
    lines = {
        line.split()[0]: line for line in shown.output.splitlines() if line.startswith("  ") and line.split()
    }
    assert "2026-11-23" in lines["transfer-data"] and "open" in lines["transfer-data"]
    assert "at risk" in shown.output
    runs = CliRunner().invoke(main, ["runs"])
    assert "at risk: " in runs.output and "checklist: overdue" in runs.output


def test_a_deal_reopened_mid_checklist_shows_the_offboarding_cancelled(
    client, services, sandbox, store, clock, started
):
    sandbox.complete_task(
        task(sandbox, "Transfer Acme Corp's data").id, by="owner-1", evidence="ticket 42", at=at(24)
    )
    passes(services, clock, at(24, 11))
    reopened = deal_closed_event() | {"id": "evt-reopen", "type": "deal.reopened"}
    body, headers = signed(reopened)
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    assert deal_progress(sandbox)[:2] == ("cancelled", "1/4")
    assert set(items(store).values()) == {"completed", "cancelled"}
    passes(services, clock, at(25, 11))  # the tracking pass leaves a cancelled run alone
    assert deal_progress(sandbox)[0] == "cancelled"


def test_offboard_track_reads_the_tasks_back_now(services, sandbox, store, clock, started, monkeypatch):
    from click.testing import CliRunner

    from connector.cli import main

    sandbox.complete_task(task(sandbox, "Transfer Acme Corp's data").id, by="owner-1", evidence="ticket 42")
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))
    monkeypatch.setenv("OFFBOARD_ROLES", '{"finance": "finance-1", "manager": "manager-1", "it": "it-1"}')
    shown = CliRunner().invoke(main, ["track"])
    assert shown.exit_code == 0, shown.output
    assert "sandbox:sandbox: 2 task(s) read back, 1 changed" in shown.output
    assert task(sandbox, "Revoke access").owner_id == "it-1"  # released and written by the same command
    assert "no checklist is under way" not in shown.output


def test_a_task_deleted_in_the_crm_stops_counting_after_the_daily_full_read(
    services, sandbox, store, clock, started
):
    passes(services, clock, at(23, 11))  # the first pass reads every task
    sandbox.delete_task(task(sandbox, "Send the final invoice").id)
    passes(services, clock, at(23, 13))  # later passes read only what changed: not seen yet
    assert items(store)["final-invoice"] == "open"
    passes(services, clock, at(24, 12))  # a day on, every task again: the invoice is gone
    assert items(store)["final-invoice"] == "cancelled"
    # The thank-you waited on the invoice: it will not happen, so two steps are left to do.
    assert deal_progress(sandbox)[1] == "0/2"
    sandbox.complete_task(
        task(sandbox, "Transfer Acme Corp's data").id, by="owner-1", evidence="t-1", at=at(24, 13)
    )
    passes(services, clock, at(24, 14))
    sandbox.complete_task(task(sandbox, "Revoke access").id, by="it-1", evidence="t-2", at=at(25, 13))
    passes(services, clock, at(25, 14))
    assert deal_progress(sandbox)[:2] == ("complete", "2/2")
    (record,) = sandbox.files("D-1")
    assert "| final-invoice |" in record.content and "cancelled" in record.content
