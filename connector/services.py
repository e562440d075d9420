"""Everything a process needs, built once from one settings object.

Nothing is built at import time: ``build(settings)`` is called by the CLI,
``create_app`` and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters import AdapterSet, environment_connections, installed_lookup
from adapters import build as build_adapter
from adapters.base import CrmAdapter
from connector.clock import Clock, utcnow
from connector.keyring import Keyring
from connector.playbooks.registry import PlaybookRegistry
from connector.settings import Settings
from connector.store import Store
from connector.tokens import TokenKeeper
from connector.worker import Worker


@dataclass
class Services:
    settings: Settings
    store: Store
    playbooks: PlaybookRegistry
    # The CRM accounts' adapters: adapters["hubspot"], adapters.for_connection(crm, account).
    adapters: AdapterSet = field(default_factory=AdapterSet)
    clock: Clock = utcnow
    # The installed accounts' tokens (None while OFFBOARD_ENCRYPTION_KEYS is unset: installs off).
    tokens: TokenKeeper | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, as_adapter_set(value) if name == "adapters" else value)

    def worker(self, worker_id: str | None = None) -> Worker:
        return Worker(
            self.settings,
            self.store,
            self.adapters,
            self.playbooks,
            clock=self.clock,
            worker_id=worker_id,
        )

    def close(self) -> None:
        self.store.dispose()


def as_adapter_set(adapters: Mapping[str, CrmAdapter]) -> AdapterSet:
    """The set itself, or ready adapters by CRM name (a test's) as one."""
    return adapters if isinstance(adapters, AdapterSet) else AdapterSet.of(adapters)


def build(settings: Settings, *, store: Store | None = None, clock: Clock = utcnow) -> Services:
    store = store or Store.from_url(settings.database_url)
    registry = PlaybookRegistry(settings.playbooks)
    built, tokens = accounts(settings, store, clock)
    return Services(
        settings=settings, store=store, playbooks=registry, adapters=built, clock=clock, tokens=tokens
    )


def accounts(
    settings: Settings, store: Store, clock: Clock = utcnow
) -> tuple[AdapterSet, TokenKeeper | None]:
    """The CRM accounts this deployment works in, and the keeper of their tokens: with installs off
    (no OFFBOARD_ENCRYPTION_KEYS), the environment's connections alone, as ever."""
    keyring = Keyring.from_settings(settings)
    if keyring is None:
        return AdapterSet.from_settings(settings, store), None
    tokens = TokenKeeper(store, keyring, settings, clock)
    return installed_adapters(settings, store, tokens), tokens


def installed_adapters(settings: Settings, store: Store, tokens: TokenKeeper) -> AdapterSet:
    """The environment's connections (built now, as without installs) and every account installed
    here, each found in the store and built on first use, with its own token source."""
    lookup = installed_lookup(settings, tokens.connections.get, tokens.token)
    found = AdapterSet(
        environment_connections(settings), build=lambda c: build_adapter(c, store), lookup=lookup
    )
    for connection in found.connections:
        found.adapter(connection)
    return found
