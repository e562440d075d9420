"""Every inbound webhook parser, fed arbitrary and near-valid bodies that reach it (validly signed).

For each request: never a 5xx; a 4xx says why (a JSON ``error``, or a SOAP fault
with a ``faultstring``) and stores nothing in any table; a 2xx stores exactly
what the parser read, complete and valid. Runs on SQLite and Postgres (which
refuses ``\\u0000``, NaN and over-long keys that SQLite would take).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from xml.etree.ElementTree import fromstring as parse_xml
from xml.sax.saxutils import escape, quoteattr

from hypothesis import event as statistic
from hypothesis import example, given
from hypothesis import strategies as st

from adapters.hubspot import webhook
from adapters.hubspot.signature import sign_v3
from adapters.salesforce import flow, outbound
from connector import generic
from tests.support.helpers import WEBHOOK_SECRET, deal_closed_event
from tests.support.hostile import FLOW_SECRET, HOSTILE, Tables, strict_json
from tests.support.hubspot import CLIENT_SECRET, stage_event
from tests.support.salesforce import ORG_ID, OUTBOUND_PATH, outbound_message
from tests.support.strategies import CONTENT_TYPES, hostile_text, json_bodies, noisy

OPPORTUNITY = "0065g00000AbCdEAAZ"
NOTIFICATION = "04l5g0000000001AAA"
INBOX_ONLY = {"events"}  # the only table a webhook may write
SALESFORCE_ID = re.compile(r"[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?")


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON: Postgres keeps numbers as decimals, so ``3.6e+16`` may come back as an int."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    numbers = (int, float)
    if (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return Decimal(repr(a)) == Decimal(repr(b))
    return type(a) is type(b) and a == b


def check_refusal(reply: Any, tables: Tables, before: Any, *, soap: bool = False) -> None:
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.get_data()[:500])
    if soap:
        assert reply.mimetype == "text/xml", reply.get_data()[:300]
        fault = parse_xml(reply.get_data())
        reason = fault.findtext(".//faultstring")
        assert reason and reason.strip(), reply.get_data()
    else:
        assert reply.is_json, reply.get_data()[:300]
        reason = reply.get_json()["error"]
        assert isinstance(reason, str) and reason.strip()
    assert tables.changed(before) == [], "a refused request left rows behind"


def check_accepted(reply: Any, tables: Tables, before: Any) -> list[dict[str, Any]]:
    assert 200 <= reply.status_code < 300, (reply.status_code, reply.get_data()[:500])
    assert set(tables.changed(before)) <= INBOX_ONLY
    stored = tables.added(before, "events")
    for row in stored:
        strict_json(row["payload"])
        assert row["state"] == "pending" and row["attempts"] == 0
        for column, limit in (("source", 32), ("account", 64), ("event_key", 255), ("kind", 64)):
            assert isinstance(row[column], str) and 0 < len(row[column]) <= limit, (column, row[column])
    return stored


# --- the generic endpoint (Standard Webhooks) ---------------------------------------------------


def sign_generic(body: bytes, msg_id: str, at: datetime) -> dict[str, str]:
    """Standard Webhooks headers over the raw bytes (so invalid UTF-8 is signed too)."""
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_") + "==")
    timestamp = str(int(at.timestamp()))
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }


header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300
)
msg_ids = st.one_of(
    st.just("msg_2mXy7hTq"), st.sampled_from(["x" * 256, "m" * 255, "msg id", "é"]), header_text
)


@HOSTILE
@given(body=json_bodies(deal_closed_event()), msg_id=msg_ids, content_type=st.sampled_from(CONTENT_TYPES))
@example(body=json.dumps(deal_closed_event()).encode(), msg_id="msg_valid", content_type="application/json")
@example(body=b"1" * 5000, msg_id="msg_bigint", content_type="application/json")
@example(body=b"[" * 3000 + b"]" * 3000, msg_id="msg_deep", content_type="application/json")
@example(body=b'{"a": 1e999}', msg_id="msg_inf", content_type="application/json")
@example(
    body=json.dumps(deal_closed_event(id="\x00")).encode(), msg_id="msg_nul", content_type="application/json"
)
@example(body=json.dumps(deal_closed_event()).encode(), msg_id="m" * 256, content_type="application/json")
@example(body=json.dumps(deal_closed_event("D" * 65)).encode(), msg_id="msg_long_id", content_type="")
def test_generic_endpoint_never_fails_and_never_stores_garbage(client, tables, body, msg_id, content_type):
    headers = sign_generic(body, msg_id, datetime.now(UTC)) | {"Content-Type": content_type}
    before = tables.snapshot()
    reply = client.post("/webhooks/generic", data=body, headers=headers)
    statistic(f"HTTP {reply.status_code}")
    try:
        if reply.status_code >= 300:
            check_refusal(reply, tables, before)
            return
        (row,) = check_accepted(reply, tables, before)
        event = generic.parse(body)
        assert (row["source"], row["event_key"], row["kind"]) == ("generic", msg_id, event.type)
        assert same_json(row["payload"], generic.as_payload(event))
        generic.GenericEvent.model_validate(row["payload"])
    finally:
        tables.reset()


# --- HubSpot ---------------------------------------------------------------------------------


def hubspot_bases() -> st.SearchStrategy[Any]:
    batch = [stage_event("700", "closedwon", event_id=1), stage_event("701", "closedlost", event_id=2)]
    return st.sampled_from([batch, batch[:1], batch[0], [batch[0], batch[0]]])


@st.composite
def hubspot_bodies(draw: st.DrawFn) -> bytes:
    return draw(json_bodies(draw(hubspot_bases())))


@HOSTILE
@given(body=hubspot_bodies(), content_type=st.sampled_from(CONTENT_TYPES))
@example(body=json.dumps([stage_event("700", "closedwon")]).encode(), content_type="application/json")
@example(body=b"[" + b"1" * 5000 + b"]", content_type="application/json")
@example(body=b"[" * 3000 + b"]" * 3000, content_type="application/json")
@example(body=json.dumps([stage_event("7", "x") | {"x": "\x00"}]).encode(), content_type="application/json")
@example(body=json.dumps([stage_event("7", "x") | {"eventId": 10**100}]).encode(), content_type="")
@example(body=json.dumps([stage_event("7", "x") | {"occurredAt": 10**30}]).encode(), content_type="")
@example(body=b'[{"eventId": 1, "portalId": 2, "subscriptionType": "x", "v": NaN}]', content_type="")
def test_hubspot_endpoint_never_fails_and_never_stores_garbage(client, services, tables, body, content_type):
    url = services.settings.public_url + "/webhooks/hubspot"
    now = services.clock()
    timestamp = int(now.timestamp() * 1000)
    headers = {
        "Content-Type": content_type,
        "X-HubSpot-Signature-v3": sign_v3(CLIENT_SECRET, "POST", url, body, timestamp),
        "X-HubSpot-Request-Timestamp": str(timestamp),
    }
    before = tables.snapshot()
    reply = client.post("/webhooks/hubspot", data=body, headers=headers)
    statistic(f"HTTP {reply.status_code}")
    try:
        if reply.status_code >= 300:
            check_refusal(reply, tables, before)
            return
        assert reply.status_code == 204
        stored = check_accepted(reply, tables, before)
        expected: dict[tuple[str, str], webhook.WebhookEvent] = {}
        for event in webhook.parse(body):
            expected.setdefault((event.account, event.event_key), event)  # a repeat in the batch: the first
        assert len(stored) == len(expected)
        for row in stored:
            event = expected[(row["account"], row["event_key"])]
            assert (row["source"], row["kind"]) == ("hubspot", event.kind)
            assert same_json(row["payload"], event.payload)
            (again,) = webhook.parse(json.dumps([row["payload"]]).encode())
            assert (again.account, again.event_key) == (row["account"], row["event_key"])
            webhook.stage_change(row["kind"], row["payload"])  # what the worker asks next: no exception
    finally:
        tables.reset()


HOSTILE_HEADER_VALUES = ["", "²", "1" * 5000, "-1", "1e3", "v1,", "v1,!!!", "v3", "v9", "é" * 20, " " * 3]


@HOSTILE
@given(
    headers=st.dictionaries(
        st.sampled_from(
            [
                "X-HubSpot-Signature-v3",
                "X-HubSpot-Request-Timestamp",
                "X-HubSpot-Signature",
                "X-HubSpot-Signature-Version",
                "webhook-id",
                "webhook-timestamp",
                "webhook-signature",
                "X-Offboard-Secret",
            ]
        ),
        st.one_of(st.sampled_from(HOSTILE_HEADER_VALUES), header_text),
        max_size=5,
    ),
    path=st.sampled_from(["/webhooks/hubspot", "/webhooks/generic", "/webhooks/salesforce/flow"]),
)
@example(
    headers={"X-HubSpot-Signature-v3": "x", "X-HubSpot-Request-Timestamp": "²"}, path="/webhooks/hubspot"
)
@example(
    headers={"X-HubSpot-Signature-v3": "x", "X-HubSpot-Request-Timestamp": "1" * 5000},
    path="/webhooks/hubspot",
)
def test_hostile_signature_headers_are_refused_with_a_reason(client, tables, headers, path):
    """Whatever the signature headers hold, a forged request is a 401 that says why, and stores nothing."""
    body = json.dumps([stage_event("700", "closedwon")] if "hubspot" in path else FLOW).encode()
    before = tables.snapshot()
    reply = client.post(path, data=body, headers=headers)
    statistic(f"HTTP {reply.status_code}")
    assert reply.status_code == 401, (reply.status_code, reply.get_data()[:300])
    check_refusal(reply, tables, before)


# --- Salesforce Flow callouts ------------------------------------------------------------------

FLOW = {
    "recordId": OPPORTUNITY,
    "fields": {"StageName": "Closed Won", "IsClosed": True, "IsWon": True, "Amount": 24000.5},
    "eventId": "evt-1",
}


@HOSTILE
@given(body=json_bodies(FLOW), content_type=st.sampled_from(CONTENT_TYPES))
@example(body=json.dumps(FLOW).encode(), content_type="application/json")
@example(
    body=json.dumps(FLOW | {"fields": {"Amount": "@@"}}).replace('"@@"', "1e999").encode(), content_type=""
)
@example(body=json.dumps(FLOW | {"eventId": "a\x00b"}).encode(), content_type="application/json")
@example(body=json.dumps(FLOW | {"fields": {"\ud800": 1}}).encode(), content_type="application/json")
def test_flow_endpoint_never_fails_and_never_stores_garbage(client, tables, body, content_type):
    headers = {"Content-Type": content_type, flow.SECRET_HEADER: FLOW_SECRET}
    before = tables.snapshot()
    reply = client.post("/webhooks/salesforce/flow", data=body, headers=headers)
    statistic(f"HTTP {reply.status_code}")
    try:
        if reply.status_code >= 300:
            check_refusal(reply, tables, before)
            return
        (row,) = check_accepted(reply, tables, before)
        callout = flow.parse(body)
        assert (row["source"], row["kind"], row["event_key"]) == (
            "salesforce",
            "opportunity",
            callout.event_key,
        )
        assert same_json(row["payload"], callout.payload) and SALESFORCE_ID.fullmatch(row["payload"]["Id"])
    finally:
        tables.reset()


# --- Salesforce outbound messages (SOAP) ----------------------------------------------------------

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
PROLOGS = [
    '<?xml version="1.0" encoding="UTF-8"?>\n',
    "",
    '<?xml version="1.0" encoding="UTF-16"?>\n',
    '<?xml version="1.1"?>\n',
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n',
    '<?xml version="1.0"?>\n<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n',
    '<?xml version="1.0"?>\n<!DOCTYPE foo [<!ENTITY % p SYSTEM "http://127.0.0.1:9/evil.dtd"> %p;]>\n',
    '<?xml version="1.0"?>\n<!DOCTYPE soapenv:Envelope SYSTEM "http://127.0.0.1:9/soap.dtd">\n',
    '<?xml-stylesheet href="http://127.0.0.1:9/x.xsl"?>\n',
]
ENTITY_REFS = ["&lol3;", "&xxe;", "&amp;", "&#0;", "&#x1F4A5;", "&undefined;"]


def xml_text(draw: st.DrawFn, valid: str) -> str:
    """``valid``, or hostile text (escaped, raw, an entity reference, CDATA, or nil)."""
    choice = draw(st.sampled_from(["valid"] * 40 + ["escaped", "raw", "entity", "cdata", "long", "empty"]))
    if choice == "escaped":
        return escape(draw(hostile_text()))
    if choice == "raw":
        return draw(hostile_text())
    if choice == "entity":
        return valid + draw(st.sampled_from(ENTITY_REFS))
    if choice == "cdata":
        return f"<![CDATA[{draw(hostile_text())}]]>"
    if choice == "long":
        return valid * 50
    if choice == "empty":
        return ""
    return valid


@st.composite
def notification_xml(draw: st.DrawFn, index: int) -> str:
    parts = []
    if draw(st.integers(0, 19)):
        parts.append(f"<Id>{xml_text(draw, NOTIFICATION[:-3] + f'{index:03d}')}</Id>")
    if draw(st.integers(0, 19)):
        sobject_type = xml_text(draw, "sf:Opportunity")
        fields = {"Id": OPPORTUNITY, "StageName": "Closed Won", "IsClosed": "true", "ContractId": None}
        if draw(st.booleans()):
            fields[draw(st.sampled_from(["Amount", "Type", "Name", "x-y", "A" * 100]))] = draw(hostile_text())
        inner = "".join(
            f'<sf:{name} xsi:nil="true"/>'
            if value is None
            else f"<sf:{name}>{xml_text(draw, value)}</sf:{name}>"
            for name, value in fields.items()
            if draw(st.integers(0, 19))
        )
        parts.append(
            f'<sObject xsi:type={quoteattr(sobject_type)} xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
            f"{inner}</sObject>"
        )
    return "<Notification>" + "".join(draw(st.permutations(parts))) + "</Notification>"


@st.composite
def outbound_bodies(draw: st.DrawFn) -> bytes:
    count = draw(st.sampled_from([1] * 12 + [2, 3, 0, 101]))
    notifications = [draw(notification_xml(i)) for i in range(min(count, 3))]
    if count > 3:
        notifications = (
            notifications * (count // len(notifications)) + notifications[: count % len(notifications)]
        )
    body_ns = draw(st.sampled_from(["http://soap.sforce.com/2005/09/outbound"] * 20 + ["urn:other", ""]))
    envelope_ns = draw(st.sampled_from([SOAP_NS] * 20 + ["http://www.w3.org/2003/05/soap-envelope"]))
    text = (
        draw(st.sampled_from(PROLOGS[:2] * 10 + PROLOGS))
        + f'<soapenv:Envelope xmlns:soapenv="{envelope_ns}" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>'
        + f'<notifications xmlns="{body_ns}">'
        + f"<OrganizationId>{xml_text(draw, ORG_ID)}</OrganizationId>"
        + f"<ActionId>{xml_text(draw, '04k5g000000Fake1AAA')}</ActionId>"
        + draw(st.sampled_from(['<SessionId xsi:nil="true"/>', "<SessionId>00D!secret</SessionId>", ""]))
        + "".join(notifications)
        + "</notifications></soapenv:Body></soapenv:Envelope>"
    )
    return draw(noisy(text.encode("utf-8", "surrogatepass")))


@HOSTILE
@given(body=outbound_bodies(), content_type=st.sampled_from(CONTENT_TYPES))
@example(
    body=outbound_message([(NOTIFICATION, {"Id": OPPORTUNITY, "IsClosed": True})]), content_type="text/xml"
)
@example(body=outbound_message([("x" * 300, {"Id": OPPORTUNITY})]), content_type="text/xml")
@example(body=outbound_message([(NOTIFICATION, {"Id": OPPORTUNITY + "\n"})]), content_type="text/xml")
@example(body=outbound_message([(NOTIFICATION, {"Id": OPPORTUNITY})], sobject_type="O" * 80), content_type="")
def test_outbound_endpoint_never_fails_and_never_stores_garbage(client, tables, body, content_type):
    before = tables.snapshot()
    reply = client.post(OUTBOUND_PATH, data=body, headers={"Content-Type": content_type, "SOAPAction": '""'})
    statistic(f"HTTP {reply.status_code}")
    try:
        if reply.status_code >= 300:
            check_refusal(reply, tables, before, soap=True)
            return
        assert reply.get_data() == outbound.ACK
        stored = check_accepted(reply, tables, before)
        message = outbound.parse(body, ORG_ID)
        expected = {}
        for notification in message.notifications:
            expected.setdefault(outbound.event_key(notification), notification)
        assert len(stored) == len(expected)
        for row in stored:
            notification = expected[row["event_key"]]
            assert (row["source"], row["account"]) == ("salesforce", ORG_ID[:15])
            assert (row["kind"], row["payload"]) == (notification.kind, notification.fields)
            assert SALESFORCE_ID.fullmatch(row["payload"]["Id"])
            assert SALESFORCE_ID.fullmatch(row["event_key"].removeprefix("om:"))
    finally:
        tables.reset()


def test_xml_entity_expansion_and_external_entities_are_refused_before_anything_expands(client, tables):
    """Each DTD trick in an otherwise valid message from our org: 400, a fault naming it, nothing stored."""
    valid = outbound_message([(NOTIFICATION, {"Id": OPPORTUNITY})]).decode()
    envelope = valid.split("\n", 1)[1]
    tricks = {
        "billion-laughs": (PROLOGS[4], "&lol3;"),
        "external-entity": (PROLOGS[5], "&xxe;"),
        "parameter-entity": (PROLOGS[6], ""),
        "external-dtd": (PROLOGS[7], ""),
    }
    for name, (prolog, reference) in tricks.items():
        body = (prolog + envelope.replace("<ActionId>", f"<ActionId>{reference}")).encode()
        before = tables.snapshot()
        reply = client.post(OUTBOUND_PATH, data=body, headers={"Content-Type": "text/xml"})
        assert reply.status_code == 400, (name, reply.get_data())
        assert re.search(
            r"unsafe XML refused \((DTDForbidden|EntitiesForbidden|ExternalReferenceForbidden)\)",
            reply.get_data(as_text=True),
        ), (name, reply.get_data())
        assert tables.changed(before) == [], name
