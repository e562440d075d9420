"""Outbound messages and Flow callouts: parsed safely, from our org only, refused with a reason."""

from __future__ import annotations

import json

import pytest

from adapters.salesforce import flow, outbound
from connector.errors import EndpointDisabled, PayloadInvalid, SenderUnknown, SignatureInvalid
from tests.support.salesforce import BILLION_LAUGHS, EXPECTED_ACK, EXTERNAL_ENTITY, ORG_ID, outbound_message

OPPORTUNITY = "0065g00000AbCdEAAZ"
CLOSED = {"Id": OPPORTUNITY, "StageName": "Closed Won", "IsClosed": True, "IsWon": True, "ContractId": None}


def test_the_ack_is_exactly_what_salesforce_expects():
    assert outbound.ACK == EXPECTED_ACK


def test_a_message_is_parsed_into_its_notifications():
    body = outbound_message([("04l5g0000000001AAA", CLOSED), ("04l5g0000000002AAA", {"Id": OPPORTUNITY})])
    message = outbound.parse(body, ORG_ID)
    assert message.account == ORG_ID[:15]
    assert [n.id for n in message.notifications] == ["04l5g0000000001AAA", "04l5g0000000002AAA"]
    first = message.notifications[0]
    assert (first.sobject_type, first.kind) == ("Opportunity", "opportunity")
    assert first.fields == {
        "Id": OPPORTUNITY,
        "StageName": "Closed Won",
        "IsClosed": "true",
        "IsWon": "true",
        "ContractId": None,  # xsi:nil
    }


@pytest.mark.parametrize(
    ("configured", "sent"),
    [(ORG_ID, ORG_ID), (ORG_ID[:15], ORG_ID), (ORG_ID, ORG_ID[:15]), (ORG_ID[:15], ORG_ID[:15])],
    ids=["18-18", "15-18", "18-15", "15-15"],
)
def test_the_org_id_matches_in_either_form(configured, sent):
    message = outbound.parse(outbound_message([("04l5g0000000001AAA", CLOSED)], org_id=sent), configured)
    assert message.account == ORG_ID[:15]


@pytest.mark.parametrize(
    "other",
    ["00D5g00000Other1AAA"[:18], ORG_ID[:15].lower() + "AAA", ORG_ID[:17] + "X"],
    ids=["another-org", "case-differs", "suffix-differs"],
)
def test_another_org_is_refused(other):
    with pytest.raises(SenderUnknown, match="not the configured SALESFORCE_ORG_ID"):
        outbound.parse(outbound_message([("04l5g0000000001AAA", CLOSED)], org_id=other), ORG_ID)


def test_without_a_configured_org_the_endpoint_is_off():
    with pytest.raises(EndpointDisabled, match="SALESFORCE_ORG_ID"):
        outbound.parse(outbound_message([("04l5g0000000001AAA", CLOSED)]), None)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"<soapenv:Envelope", "not well-formed XML"),
        (b"not xml at all", "not well-formed XML"),
        (BILLION_LAUGHS, "unsafe XML refused"),
        (EXTERNAL_ENTITY, "unsafe XML refused"),
        (b'<?xml version="1.0"?><hello/>', "not an outbound message"),
        (outbound_message([]), "1 to 100 notifications"),
        (outbound_message([(f"04l5g{n:013d}", CLOSED) for n in range(101)]), "1 to 100 notifications"),
        (outbound_message([("04l5g0000000001AAA", {"StageName": "x"})]), "needs an xsi:type and an Id"),
        (outbound_message([("04l5g0000000001AAA", CLOSED)], org_id="nope"), "no valid OrganizationId"),
    ],
    ids=[
        "truncated",
        "not-xml",
        "billion-laughs",
        "external-entity",
        "other-xml",
        "empty",
        "101",
        "no-id",
        "bad-org",
    ],
)
def test_bad_bodies_are_refused_with_a_reason(body, reason):
    with pytest.raises(PayloadInvalid, match=reason):
        outbound.parse(body, ORG_ID)


def test_a_fault_escapes_its_reason():
    body = outbound.fault("bad <xml> & worse")
    assert b"<faultcode>soapenv:Client</faultcode>" in body
    assert b"<faultstring>bad &lt;xml&gt; &amp; worse</faultstring>" in body
    assert b"soapenv:Server" in outbound.fault("down", client=False)


