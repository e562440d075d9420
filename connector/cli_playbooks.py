"""``offboard playbooks``: tools for the playbook files themselves."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from connector.errors import PlaybookError, SettingsInvalid


@click.group()
def playbooks() -> None:
    """Tools for the playbook files."""


@playbooks.command()
@click.option("--write", is_flag=True, help="rewrite the table in the docs file instead of printing it")
@click.option(
    "--playbooks",
    "folder",
    default=None,
    type=click.Path(path_type=Path),
    help="these playbooks instead of OFFBOARD_PLAYBOOKS",
)
@click.option(
    "--docs",
    default=Path("docs/playbooks.md"),
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the file whose table --write rewrites, between its coverage-table markers",
)
def coverage(write: bool, folder: Path | None, docs: Path) -> None:
    """The table of which steps cover each line of the offboarding checklist."""
    from connector.playbooks.coverage import coverage_table, table_in, with_table
    from connector.playbooks.loader import load_all
    from connector.settings import load_settings

    try:
        loaded = load_all([folder or load_settings().playbooks])
    except SettingsInvalid as exc:
        raise click.ClickException(str(exc)) from None
    except PlaybookError as exc:
        raise click.ClickException(f"the playbooks do not load:\n{exc}") from None
    table = coverage_table(loaded)
    if not write:
        click.echo(table)
        return
    try:
        document = docs.read_text(encoding="utf-8")
        if table_in(document) == table:
            click.echo(f"{docs}: the coverage table is up to date")
            return
        docs.write_text(with_table(document, table), encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise click.ClickException(f"{docs}: {exc}") from None
    click.echo(f"{docs}: coverage table rewritten ({len(loaded)} playbooks)")


@playbooks.command("list")
@click.option(
    "--playbooks",
    "folder",
    default=None,
    type=click.Path(path_type=Path),
    help="these playbooks instead of OFFBOARD_PLAYBOOKS",
)
def list_playbooks(folder: Path | None) -> None:
    """The playbooks a server would use, and the files that do not load (exit 1 if any)."""
    from connector.playbooks.registry import PlaybookRegistry
    from connector.settings import load_settings

    registry_log = logging.getLogger("offboard.playbooks")
    registry_log.disabled = True  # the problems are listed below, once, not logged as well
    try:
        found = PlaybookRegistry(folder or load_settings().playbooks, strict=False)
    except (SettingsInvalid, PlaybookError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        registry_log.disabled = False
    for item in sorted(found.current(), key=lambda p: (-p.playbook.priority, p.id)):
        book = item.playbook
        click.echo(
            f"{book.id} v{book.version}  {book.name!r}  priority {book.priority}, "
            f"{len(book.steps)} steps  {item.path}"
        )
    if found.problems:
        click.echo("not loaded:")
        for line in found.problems:
            click.echo(f"  {line}")
        raise SystemExit(1)
