"""``offboard connections``: the CRM accounts installed here, their settings, removing them.

No token is ever printed: a listing says whether each is set and when the access token
expires. Bad input (an unknown setting, a malformed value, ``KEY`` without ``=VALUE``) is a
usage error (exit 2); an account with no connection exits 1.
"""

from __future__ import annotations

from datetime import datetime

import click

from connector.connections import (
    KNOWN_KEYS,
    ConfigInvalid,
    ConnectionMissing,
    Connections,
    StoredConnection,
)
from connector.errors import SettingsInvalid
from connector.keyring import EncryptionOff, Keyring, SecretUnreadable


def _connections() -> Connections:
    """The store (migrated) and the keyring, from the settings."""
    from connector.settings import load_settings
    from connector.store import Store
    from connector.store.db import engine_for
    from connector.store.migrate import upgrade

    try:
        settings = load_settings()
    except SettingsInvalid as exc:
        raise click.ClickException(str(exc)) from None
    engine = engine_for(settings.database_url)
    upgrade(engine)
    engine.dispose()
    return Connections(Store.from_url(settings.database_url), Keyring.from_settings(settings))


def _when(value: datetime | None) -> str:
    return "-" if value is None else f"{value:%Y-%m-%d %H:%M} UTC"


def _token_state(connection: StoredConnection) -> str:
    if not connection.has_access_token:
        return "no token"
    expires = f", expires at {_when(connection.token_expires_at)}" if connection.token_expires_at else ""
    return f"token set{expires}"


def _status(connection: StoredConnection) -> str:
    reason = f" ({connection.status_reason})" if connection.status_reason else ""
    return f"{connection.status}{reason}"


def summary_line(connection: StoredConnection) -> str:
    by = f" by {connection.installed_by}" if connection.installed_by else ""
    return (
        f"{connection.crm}  {connection.account}  {_status(connection)}  "
        f"installed {_when(connection.installed_at)}{by}  {_token_state(connection)}"
    )


def detail_lines(connection: StoredConnection) -> list[str]:
    """Everything stored about a connection except the tokens themselves."""
    expires = _when(connection.token_expires_at) if connection.token_expires_at else "unknown"
    lines = [
        f"{connection.crm} account {connection.account}",
        f"  status          {_status(connection)}",
        f"  installed       {_when(connection.installed_at)}"
        + (f" by {connection.installed_by}" if connection.installed_by else ""),
        f"  updated         {_when(connection.updated_at)}",
        f"  scopes          {', '.join(connection.scopes) or '-'}",
        f"  access token    {'set, expires at ' + expires if connection.has_access_token else 'none'}",
        f"  refresh token   {'set' if connection.has_refresh_token else 'none'}",
    ]
    if connection.instance_url:
        lines.append(f"  instance        {connection.instance_url}")
    settings = _settings_lines(connection)
    lines.append("  settings        " + (settings[0] if settings else "none: the environment's values"))
    lines.extend(f"                  {line}" for line in settings[1:])
    return lines


def _settings_lines(connection: StoredConnection) -> list[str]:
    config = connection.config
    lines = [f"role.{name}={user}" for name, user in sorted(config.roles.items())]
    for key, value in config.model_dump(exclude={"roles"}, exclude_none=True).items():
        lines.append(f"{key}={value}")
    return lines


def _missing(exc: ConnectionMissing) -> click.ClickException:
    return click.ClickException(f"{exc}; `offboard connections list` shows the connections stored here")


@click.group(invoke_without_command=True)
@click.pass_context
def connections(ctx: click.Context) -> None:
    """The CRM accounts installed here (by OAuth): list, show, set, remove, rotate-keys.

    With no command: the list.
    """
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_connections)


@connections.command("list")
def list_connections() -> None:
    """One line per connection: CRM, account, status, who installed it, when its token expires."""
    found = _connections().list_all()
    if not found:
        click.echo("no connections yet: install the app from /install/hubspot or /install/salesforce")
    for connection in found:
        click.echo(summary_line(connection))


