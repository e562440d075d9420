"""Runs are pinned to their playbook; the contract-end sweep starts runs once; re-opening cancels."""

from __future__ import annotations

import shutil
from datetime import date, timedelta

import yaml
from click.testing import CliRunner
from sqlalchemy import select

from connector.cli import main
from connector.generic import GenericEvent
from connector.playbooks.model import Playbook
from connector.playbooks.pins import check_against_database
from connector.store import Action, Event, Run
from tests.support.helpers import deal_closed_event, signed


def deliver(client, event):
    body, headers = signed(event)
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202


def runs(store):
    with store.session() as session:
        return list(session.scalars(select(Run).order_by(Run.id)))


def bundled_version(path):
    """The version a playbook file declares."""
    return int(yaml.safe_load(path.read_text())["version"])


def editable_playbooks(services, tmp_path):
    folder = tmp_path / "playbooks"
    shutil.copytree(services.settings.playbooks, folder)
    services.playbooks.folder = folder
    services.playbooks.check_every = 0
    return folder


def test_a_run_keeps_the_playbook_it_started_with(client, services, store, tmp_path):
    folder = editable_playbooks(services, tmp_path)
    deliver(client, deal_closed_event("D-1"))
    services.worker().run_until_idle()

    path = folder / "completed-project.yaml"
    version = bundled_version(path)
    path.write_text(path.read_text().replace("Confirm the end date with", "Double-check the end date with"))
    problems, _ = check_against_database(services.settings.database_url, services.playbooks())
    assert problems == [
        f"{path}: version: the content changed but the version is still {version}, and runs started with "
        f"the old content; set version: {version + 1} so runs tell the two apart"
    ]
    path.write_text(path.read_text().replace(f"version: {version}", f"version: {version + 1}", 1))
    assert check_against_database(services.settings.database_url, services.playbooks())[0] == []

    deliver(client, deal_closed_event("D-2"))
    services.worker().run_until_idle()
    first, second = runs(store)
    assert (first.playbook_version, second.playbook_version) == (version, version + 1)
    assert first.playbook_hash != second.playbook_hash
    pinned = Playbook.model_validate(first.playbook)
    assert pinned.steps[0].task.title == "Confirm the end date with {{ company.name }}"
    titles = {
        t.deal_id: t.subject for t in services.adapters["sandbox"].tasks() if t.step_id == "confirm-end-date"
    }
    assert titles == {
        "D-1": "Confirm the end date with Acme Corp",
        "D-2": "Double-check the end date with Acme Corp",
    }


def test_validate_command_refuses_an_unbumped_edit(client, services, tmp_path, monkeypatch):
    folder = editable_playbooks(services, tmp_path)
    deliver(client, deal_closed_event("D-1"))
    services.worker().run_until_idle()
    path = folder / "completed-project.yaml"
    version = bundled_version(path)
    path.write_text(path.read_text().replace("priority: 20", "priority: 25"))
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    result = CliRunner().invoke(main, ["validate", str(folder)])
    assert result.exit_code == 1
    assert (
        f"completed-project.yaml: version: the content changed but the version is still {version}"
        in result.output
    )


def put(services, deal_id, days_to_end, contract_type="retainer", today=date(2026, 11, 20)):
    event = deal_closed_event(
        deal_id,
        contract_type=contract_type,
        outcome=None,
        closed=False,
        close_date=None,
        contract_end=(today + timedelta(days=days_to_end)).isoformat(),
    )
    deal = GenericEvent.model_validate(event).to_deal("sandbox")
    services.adapters["sandbox"].put_deal(deal)
    return event


def test_sweep_starts_runs_for_contracts_ending_within_the_lead_time(services, store):
    put(services, "R-1", 20)  # a retainer ending in 20 days: contract-ending (lead 30d)
    put(services, "R-2", 60)  # too far out
    put(services, "P-1", 10, "project")  # ends soon, but no contract-end playbook is for projects
    worker = services.worker()
    report = worker.sweep()
    assert (report.found, report.queued) == ({"sandbox": 2}, 2)
    worker.run_until_idle()
    (run,) = runs(store)
    assert (run.deal_id, run.playbook_id, run.trigger) == ("R-1", "contract-ending", "contract_end")
    assert {t.step_id for t in services.adapters["sandbox"].tasks("R-1")} >= {"confirm-renewal-or-end"}
    with store.session() as session:
        ignored = session.scalars(select(Event).where(Event.event_key.like("sandbox:P-1:%"))).one()
        assert ignored.state == "ignored"
    assert worker.sweep().queued == 0  # the same contracts again: nothing new


def test_a_deal_closed_event_after_the_sweep_starts_nothing_new(client, services, store):
    put(services, "R-1", 20)
    worker = services.worker()
    worker.sweep()
    worker.run_until_idle()
    tasks_before = len(services.adapters["sandbox"].tasks("R-1"))
    # The retainer now closes lost: terminated-contract would match, but the deal is already offboarding.
    deliver(
        client, deal_closed_event("R-1", outcome="lost", contract_type="retainer", contract_end="2026-12-10")
    )
    worker.run_until_idle()
    assert [r.playbook_id for r in runs(store)] == ["contract-ending"]
    assert len(services.adapters["sandbox"].tasks("R-1")) == tasks_before
    with store.session() as session:
        closed = session.scalars(select(Event).where(Event.source == "generic")).one()
        assert closed.state == "done"
        assert "already has run" in closed.outcome and "contract-ending" in closed.outcome


def test_the_worker_sweeps_on_its_schedule(services, store, clock):
    put(services, "R-1", 20)
    worker = services.worker()
    worker.tick()
    assert len(runs(store)) == 1
    put(services, "R-2", 25)
    worker.tick()
    assert len(runs(store)) == 1  # the next sweep is an hour away
    clock.advance(seconds=services.settings.sweep_interval_seconds + 1)
    worker.tick()
    worker.tick()
    assert [r.deal_id for r in runs(store)] == ["R-1", "R-2"]


def test_sweep_command(services, monkeypatch):
    put(services, "R-1", 20, today=date.today())
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))
    result = CliRunner().invoke(main, ["sweep"])
    assert result.exit_code == 0, result.output
    assert "sandbox: 1 contract(s) ending within the lead time" in result.output
    assert "1 new contract-end event(s) queued" in result.output
    assert "started with playbook contract-ending" in result.output


def test_reopening_cancels_pending_actions_and_records_why(client, services, store):
    deliver(client, deal_closed_event("D-1"))
    services.worker().run_until_idle()
    deliver(client, deal_closed_event("D-1") | {"id": "evt-2", "type": "deal.reopened"})
    services.worker().run_until_idle()
    (run,) = runs(store)
    assert run.state == "cancelled" and "re-opened" in run.note
    with store.session() as session:
        survey = session.scalars(select(Action).where(Action.kind == "survey")).one()
    assert survey.state == "cancelled" and "re-opened" in survey.last_error
    # Closing again later may start a new offboarding: a different playbook this time.
    deliver(client, deal_closed_event("D-1", outcome="lost", contract_type="retainer") | {"id": "evt-3"})
    services.worker().run_until_idle()
    assert [(r.playbook_id, r.state) for r in runs(store)] == [
        ("completed-project", "cancelled"),
        ("terminated-contract", "active"),
    ]
