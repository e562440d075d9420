"""Bad numbers on the operator commands: a one-line usage error and exit 2, never a traceback.

Ids are whole numbers from 1 that fit a BIGINT; limits are at least 1.
"""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from connector.cli import main
from connector.cli_operator import MAX_ID
from connector.store import Action, AuditEntry, Run
from tests.support.helpers import deal_closed_event, signed

TOO_BIG = str(MAX_ID + 1)
BAD_IDS = ["99999999999999999999", TOO_BIG, "0", "-1", "abc", ""]
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # checked before any query
BAD_LIMITS = ["0", "-1", "x"]


@pytest.fixture
def cli(services, monkeypatch):
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))

    def invoke(*args: str):
        return CliRunner().invoke(main, list(args))

    return invoke


@pytest.fixture
def one_run(client, services, store):
    body, headers = signed(deal_closed_event())
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    with store.session() as session:
        return session.scalars(select(Run.id)).one()


def snapshot(store):
    with store.session() as session:
        return (
            sorted(session.execute(select(Action.id, Action.state)).all()),
            session.scalar(select(func.count()).select_from(AuditEntry)),
            sorted(session.execute(select(Run.id, Run.state)).all()),
        )


def assert_usage_error(result, name: str, value: str = "") -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and not isinstance(result.exception, OverflowError)
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.output
    # A negative number where an argument goes reads as an unknown option: a usage error too.
    unknown_option = value.startswith("-") and "No such option" in errors[0]
    assert f"Invalid value for '{name}'" in errors[0] or unknown_option


COMMANDS_TAKING_IDS = [
    (["runs"], "[RUN]"),
    (["runs", "--before"], "--before"),
    (["failed", "--after"], "--after"),
    (["retry"], "[IDS]..."),
    (["retry", "1"], "[IDS]..."),  # a bad id among good ones
    (["cancel"], "RUN_ID"),
]


@SQLITE_ONLY
@pytest.mark.parametrize("command,name", COMMANDS_TAKING_IDS)
@pytest.mark.parametrize("value", BAD_IDS)
def test_bad_ids_are_usage_errors(cli, store, one_run, command, name, value):
    before = snapshot(store)
    assert_usage_error(cli(*command, value), name, value)
    assert snapshot(store) == before


@SQLITE_ONLY
@pytest.mark.parametrize("command", [["runs"], ["failed"]])
@pytest.mark.parametrize("value", BAD_LIMITS)
def test_bad_limits_are_usage_errors(cli, command, value):
    assert_usage_error(cli(*command, "--limit", value), "--limit")


@SQLITE_ONLY
@pytest.mark.parametrize("value", ["-1", "x", str(2**31)])
def test_bad_fault_counts_are_usage_errors(cli, services, value):
    assert_usage_error(cli("sandbox", "fail", "send_invite", "--times", value), "--times")
    assert services.adapters["sandbox"].faults() == []


def test_the_largest_id_is_looked_up_not_a_crash(cli, store, one_run):
    before = snapshot(store)
    for command in (["cancel", str(MAX_ID)], ["runs", str(MAX_ID)]):
        result = cli(*command)
        assert result.exit_code == 1, result.output
        assert result.output.strip() == f"Error: no run {MAX_ID}"
    missing = cli("retry", str(MAX_ID))
    assert missing.exit_code == 1 and f"not failed (or no such action): {MAX_ID}" in missing.output
    assert cli("failed", "--after", str(MAX_ID)).output.strip() == f"no failed actions after action {MAX_ID}"
    assert snapshot(store) == before


def test_limits_hold_and_a_huge_one_is_fine(cli, client, services, one_run):
    for deal in ("D-2", "D-3"):
        body, headers = signed(deal_closed_event(deal))
        client.post("/webhooks/generic", data=body, headers=headers)
    services.worker().run_until_idle()
    limited = cli("runs", "--limit", "1")
    assert limited.exit_code == 0
    assert sum(line.startswith("run ") for line in limited.output.splitlines()) == 1
    assert "--before" in limited.output
    everything = cli("runs", "--limit", "99999999999999999999")
    assert everything.exit_code == 0, everything.output
    assert sum(line.startswith("run ") for line in everything.output.splitlines()) == 3
