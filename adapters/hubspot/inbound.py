"""``POST /webhooks/hubspot``: verify (v3 only), parse, answer 204 once the batch is stored.

HubSpot gives up on an answer slower than 5 s and retries anything but a 2xx, so nothing
here calls HubSpot: each event of the batch is stored (keyed by portal and eventId, so a
redelivery stores nothing new) and the worker interprets them later.

The endpoint is on for the environment's portal (a private-app token) and for an OAuth app
(``HUBSPOT_CLIENT_ID``), whose webhooks come for every portal that installed it, each event
naming its ``portalId``. The worker sends each event to its portal's connection; an event of
a portal not installed here, or disconnected, is stored all the same and settled ``ignored``
with the reason (a portal can only be installed once ``OFFBOARD_ENCRYPTION_KEYS`` is set).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.base import Delivery, InboundEvent, InboundRequest, Refusal, Reply
from adapters.hubspot import signature, webhook
from adapters.hubspot.settings import HubSpotSettings
from connector.errors import EndpointDisabled

if TYPE_CHECKING:
    from connector.inbox import Accepted


class WebhookSource:
    path = "/webhooks/hubspot"
    source = "hubspot"

    def __init__(self, settings: HubSpotSettings) -> None:
        self.settings = settings

    def receive(self, request: InboundRequest) -> Delivery:
        secret = self.settings.client_secret
        # Empty counts as not set: a signature keyed with "" is one anybody can compute.
        if secret is None or not secret.get_secret_value():
            raise EndpointDisabled("HUBSPOT_CLIENT_SECRET is not set; this endpoint is off")
        if self.source not in request.configured and not self.settings.installable:
            raise EndpointDisabled(
                "neither HUBSPOT_ACCESS_TOKEN nor HUBSPOT_CLIENT_ID is set; events could not be processed"
            )
        body = request.read_body()
        signature.verify(
            secret.get_secret_value(),
            method=request.method,
            uri=signature.public_uri(request.public_url, request.path),
            body=body,
            headers=request.headers,
            now=request.now,
        )
        events = [InboundEvent(e.account, e.event_key, e.kind, e.payload) for e in webhook.parse(body)]
        return Delivery(events)

    def reply(self, delivery: Delivery, stored: Sequence[Accepted]) -> Reply:
        return Reply(204)

    def refused(self, refusal: Refusal) -> Reply | None:
        return None  # the core's JSON error
