"""Everything a process needs, built once from one settings object.

Nothing is built at import time: ``build(settings)`` is called by the CLI,
``create_app`` and the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters import AdapterSet
from adapters.base import CrmAdapter
from connector.clock import Clock, utcnow
from connector.playbooks.registry import PlaybookRegistry
from connector.settings import Settings
from connector.store import Store
from connector.worker import Worker


@dataclass
class Services:
    settings: Settings
    store: Store
    playbooks: PlaybookRegistry
    # The CRM accounts' adapters: adapters["hubspot"], adapters.for_connection(crm, account).
    adapters: AdapterSet = field(default_factory=AdapterSet)
    clock: Clock = utcnow

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
    built = AdapterSet.from_settings(settings, store)
    return Services(settings=settings, store=store, playbooks=registry, adapters=built, clock=clock)
