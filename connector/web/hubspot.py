"""Inbound HubSpot webhooks: verify (v3 only), store, answer 204. The adapter owns parsing and verifying.

HubSpot gives up on an answer slower than 5 s and retries anything but a 2xx, so this does
no CRM call: it stores each event of the batch (keyed by portal and eventId, so a
redelivery stores nothing new) and the worker interprets them later.
"""

from __future__ import annotations

from urllib.parse import quote

from flask import Blueprint, request

from adapters.hubspot import signature, webhook
from connector import inbox
from connector.errors import EndpointDisabled
from connector.web import services

bp = Blueprint("hubspot", __name__, url_prefix="/webhooks/hubspot")


@bp.post("")
def receive() -> tuple[str, int]:
    found = services()
    secret = found.settings.hubspot_client_secret
    # Empty counts as not set: a signature keyed with "" is one anybody can compute.
    if secret is None or not secret.get_secret_value():
        raise EndpointDisabled("HUBSPOT_CLIENT_SECRET is not set; this endpoint is off")
    if "hubspot" not in found.adapters:
        raise EndpointDisabled("HUBSPOT_ACCESS_TOKEN is not set; events could not be processed")
    body = request.get_data(cache=False)
    signature.verify(
        secret.get_secret_value(),
        method=request.method,
        uri=signature.public_uri(found.settings.public_url, _raw_path_and_query()),
        body=body,
        headers=dict(request.headers),
        now=found.clock(),
    )
    items = [
        inbox.Incoming("hubspot", event.account, event.event_key, event.kind, event.payload)
        for event in webhook.parse(body)
    ]
    inbox.accept(found.store, items, found.clock())
    return "", 204


def _raw_path_and_query() -> str:
    """The path and query exactly as requested (the signature covers the raw bytes, in order)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw:
        return str(raw)
    query = request.environ.get("QUERY_STRING", "")
    return quote(request.path) + (f"?{query}" if query else "")
