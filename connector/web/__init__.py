"""The Flask app factory: verify, store, answer fast. No CRM calls happen here."""

from __future__ import annotations

import logging

from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException

from connector.errors import WebhookRejected
from connector.services import Services

MAX_BODY_BYTES = 1024 * 1024
log = logging.getLogger("offboard.web")


def create_app(services: Services) -> Flask:
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SECRET_KEY=services.settings.secret_key.get_secret_value(),
        JSON_SORT_KEYS=False,
    )
    app.extensions["offboard"] = services

    from connector.web import health, hubspot, pages, salesforce, webhooks

    for blueprint in (health.bp, webhooks.bp, hubspot.bp, salesforce.bp, pages.bp):
        app.register_blueprint(blueprint)
    _register_errors(app)
    app.after_request(_security_headers)
    return app


def _security_headers(response: Response) -> Response:
    """Pages cannot be framed or leak their personal link; nothing is sniffed or cached."""
    headers = response.headers
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault(
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    )
    if response.mimetype == "text/html":
        headers.setdefault("Cache-Control", "no-store")
    return response


def services() -> Services:
    found: Services = current_app.extensions["offboard"]
    return found


def _register_errors(app: Flask) -> None:
    @app.errorhandler(WebhookRejected)
    def _rejected(exc: WebhookRejected) -> tuple[dict[str, object], int]:
        log.info("rejected %s: %s", type(exc).__name__, exc.reason)
        body: dict[str, object] = {"error": exc.reason}
        if exc.details:
            body["details"] = exc.details
        return body, exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[dict[str, object], int]:
        reason = exc.description or exc.name
        if exc.code == 413:
            reason = f"body is larger than {MAX_BODY_BYTES} bytes"
        return {"error": reason}, exc.code or 500

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[dict[str, object], int]:
        log.exception("unhandled error")
        return {"error": "internal error; nothing was stored"}, 500
