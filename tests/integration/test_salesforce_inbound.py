"""Salesforce in: outbound messages and Flow callouts stored once and acknowledged, then turned into runs.

Each test runs on SQLite and Postgres; Salesforce is the strict fake org behind ``responses``.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

import pytest
import responses
from sqlalchemy import func, select

from adapters.salesforce.tasks import marker_in
from connector.store import Action, Event, Run
from tests.support.faults import Fault
from tests.support.helpers import make_settings
from tests.support.salesforce import (
    BILLION_LAUGHS,
    EXPECTED_ACK,
    EXTERNAL_ENTITY,
    ORG_ID,
    OUTBOUND_KEY,
    OUTBOUND_PATH,
    FakeSalesforce,
    opportunity_fields,
    outbound_message,
    refresh_settings,
    session_settings,
)

FLOW_SECRET = "flow-shared-secret-for-tests"
NOTIFICATION = "04l5g0000000001AAA"


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def people(org) -> dict[str, str]:
    return {"finance": org.add_user("Fran Finance"), "marketing": org.add_user("Mo Marketing")}


@pytest.fixture
def settings(db_url, org, people):
    return make_settings(
        db_url,
        **session_settings(org),
        SALESFORCE_WEBHOOK_SECRET=FLOW_SECRET,
        OFFBOARD_ROLES=people,
        # The checklist's tracking pass reads Tasks back on its own schedule (its own tests are in
        # test_salesforce_live_checklist.py); off here, these tests count every call they cause.
        OFFBOARD_TRACK_INTERVAL_SECONDS=0,
    )


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


def deliver(client, body: bytes, path: str = OUTBOUND_PATH):
    return client.post(
        path,
        data=body,
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
    )


def count(store, table) -> int:
    with store.session() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def writes(org: FakeSalesforce) -> list[str]:
    return [call for call in org.calls if not call.startswith("GET ")]


def seed_query(soql: str, opportunity: str = "") -> bool:
    """A query that reads one Opportunity by its Id (the adapter's fetch)."""
    return "FROM Opportunity WHERE Id = " in soql and opportunity in soql


def closed_won(org: FakeSalesforce):
    seed = org.add_opportunity()
    return seed, outbound_message([(NOTIFICATION, opportunity_fields(org, seed.opportunity))])


# --- must show 1: the Ack, then the checklist in one collections call -----------------


def test_a_closed_opportunity_gets_the_exact_ack_and_its_tasks_in_one_collections_call(
    client, services, store, org, http, people
):
    seed, body = closed_won(org)
    reply = deliver(client, body)
    assert (reply.status_code, reply.mimetype, reply.data) == (200, "text/xml", EXPECTED_ACK)
    with store.session() as session:
        event = session.scalars(select(Event)).one()
        assert (event.source, event.account, event.event_key, event.kind) == (
            "salesforce",
            ORG_ID[:15],
            f"om:{NOTIFICATION}",
            "opportunity",
        )
        assert event.payload["Id"] == seed.opportunity and event.payload["IsClosed"] == "true"
    assert org.calls == []  # the web answered without calling Salesforce

    services.worker().run_until_idle()

    assert org.count("POST", "composite/sobjects") == 1
    with store.session() as session:
        batch = session.scalars(select(Action).where(Action.kind == "task")).one()
        assert batch.state == "done"
        planned = {t["step_id"]: t for t in batch.payload["tasks"]}
    tasks = {t["Id"]: t for t in org.records("Task")}
    assert len(tasks) == len(planned) > 5
    by_subject = {t["Subject"]: t for t in tasks.values()}
    assert all(t["WhatId"] == seed.opportunity and t["WhoId"] == seed.contacts[0] for t in tasks.values())
    confirm = by_subject["Confirm the end date with Acme Corp"]
    assert (confirm["OwnerId"], confirm["ActivityDate"], confirm["Priority"]) == (
        seed.owner,
        "2026-12-01",
        "High",
    )
    assert by_subject["Send the final invoice to Acme Corp"]["OwnerId"] == people["finance"]  # role:finance
    assert org.db["Opportunity"][seed.opportunity]["Offboarding_Status__c"] == "in progress"


# --- must show 2: redelivery, foreign org, malformed XML, XML bombs -------------------------


def test_a_second_delivery_of_the_same_notification_creates_nothing_new(client, services, store, org, http):
    _, body = closed_won(org)
    assert deliver(client, body).data == EXPECTED_ACK
    services.worker().run_until_idle()
    tasks_before = len(org.records("Task"))
    assert deliver(client, body).data == EXPECTED_ACK  # Salesforce retries until it gets its Ack
    services.worker().run_until_idle()
    assert (count(store, Event), count(store, Run)) == (1, 1)
    assert len(org.records("Task")) == tasks_before
    assert org.count("POST", "composite/sobjects") == 1


def test_a_new_notification_for_a_deal_already_running_starts_nothing_new(client, services, store, org, http):
    seed, body = closed_won(org)
    deliver(client, body)
    again = outbound_message([("04l5g0000000002AAA", opportunity_fields(org, seed.opportunity))])
    deliver(client, again)
    services.worker().run_until_idle()
    assert (count(store, Event), count(store, Run)) == (2, 1)
    assert org.count("POST", "composite/sobjects") == 1


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        (
            outbound_message([(NOTIFICATION, {"Id": "0065g0000000001AAA"})], org_id="00D5g0000Other1AAA"),
            403,
            "not the configured SALESFORCE_ORG_ID",
        ),
        (b"<soapenv:Envelope><soapenv:Body>", 400, "not well-formed XML"),
        (BILLION_LAUGHS, 400, "unsafe XML refused"),
        (EXTERNAL_ENTITY, 400, "unsafe XML refused"),
    ],
    ids=["another-org", "malformed", "billion-laughs", "external-entity"],
)
def test_refused_messages_get_a_soap_fault_store_nothing_and_log_why(
    client, store, org, http, caplog, body, status, reason
):
    caplog.set_level(logging.WARNING, logger="offboard.web.salesforce")
    reply = deliver(client, body)
    assert (reply.status_code, reply.mimetype) == (status, "text/xml")
    assert b"<soapenv:Fault><faultcode>soapenv:Client</faultcode>" in reply.data
    assert reason.encode() in reply.data
    assert reason in caplog.text
    assert count(store, Event) == 0


