"""Salesforce: outbound messages and Flow callouts in; Tasks, notes and field updates out.

``outbound`` and ``flow`` parse what Salesforce sends and import no SDK, so the
web layer can use them; ``build`` imports simple-salesforce only when the
adapter is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.base import CrmAdapter
    from connector.settings import Settings
    from connector.store import Store


def build(settings: Settings, store: Store) -> CrmAdapter:
    """The Salesforce adapter (checked here against the CRM port). It logs in on first use."""
    from adapters.salesforce.adapter import SalesforceAdapter

    return SalesforceAdapter.from_settings(settings)
