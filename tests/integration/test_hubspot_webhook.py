"""POST /webhooks/hubspot: v3-signed batches are stored once per eventId; anything else stores nothing."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from connector.store import Event
from connector.web import create_app
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    CLIENT_SECRET,
    hubspot_services,
    legacy_headers,
    settings_overrides,
    signed,
    stage_event,
)

PUBLIC = "https://offboard.example.com"
PATH = "/webhooks/hubspot?tenant=acme&note=a%3Ab%20c"  # a query string, as configured in the app


@pytest.fixture
def client(db_url, store, clock):
    # The adapter is built but never called: the endpoint makes no CRM call.
    settings = make_settings(db_url, OFFBOARD_PUBLIC_URL=PUBLIC, **settings_overrides("http://127.0.0.1:9"))
    app = create_app(hubspot_services(settings, store, clock))
    return app.test_client()


def count(store) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


def post(client, body, headers, path=PATH):
    return client.post(path, data=body, headers=headers)


def batch(*event_ids: int) -> list[dict]:
    return [stage_event(str(700 + n), "closedwon", event_id=n) for n in event_ids]


def test_a_signed_batch_is_stored_event_by_event_and_answered_204(client, store, clock):
    events = batch(1, 2)
    body, headers = signed(events, url=PUBLIC + PATH, at=clock.now)
    assert {"X-HubSpot-Signature-v3", "X-HubSpot-Signature"} <= set(headers)  # both, as HubSpot sends
    reply = post(client, body, headers)
    assert (reply.status_code, reply.get_data()) == (204, b"")
    with store.session() as session:
        stored = session.scalars(select(Event).order_by(Event.id)).all()
    assert [(e.source, e.account, e.event_key, e.kind) for e in stored] == [
        ("hubspot", "62515", "1", "deal.propertyChange"),
        ("hubspot", "62515", "2", "deal.propertyChange"),
    ]
    assert stored[0].payload == events[0]


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda h, at: h | {"X-HubSpot-Signature-v3": "AAAA" + h["X-HubSpot-Signature-v3"][4:]}, id="wrong"
        ),
        pytest.param(lambda h, at: {k: v for k, v in h.items() if "Signature" not in k}, id="missing"),
        pytest.param(lambda h, at: h | {"X-HubSpot-Request-Timestamp": "later"}, id="no-timestamp"),
    ],
)
def test_a_bad_signature_is_401_and_stores_nothing(client, store, clock, tamper):
    body, headers = signed(batch(1), url=PUBLIC + PATH, at=clock.now)
    reply = post(client, body, tamper(headers, clock.now))
    assert reply.status_code == 401
    assert "error" in reply.get_json()
    assert count(store) == 0


def test_stale_and_future_timestamps_are_401(client, store, clock):
    for offset in (timedelta(minutes=-6), timedelta(minutes=6)):
        body, headers = signed(batch(1), url=PUBLIC + PATH, at=clock.now + offset)
        assert post(client, body, headers).status_code == 401
    assert count(store) == 0


def test_a_signature_for_another_url_is_401(client, store, clock):
    body, headers = signed(batch(1), url=PUBLIC + "/webhooks/hubspot", at=clock.now)
    assert post(client, body, headers).status_code == 401  # the query string is signed too
    assert count(store) == 0


def test_a_valid_request_replayed_after_the_window_is_401(client, store, clock):
    body, headers = signed(batch(1), url=PUBLIC + PATH, at=clock.now)
    assert post(client, body, headers).status_code == 204
    clock.advance(minutes=5, seconds=1)
    assert post(client, body, headers).status_code == 401
    assert count(store) == 1


def test_a_redelivered_event_id_stores_nothing_new(client, store, clock):
    body, headers = signed(batch(1, 2), url=PUBLIC + PATH, at=clock.now)
    assert post(client, body, headers).status_code == 204
    clock.advance(minutes=30)  # HubSpot retries with a fresh signature and attemptNumber
    again = [event | {"attemptNumber": 1} for event in batch(2, 3)]
    body, headers = signed(again, url=PUBLIC + PATH, at=clock.now)
    assert post(client, body, headers).status_code == 204
    assert count(store) == 3


@pytest.mark.parametrize("secret", [CLIENT_SECRET, ""], ids=["right-secret", "sha256-of-body"])
def test_a_v1_signature_alone_is_401_with_the_reason(client, store, secret):
    # Right or not, v1 signs no time: the same request captured once would be accepted forever.
    body = json.dumps(batch(9)).encode()
    reply = post(client, body, legacy_headers(body, secret))
    assert reply.status_code == 401
    assert "only X-HubSpot-Signature-v3 is accepted" in reply.get_json()["error"]
    assert count(store) == 0


def test_a_single_event_object_is_400_only_app_webhook_batches_are_taken(client, store, clock):
    body, headers = signed(stage_event("701", "closedwon", event_id=9), url=PUBLIC + PATH, at=clock.now)
    reply = post(client, body, headers)
    assert reply.status_code == 400 and "JSON array" in reply.get_json()["error"]
    assert count(store) == 0


@pytest.mark.parametrize(
    ("events", "says"),
    [
        ({"not": "an event"}, "JSON array"),
        ([{"eventId": 1}], "schema"),
        ([stage_event("701", "closedwon", event_id=n) for n in range(101)], "at most 100"),
    ],
)
def test_a_malformed_body_is_400_with_a_reason(client, store, clock, events, says):
    body, headers = signed(events, url=PUBLIC + PATH, at=clock.now)
    reply = post(client, body, headers)
    assert reply.status_code == 400
    assert says in reply.get_json()["error"]
    assert count(store) == 0


@pytest.mark.parametrize("unset", [None, ""], ids=["absent", "empty"])
def test_without_a_client_secret_the_endpoint_is_off(db_url, store, clock, unset):
    overrides = settings_overrides("http://127.0.0.1:9") | {"HUBSPOT_CLIENT_SECRET": unset}
    settings = make_settings(db_url, OFFBOARD_PUBLIC_URL=PUBLIC, **overrides)
    client = create_app(hubspot_services(settings, store, clock)).test_client()
    body, headers = signed(batch(1), url=PUBLIC + PATH, at=clock.now, secret="")
    v1_of_body = legacy_headers(body, secret="")  # hex(sha256(body)): what an empty secret would accept
    for attempt in (headers, v1_of_body, headers | v1_of_body):
        reply = post(client, body, attempt)
        assert reply.status_code == 503
        assert "HUBSPOT_CLIENT_SECRET is not set" in reply.get_json()["error"]
    assert count(store) == 0