def test_without_an_org_id_the_endpoint_answers_503(store, clock, db_url, org):
    from connector.services import build
    from connector.web import create_app

    settings = make_settings(db_url, **{**session_settings(org), "SALESFORCE_ORG_ID": None})
    client = create_app(build(settings, store=store, clock=clock)).test_client()
    reply = deliver(client, closed_won(org)[1])
    assert reply.status_code == 503
    assert b"soapenv:Server" in reply.data and b"SALESFORCE_ORG_ID" in reply.data
    assert count(store, Event) == 0


# --- the key in the URL: only an authenticated sender's notifications are stored ------------------


@pytest.mark.parametrize(
    "path",
    ["/webhooks/salesforce", "/webhooks/salesforce?key=", f"/webhooks/salesforce?key={OUTBOUND_KEY[:-1]}x"],
    ids=["no-key", "empty-key", "wrong-key"],
)
def test_a_message_without_the_right_key_gets_a_401_fault_and_nothing_is_stored(
    client, services, store, org, http, caplog, path
):
    caplog.set_level(logging.DEBUG)
    _, body = closed_won(org)
    reply = deliver(client, body, path)
    assert (reply.status_code, reply.mimetype) == (401, "text/xml")
    assert b"<soapenv:Fault><faultcode>soapenv:Client</faultcode>" in reply.data
    assert b"SALESFORCE_OUTBOUND_KEY" in reply.data
    services.worker().run_until_idle()
    assert (count(store, Event), count(store, Run)) == (0, 0)
    assert writes(org) == [] and org.records("Task") == []
    assert not [q for q in org.queries if seed_query(q)]  # not one call spent on a forged message
    assert OUTBOUND_KEY[:-1] not in caplog.text + reply.get_data(as_text=True)


def test_without_a_configured_key_the_endpoint_answers_503(store, clock, db_url, org):
    from connector.services import build
    from connector.web import create_app

    settings = make_settings(db_url, **{**session_settings(org), "SALESFORCE_OUTBOUND_KEY": None})
    client = create_app(build(settings, store=store, clock=clock)).test_client()
    reply = deliver(client, closed_won(org)[1])
    assert (reply.status_code, reply.mimetype) == (503, "text/xml")
    assert b"soapenv:Server" in reply.data and b"SALESFORCE_OUTBOUND_KEY" in reply.data
    assert count(store, Event) == 0


def test_a_forged_notification_id_sent_without_the_key_does_not_shadow_the_real_delivery(
    client, services, store, org, http
):
    seed, real = closed_won(org)
    forged = outbound_message([(NOTIFICATION, {"Id": seed.opportunity, "IsClosed": "false"})])
    assert deliver(client, forged, "/webhooks/salesforce").status_code == 401
    assert deliver(client, real).data == EXPECTED_ACK
    with store.session() as session:
        event = session.scalars(select(Event)).one()
        assert event.event_key == f"om:{NOTIFICATION}" and event.payload["IsClosed"] == "true"
    services.worker().run_until_idle()
    with store.session() as session:
        assert session.scalars(select(Run)).one().state == "active"
    assert org.count("POST", "composite/sobjects") == 1


