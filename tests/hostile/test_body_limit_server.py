"""The body limit on the real server (waitress): refused with 413 before the body is read whole.

Over a raw socket: a Content-Length of 64 MiB with no body sent at all is answered
413 at once (nothing was waited for); a chunked body that would go on for 64 MiB
is answered 413 after about a megabyte, long before the sender is done.
"""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from connector.web import MAX_BODY_BYTES
from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET
from tests.support.hostile import FLOW_SECRET
from tests.support.salesforce import ORG_ID, OUTBOUND_KEY, OUTBOUND_PATH
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e
BIG = 64 * MAX_BODY_BYTES


@pytest.fixture
def server(sqlite_url, tmp_path):
    env = {
        "OFFBOARD_DATABASE_URL": sqlite_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
        "HUBSPOT_ACCESS_TOKEN": "pat-na1-unused",  # every endpoint on; no CRM is called
        "HUBSPOT_CLIENT_SECRET": "hubspot-client-secret",
        "HUBSPOT_API_BASE_URL": "http://127.0.0.1:9",
        "SALESFORCE_ORG_ID": ORG_ID,
        "SALESFORCE_OUTBOUND_KEY": OUTBOUND_KEY,
        "SALESFORCE_WEBHOOK_SECRET": FLOW_SECRET,
    }
    process = ServerProcess(env, "--no-worker", log=tmp_path / "server.log").start()
    yield process
    process.stop()


def head(path: str, port: int, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n{extra}\r\n"
    ).encode()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def read_reply(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_a_declared_oversized_body_is_refused_without_waiting_for_it(server):
    paths = ["/webhooks/generic", "/webhooks/hubspot", OUTBOUND_PATH, "/webhooks/salesforce/flow"]
    for path in paths:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            started = time.monotonic()
            extra = f"Content-Length: {BIG}\r\nX-Offboard-Secret: {FLOW_SECRET}\r\n"
            sock.sendall(head(path, server.port, extra))  # and not one byte of the body
            reply = read_reply(sock)
        assert status_of(reply) == 413, (path, reply[:300])
        assert time.monotonic() - started < 5, path


def test_a_chunked_body_is_refused_after_the_limit_not_at_its_end(server):
    chunk = b"a" * 65536
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    reply = b""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head("/webhooks/generic", server.port, "Transfer-Encoding: chunked\r\n"))
        sock.settimeout(0.05)
        while sent < BIG:
            try:
                sock.sendall(frame)
                sent += len(chunk)
            except OSError:  # the server answered and closed: the rest was never read
                break
            try:
                reply += sock.recv(65536)
            except TimeoutError:
                continue
            if b"\r\n\r\n" in reply:
                break
        sock.settimeout(5)
        if b"\r\n\r\n" not in reply:
            with contextlib.suppress(OSError):  # the server may have closed the connection already
                reply += read_reply(sock)
    assert reply and status_of(reply) == 413, reply[:300]
    assert sent < BIG // 4, f"the sender got {sent} bytes out before the refusal"
    print(f"chunked: refused after {sent} of {BIG} bytes were sent")
