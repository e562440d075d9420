"""``GET /metrics``: Prometheus text format, read from the shared database at scrape time.

Open by default, like most exporters: it shows counts by state, kind, CRM and
status, no ids, names or secrets. Set ``OFFBOARD_METRICS_TOKEN`` to require
``Authorization: Bearer <token>`` (when the endpoint is reachable from outside
the scraper's network); a wrong or missing token gets 401 and no numbers.
"""

from __future__ import annotations

import hmac

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from connector.errors import SignatureInvalid
from connector.metrics import StoreCollector
from connector.web import services

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    found = services()
    token = found.settings.metrics_token
    if token is not None:
        sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(sent.encode(), token.get_secret_value().encode()):
            raise SignatureInvalid("send Authorization: Bearer <OFFBOARD_METRICS_TOKEN>")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(found.store, found.clock, found.settings.sweep_interval_seconds))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
