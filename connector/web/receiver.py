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
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException

import adapters
from adapters.base import InboundRequest, InboundSource, Refusal, Reply
from connector import inbox
from connector.errors import WebhookRejected
from connector.services import Services
from connector.web import http_answer, http_reason, rejected_answer, services
from connector.web.webhooks import GenericSource

log = logging.getLogger("offboard.web")


def sources(found: Services) -> list[InboundSource]:
    """The core's generic source, then every CRM plugin's."""
    return [GenericSource(found.settings), *adapters.inbound_sources(found.settings)]


def blueprint(served: Sequence[InboundSource]) -> Blueprint:
    """A blueprint routing ``POST path`` of each source to the receiver."""
    bp = Blueprint("receiver", __name__)
    by_endpoint: dict[str, InboundSource] = {}
    for source in served:
        endpoint = source.path.strip("/").replace("/", "_")
        by_endpoint[endpoint] = source
        bp.add_url_rule(source.path, endpoint=endpoint, view_func=_receive, methods=["POST"])
    bp.record_once(lambda state: state.app.extensions.__setitem__("offboard.sources", by_endpoint))
    bp.register_error_handler(WebhookRejected, _rejected)
    bp.register_error_handler(HTTPException, _http_refused)
    return bp


def _source() -> InboundSource:
    """The source whose path this request was routed to."""
    served: dict[str, InboundSource] = current_app.extensions["offboard.sources"]
    return served[(request.endpoint or "").removeprefix("receiver.")]


def _receive() -> Any:
    found, source = services(), _source()
    delivery = source.receive(_inbound(found))
    items = [
        inbox.Incoming(source.source, event.account, event.event_key, event.kind, event.payload)
        for event in delivery.events
    ]
    try:
        stored = inbox.accept(found.store, items, found.clock())
    except inbox.NotStored as exc:
        return _not_stored(source, exc)
    return _response(source.reply(delivery, stored))


def _not_stored(source: InboundSource, exc: inbox.NotStored) -> Any:
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
    return ({"error": refusal.reason}, status) if reply is None else _response(reply)


def _inbound(found: Services) -> InboundRequest:
    return InboundRequest(
        method=request.method,
        path=_raw_path_and_query(),
        args=request.args,
        headers=request.headers,  # type: ignore[arg-type]  # werkzeug's: case-insensitive
        read_body=lambda: request.get_data(cache=False),
        now=found.clock(),
        public_url=found.settings.public_url,
        configured=tuple(found.adapters),
    )


def _raw_path_and_query() -> str:
    """The path and query exactly as requested (the signature covers the raw bytes, in order)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    query = request.environ.get("QUERY_STRING", "")
    return quote(request.path) + (f"?{query}" if query else "")


def _response(reply: Reply) -> Any:
    """A dict is sent as JSON; bytes as ``content_type`` (Flask's default without one)."""
    if isinstance(reply.body, dict) or reply.content_type is None:
        return reply.body, reply.status
    return Response(reply.body, status=reply.status, content_type=reply.content_type)


def _rejected(exc: WebhookRejected) -> Any:
    refusal = Refusal(exc.status, exc.reason, request.path, type(exc).__name__, list(exc.details))
    reply = _source().refused(refusal)
    return rejected_answer(exc) if reply is None else _response(reply)


def _http_refused(exc: HTTPException) -> Any:
    """A body over the limit (413) or cut short (400): the source may answer in its own format."""
    refusal = Refusal(exc.code or 500, http_reason(exc), request.path)
    reply = _source().refused(refusal)
    return http_answer(exc) if reply is None else _response(reply)
