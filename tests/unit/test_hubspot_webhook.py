"""HubSpot webhook bodies: the documented event shape in, inbox events out; stage changes recognised."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from adapters.hubspot import webhook
from connector.errors import PayloadInvalid
from tests.support.hubspot import stage_event


def test_a_batch_becomes_one_inbox_event_per_item_kept_as_sent():
    events = [stage_event("701", "closedwon", event_id=n) for n in (1, 2)]
    events.append({"eventId": "3", "portalId": "62515", "eventType": "contact.creation", "objectId": 5})
    parsed = webhook.parse(json.dumps(events).encode())
    assert [(e.account, e.event_key, e.kind) for e in parsed] == [
        ("62515", "1", "deal.propertyChange"),
        ("62515", "2", "deal.propertyChange"),
        ("62515", "3", "contact.creation"),
    ]
    assert parsed[0].payload == events[0]


def test_a_single_object_is_not_an_app_webhook_batch():
    # Workflow "Send a webhook" actions post one record's properties, without eventId, portalId or
    # subscriptionType; Offboard subscribes through the app's webhooks, which always send a list.
    workflow = {"objectId": 701, "properties": {"dealstage": "closedwon"}}
    for item in (stage_event("701", "closedwon"), workflow):
        with pytest.raises(PayloadInvalid, match="JSON array"):
            webhook.parse(json.dumps(item).encode())


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not valid JSON"),
        (b'"text"', "JSON array"),
        (json.dumps([{"eventId": 1}] * 101).encode(), "at most 100"),
        (json.dumps([{"portalId": 1, "subscriptionType": "deal.creation"}]).encode(), "schema"),
        (json.dumps([{"eventId": 1, "portalId": 1}]).encode(), "schema"),
        (json.dumps([7]).encode(), "schema"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(body, says):
    with pytest.raises(PayloadInvalid, match=says) as raised:
        webhook.parse(body)
    if says == "schema":
        assert raised.value.details and raised.value.details[0]["field"].startswith("[0]")


def test_a_deal_stage_change_is_recognised_in_both_subscription_formats():
    at = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
    event = stage_event("701", "1003", at=at)
    change = webhook.stage_change(event["subscriptionType"], event)
    assert change == webhook.StageChange("62515", "701", "1003", at)
    generic = event | {"subscriptionType": "object.propertyChange", "objectTypeId": "0-3"}
    assert webhook.stage_change("object.propertyChange", generic) == change


@pytest.mark.parametrize(
    "change",
    [
        {"propertyName": "amount"},
        {"subscriptionType": "contact.propertyChange"},
        {"subscriptionType": "object.propertyChange", "objectTypeId": "0-1"},
        {"propertyValue": ""},
    ],
)
def test_other_events_are_not_stage_changes(change):
    event = stage_event("701", "closedwon") | change
    assert webhook.stage_change(event["subscriptionType"], event) is None
