"""No secret leaks: a full flow with recognisable secrets, then a search of everything Offboard wrote.

Every secret setting (``connector.settings.secret_variables()``) gets a value that
contains ``SEKRIT``; so does the SessionId a Salesforce outbound message carries.
The flow: a generic event (sandbox), a HubSpot stage change, a Salesforce outbound
message and a Flow callout, the worker until idle (tasks, surveys, notes in all
three CRMs), a survey answered on its page; then requests that fail. Logs are
captured at DEBUG from every logger. None of the secrets may appear in the logs,
any answer body or header, the audit trail, or any row of any table.
"""

from __future__ import annotations

import base64
import json
import logging
from datetime import timedelta
from typing import Any

import pytest
import responses
from sqlalchemy import inspect, select, text

from connector.errors import SettingsInvalid
from connector.settings import load_settings, secret_variables
from connector.store import Action, AuditEntry, Event
from connector.web import create_app
from tests.support.helpers import deal_closed_event, make_settings, signed
from tests.support.hubspot import (
    FakeHubSpot,
    add_deal,
    hubspot_services,
    offboard_properties,
    serve,
    sign_v1,
    stage_event,
    standard_portal,
)
from tests.support.hubspot import signed as hubspot_signed
from tests.support.salesforce import ORG_ID, FakeSalesforce, opportunity_fields, outbound_message

MARK = "SEKRIT"
WEBHOOK_KEY = f"{MARK}-generic-webhook-key-7a2c".encode()
SECRETS = {
    "OFFBOARD_SECRET_KEY": f"{MARK}-offboard-secret-key-4e1f",
    "OFFBOARD_WEBHOOK_SECRET": "whsec_" + base64.b64encode(WEBHOOK_KEY).decode(),
    "HUBSPOT_ACCESS_TOKEN": f"pat-na1-{MARK}-hubspot-access-token-91bd",
    "HUBSPOT_CLIENT_SECRET": f"{MARK}-hubspot-client-secret-0c3e",
    "SALESFORCE_ACCESS_TOKEN": f"{ORG_ID[:15]}!{MARK}-salesforce-session-55aa",
    "SALESFORCE_PASSWORD": f"{MARK}-salesforce-password-8d8d",
    "SALESFORCE_SECURITY_TOKEN": f"{MARK}-salesforce-security-token-3b3b",
    "SALESFORCE_CONSUMER_SECRET": f"{MARK}-salesforce-consumer-secret-e9e9",
    "SALESFORCE_WEBHOOK_SECRET": f"{MARK}-salesforce-flow-secret-2f2f",
    "SALESFORCE_OUTBOUND_KEY": f"{MARK}-salesforce-outbound-message-key-1a1a",
    "SALESFORCE_REFRESH_TOKEN": f"5Aep861{MARK}-salesforce-refresh-token-4c4c",
    "OFFBOARD_METRICS_TOKEN": f"{MARK}-metrics-token-1d1d",
    # A Fernet key is 32 bytes in URL-safe base64: this text is one.
    "OFFBOARD_ENCRYPTION_KEYS": f"{MARK}-encryption-key-for-the-secrets-testA=",
}
SESSION_ID = f"{ORG_ID[:15]}!{MARK}-outbound-session-id-6c6c"  # sent to us by Salesforce: a secret too
# Every form a secret could take in text: as set, without its prefix, decoded.
NEEDLES = [MARK, MARK.lower(), SECRETS["OFFBOARD_WEBHOOK_SECRET"].removeprefix("whsec_")]
PUBLIC = "https://offboard.example.com"


def test_every_secret_setting_is_covered():
    assert set(SECRETS) == secret_variables(), "a new secret setting: give it a SEKRIT value here"


@pytest.fixture
def hubspot(clock):
    fake = FakeHubSpot(clock=clock, token=SECRETS["HUBSPOT_ACCESS_TOKEN"])
    return offboard_properties(standard_portal(fake))


@pytest.fixture
def org():
    org = FakeSalesforce()
    org.access_token = SECRETS["SALESFORCE_ACCESS_TOKEN"]
    return org


