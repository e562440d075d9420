"""Runs keep the playbook they started with; this finds edits that forgot the version bump."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import ColumnElement, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from connector.playbooks.loader import LoadedPlaybook
from connector.store import Run, Store
from connector.store.tables import PlaybookVersion


def unbumped_edits(store: Store, loaded: list[LoadedPlaybook]) -> list[str]:
    """One problem per playbook whose content changed while its version did not, where runs exist.

    Runs of an account's own published version are not the folder's: an account's playbook may
    share an id and version with a file and differ from it.
    """
    query = select(Run.playbook_id, Run.playbook_version, Run.playbook_hash).distinct()
    with store.session() as session:
        if inspect(session.connection()).has_table(PlaybookVersion.__tablename__):  # else not migrated yet
            query = query.where(~_published_version())
        pinned = set(session.execute(query))
    problems = []
    for item in loaded:
        book = item.playbook
        stale = {
            h for (pid, version, h) in pinned if pid == book.id and version == book.version and h != item.hash
        }
        if stale:
            problems.append(
                f"{item.path}: version: the content changed but the version is still {book.version}, "
                f"and runs started with the old content; set version: {book.version + 1} "
                "so runs tell the two apart"
            )
    return problems


def _published_version() -> ColumnElement[bool]:
    """The run's playbook id and version are a version its account published."""
    return (
        select(PlaybookVersion.id)
        .where(
            PlaybookVersion.crm == Run.crm,
            PlaybookVersion.account == Run.account,
            PlaybookVersion.playbook_id == Run.playbook_id,
            PlaybookVersion.version == Run.playbook_version,
        )
        .exists()
    )


def check_against_database(url: str, loaded: list[LoadedPlaybook]) -> tuple[list[str], str | None]:
    """Problems, and a note when the database could not be consulted (nothing is created)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and (not parsed.database or not Path(parsed.database).exists()):
        return [], None
    store = Store.from_url(url)
    try:
        return unbumped_edits(store, loaded), None
    except SQLAlchemyError as exc:
        return [], f"runs not checked for unbumped edits: {type(exc).__name__}"
    finally:
        store.dispose()
