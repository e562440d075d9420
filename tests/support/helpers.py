"""Settings, signed events and dates that the tests build their cases from."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from connector import generic
from connector.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
BUNDLED_PLAYBOOKS = ROOT / "playbooks"
WEBHOOK_SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLXRoZS1nZW5lcmljLWVuZHBvaW50"


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def make_settings(db_url: str, **overrides: Any) -> Settings:
    """Settings for a test: the bundled playbooks, the test webhook secret, no inline retry wait."""
    values: dict[str, Any] = {
        "OFFBOARD_ENV": "test",
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_INLINE_RETRY_WAIT_SECONDS": 0,
        "OFFBOARD_RETRY_BASE_SECONDS": 60,
        "OFFBOARD_ROLES": {"finance": "finance-1", "marketing": "marketing-1"},
    }
    values.update(overrides)
    return load_settings(**values)


def deal_closed_event(deal_id: str = "D-1", **deal: Any) -> dict[str, Any]:
    """A generic deal-closed event for a won project ending 2026-12-31."""
    body: dict[str, Any] = {
        "id": f"evt-{deal_id}",
        "type": "deal.closed",
        "crm": "sandbox",
        "deal": {
            "id": deal_id,
            "name": "Acme website",
            "outcome": "won",
            "closed": True,
            "amount": 24000,
            "pipeline": "default",
            "stage": "closedwon",
            "close_date": "2026-11-20",
            "contract_type": "project",
            "contract_end": "2026-12-31",
            "owner": {"id": "owner-1", "name": "Sam Rivera"},
            "company": {"id": "company-1", "name": "Acme Corp"},
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
    body["deal"].update(deal)
    return body


def days_from_today(days: int = 0) -> str:
    """Today's date (UTC) moved by ``days``, as YYYY-MM-DD."""
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


def deal_closed_today(deal_id: str = "D-1", **deal: Any) -> dict[str, Any]:
    """``deal_closed_event`` for tests on the real clock: closing today, the contract ending in 41 days.

    The worker ignores a deal that closed more than OFFBOARD_MAX_CLOSE_AGE_DAYS ago, so a fixed
    close date would make these tests fail a month after it.
    """
    dates = {"close_date": days_from_today(), "contract_end": days_from_today(41)}
    return deal_closed_event(deal_id, **(dates | deal))


def signed(
    event: dict[str, Any] | str | bytes,
    *,
    msg_id: str | None = None,
    secret: str = WEBHOOK_SECRET,
    at: datetime | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A body and the Standard Webhooks headers that sign it."""
    if isinstance(event, dict):
        body = json.dumps(event)
        msg_id = msg_id or f"msg_{event.get('id', uuid.uuid4().hex)}"
    else:
        body = event.decode() if isinstance(event, bytes) else event
        msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    headers = generic.sign(secret, msg_id, at or datetime.now(UTC), body)
    return body.encode(), headers
