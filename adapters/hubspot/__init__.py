"""HubSpot: deal-stage webhooks in, tasks, notes, properties and survey sends out.

The modules, from the outside in:

- ``plugin``     what the core finds (``PLUGIN``): settings, adapter, endpoint, command
- ``settings``   the ``HUBSPOT_*`` variables
- ``inbound``    ``POST /webhooks/hubspot``: verify, parse, answer
- ``signature``  verifies what HubSpot sends (the v3 signature, within 5 minutes)
- ``webhook``    parses a webhook body into inbox events, and an event into a stage change
- ``adapter``    the CRM port (and ``interpret``) on top of the rest
- ``stages``     which stage ids are closed, won or lost (the deal pipelines API, cached)
- ``once``       tasks and notes created once: a marker per record, searched before writing
- ``records``    HubSpot records to Offboard's deals, and Offboard's writes to HubSpot inputs
- ``api``        the few SDK calls Offboard makes, rate-limited, errors translated (``errors``)
- ``ratelimit``  the account's budget those calls share, across every process
- ``setup``      the custom properties Offboard writes (``offboard hubspot setup``, ``cli``)

The SDK is imported only by ``api`` (and so by ``adapter``), never to serve webhooks.
"""

from __future__ import annotations

from adapters.hubspot.plugin import PLUGIN

__all__ = ["PLUGIN"]