@pytest.fixture
def full(db_url, store, clock, hubspot, org, httpserver):
    people = {"finance": org.add_user("Fran Finance"), "marketing": org.add_user("Mo Marketing")}
    settings = make_settings(
        db_url,
        **SECRETS,
        OFFBOARD_PUBLIC_URL=PUBLIC,
        OFFBOARD_LOG_LEVEL="DEBUG",
        HUBSPOT_API_BASE_URL=serve(hubspot, httpserver),
        SALESFORCE_INSTANCE_URL=f"https://{org.instance}",
        SALESFORCE_ORG_ID=ORG_ID,
        SALESFORCE_USERNAME="integration@acme.example",
        SALESFORCE_CONSUMER_KEY="3MVG9-consumer-key",
        SALESFORCE_DOMAIN="acme.my",
        OFFBOARD_ROLES={
            "finance": {"salesforce": people["finance"], "hubspot": "102", "sandbox": "finance-1"},
            "marketing": {"salesforce": people["marketing"], "hubspot": "101", "sandbox": "marketing-1"},
        },
    )
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        services = hubspot_services(settings, store, clock)
        yield services, create_app(services).test_client()


def run_everything(services: Any, clock: Any, rounds: int = 80) -> None:
    """Work until nothing is pending, moving the clock to whatever is due next."""
    worker = services.worker()
    for _ in range(rounds):
        worker.run_until_idle()
        with services.store.session() as session:
            due = list(session.scalars(select(Event.available_at).where(Event.state == "pending")))
            due += list(session.scalars(select(Action.due_at).where(Action.state == "pending")))
        if not due:
            return
        clock.now = max(clock.now, min(due)) + timedelta(seconds=1)


def dump_database(store: Any) -> str:
    """Every row of every table, alembic's included, as text."""
    with store.engine.connect() as connection:
        names = inspect(connection).get_table_names()
        rows = {
            name: [repr(tuple(row)) for row in connection.execute(text(f'SELECT * FROM "{name}"'))]
            for name in names
        }
    assert {"events", "runs", "actions", "audit", "answers"} <= set(rows)
    return json.dumps(rows, default=str)


def leaks(haystacks: dict[str, str]) -> list[tuple[str, str]]:
    return [(where, needle) for where, hay in haystacks.items() for needle in NEEDLES if needle in hay]


