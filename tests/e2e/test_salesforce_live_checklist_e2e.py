"""The live checklist end to end on Salesforce: the real ``offboard serve`` process (web and worker)
writes a closed Opportunity's checklist into the fake org over local TLS; a Task completed there
and the Flow's ``task.completed`` callout release the step waiting on it within seconds, dated
from the completion."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from connector.demo import wait_for
from connector.playbooks.offsets import add_business_days
from tests.support.helpers import days_from_today
from tests.support.playbooks import LIVE_CHECKLIST
from tests.support.salesforce import (
    EXPECTED_ACK,
    OUTBOUND_PATH,
    FakeSalesforce,
    TlsServer,
    opportunity_fields,
    outbound_message,
    session_settings,
)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

PLAYBOOK = LIVE_CHECKLIST.replace(
    "id: live-checklist\nname: Live checklist", "id: sf-live\nname: Live checklist on Salesforce"
)
FLOW_SECRET = "flow-shared-secret-for-the-e2e-tests"
RELEASE_LIMIT = 10.0  # seconds from the Flow callout to the released Task in the org
TRANSFER, INVOICE, REVOKE = "Transfer Acme Corp's data", "Send the final invoice", "Revoke access"


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def tls(org, tmp_path):
    with TlsServer(org, tmp_path) as served:
        yield served


@pytest.fixture
def people(org) -> dict[str, str]:
    return {
        "finance": org.add_user("Fran Finance"),
        "manager": org.add_user("Max Manager"),
        "it": org.add_user("Ira IT"),
    }


@pytest.fixture
def server(db_url, store, tmp_path: Path, org, tls, people):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "live.yaml").write_text(PLAYBOOK)
    env = {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(folder),
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
        "OFFBOARD_WORKER_CONCURRENCY": "1",
        "OFFBOARD_TRACK_INTERVAL_SECONDS": "0",  # no tracking pass: only the callout can tell
        "OFFBOARD_ROLES": json.dumps(people),
        "SALESFORCE_WEBHOOK_SECRET": FLOW_SECRET,
        "REQUESTS_CA_BUNDLE": tls.ca_file,
        **session_settings(org),
    }
    process = ServerProcess(env, log=tmp_path / "server.log").start()
    yield process
    assert process.stop() == 0, (tmp_path / "server.log").read_text()[-3000:]


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return int(reply.status), reply.read()


def test_a_task_completed_in_salesforce_releases_the_revocation_within_seconds(server, org, people):
    seed = org.add_opportunity(close_date=days_from_today(), contract_end=days_from_today(41))
    message = outbound_message([("04l5g0000000001AAA", opportunity_fields(org, seed.opportunity))])
    assert post(f"{server.url}{OUTBOUND_PATH}", message, {"Content-Type": "text/xml; charset=utf-8"}) == (
        200,
        EXPECTED_ACK,
    )

    def tasks() -> dict[str, dict[str, Any]]:
        return {t["Subject"]: t for t in org.records("Task", WhatId=seed.opportunity)}

    first = wait_for(lambda: len(tasks()) >= 2 and tasks(), 15)
    assert first, server.log.read_text()[-3000:]
    assert set(first) == {TRANSFER, INVOICE}
    opportunity = org.db["Opportunity"][seed.opportunity]
    assert wait_for(lambda: opportunity["Offboard_Progress__c"] == "0/4", 5), server.log.read_text()[-3000:]
    assert opportunity["Offboard_Status__c"] == "not_started"

    # The CSM closes the transfer in Salesforce with its evidence; the Flow on Task calls out.
    transfer = first[TRANSFER]
    described = f"Evidence: export sent, ticket 42\n{transfer['Description'] or ''}"
    org.edit_task(transfer["Id"], by=seed.owner, Status="Completed", Description=described)
    completed = datetime.strptime(transfer["CompletedDateTime"], "%Y-%m-%dT%H:%M:%S.%f%z")
    callout = {
        "recordId": transfer["Id"],
        "event": "task.completed",
        "fields": {"LastModifiedDate": transfer["LastModifiedDate"]},
    }
    headers = {"Content-Type": "application/json", "X-Offboard-Secret": FLOW_SECRET}
    started = time.monotonic()
    status, _ = post(f"{server.url}/webhooks/salesforce/flow", json.dumps(callout).encode(), headers)
    released = wait_for(lambda: tasks().get(REVOKE), RELEASE_LIMIT + 5, interval=0.05)
    seconds = time.monotonic() - started
    print(f"\nFlow callout to released Task in Salesforce: {seconds:.2f} s")
    assert status == 202
    assert released, server.log.read_text()[-3000:]
    assert seconds < RELEASE_LIMIT

    # One business day after the completion (the account's zone is UTC); the IT role's user.
    expected = add_business_days(completed.astimezone(UTC).date(), 1)
    assert released["ActivityDate"] == expected.isoformat()
    assert (released["OwnerId"], released["WhoId"]) == (people["it"], seed.contacts[0])
    assert "Thank Pat" not in tasks()  # it waits on the invoice too
    assert wait_for(lambda: opportunity["Offboard_Progress__c"] == "1/4", 5), server.log.read_text()[-3000:]
