"""One webhook receiver for every inbound source: verify, store, answer. No CRM calls happen here.

Each CRM plugin declares its sources (``adapters.base.InboundSource``); the core adds
its generic one. For each, ``POST <path>`` runs the same steps: the source verifies
the sender and parses the body (it reads the body only when it asks for it), the
events are stored in one transaction under the source's name (a redelivery is
recognised, not stored twice; concurrent requests share transactions, see
``connector.inbox``), and only then, once that transaction has committed, the source
answers. A refusal is the source's own answer (a SOAP fault) or the core's JSON error;
a delivery the database could not take is answered 503 (500 when retrying will not
help) in the same way, never 2xx.

The hot path. A burst of webhooks is the heaviest traffic the app gets, and Flask's
request machinery (contexts, routing, hooks, response finalising) cost about as much
per delivery as verifying and storing it. So ``Receiver.wsgi`` answers ``POST`` to a
source's path as plain WSGI on werkzeug's request and response, before Flask sees the
request, with what Flask's hooks add to every answer (the body limit, the security
headers, the webhook counter) applied here. Anything else (another method, another
path) goes on to Flask, where the same paths are routed so that, say, a GET answers 405.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Flask
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wrappers import Request

import adapters
from adapters.base import InboundRequest, InboundSource, Refusal, Reply
from connector import inbox, installs
from connector.errors import WebhookRejected
from connector.metrics import event_received
from connector.services import Services
from connector.web import (
    CLIENT_PAGES,
    MAX_BODY_BYTES,
    bounded_stream,
    http_headers,
    http_reason,
    rejected_answer,
    security_header_list,
)
from connector.web.webhooks import GenericSource

log = logging.getLogger("offboard.web")

Wsgi = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def sources(found: Services) -> list[InboundSource]:
    """The core's generic source, then every CRM plugin's."""
    return [GenericSource(found.settings), *adapters.inbound_sources(found.settings)]


class Receiver:
    """Answers ``POST`` to each source's path (see the module docstring)."""

    def __init__(self, app: Flask, found: Services, served: Sequence[InboundSource]) -> None:
        self.app, self.services = app, found
        self.by_path = {source.path: source for source in served}

    def blueprint(self) -> Blueprint:
        """Flask's routes for the same paths: only what is not a POST reaches them (405)."""
        bp = Blueprint("receiver", __name__)
        for path in self.by_path:
            endpoint = path.strip("/").replace("/", "_")
            bp.add_url_rule(path, endpoint=endpoint, view_func=_not_post, methods=["POST"])
        return bp

    def wsgi(self, flask_app: Wsgi) -> Wsgi:
        """A WSGI app answering the sources' POSTs itself and passing the rest to ``flask_app``."""

        def front(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            source = self.by_path.get(environ.get("PATH_INFO", ""))
            if source is None or environ.get("REQUEST_METHOD") != "POST":
                return flask_app(environ, start_response)
            return self.answer(source, environ, start_response)

        return front

    def answer(
        self, source: InboundSource, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request = Request(environ)
        request.max_content_length = MAX_BODY_BYTES
        try:
            answer = self._receive(source, request)
        except WebhookRejected as exc:
            answer = self._rejected(source, request, exc)
        except HTTPException as exc:
            answer = self._http_refused(source, request, exc)
        except Exception:
            log.exception("unhandled error")
            answer = self._json({"error": "internal error; nothing was stored"}, 500)
        event_received(source.path.removeprefix("/webhooks/").replace("/", "_"), answer.status)
        return answer.send(start_response, request.path, self.services.settings.brand_logo_url)

    def _receive(self, source: InboundSource, request: Request) -> _Answer:
        bounded_stream(request)
        delivery = source.receive(self._inbound(request))
        items = [
            inbox.Incoming(source.source, event.account, event.event_key, event.kind, event.payload)
            for event in delivery.events
        ]
        try:
            stored = inbox.accept(self.services.store, items, self.services.clock())
        except inbox.NotStored as exc:
            return self._not_stored(source, request, exc)
        return self._response(source.reply(delivery, stored))

    def _inbound(self, request: Request) -> InboundRequest:
        found = self.services
        return InboundRequest(
            method=request.method,
            path=_raw_path_and_query(request),
            args=request.args,
            headers=request.headers,  # type: ignore[arg-type]  # werkzeug's: case-insensitive
            read_body=lambda: request.get_data(cache=False),
            now=found.clock(),
            public_url=found.settings.public_url,
            configured=tuple(found.adapters),
            account_key=self._account_key,
        )

    def _account_key(self, crm: str, account: str) -> str:
        return installs.inbound_key(self.services.settings.secret_key.get_secret_value(), crm, account)

    def _not_stored(self, source: InboundSource, request: Request, exc: inbox.NotStored) -> _Answer:
        """Nothing of the delivery was stored: never a 2xx, so the sender delivers it again.

        503 when the database was away or busy (a redelivery will likely be stored), else 500;
        in the source's own format (a SOAP fault for Salesforce), as any refusal.
        """
        # The traceback only for what retrying will not cure: a database that is away needs no trace.
        trace = None if exc.retry else exc.__cause__
        log.error("could not store a delivery to %s: %s", request.path, exc, exc_info=trace)
        status = 503 if exc.retry else 500
        reason = "could not store the events now; nothing was stored, send them again"
        refusal = Refusal(status, reason if exc.retry else "internal error; nothing was stored", request.path)
        reply = source.refused(refusal)
        return self._json({"error": refusal.reason}, status) if reply is None else self._response(reply)

    def _rejected(self, source: InboundSource, request: Request, exc: WebhookRejected) -> _Answer:
        refusal = Refusal(exc.status, exc.reason, request.path, type(exc).__name__, list(exc.details))
        reply = source.refused(refusal)
        return self._json(*rejected_answer(exc)) if reply is None else self._response(reply)

    def _http_refused(self, source: InboundSource, request: Request, exc: HTTPException) -> _Answer:
        """A body over the limit (413) or cut short (400): the source may answer in its own format."""
        refusal = Refusal(exc.code or 500, http_reason(exc), request.path)
        reply = source.refused(refusal)
        if reply is not None:
            return self._response(reply)
        answer = self._json({"error": http_reason(exc)}, exc.code or 500)
        return replace(answer, headers=tuple(http_headers(exc)))

    def _response(self, reply: Reply) -> _Answer:
        """A dict is sent as JSON; bytes as ``content_type`` (HTML, as Flask would, without one)."""
        if isinstance(reply.body, dict):
            return self._json(reply.body, reply.status)
        return _Answer(reply.status, reply.body, reply.content_type or _Answer.content_type)

    def _json(self, body: dict[str, object], status: int) -> _Answer:
        # Flask's JSON (its settings, its trailing newline), as every other answer gets.
        mimetype = getattr(self.app.json, "mimetype", "application/json")
        return _Answer(status, f"{self.app.json.dumps(body)}\n".encode(), mimetype)


@dataclass(frozen=True)
class _Answer:
    """An answer written as plain WSGI. Werkzeug's Response (its header structure, its finishing
    pass) cost as much per delivery as the rest of answering; these answers need none of it:
    a status, a body, its type, and the headers every answer gets (``security_header_list``)."""

    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    def send(self, start_response: Callable[..., Any], path: str, logo_url: str | None) -> list[bytes]:
        # No body, and no Content-Length, on a 1xx or 204 (RFC 9110 8.6), as werkzeug does.
        empty = self.status < 200 or self.status == 204
        headers = [("Content-Type", self.content_type)]
        if not empty:
            headers.append(("Content-Length", str(len(self.body))))
        headers += self.headers
        html = self.content_type.split(";", 1)[0].strip().lower() == "text/html"
        headers += security_header_list(html or path.startswith(CLIENT_PAGES), logo_url)
        reason = HTTP_STATUS_CODES.get(self.status, "Unknown").upper()
        start_response(f"{self.status} {reason}", headers)
        return [] if empty else [self.body]


def _not_post() -> Any:
    """Never reached: the receiver answers every POST to these paths before Flask routes it."""
    raise MethodNotAllowed(valid_methods=["POST"])


def _raw_path_and_query(request: Request) -> str:
    """The path and query exactly as requested (the signature covers the raw bytes, in order)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    query = request.environ.get("QUERY_STRING", "")
    return quote(request.path) + (f"?{query}" if query else "")
