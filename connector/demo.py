"""``offboard demo``: a signed sample event, sent the way a CRM would, and what it produced."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import date, timedelta
from typing import Any

from connector import generic
from connector.clock import utcnow


def sample_event(today: date) -> dict[str, Any]:
    """A won project for a sample client, closing today, its contract ending in 45 days."""
    suffix = uuid.uuid4().hex[:6]
    return {
        "id": f"demo-{suffix}",
        "type": "deal.closed",
        "crm": "sandbox",
        "deal": {
            "id": f"DEMO-{suffix.upper()}",
            "name": "Acme Corp — website project",
            "outcome": "won",
            "closed": True,
            "amount": 24000,
            "currency": "USD",
            "pipeline": "default",
            "stage": "closedwon",
            "close_date": today.isoformat(),
            "contract_type": "project",
            "contract_end": (today + timedelta(days=45)).isoformat(),
            "owner": {"id": "owner-1", "name": "Sam Rivera", "email": "sam@offboard.example"},
            "company": {"id": "company-1", "name": "Acme Corp", "domain": "acme.example"},
            "contacts": [
                {
                    "id": "contact-1",
                    "email": "pat@acme.example",
                    "first_name": "Pat",
                    "last_name": "Lee",
                    "primary": True,
                }
            ],
        },
    }


def signed_request(secret: str, event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event)
    return body.encode(), generic.sign(secret, f"msg_{event['id']}", utcnow(), body)


class NotAnswering(Exception):
    """No HTTP answer from the URL: refused, unreachable, timed out, or not an HTTP server."""


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> tuple[int, dict[str, Any]]:
    """POST the signed event to ``url``'s generic webhook; its status and JSON answer.

    NotAnswering when nothing answers there; ValueError for a URL that is not http(s).
    """
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"{url!r} is not an http:// or https:// URL")
    request = urllib.request.Request(f"{url}/webhooks/generic", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _json(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _json(exc.read())
    except OSError as exc:  # refused, unreachable, reset or timed out: URLError is an OSError
        raise NotAnswering(str(getattr(exc, "reason", exc))) from exc
    except http.client.HTTPException as exc:  # something listens there, but does not speak HTTP
        raise NotAnswering(f"not an HTTP server ({type(exc).__name__})") from exc


def _json(raw: bytes) -> dict[str, Any]:
    """The answer as JSON; anything else (another server on that port) as a short excerpt."""
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        value = None
    if isinstance(value, dict):
        return value
    return {"answer": raw[:200].decode("utf-8", "replace")}


def wait_for(check: Any, timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
