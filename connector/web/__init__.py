"""The Flask app factory: verify, store, answer fast. No CRM calls happen here.

The app writes its own access log (logger ``offboard.access``, one line per
request, link tokens and keys redacted by ``connector.logs``) whatever server
runs it, and counts every webhook answer for ``/metrics``. Under /s/ and /r/
(pages a client reads) every error is an HTML page; elsewhere errors are JSON.
"""

from __future__ import annotations

import functools
import io
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Request, Response, current_app, request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.wrappers import Request as BaseRequest
from werkzeug.wrappers import Response as BaseResponse

from connector.errors import WebhookRejected
from connector.logs import redact_path
from connector.services import Services
from connector.web import brand
from connector.web.brand import logo_origin

MAX_BODY_BYTES = 1024 * 1024
log = logging.getLogger("offboard.web")
access_log = logging.getLogger("offboard.access")
CLIENT_PAGES = ("/s/", "/r/")
WEBHOOK_PATHS = "offboard.webhook_paths"  # the app's extension: the paths its sources receive on


def create_app(services: Services) -> Flask:
    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,
        SECRET_KEY=services.settings.secret_key.get_secret_value(),
        JSON_SORT_KEYS=False,
        # Only the documented methods answer: no automatic OPTIONS (405 instead; Flask >= 3.1).
        PROVIDE_AUTOMATIC_OPTIONS=False,
    )
    app.session_interface = _Sessions()
    app.url_map.merge_slashes = False  # "//healthz" is not a path we serve: 404, not a redirect
    app.extensions["offboard"] = services

    from connector.web import health, install, metrics, pages, receiver

    webhooks = receiver.Receiver(app, services, receiver.sources(services))  # every source, one receiver
    for blueprint in (health.bp, metrics.bp, webhooks.blueprint(), pages.bp, install.bp):
        app.register_blueprint(blueprint)
    _register_errors(app)
    app.before_request(lambda: bounded_stream(request))
    app.after_request(_security_headers)
    app.wsgi_app = AccessLog(webhooks.wsgi(app.wsgi_app))  # type: ignore[method-assign]
    app.extensions[WEBHOOK_PATHS] = frozenset(webhooks.by_path)  # answered by the server's front (serve.py)
    return app


class _Sessions(SecureCookieSessionInterface):
    """Flask's cookie session, not opened for a webhook: no CRM sends a cookie, and opening
    one builds a signer on every delivery."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith("/webhooks/"):
            return self.make_null_session(app)
        return super().open_session(app, request)


class AccessLog:
    """One line per request on ``offboard.access``: who, what, the answer, how long (paths redacted)."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        seen: dict[str, str] = {}

        def _start(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            seen["status"] = status.split(" ", 1)[0]
            seen["length"] = next((v for k, v in headers if k.lower() == "content-length"), "-")
            return start_response(status, headers, *args)

        try:
            return self.app(environ, _start)
        finally:
            self._line(environ, seen, time.perf_counter() - started)

    @staticmethod
    def _line(environ: dict[str, Any], seen: dict[str, str], seconds: float) -> None:
        query = environ.get("QUERY_STRING", "")
        path = redact_path(environ.get("PATH_INFO", "") + (f"?{query}" if query else ""))
        fields = {
            "remote_addr": environ.get("REMOTE_ADDR", "-"),
            "method": environ.get("REQUEST_METHOD", "-"),
            "path": path,
            "status": int(seen.get("status", "500")),
            "length": seen.get("length", "-"),
            "duration_ms": round(seconds * 1000, 1),
        }
        access_log.info(
            '%s "%s %s" %s %s %.1fms',
            fields["remote_addr"],
            fields["method"],
            path,
            fields["status"],
            fields["length"],
            fields["duration_ms"],
            extra=fields,
        )


def bounded_stream(request: BaseRequest) -> None:
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
    # The logo host of the brand this answer shows: a link page's account's, else the deployment's.
    security_headers(response, request.path, brand.current(services().settings).logo_url)
    return response


def security_headers(response: BaseResponse, path: str, logo_url: str | None) -> None:
    """Pages cannot be framed or leak their personal link; nothing is sniffed or cached."""
    headers = response.headers
    for name, value in security_header_list(
        response.mimetype == "text/html" or path.startswith(CLIENT_PAGES), logo_url
    ):
        if name == "Cache-Control":
            headers[name] = value  # personal pages and what their links answer
        else:
            headers.setdefault(name, value)


@functools.lru_cache(maxsize=512)
def security_header_list(no_store: bool, logo_url: str | None) -> tuple[tuple[str, str], ...]:
    """The headers ``security_headers`` adds: worked out once per kind of answer and logo."""
    found = (
        ("X-Content-Type-Options", "nosniff"),
        ("Referrer-Policy", "no-referrer"),
        ("X-Frame-Options", "DENY"),
        ("Content-Security-Policy", _content_policy(logo_url)),
    )
    return (*found, ("Cache-Control", "no-store")) if no_store else found


@functools.lru_cache(maxsize=256)  # one per brand logo: the deployment's and each account's
def _content_policy(logo_url: str | None) -> str:
    """The pages' Content-Security-Policy: images from our origin, and the brand's logo's if set.
    (Worked out once per logo setting, not per answer.)"""
    logo = logo_origin((logo_url or "").strip())
    return (
        f"default-src 'none'; style-src 'self'; img-src 'self'{' ' + logo if logo else ''}; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )


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


def rejected_answer(exc: WebhookRejected) -> tuple[dict[str, object], int]:
    """The JSON error a refused inbound request gets (logged)."""
    log.info("rejected %s: %s", type(exc).__name__, exc.reason)
    body: dict[str, object] = {"error": exc.reason}
    if exc.details:
        body["details"] = exc.details
    return body, exc.status


def http_answer(exc: HTTPException) -> Any:
    """An HTTP-level refusal (404, 405, 413…): an HTML page under the client pages, JSON elsewhere."""
    status = exc.code or 500
    if request.path.startswith(CLIENT_PAGES):
        detail = http_reason(exc) if status == 413 else None  # the limit, in bytes
        return _client_error(status, detail), status, http_headers(exc)
    return {"error": http_reason(exc)}, status, http_headers(exc)


def _register_errors(app: Flask) -> None:
    app.register_error_handler(WebhookRejected, rejected_answer)
    app.register_error_handler(HTTPException, http_answer)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error")
        if request.path.startswith(CLIENT_PAGES):
            return _client_error(500), 500
        return {"error": "internal error; nothing was stored"}, 500


def _client_error(status: int, detail: str | None = None) -> Response:
    from connector.web.pages import error_page

    return error_page(status, detail)
