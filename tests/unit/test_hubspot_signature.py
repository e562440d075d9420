"""HubSpot signatures: v3 only, its window both ways and its URI decoding; v1/v2 and empty secrets refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from adapters.hubspot import signature
from connector.errors import SignatureInvalid

# The client secret and bodies of HubSpot's own examples (webhooks/validating-requests).
DOC_SECRET = "yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy"
DOC_BODY = (
    b'[{"eventId":1,"subscriptionId":12345,"portalId":62515,"occurredAt":1564113600000,'
    b'"subscriptionType":"contact.creation","attemptNumber":0,"objectId":123,"changeSource":"CRM",'
    b'"changeFlag":"NEW","appId":54321}]'
)
NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)
URI = "https://offboard.example.com/webhooks/hubspot?tenant=acme&note=a%3Ab%2Fc%20d"


def v3_headers(
    body: bytes, *, uri: str = URI, at: datetime = NOW, secret: str = DOC_SECRET
) -> dict[str, str]:
    """Signed independently of the module under test, from the docs' recipe."""
    timestamp = str(int(at.timestamp() * 1000))
    decoded = uri.replace("%3A", ":").replace("%2F", "/")  # the listed escapes; %20 stays
    source = f"POST{decoded}".encode() + body + timestamp.encode()
    digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
    return {
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": timestamp,
    }


def verify(headers: dict[str, str], *, body: bytes = DOC_BODY, uri: str = URI, now: datetime = NOW) -> None:
    signature.verify(DOC_SECRET, method="POST", uri=uri, body=body, headers=headers, now=now)


def v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def test_the_documented_v1_example_is_refused_though_correct():
    # HubSpot's own example: right, but it signs no time, so a captured copy would verify forever.
    assert v1(DOC_SECRET, DOC_BODY) == "232db2615f3d666fe21a8ec971ac7b5402d33b9a925784df3ca654d05f4817de"
    for version in ("v1", "v2", ""):
        headers = {"X-HubSpot-Signature": v1(DOC_SECRET, DOC_BODY), "X-HubSpot-Signature-Version": version}
        with pytest.raises(SignatureInvalid, match="only X-HubSpot-Signature-v3 is accepted"):
            verify(headers)


def test_an_empty_secret_verifies_nothing():
    # sha256(body) is a "v1 signature" with the empty secret; v3 with it is no better.
    empty = {"X-HubSpot-Signature": v1("", DOC_BODY), "X-HubSpot-Signature-Version": "v1"}
    for headers in (empty, v3_headers(DOC_BODY, secret="")):
        with pytest.raises(SignatureInvalid, match="no client secret"):
            signature.verify("", method="POST", uri=URI, body=DOC_BODY, headers=headers, now=NOW)


def test_v3_verifies_with_a_query_string_whose_listed_escapes_are_decoded():
    verify(v3_headers(DOC_BODY))


def test_v3_decoding_touches_only_the_documented_escapes():
    assert signature.v3_uri("https://x/h?a=%3a%2F%3F%40%21%24%27%28%29%2A%2C%3B&b=%20%26") == (
        "https://x/h?a=:/?@!$'()*,;&b=%20%26"
    )


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"X-HubSpot-Signature-v3": base64.b64encode(b"x" * 32).decode()}, "does not verify"),
        ({"X-HubSpot-Signature-v3": "not base64 at all ☃"}, "does not verify"),
        ({"X-HubSpot-Request-Timestamp": ""}, "missing"),
        ({"X-HubSpot-Request-Timestamp": "soon"}, "missing"),
    ],
)
def test_a_bad_v3_header_is_refused(change, says):
    with pytest.raises(SignatureInvalid, match=says):
        verify(v3_headers(DOC_BODY) | change)


def test_v3_refuses_a_stale_timestamp_and_one_from_the_future():
    with pytest.raises(SignatureInvalid, match="5 minutes"):
        verify(v3_headers(DOC_BODY, at=NOW - timedelta(minutes=6)))
    with pytest.raises(SignatureInvalid, match="5 minutes"):
        verify(v3_headers(DOC_BODY, at=NOW + timedelta(minutes=6)))
    verify(v3_headers(DOC_BODY, at=NOW - timedelta(minutes=4, seconds=59)))


def test_v3_refuses_another_uri_body_or_secret():
    headers = v3_headers(DOC_BODY)
    for kwargs in ({"uri": URI.replace("acme", "evil")}, {"body": DOC_BODY + b" "}):
        with pytest.raises(SignatureInvalid):
            verify(headers, **kwargs)
    with pytest.raises(SignatureInvalid):
        verify(v3_headers(DOC_BODY, secret="another-app-secret"))


def test_v3_wins_over_a_valid_v1_header():
    # A request carrying both is judged by v3 alone: v1 has no timestamp to stop a replay.
    headers = v3_headers(DOC_BODY, at=NOW - timedelta(minutes=10))
    headers |= {"X-HubSpot-Signature": v1(DOC_SECRET, DOC_BODY)}
    with pytest.raises(SignatureInvalid, match="5 minutes"):
        verify(headers)


def test_unsigned_and_other_versions_are_refused():
    with pytest.raises(SignatureInvalid, match="unsigned"):
        verify({})
    with pytest.raises(SignatureInvalid, match="only X-HubSpot-Signature-v3"):
        verify({"X-HubSpot-Signature": "ab", "X-HubSpot-Signature-Version": "v9"})


def test_the_public_uri_is_the_public_base_plus_the_raw_path_and_query():
    assert signature.public_uri("https://offboard.example.com/", "/webhooks/hubspot?a=1&b=%3A") == (
        "https://offboard.example.com/webhooks/hubspot?a=1&b=%3A"
    )
