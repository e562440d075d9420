"""Inbound Salesforce events: verify, store, answer. The salesforce adapter owns parsing and verifying.

``POST /webhooks/salesforce?key=<SALESFORCE_OUTBOUND_KEY>`` takes outbound
messages (SOAP) and answers the SOAP Ack only once every notification is
stored; a refusal is a SOAP fault (401 without the right key, 503 with no key
configured, both before the body is read).
``POST /webhooks/salesforce/flow`` takes Flow HTTP callouts (JSON, shared
secret) and answers JSON like ``/webhooks/generic``. Neither calls Salesforce.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, request
from werkzeug.exceptions import HTTPException

from adapters.salesforce import flow, outbound
from connector import inbox
from connector.errors import EndpointDisabled, WebhookRejected
from connector.web import http_headers, http_reason, services

bp = Blueprint("salesforce", __name__, url_prefix="/webhooks/salesforce")
log = logging.getLogger("offboard.web.salesforce")

SOURCE = "salesforce"
XML = "text/xml; charset=utf-8"


@bp.post("")
def outbound_message() -> Response:
    found = services()
    key = found.settings.salesforce_outbound_key
    outbound.verify_key(key.get_secret_value() if key else None, request.args.get("key"))
    message = outbound.parse(request.get_data(cache=False), found.settings.salesforce_org_id)
    items = [
        inbox.Incoming(
            source=SOURCE,
            account=message.account,
            event_key=outbound.event_key(notification),
            kind=notification.kind,
            payload=notification.fields,
        )
        for notification in message.notifications
    ]
    accepted = inbox.accept(found.store, items, found.clock())
    fresh = sum(not a.duplicate for a in accepted)
    log.info("outbound message %s: %d notification(s), %d new", message.action_id, len(items), fresh)
    return Response(outbound.ACK, status=200, content_type=XML)


@bp.post("/flow")
def flow_callout() -> tuple[dict[str, object], int]:
    found = services()
    secret = found.settings.salesforce_webhook_secret
    if secret is None:
        raise EndpointDisabled("SALESFORCE_WEBHOOK_SECRET is not set; this endpoint is off")
    flow.verify(secret.get_secret_value(), request.headers.get(flow.SECRET_HEADER))
    callout = flow.parse(request.get_data(cache=False))
    org_id = found.settings.salesforce_org_id
    item = inbox.Incoming(
        source=SOURCE,
        account=org_id[:15] if org_id else "-",
        event_key=callout.event_key,
        kind="opportunity",
        payload=callout.payload,
    )
    (accepted,) = inbox.accept(found.store, [item], found.clock())
    status = "duplicate" if accepted.duplicate else "accepted"
    return {"status": status, "event_id": accepted.event_id}, 200 if accepted.duplicate else 202


@bp.errorhandler(WebhookRejected)
def _refused(exc: WebhookRejected) -> Response | tuple[dict[str, object], int]:
    """Outbound messages get a SOAP fault (Salesforce shows it and retries); the Flow endpoint JSON."""
    log.warning("refused %s on %s (%d): %s", type(exc).__name__, request.path, exc.status, exc.reason)
    if request.endpoint == f"{bp.name}.outbound_message":
        body = outbound.fault(exc.reason, client=exc.status < 500)
        return Response(body, status=exc.status, content_type=XML)
    answer: dict[str, object] = {"error": exc.reason}
    if exc.details:
        answer["details"] = exc.details
    return answer, exc.status


@bp.errorhandler(HTTPException)
def _http_refused(exc: HTTPException) -> Response | tuple[dict[str, object], int, list[tuple[str, str]]]:
    """A body over the limit (413) or cut short (400): a SOAP fault for outbound messages too."""
    code = exc.code or 500
    if request.endpoint == f"{bp.name}.outbound_message":
        body = outbound.fault(http_reason(exc), client=code < 500)
        return Response(body, status=code, content_type=XML)
    return {"error": http_reason(exc)}, code, http_headers(exc)
