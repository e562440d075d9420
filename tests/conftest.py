"""Shared fixtures: settings, a migrated store on SQLite or Postgres, the app, a movable clock.

Postgres: ``OFFBOARD_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
names a server where the tests may create a throwaway database; it is dropped at
the end. Without a reachable server those tests skip, unless
``OFFBOARD_TEST_REQUIRE_POSTGRES=1`` (CI), where they fail instead.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from connector.services import Services, build
from connector.settings import Settings, all_variables
from connector.store import Base, Store
from connector.store.migrate import upgrade
from tests.support.helpers import Clock, make_settings
from tests.support.playbooks import exit_nps_referral

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the developer's shell, and no offboard.toml is read."""
    for name in all_variables():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OFFBOARD_CONFIG", str(tmp_path / "no-such-offboard.toml"))


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


@pytest.fixture
def exit_nps_playbooks(tmp_path: Path) -> Path:
    """A playbooks folder holding only the exit-NPS + referral playbook, every step due at once."""
    return exit_nps_referral(tmp_path / "playbooks")


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