def test_flow_callouts_need_the_shared_secret():
    flow.verify("s3cret", "s3cret")
    with pytest.raises(SignatureInvalid, match="missing"):
        flow.verify("s3cret", None)
    with pytest.raises(SignatureInvalid, match="does not match"):
        flow.verify("s3cret", "s3cre7")


def test_a_flow_callout_is_stored_like_a_notification():
    at = '"LastModifiedDate": "2026-11-20T15:00:00.000Z"'
    callout = flow.parse(
        f'{{"recordId": "0065g00000AbCdEAAZ", "fields": {{"IsClosed": true, "IsWon": false, {at}}}}}'.encode()
    )
    assert callout.payload == {
        "Id": OPPORTUNITY,
        "IsClosed": True,
        "IsWon": False,
        "LastModifiedDate": "2026-11-20T15:00:00.000Z",
    }
    assert callout.event_key.startswith("flow:")
    assert (
        callout.event_key
        == flow.parse(
            f'{{"fields": {{{at}, "IsWon": false, "IsClosed": true}}, "recordId": "{OPPORTUNITY}"}}'.encode()
        ).event_key
    )
    assert flow.parse(b'{"recordId": "0065g00000AbCdEAAZ", "eventId": "e-1"}').event_key == "flow:e-1"


def test_the_same_fields_at_another_time_are_another_event():
    def key(at: str) -> str:
        fields = {"IsClosed": True, "StageName": "Closed Won", "SystemModstamp": at}
        return flow.parse(json.dumps({"recordId": OPPORTUNITY, "fields": fields}).encode()).event_key

    assert key("2026-11-20T15:00:00.000Z") != key("2026-11-21T09:30:00.000Z")


@pytest.mark.parametrize(
    "body",
    [
        {"recordId": OPPORTUNITY, "fields": {"IsClosed": True}},
        {"recordId": OPPORTUNITY, "fields": {"IsClosed": True, "LastModifiedDate": ""}},
        {"recordId": OPPORTUNITY},
    ],
    ids=["no-time", "empty-time", "no-fields"],
)
def test_a_flow_callout_without_event_id_or_change_time_is_refused_naming_event_id(body):
    with pytest.raises(PayloadInvalid, match="eventId is required") as refused:
        flow.parse(json.dumps(body).encode())
    assert [d["field"] for d in refused.value.details] == ["eventId"]


# --- the outbound-message key -------------------------------------------------------------

KEY = "k" * 32


def test_the_outbound_key_must_be_given_and_match():
    outbound.verify_key(KEY, KEY)
    with pytest.raises(SignatureInvalid, match="no key"):
        outbound.verify_key(KEY, None)
    with pytest.raises(SignatureInvalid, match="does not match SALESFORCE_OUTBOUND_KEY") as wrong:
        outbound.verify_key(KEY, "k" * 31 + "x")
    assert "k" * 31 not in wrong.value.reason  # neither key is repeated
    with pytest.raises(SignatureInvalid):
        outbound.verify_key(KEY, "ключ")  # not ASCII: compared as bytes, refused, no TypeError


def test_without_a_configured_key_outbound_messages_are_refused():
    with pytest.raises(EndpointDisabled, match="SALESFORCE_OUTBOUND_KEY"):
        outbound.verify_key(None, KEY)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"fields": {}}', "recordId"),
        (b'{"recordId": "006\'; DROP"}', "recordId"),
        (b'{"recordId": "0065g00000AbCdEAAZ", "fields": {"a": {"nested": 1}}}', "fields.a"),
        (b'{"recordId": "0065g00000AbCdEAAZ", "extra": 1}', "extra"),
    ],
)
def test_malformed_flow_callouts_name_the_field(body, field):
    with pytest.raises(PayloadInvalid) as refused:
        flow.parse(body)
    assert any(d["field"].startswith(field) for d in refused.value.details)


@pytest.mark.parametrize("body", [b"{", b"[1]", b"\xff"])
def test_flow_bodies_that_are_not_json_objects_are_refused(body):
    with pytest.raises(PayloadInvalid):
        flow.parse(body)
