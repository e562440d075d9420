"""``docker compose up`` brings up the proxy, web, two workers, Postgres and the migrations,
and a signed webhook through the proxy becomes a run that a worker carries out.

Needs a docker engine and the compose plugin; skips, saying which is missing, where there is
none. The image is built from this checkout (its Python packages come from the package index).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.helpers import deal_closed_today, signed
from tests.support.server import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
UP_TIMEOUT = 600.0  # the first build downloads the base images and the dependencies


def _missing_docker() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on this machine"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0:
        return f"no docker engine answers (`docker info`: {info.stderr.strip().splitlines()[-1:]})"
    version = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=60)
    if version.returncode != 0:
        return "the docker compose plugin is not installed"
    return None


def _development_secret() -> str:
    environment = yaml.safe_load(COMPOSE_FILE.read_text())["x-offboard"]["environment"]
    default = environment["OFFBOARD_WEBHOOK_SECRET"]  # ${OFFBOARD_WEBHOOK_SECRET:-whsec_…}
    return str(default.split(":-", 1)[1].rstrip("}"))


class Compose:
    def __init__(self, port: int) -> None:
        self.project = f"offboard-test-{uuid.uuid4().hex[:8]}"
        # The test's environment holds no OFFBOARD_* variable (conftest clears them), so the
        # compose file's own defaults apply.
        self.env = {**os.environ, "OFFBOARD_HTTP_PORT": str(port)}
        self.url = f"http://127.0.0.1:{port}"

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        result = subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def logs(self) -> str:
        return self.run("logs", "--no-color", "--tail", "80", check=False).stdout[-6000:]


@pytest.fixture
def compose() -> Iterator[Compose]:
    missing = _missing_docker()
    if missing:
        pytest.skip(f"docker compose set-up not started: {missing}")
    running = Compose(free_port())
    try:
        running.run("up", "--build", "--detach", timeout=UP_TIMEOUT)
        yield running
    finally:
        running.run("down", "--volumes", "--remove-orphans", "--timeout", "45", timeout=180, check=False)


def _get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return int(reply.status), json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), {}


def _wait_ready(compose: Compose, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, body = _get(f"{compose.url}/readyz")
            if status == 200:
                return body
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"/readyz did not answer 200 through the proxy in {timeout}s\n{compose.logs()}")


def test_compose_comes_up_and_a_signed_webhook_through_the_proxy_becomes_a_run(compose):
    ready = _wait_ready(compose)
    assert ready["database"] == "ok"
    listed = compose.run("ps", "--format", "json").stdout.strip()
    # One JSON object per line (compose >= 2.21) or one array (older releases).
    rows = json.loads(listed) if listed.startswith("[") else [json.loads(x) for x in listed.splitlines()]
    running = sorted(row["Service"] for row in rows if row.get("State") == "running")
    assert running == ["db", "proxy", "web", "worker", "worker"], rows

    body, headers = signed(deal_closed_today("COMPOSE-1"), secret=_development_secret())
    request = urllib.request.Request(
        f"{compose.url}/webhooks/generic", data=body, headers=headers, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.status == 202

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = compose.run("exec", "-T", "worker", "offboard", "runs", "--format", "json", check=False)
        if "COMPOSE-1" in shown.stdout:
            break
        time.sleep(2)
    else:
        raise AssertionError(f"no run for COMPOSE-1 in 60s\n{compose.logs()}")
