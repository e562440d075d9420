"""Shared fixtures: settings, a migrated store on SQLite or Postgres, the app, a movable clock.

Postgres: ``OFFBOARD_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
names a server where the tests may create a throwaway database; it is dropped at
the end. Without a reachable server those tests skip, unless
``OFFBOARD_TEST_REQUIRE_POSTGRES=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from connector import generic
from connector.services import Services, build
from connector.settings import Settings, all_variables, load_settings
from connector.store import Base, Store
from connector.store.migrate import upgrade

ROOT = Path(__file__).resolve().parent.parent
BUNDLED_PLAYBOOKS = ROOT / "playbooks"
WEBHOOK_SECRET = "whsec_dGVzdC1zZWNyZXQtZm9yLXRoZS1nZW5lcmljLWVuZHBvaW50"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's shell, and no offboard.toml is read."""
    for name in all_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OFFBOARD_CONFIG", str(tmp_path / "no-such-offboard.toml"))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 20, 15, 0, tzinfo=UTC))  # a Friday


# --- Postgres ---------------------------------------------------------------


def _postgres_admin_url() -> str:
    return os.environ.get("OFFBOARD_TEST_POSTGRES_URL", DEFAULT_PG)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A throwaway database on the Postgres server, migrated once, dropped at the end."""
    admin_url = make_url(_postgres_admin_url()).set(drivername="postgresql+psycopg")
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:
        message = f"PostgreSQL not reachable at {admin_url.render_as_string(hide_password=True)}: {exc}"
        if os.environ.get("OFFBOARD_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message + " (set OFFBOARD_TEST_POSTGRES_URL to run the Postgres tests)")
    name = f"offboard_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    store = Store.from_url(url)
    upgrade(store.engine)
    store.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate(store: Store) -> None:
    names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
    with store.engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


# --- the store ----------------------------------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each test that takes this runs on SQLite and on Postgres."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'offboard.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'offboard.db'}"


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    store = Store.from_url(db_url)
    if store.is_sqlite:
        upgrade(store.engine)
    else:
        _truncate(store)
    yield store
    store.dispose()


def make_settings(db_url: str, **overrides: Any) -> Settings:
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


@pytest.fixture
def settings(db_url: str) -> Settings:
    return make_settings(db_url)


@pytest.fixture
def services(settings: Settings, store: Store, clock: Clock) -> Iterator[Services]:
    built = build(settings, store=store, clock=clock)
    yield built


@pytest.fixture
def app(services: Services) -> Any:
    from connector.web import create_app

    app = create_app(services)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


# --- events -------------------------------------------------------------------


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