def test_a_message_saying_closed_about_an_open_opportunity_starts_nothing(client, services, store, org, http):
    seed = org.add_opportunity(stage="Negotiation/Review", close_date="2024-03-01")
    # What a forger (or a stale message) claims: closed and won today.
    claimed = opportunity_fields(org, seed.opportunity) | {
        "IsClosed": "true",
        "IsWon": "true",
        "StageName": "Closed Won",
        "CloseDate": "2026-11-20",
    }
    assert deliver(client, outbound_message([(NOTIFICATION, claimed)])).data == EXPECTED_ACK
    services.worker().run_until_idle()
    with store.session() as session:
        event = session.scalars(select(Event)).one()
        assert event.state == "ignored"
    assert count(store, Run) == 0
    assert org.records("Task") == [] and org.emails == []
    assert writes(org) == []
    assert len([q for q in org.queries if seed_query(q, seed.opportunity)]) == 1  # the org decided


def test_the_deal_a_close_starts_carries_the_orgs_close_date_not_the_messages(services, org, http):
    seed = org.add_opportunity(close_date="2024-03-01")
    claimed = opportunity_fields(org, seed.opportunity) | {"CloseDate": "2026-11-20"}
    change = services.adapters["salesforce"].interpret("opportunity", claimed)
    assert change is not None and change.change == "closed"
    assert str(change.deal.close_date) == "2024-03-01"


def test_an_open_opportunity_with_no_run_is_stored_and_ignored(client, services, store, org, http):
    seed = org.add_opportunity(stage="Negotiation/Review")
    assert deliver(
        client, outbound_message([(NOTIFICATION, opportunity_fields(org, seed.opportunity))])
    ).data == (EXPECTED_ACK)
    services.worker().run_until_idle()
    with store.session() as session:
        event = session.scalars(select(Event)).one()
        assert (event.state, event.outcome) == ("ignored", "no active run")
    assert org.count("POST", "composite/sobjects") == 0


def test_a_reopened_opportunity_cancels_its_run_but_a_stale_open_message_does_not(
    client, services, store, org, http
):
    seed = org.add_opportunity()
    closed = opportunity_fields(org, seed.opportunity)
    assert deliver(client, outbound_message([(NOTIFICATION, closed)])).status_code == 200
    services.worker().run_until_idle()
    # An older "open" notification delivered late: the Opportunity is still closed, so nothing changes.
    stale = closed | {"IsClosed": "false", "StageName": "Negotiation/Review"}
    assert deliver(client, outbound_message([("04l5g0000000002AAA", stale)])).status_code == 200
    services.worker().run_until_idle()
    with store.session() as session:
        assert session.scalars(select(Run)).one().state == "active"
    # Now it really re-opens.
    org.db["Opportunity"][seed.opportunity].update(
        StageName="Negotiation/Review", IsClosed=False, IsWon=False
    )
    assert deliver(client, outbound_message([("04l5g0000000003AAA", stale)])).status_code == 200
    services.worker().run_until_idle()
    with store.session() as session:
        run = session.scalars(select(Run)).one()
        assert run.state == "cancelled" and "re-opened" in run.note


def test_every_notification_in_a_message_is_stored(client, store, org, http):
    seeds = [org.add_opportunity(f"Deal {n}") for n in range(3)]
    body = outbound_message(
        [(f"04l5g000000000{n}AAA", opportunity_fields(org, s.opportunity)) for n, s in enumerate(seeds)]
    )
    assert deliver(client, body).status_code == 200
    assert count(store, Event) == 3


# --- the Flow endpoint ---------------------------------------------------------------------------


def flow_post(client, body: object, secret: str | None = FLOW_SECRET):
    headers = {"X-Offboard-Secret": secret} if secret else {}
    return client.post("/webhooks/salesforce/flow", json=body, headers=headers)


def test_a_flow_callout_is_stored_once_and_becomes_a_run(client, services, store, org, http):
    seed = org.add_opportunity()
    fields = {"IsClosed": True, "StageName": "Closed Won", "LastModifiedDate": "2026-11-20T14:59:58.000Z"}
    body = {"recordId": seed.opportunity, "fields": fields}
    first, second = flow_post(client, body), flow_post(client, body)
    assert (first.status_code, first.get_json()["status"]) == (202, "accepted")
    assert (second.status_code, second.get_json()) == (
        200,
        {"status": "duplicate", "event_id": first.get_json()["event_id"]},
    )
    services.worker().run_until_idle()
    assert (count(store, Event), count(store, Run)) == (1, 1)
    assert org.count("POST", "composite/sobjects") == 1


