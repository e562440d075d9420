"""The migrations build exactly the tables the code declares, on SQLite and Postgres."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import adapters.sandbox.tables  # noqa: F401
from connector.store import Base
from connector.store.migrate import current, upgrade


def test_migrations_match_the_models(store):
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
    assert current(store.engine) is not None


def test_upgrade_twice_is_harmless(store):
    from alembic.script import ScriptDirectory

    from connector.store.migrate import alembic_config

    upgrade(store.engine)
    upgrade(store.engine)
    assert (
        current(store.engine) == ScriptDirectory.from_config(alembic_config(store.engine)).get_current_head()
    )
