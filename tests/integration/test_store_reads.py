"""Read transactions: on SQLite they never take the write lock; on Postgres they cannot write."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy import func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from connector.store import Action, Event, Run
from tests.support.helpers import deal_closed_event, signed


def other_writer(url: str) -> sqlite3.Connection:
    """A second connection that gives up at once if the write lock is taken."""
    connection = sqlite3.connect(str(make_url(url).database), timeout=0, isolation_level=None)
    connection.execute("PRAGMA busy_timeout=0")
    return connection


def test_a_read_session_leaves_the_write_lock_free(sqlite_url, store_on):
    store = store_on(sqlite_url)
    writer = other_writer(sqlite_url)
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Run)) == 0
        writer.execute("BEGIN IMMEDIATE")  # would raise "database is locked" if the read held it
        writer.execute("ROLLBACK")
    with store.session() as session:
        session.scalar(select(func.count()).select_from(Run))
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            writer.execute("BEGIN IMMEDIATE")  # a write session does hold it, from its start
    writer.close()


def test_a_webhook_is_stored_while_a_report_reads(sqlite_url, store_on, client_on):
    store = store_on(sqlite_url)
    client = client_on(store)
    with store.read() as session:
        session.scalar(select(func.count()).select_from(Action))
        body, headers = signed(deal_closed_event("D-9"))
        assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 1


@pytest.mark.postgres
def test_a_read_session_cannot_write_on_postgres(postgres_url, store_on):
    store = store_on(postgres_url)
    with pytest.raises(DBAPIError, match="read-only transaction"), store.read() as session:
        session.execute(update(Run).where(Run.id == -1).values(note="x"))
    with store.session() as session:  # the pooled connection is a writer again afterwards
        session.execute(update(Run).where(Run.id == -1).values(note="x"))


@pytest.fixture
def store_on(tmp_path):
    from connector.store import Store
    from connector.store.migrate import upgrade

    made = []

    def make(url: str) -> Store:
        store = Store.from_url(url)
        upgrade(store.engine)
        made.append(store)
        return store

    yield make
    for store in made:
        store.dispose()


@pytest.fixture
def client_on(sqlite_url):
    from connector.services import build
    from connector.web import create_app
    from tests.support.helpers import make_settings

    def make(store):
        app = create_app(build(make_settings(sqlite_url), store=store))
        app.config["TESTING"] = True
        return app.test_client()

    return make
