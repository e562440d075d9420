"""CRM adapters: the only code that knows a CRM. The core reaches them through ``build``."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

KNOWN = ("sandbox", "hubspot", "salesforce")

if TYPE_CHECKING:
    from adapters.base import CrmAdapter
    from connector.settings import Settings
    from connector.store import Store


def enabled(settings: Settings) -> list[str]:
    """The CRMs these settings turn on, without importing any SDK."""
    names = ["sandbox"] if settings.sandbox_enabled else []
    if settings.hubspot_access_token is not None:
        names.append("hubspot")
    if settings.salesforce_instance_url or settings.salesforce_username or settings.salesforce_consumer_key:
        names.append("salesforce")
    return names


def build(name: str, settings: Settings, store: Store) -> CrmAdapter:
    """The adapter called ``name``: ``adapters.<name>.build(settings, store)``, SDK imported only now."""
    if name not in KNOWN:
        raise KeyError(f"no CRM adapter named {name!r} is available")
    module = importlib.import_module(f"adapters.{name}")
    adapter: CrmAdapter = module.build(settings, store)
    return adapter
