"""Inbound webhooks: verify the sender, store the event, answer at once."""

from __future__ import annotations

from flask import Blueprint, request

from connector import generic, inbox
from connector.errors import EndpointDisabled, PayloadInvalid
from connector.web import services

bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")


@bp.post("/generic")
def generic_event() -> tuple[dict[str, object], int]:
    found = services()
    secret = found.settings.webhook_secret
    if secret is None:
        raise EndpointDisabled("OFFBOARD_WEBHOOK_SECRET is not set; this endpoint is off")
    body = request.get_data(cache=False)
    generic.verify(secret.get_secret_value(), body, dict(request.headers))
    key = generic.event_key(request.headers["webhook-id"])
    event = generic.parse(body)
    if event.crm not in found.adapters:
        configured = ", ".join(sorted(found.adapters)) or "none"
        raise PayloadInvalid(
            f"crm {event.crm!r} is not configured on this connector (configured: {configured})"
        )
    item = inbox.Incoming(
        source="generic",
        account=event.account or "-",
        event_key=key,
        kind=event.type,
        payload=generic.as_payload(event),
    )
    (accepted,) = inbox.accept(found.store, [item], found.clock())
    status = "duplicate" if accepted.duplicate else "accepted"
    return {"status": status, "event_id": accepted.event_id}, 200 if accepted.duplicate else 202
