"""``offboard playbooks publish|list|show|history --account``: an account's own playbooks from the
command line, and what ``offboard plan`` previews a deal of that account against."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import select

from connector.cli import main
from connector.cli_playbooks import plan_playbooks
from connector.connections import Connections
from connector.errors import PlaybookError
from connector.keyring import Keyring
from connector.models import Deal
from connector.settings import load_settings
from connector.store import AuditEntry
from connector.store.tables import PlaybookVersion
from tests.integration.test_account_playbooks import playbook
from tests.support.helpers import BUNDLED_PLAYBOOKS, deal_closed_event

KEY = Fernet.generate_key().decode()
WHEN = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")  # the command runs on the real clock
TOKEN = "pat-na1-5e3b4c1d-0000-4000-8000-000000000111"


@pytest.fixture
def connections(store, clock) -> Connections:
    repository = Connections(store, Keyring(KEY), clock=clock)
    for account in ("111", "222"):
        repository.save_install("hubspot", account, access_token=TOKEN, refresh_token=None, expires_at=None)
    return repository


@pytest.fixture
def cli(store, db_url, monkeypatch, connections):
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", db_url)
    monkeypatch.setenv("OFFBOARD_ENCRYPTION_KEYS", KEY)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(BUNDLED_PLAYBOOKS))

    def invoke(*args: str):
        result = CliRunner().invoke(main, ["playbooks", *args])
        assert "Traceback" not in result.output
        assert TOKEN not in result.output and KEY not in result.output
        return result

    return invoke


def write(folder: Path, text: str, name: str = "account-close.yaml") -> str:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return str(path)


def stored(store) -> list[tuple[str, str, str, int]]:
    with store.read() as session:
        rows = session.scalars(select(PlaybookVersion).order_by(PlaybookVersion.id)).all()
        return [(r.crm, r.account, r.playbook_id, r.version) for r in rows]


def test_publish_then_list_show_and_history(cli, store, tmp_path):
    first = write(tmp_path, playbook())
    other = write(tmp_path, playbook("renewal-lost", match="{outcome: [lost]}"), "renewal-lost.yaml")

    done = cli("publish", first, other, "--account", "hubspot:111", "--by", "revops@a.example")

    assert done.exit_code == 0, done.output
    assert done.output.splitlines() == [
        f"published account-close v1  ({first})",
        f"published renewal-lost v1  ({other})",
    ]
    listed = cli("list", "--account", "hubspot:111")
    assert listed.exit_code == 0
    assert [WHEN.sub("<when>", line) for line in listed.output.splitlines()] == [
        "account-close v1  published <when> by revops@a.example",
        "renewal-lost v1  published <when> by revops@a.example",
    ]
    shown = cli("show", "account-close", "--account", "hubspot:111")
    assert shown.exit_code == 0 and shown.output == playbook()
    with store.read() as session:
        actors = session.scalars(
            select(AuditEntry.actor).where(AuditEntry.verb == "playbook.published")
        ).all()
    assert actors == ["revops@a.example", "revops@a.example"]


def test_history_lists_every_version_and_show_takes_one(cli, tmp_path):
    path = write(tmp_path, playbook())
    assert cli("publish", path, "--account", "hubspot:111", "--by", "ann").exit_code == 0
    write(tmp_path, playbook(version=2, title="Second"))
    assert cli("publish", path, "--account", "hubspot:111", "--by", "bob").exit_code == 0

    history = cli("history", "account-close", "--account", "hubspot:111")

    lines = [WHEN.sub("<when>", line) for line in history.output.splitlines()]
    assert history.exit_code == 0 and len(lines) == 2
    assert lines[0].startswith("v1  published <when> by ann  sha256 ")
    assert lines[1].startswith("v2  published <when> by bob  sha256 ") and lines[1].endswith("(in use)")
    assert cli("show", "account-close", "--account", "hubspot:111", "--version", "1").output == playbook()
    assert "Second: kickoff" in cli("show", "account-close", "--account", "hubspot:111").output
    missing = cli("show", "account-close", "--account", "hubspot:111", "--version", "7")
    assert missing.exit_code == 1
    assert "hubspot:111 has no version 7 of 'account-close' (versions: 1, 2)" in missing.output
    assert "has published no playbook 'nope'" in cli("history", "nope", "--account", "hubspot:111").output


def test_publishing_the_same_file_again_says_so_and_stores_nothing(cli, store, tmp_path):
    path = write(tmp_path, playbook())
    cli("publish", path, "--account", "hubspot:111")

    again = cli("publish", path, "--account", "hubspot:111")

    assert again.exit_code == 0
    assert again.output.strip() == (
        f"unchanged account-close v1: the same text is already the latest version published  ({path})"
    )
    assert stored(store) == [("hubspot", "111", "account-close", 1)]


def test_a_changed_file_without_a_higher_version_is_refused(cli, store, tmp_path):
    path = write(tmp_path, playbook())
    cli("publish", path, "--account", "hubspot:111")
    write(tmp_path, playbook(title="Changed"))

    refused = cli("publish", path, "--account", "hubspot:111")

    assert refused.exit_code == 1
    assert f"{path}: version: 1 is not higher than 1" in refused.output
    assert "set version: 2" in refused.output and "nothing published" in refused.output
    assert stored(store) == [("hubspot", "111", "account-close", 1)]


def test_an_invalid_file_names_file_and_field_and_nothing_is_stored(cli, store, tmp_path):
    good = write(tmp_path, playbook())
    bad = write(tmp_path, playbook("bad-one").replace("due: +0d", "due: -3x"), "bad-one.yaml")

    refused = cli("publish", good, bad, "--account", "hubspot:111")

    assert refused.exit_code == 1
    assert f"{bad}: steps[0].task.due: '-3x' is not an offset" in refused.output
    assert good not in refused.output
    assert stored(store) == []
    validated = CliRunner().invoke(main, ["validate", good, bad])  # the same lines as validate's
    assert [line for line in refused.output.splitlines() if line.startswith(bad)] == [
        line for line in validated.output.splitlines() if line.startswith(bad)
    ]


def test_an_account_not_installed_here_is_refused(cli, store, tmp_path):
    path = write(tmp_path, playbook())

    unknown = cli("publish", path, "--account", "hubspot:999")

    assert unknown.exit_code == 1
    assert "no connection to the hubspot account 999 is installed here" in unknown.output
    assert stored(store) == []
    assert "no connection to the hubspot account 999" in cli("list", "--account", "hubspot:999").output


@pytest.mark.parametrize("target", ["hubspot", "hubspot:", ":111", ""])
def test_a_malformed_account_is_a_usage_error(cli, tmp_path, target):
    result = cli("publish", write(tmp_path, playbook()), "--account", target)
    assert result.exit_code == 2
    assert "expected CRM:ACCOUNT, e.g. hubspot:12345678" in result.output


def test_list_without_account_shows_the_folder_and_an_account_without_its_own_says_so(cli):
    folder = cli("list")
    assert folder.exit_code == 0 and "completed-project v" in folder.output
    own = cli("list", "--account", "hubspot:222")
    assert own.exit_code == 0
    assert own.output.strip() == (
        f"hubspot:222 has published no playbooks of its own: its deals get the deployment's, "
        f"from {BUNDLED_PLAYBOOKS}"
    )


def test_role_warnings_use_the_accounts_own_roles(cli, connections, tmp_path):
    connections.set_config("hubspot", "111", "role.delivery", "555")
    text = playbook().replace("due: +0d, owner: deal_owner", "due: +0d, owner: role:delivery")
    path = write(tmp_path, text)

    mapped = cli("publish", path, "--account", "hubspot:111")
    unmapped = cli("publish", path, "--account", "hubspot:222")

    assert mapped.exit_code == unmapped.exit_code == 0
    assert "has no mapping" not in mapped.output
    assert f"{path}: steps[0].task.owner: warning: role:delivery has no mapping" in unmapped.output


# --- what `offboard plan` previews a deal against -------------------------------------------------


def test_plan_uses_the_deals_accounts_playbooks(cli, db_url, tmp_path, monkeypatch):
    cli("publish", write(tmp_path, playbook()), "--account", "hubspot:111")
    settings = load_settings(OFFBOARD_DATABASE_URL=db_url, OFFBOARD_PLAYBOOKS=str(BUNDLED_PLAYBOOKS))
    data = deal_closed_event()["deal"]

    own = plan_playbooks(settings, Deal(crm="hubspot", account="111", **data), None)
    other = plan_playbooks(settings, Deal(crm="hubspot", account="222", **data), None)
    asked = plan_playbooks(settings, Deal(crm="hubspot", account="111", **data), BUNDLED_PLAYBOOKS)

    assert [item.path for item in own] == ["hubspot:111/account-close@1"]
    assert "completed-project" in {item.id for item in other}
    assert {item.id for item in asked} == {item.id for item in other}  # --playbooks wins


def test_plan_of_an_account_whose_stored_version_does_not_load_says_why(store, db_url, clock):
    with store.session() as session:
        session.add(
            PlaybookVersion(
                crm="hubspot",
                account="111",
                playbook_id="broken",
                version=1,
                source="id: broken\n",
                sha256="0" * 64,
                published_at=clock(),
                published_by="revops",
            )
        )
    settings = load_settings(OFFBOARD_DATABASE_URL=db_url, OFFBOARD_PLAYBOOKS=str(BUNDLED_PLAYBOOKS))
    with pytest.raises(PlaybookError) as refused:
        plan_playbooks(settings, Deal(crm="hubspot", account="111", **deal_closed_event()["deal"]), None)
    assert refused.value.problems[0].startswith("hubspot:111/broken@1: ")