def test_close_reopen_close_with_the_same_fields_is_three_events_and_two_runs(
    client, services, store, org, http
):
    seed = org.add_opportunity()
    closed = {"IsClosed": True, "IsWon": True, "StageName": "Closed Won"}
    sequence = [
        closed | {"LastModifiedDate": "2026-11-20T14:00:00.000Z"},
        {"IsClosed": False, "IsWon": False, "StageName": "Negotiation/Review"}
        | {"LastModifiedDate": "2026-11-20T14:30:00.000Z"},
        closed | {"LastModifiedDate": "2026-11-20T14:45:00.000Z"},
    ]
    stages = ["Closed Won", "Negotiation/Review", "Closed Won"]  # the org's state at each callout
    answers = []
    for fields, stage in zip(sequence, stages, strict=True):
        org.set_stage(seed.opportunity, stage)
        answers.append(flow_post(client, {"recordId": seed.opportunity, "fields": fields}))
        services.worker().run_until_idle()
    assert [(a.status_code, a.get_json()["status"]) for a in answers] == [(202, "accepted")] * 3
    with store.session() as session:
        events = session.scalars(select(Event).order_by(Event.id)).all()
        assert [e.state for e in events] == ["done", "done", "done"]  # the second close was worked on too
        first, second = session.scalars(select(Run).order_by(Run.id)).all()
        assert [(r.state, r.generation) for r in (first, second)] == [("cancelled", 1), ("active", 2)]
        assert "re-opened" in first.note
        assert events[2].outcome == f"run {second.id} started with playbook {second.playbook_id}"
    # Each run wrote its own checklist to the org: the second close's Tasks are new records.
    tasks = org.records("Task", WhatId=seed.opportunity)
    marks = [marker_in(t["Description"]) or "" for t in tasks]
    per_action = Counter(mark.split(":")[0] for mark in marks)  # a marker is its action's key:position
    assert len(per_action) == 2 and len(set(per_action.values())) == 1 and "" not in per_action
    assert len(set(marks)) == len(tasks)
    assert org.count("POST", "composite/sobjects") == 2
    redelivered = flow_post(client, {"recordId": seed.opportunity, "fields": sequence[2]})
    assert (redelivered.status_code, redelivered.get_json()["status"]) == (200, "duplicate")
    services.worker().run_until_idle()
    assert (count(store, Run), len(org.records("Task", WhatId=seed.opportunity))) == (2, len(tasks))


def test_a_flow_callout_without_event_id_or_change_time_is_refused_naming_event_id(client, store, org):
    reply = flow_post(client, {"recordId": "0065g0000000001AAA", "fields": {"IsClosed": True}})
    assert reply.status_code == 400
    assert reply.get_json()["details"] == [
        {"field": "eventId", "problem": reply.get_json()["details"][0]["problem"]}
    ]
    assert "LastModifiedDate" in reply.get_json()["error"]
    assert count(store, Event) == 0


@pytest.mark.parametrize(
    ("secret", "body", "status"),
    [
        (None, {"recordId": "0065g0000000001AAA"}, 401),
        ("wrong", {"recordId": "0065g0000000001AAA"}, 401),
        (FLOW_SECRET, {"fields": {}}, 400),
        (FLOW_SECRET, ["not", "an", "object"], 400),
    ],
    ids=["no-secret", "wrong-secret", "no-record-id", "not-an-object"],
)
def test_bad_flow_callouts_are_refused_and_store_nothing(client, store, secret, body, status):
    reply = flow_post(client, body, secret)
    assert reply.status_code == status
    assert reply.get_json()["error"]
    assert count(store, Event) == 0


def test_the_flow_endpoint_is_off_without_its_secret(store, clock, db_url, org):
    from connector.services import build
    from connector.web import create_app

    client = create_app(
        build(make_settings(db_url, **session_settings(org)), store=store, clock=clock)
    ).test_client()
    reply = flow_post(client, {"recordId": "0065g0000000001AAA"})
    assert reply.status_code == 503 and "SALESFORCE_WEBHOOK_SECRET" in reply.get_json()["error"]


