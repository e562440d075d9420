"""The fake HubSpot is as strict as the real one: what it refuses, the adapter must never send."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.faults import Fault
from tests.support.hubspot import (
    TOKEN,
    FakeHubSpot,
    add_deal,
    offboard_properties,
    standard_portal,
)

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CREATE = "/crm/v3/objects/tasks/batch/create"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def fake():
    return offboard_properties(standard_portal(FakeHubSpot(clock=Clock(), limit_per_10s=5)))


def call(fake, method, path, body=None, headers=AUTH, query=None):
    data = json.dumps(body).encode() if body is not None else b""
    return fake.handle(method, path, query or {}, dict(headers), data)


def task(deal_id, **properties):
    values = {"hs_timestamp": "1798707600000", "hs_task_subject": "Call them"} | properties
    link = {
        "to": {"id": deal_id},
        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 216}],
    }
    return {"properties": values, "associations": [link]}


def test_no_token_or_a_wrong_one_is_401_with_hubspots_body(fake):
    for headers in ({}, {"Authorization": "Bearer pat-na1-wrong"}):
        status, answer_headers, body = call(fake, "GET", "/account-info/v3/details", headers=headers)
        assert status == 401
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert "X-HubSpot-RateLimit-Remaining" in answer_headers


def test_tasks_need_hs_timestamp_valid_options_and_existing_targets(fake):
    fake.limit_per_10s = 1000
    deal = add_deal(fake)["deal"]
    refused = [
        task(deal, hs_timestamp=""),
        task(deal, hs_task_priority="URGENT"),
        task(deal, hubspot_owner_id="999"),
        task(deal, no_such_property="x"),
        task("424242"),
        task(deal)
        | {
            "associations": [
                {
                    "to": {"id": deal},
                    "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 3}],
                }
            ]
        },
    ]
    for item in refused:
        status, _, body = call(fake, "POST", CREATE, {"inputs": [item]})
        assert status == 400, item
        assert body["category"] == "VALIDATION_ERROR"
    assert fake.records("tasks") == []
    status, _, body = call(fake, "POST", CREATE, {"inputs": [task(deal, hs_task_priority="HIGH")]})
    assert status == 201 and body["status"] == "COMPLETE"


def test_a_batch_holds_at_most_100_inputs(fake):
    fake.limit_per_10s = 1000
    deal = add_deal(fake)["deal"]
    status, _, body = call(fake, "POST", CREATE, {"inputs": [task(deal)] * 101})
    assert status == 400 and "100" in body["message"]
    assert call(fake, "POST", CREATE, {"inputs": [task(deal)] * 100})[0] == 201


def test_past_the_rolling_budget_hubspot_answers_429_with_its_body(fake):
    statuses = [call(fake, "GET", "/account-info/v3/details")[0] for _ in range(6)]
    assert statuses == [200] * 5 + [429]
    _, headers, body = call(fake, "GET", "/account-info/v3/details")
    assert body["errorType"] == "RATE_LIMIT" and body["policyName"] == "TEN_SECONDLY_ROLLING"
    assert headers["X-HubSpot-RateLimit-Remaining"] == "0"
    fake.clock.now += timedelta(seconds=10)
    assert call(fake, "GET", "/account-info/v3/details")[0] == 200


def test_injected_faults_and_dropped_replies(fake):
    deal = add_deal(fake)["deal"]
    fake.inject(503, times=1, route=f"POST {CREATE}")
    fake.inject(Fault.LOST_REPLY, route=f"POST {CREATE}")
    assert call(fake, "POST", CREATE, {"inputs": [task(deal)]})[0] == 503
    assert fake.records("tasks") == []
    assert call(fake, "POST", CREATE, {"inputs": [task(deal)]})[0] == Fault.LOST_REPLY
    assert len(fake.records("tasks")) == 1  # applied, though nobody heard the answer
    assert fake.calls[f"POST {CREATE}"] == 2


@pytest.mark.parametrize(
    ("fault", "status", "category"),
    [
        (Fault.TRANSIENT, 503, "SERVICE_UNAVAILABLE"),
        (Fault.RATE_LIMITED, 429, "RATE_LIMITS"),
        (Fault.PERMANENT, 400, "VALIDATION_ERROR"),
    ],
)
def test_a_fault_played_before_the_work_answers_its_status_and_writes_nothing(fake, fault, status, category):
    deal = add_deal(fake)["deal"]
    fake.inject(fault, route=f"POST {CREATE}")
    answered, _headers, body = call(fake, "POST", CREATE, {"inputs": [task(deal)]})
    assert (answered, body["category"]) == (status, category)
    assert fake.records("tasks") == []
    assert call(fake, "POST", CREATE, {"inputs": [task(deal)]})[0] == 201  # once only


@pytest.mark.parametrize("fault", [Fault.RESET, Fault.TIMEOUT])
def test_a_reset_or_a_timeout_reaches_the_transport_and_writes_nothing(fake, fault):
    deal = add_deal(fake)["deal"]
    fake.outage([fault])
    assert call(fake, "POST", CREATE, {"inputs": [task(deal)]})[0] == fault
    fake.recover()
    assert fake.records("tasks") == []


def test_a_fault_hubspot_cannot_play_is_refused(fake):
    with pytest.raises(ValueError, match="session_expired"):
        fake.inject(Fault.SESSION_EXPIRED)
    with pytest.raises(ValueError, match="session_expired"):
        fake.outage([503, Fault.SESSION_EXPIRED])


def test_search_finds_tokens_and_pages_and_lags_like_hubspot(fake):
    fake.limit_per_10s, fake.search_per_s = 1000, 1000
    deal = add_deal(fake)["deal"]
    call(
        fake,
        "POST",
        CREATE,
        {"inputs": [task(deal, hs_task_body=f"x<br>Offboard ref: ob1 #{n}") for n in range(3)]},
    )
    search = {
        "filterGroups": [
            {"filters": [{"propertyName": "hs_task_body", "operator": "CONTAINS_TOKEN", "value": "ob1"}]}
        ],
        "limit": 2,
    }
    _, _, page = call(fake, "POST", "/crm/v3/objects/tasks/search", search)
    assert page["total"] == 3 and page["paging"]["next"]["after"] == "2"
    fake.search_lag = timedelta(seconds=5)
    assert call(fake, "POST", "/crm/v3/objects/tasks/search", search)[2]["total"] == 0


def test_a_note_body_over_65536_characters_is_refused_with_hubspots_error(fake):
    fake.limit_per_10s = 1000
    deal = add_deal(fake)["deal"]
    types = [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 214}]
    link = {"to": {"id": deal}, "types": types}
    create = "/crm/v3/objects/notes/batch/create"

    def note(body: str) -> dict:
        return {"properties": {"hs_timestamp": "1798707600000", "hs_note_body": body}, "associations": [link]}

    for body in ("x" * 65_537, "😀" * 32_769):  # an emoji counts twice, as in Java
        status, _, answer = call(fake, "POST", create, {"inputs": [note(body)]})
        assert status == 400 and answer["category"] == "VALIDATION_ERROR"
        assert "hs_note_body" in answer["message"] and "65536" in answer["message"]
    assert fake.records("notes") == []
    assert call(fake, "POST", create, {"inputs": [note("x" * 65_536)]})[0] == 201
