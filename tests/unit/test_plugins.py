"""CRM plugins: the registry finds each package's PLUGIN; adapters are built per connection.

``AdapterSet`` answers ``for_connection(crm, account)`` and, keyed by CRM name, is the
mapping of the environment's connections the worker and the sweep iterate.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import adapters
from adapters.base import Connection, CrmSettings, InboundSource, Plugin
from adapters.hubspot.settings import HubSpotSettings
from adapters.sandbox import SandboxAdapter
from connector.settings import SettingsSection, all_variables, load_settings, sections
from tests.support.helpers import ROOT


def test_every_package_exposes_its_plugin():
    found = adapters.plugins()
    assert [p.name for p in found] == list(adapters.PACKAGES) == ["sandbox", "hubspot", "salesforce"]
    for plugin in found:
        assert isinstance(plugin, Plugin)
        assert issubclass(plugin.settings, CrmSettings)
        assert adapters.plugin(plugin.name) is plugin
    with pytest.raises(KeyError, match="no CRM plugin named 'pipedrive'"):
        adapters.plugin("pipedrive")


def test_reading_settings_and_serving_webhooks_imports_no_crm_sdk():
    code = (
        "import sys, adapters\n"
        "from connector.settings import load_settings\n"
        "settings = load_settings(HUBSPOT_ACCESS_TOKEN='pat', SALESFORCE_INSTANCE_URL='https://x.my.salesforce.com')\n"
        "sources = adapters.inbound_sources(settings)\n"
        "assert [s.path for s in sources] == "
        "['/webhooks/hubspot', '/webhooks/salesforce', '/webhooks/salesforce/flow'], sources\n"
        "print(sorted(m for m in ('hubspot', 'simple_salesforce') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_each_variable_is_read_by_one_section_only():
    variables = [model.variable(name) for model in sections() for name in model.model_fields]
    assert len(variables) == len(set(variables))
    assert set(variables) | {"OFFBOARD_CONFIG"} == set(all_variables())
    assert "HUBSPOT_ACCESS_TOKEN" in variables and "OFFBOARD_SANDBOX" in variables


def test_the_core_reaches_a_plugins_settings_by_name_and_by_type():
    settings = load_settings(HUBSPOT_ACCESS_TOKEN="pat-na1-abc", HUBSPOT_RATE_LIMIT_PER_10S=40)
    portal = settings.crm("hubspot")
    assert isinstance(portal, HubSpotSettings) and portal.rate_limit_per_10s == 40
    assert HubSpotSettings.of(settings) is portal
    with pytest.raises(TypeError):
        HubSpotSettings.of(settings.crm("sandbox"))
    with pytest.raises(KeyError):
        settings.crm("pipedrive")


def test_the_environment_gives_one_connection_per_crm_it_turns_on():
    def crms(**values: Any) -> list[str]:
        return [c.crm for c in adapters.environment_connections(load_settings(**values))]

    assert crms() == ["sandbox"]
    assert crms(HUBSPOT_ACCESS_TOKEN="pat") == ["sandbox", "hubspot"]
    assert crms(OFFBOARD_SANDBOX="false", SALESFORCE_USERNAME="ops@acme.example") == ["salesforce"]
    (connection,) = adapters.environment_connections(load_settings(OFFBOARD_TIMEZONE="Europe/Paris"))
    assert (connection.account, connection.zone) == (None, ZoneInfo("Europe/Paris"))
    assert isinstance(connection.settings, SettingsSection)


def test_the_logs_redactor_knows_the_crm_secrets():
    from connector.logs import redactor_for

    token = "pat-na1-0123456789abcdef"
    redact = redactor_for(load_settings(HUBSPOT_ACCESS_TOKEN=token, SALESFORCE_OUTBOUND_KEY="k" * 40))
    assert token not in redact(f"calling with {token}")
    assert "k" * 40 not in redact("key=" + "k" * 40)


def test_plugin_tables_join_the_metadata():
    from connector.store.db import Base

    adapters.load_tables()
    assert {"sandbox_deals", "sandbox_tasks"} <= set(Base.metadata.tables)


def test_plugin_commands_are_offboard_commands():
    from connector.cli import main

    assert {"sandbox", "hubspot"} <= set(main.commands)
    assert {c.name for c in adapters.commands()} == {"sandbox", "hubspot"}


# --- AdapterSet ----------------------------------------------------------------------------


class Counting:
    """Builds a named stand-in adapter per connection and counts the builds."""

    def __init__(self) -> None:
        self.built: list[tuple[str, str | None]] = []

    def __call__(self, connection: Connection) -> Any:
        self.built.append((connection.crm, connection.account))
        return _Adapter(connection.crm, connection.account or "env")


class _Adapter:
    def __init__(self, name: str, account: str) -> None:
        self.name, self.account = name, account


def connection(crm: str, account: str | None = None) -> Connection:
    return Connection(crm, account, load_settings().crm(crm), ZoneInfo("UTC"))


def test_an_adapter_set_from_settings_is_a_mapping_by_crm(sqlite_url):
    from connector.store import Store

    store = Store.from_url(sqlite_url)
    found = adapters.AdapterSet.from_settings(load_settings(), store)
    assert list(found) == ["sandbox"] and len(found) == 1 and "sandbox" in found
    assert "hubspot" not in found and found.get("hubspot") is None
    assert isinstance(found["sandbox"], SandboxAdapter)
    assert found.for_connection("sandbox", "sandbox") is found["sandbox"]
    assert dict(found.items()) == {"sandbox": found["sandbox"]}
    store.dispose()


def test_adapters_are_built_once_per_connection():
    build = Counting()
    found = adapters.AdapterSet([connection("sandbox"), connection("hubspot", "111")], build=build)
    first = found.for_connection("hubspot", "111")
    assert found.for_connection("hubspot", "111") is first
    assert found.for_connection("sandbox", "anything") is found["sandbox"]  # the environment's answers all
    assert build.built == [("hubspot", "111"), ("sandbox", None)]
    assert list(found) == ["sandbox"]  # the mapping holds the environment's connections
    with pytest.raises(adapters.NoConnection, match="hubspot account '222'"):
        found.for_connection("hubspot", "222")


def test_connections_found_later_are_built_on_first_use_and_kept():
    build, asked = Counting(), []

    def lookup(crm: str, account: str) -> Connection | None:
        asked.append((crm, account))
        return connection(crm, account) if account.startswith("portal-") else None

    found = adapters.AdapterSet(build=build, lookup=lookup)
    one = found.for_connection("hubspot", "portal-1")
    assert (one.name, one.account) == ("hubspot", "portal-1")
    assert found.for_connection("hubspot", "portal-1") is one
    assert found.connection("hubspot", "portal-1").account == "portal-1"
    assert build.built == [("hubspot", "portal-1")] and asked == [("hubspot", "portal-1")]
    with pytest.raises(adapters.NoConnection):
        found.for_connection("hubspot", "someone-else")


def test_an_adapter_put_by_name_stands_for_the_environments_connection():
    found = adapters.AdapterSet([connection("sandbox")], build=Counting())
    replacement = _Adapter("sandbox", "sandbox")
    found["sandbox"] = replacement
    assert found["sandbox"] is replacement
    assert found.for_connection("sandbox", "sandbox") is replacement
    found["hubspot"] = _Adapter("hubspot", "123")
    assert list(found) == ["sandbox", "hubspot"]
    del found["hubspot"]
    assert list(found) == ["sandbox"]
    with pytest.raises(KeyError):
        del found["hubspot"]


def test_services_keep_an_adapter_set_whatever_they_are_given(sqlite_url):
    from connector.services import build
    from connector.store import Store

    store = Store.from_url(sqlite_url)
    services = build(load_settings(OFFBOARD_DATABASE_URL=sqlite_url), store=store)
    assert isinstance(services.adapters, adapters.AdapterSet)
    stand_in = _Adapter("hubspot", "123")
    services.adapters = {"hubspot": stand_in}  # what a test may hand over
    assert isinstance(services.adapters, adapters.AdapterSet)
    assert services.adapters.for_connection("hubspot", "123") is stand_in
    store.dispose()


def test_sources_are_inbound_sources():
    for source in adapters.inbound_sources(load_settings()):
        assert isinstance(source, InboundSource)
        assert source.path.startswith("/webhooks/") and source.source in adapters.PACKAGES


def test_an_installed_accounts_adapter_follows_a_change_of_its_settings_within_a_minute():
    build, now, zone = Counting(), [0.0], ["UTC"]

    def lookup(crm: str, account: str) -> Connection | None:
        return Connection(crm, account, load_settings().crm(crm), ZoneInfo(zone[0]))

    found = adapters.AdapterSet(build=build, lookup=lookup, clock=lambda: now[0])
    first = found.for_connection("hubspot", "portal-1")
    zone[0] = "Europe/Berlin"  # `offboard connections set hubspot portal-1 time_zone=Europe/Berlin`
    now[0] += 30
    assert found.for_connection("hubspot", "portal-1") is first  # read again at most once a minute
    now[0] += 31
    second = found.for_connection("hubspot", "portal-1")
    assert second is not first and found.connection("hubspot", "portal-1").zone == ZoneInfo("Europe/Berlin")
    now[0] += 61
    assert found.for_connection("hubspot", "portal-1") is second  # unchanged: kept
    assert build.built == [("hubspot", "portal-1"), ("hubspot", "portal-1")]
