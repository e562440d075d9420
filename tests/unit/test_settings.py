"""Settings: one validated object; bad values stop start-up naming the variable."""

from __future__ import annotations

import pytest

from connector.errors import SettingsInvalid
from connector.settings import (
    DEV_SECRET_KEY,
    all_variables,
    load_settings,
    log_startup_warnings,
    production_problems,
    sections,
)


def test_defaults_are_the_documented_ones():
    settings = load_settings()
    assert settings.database_url == "sqlite:///var/offboard.db"
    assert str(settings.playbooks) == "playbooks"
    assert settings.public_url == "http://127.0.0.1:8080"
    assert settings.webhook_secret is None
    assert settings.crm("hubspot").api_base_url == "https://api.hubapi.com"
    assert settings.crm("salesforce").contract_end_field == "Contract.EndDate"


def test_values_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", "postgresql://db.internal/offboard")
    monkeypatch.setenv("OFFBOARD_ROLES", '{"finance": "005A"}')
    monkeypatch.setenv("OFFBOARD_TIMEZONE", "Europe/Paris")
    settings = load_settings()
    assert settings.database_url == "postgresql://db.internal/offboard"
    assert settings.roles == {"finance": "005A"}
    assert str(settings.zone) == "Europe/Paris"


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OFFBOARD_DATABASE_URL", "mysql://x", "sqlite"),
        ("OFFBOARD_TIMEZONE", "Mars/Olympus", "unknown time zone"),
        ("OFFBOARD_MAX_ATTEMPTS", "lots", "integer"),
        ("OFFBOARD_PUBLIC_URL", "ftp://x", "http"),
        ("OFFBOARD_WEBHOOK_SECRET", "whsec_c2hvcnQ=", "too short"),
        ("OFFBOARD_ROLES", "finance=1", "JSON"),
        ("OFFBOARD_ENV", "staging", "production"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch, variable, value, says):
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsInvalid) as raised:
        load_settings()
    message = str(raised.value)
    assert variable in message
    assert says.lower() in message.lower()
    if "SECRET" in variable:
        assert value not in message


