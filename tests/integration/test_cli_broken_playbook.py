"""One broken playbook file locks no one out, and starts no run with the wrong playbook.

Operator commands never read playbooks. The commands that run them name the broken file and
write the actions of runs already started (each is pinned to its own copy of its playbook),
but start no run while a file has no version loaded: the deal events wait, attempts untouched,
until it loads. Only ``validate`` (and ``serve``) stop on it."""

from __future__ import annotations

import shutil

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from connector.cli import main
from connector.playbooks.registry import PlaybookRegistry
from connector.store import Action, Event, Run
from tests.support.harness import tasks_per_run
from tests.support.helpers import (
    BUNDLED_PLAYBOOKS,
    WEBHOOK_SECRET,
    deal_closed_event,
    deal_closed_today,
    signed,
)

BROKEN = "id: half-saved\nname: A playbook saved half way\nsteps:\n  - id: first\n    task: {title: [\n"
FIXED = "id: half-saved\nname: Saved\nversion: 1\nsteps:\n  - id: first\n    task: {title: Confirm}\n"


@pytest.fixture
def folder(tmp_path):
    copy = tmp_path / "playbooks"
    shutil.copytree(BUNDLED_PLAYBOOKS, copy)
    (copy / "half-saved.yaml").write_text(BROKEN)
    return copy


@pytest.fixture
def offboard(settings, folder):
    env = {
        "OFFBOARD_DATABASE_URL": settings.database_url,
        "OFFBOARD_PLAYBOOKS": str(folder),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_SWEEP_INTERVAL_SECONDS": "0",
    }

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args), env=env)

    return invoke


@pytest.fixture
def parked(client, services, store):
    """A run whose checklist write was refused: one failed action."""
    services.adapters["sandbox"].inject("create_tasks", "permanent", 1)
    body, headers = signed(deal_closed_event("D-7"))
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    with store.session() as session:
        action = session.scalars(select(Action).where(Action.state == "failed")).one()
        return action.id, action.run_id


def state_of(store, table, row_id) -> str:
    with store.session() as session:
        return str(session.get(table, row_id).state)


def assert_quiet_about_playbooks(result) -> None:
    assert result.exit_code == 0, result.output
    assert "half-saved.yaml" not in result.output + result.stderr


def test_operator_commands_work_and_never_read_the_playbooks(offboard, parked, store):
    action_id, run_id = parked
    for args in (["runs"], ["runs", "--format", "json"], ["failed"], ["sandbox", "tasks"]):
        assert_quiet_about_playbooks(offboard(*args))
    assert_quiet_about_playbooks(offboard("retry", str(action_id)))
    assert state_of(store, Action, action_id) == "pending"
    assert_quiet_about_playbooks(offboard("cancel", str(run_id)))
    assert state_of(store, Run, run_id) == "cancelled"
    assert_quiet_about_playbooks(offboard("sandbox", "fail", "add_note", "--times", "1"))
    assert_quiet_about_playbooks(offboard("sandbox", "seed"))


def assert_names_the_broken_file(result, name: str = "half-saved.yaml") -> None:
    assert result.exit_code == 0, result.output
    assert name in result.stderr
    assert "offboard validate" in result.stderr


def events(store) -> dict[str, tuple[str, int, str | None]]:
    with store.session() as session:
        return {e.event_key: (e.state, e.attempts, e.outcome) for e in session.scalars(select(Event))}


def event(store, name: str) -> tuple[str, int, str | None]:
    (found,) = [value for key, value in events(store).items() if name in key]
    return found


def runs(store) -> set[tuple[str, str, str]]:
    with store.session() as session:
        return {(r.deal_id, r.playbook_id, r.trigger) for r in session.scalars(select(Run))}


def deliver(client, event: dict) -> None:
    body, headers = signed(event)
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202


@pytest.fixture
def project_playbook_broken(folder):
    """completed-project.yaml half saved since before the command started; restore() fixes it."""
    (folder / "half-saved.yaml").unlink()
    path = folder / "completed-project.yaml"
    good = path.read_text()
    path.write_text(BROKEN.replace("half-saved", "completed-project"))
    return lambda: path.write_text(good)


def waiting_for(name: str) -> str:
    return f"waiting: {name} does not load; fix it and run offboard validate"


