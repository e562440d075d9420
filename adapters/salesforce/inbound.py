"""Salesforce's two endpoints: outbound messages (SOAP) and Flow HTTP callouts (JSON).

``POST /webhooks/salesforce?key=<SALESFORCE_OUTBOUND_KEY>`` takes outbound
messages and answers the SOAP Ack only once every notification is stored; a
refusal is a SOAP fault (401 without the right key, 503 with no key configured,
both before the body is read). ``POST /webhooks/salesforce/flow`` takes Flow
callouts (shared secret) and answers JSON like ``/webhooks/generic``. Neither
calls Salesforce. Refusals are logged here, as a warning: an admin is setting
the org up, or someone is trying the endpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.base import Delivery, InboundEvent, InboundRequest, Refusal, Reply, accepted_json
from adapters.salesforce import flow, ids, outbound
from adapters.salesforce.records import CRM
from adapters.salesforce.settings import SalesforceSettings
from connector.errors import EndpointDisabled

if TYPE_CHECKING:
    from connector.inbox import Accepted

log = logging.getLogger("offboard.web.salesforce")

XML = "text/xml; charset=utf-8"


class OutboundMessageSource:
    path = "/webhooks/salesforce"
    source = CRM

    def __init__(self, settings: SalesforceSettings) -> None:
        self.settings = settings

    def receive(self, request: InboundRequest) -> Delivery:
        org = request.args.get("org")
        if org is not None:  # an installed org: its own URL, ?org=<org id>&key=<its key>
            outbound.verify_key(_org_key(request, org), request.args.get("key"), for_org=True)
            message = outbound.parse(request.read_body(), org)
        else:  # the environment's org
            key = self.settings.outbound_key
            outbound.verify_key(key.get_secret_value() if key else None, request.args.get("key"))
            message = outbound.parse(request.read_body(), self.settings.org_id)
        events = [
            InboundEvent(
                account=message.account,
                event_key=outbound.event_key(notification),
                kind=notification.kind,
                payload=notification.fields,
            )
            for notification in message.notifications
        ]
        return Delivery(events, reference=message.action_id)

    def reply(self, delivery: Delivery, stored: Sequence[Accepted]) -> Reply:
        fresh = sum(not a.duplicate for a in stored)
        log.info("outbound message %s: %d notification(s), %d new", delivery.reference, len(stored), fresh)
        return Reply(200, outbound.ACK, XML)

    def refused(self, refusal: Refusal) -> Reply:
        """A SOAP fault, whatever refused it (Salesforce shows it and retries)."""
        if refusal.error is not None:
            _log(refusal)
        return Reply(refusal.status, outbound.fault(refusal.reason, client=refusal.status < 500), XML)


def _org_key(request: InboundRequest, org: str) -> str | None:
    """The key an installed org's outbound-message URL carries; None when none can be (no
    installs here, or ``org`` is not an org id: the request is then refused)."""
    if request.account_key is None or not ids.is_id(org):
        return None
    return request.account_key(CRM, ids.short(org))


class FlowCalloutSource:
    path = "/webhooks/salesforce/flow"
    source = CRM

    def __init__(self, settings: SalesforceSettings) -> None:
        self.settings = settings

    def receive(self, request: InboundRequest) -> Delivery:
        org = request.args.get("org")
        if org is not None:  # an installed org: its own URL, as its outbound messages
            outbound.verify_key(_org_key(request, org), request.args.get("key"), for_org=True)
            account = ids.short(org)
        else:  # the environment's org, with the shared secret
            secret = self.settings.webhook_secret
            if secret is None:
                raise EndpointDisabled("SALESFORCE_WEBHOOK_SECRET is not set; this endpoint is off")
            flow.verify(secret.get_secret_value(), request.headers.get(flow.SECRET_HEADER))
            org_id = self.settings.org_id
            account = org_id[:15] if org_id else "-"
        callout = flow.parse(request.read_body())
        event = InboundEvent(
            account=account,
            event_key=callout.event_key,
            kind=callout.kind,
            payload=callout.payload,
        )
        return Delivery([event])

    def reply(self, delivery: Delivery, stored: Sequence[Accepted]) -> Reply:
        return accepted_json(stored)

    def refused(self, refusal: Refusal) -> Reply | None:
        """Logged; answered with the core's JSON error."""
        if refusal.error is None:
            return None
        _log(refusal)
        answer: dict[str, object] = {"error": refusal.reason}
        if refusal.details:
            answer["details"] = refusal.details
        return Reply(refusal.status, answer)


def _log(refusal: Refusal) -> None:
    log.warning("refused %s on %s (%d): %s", refusal.error, refusal.path, refusal.status, refusal.reason)
