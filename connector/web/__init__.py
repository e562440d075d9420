"""The Flask app factory: verify, store, answer fast. No CRM calls happen here."""

from __future__ import annotations

import io
import logging

from flask import Flask, Response, current_app, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

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
        # Only the documented methods answer: no automatic OPTIONS (405 instead; Flask >= 3.1).
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.url_map.merge_slashes = False  # "//healthz" is not a path we serve: 404, not a redirect
    app.extensions["offboard"] = services

    from connector.web import health, hubspot, pages, salesforce, webhooks

    for blueprint in (health.bp, webhooks.bp, hubspot.bp, salesforce.bp, pages.bp):
        app.register_blueprint(blueprint)
    _register_errors(app)
    app.before_request(_bounded_stream)
    app.after_request(_security_headers)
    return app


def _bounded_stream() -> None:
    """A body sent without Content-Length (chunked) is read here, one byte past the limit at most.

    Werkzeug stops such a stream at MAX_CONTENT_LENGTH without an error, so an endpoint
    would get the first megabyte as if it were the whole body. Over the limit: 413,
    the rest unread. Within it: the endpoints read the buffered body as usual.
    (With a Content-Length, werkzeug refuses an oversized body before reading any of it.)
    """
    environ = request.environ
    if request.content_length is not None or "wsgi.input_terminated" not in environ:
        return
    stream, chunks, size = environ["wsgi.input"], [], 0
    while size <= MAX_BODY_BYTES:
        chunk = stream.read(min(64 * 1024, MAX_BODY_BYTES + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if size > MAX_BODY_BYTES:
        raise RequestEntityTooLarge()
    environ["wsgi.input"] = io.BytesIO(b"".join(chunks))


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
    if response.mimetype == "text/html" or request.path.startswith(("/s/", "/r/")):
        headers["Cache-Control"] = "no-store"  # personal pages and what their links answer
    return response


def services() -> Services:
    found: Services = current_app.extensions["offboard"]
    return found


def http_reason(exc: HTTPException) -> str:
    """What an HTTP-level refusal (404, 405, 413…) says to the sender."""
    if exc.code == 413:
        return f"body is larger than {MAX_BODY_BYTES} bytes"
    return exc.description or exc.name


def http_headers(exc: HTTPException) -> list[tuple[str, str]]:
    """The exception's own headers (a 405's Allow), without its HTML content type."""
    return [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]


def _register_errors(app: Flask) -> None:
    @app.errorhandler(WebhookRejected)
    def _rejected(exc: WebhookRejected) -> tuple[dict[str, object], int]:
        log.info("rejected %s: %s", type(exc).__name__, exc.reason)
        body: dict[str, object] = {"error": exc.reason}
        if exc.details:
            body["details"] = exc.details
        return body, exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[dict[str, object], int, list[tuple[str, str]]]:
        return {"error": http_reason(exc)}, exc.code or 500, http_headers(exc)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[dict[str, object], int]:
        log.exception("unhandled error")
        return {"error": "internal error; nothing was stored"}, 500
