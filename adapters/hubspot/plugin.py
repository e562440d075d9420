"""HubSpot as a plugin: its settings, its adapter per connection, its webhook endpoint, its command."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.base import Connection, CrmAdapter, CrmSettings, InboundSource, OAuthApp, Plugin
from adapters.hubspot.settings import HubSpotSettings

if TYPE_CHECKING:
    import click

    from connector.store import Store


def build(connection: Connection, store: Store) -> CrmAdapter:
    """The adapter for the connection's portal; its rate budget is counted in ``store``, shared
    with every other process of the deployment, per portal.

    An installed portal (``connection.token``) is reached with its OAuth access token, fresh
    for each request; the environment's portal with the private-app token."""
    from adapters.hubspot.adapter import HubSpotAdapter
    from adapters.hubspot.api import HubSpotApi
    from adapters.hubspot.ratelimit import shared_limits

    settings = HubSpotSettings.of(connection.settings)
    limits = shared_limits(settings, store, account=connection.account)
    return HubSpotAdapter(settings, HubSpotApi.from_settings(settings, limits, connection.token))


def sources(settings: CrmSettings) -> Sequence[InboundSource]:
    from adapters.hubspot.inbound import WebhookSource

    assert isinstance(settings, HubSpotSettings)
    return [WebhookSource(settings)]


def commands() -> Sequence[click.Command]:
    from adapters.hubspot.cli import hubspot

    return [hubspot]


def oauth(settings: CrmSettings) -> OAuthApp:
    from adapters.hubspot.install import app

    return app(settings)


PLUGIN = Plugin(
    name="hubspot", settings=HubSpotSettings, build=build, sources=sources, commands=commands, oauth=oauth
)
