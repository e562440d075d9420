"""The real server with OFFBOARD_LOG_FORMAT=json: every log line is JSON and carries no link token or key;
/metrics, read from the database, counts what the process received and did."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector.links import make_link
from connector.settings import DEV_SECRET_KEY
from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET, deal_closed_today, signed
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e
OUTBOUND_KEY = "e2e-outbound-key-" + "x" * 24


@pytest.fixture
def db_url(sqlite_url):
    return sqlite_url


def request(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers or {}), timeout=5) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = request(f"{url}/metrics")
    assert status == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_json_logs_without_credentials_and_metrics_that_move(db_url, store, tmp_path):
    log = tmp_path / "server.log"
    env = {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
        "OFFBOARD_LOG_FORMAT": "json",
        "SALESFORCE_OUTBOUND_KEY": OUTBOUND_KEY,
    }
    server = ServerProcess(env, log=log).start()
    try:
        token = make_link(
            "", DEV_SECRET_KEY, "survey", {"run": 9, "step": "s", "contact": "c", "kind": "nps"}
        )
        assert request(server.url + token)[0] == 404  # no run 9: the forged-link page
        request(f"{server.url}/webhooks/salesforce?key={OUTBOUND_KEY}", b"<x/>", {"Content-Type": "text/xml"})
        body, headers = signed(deal_closed_today())
        assert request(f"{server.url}/webhooks/generic", body, headers)[0] == 202
        deadline, done = time.monotonic() + 30, 0.0
        while time.monotonic() < deadline and not done:
            found = samples(server.url)
            done = sum(
                v
                for (name, labels), v in found.items()
                if name == "offboard_action_outcomes_total" and ("outcome", "done") in labels
            )
            time.sleep(0.3)
        assert done >= 1, found
        key = ("offboard_events_received_total", (("answer", "202"), ("source", "generic")))
        assert found[key] == 1
        assert any(name == "offboard_worker_heartbeat_age_seconds" for name, _ in found)
    finally:
        assert server.stop() == 0, log.read_text()[-3000:]

    text = log.read_text()
    assert token.rsplit("/", 1)[1] not in text and OUTBOUND_KEY not in text
    lines = [
        line for line in text.splitlines() if line.strip() and not line.startswith("offboard serving on")
    ]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    access = [r for r in records if r["logger"] == "offboard.access"]
    assert {"/s/[redacted]", "/webhooks/salesforce?key=[redacted]", "/webhooks/generic"} <= {
        r["path"] for r in access
    }
