"""Alembic environment: the engine comes from ``connector.store.migrate``, never from a file."""

from __future__ import annotations

from alembic import context

import adapters
import connector.store.tables  # noqa: F401
from connector.store.db import Base

adapters.load_tables()  # the CRM plugins' own tables (the sandbox's) join the metadata
config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
