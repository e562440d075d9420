"""``offboard connections``: listing without secrets, settings, removing, purging, rotating keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet
from sqlalchemy import func, select

from connector.cli import main
from connector.connections import Connections
from connector.keyring import Keyring
from connector.store import AuditEntry, Run
from tests.integration.test_connections import ACCESS, REFRESH, every_value, install, seed_account

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


@pytest.fixture
def repo(store, clock) -> Connections:
    return Connections(store, Keyring(OLD_KEY), clock=clock)


@pytest.fixture
def cli(store, db_url, monkeypatch):
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", db_url)
    monkeypatch.setenv("OFFBOARD_ENCRYPTION_KEYS", OLD_KEY)

    def invoke(*args: str, input: str | None = None):
        result = CliRunner().invoke(main, ["connections", *args], input=input)
        for secret in (ACCESS, REFRESH, OLD_KEY, NEW_KEY):
            assert secret not in result.output
        assert "Traceback" not in result.output
        return result

    return invoke


def test_an_empty_list_says_how_to_install(cli):
    result = cli("list")
    assert result.exit_code == 0
    assert "no connections yet" in result.output and "/install/hubspot" in result.output
    assert cli().output == result.output  # the group alone lists


def test_list_and_show_print_no_token(cli, repo, clock):
    install(repo, account="111")
    install(repo, account="00D000000000001", crm="salesforce", instance_url="https://acme.my.salesforce.com")
    repo.set_config("hubspot", "111", "role.finance", "777")
    listed = cli("list")
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].startswith("hubspot  111  connected  installed 2026-11-20 15:00 UTC by admin@example.com")
    assert "token set, expires at 2026-11-20 15:30 UTC" in lines[0]
    assert lines[1].startswith("salesforce  00D000000000001  connected")
    shown = cli("show", "hubspot", "111")
    assert shown.exit_code == 0, shown.output
    assert "access token    set, expires at 2026-11-20 15:30 UTC" in shown.output
    assert "refresh token   set" in shown.output
    assert "scopes          crm.objects.deals.read, crm.objects.deals.write" in shown.output
    assert "settings        role.finance=777" in shown.output
    sealed = repo.require("hubspot", "111").sealed_access
    assert sealed is not None and sealed not in shown.output
    assert (
        "instance        https://acme.my.salesforce.com"
        in cli("show", "salesforce", "00D000000000001").output
    )


def test_showing_an_unknown_account_exits_1(cli):
    result = cli("show", "hubspot", "404")
    assert result.exit_code == 1
    assert "no connection to hubspot account '404'" in result.output


def test_set_saves_every_setting_or_none(cli, repo):
    install(repo)
    done = cli("set", "hubspot", "111", "time_zone=Europe/Berlin", "role.it=55", "brand_name=Acme CS")
    assert done.exit_code == 0, done.output
    assert "3 setting(s) saved" in done.output
    config = repo.require("hubspot", "111").config
    assert (config.time_zone, config.roles, config.brand_name) == ("Europe/Berlin", {"it": "55"}, "Acme CS")
    refused = cli("set", "hubspot", "111", "brand_name=Other", "time_zone=Nowhere/Land")
    assert refused.exit_code == 2
    assert "time_zone: unknown time zone 'Nowhere/Land'" in refused.output
    assert repo.require("hubspot", "111").config.brand_name == "Acme CS"
    unknown = cli("set", "hubspot", "111", "colour=blue")
    assert unknown.exit_code == 2 and "the known ones are: role.<name>, time_zone" in unknown.output
    no_value = cli("set", "hubspot", "111", "time_zone")
    assert no_value.exit_code == 2 and "expected KEY=VALUE" in no_value.output
    unset = cli("set", "hubspot", "111", "time_zone=")
    assert unset.exit_code == 0 and repo.require("hubspot", "111").config.time_zone is None
    missing = cli("set", "hubspot", "404", "time_zone=UTC")
    assert missing.exit_code == 1 and "no connection to hubspot account '404'" in missing.output


def test_remove_deletes_the_tokens_and_keeps_the_runs(cli, repo, store):
    install(repo)
    seed_account(store, "hubspot", "111", "budget-111")
    result = cli("remove", "hubspot", "111")
    assert result.exit_code == 0, result.output
    assert "tokens deleted" in result.output
    assert "hubspot  111  removed" in cli("list").output
    assert "access token    none" in cli("show", "hubspot", "111").output
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 2


def test_purge_asks_first_then_deletes_the_accounts_rows(cli, repo, store):
    install(repo, account="111")
    install(repo, account="222")
    seed_account(store, "hubspot", "111", "budget-111")
    seed_account(store, "hubspot", "222", "budget-222")
    declined = cli("remove", "hubspot", "111", "--purge", input="n\n")
    assert declined.exit_code == 1 and "Aborted" in declined.output
    assert repo.get("hubspot", "111") is not None
    purged = cli("remove", "hubspot", "111", "--purge", input="y\n")
    assert purged.exit_code == 0, purged.output
    assert "hubspot account 111 purged:" in purged.output and "2 runs" in purged.output
    assert repo.get("hubspot", "111") is None
    with store.read() as session:
        assert set(session.scalars(select(Run.account))) == {"222"}
        entry = session.scalars(select(AuditEntry).where(AuditEntry.verb == "connection.purged")).one()
    assert entry.actor == "cli"
    again = cli("remove", "hubspot", "222", "--purge", "--yes")
    assert again.exit_code == 0 and "hubspot account 222 purged" in again.output
    assert cli("remove", "hubspot", "222").exit_code == 1


def test_rotate_keys_then_the_old_key_can_go(cli, repo, store, monkeypatch):
    install(repo, account="111")
    repo.start_install("salesforce", code_verifier="v" * 43)
    monkeypatch.setenv("OFFBOARD_ENCRYPTION_KEYS", f"{NEW_KEY},{OLD_KEY}")
    result = cli("rotate-keys")
    assert result.exit_code == 0, result.output
    assert "3 secret(s) sealed again" in result.output
    monkeypatch.setenv("OFFBOARD_ENCRYPTION_KEYS", NEW_KEY)
    assert cli("show", "hubspot", "111").exit_code == 0
    only_new = Connections(store, Keyring(NEW_KEY))
    assert only_new.require("hubspot", "111").access_token().get_secret_value() == ACCESS
    assert ACCESS not in every_value(store)
    with store.read() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.verb == "connection.keys_rotated")).one()
    assert entry.detail == {"secrets": 3}


def test_rotate_keys_without_keys_or_with_the_wrong_ones_says_so(cli, repo, monkeypatch):
    install(repo, account="111", expires_at=repo.clock() + timedelta(hours=1))
    monkeypatch.delenv("OFFBOARD_ENCRYPTION_KEYS")
    off = cli("rotate-keys")
    assert off.exit_code == 1 and "OFFBOARD_ENCRYPTION_KEYS is not set" in off.output
    monkeypatch.setenv("OFFBOARD_ENCRYPTION_KEYS", NEW_KEY)
    wrong = cli("rotate-keys")
    assert wrong.exit_code == 1
    assert "the access token of hubspot account 111 cannot be decrypted" in wrong.output


def test_a_malformed_key_stops_the_command_naming_the_variable(cli, monkeypatch):
    monkeypatch.setenv("OFFBOARD_ENCRYPTION_KEYS", "not-a-key")
    result = cli("list")
    assert result.exit_code == 1
    assert "OFFBOARD_ENCRYPTION_KEYS: the key is not a Fernet key" in result.output
    assert "not-a-key" not in result.output.replace("not a Fernet", "")


def test_show_gives_an_installed_orgs_own_outbound_message_url_only_when_asked(cli, repo, monkeypatch):
    from connector.installs import inbound_key

    monkeypatch.setenv("OFFBOARD_SECRET_KEY", "a-secret-key-of-the-deployment-under-test-0123")
    monkeypatch.setenv("OFFBOARD_PUBLIC_URL", "https://offboard.agency.example")
    org = "00D000000000001"
    install(repo, account=org, crm="salesforce", instance_url="https://acme.my.salesforce.com")
    key = inbound_key("a-secret-key-of-the-deployment-under-test-0123", "salesforce", org)
    assert key not in cli("show", "salesforce", org).output
    shown = cli("show", "salesforce", org, "--inbound-url")
    assert shown.exit_code == 0, shown.output
    assert f"https://offboard.agency.example/webhooks/salesforce?org={org}&key={key}" in shown.output
    # Another org's key differs: a URL works for its own org only.
    other = inbound_key("a-secret-key-of-the-deployment-under-test-0123", "salesforce", "00D000000000002")
    assert other != key