def test_worker_once_writes_started_runs_but_starts_none_while_a_file_is_broken(
    offboard, client, services, store, folder, project_playbook_broken
):
    deliver(client, deal_closed_event("D-7"))
    services.worker().process_events()  # D-7's run started with every playbook loaded; nothing written yet
    assert services.adapters["sandbox"].tasks("D-7") == []
    deliver(client, deal_closed_today("D-8"))  # a project deal: completed-project's, never fallback's

    result = offboard("worker", "--once")

    assert_names_the_broken_file(result, "completed-project.yaml")
    # the started run is pinned to its copy
    assert len(services.adapters["sandbox"].tasks("D-7")) == tasks_per_run()
    assert runs(store) == {("D-7", "completed-project", "deal_closed")}
    state, attempts, outcome = event(store, "evt-D-8")
    assert (state, attempts) == ("pending", 0)  # waiting: neither failed nor an attempt used up
    assert outcome == waiting_for(str(folder / "completed-project.yaml"))
    assert f"1 event(s) {outcome}" in result.stderr

    assert offboard("worker", "--once").exit_code == 0  # still broken: still waiting, still no attempt used
    assert event(store, "evt-D-8")[:2] == ("pending", 0)
    assert services.adapters["sandbox"].tasks("D-8") == []

    project_playbook_broken()
    result = offboard("worker", "--once")

    assert result.exit_code == 0, result.output
    assert "not loaded" not in result.stderr and "event(s) waiting:" not in result.stderr
    assert runs(store) == {(deal, "completed-project", "deal_closed") for deal in ("D-7", "D-8")}
    assert event(store, "evt-D-8")[0] == "done"
    assert len(services.adapters["sandbox"].tasks("D-8")) == tasks_per_run()


def test_a_deal_reopening_is_still_handled_while_a_file_is_broken(
    offboard, client, services, store, project_playbook_broken
):
    deliver(client, deal_closed_event("D-7"))
    services.worker().process_events()
    reopened = deal_closed_event("D-7", outcome=None, closed=False, close_date=None, stage="negotiation")
    deliver(client, reopened | {"id": "reopen-D-7", "type": "deal.reopened"})

    assert offboard("worker", "--once").exit_code == 0

    assert event(store, "reopen-D-7")[:2] == ("done", 1)
    with store.session() as session:
        assert session.scalars(select(Run)).one().state == "cancelled"
    assert services.adapters["sandbox"].tasks("D-7") == []


def test_sweep_queues_contract_ends_that_wait_while_a_file_is_broken(offboard, store, folder):
    assert offboard("sandbox", "seed").exit_code == 0
    result = offboard("sweep")
    assert_names_the_broken_file(result)
    broken = str(folder / "half-saved.yaml")
    assert f"pending: {waiting_for(broken)}" in result.stdout
    waiting = [e for e in events(store).values() if e[2] == waiting_for(broken)]
    assert len(waiting) == 3 and {state for state, _, _ in waiting} == {"pending"}
    assert runs(store) == set()

    (folder / "half-saved.yaml").unlink()
    assert offboard("worker", "--once").exit_code == 0
    assert runs(store) == {(deal, "contract-ending", "contract_end") for deal in ("D-101", "D-102", "D-103")}


def test_demo_starts_nothing_while_a_file_is_broken(offboard, services, store):
    result = offboard("demo", "--in-process")
    assert result.exit_code == 1
    assert "half-saved.yaml does not load" in result.output + result.stderr
    assert "offboard validate" in result.output + result.stderr
    assert events(store) == {}
    assert services.adapters["sandbox"].tasks() == []


def test_only_a_file_with_no_good_version_counts_as_missing(folder):
    registry = PlaybookRegistry(folder, strict=False, check_every=0)
    assert registry.unloaded == [str(folder / "half-saved.yaml")]
    (folder / "half-saved.yaml").write_text(FIXED)
    registry.reload()
    assert registry.unloaded == []
    good = (folder / "completed-project.yaml").read_text()
    (folder / "completed-project.yaml").write_text(BROKEN)  # broken after it loaded: its last good version
    registry.reload()
    assert registry.unloaded == [] and registry.problems
    assert "completed-project" in {item.id for item in registry()}
    (folder / "completed-project.yaml").write_text(good)


def test_validate_still_fails_on_the_broken_file(offboard):
    result = offboard("validate")
    assert result.exit_code == 1
    assert "half-saved.yaml" in result.output


def test_serve_refuses_to_start_on_the_broken_file(offboard):
    result = offboard("serve", "--port", "9")
    assert result.exit_code == 1
    assert "half-saved.yaml" in result.output + result.stderr


def test_when_no_playbook_loads_the_commands_that_run_them_stop_and_the_others_work(offboard, folder):
    for path in folder.glob("*.yaml"):
        path.write_text(BROKEN)
    for args in (["worker", "--once"], ["sweep"], ["demo", "--in-process"]):
        result = offboard(*args)
        assert result.exit_code == 1, (args, result.output)
        assert "completed-project.yaml" in result.output + result.stderr
    assert_quiet_about_playbooks(offboard("runs"))
