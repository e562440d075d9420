"""``POST /webhooks/generic``: the core's own inbound source, a deal event signed per Standard Webhooks.

Served by the receiver like every CRM plugin's sources; its events name the CRM
that holds the deal, which must be configured here.
"""

from __future__ import annotations

from collections.abc import Sequence

from adapters.base import Delivery, InboundEvent, InboundRequest, Refusal, Reply, accepted_json
from connector import generic
from connector.errors import EndpointDisabled, PayloadInvalid
from connector.inbox import Accepted
from connector.settings import Settings


class GenericSource:
    path = "/webhooks/generic"
    source = "generic"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def receive(self, request: InboundRequest) -> Delivery:
        secret = self.settings.webhook_secret
        if secret is None:
            raise EndpointDisabled("OFFBOARD_WEBHOOK_SECRET is not set; this endpoint is off")
        body = request.read_body()
        generic.verify(secret.get_secret_value(), body, dict(request.headers))
        key = generic.event_key(request.headers["webhook-id"])
        event = generic.parse(body)
        if event.crm not in request.configured:
            configured = ", ".join(sorted(request.configured)) or "none"
            raise PayloadInvalid(
                f"crm {event.crm!r} is not configured on this connector (configured: {configured})"
            )
        item = InboundEvent(
            account=event.account or "-",
            event_key=key,
            kind=event.type,
            payload=generic.as_payload(event),
        )
        return Delivery([item])

    def reply(self, delivery: Delivery, stored: Sequence[Accepted]) -> Reply:
        return accepted_json(stored)

    def refused(self, refusal: Refusal) -> Reply | None:
        return None  # the core's JSON error
