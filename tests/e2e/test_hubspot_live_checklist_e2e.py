"""The live checklist end to end on HubSpot: the real ``offboard serve`` process (web and worker)
writes a closed deal's checklist into the fake HubSpot; a task completed there and its signed
``object.propertyChange`` webhook release the step waiting on it within seconds, dated from the
completion."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from adapters.hubspot.cli import hubspot
from connector.demo import wait_for
from connector.planner import at_workday_start
from connector.playbooks.offsets import add_business_days
from tests.support.helpers import days_from_today
from tests.support.hubspot import (
    CLIENT_SECRET,
    FINANCE,
    OWNER,
    TOKEN,
    FakeHubSpot,
    add_deal,
    serve,
    signed,
    stage_event,
    standard_portal,
    task_event,
)
from tests.support.playbooks import LIVE_CHECKLIST
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

PLAYBOOK = LIVE_CHECKLIST
MANAGER, IT = "104", "105"
ZONE = "America/New_York"  # the portal's zone (the fake's account-info says US/Eastern)
RELEASE_LIMIT = 10.0  # seconds from the task webhook to the released task in HubSpot


@pytest.fixture
def fake(httpserver):
    fake = standard_portal(FakeHubSpot())
    fake.add_owner(MANAGER, "max@agency.example", "Max", "Manager")
    fake.add_owner(IT, "ivy@agency.example", "Ivy", "Tech")
    fake.url = serve(fake, httpserver)
    return fake


@pytest.fixture
def server(db_url, store, tmp_path: Path, fake, monkeypatch):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "live.yaml").write_text(PLAYBOOK)
    env = {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(folder),
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
        "OFFBOARD_WORKER_CONCURRENCY": "1",
        "OFFBOARD_TRACK_INTERVAL_SECONDS": "0",  # no tracking pass: only the webhook can tell
        "OFFBOARD_TIMEZONE": ZONE,
        "OFFBOARD_ROLES": json.dumps({"finance": FINANCE, "manager": MANAGER, "it": IT}),
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": fake.url,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    setup = CliRunner().invoke(hubspot, ["setup"])  # creates the progress properties in the fake
    assert setup.exit_code == 0, setup.output
    process = ServerProcess(env, log=tmp_path / "server.log").start()
    yield process
    assert process.stop() == 0, (tmp_path / "server.log").read_text()[-3000:]


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5) as reply:
        return int(reply.status)


def deliver(server, events: list[dict]) -> None:
    url = f"{server.url}/webhooks/hubspot?app=offboard"
    body, headers = signed(events, url=url, at=datetime.now(UTC))
    assert post(url, body, headers) == 204


def test_a_task_completed_in_hubspot_releases_the_revocation_within_seconds(server, fake):
    ids = add_deal(fake, close_date=days_from_today(), contract_end=days_from_today(41))
    deliver(server, [stage_event(ids["deal"], "closedwon", event_id=21, at=datetime.now(UTC))])

    def tasks() -> dict[str, object]:
        found = [t for t in fake.records("tasks") if ids["deal"] in fake.linked(t, "deals")]
        return {t.properties["hs_task_subject"]: t for t in found}

    first = wait_for(lambda: len(tasks()) >= 2 and tasks(), 15)
    assert first, server.log.read_text()[-3000:]
    assert set(first) == {"Transfer Acme Corp's data", "Send the final invoice"}
    assert wait_for(
        lambda: fake.objects["deals"][ids["deal"]].properties.get("offboard_progress") == "0/4", 5
    )

    # The CSM completes the transfer in HubSpot; HubSpot sends the task's status change.
    transfer = first["Transfer Acme Corp's data"]
    fake.complete_task(transfer.id, by=OWNER, evidence="export sent, ticket 42")
    completed = datetime.fromisoformat(transfer.properties["hs_task_completion_date"].replace("Z", "+00:00"))
    started = time.monotonic()
    deliver(server, [task_event(transfer.id, "COMPLETED", event_id=22, at=completed)])
    released = wait_for(lambda: tasks().get("Revoke access"), RELEASE_LIMIT + 5, interval=0.05)
    seconds = time.monotonic() - started
    print(f"\nwebhook to released task in HubSpot: {seconds:.2f} s")
    assert released, server.log.read_text()[-3000:]
    assert seconds < RELEASE_LIMIT

    zone = ZoneInfo(ZONE)
    expected = at_workday_start(add_business_days(completed.astimezone(zone).date(), 1), zone)
    due = datetime.fromtimestamp(int(released.properties["hs_timestamp"]) / 1000, tz=UTC)
    assert due == expected  # one business day after the completion, 09:00 in the account's zone
    assert released.properties["hubspot_owner_id"] == IT
    assert fake.linked(released, "deals") == {ids["deal"]: 216}
    assert "Thank Pat" not in tasks()  # it waits on the invoice too
    assert wait_for(
        lambda: fake.objects["deals"][ids["deal"]].properties.get("offboard_progress") == "1/4", 5
    )
