"""One receiver serves every inbound source: route, verify and parse (the source's), store, answer.

A source a plugin declares is served at its path with nothing else to write: these
tests add one (``EchoSource``) and check what the receiver does around it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import select

import adapters
from adapters.base import Delivery, InboundEvent, InboundRequest, Refusal, Reply
from connector.errors import PayloadInvalid, SignatureInvalid
from connector.inbox import Accepted
from connector.store import Event
from connector.web import MAX_BODY_BYTES, create_app

KEY = "echo-key"


class EchoSource:
    """A made-up CRM's endpoint: a key header, a JSON list of events, its own refusal format."""

    path = "/webhooks/echo"
    source = "sandbox"

    def __init__(self, *, own_refusals: bool = True) -> None:
        self.own_refusals = own_refusals
        self.seen: list[InboundRequest] = []
        self.bodies_read = 0

    def receive(self, request: InboundRequest) -> Delivery:
        self.seen.append(request)
        if request.headers.get("X-Echo-Key") != KEY:
            raise SignatureInvalid("no echo key")
        self.bodies_read += 1
        items = json.loads(request.read_body())
        if not isinstance(items, list):
            raise PayloadInvalid("a list, please", details=[{"field": "(body)", "problem": "not a list"}])
        events = [InboundEvent("acct-1", str(item["id"]), "echo", item) for item in items]
        return Delivery(events, reference=request.args.get("ref"))

    def reply(self, delivery: Delivery, stored: Sequence[Accepted]) -> Reply:
        fresh = sum(not a.duplicate for a in stored)
        return Reply(201, {"ref": delivery.reference, "stored": len(stored), "new": fresh})

    def refused(self, refusal: Refusal) -> Reply | None:
        if not self.own_refusals:
            return None
        text = f"{refusal.status} {refusal.error} {refusal.reason}".encode()
        return Reply(refusal.status, text, "text/plain; charset=utf-8")


@pytest.fixture
def echo() -> EchoSource:
    return EchoSource()


@pytest.fixture
def echo_client(services, monkeypatch, echo) -> Any:
    real = adapters.inbound_sources
    monkeypatch.setattr(adapters, "inbound_sources", lambda settings: [*real(settings), echo])
    return create_app(services).test_client()


def events(store) -> list[Event]:
    with store.session() as session:
        return list(session.scalars(select(Event).order_by(Event.id)))


def post(client: Any, body: Any, key: str | None = KEY, path: str = "/webhooks/echo") -> Any:
    headers = {"X-Echo-Key": key} if key else {}
    return client.post(path, data=json.dumps(body), headers=headers)


def test_a_declared_source_is_served_and_its_events_stored_under_its_name(echo_client, store, echo):
    reply = post(echo_client, [{"id": 1}, {"id": 2}], path="/webhooks/echo?ref=r-7")
    assert (reply.status_code, reply.get_json()) == (201, {"ref": "r-7", "stored": 2, "new": 2})
    stored = events(store)
    assert [(e.source, e.account, e.event_key, e.kind, e.state) for e in stored] == [
        ("sandbox", "acct-1", "1", "echo", "pending"),
        ("sandbox", "acct-1", "2", "echo", "pending"),
    ]
    assert stored[1].payload == {"id": 2}


def test_a_redelivery_is_recognised(echo_client, store):
    post(echo_client, [{"id": 1}])
    again = post(echo_client, [{"id": 1}, {"id": 3}])
    assert again.get_json() == {"ref": None, "stored": 2, "new": 1}
    assert [e.event_key for e in events(store)] == ["1", "3"]


def test_the_source_sees_the_request_as_sent(echo_client, echo, services):
    post(echo_client, [], path="/webhooks/echo?ref=a%2Fb&x=1")
    (seen,) = echo.seen
    assert (seen.method, seen.path) == ("POST", "/webhooks/echo?ref=a%2Fb&x=1")
    assert seen.args["ref"] == "a/b"
    assert seen.public_url == services.settings.public_url
    assert set(seen.configured) == set(services.adapters) == {"sandbox"}
    assert seen.now == services.clock()


def test_a_refused_sender_gets_the_sources_answer_and_nothing_is_read_or_stored(echo_client, store, echo):
    reply = post(echo_client, [{"id": 1}], key="wrong")
    assert (reply.status_code, reply.mimetype) == (401, "text/plain")
    assert reply.data == b"401 SignatureInvalid no echo key"
    assert echo.bodies_read == 0
    assert events(store) == []


def test_a_body_over_the_limit_gets_the_sources_answer_too(echo_client, store):
    reply = echo_client.post("/webhooks/echo", data=b"x" * (MAX_BODY_BYTES + 1), headers={"X-Echo-Key": KEY})
    assert (reply.status_code, reply.mimetype) == (413, "text/plain")
    assert reply.data.startswith(b"413 None body is larger than")
    assert events(store) == []


def test_without_its_own_refusals_a_source_gets_the_core_json_error(services, monkeypatch, store):
    plain = EchoSource(own_refusals=False)
    monkeypatch.setattr(adapters, "inbound_sources", lambda settings: [plain])
    client = create_app(services).test_client()
    refused = post(client, {"id": 1})
    assert (refused.status_code, refused.get_json()) == (
        400,
        {"error": "a list, please", "details": [{"field": "(body)", "problem": "not a list"}]},
    )
    too_big = client.post("/webhooks/echo", data=b"x" * (MAX_BODY_BYTES + 1), headers={"X-Echo-Key": KEY})
    assert (too_big.status_code, too_big.get_json()) == (
        413,
        {"error": f"body is larger than {MAX_BODY_BYTES} bytes"},
    )
    assert events(store) == []


def test_every_source_is_routed_for_post_only(echo_client):
    app = echo_client.application
    served = {
        rule.rule: set(rule.methods or ()) - {"HEAD", "OPTIONS"}
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/webhooks/")
    }
    assert served == {
        path: {"POST"}
        for path in (
            "/webhooks/generic",
            "/webhooks/hubspot",
            "/webhooks/salesforce",
            "/webhooks/salesforce/flow",
            "/webhooks/echo",
        )
    }
    assert echo_client.get("/webhooks/echo").status_code == 405


def test_the_answers_are_counted_by_source(echo_client, monkeypatch):
    import connector.web.receiver

    counted: list[tuple[str, int]] = []
    monkeypatch.setattr(
        connector.web.receiver, "event_received", lambda source, status: counted.append((source, status))
    )
    post(echo_client, [{"id": 9}])
    post(echo_client, [{"id": 9}], key="wrong")
    assert counted == [("echo", 201), ("echo", 401)]