def test_a_run_waits_for_due_survey_then_sends_it_by_email(client, services, store, org, http, clock):
    seed, body = closed_won(org)
    deliver(client, body)
    worker = services.worker()
    worker.run_until_idle()
    clock.now = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)  # exit-nps: +1d from the contract end
    worker.run_until_idle()
    (email,) = org.emails
    assert email["emailAddresses"] == "pat@acme.example"
    logged = [t for t in org.records("Task") if t["Subject"] == "NPS survey sent"]
    assert len(logged) == 1 and logged[0]["Status"] == "Completed" and logged[0]["WhoId"] == seed.contacts[0]


# --- must show 4: past the API budget, non-urgent work waits and says why ---------------------


def test_past_the_api_budget_non_urgent_actions_wait_and_runs_says_why(
    client, services, store, org, http, clock, monkeypatch
):
    from click.testing import CliRunner

    from connector.cli import main

    ticks = [0.0]
    budget = services.adapters["salesforce"].client.budget
    budget.clock = lambda: ticks[0]
    seed, body = closed_won(org)
    deliver(client, body)
    org.set_usage(85_000, 100_000)  # past the 80% share, however few calls the run makes first
    worker = services.worker()
    worker.run_until_idle()
    with store.session() as session:
        playbook_steps = (Action.kind == "property") & ~Action.step_id.startswith("progress:")
        status = session.scalars(select(Action).where(playbook_steps)).one()
        assert status.state == "pending"
        assert status.last_error.startswith("deferred: Salesforce daily API usage 85")
        assert "past the 80% budget; non-urgent work waits" in status.last_error
    assert org.records("Task")  # the checklist itself is urgent: it went through
    assert org.db["Opportunity"][seed.opportunity]["Offboarding_Status__c"] is None

    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))
    shown = CliRunner().invoke(main, ["runs"])
    assert "non-urgent work waits" in shown.output, shown.output

    org.set_usage(40_000)  # the org's 24-hour window rolled on
    ticks[0] += 301  # our last reading is stale: it is refreshed before holding work back again
    clock.advance(seconds=services.settings.defer_seconds + 1)
    worker.run_until_idle()
    assert org.db["Opportunity"][seed.opportunity]["Offboarding_Status__c"] == "in progress"
    assert org.count("GET", "limits") == 1


# --- sessions renewed through the OAuth refresh token ---------------------------------------------


def refresh_app(db_url, store, clock, org, people):
    from connector.services import build
    from connector.web import create_app

    # One group of actions at a time: the field update comes after the checklist whose call
    # ends the session (side by side it may go first, and nothing would call after the expiry).
    settings = make_settings(
        db_url, **refresh_settings(org), OFFBOARD_ROLES=people, OFFBOARD_WORKER_CONCURRENCY="1"
    )
    built = build(settings, store=store, clock=clock)
    return built, create_app(built).test_client()


def test_a_session_that_expires_mid_run_is_renewed_and_the_run_finishes_writing_nothing_twice(
    db_url, store, clock, org, http, people, caplog
):
    caplog.set_level(logging.DEBUG)
    built, client = refresh_app(db_url, store, clock, org, people)
    seed, body = closed_won(org)
    # the checklist is written, then the session ends
    org.inject(Fault.SESSION_EXPIRED, match="POST composite/sobjects")
    assert deliver(client, body).data == EXPECTED_ACK
    built.worker().run_until_idle()

    assert org.logins == 2  # the first session, and its renewal after the expiry
    with store.session() as session:
        batch = session.scalars(select(Action).where(Action.kind == "task")).one()
        assert batch.state == "done"
        assert not [a.step_id for a in session.scalars(select(Action)) if a.state == "failed"]
        planned = len(batch.payload["tasks"])
    assert len(org.records("Task")) == planned and org.count("POST", "composite/sobjects") == 1
    assert org.db["Opportunity"][seed.opportunity]["Offboarding_Status__c"] == "in progress"
    for token in (*org.refresh_tokens, org.access_token):
        assert token not in caplog.text


def test_a_refused_refresh_fails_the_work_with_a_clear_reason(db_url, store, clock, org, http, people):
    built, client = refresh_app(db_url, store, clock, org, people)
    _, body = closed_won(org)
    tokens = set(org.refresh_tokens)
    org.revoke_refresh_tokens()
    deliver(client, body)
    built.worker().run_until_idle()
    with store.session() as session:
        event = session.scalars(select(Event)).one()
        assert event.state == "failed"
        assert "refresh token was refused (invalid_grant: expired access/refresh token)" in event.outcome
        assert not any(token in event.outcome for token in tokens)
    assert count(store, Run) == 0 and org.records("Task") == []
