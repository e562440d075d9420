"""Everything a process needs, built once from one settings object.

Nothing is built at import time: ``build(settings)`` is called by the CLI,
``create_app`` and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import adapters
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
    adapters: dict[str, CrmAdapter] = field(default_factory=dict)
    clock: Clock = utcnow

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


def build(settings: Settings, *, store: Store | None = None, clock: Clock = utcnow) -> Services:
    store = store or Store.from_url(settings.database_url)
    registry = PlaybookRegistry(settings.playbooks)
    built = {name: adapters.build(name, settings, store) for name in adapters.enabled(settings)}
    return Services(settings=settings, store=store, playbooks=registry, adapters=built, clock=clock)
