"""What each command builds from the settings: the store and the CRMs always, the playbooks
only for the commands that run them.

An operator's commands (runs, failed, retry, cancel, sandbox) never read a playbook, so a
broken playbook file cannot lock anyone out of them. The commands that run playbooks (worker,
sweep, demo) carry on with the files that load and name the ones that do not, as a running
server keeps going with its last good set; ``serve`` refuses to start on a broken file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adapters import AdapterSet
from connector.errors import SettingsInvalid
from connector.playbooks.registry import PlaybookRegistry
from connector.services import Services, accounts, as_adapter_set
from connector.settings import Settings, load_settings
from connector.store import Store


@dataclass
class Connections:
    """The store and the CRMs, without playbooks: enough to read and change runs and actions."""

    settings: Settings
    store: Store
    adapters: AdapterSet

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, as_adapter_set(value) if name == "adapters" else value)

    def close(self) -> None:
        self.store.dispose()


def connect(settings: Settings) -> Connections:
    """The store and every CRM account here, the environment's and those installed
    (``connector.services.build`` without playbooks)."""
    store = Store.from_url(settings.database_url)
    return Connections(settings=settings, store=store, adapters=accounts(settings, store)[0])


def for_command() -> Connections:
    """What a CRM plugin's command works with: the settings, the database migrated, the CRMs.

    Bad settings end the command with their message (a ``click.ClickException``).
    """
    import click

    from connector.store.db import engine_for
    from connector.store.migrate import upgrade

    try:
        settings = load_settings()
        engine = engine_for(settings.database_url)
        upgrade(engine)
        engine.dispose()
        return connect(settings)
    except SettingsInvalid as exc:
        raise click.ClickException(str(exc)) from None


def with_playbooks(connections: Connections, registry: PlaybookRegistry) -> Services:
    """Everything a worker needs: the connections and these playbooks."""
    return Services(
        settings=connections.settings,
        store=connections.store,
        playbooks=registry,
        adapters=connections.adapters,
    )
