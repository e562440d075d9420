"""Slow senders cannot stop webhook intake: ``offboard serve`` answers a signed webhook within
5 s (HubSpot's wait) while 50 connections trickle their headers or their body.

Half the slow connections send a request line and then one header byte every 2 s; the other
half send whole headers announcing a body and then one body byte every 2 s. The server reads
each request whole before an application thread sees it, so none of them holds a thread.

The old set-up (gunicorn's gthread worker, 8 threads, reading each request in a thread) is
started the same way to show what this guards against: there, the same webhook gets no
answer in 5 s.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from connector.store import Event, Store
from connector.store.migrate import upgrade
from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET, deal_closed_today, signed
from tests.support.server import OFFBOARD, free_port
from tests.support.slow_clients import SLOW_BODIES, SLOW_HEADERS, TRICKLE_SECONDS, SlowClients

pytestmark = pytest.mark.e2e

HUBSPOT_WAIT = 5.0

# The set-up this replaced: gunicorn's gthread worker with 8 threads and no read timeout.
OLD_FRONT = """
import sys
from connector.serve import Server
from connector.settings import load_settings
options = {"bind": f"127.0.0.1:{sys.argv[1]}", "workers": 1, "worker_class": "gthread",
           "threads": 8, "timeout": 60, "graceful_timeout": 5, "accesslog": None}
Server(load_settings(), options, with_worker=False).run()
"""


def _post_signed(url: str, deal_id: str) -> tuple[int | None, float]:
    body, headers = signed(deal_closed_today(deal_id))
    request = urllib.request.Request(f"{url}/webhooks/generic", data=body, headers=headers, method="POST")
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=HUBSPOT_WAIT) as reply:
            return int(reply.status), time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return int(exc.code), time.monotonic() - started
    except OSError:  # no answer within HubSpot's wait
        return None, time.monotonic() - started


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not answer in {timeout}s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def database(sqlite_url: str) -> Iterator[Store]:
    store = Store.from_url(sqlite_url)
    upgrade(store.engine)
    yield store
    store.dispose()


def _start(front: str, database_url: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "OFFBOARD_DATABASE_URL": database_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_PUBLIC_URL": url,
    }
    command = (
        [OFFBOARD, "serve", "--port", str(port), "--no-worker"]
        if front == "offboard serve"
        else [sys.executable, "-c", OLD_FRONT, str(port)]
    )
    process = subprocess.Popen(
        command, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True
    )
    _wait_healthy(process, url, log)
    return process, url


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait()


def _stored_deals(store: Store) -> list[str]:
    with store.session() as session:
        return [json.loads(json.dumps(e.payload))["deal"]["id"] for e in session.scalars(select(Event))]


def test_a_signed_webhook_is_answered_while_fifty_slow_clients_are_connected(database, sqlite_url, tmp_path):
    log = tmp_path / "serve.log"
    process, url = _start("offboard serve", sqlite_url, log)
    slow = SlowClients(int(url.rsplit(":", 1)[1])).open()
    try:
        time.sleep(TRICKLE_SECONDS + 0.5)  # every slow connection has trickled at least once
        status, took = _post_signed(url, "SLOW-1")
        assert status == 202, f"no 202 in {took:.1f}s (got {status})\n{log.read_text()[-3000:]}"
        assert took < HUBSPOT_WAIT
        assert slow.still_open() == SLOW_HEADERS + SLOW_BODIES  # they were all there throughout
        assert _stored_deals(database) == ["SLOW-1"]
        assert "OFFBOARD_SECRET_KEY is not set" in log.read_text()  # the development key is named at start
        print(f"signed webhook answered in {took:.2f}s beside {len(slow.sockets)} slow connections")
    finally:
        slow.close()
        code = _stop(process)
    assert code == 0, log.read_text()[-3000:]


def test_the_old_gthread_set_up_lets_the_same_slow_clients_stop_intake(database, sqlite_url, tmp_path):
    log = tmp_path / "gthread.log"
    process, url = _start("gthread", sqlite_url, log)
    slow = SlowClients(int(url.rsplit(":", 1)[1])).open()
    try:
        time.sleep(TRICKLE_SECONDS + 0.5)
        status, took = _post_signed(url, "SLOW-OLD")
        assert status is None, f"the old set-up answered {status} in {took:.1f}s"
        print(f"old set-up: no answer in {took:.1f}s beside {len(slow.sockets)} slow connections")
    finally:
        slow.close()
        _stop(process)
