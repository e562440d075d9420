"""What manifest.json and docs/hubspot.md promise about HubSpot matches what the endpoint does."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
GUIDE = (ROOT / "docs" / "hubspot.md").read_text()


def hubspot() -> dict:
    return next(crm for crm in MANIFEST["crms"] if crm["name"] == "hubspot")


def test_the_manifest_claims_v3_app_webhooks_and_no_workflow_webhooks():
    (webhook,) = hubspot()["webhooks"]
    assert webhook["signature"].startswith("X-HubSpot-Signature-v3 only")
    assert "workflow" not in json.dumps(hubspot()).lower()
    assert {s["subscriptionType"] for s in webhook["subscriptions"]} == {
        "deal.propertyChange",
        "object.propertyChange",
    }


def test_the_manifest_subscribes_to_task_status_and_asks_for_the_scopes_installs_ask_for():
    from adapters.hubspot.settings import HubSpotSettings

    (webhook,) = hubspot()["webhooks"]
    tasks = [s for s in webhook["subscriptions"] if s["subscriptionType"] == "object.propertyChange"]
    assert tasks == [
        {
            "subscriptionType": "object.propertyChange",
            "objectTypeId": "0-27",
            "propertyName": "hs_task_status",
        }
    ]
    assert "files" in hubspot()["scopes"]  # the offboarding record is uploaded with the Files API
    assert set(hubspot()["scopes"]) | {"oauth"} == set(HubSpotSettings.scopes)
    assert set(hubspot()["oauth"]["required_scopes"]) == set(HubSpotSettings.scopes)
    written = {(p["object"], p["name"]) for p in hubspot()["writes"]["properties"]}
    progress = {"offboard_status", "offboard_progress", "offboard_next_due", "offboard_playbook"}
    assert {("deal", name) for name in progress} <= written


def test_the_guide_does_not_offer_v1_v2_or_workflow_webhooks():
    assert "v1/v2 signatures are accepted" not in GUIDE
    assert "Offboard ignores the older one" in GUIDE
    assert "subscribe through the app, not a workflow" in GUIDE


def test_the_rate_limits_are_described_per_app_and_the_daily_one_as_shared():
    setting = next(s for s in MANIFEST["settings"] if s["name"] == "HUBSPOT_RATE_LIMIT_PER_10S")
    for text in (setting["description"], " ".join(GUIDE.split())):
        assert re.search(r"10-second limit (\([^)]*\) )?(is|counts) per app and account", text), text
        assert "daily limit" in text and "shared by all the account's apps" in text
        assert "limit is per account" not in text
