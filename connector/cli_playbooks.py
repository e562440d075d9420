"""``offboard playbooks``: tools for the playbook files, and each account's own playbooks.

``publish`` stores files as new versions of an account's playbooks (``--account CRM:ACCOUNT``);
``list``, ``show`` and ``history`` read them back. Problems exit 1 with one line each, naming
the file and field as ``offboard validate`` does; a malformed ``--account`` is a usage error (2).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from connector.errors import PlaybookError, SettingsInvalid

if TYPE_CHECKING:
    from connector.connections import AccountSettings
    from connector.models import Deal
    from connector.playbooks.loader import LoadedPlaybook
    from connector.playbooks.published import PublishedPlaybooks
    from connector.settings import Settings
    from connector.store import Store

ACCOUNT_HELP = "the CRM account, as CRM:ACCOUNT (e.g. hubspot:12345678)"


@click.group()
def playbooks() -> None:
    """Tools for the playbook files, and each account's own playbooks."""


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
@click.option("--account", "target", default=None, help=f"{ACCOUNT_HELP}: its own playbooks")
def list_playbooks(folder: Path | None, target: str | None) -> None:
    """The playbooks a server would use, and the files that do not load (exit 1 if any).

    With --account, the account's own playbooks: the latest version of each, when and by whom
    it was published.
    """
    if target is not None:
        _list_account(_account(target))
        return
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


@playbooks.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--account", "target", required=True, help=ACCOUNT_HELP)
@click.option("--by", default=None, help="who publishes, for the history (default: the system user)")
def publish(files: tuple[Path, ...], target: str, by: str | None) -> None:
    """Check FILES as `offboard validate` does and store each as the account's new version.

    Nothing is stored while any file has a problem. A file whose text is already the latest
    version is left as it is; a changed file needs a `version:` above the latest published.
    """
    from connector.playbooks.published import PublishedPlaybooks, read_drafts
    from connector.playbooks.roles import unmapped_roles

    crm, account = _account(target)
    settings = _settings()
    try:
        drafts = read_drafts(files)
    except PlaybookError as exc:
        _fail(exc.problems, "nothing published")
    with _store(settings) as store:
        own = _account_settings(settings, store, crm, account)
        loaded = [draft.loaded for draft in drafts]
        for line in unmapped_roles(loaded, own.roles, fallback_owner=own.fallback_owner):
            click.echo(line)  # a warning: the playbook is valid
        try:
            done = PublishedPlaybooks(store).publish(crm, account, drafts, by=by or _user())
        except PlaybookError as exc:
            _fail(exc.problems, "nothing published")
    for result in done:
        click.echo(result.line)


@playbooks.command()
@click.argument("playbook_id")
@click.option("--account", "target", required=True, help=ACCOUNT_HELP)
@click.option(
    "--version", "number", type=click.IntRange(min=1), default=None, help="this version (default: latest)"
)
def show(playbook_id: str, target: str, number: int | None) -> None:
    """The YAML of one of the account's playbooks, as published."""
    crm, account = _account(target)
    with _repository() as repository:
        found = repository.get(crm, account, playbook_id, number)
        if found is None:
            versions = [v.version for v in repository.history(crm, account, playbook_id)]
            raise click.ClickException(_missing(crm, account, playbook_id, number, versions))
    click.echo(found.source, nl=not found.source.endswith("\n"))


@playbooks.command()
@click.argument("playbook_id")
@click.option("--account", "target", required=True, help=ACCOUNT_HELP)
def history(playbook_id: str, target: str) -> None:
    """Every version of one of the account's playbooks, oldest first; the last is in use."""
    crm, account = _account(target)
    with _repository() as repository:
        versions = repository.history(crm, account, playbook_id)
    if not versions:
        raise click.ClickException(_missing(crm, account, playbook_id, None, []))
    for position, found in enumerate(versions, start=1):
        in_use = "  (in use)" if position == len(versions) else ""
        click.echo(
            f"v{found.version}  published {_when(found.published_at)} by {found.published_by}  "
            f"sha256 {found.sha256[:12]}{in_use}"
        )


