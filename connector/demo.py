"""``offboard demo``: a signed sample event, sent the way a CRM would, and what it produced."""

from __future__ import annotations

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


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{url}/webhooks/generic", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_for(check: Any, timeout: float, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
