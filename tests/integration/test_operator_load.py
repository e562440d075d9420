"""Operator commands on a big SQLite outbox never make a webhook wait.

Tens of thousands of parked actions are listed (`offboard failed`) and put back
(`offboard retry --all`) by a separate process, as an operator would, while
signed webhooks keep arriving through the app. The web's store waits at most
2 s for SQLite's write lock here (30 s in production): a command holding that
lock for its whole listing, or its whole bulk write, shows up as a webhook
answered 500 "database is locked".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select

from connector.clock import utcnow
from connector.services import build
from connector.store import Action, AuditEntry, Event, Run, Store
from connector.store.db import engine_for
from connector.store.migrate import upgrade
from connector.web import create_app
from tests.support.helpers import BUNDLED_PLAYBOOKS, ROOT, deal_closed_event, make_settings, signed

RUNS, ACTIONS_PER_RUN = 250, 100  # 25,000 parked actions
WEB_LOCK_WAIT_MS = 2000


def _fill(store: Store) -> int:
    now = utcnow()
    with store.engine.begin() as connection:
        connection.execute(
            insert(Run.__table__),
            [
                {
                    "crm": "sandbox",
                    "account": "sandbox",
                    "deal_id": f"BULK-{n}",
                    "playbook_id": "completed-project",
                    "playbook_version": 1,
                    "playbook_hash": "0" * 64,
                    "playbook": {},
                    "deal": {},
                    "trigger": "deal_closed",
                    "anchor_at": now,
                    "state": "active",
                    "created_at": now,
                    "updated_at": now,
                }
                for n in range(RUNS)
            ],
        )
        run_ids = list(connection.scalars(select(Run.id)))
        rows = [
            {
                "run_id": run_id,
                "step_id": f"step-{n}",
                "kind": "task",
                "payload": {"tasks": []},
                "due_at": now,
                "state": "failed",
                "attempts": 5,
                "last_error": "CrmPermanent: sandbox: owner 42 inactive",
                "idempotency_key": f"bulk-{run_id}-{n}",
                "created_at": now,
                "updated_at": now,
            }
            for run_id in run_ids
            for n in range(ACTIONS_PER_RUN)
        ]
        connection.execute(insert(Action.__table__), rows)
    return len(rows)


@pytest.fixture
def big_outbox(sqlite_url: str) -> Iterator[tuple[str, int]]:
    store = Store.from_url(sqlite_url)
    upgrade(store.engine)
    count = _fill(store)
    store.dispose()
    yield sqlite_url, count


@pytest.fixture
def web(big_outbox: tuple[str, int]) -> Iterator[Any]:
    """The app on its own store, waiting at most 2 s for the write lock."""
    engine = engine_for(big_outbox[0])

    @event.listens_for(engine, "connect")
    def _short_wait(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA busy_timeout={WEB_LOCK_WAIT_MS}")

    store = Store(engine)
    app = create_app(build(make_settings(big_outbox[0]), store=store))
    app.config["TESTING"] = True
    yield app.test_client()
    store.dispose()


def _command(url: str, *args: str, output: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", "/tmp"),
        "OFFBOARD_DATABASE_URL": url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_CONFIG": str(output.parent / "no-such-offboard.toml"),
    }
    code = "from connector.cli import main; main()"
    with output.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-c", code, *args], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT
        )


def _webhooks_while(process: subprocess.Popen[bytes], client: Any, tag: str) -> list[int]:
    """Post signed deal-closed events until the command exits; the status of each."""
    statuses: list[int] = []
    deadline = time.monotonic() + 300
    while process.poll() is None and time.monotonic() < deadline:
        body, headers = signed(deal_closed_event(f"{tag}-{len(statuses)}"))
        statuses.append(client.post("/webhooks/generic", data=body, headers=headers).status_code)
        time.sleep(0.05)  # a steady trickle, leaving the command its share of the CPU
    process.wait(timeout=60)
    return statuses


def _count(url: str, query: Any) -> int:
    store = Store.from_url(url)
    try:
        with store.read() as session:
            return int(session.scalar(query) or 0)
    finally:
        store.dispose()


def test_failed_listing_never_holds_up_webhooks(big_outbox, web, tmp_path):
    url, count = big_outbox
    output = tmp_path / "failed.txt"
    listing = _command(url, "failed", "--limit", str(count), output=output)
    statuses = _webhooks_while(listing, web, "L")
    assert listing.returncode == 0, output.read_text()[-2000:]
    assert len(statuses) >= 3, "the listing ended before webhooks could overlap it"
    assert set(statuses) == {202}, statuses
    text = output.read_text()
    assert sum(line.startswith("action ") for line in text.splitlines()) == count
    assert _count(url, select(func.count()).select_from(Event)) == len(statuses)


def test_retry_all_never_holds_up_webhooks(big_outbox, web, tmp_path):
    url, count = big_outbox
    output = tmp_path / "retry.txt"
    retrying = _command(url, "retry", "--all", output=output)
    statuses = _webhooks_while(retrying, web, "R")
    assert retrying.returncode == 0, output.read_text()[-2000:]
    assert f"{count} action(s) back in the queue" in output.read_text()
    assert len(statuses) >= 3, "the retry ended before webhooks could overlap it"
    assert set(statuses) == {202}, statuses
    assert _count(url, select(func.count()).where(Action.state == "failed")) == 0
    assert _count(url, select(func.count()).where(Action.state == "pending")) == count
    retried = select(func.count()).where(AuditEntry.verb == "action.retried")
    assert _count(url, retried) == count