def plan_playbooks(settings: Settings, deal: Deal, folder: Path | None) -> list[LoadedPlaybook]:
    """What ``offboard plan`` previews a deal against: its account's own published playbooks where
    it has any (unless ``--playbooks`` names a folder), else the deployment's folder.

    PlaybookError when they do not load. A database not created yet has no account's playbooks.
    """
    from sqlalchemy.engine import make_url

    from connector.playbooks.accounts import AccountPlaybooks
    from connector.playbooks.loader import load_all
    from connector.store import Store

    url = make_url(settings.database_url)
    missing = url.get_backend_name() == "sqlite" and (not url.database or not Path(url.database).exists())
    if folder is None and not missing:
        store = Store.from_url(settings.database_url)
        try:
            with store.read() as session:
                own = AccountPlaybooks(check_every=0).for_account(session, deal.crm, deal.account)
        finally:
            store.dispose()
        if own is not None and own.problems:
            raise PlaybookError(own.problems)
        if own is not None:
            return own.loaded
    return load_all([folder or settings.playbooks])


# --- helpers ----------------------------------------------------------------------------------


def _account(target: str) -> tuple[str, str]:
    from connector.playbooks.published import parse_account

    try:
        return parse_account(target)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--account") from None


def _settings() -> Settings:
    from connector.settings import load_settings

    try:
        return load_settings()
    except SettingsInvalid as exc:
        raise click.ClickException(str(exc)) from None


@contextmanager
def _store(settings: Settings) -> Iterator[Store]:
    """The store, migrated first (as every command that writes does)."""
    from connector.store import Store
    from connector.store.db import engine_for
    from connector.store.migrate import upgrade

    engine = engine_for(settings.database_url)
    upgrade(engine)
    engine.dispose()
    store = Store.from_url(settings.database_url)
    try:
        yield store
    finally:
        store.dispose()


@contextmanager
def _repository() -> Iterator[PublishedPlaybooks]:
    from connector.playbooks.published import PublishedPlaybooks

    with _store(_settings()) as store:
        yield PublishedPlaybooks(store)


def _account_settings(settings: Settings, store: Store, crm: str, account: str) -> AccountSettings:
    """The account's settings; a clear error when no connection to it is installed here."""
    from connector.connections import Connections

    found = Connections(store, None).get(crm, account)
    if found is None:
        raise click.ClickException(
            f"no connection to the {crm} account {account} is installed here; "
            "`offboard connections list` shows those that are"
        )
    return found.settings(settings)


def _list_account(target: tuple[str, str]) -> None:
    from connector.playbooks.published import PublishedPlaybooks

    crm, account = target
    settings = _settings()
    with _store(settings) as store:
        latest = PublishedPlaybooks(store).latest(crm, account)
        if not latest:
            _account_settings(settings, store, crm, account)  # an account not installed: say so
    if not latest:
        click.echo(
            f"{crm}:{account} has published no playbooks of its own: "
            f"its deals get the deployment's, from {settings.playbooks}"
        )
        return
    for found in latest:
        when = _when(found.published_at)
        click.echo(f"{found.playbook_id} v{found.version}  published {when} by {found.published_by}")


def _fail(problems: list[str], outcome: str) -> NoReturn:
    for line in problems:
        click.echo(line)
    click.echo(outcome, err=True)
    sys.exit(1)


def _missing(crm: str, account: str, playbook_id: str, number: int | None, versions: list[int]) -> str:
    if not versions:
        return f"{crm}:{account} has published no playbook {playbook_id!r}"
    listed = ", ".join(str(v) for v in versions)
    return f"{crm}:{account} has no version {number} of {playbook_id!r} (versions: {listed})"


def _when(value: datetime) -> str:
    return f"{value:%Y-%m-%d %H:%M} UTC"


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no user name in this environment (a container without one)
        return "cli"
