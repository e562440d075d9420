"""POST /webhooks/generic: verify, store once, answer at once; refuse without storing."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from connector.store import Event, Run
from tests.support.harness import tasks_per_run
from tests.support.helpers import deal_closed_event, signed


def count(store, table) -> int:
    with store.session() as session:
        return session.scalar(select(func.count()).select_from(table))


def test_signed_event_is_stored_and_answered_202(client, store):
    body, headers = signed(deal_closed_event())
    reply = client.post("/webhooks/generic", data=body, headers=headers)
    assert reply.status_code == 202
    assert reply.get_json()["status"] == "accepted"
    with store.session() as session:
        event = session.scalars(select(Event)).one()
    assert (event.source, event.kind, event.state) == ("generic", "deal.closed", "pending")
    assert event.event_key == headers["webhook-id"]
    assert event.payload["deal"]["id"] == "D-1"


def test_redelivery_is_recognised_and_makes_one_run(client, store, services):
    body, headers = signed(deal_closed_event())
    first = client.post("/webhooks/generic", data=body, headers=headers)
    services.worker().run_until_idle()
    # A redelivery is signed afresh (new timestamp) but keeps its webhook-id.
    body, headers = signed(deal_closed_event(), msg_id=headers["webhook-id"])
    second = client.post("/webhooks/generic", data=body, headers=headers)
    services.worker().run_until_idle()
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.get_json() == {"status": "duplicate", "event_id": first.get_json()["event_id"]}
    assert count(store, Event) == 1
    assert count(store, Run) == 1
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def test_same_deal_under_two_event_ids_still_makes_one_run(client, store, services):
    for msg_id in ("msg_a", "msg_b"):
        body, headers = signed(deal_closed_event(), msg_id=msg_id)
        assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    assert count(store, Event) == 2
    assert count(store, Run) == 1
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def test_concurrent_deliveries_of_one_event_store_it_once(app, store, services):
    body, headers = signed(deal_closed_event())
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def deliver() -> None:
        client = app.test_client()
        barrier.wait()
        statuses.append(client.post("/webhooks/generic", data=body, headers=headers).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    services.worker().run_until_idle()
    assert sorted(statuses) == [200] * 7 + [202]
    assert count(store, Event) == 1
    assert count(store, Run) == 1
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def _refused(client, store, body, headers, status):
    reply = client.post("/webhooks/generic", data=body, headers=headers)
    assert reply.status_code == status, reply.get_data(as_text=True)
    assert count(store, Event) == 0
    return reply.get_json()


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h: h.pop("webhook-signature"), id="unsigned"),
        pytest.param(lambda h: h.pop("webhook-id"), id="no-id"),
        pytest.param(lambda h: h.update({"webhook-signature": "v1,AAAA"}), id="wrong-signature"),
        pytest.param(lambda h: h.update({"webhook-signature": "garbage"}), id="malformed-signature"),
        pytest.param(lambda h: h.update({"webhook-id": "msg_other"}), id="id-not-signed"),
    ],
)
def test_bad_signatures_are_401_and_store_nothing(client, store, tamper):
    body, headers = signed(deal_closed_event())
    tamper(headers)
    answer = _refused(client, store, body, headers, 401)
    assert "sign" in answer["error"]


def test_stale_and_future_timestamps_are_401(client, store):
    for skew in (timedelta(minutes=-6), timedelta(minutes=6)):
        body, headers = signed(deal_closed_event(), at=datetime.now(UTC) + skew)
        _refused(client, store, body, headers, 401)


def test_wrong_secret_is_401(client, store):
    body, headers = signed(deal_closed_event(), secret="whsec_c29tZW9uZS1lbHNlcy1zZWNyZXQtdmFsdWU=")
    _refused(client, store, body, headers, 401)


def test_body_changed_after_signing_is_401(client, store):
    body, headers = signed(deal_closed_event())
    _refused(client, store, body.replace(b"Acme", b"Evil"), headers, 401)


def test_malformed_json_is_400_with_reason(client, store):
    body, headers = signed('{"type": "deal.closed", ')
    answer = _refused(client, store, body, headers, 400)
    assert "not valid JSON" in answer["error"]


def test_schema_error_is_400_naming_the_field(client, store):
    event = deal_closed_event()
    event["deal"]["outcome"] = "maybe"
    del event["deal"]["name"]
    body, headers = signed(event)
    answer = _refused(client, store, body, headers, 400)
    fields = {d["field"] for d in answer["details"]}
    assert {"deal.outcome", "deal.name"} <= fields


def test_json_that_is_not_an_object_is_400(client, store):
    body, headers = signed("[1, 2, 3]")
    answer = _refused(client, store, body, headers, 400)
    assert "JSON object" in answer["error"]


def test_unconfigured_crm_is_400(client, store):
    body, headers = signed(deal_closed_event() | {"crm": "hubspot"})
    answer = _refused(client, store, body, headers, 400)
    assert "hubspot" in answer["error"]


def test_oversize_body_is_413_and_stores_nothing(client, store):
    event = deal_closed_event(properties={"padding": "x" * (1024 * 1024)})
    body, headers = signed(event)
    answer = _refused(client, store, body, headers, 413)
    assert "larger than" in answer["error"]


def test_endpoint_is_503_without_a_secret(store, clock):
    from connector.services import build
    from connector.web import create_app
    from tests.support.helpers import make_settings

    settings = make_settings(
        str(store.engine.url.render_as_string(hide_password=False)), OFFBOARD_WEBHOOK_SECRET=None
    )
    client = create_app(build(settings, store=store, clock=clock)).test_client()
    body, headers = signed(deal_closed_event())
    answer = _refused(client, store, body, headers, 503)
    assert "OFFBOARD_WEBHOOK_SECRET" in answer["error"]


def test_unknown_routes_answer_json_404(client):
    reply = client.get("/webhooks/nope")
    assert reply.status_code == 404
    assert json.loads(reply.data)["error"]
