"""Salesforce end to end: the real ``offboard serve`` process, the fake org served over local TLS.

simple-salesforce always builds https:// URLs, so the fake speaks TLS with a
self-signed certificate the server process trusts through REQUESTS_CA_BUNDLE.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import date, timedelta

import pytest

from connector.demo import wait_for
from tests.support.faults import Fault
from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET, days_from_today
from tests.support.salesforce import (
    EXPECTED_ACK,
    OUTBOUND_PATH,
    FakeSalesforce,
    TlsServer,
    opportunity_fields,
    outbound_message,
    refresh_settings,
    session_settings,
)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def tls(org, tmp_path):
    with TlsServer(org, tmp_path) as served:
        yield served


@pytest.fixture
def server(db_url, store, tmp_path, org, tls):
    finance = org.add_user("Fran Finance")
    env = {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
        "OFFBOARD_ROLES": json.dumps({"finance": finance, "marketing": finance}),
        "REQUESTS_CA_BUNDLE": tls.ca_file,
        **session_settings(org),
    }
    process = ServerProcess(env, log=tmp_path / "server.log").start()
    yield process
    assert process.stop() == 0, (tmp_path / "server.log").read_text()[-3000:]


def post_soap(url: str, body: bytes, path: str = OUTBOUND_PATH) -> tuple[int, str, bytes]:
    request = urllib.request.Request(
        f"{url}{path}",
        data=body,
        method="POST",
        headers={"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers.get_content_type(), reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get_content_type(), exc.read()


def test_an_outbound_message_through_the_real_server_writes_the_checklist_over_tls(server, org):
    seed = org.add_opportunity(close_date=days_from_today(), contract_end=days_from_today(41))
    body = outbound_message([("04l5g0000000001AAA", opportunity_fields(org, seed.opportunity))])
    status, content_type, _ = post_soap(server.url, body, "/webhooks/salesforce")  # no key in the URL
    assert (status, content_type) == (401, "text/xml")
    assert post_soap(server.url, body) == (200, "text/xml", EXPECTED_ACK)
    tasks = wait_for(lambda: org.records("Task"), 20)
    assert tasks, server.log.read_text()[-3000:]
    assert all(t["WhatId"] == seed.opportunity and t["WhoId"] == seed.contacts[0] for t in tasks)
    assert org.count("POST", "composite/sobjects") == 1
    assert post_soap(server.url, body) == (200, "text/xml", EXPECTED_ACK)  # a redelivery
    runs = json.loads(server.cli("runs", "--format", "json").stdout)
    assert [(r["crm"], r["deal_id"]) for r in runs] == [("salesforce", seed.opportunity)]
    assert len(org.records("Task")) == len(tasks)

    foreign = outbound_message(
        [("04l5g0000000002AAA", {"Id": "0065g0000000001AAA"})], org_id="00D5g0000Other1AAA"
    )
    status, content_type, answer = post_soap(server.url, foreign)
    assert (status, content_type) == (403, "text/xml")
    assert b"<faultcode>soapenv:Client</faultcode>" in answer


def test_plan_and_sweep_read_the_org(server, org):
    won = org.add_opportunity(close_date=days_from_today(), contract_end=days_from_today(41))
    shown = server.cli("plan", "--crm", "salesforce", "--deal", won.opportunity)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "salesforce" in shown.stdout and "completed-project" in shown.stdout
    assert "Confirm the end date with Acme Corp" in shown.stdout

    ending = (date.today() + timedelta(days=20)).isoformat()
    closed = days_from_today(-345)  # won a year before its end: the sweep, not a close, starts it
    retainer = org.add_opportunity("Acme retainer", type="retainer", close_date=closed, contract_end=ending)
    swept = server.cli("sweep")
    assert swept.returncode == 0, swept.stdout + swept.stderr
    assert "salesforce: 1 contract(s) ending within the lead time" in swept.stdout
    tasks = wait_for(lambda: org.records("Task", WhatId=retainer.opportunity), 20)
    assert tasks and all(t["WhoId"] == retainer.contacts[0] for t in tasks)


def test_the_real_server_renews_an_expired_session_through_the_refresh_token(
    db_url, store, tmp_path, org, tls
):
    finance = org.add_user("Fran Finance")
    settings = refresh_settings(org, login_url=tls.url)
    env = {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
        # One group of actions at a time, so the field update comes after the checklist that
        # ends the session (in parallel it may go first, and nothing would call after).
        "OFFBOARD_WORKER_CONCURRENCY": "1",
        "OFFBOARD_ROLES": json.dumps({"finance": finance, "marketing": finance}),
        "REQUESTS_CA_BUNDLE": tls.ca_file,
        **settings,
    }
    process = ServerProcess(env, log=tmp_path / "server.log").start()
    try:
        seed = org.add_opportunity(close_date=days_from_today(), contract_end=days_from_today(41))
        # the session ends right after the checklist
        org.inject(Fault.SESSION_EXPIRED, match="POST composite/sobjects")
        body = outbound_message([("04l5g0000000001AAA", opportunity_fields(org, seed.opportunity))])
        assert post_soap(process.url, body) == (200, "text/xml", EXPECTED_ACK)
        done = wait_for(lambda: org.db["Opportunity"][seed.opportunity]["Offboarding_Status__c"], 20)
        assert done == "in progress", process.log.read_text()[-3000:]
        # One login, one renewal: the worker's loop and its sweep thread share the session.
        logins = (org.logins, org.count("POST", "composite/sobjects"))
        assert logins == (2, 1), process.log.read_text()[-3000:]
        log = process.log.read_text()
        assert settings["SALESFORCE_REFRESH_TOKEN"] not in log and org.access_token not in log
    finally:
        assert process.stop() == 0, (tmp_path / "server.log").read_text()[-3000:]
