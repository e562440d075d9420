"""``offboard serve --workers 2``: a web process that dies is replaced, and one SIGTERM to the
main process stops every web process, with exit code 0."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from sqlalchemy import select

from connector.demo import post, wait_for
from connector.store import Event, Store
from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET, deal_closed_today, signed
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


def children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


@pytest.fixture
def server(sqlite_url, tmp_path):
    env = {
        "OFFBOARD_DATABASE_URL": sqlite_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }
    process = ServerProcess(env, "--workers", "2", "--no-worker", log=tmp_path / "server.log").start()
    yield process
    process.stop(signal.SIGKILL)


def test_a_dead_web_process_is_replaced_and_sigterm_stops_them_all(server, sqlite_url):
    main = server.process.pid
    assert wait_for(lambda: len(children(main)) == 2, 20), server.log.read_text()[-2000:]
    first = children(main)
    killed = min(first)
    os.kill(killed, signal.SIGKILL)
    assert wait_for(lambda: len(children(main)) == 2 and killed not in children(main), 20)
    replaced = children(main) - first
    assert len(replaced) == 1

    for n in range(4):  # both processes answer
        body, headers = signed(deal_closed_today(f"PROC-{n}"))
        assert post(server.url, body, headers)[0] == 202

    web = children(main)
    os.kill(main, signal.SIGTERM)  # the main process only: it passes the signal on
    assert server.process.wait(timeout=40) == 0
    assert wait_for(lambda: not any(Path(f"/proc/{pid}").exists() for pid in web), 10)
    store = Store.from_url(sqlite_url)
    with store.session() as session:
        stored = {event.payload["deal"]["id"] for event in session.scalars(select(Event))}
    store.dispose()
    assert stored == {f"PROC-{n}" for n in range(4)}
