"""Settings: one validated object; bad values stop start-up naming the variable."""

from __future__ import annotations

import pytest

from connector.errors import SettingsInvalid
from connector.settings import load_settings


def test_defaults_are_the_documented_ones():
    settings = load_settings()
    assert settings.database_url == "sqlite:///var/offboard.db"
    assert str(settings.playbooks) == "playbooks"
    assert settings.public_url == "http://127.0.0.1:8080"
    assert settings.webhook_secret is None
    assert settings.hubspot_api_base_url == "https://api.hubapi.com"
    assert settings.salesforce_contract_end_field == "Contract.EndDate"


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


def test_production_refuses_the_development_secret_key(monkeypatch):
    monkeypatch.setenv("OFFBOARD_ENV", "production")
    with pytest.raises(SettingsInvalid, match="OFFBOARD_SECRET_KEY"):
        load_settings()
    monkeypatch.setenv("OFFBOARD_SECRET_KEY", "a-real-key-from-the-vault")
    assert load_settings().env == "production"


def test_secrets_never_print(monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-very-secret")
    settings = load_settings()
    assert "pat-na1-very-secret" not in repr(settings)
    assert "pat-na1-very-secret" not in str(settings.model_dump())
    assert settings.hubspot_access_token.get_secret_value() == "pat-na1-very-secret"


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
