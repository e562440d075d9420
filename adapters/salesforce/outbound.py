"""Outbound messages: Salesforce's SOAP notifications, parsed safely and checked against our org.

Outbound messages carry no signature and cannot carry headers, and org ids are
not secret (they appear in Web-to-Lead forms), so the URL carries the proof:
``/webhooks/salesforce?key=<SALESFORCE_OUTBOUND_KEY>``. ``verify_key`` compares
it in constant time before the body is read; nothing is stored for a request
without it. The configured org is still checked (``OrganizationId``; the
15-character prefix is compared when either side is 15 long).

The body is untrusted XML: ``defusedxml`` parses it with DTDs forbidden, so an
XML bomb or an external entity is refused before anything expands. The
``SessionId`` Salesforce may send is never stored or logged, and a message's
fields are never trusted for state: the adapter reads the Opportunity from the
org before anything starts or stops.

The listener must answer exactly ``ACK`` (HTTP 200) once the notifications are
stored; anything else and Salesforce retries for 24 hours. Refusals answer a
SOAP fault with a 4xx status, so the sender sees why.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, ParseError
from xml.sax.saxutils import escape

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from adapters.salesforce import ids
from connector.errors import EndpointDisabled, PayloadInvalid, SenderUnknown, SignatureInvalid

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_NOTIFICATIONS = 100
# An sObject's API name (``Opportunity``, ``ns__Thing__c``): it becomes the event's kind (64 characters).
_API_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")

ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">'
    b"<soapenv:Body>"
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack></notificationsResponse>'
    b"</soapenv:Body>"
    b"</soapenv:Envelope>"
)


@dataclass(frozen=True)
class Notification:
    id: str
    sobject_type: str
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.sobject_type.lower()


@dataclass(frozen=True)
class OutboundMessage:
    organization_id: str
    action_id: str | None
    notifications: list[Notification]

    @property
    def account(self) -> str:
        return ids.short(self.organization_id)


def fault(reason: str, *, client: bool = True) -> bytes:
    """A SOAP 1.1 fault carrying ``reason``: what a refused outbound message gets back."""
    code = "soapenv:Client" if client else "soapenv:Server"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP}"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>{code}</faultcode><faultstring>{escape(reason)}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    ).encode()


def verify_key(expected: str | None, given: str | None, *, for_org: bool = False) -> None:
    """EndpointDisabled without a configured key; SignatureInvalid unless ``given`` is that key.

    ``for_org``: the key of an installed org's own URL (shown when it was installed), where no
    key means the org cannot have one here. The key is compared in constant time and never
    repeated in a message.
    """
    if for_org:
        if not expected or not given or not hmac.compare_digest(given.encode(), expected.encode()):
            raise SignatureInvalid(
                "the org and key in the URL do not match the URL shown when it was installed"
            )
        return
    if not expected:
        raise EndpointDisabled("SALESFORCE_OUTBOUND_KEY is not set; outbound messages are refused")
    if not given:
        raise SignatureInvalid("the URL has no key: use /webhooks/salesforce?key=<SALESFORCE_OUTBOUND_KEY>")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise SignatureInvalid("the key in the URL does not match SALESFORCE_OUTBOUND_KEY")


def event_key(notification: Notification) -> str:
    """How a notification is stored: under a namespace only key-authenticated deliveries reach.

    Rows stored before the key was required hold the bare notification id, so
    whatever a forger stored then cannot shadow a real delivery now.
    """
    return f"om:{notification.id}"


def parse(body: bytes, org_id: str | None) -> OutboundMessage:
    """The notifications in ``body``, if it is a well-formed message from ``org_id``.

    Raises EndpointDisabled (no org configured), PayloadInvalid (not XML, an XML
    bomb, not an outbound message) or SenderUnknown (another org).
    """
    if not org_id:
        raise EndpointDisabled("SALESFORCE_ORG_ID is not set; outbound messages are refused")
    notifications = _notifications_element(_xml(body))
    organization_id = _text(notifications, "OrganizationId")
    if not organization_id or not ids.is_id(organization_id):
        raise PayloadInvalid("the outbound message has no valid OrganizationId")
    if not ids.same(organization_id, org_id):
        raise SenderUnknown(
            f"outbound message from org {organization_id}, not the configured SALESFORCE_ORG_ID"
        )
    items = notifications.findall(f"{{{OUTBOUND}}}Notification")
    if not 1 <= len(items) <= MAX_NOTIFICATIONS:
        raise PayloadInvalid(
            f"an outbound message holds 1 to {MAX_NOTIFICATIONS} notifications, not {len(items)}"
        )
    return OutboundMessage(
        organization_id=organization_id,
        action_id=_text(notifications, "ActionId"),
        notifications=[_notification(item) for item in items],
    )


def _xml(body: bytes) -> Element:
    try:
        # SOAP forbids DTDs; refusing them outright stops entity expansion and external references.
        root: Element = fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as exc:
        raise PayloadInvalid(f"unsafe XML refused ({type(exc).__name__})") from None
    except ParseError as exc:
        raise PayloadInvalid(f"body is not well-formed XML: {exc}") from None
    return root


def _notifications_element(root: Element) -> Element:
    found = root.find(f"{{{SOAP}}}Body/{{{OUTBOUND}}}notifications")
    if root.tag != f"{{{SOAP}}}Envelope" or found is None:
        raise PayloadInvalid("not an outbound message: expected a SOAP envelope holding <notifications>")
    return found


def _notification(item: Element) -> Notification:
    notification_id = _text(item, "Id")
    sobject = item.find(f"{{{OUTBOUND}}}sObject")
    if not notification_id or sobject is None:
        raise PayloadInvalid("every Notification needs an Id and an sObject")
    if not ids.is_id(notification_id):  # it keys the stored event: a record id, nothing else
        raise PayloadInvalid(f"a Notification Id must be a Salesforce id, not {notification_id[:40]!r}")
    sobject_type = (sobject.get(f"{{{XSI}}}type") or "").rpartition(":")[2]
    fields = {_local(child.tag): _value(child) for child in sobject if child.tag.startswith(f"{{{SOBJECT}}}")}
    if not _API_NAME.fullmatch(sobject_type) or not _record_id(fields.get("Id")):
        raise PayloadInvalid(f"notification {notification_id}: the sObject needs an xsi:type and an Id")
    return Notification(id=notification_id, sobject_type=sobject_type, fields=fields)


def _record_id(value: object) -> bool:
    """An Id exactly as Salesforce writes it (``ids.is_id`` lets a trailing newline through)."""
    return ids.is_id(value) and isinstance(value, str) and value == value.strip()


def _text(parent: Element, name: str) -> str | None:
    child = parent.find(f"{{{OUTBOUND}}}{name}")
    if child is None or child.get(f"{{{XSI}}}nil") == "true":
        return None
    return (child.text or "").strip() or None


def _value(element: Element) -> str | None:
    if element.get(f"{{{XSI}}}nil") == "true":
        return None
    return element.text or ""


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]
