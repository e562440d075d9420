"""The real server process: make run's command, health, and the demo through HTTP."""

from __future__ import annotations

import json
import urllib.request

import pytest
import yaml

from tests.support.harness import tasks_per_run
from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET, deal_closed_today, signed
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(db_url, store, tmp_path):
    env = {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
    }
    process = ServerProcess(env, log=tmp_path / "server.log").start()
    yield process
    assert process.stop() == 0, (tmp_path / "server.log").read_text()[-3000:]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.status, json.loads(reply.read())


def test_health_and_readiness(server):
    assert get(f"{server.url}/healthz") == (200, {"status": "ok"})
    status, body = get(f"{server.url}/readyz")
    assert status == 200
    assert body["database"] == "ok"
    assert body["playbooks"] >= 1  # counts only: the ids are for the operator CLI


def test_demo_against_the_running_server_prints_the_checklist(server):
    result = server.cli("demo", "--url", server.url, "--timeout", "20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "→ 202" in result.stdout
    assert "Confirm the end date with Acme Corp" in result.stdout
    assert f"Sent to the connector at {server.url}." in result.stdout
    assert "in-process" not in result.stdout + result.stderr
    runs = server.cli("runs")
    version = yaml.safe_load((BUNDLED_PLAYBOOKS / "completed-project.yaml").read_text())["version"]
    assert f"completed-project@v{version}" in runs.stdout


def test_demo_without_options_uses_the_server_at_the_public_url(server):
    result = server.cli("demo")  # OFFBOARD_PUBLIC_URL is the server's
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"Sent to the connector at {server.url}.")
    assert "in-process" not in result.stdout + result.stderr


def test_a_redelivered_event_over_http_makes_one_run(server, services):
    from connector.demo import post, wait_for

    body, headers = signed(deal_closed_today("E2E-1"))
    assert post(server.url, body, headers)[0] == 202
    assert post(server.url, body, headers)[0] == 200
    tasks = wait_for(lambda: services.adapters["sandbox"].tasks("E2E-1"), 20)
    assert len(tasks) == tasks_per_run()
    runs = json.loads(server.cli("runs", "--format", "json").stdout)
    assert [r["deal_id"] for r in runs] == ["E2E-1"]