def test_secrets_never_print(monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-very-secret")
    settings = load_settings()
    for shown in (settings, settings.crm("hubspot")):
        assert "pat-na1-very-secret" not in repr(shown)
        assert "pat-na1-very-secret" not in str(shown.model_dump())
    assert settings.crm("hubspot").access_token.get_secret_value() == "pat-na1-very-secret"


def test_toml_file_holds_plain_settings_but_not_secrets(monkeypatch, tmp_path):
    config = tmp_path / "offboard.toml"
    config.write_text('OFFBOARD_TIMEZONE = "America/New_York"\n')
    monkeypatch.setenv("OFFBOARD_CONFIG", str(config))
    assert load_settings().timezone == "America/New_York"
    monkeypatch.setenv("OFFBOARD_TIMEZONE", "UTC")
    assert load_settings().timezone == "UTC"  # the environment wins
    config.write_text('HUBSPOT_ACCESS_TOKEN = "pat-in-a-file"\n')
    with pytest.raises(SettingsInvalid, match="HUBSPOT_ACCESS_TOKEN must come from the environment"):
        load_settings()


# --- empty is "not set" ---------------------------------------------------------------------


def _settable() -> list[str]:
    """Every setting's variable: the core's and each CRM plugin's."""
    return [model.variable(name) for model in sections() for name in model.model_fields]


def _dump(settings) -> list[dict]:
    return [settings.model_dump(), *(section.model_dump() for section in settings.crms.values())]


def _setting(settings, variable: str):
    """The value of the setting ``variable`` sets, in whichever section holds it."""
    for section in (settings, *settings.crms.values()):
        for name in type(section).model_fields:
            if type(section).variable(name) == variable:
                return getattr(section, name)
    raise AssertionError(f"no setting reads {variable}")


def test_an_empty_variable_is_not_set_for_every_setting(monkeypatch):
    defaults = _dump(load_settings())
    for variable in _settable():
        monkeypatch.setenv(variable, "")
    assert _dump(load_settings()) == defaults


@pytest.mark.parametrize(
    "variable",
    [
        "OFFBOARD_WEBHOOK_SECRET",
        "HUBSPOT_CLIENT_SECRET",
        "HUBSPOT_ACCESS_TOKEN",
        "SALESFORCE_WEBHOOK_SECRET",
        "SALESFORCE_OUTBOUND_KEY",
        "SALESFORCE_ACCESS_TOKEN",
    ],
)
@pytest.mark.parametrize("blank", ["", "   "])
def test_an_empty_secret_is_none_so_its_endpoint_stays_off(monkeypatch, variable, blank):
    monkeypatch.setenv(variable, blank)
    assert _setting(load_settings(), variable) is None


def test_an_empty_secret_key_falls_back_to_the_development_key_and_production_refuses_it(monkeypatch):
    monkeypatch.setenv("OFFBOARD_SECRET_KEY", "")
    assert load_settings().secret_key.get_secret_value() == DEV_SECRET_KEY
    _production(monkeypatch, OFFBOARD_SECRET_KEY="")
    with pytest.raises(SettingsInvalid, match="OFFBOARD_SECRET_KEY: not set"):
        load_settings()


def test_an_empty_generic_secret_leaves_the_generic_endpoint_answering_503(monkeypatch, sqlite_url):
    from connector.services import build
    from connector.store import Store
    from connector.store.migrate import upgrade
    from connector.web import create_app
    from tests.support.helpers import deal_closed_event, signed

    store = Store.from_url(sqlite_url)
    upgrade(store.engine)
    settings = load_settings(OFFBOARD_DATABASE_URL=sqlite_url, OFFBOARD_WEBHOOK_SECRET="")
    client = create_app(build(settings, store=store)).test_client()
    body, headers = signed(deal_closed_event())
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 503
    store.dispose()


# --- the development key warns -----------------------------------------------------------


def test_the_development_key_logs_a_warning_at_start(caplog):
    with caplog.at_level("WARNING", logger="offboard.settings"):
        warnings = log_startup_warnings(load_settings())
    assert len(warnings) == 1 and "OFFBOARD_SECRET_KEY is not set" in warnings[0]
    assert [r.getMessage() for r in caplog.records if r.name == "offboard.settings"] == warnings


def test_a_real_secret_key_starts_quietly(monkeypatch, caplog):
    monkeypatch.setenv("OFFBOARD_SECRET_KEY", "k" * 40)
    with caplog.at_level("WARNING", logger="offboard.settings"):
        assert log_startup_warnings(load_settings()) == []
    assert not [r for r in caplog.records if r.name == "offboard.settings"]


def test_the_worker_command_warns_about_the_development_key(monkeypatch, sqlite_url, caplog):
    from click.testing import CliRunner

    from connector.cli import main
    from tests.support.helpers import BUNDLED_PLAYBOOKS

    monkeypatch.setenv("OFFBOARD_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(BUNDLED_PLAYBOOKS))
    with caplog.at_level("WARNING", logger="offboard.settings"):
        result = CliRunner().invoke(main, ["worker", "--once"])
    assert result.exit_code == 0, result.output
    assert any("development key" in r.getMessage() for r in caplog.records if r.name == "offboard.settings")


# --- production refuses what is unsafe ----------------------------------------------------

SAFE_PRODUCTION = {
    "OFFBOARD_ENV": "production",
    "OFFBOARD_SECRET_KEY": "s" * 32,
    "OFFBOARD_SANDBOX": "false",
    "OFFBOARD_PUBLIC_URL": "https://offboard.example.com",
    "OFFBOARD_DATABASE_URL": "postgresql://offboard@db/offboard",
    "OFFBOARD_WEBHOOK_SECRET": "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY",  # 24 bytes
    "HUBSPOT_CLIENT_SECRET": "h" * 36,
    "SALESFORCE_WEBHOOK_SECRET": "f" * 32,
    "SALESFORCE_OUTBOUND_KEY": "o" * 32,
}


def _production(monkeypatch, **changes: str) -> None:
    for variable, value in {**SAFE_PRODUCTION, **changes}.items():
        monkeypatch.setenv(variable, value)


def test_a_safe_production_configuration_starts(monkeypatch):
    _production(monkeypatch)
    settings = load_settings()
    assert settings.env == "production"
    assert production_problems(settings, web_processes=4) == []  # Postgres: many web processes


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OFFBOARD_SECRET_KEY", "a", "OFFBOARD_SECRET_KEY: shorter than 32 characters"),
        ("OFFBOARD_SECRET_KEY", "x" * 31, "OFFBOARD_SECRET_KEY: shorter than 32 characters"),
        ("OFFBOARD_SECRET_KEY", DEV_SECRET_KEY, "OFFBOARD_SECRET_KEY: not set"),
        ("HUBSPOT_CLIENT_SECRET", "hubspot-client-secret", "HUBSPOT_CLIENT_SECRET: shorter than 32"),
        ("SALESFORCE_WEBHOOK_SECRET", "flow-secret", "SALESFORCE_WEBHOOK_SECRET: shorter than 32"),
        ("SALESFORCE_OUTBOUND_KEY", "short-key", "SALESFORCE_OUTBOUND_KEY"),
        ("OFFBOARD_WEBHOOK_SECRET", "whsec_c2hvcnQ=", "OFFBOARD_WEBHOOK_SECRET"),
        ("OFFBOARD_SANDBOX", "true", "OFFBOARD_SANDBOX: the sandbox CRM is on"),
        ("OFFBOARD_PUBLIC_URL", "http://offboard.example.com", "OFFBOARD_PUBLIC_URL: must start with https"),
        ("OFFBOARD_PUBLIC_URL", "https://localhost:8443", "OFFBOARD_PUBLIC_URL: localhost is this machine"),
        ("OFFBOARD_PUBLIC_URL", "https://127.0.0.2", "OFFBOARD_PUBLIC_URL: 127.0.0.2 is this machine"),
        ("OFFBOARD_PUBLIC_URL", "https://[::1]:8443", "OFFBOARD_PUBLIC_URL: ::1 is this machine"),
        ("OFFBOARD_PUBLIC_URL", "https://0.0.0.0", "OFFBOARD_PUBLIC_URL: 0.0.0.0 is this machine"),
        ("OFFBOARD_PUBLIC_URL", "https://app.localhost", "OFFBOARD_PUBLIC_URL: app.localhost is this"),
    ],
)
def test_production_refuses_each_unsafe_setting_naming_it(monkeypatch, variable, value, says):
    _production(monkeypatch, **{variable: value})
    with pytest.raises(SettingsInvalid) as raised:
        load_settings()
    message = str(raised.value)
    assert says in message
    if ("SECRET" in variable or "KEY" in variable) and len(value) > 3:
        assert value not in message.replace(variable, "")


