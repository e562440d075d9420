"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint

from connector.web import services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[dict[str, object], int]:
    return {"status": "ok"}, 200


@bp.get("/readyz")
def readyz() -> tuple[dict[str, object], int]:
    found = services()
    database = found.store.ping()
    playbooks = [p.id for p in found.playbooks.current()]
    ready = database and bool(playbooks)
    body: dict[str, object] = {
        "status": "ready" if ready else "not ready",
        "database": "ok" if database else "unreachable",
        "playbooks": playbooks,
        "crms": sorted(found.adapters),
    }
    if found.playbooks.last_error:
        body["playbook_errors"] = found.playbooks.last_error.splitlines()
    return body, 200 if ready else 503
