"""`offboard hubspot setup` and `offboard plan --crm hubspot` against the fake HubSpot."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from adapters.hubspot.cli import hubspot
from adapters.hubspot.setup import PROPERTIES
from tests.support.hubspot import TOKEN, FakeHubSpot, serve, standard_portal


@pytest.fixture
def fake(httpserver, monkeypatch):
    fake = standard_portal(FakeHubSpot())
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("HUBSPOT_API_BASE_URL", serve(fake, httpserver))
    monkeypatch.setenv("OFFBOARD_PUBLIC_URL", "https://offboard.example.com")
    return fake


def setup():
    return CliRunner().invoke(hubspot, ["setup"])


def test_setup_creates_each_property_once_and_prints_the_workflow(fake):
    first = setup()
    assert first.exit_code == 0, first.output
    for object_type, definition in PROPERTIES:
        assert f"created  {object_type[:-1]} property {definition['name']}" in first.output
        assert fake.schema[object_type][definition["name"]]["type"] == definition["type"]
    assert fake.schema["contacts"]["offboard_survey_kind"]["options"][0]["value"] == "nps"
    assert "https://offboard.example.com/webhooks/hubspot" in first.output
    assert '"Offboard survey reference" is known' in first.output
    second = setup()
    assert second.exit_code == 0
    assert "created" not in second.output
    assert second.output.count("exists") == len(PROPERTIES)
    contact_properties = sum(1 for object_type, _ in PROPERTIES if object_type == "contacts")
    assert fake.calls["POST /crm/v3/properties/contacts"] == contact_properties
    assert fake.calls["POST /crm/v3/properties/deals"] == len(PROPERTIES) - contact_properties


def test_setup_says_when_the_contract_properties_are_missing(fake, monkeypatch):
    monkeypatch.setenv("HUBSPOT_CONTRACT_END_PROPERTY", "renewal_date")
    result = setup()
    assert result.exit_code == 0
    assert "missing  deal property renewal_date" in result.output


def test_setup_needs_a_token_and_reports_a_refused_one(fake, monkeypatch):
    monkeypatch.setenv("HUBSPOT_ACCESS_TOKEN", "pat-na1-wrong")
    refused = setup()
    assert refused.exit_code == 1
    assert "refused the access token" in refused.output
    assert "pat-na1-wrong" not in refused.output
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN")
    assert "HUBSPOT_ACCESS_TOKEN is not set" in setup().output


def test_plan_previews_what_a_hubspot_deal_would_get(fake, monkeypatch, sqlite_url):
    from connector.cli import main
    from tests.support.helpers import BUNDLED_PLAYBOOKS
    from tests.support.hubspot import add_deal

    monkeypatch.setenv("OFFBOARD_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(BUNDLED_PLAYBOOKS))
    deal = add_deal(fake)["deal"]
    result = CliRunner().invoke(main, ["plan", "--crm", "hubspot", "--deal", deal])
    assert result.exit_code == 0, result.output
    assert "completed-project" in result.output
    assert "Confirm the end date with Acme Corp" in result.output
    assert fake.calls["POST /crm/v3/objects/tasks/batch/create"] == 0  # a preview writes nothing


def test_every_property_the_manifest_says_we_write_is_one_setup_creates():
    import json
    from pathlib import Path

    manifest = json.loads((Path(__file__).resolve().parents[2] / "manifest.json").read_text())
    (crm,) = [c for c in manifest["crms"] if c["name"] == "hubspot"]
    promised = {(p["object"] + "s", p["name"]) for p in crm["writes"]["properties"]}
    assert promised <= {(object_type, d["name"]) for object_type, d in PROPERTIES}
