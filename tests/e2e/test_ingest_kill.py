"""SIGKILL ``offboard serve`` while many connections post HubSpot webhooks: after a restart, every
event that was answered 2xx is in the inbox ("stored before the 2xx", group commit included).

Sixteen keep-alive connections post signed batches (new events, and redeliveries of events
already answered) to two web processes; at a random moment the whole process group is killed
at once, mid-request. Requests in flight get no answer, and their senders would deliver
them again; what matters is that no 2xx was given for an event that is not stored.
"""

from __future__ import annotations

import http.client
import random
import signal
import threading
import time
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from connector.store import Event, Store
from tests.support.harness import seed
from tests.support.helpers import BUNDLED_PLAYBOOKS
from tests.support.hubspot import CLIENT_SECRET, TOKEN, signed, stage_event
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

CONNECTIONS = 16
PATH = "/webhooks/hubspot"


class Poster:
    """Posts batches on keep-alive connections until the server goes away; keeps what got a 2xx."""

    def __init__(self, server: ServerProcess, rng: random.Random) -> None:
        self.server = server
        self.rng = rng
        self.lock = threading.Lock()
        self.next_id = 0
        self.answered: set[int] = set()  # eventIds of batches answered 2xx
        self.refused: list[int] = []  # statuses that were neither 2xx nor a lost answer

    def run(self) -> None:
        threads = [threading.Thread(target=self._connection) for _ in range(CONNECTIONS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)

    def _batch(self) -> list[int]:
        with self.lock:
            fresh = [self.next_id + n + 1 for n in range(self.rng.randint(1, 3))]
            self.next_id += len(fresh)
            again = (
                self.rng.sample(sorted(self.answered), 1) if self.answered and self.rng.random() < 0.2 else []
            )
        return fresh + again  # sometimes a redelivery of an event already answered

    def _connection(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=10)
        try:
            while True:
                batch = self._batch()
                events = [stage_event("7001", "closedwon", event_id=n) for n in batch]
                body, headers = signed(events, url=self.server.url + PATH, at=datetime.now(UTC))
                try:
                    connection.request("POST", PATH, body=body, headers=headers)
                    reply = connection.getresponse()
                    reply.read()
                except (OSError, http.client.HTTPException):
                    return  # killed: this batch got no answer, so it counts as not accepted
                with self.lock:
                    if 200 <= reply.status < 300:
                        self.answered.update(batch)
                    else:
                        self.refused.append(reply.status)
        finally:
            connection.close()


def test_every_event_answered_2xx_survives_a_sigkill_of_the_server(db_url, store, tmp_path):
    rng = random.Random(seed(12))
    env = {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_SWEEP_INTERVAL_SECONDS": "0",
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": "http://127.0.0.1:9",  # never called: nothing is worked on here
    }
    log = tmp_path / "server.log"
    server = ServerProcess(env, "--workers", "2", "--no-worker", log=log).start()
    poster = Poster(server, rng)
    sender = threading.Thread(target=poster.run)
    sender.start()
    time.sleep(1.0 + rng.random())  # mid-burst
    server.stop(signal.SIGKILL)
    sender.join(timeout=90)
    assert not sender.is_alive()

    restarted = ServerProcess(env, "--workers", "1", "--no-worker", log=log).start()  # recovers the database
    try:
        held = inbox_keys(store)
    finally:
        restarted.stop()
    assert len(poster.answered) > 100, log.read_text()[-2000:]  # the kill landed mid-burst
    assert poster.refused == []
    missing = {str(n) for n in poster.answered} - held
    assert not missing, f"answered 2xx but not stored: {sorted(missing)[:20]}"


def inbox_keys(store: Store) -> set[str]:
    store.dispose()  # a fresh connection: what is on disk now
    with store.read() as session:
        return set(session.scalars(select(Event.event_key).where(Event.source == "hubspot")))
