"""Bodies over the limit are refused (413, with a reason) before they are read whole, on every POST endpoint.

The body is an endless stream that counts what the app pulls from it. Declared
too long (Content-Length): refused with nothing read. Sent chunked, with no
length (``wsgi.input_terminated``, as gunicorn sets it): refused once the limit
is passed, having read about the limit and no more. A Content-Length shorter
than the stream: only the declared bytes are read.
"""

from __future__ import annotations

import io
from typing import Any

import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from adapters.salesforce import flow
from connector.web import MAX_BODY_BYTES
from tests.support.hostile import FLOW_SECRET, Tables
from tests.support.salesforce import OUTBOUND_PATH

BIG = 64 * MAX_BODY_BYTES  # what the stream would deliver if the app kept reading
SLACK = 64 * 1024  # one read past the limit is how the app notices it


class Endless(io.RawIOBase):
    """An input stream of ``BIG`` bytes that counts how many the app consumed."""

    def __init__(self, pattern: bytes = b"a") -> None:
        self.pattern, self.consumed = pattern, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = min(len(buffer), BIG - self.consumed)
        chunk = (self.pattern * (size // len(self.pattern) + 1))[:size]
        buffer[:size] = chunk
        self.consumed += size
        return size


class Finite(Endless):
    """A stream of exactly ``body``, then its end."""

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def readinto(self, buffer: Any) -> int:
        chunk = self.body[self.consumed : self.consumed + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.consumed += len(chunk)
        return len(chunk)


def endpoints(pages: dict[str, str]) -> dict[str, tuple[str, dict[str, str]]]:
    """Each POST endpoint with what gets a request as far as reading its body."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    return {
        "generic": ("/webhooks/generic", {"Content-Type": "application/json"}),
        "hubspot": ("/webhooks/hubspot", {"Content-Type": "application/json"}),
        "outbound": (OUTBOUND_PATH, {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}),
        "flow": (
            "/webhooks/salesforce/flow",
            {"Content-Type": "application/json", flow.SECRET_HEADER: FLOW_SECRET},
        ),
        "survey": (pages["survey"], form),
        "referral": (pages["referral"], form),
    }


def send(
    app: Any, path: str, headers: dict[str, str], stream: Endless, length: int | None
) -> tuple[int, bytes]:
    environ = EnvironBuilder(path=path, method="POST", headers=headers).get_environ()
    environ["wsgi.input"] = stream
    environ.pop("CONTENT_LENGTH", None)
    if length is None:
        environ["wsgi.input_terminated"] = True  # chunked: the server ends the stream, we enforce the limit
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = str(length)
    body, status, _headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), b"".join(body)


def refusal_says_too_large(status: int, body: bytes) -> None:
    assert status == 413, (status, body[:300])
    assert f"larger than {MAX_BODY_BYTES} bytes".encode() in body, body[:300]


@pytest.mark.parametrize("length", [MAX_BODY_BYTES + 1, BIG], ids=["limit+1", "64MiB"])
def test_a_declared_length_over_the_limit_is_refused_unread(app, pages, tables: Tables, length):
    for endpoint, (path, headers) in endpoints(pages).items():
        stream = Endless()
        before = tables.snapshot()
        status, body = send(app, path, headers, stream, length)
        refusal_says_too_large(status, body)
        assert stream.consumed == 0, f"{endpoint} read {stream.consumed} bytes of a body it refused"
        assert tables.changed(before) == []


def test_a_chunked_body_over_the_limit_is_refused_after_the_limit(app, pages, tables: Tables):
    for endpoint, (path, headers) in endpoints(pages).items():
        stream = Endless()
        before = tables.snapshot()
        status, body = send(app, path, headers, stream, None)
        refusal_says_too_large(status, body)
        assert stream.consumed <= MAX_BODY_BYTES + SLACK, f"{endpoint} read {stream.consumed} of {BIG} bytes"
        assert tables.changed(before) == []


def test_a_chunked_body_within_the_limit_is_read_whole(app, pages, tables: Tables):
    """No Content-Length, a body under the limit: read to its end, then judged like any other."""
    survey = endpoints(pages)["survey"][0]
    client_cookie = "c" * 43
    environ_headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cookie": f"offboard_form={client_cookie}",
    }
    body = f"csrf={client_cookie}&score=9&comment=".encode() + b"x" * 4000
    status, reply = send(app, survey, environ_headers, Finite(body), None)
    assert status == 200, reply[:500]
    (answer,) = tables.added(tables.baseline, "answers")
    assert (answer["score"], answer["comment"]) == (9, "x" * 4000)


def test_only_the_declared_length_is_read(app, pages, tables: Tables):
    for endpoint, (path, headers) in endpoints(pages).items():
        stream = Endless(b"{")
        before = tables.snapshot()
        status, body = send(app, path, headers, stream, 100)
        assert 400 <= status < 500, (endpoint, status, body[:300])  # a hundred bytes of garbage: refused
        assert body.strip()
        assert stream.consumed <= 100, endpoint
        assert tables.changed(before) == []


def test_the_limit_is_the_documented_one(app, tables: Tables):
    """Exactly the limit is not too large: it is read and judged (here: not JSON)."""
    stream = Endless(b" ")
    status, body = send(
        app, "/webhooks/salesforce/flow", {flow.SECRET_HEADER: FLOW_SECRET}, stream, MAX_BODY_BYTES
    )
    assert status == 400 and b"not valid JSON" in body, (status, body[:300])
    assert stream.consumed == MAX_BODY_BYTES
