"""HubSpot end to end: `offboard serve` takes a signed webhook batch and writes the runs' tasks
into the fake HubSpot through the real SDK, the way it would into a portal."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from adapters.hubspot.cli import hubspot
from connector.demo import wait_for
from tests.support.helpers import BUNDLED_PLAYBOOKS, days_from_today
from tests.support.hubspot import (
    CLIENT_SECRET,
    FINANCE,
    RENEWALS,
    TOKEN,
    FakeHubSpot,
    add_deal,
    serve,
    signed,
    stage_event,
    standard_portal,
)
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def fake(httpserver):
    fake = standard_portal(FakeHubSpot())
    fake.url = serve(fake, httpserver)
    return fake


@pytest.fixture
def server(db_url, store, tmp_path, fake, monkeypatch):
    env = {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
        "OFFBOARD_ROLES": json.dumps({"finance": FINANCE}),
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": fake.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    setup = CliRunner().invoke(hubspot, ["setup"])  # the admin's one-time step, against the fake
    assert setup.exit_code == 0, setup.output
    process = ServerProcess(env, log=tmp_path / "server.log").start()
    yield process
    assert process.stop() == 0, (tmp_path / "server.log").read_text()[-3000:]


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return int(reply.status)


def test_a_signed_batch_becomes_tasks_on_deal_company_and_contact(server, fake):
    today = {"close_date": days_from_today(), "contract_end": days_from_today(41)}
    won = add_deal(fake, name="Acme website", stage="closedwon", contract_type="project", **today)
    lost = add_deal(
        fake,
        **today,
        name="Globex renewal",
        pipeline=RENEWALS,
        stage="1003",  # the custom pipeline's closed-lost stage: a numeric id
        contract_type="pilot",
        company="Globex",
        contact=("hank@globex.example", "Hank", "Scorpio"),
    )
    now = datetime.now(UTC)
    events = [stage_event(won["deal"], "closedwon", event_id=11, at=now)]
    events.append(stage_event(lost["deal"], "1003", event_id=12, at=now))
    url = f"{server.url}/webhooks/hubspot?app=offboard"
    body, headers = signed(events, url=url, at=now)
    assert post(url, body, headers) == 204

    def tasks_of(deal: dict[str, str]) -> list:
        return [t for t in fake.records("tasks") if deal["deal"] in fake.linked(t, "deals")]

    assert wait_for(lambda: tasks_of(won) and tasks_of(lost), 30), server.log.read_text()[-3000:]
    for deal in (won, lost):
        for task in tasks_of(deal):
            assert fake.linked(task, "deals") == {deal["deal"]: 216}
            assert fake.linked(task, "companies") == {deal["company"]: 192}
            assert fake.linked(task, "contacts") == {deal["contact"]: 204}
            assert task.properties["hubspot_owner_id"] in fake.owners
            assert task.properties["hs_timestamp"].isdigit()
    runs = json.loads(server.cli("runs", "--format", "json").stdout)
    playbooks = {run["deal_id"]: run["playbook_id"] for run in runs}
    assert playbooks == {won["deal"]: "completed-project", lost["deal"]: "fallback"}
    # One call per claim: both runs' tasks share it when the worker claims them together.
    assert fake.calls["POST /crm/v3/objects/tasks/batch/create"] in (1, 2)
    subjects = {t.properties["hs_task_subject"] for t in tasks_of(won)}
    assert "Confirm the end date with Acme Corp" in subjects
