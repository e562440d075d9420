"""Connections on SQLite and Postgres: sealed tokens, single-use install states, per-account
settings, key rotation, one refresh at a time, and removing or purging one account alone."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Column, Integer, String, Table, func, select, text

from connector.connections import (
    KNOWN_KEYS,
    NO_ACCOUNT_ROWS,
    ConfigInvalid,
    ConnectionMissing,
    Connections,
    NotConnected,
    StateExpired,
    StateUnknown,
    purge_rules,
)
from connector.errors import ConnectorError
from connector.keyring import EncryptionOff, Keyring, SecretUnreadable
from connector.store import Action, Answer, AuditEntry, Base, ContactTouch, Event, Referral, Run, SweepCursor
from connector.store.tables import AccountConnection, OAuthState, RateCall, RateWindow
from tests.support.helpers import make_settings

ACCESS = "CJSP5qf1KhICAQEYs-gDIIGOBii1hQIyGQAf3xBKmlwHjX7OIpuIFEavB2-qYAGQsF4"
REFRESH = "de0b2a5e-6e8c-4f55-9b59-2f9c3f1bd0a1"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(Fernet.generate_key().decode())


@pytest.fixture
def repo(store, keyring, clock) -> Connections:
    return Connections(store, keyring, clock=clock)


def install(repo: Connections, account: str = "111", crm: str = "hubspot", **more: Any) -> Any:
    values: dict[str, Any] = {
        "access_token": ACCESS,
        "refresh_token": REFRESH,
        "expires_at": repo.clock() + timedelta(minutes=30),
        "scopes": ["crm.objects.deals.read", "crm.objects.deals.write"],
        "installed_by": "admin@example.com",
    }
    values.update(more)
    return repo.save_install(crm, account, **values)


def raw_rows(store, table: str) -> list[dict[str, Any]]:
    with store.engine.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(text(f'SELECT * FROM "{table}"'))]


def every_value(store) -> str:
    """Every value of every table, as text: what a dump of the database would show."""
    values = []
    for table in Base.metadata.sorted_tables:
        for row in raw_rows(store, table.name):
            values.extend(str(value) for value in row.values())
    return "\n".join(values)


# --- sealed tokens ------------------------------------------------------------------------------


def test_tokens_are_sealed_in_the_database_and_opened_only_when_asked(repo, store, keyring):
    saved = install(repo, instance_url=None)
    dump = every_value(store)
    assert ACCESS not in dump and REFRESH not in dump
    (row,) = raw_rows(store, "connections")
    assert keyring.decrypt(row["access_token"]) == ACCESS
    assert keyring.decrypt(row["refresh_token"]) == REFRESH
    found = repo.get("hubspot", "111")
    assert found is not None and found.id == saved.id
    assert ACCESS not in repr(found) and row["access_token"] not in repr(found)
    assert found.access_token().get_secret_value() == ACCESS
    assert str(found.access_token()) == "**********"
    refresh = found.refresh_token()
    assert refresh is not None and refresh.get_secret_value() == REFRESH
    assert found.scopes == ("crm.objects.deals.read", "crm.objects.deals.write")
    assert found.installed_by == "admin@example.com" and found.status == "connected"


def test_listing_needs_no_key_but_opening_a_token_does(repo, store):
    install(repo)
    without_keys = Connections(store, None)
    (listed,) = without_keys.list_all()
    assert listed.has_access_token and listed.account == "111"
    with pytest.raises(EncryptionOff):
        listed.access_token()
    with pytest.raises(EncryptionOff):
        install(without_keys, account="222")


def test_a_token_sealed_with_a_key_no_longer_listed_is_refused_without_showing_it(repo, store):
    install(repo)
    other = Connections(store, Keyring(Fernet.generate_key().decode()))
    found = other.require("hubspot", "111")
    with pytest.raises(SecretUnreadable) as refused:
        found.access_token()
    assert "hubspot account 111" in str(refused.value)
    assert ACCESS not in str(refused.value)


def test_installing_again_updates_the_same_row_and_connects_it_again(repo, store, clock):
    first = install(repo)
    repo.set_config("hubspot", "111", "time_zone", "Europe/Paris")
    repo.mark_disconnected("hubspot", "111", "refresh refused: invalid_grant")
    assert repo.require("hubspot", "111").status == "disconnected"
    clock.advance(days=1)
    again = install(repo, access_token="new-access", refresh_token="new-refresh", installed_by="other@x.io")
    assert again.id == first.id
    assert again.status == "connected" and again.status_reason is None
    assert again.access_token().get_secret_value() == "new-access"
    assert again.installed_by == "other@x.io" and again.installed_at == clock()
    assert again.config.time_zone == "Europe/Paris"  # the account's own settings stay
    assert len(raw_rows(store, "connections")) == 1
    with store.read() as session:
        verbs = session.scalars(select(AuditEntry.verb).order_by(AuditEntry.id)).all()
    assert verbs == [
        "connection.installed",
        "connection.configured",
        "connection.disconnected",
        "connection.reinstalled",
    ]


def test_a_refresh_replaces_the_access_token_and_keeps_the_refresh_token_unless_sent(repo, clock):
    install(repo)
    later = clock() + timedelta(hours=1)
    refreshed = repo.update_tokens("hubspot", "111", access_token="fresh", expires_at=later)
    assert refreshed.access_token().get_secret_value() == "fresh"
    assert refreshed.refresh_token().get_secret_value() == REFRESH  # type: ignore[union-attr]
    assert refreshed.token_expires_at == later
    assert refreshed.expires_within(clock(), timedelta(minutes=61))
    assert not refreshed.expires_within(clock(), timedelta(minutes=59))
    renewed = repo.update_tokens(
        "hubspot", "111", access_token="fresher", refresh_token="r2", expires_at=later
    )
    assert renewed.refresh_token().get_secret_value() == "r2"  # type: ignore[union-attr]
    with pytest.raises(ConnectionMissing):
        repo.update_tokens("hubspot", "999", access_token="x", expires_at=later)


# --- install states -----------------------------------------------------------------------------


def test_an_install_state_keeps_only_the_nonce_hash_and_a_sealed_verifier(repo, store):
    nonce = repo.start_install("salesforce", code_verifier=VERIFIER)
    (row,) = raw_rows(store, "oauth_states")
    assert row["nonce_hash"] == hashlib.sha256(nonce.encode()).hexdigest()
    dump = every_value(store)
    assert nonce not in dump and VERIFIER not in dump
    taken = repo.take_state(nonce, "salesforce")
    assert taken.crm == "salesforce"
    assert taken.code_verifier is not None and taken.code_verifier.get_secret_value() == VERIFIER
    assert raw_rows(store, "oauth_states") == []


def test_a_state_is_taken_once(repo):
    nonce = repo.start_install("hubspot")
    assert repo.take_state(nonce, "hubspot").code_verifier is None
    with pytest.raises(StateUnknown):
        repo.take_state(nonce, "hubspot")


def test_an_expired_state_is_refused_and_gone(repo, store, clock):
    nonce = repo.start_install("hubspot")
    clock.advance(minutes=10, seconds=1)
    with pytest.raises(StateExpired) as refused:
        repo.take_state(nonce, "hubspot")
    assert refused.value.reason == "expired"
    assert raw_rows(store, "oauth_states") == []
    with pytest.raises(StateUnknown):
        repo.take_state(nonce, "hubspot")


def test_an_unknown_or_another_crms_state_is_refused(repo, store, clock):
    with pytest.raises(StateUnknown):
        repo.take_state("never-issued", "hubspot")
    nonce = repo.start_install("salesforce", code_verifier=VERIFIER)
    with pytest.raises(StateUnknown):
        repo.take_state(nonce, "hubspot")
    with pytest.raises(StateUnknown):  # presented once, for the wrong CRM: used up
        repo.take_state(nonce, "salesforce")


def test_two_callbacks_with_one_state_complete_one_install(repo):
    nonce = repo.start_install("hubspot")
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def take() -> None:
        barrier.wait()
        try:
            repo.take_state(nonce, "hubspot")
            outcomes.append("taken")
        except StateUnknown:
            outcomes.append("refused")

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["refused", "taken"]


def test_expired_states_are_cleared_when_an_install_starts(repo, store, clock):
    repo.start_install("hubspot")
    clock.advance(minutes=11)
    fresh = repo.start_install("hubspot")
    (row,) = raw_rows(store, "oauth_states")
    assert row["nonce_hash"] == hashlib.sha256(fresh.encode()).hexdigest()


# --- per-account settings -----------------------------------------------------------------------


def test_an_accounts_settings_are_validated_and_fall_back_to_the_environment(repo, db_url):
    install(repo)
    repo.configure(
        "hubspot",
        "111",
        [
            ("role.finance", "777"),
            ("role.it", "888"),
            ("time_zone", "America/New_York"),
            ("contract_end_property", "renewal_date"),
            ("brand_name", "Acme Services"),
            ("brand_logo_url", "https://cdn.example.com/logo.png/"),
            ("brand_reply_to", "csm@example.com"),
        ],
    )
    found = repo.require("hubspot", "111")
    assert found.config.roles == {"finance": "777", "it": "888"}
    assert found.config.brand_logo_url == "https://cdn.example.com/logo.png"
    effective = found.settings(make_settings(db_url, OFFBOARD_FALLBACK_OWNER="42"))
    assert effective.roles == {"finance": "777", "marketing": "marketing-1", "it": "888"}
    assert effective.time_zone == "America/New_York" and effective.fallback_owner == "42"
    assert effective.contract_end_property == "renewal_date" and effective.contract_type_property is None
    repo.set_config("hubspot", "111", "role.it", "")
    repo.set_config("hubspot", "111", "time_zone", "")
    after = repo.require("hubspot", "111")
    assert after.config.roles == {"finance": "777"} and after.config.time_zone is None


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [
        ("time_zone", "Mars/Olympus", "time_zone: unknown time zone 'Mars/Olympus'"),
        ("role.fin ance", "1", "role 'fin ance'"),
        ("role.finance", "a b", "role finance: expected a CRM user id"),
        ("fallback_owner", "x;y", "fallback_owner: the fallback owner: expected a CRM user id"),
        ("brand_logo_url", "javascript:alert(1)", "brand_logo_url: expected an http"),
        ("brand_logo_url", "https://x.io/a b.png", "brand_logo_url: expected a plain http"),
        ("brand_reply_to", "not-an-email", "brand_reply_to: not an email address"),
        ("contract_type_property", "1bad", "contract_type_property: expected a CRM property"),
        ("brand_name", "two\nlines", "brand_name: a name on one line"),
    ],
)
def test_a_malformed_setting_is_refused_and_nothing_changes(repo, store, key, value, says):
    install(repo)
    repo.set_config("hubspot", "111", "time_zone", "Europe/Paris")
    with pytest.raises(ConfigInvalid) as refused:
        repo.configure("hubspot", "111", [("brand_name", "Kept out"), (key, value)])
    assert says in str(refused.value)
    assert repo.require("hubspot", "111").config.model_dump(exclude_none=True) == {
        "roles": {},
        "time_zone": "Europe/Paris",
    }


def test_an_unknown_setting_lists_the_known_ones(repo):
    install(repo)
    with pytest.raises(ConfigInvalid) as refused:
        repo.set_config("hubspot", "111", "timezone", "UTC")
    assert "unknown setting 'timezone'" in str(refused.value)
    for known in KNOWN_KEYS:
        assert known in str(refused.value)
    with pytest.raises(ConnectionMissing):
        repo.set_config("hubspot", "999", "time_zone", "UTC")


# --- rotating keys ------------------------------------------------------------------------------


def test_rotating_keys_keeps_everything_readable_and_the_old_key_can_go(store, clock, keyring):
    old_key = Fernet.generate_key().decode()
    new_key = Fernet.generate_key().decode()
    before = Connections(store, Keyring(old_key), clock=clock)
    install(before, account="111")
    install(before, account="222", refresh_token=None)
    nonce = before.start_install("salesforce", code_verifier=VERIFIER)
    sealed_before = raw_rows(store, "connections")
    both = Connections(store, Keyring([new_key, old_key]), clock=clock)
    assert both.require("hubspot", "111").access_token().get_secret_value() == ACCESS  # before rotating
    assert both.rotate_keys() == 4  # 2 access tokens, 1 refresh token, 1 code verifier
    assert raw_rows(store, "connections") != sealed_before
    only_new = Connections(store, Keyring(new_key), clock=clock)
    for account in ("111", "222"):
        assert only_new.require("hubspot", account).access_token().get_secret_value() == ACCESS
    assert only_new.require("hubspot", "111").refresh_token().get_secret_value() == REFRESH  # type: ignore[union-attr]
    assert only_new.take_state(nonce, "salesforce").code_verifier.get_secret_value() == VERIFIER  # type: ignore[union-attr]
    with pytest.raises(SecretUnreadable):
        Connections(store, Keyring(old_key)).require("hubspot", "111").access_token()
    assert ACCESS not in every_value(store)


# --- one refresh at a time ----------------------------------------------------------------------


def test_a_refresh_claim_is_held_until_released_or_lapsed(repo, clock):
    install(repo)
    until = clock() + timedelta(seconds=30)
    assert repo.claim_refresh("hubspot", "111", until)
    assert not repo.claim_refresh("hubspot", "111", until)
    repo.update_tokens("hubspot", "111", access_token="fresh", expires_at=clock() + timedelta(minutes=30))
    assert repo.claim_refresh("hubspot", "111", until)  # new tokens let the claim go
    repo.release_refresh("hubspot", "111")
    assert repo.claim_refresh("hubspot", "111", until)
    clock.advance(seconds=31)  # the claimer died mid-refresh: its claim lapses
    assert repo.claim_refresh("hubspot", "111", clock() + timedelta(seconds=30))
    assert not repo.claim_refresh("hubspot", "999", until)
    repo.mark_disconnected("hubspot", "111", "revoked")
    clock.advance(minutes=5)
    assert not repo.claim_refresh("hubspot", "111", clock() + timedelta(seconds=30))


def test_of_two_processes_claiming_a_refresh_at_once_exactly_one_wins(store, keyring, clock):
    install(Connections(store, keyring, clock=clock))
    for round_ in range(10):
        until = clock() + timedelta(seconds=30)
        barrier = threading.Barrier(2)
        won: list[bool] = []

        def claim() -> None:
            claimer = Connections(store, keyring, clock=clock)
            barrier.wait()  # noqa: B023
            won.append(claimer.claim_refresh("hubspot", "111", until))  # noqa: B023

        threads = [threading.Thread(target=claim) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(won) == [False, True], f"round {round_}"
        Connections(store, keyring, clock=clock).release_refresh("hubspot", "111")


# --- removing and purging -----------------------------------------------------------------------


def test_removing_deletes_the_tokens_and_keeps_the_accounts_rows(repo, store):
    install(repo)
    seed_account(store, "hubspot", "111", "budget-111")
    removal = repo.remove("hubspot", "111", actor="ops")
    assert not removal.purged
    (row,) = raw_rows(store, "connections")
    assert row["access_token"] is None and row["refresh_token"] is None and row["status"] == "removed"
    found = repo.require("hubspot", "111")
    with pytest.raises(NotConnected):
        found.access_token()
    assert found.refresh_token() is None
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 2
        entry = session.scalars(select(AuditEntry).where(AuditEntry.verb == "connection.removed")).one()
    assert entry.actor == "ops" and entry.crm == "hubspot" and entry.detail == {"account": "111"}
    later = repo.clock() + timedelta(minutes=30)
    with pytest.raises(NotConnected):  # a refresh finishing after the removal stores nothing
        repo.update_tokens("hubspot", "111", access_token="late", expires_at=later)
    assert repo.mark_disconnected("hubspot", "111", "refresh refused").status == "removed"
    assert raw_rows(store, "connections")[0]["access_token"] is None
    assert install(repo).status == "connected"
    with pytest.raises(ConnectionMissing):
        repo.remove("hubspot", "999")


def test_purging_deletes_exactly_that_accounts_rows(repo, store):
    install(repo, account="222")
    seed_account(store, "hubspot", "222", "budget-222")
    install(repo, account="111", crm="salesforce")  # the same id in another CRM is another account
    seed_account(store, "salesforce", "111", "budget-sf")
    kept = snapshot(store)
    install(repo, account="111")
    repo.set_config("hubspot", "111", "role.finance", "9")
    seed_account(store, "hubspot", "111", "budget-111")
    removal = repo.remove("hubspot", "111", purge=True, actor="ops", budget_keys=["budget-111"])
    assert removal.purged
    assert removal.rows == {
        "actions": 3,
        "answers": 1,
        "audit": 5,  # installed, configured, and three about its runs and actions
        "connections": 1,
        "contact_touches": 1,
        "events": 3,
        "rate_calls": 2,
        "rate_windows": 2,
        "referrals": 1,
        "runs": 2,
        "sweep_cursors": 1,
    }
    after = snapshot(store)
    purge_entry = [row for row in after["audit"] if row not in kept["audit"]]
    assert len(purge_entry) == 1
    assert {k: v for k, v in after.items() if k != "audit"} == {k: v for k, v in kept.items() if k != "audit"}
    assert [row for row in after["audit"] if row in kept["audit"]] == kept["audit"]
    with store.read() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.verb == "connection.purged")).one()
    assert entry.detail == {"account": "111", "rows": removal.rows} and entry.actor == "ops"
    assert repo.get("hubspot", "111") is None


def test_every_table_is_purged_by_a_rule_or_said_to_hold_no_account_rows():
    rules = purge_rules()
    tables = {table.name: table for table in Base.metadata.sorted_tables}
    assert set(rules) == set(tables), f"tables nobody classified: {sorted(set(tables) - set(rules))}"
    for name, table in tables.items():
        if "account" in table.c:
            assert not rules[name].startswith("left:"), f"{name} holds account rows but a purge leaves it"
    assert rules["actions"] == "rows of runs" and rules["answers"] == "rows of runs"
    assert rules["runs"] == "crm and account" and rules["connections"] == "crm and account"
    assert set(NO_ACCOUNT_ROWS) <= set(tables)


def test_a_purge_refuses_while_a_table_with_accounts_has_no_rule(repo, store):
    install(repo)
    table = Table(
        "tenant_notes", Base.metadata, Column("id", Integer, primary_key=True), Column("account", String)
    )
    try:
        assert "tenant_notes" not in purge_rules()
        with pytest.raises(ConnectorError, match=r"no purge rule for table.* tenant_notes"):
            repo.remove("hubspot", "111", purge=True)
    finally:
        Base.metadata.remove(table)
    assert repo.require("hubspot", "111").has_access_token  # nothing was deleted


def seed_account(store, crm: str, account: str, budget_key: str) -> None:
    """Two runs of the account with their actions, answers, referrals, events, audit and budget rows."""
    now = datetime(2026, 11, 20, 15, tzinfo=UTC)
    with store.session() as session:
        webhook = Event(
            source=crm, account=account, event_key=f"wh-{account}", kind="deal_closed", payload={}
        )
        swept = Event(
            source="sweep", account=account, event_key=f"{crm}:D1:2026-12-31", kind="contract_end", payload={}
        )
        generic = Event(
            source="generic",
            account=account,
            event_key=f"g-{crm}-{account}",
            kind="deal.closed",
            payload={"crm": crm},
        )
        session.add_all([webhook, swept, generic])
        session.flush()
        runs = [
            _run(crm, account, deal, event_id) for deal, event_id in (("D1", webhook.id), ("D2", swept.id))
        ]
        session.add_all(runs)
        session.flush()
        actions = [
            _action(runs[0].id, "a", f"{crm}{account}-1", now),
            _action(runs[0].id, "b", f"{crm}{account}-2", now),
            _action(runs[1].id, "a", f"{crm}{account}-3", now),
        ]
        session.add_all(actions)
        session.flush()
        session.add_all(
            [
                Answer(run_id=runs[0].id, step_id="nps", contact_id="C1", kind="nps", score=9),
                Referral(
                    run_id=runs[0].id, step_id="ref", referrer_contact_id="C1", email="friend@example.com"
                ),
                ContactTouch(crm=crm, account=account, contact_id="C1", kind="nps", run_id=runs[0].id),
                SweepCursor(
                    crm=crm, account=account, changed_since=now, horizon=date(2027, 1, 1), swept_at=now
                ),
                AuditEntry(actor="worker", verb="run.started", run_id=runs[0].id, crm=crm, detail={}),
                AuditEntry(actor="worker", verb="action.done", action_id=actions[0].id, crm=crm, detail={}),
                AuditEntry(actor="cli", verb="run.cancelled", run_id=runs[1].id, crm=crm, detail={}),
                RateWindow(key=f"{budget_key}:general"),
                RateWindow(key=f"{budget_key}:search"),
                RateCall(key=f"{budget_key}:general", at=now),
                RateCall(key=f"{budget_key}:search", at=now),
            ]
        )


def _run(crm: str, account: str, deal: str, event_id: int) -> Run:
    return Run(
        crm=crm,
        account=account,
        deal_id=deal,
        playbook_id="p",
        playbook_version=1,
        playbook_hash="h" * 64,
        playbook={},
        deal={"id": deal},
        trigger="deal_closed",
        anchor_at=datetime(2026, 11, 20, tzinfo=UTC),
        event_id=event_id,
    )


def _action(run_id: int, step: str, key: str, due: datetime) -> Action:
    return Action(run_id=run_id, step_id=step, kind="task", payload={}, due_at=due, idempotency_key=key)


def snapshot(store) -> dict[str, list[tuple[Any, ...]]]:
    found = {}
    with store.read() as session:
        for table in Base.metadata.sorted_tables:
            order = list(table.primary_key.columns)
            found[table.name] = [tuple(row) for row in session.execute(select(table).order_by(*order)).all()]
    return found


# --- the migration ------------------------------------------------------------------------------


def test_the_migration_goes_down_and_up_again(store):
    from alembic import command
    from sqlalchemy import inspect

    from connector.store.migrate import alembic_config, upgrade

    try:
        command.downgrade(alembic_config(store.engine), "0009")
        names = inspect(store.engine).get_table_names()
        assert "connections" not in names and "oauth_states" not in names
    finally:
        upgrade(store.engine)
    names = inspect(store.engine).get_table_names()
    assert "connections" in names and "oauth_states" in names
    assert OAuthState.__tablename__ in names and AccountConnection.__tablename__ in names