def test_no_secret_reaches_logs_error_bodies_the_audit_trail_or_the_database(
    full, store, clock, hubspot, org, caplog
):
    services, client = full
    caplog.set_level(logging.DEBUG)
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and logger.level > logging.DEBUG:
            caplog.set_level(logging.DEBUG, logger=name)  # e.g. the HubSpot SDK sets urllib3 to WARNING
    answers: list[Any] = []

    def post(path: str, **kwargs: Any) -> Any:
        reply = client.post(path, **kwargs)
        answers.append(reply)
        return reply

    # --- the flow: one deal in each CRM ---------------------------------------------------------
    body, headers = signed(deal_closed_event(), secret=SECRETS["OFFBOARD_WEBHOOK_SECRET"])
    assert post("/webhooks/generic", data=body, headers=headers).status_code == 202

    ids = add_deal(hubspot)
    body, headers = hubspot_signed(
        [stage_event(ids["deal"], "closedwon", at=clock.now)],
        url=PUBLIC + "/webhooks/hubspot",
        at=clock.now,
        secret=SECRETS["HUBSPOT_CLIENT_SECRET"],
    )
    assert post("/webhooks/hubspot", data=body, headers=headers).status_code == 204

    seed = org.add_opportunity("Globex rollout", account="Globex")
    message = outbound_message([("04l5g0000000001AAA", opportunity_fields(org, seed.opportunity))])
    message = message.replace(b'<SessionId xsi:nil="true"/>', f"<SessionId>{SESSION_ID}</SessionId>".encode())
    outbound = f"/webhooks/salesforce?key={SECRETS['SALESFORCE_OUTBOUND_KEY']}"
    assert post(outbound, data=message, headers={"Content-Type": "text/xml"}).status_code == 200
    callout = {"recordId": seed.opportunity, "fields": {"IsClosed": True, "IsWon": True}, "eventId": "flow-1"}
    flow_headers = {"X-Offboard-Secret": SECRETS["SALESFORCE_WEBHOOK_SECRET"]}
    assert post("/webhooks/salesforce/flow", json=callout, headers=flow_headers).status_code == 202

    run_everything(services, clock)
    with store.session() as session:
        states = {(a.kind, a.state) for a in session.scalars(select(Action))}
    assert ("task", "done") in states and ("survey", "done") in states  # the flow really ran
    assert hubspot.records("tasks") and org.records("Task")

    invite = next(i for i in services.adapters["sandbox"].invites("D-1") if i.kind == "nps")
    survey = invite.link.removeprefix(PUBLIC)
    assert client.get(survey).status_code == 200
    csrf = client.get_cookie("offboard_form").value
    assert post(survey, data={"csrf": csrf, "score": "10", "comment": "Great"}).status_code == 200
    run_everything(services, clock)

    # --- requests that fail: their answers must not echo a secret --------------------------------
    other = "whsec_" + base64.b64encode(b"another-key-entirely-0000").decode()
    body, headers = signed(deal_closed_event("D-9"), secret=other)
    assert post("/webhooks/generic", data=body, headers=headers).status_code == 401
    assert post("/webhooks/generic", data=b"{}").status_code == 401
    body, headers = hubspot_signed(
        [stage_event("1", "closedwon")], url=PUBLIC + "/webhooks/hubspot", at=clock.now
    )
    assert (
        post("/webhooks/hubspot", data=body, headers=headers).status_code == 401
    )  # the fakes' secret, not ours
    legacy = {"X-HubSpot-Signature": sign_v1("wrong", body), "X-HubSpot-Signature-Version": "v1"}
    assert post("/webhooks/hubspot", data=body, headers=legacy).status_code == 401
    assert (
        post("/webhooks/salesforce/flow", json=callout, headers={"X-Offboard-Secret": "guess"}).status_code
        == 401
    )
    assert post("/webhooks/salesforce/flow", data=b"{", headers=flow_headers).status_code == 400
    foreign = message.replace(ORG_ID.encode(), b"00D5g00000Othr1AAA")
    assert post(outbound, data=foreign, headers={"Content-Type": "text/xml"}).status_code == 403
    assert post(outbound, data=b"<x", headers={"Content-Type": "text/xml"}).status_code == 400
    assert post("/webhooks/salesforce", data=message, headers={"Content-Type": "text/xml"}).status_code == 401
    assert client.get(survey[:-4] + "AAAA").status_code == 404
    assert post(survey, data={"score": "9"}).status_code in (403, 409)
    assert client.get("/readyz").status_code == 200
    scraped = [client.get("/metrics"), client.get("/metrics", headers={"Authorization": "Bearer guess"})]
    scraped.append(
        client.get("/metrics", headers={"Authorization": f"Bearer {SECRETS['OFFBOARD_METRICS_TOKEN']}"})
    )
    assert [r.status_code for r in scraped] == [401, 401, 200]
    answers.extend(scraped)
    with pytest.raises(SettingsInvalid) as refused:
        load_settings(OFFBOARD_WEBHOOK_SECRET=f"whsec_{MARK}")  # too short: refused, and not repeated
    assert MARK not in str(refused.value)

    # --- where a secret could have gone ----------------------------------------------------------
    records = caplog.records
    logs = caplog.text + "\n".join(
        f"{r.getMessage()} {r.args!r} {r.exc_text or ''} {r.__dict__!r}" for r in records
    )
    with store.session() as session:
        audit = json.dumps([(a.actor, a.verb, a.crm, a.detail) for a in session.scalars(select(AuditEntry))])
    haystacks = {
        "logs": logs,
        "answers": "\n".join(f"{r.status} {dict(r.headers)!r} {r.get_data(as_text=True)}" for r in answers),
        "audit": audit,
        "database": dump_database(store),
        "settings repr": repr(services.settings) + str(services.settings.model_dump()),
    }
    assert len(records) > 20 and any(r.levelno == logging.DEBUG for r in records)
    assert audit != "[]"
    assert leaks(haystacks) == []
