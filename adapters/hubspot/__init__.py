"""HubSpot: deal-stage webhooks in, tasks, notes, properties and survey sends out.

The modules, from the outside in:

- ``signature``  verifies what HubSpot sends (the v3 signature, within 5 minutes)
- ``webhook``    parses a webhook body into inbox events, and an event into a stage change
- ``adapter``    the CRM port (and ``interpret``) on top of the rest
- ``stages``     which stage ids are closed, won or lost (the deal pipelines API, cached)
- ``once``       tasks and notes created once: a marker per record, searched before writing
- ``records``    HubSpot records to Offboard's deals, and Offboard's writes to HubSpot inputs
- ``api``        the few SDK calls Offboard makes, rate-limited, errors translated (``errors``)
- ``ratelimit``  the process-wide budget those calls share
- ``setup``      the custom properties Offboard writes (``offboard hubspot setup``)

The SDK is imported only by ``api`` (and so by ``adapter``), never by the web layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adapters.hubspot.adapter import HubSpotAdapter
    from connector.settings import Settings
    from connector.store import Store

__all__ = ["build"]


def build(settings: Settings, store: Store) -> HubSpotAdapter:
    """The adapter for HUBSPOT_ACCESS_TOKEN's account, sharing the process's rate limits."""
    from adapters.hubspot.adapter import HubSpotAdapter
    from adapters.hubspot.api import HubSpotApi
    from adapters.hubspot.ratelimit import shared_limits

    return HubSpotAdapter(settings, HubSpotApi.from_settings(settings, shared_limits(settings)))
