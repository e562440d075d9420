"""Alembic, driven from code: ``offboard db upgrade`` and every command that opens the store call ``upgrade``.

An up-to-date database is the usual case, so ``upgrade`` first looks (in a read
transaction, taking no write lock) and does nothing, silently, when there is
nothing to apply. When it does apply migrations it says which, one line each,
and keeps Alembic's own start-up chatter (plugin set-up, dialect notes) quiet.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from connector.store.db import READ_ONLY

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
log = logging.getLogger("offboard.store")


def alembic_config(engine: Engine) -> Config:
    with _alembic_quiet():  # importing Alembic logs its plugin set-up
        from alembic.config import Config
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def pending(engine: Engine, revision: str = "head") -> list[str]:
    """The migrations ``upgrade`` would apply, oldest first, as "rev: message" lines."""
    with _alembic_quiet():
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        script = ScriptDirectory.from_config(alembic_config(engine))
        with engine.execution_options(**{READ_ONLY: True}).connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
        steps = list(script.iterate_revisions(revision, heads or "base"))
    return [f"{step.revision}: {step.doc}" for step in reversed(steps)]


def upgrade(engine: Engine, revision: str = "head") -> list[str]:
    """Apply what is missing; return the migrations applied (empty, and silent, when none are)."""
    todo = pending(engine, revision)
    if not todo:
        return []
    with _alembic_quiet():
        from alembic import command

        command.upgrade(alembic_config(engine), revision)
    for line in todo:
        log.info("database migrated: %s", line)
    return todo


def current(engine: Engine) -> str | None:
    with _alembic_quiet(), engine.execution_options(**{READ_ONLY: True}).connect() as connection:
        from alembic.runtime.migration import MigrationContext

        return MigrationContext.configure(connection).get_current_revision()


@contextmanager
def _alembic_quiet() -> Iterator[None]:
    """Alembic logs its set-up at INFO on every run; what was applied is logged by ``upgrade``."""
    logger = logging.getLogger("alembic")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
