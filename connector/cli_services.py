"""What each command builds from the settings: the store and the CRMs always, the playbooks
only for the commands that run them.

An operator's commands (runs, failed, retry, cancel, sandbox) never read a playbook, so a
broken playbook file cannot lock anyone out of them. The commands that run playbooks (worker,
sweep, demo) carry on with the files that load and name the ones that do not, as a running
server keeps going with its last good set; ``serve`` refuses to start on a broken file.
"""

from __future__ import annotations

from dataclasses import dataclass

import adapters
from adapters.base import CrmAdapter
from connector.playbooks.registry import PlaybookRegistry
from connector.services import Services
from connector.settings import Settings
from connector.store import Store


@dataclass
class Connections:
    """The store and the CRMs, without playbooks: enough to read and change runs and actions."""

    settings: Settings
    store: Store
    adapters: dict[str, CrmAdapter]

    def close(self) -> None:
        self.store.dispose()


def connect(settings: Settings) -> Connections:
    """The store and every CRM the settings turn on (``connector.services.build`` without playbooks)."""
    store = Store.from_url(settings.database_url)
    built = {name: adapters.build(name, settings, store) for name in adapters.enabled(settings)}
    return Connections(settings=settings, store=store, adapters=built)


def with_playbooks(connections: Connections, registry: PlaybookRegistry) -> Services:
    """Everything a worker needs: the connections and these playbooks."""
    return Services(
        settings=connections.settings,
        store=connections.store,
        playbooks=registry,
        adapters=connections.adapters,
    )