@connections.command()
@click.argument("crm")
@click.argument("account")
@click.option(
    "--inbound-url",
    is_flag=True,
    help="also print the account's own webhook URL (a Salesforce org's outbound-message URL, key included)",
)
def show(crm: str, account: str, inbound_url: bool) -> None:
    """One connection in full (its tokens only as "set" and their expiry)."""
    connection = _connections().get(crm, account)
    if connection is None:
        raise _missing(ConnectionMissing(crm, account))
    for line in detail_lines(connection):
        click.echo(line)
    if inbound_url:
        from connector.installs import inbound_key
        from connector.settings import load_settings

        settings = load_settings()
        public = settings.public_url.rstrip("/")
        if crm != "salesforce":
            click.echo(f"inbound URL: {public}/webhooks/{crm} (one for every account)")
            return
        key = inbound_key(settings.secret_key.get_secret_value(), crm, account)
        click.echo(f"inbound URL: {public}/webhooks/salesforce?org={account}&key={key}")


def _pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        key, equals, setting = value.partition("=")
        if not equals or not key.strip():
            raise click.UsageError(
                f"{value!r}: expected KEY=VALUE (an empty VALUE unsets it); "
                f"the keys are: {', '.join(KNOWN_KEYS)}"
            )
        pairs.append((key.strip(), setting))
    return pairs


@connections.command("set")
@click.argument("crm")
@click.argument("account")
@click.argument("settings", nargs=-1, required=True, metavar="KEY=VALUE...")
def set_settings(crm: str, account: str, settings: tuple[str, ...]) -> None:
    """Set an account's own settings, all or none (KEY= with no value goes back to the environment's).

    Keys: role.<name>=<CRM user id>, time_zone, contract_type_property, contract_end_property,
    fallback_owner, brand_name, brand_logo_url, brand_reply_to.
    """
    pairs = _pairs(settings)
    try:
        connection = _connections().configure(crm, account, pairs, actor="cli")
    except ConnectionMissing as exc:
        raise _missing(exc) from None
    except ConfigInvalid as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{crm} account {account}: {len(pairs)} setting(s) saved")
    for line in _settings_lines(connection) or ["(no settings of its own: the environment's values)"]:
        click.echo(f"  {line}")


@connections.command()
@click.argument("crm")
@click.argument("account")
@click.option("--purge", is_flag=True, help="also delete every row of the account (runs, events, answers…)")
@click.option("--yes", is_flag=True, help="do not ask before purging")
def remove(crm: str, account: str, purge: bool, yes: bool) -> None:
    """Delete an account's tokens; with --purge, every row of that account too (erasure).

    Without --purge the connection stays listed as removed, with its runs and history,
    until the app is installed again.
    """
    repository = _connections()
    if repository.get(crm, account) is None:
        raise _missing(ConnectionMissing(crm, account))
    if purge and not yes:
        click.confirm(
            f"Delete every row of {crm} account {account} (its connection, runs, actions, events, "
            "answers, referrals and audit entries)? This cannot be undone",
            abort=True,
        )
    try:
        removal = repository.remove(crm, account, purge=purge, actor="cli")
    except ConnectionMissing as exc:
        raise _missing(exc) from None
    if not purge:
        click.echo(
            f"{crm} account {account}: tokens deleted; its runs and history stay (--purge deletes them). "
            "Installing the app again reconnects it."
        )
        return
    counted = ", ".join(f"{count} {table}" for table, count in removal.rows.items()) or "no rows"
    click.echo(f"{crm} account {account} purged: {counted} deleted")


@connections.command("rotate-keys")
def rotate_keys() -> None:
    """Seal every stored token again with the first key of OFFBOARD_ENCRYPTION_KEYS.

    Put the new key first in OFFBOARD_ENCRYPTION_KEYS for every web and worker process (they then
    seal with it and still open the old tokens), run this, then drop the old keys.
    """
    try:
        count = _connections().rotate_keys(actor="cli")
    except (EncryptionOff, SecretUnreadable) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"{count} secret(s) sealed again with the first key of OFFBOARD_ENCRYPTION_KEYS; "
        "the other keys may now be removed from it"
    )
