"""``offboard serve`` keeps a sender's connection open across deliveries answered 204.

HubSpot's endpoint answers 204 (no body); the server must not close the connection after
each one, or every delivery costs the sender a new connection (and a TLS handshake through
the proxy).
"""

from __future__ import annotations

import http.client
from datetime import UTC, datetime

import pytest

from tests.support.helpers import BUNDLED_PLAYBOOKS
from tests.support.hubspot import CLIENT_SECRET, TOKEN, signed, stage_event
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

PATH = "/webhooks/hubspot"


def test_deliveries_answered_204_share_one_keep_alive_connection(sqlite_url, tmp_path):
    env = {
        "OFFBOARD_DATABASE_URL": sqlite_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": "http://127.0.0.1:9",  # never called
    }
    server = ServerProcess(env, "--no-worker", log=tmp_path / "server.log").start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        answers, sockets = [], set()
        for event_id in (1, 2, 3):
            body, headers = signed(
                [stage_event("7001", "closedwon", event_id=event_id)],
                url=server.url + PATH,
                at=datetime.now(UTC),
            )
            connection.request("POST", PATH, body=body, headers=headers)
            reply = connection.getresponse()
            reply.read()
            answers.append((reply.status, reply.getheader("Connection")))
            sockets.add(id(connection.sock))
        assert answers == [(204, None)] * 3
        assert len(sockets) == 1  # one connection carried all three
        connection.request("POST", PATH, body=b"[]", headers={"Connection": "close"})
        closing = connection.getresponse()
        assert closing.getheader("Connection") == "close"  # asked to close: closed
        connection.close()
    finally:
        server.stop()
