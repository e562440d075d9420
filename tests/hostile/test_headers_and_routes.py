"""Security headers on every answer, and no endpoint but the documented ones.

Every answer Offboard gives (pages, webhooks, errors, the stylesheet) forbids
framing and sniffing and sends no referrer; pages behind a personal link are
never stored by a cache. Paths and methods that manifest.json does not list get
a JSON 404 or 405, never a page, a redirect or a 500.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.hostile import FLOW_SECRET

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = json.loads((ROOT / "manifest.json").read_text())
DOCUMENTED = {(e["method"], e["path"]) for e in MANIFEST["endpoints"] if e["status"] == "available"}
STATIC = ROOT / "connector" / "web" / "static"


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """Headers and routes do not depend on the database: SQLite only."""
    return sqlite_url


def check_security_headers(reply: Any, what: str) -> None:
    headers = reply.headers
    csp = headers.get("Content-Security-Policy", "")
    assert "frame-ancestors 'none'" in csp and "default-src 'none'" in csp, (what, csp)
    assert headers.get("X-Frame-Options") == "DENY", what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") == "no-referrer", what


def test_every_kind_of_answer_carries_the_security_headers(client, pages):
    survey, referral = pages["survey"], pages["referral"]
    answers = {
        "healthz": client.get("/healthz"),
        "readyz": client.get("/readyz"),
        "survey page": client.get(survey),
        "referral page": client.get(referral),
        "forged link page": client.get(survey[:-4] + "AAAA"),
        "refused post page": client.post(survey, data={"score": "9"}),
        "form error page": client.post(
            survey, data={"csrf": client.get_cookie("offboard_form").value, "score": "eleven"}
        ),
        "referral error page": client.post(
            referral, data={"csrf": client.get_cookie("offboard_form").value, "email": "x"}
        ),
        "stylesheet": client.get("/static/offboard.css"),
        "generic webhook": client.post("/webhooks/generic", data=b"{}"),
        "hubspot webhook": client.post("/webhooks/hubspot", data=b"[]"),
        "outbound message": client.post("/webhooks/salesforce", data=b"<x/>"),
        "flow callout": client.post(
            "/webhooks/salesforce/flow", data=b"{", headers={"X-Offboard-Secret": FLOW_SECRET}
        ),
        "404": client.get("/nowhere"),
        "405": client.get("/webhooks/generic"),
        "413 on a token path": client.post(survey, data=b"x" * (2 << 20), content_type="text/plain"),
    }
    expected = {"survey page": 200, "referral page": 200, "forged link page": 404, "refused post page": 403}
    expected |= {
        "form error page": 400,
        "referral error page": 400,
        "stylesheet": 200,
        "413 on a token path": 413,
    }
    for what, reply in answers.items():
        check_security_headers(reply, what)
        if what in expected:
            assert reply.status_code == expected[what], (what, reply.status_code)
    for what, reply in answers.items():
        if what.endswith("page") or "token path" in what:
            assert "no-store" in reply.headers.get("Cache-Control", ""), what  # a personal link: never cached


def test_the_token_pages_cannot_be_framed_or_leak_their_link(client, pages):
    for path in pages.values():
        reply = client.get(path)
        assert reply.status_code == 200
        assert reply.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in reply.headers["Content-Security-Policy"]
        assert reply.headers["Referrer-Policy"] == "no-referrer"
        assert reply.headers["Cache-Control"] == "no-store"
        assert "form-action 'self'" in reply.headers["Content-Security-Policy"]


def test_the_routes_are_exactly_the_documented_ones(app):
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        methods = set(rule.methods or ()) - {"HEAD"}  # HEAD is GET without the body
        assert "OPTIONS" not in methods, f"{rule.rule} answers OPTIONS"
        served |= {(method, rule.rule) for method in methods}
    assert served == DOCUMENTED


def test_static_serves_the_stylesheet_and_nothing_else(client):
    assert sorted(p.name for p in STATIC.iterdir()) == ["offboard.css"]
    assert client.get("/static/offboard.css").status_code == 200
    for path in (
        "/static/",
        "/static/../__init__.py",
        "/static/..%2f__init__.py",
        "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
        "/static/..%5c..%5cmanifest.json",
        "/static/offboard.css/..",
        "/static//etc/passwd",
        "/static/%00",
    ):
        reply = client.get(path)
        assert reply.status_code == 404, (path, reply.status_code)
        check_security_headers(reply, path)


UNDOCUMENTED_PATHS = [
    "/",
    "/admin",
    "/webhooks",
    "/webhooks/",
    "/webhooks/generic/",
    "/webhooks/hubspot/",
    "/webhooks/salesforce/",
    "/webhooks/salesforce/flow/",
    "/webhooks/salesforce/flow/x",
    "/webhooks/stripe",
    "/s",
    "/s/",
    "/r/",
    "/s/a/b",
    "/r/a/b/c",
    "/healthz/",
    "//healthz",
    "/HEALTHZ",
    "/.env",
    "/.git/config",
    "/manifest.json",
    "/pyproject.toml",
    "/%00",
    "/webhooks/generic%00",
    "/" + "a" * 5000,
    "/ünï",
    "/%ff%fe",
]
OTHER_METHODS = ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]


def check_json_refusal(reply: Any, what: str) -> None:
    assert reply.status_code in (404, 405), (what, reply.status_code, reply.get_data()[:200])
    if what.split(" ", 1)[-1].startswith(("/s/", "/r/")):  # a client's page: errors are HTML too
        assert reply.mimetype == "text/html" and b"<h1>" in reply.get_data(), (what, reply.get_data()[:200])
        check_security_headers(reply, what)
        return
    assert reply.is_json, (what, reply.get_data()[:200])
    assert isinstance(reply.get_json()["error"], str) and reply.get_json()["error"].strip(), what
    check_security_headers(reply, what)


def test_undocumented_paths_answer_a_json_404(client):
    for path in UNDOCUMENTED_PATHS:
        for method in ("GET", "POST", "HEAD", *OTHER_METHODS):
            reply = client.open(path, method=method)
            assert reply.status_code == 404, (method, path[:80], reply.status_code)
            if method != "HEAD":
                check_json_refusal(reply, f"{method} {path[:80]}")


def test_undocumented_methods_on_documented_paths_answer_a_json_405(client):
    paths = {path.replace("<token>", "some-token") for _, path in DOCUMENTED}
    for path in sorted(paths):
        allowed = {
            method for method, documented in DOCUMENTED if documented.replace("<token>", "some-token") == path
        }
        for method in sorted({"GET", "POST", *OTHER_METHODS} - allowed):
            reply = client.open(path, method=method)
            check_json_refusal(reply, f"{method} {path}")
            assert reply.status_code == 405, (method, path)
            listed = {m.strip() for m in reply.headers.get("Allow", "").split(",") if m.strip()}
            assert listed - {"HEAD"} == allowed, (method, path, listed)