def test_production_refuses_the_sandbox_by_default(monkeypatch):
    _production(monkeypatch)
    monkeypatch.delenv("OFFBOARD_SANDBOX")
    with pytest.raises(SettingsInvalid, match="OFFBOARD_SANDBOX"):
        load_settings()


def test_production_lists_every_problem_at_once(monkeypatch):
    _production(
        monkeypatch,
        OFFBOARD_SECRET_KEY="short",
        HUBSPOT_CLIENT_SECRET="also-short",
        OFFBOARD_SANDBOX="true",
        OFFBOARD_PUBLIC_URL="http://127.0.0.1:8080",
    )
    with pytest.raises(SettingsInvalid) as raised:
        load_settings()
    lines = str(raised.value).splitlines()
    named = [line.strip().split(":")[0] for line in lines[2:]]
    assert named == [
        "OFFBOARD_SECRET_KEY",
        "HUBSPOT_CLIENT_SECRET",
        "OFFBOARD_SANDBOX",
        "OFFBOARD_PUBLIC_URL",
        "OFFBOARD_PUBLIC_URL",
    ], lines
    assert "short" not in str(raised.value).replace("shorter", "")


def test_production_refuses_sqlite_with_more_than_one_web_process(monkeypatch):
    _production(monkeypatch, OFFBOARD_DATABASE_URL="sqlite:///var/offboard.db")
    settings = load_settings()  # one process on SQLite is allowed
    assert production_problems(settings) == []
    (problem,) = production_problems(settings, web_processes=2)
    assert problem.startswith("OFFBOARD_DATABASE_URL: SQLite serves one web process, not 2")


def test_development_refuses_nothing(monkeypatch):
    monkeypatch.setenv("OFFBOARD_SECRET_KEY", "a")
    monkeypatch.setenv("OFFBOARD_PUBLIC_URL", "http://localhost:8080")
    assert production_problems(load_settings(), web_processes=8) == []


def test_every_variable_is_known(monkeypatch):
    assert set(_settable()) <= set(all_variables())
