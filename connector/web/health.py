"""Liveness and readiness.

Both answer anyone (load balancers and orchestrators call them without
credentials), so they say only whether the service can work and how much it
has loaded: no playbook ids, CRM names or error text. Those details are for
operators, from the command line (``offboard playbooks list``, ``offboard connections``).
"""

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
    playbooks = len(found.playbooks.current())
    ready = database and playbooks > 0
    body: dict[str, object] = {
        "status": "ready" if ready else "not ready",
        "database": "ok" if database else "unreachable",
        "playbooks": playbooks,
        "crms": len(found.adapters),
    }
    return body, 200 if ready else 503
