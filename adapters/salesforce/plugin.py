"""Salesforce as a plugin: its settings, its adapter per connection (org), its two endpoints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.base import Connection, CrmAdapter, CrmSettings, InboundSource, OAuthApp, Plugin
from adapters.salesforce.settings import SalesforceSettings

if TYPE_CHECKING:
    from connector.store import Store


def build(connection: Connection, store: Store) -> CrmAdapter:
    """The Salesforce adapter (checked here against the CRM port). It logs in on first use."""
    from adapters.salesforce.adapter import SalesforceAdapter

    return SalesforceAdapter.for_connection(connection)


def sources(settings: CrmSettings) -> Sequence[InboundSource]:
    from adapters.salesforce.inbound import FlowCalloutSource, OutboundMessageSource

    assert isinstance(settings, SalesforceSettings)
    return [OutboundMessageSource(settings), FlowCalloutSource(settings)]


def oauth(settings: CrmSettings) -> OAuthApp:
    from adapters.salesforce.install import app

    return app(settings)


PLUGIN = Plugin(name="salesforce", settings=SalesforceSettings, build=build, sources=sources, oauth=oauth)
