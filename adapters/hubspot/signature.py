"""HubSpot's request signatures (developers.hubspot.com/docs/api/webhooks/validating-requests).

- v3 ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(secret, method + uri + body + timestamp)),
  with ``X-HubSpot-Request-Timestamp`` in ms. Checked first, within 5 minutes either way.
- v1/v2 ``X-HubSpot-Signature`` (``X-HubSpot-Signature-Version``) = hex(sha256(secret + body)) or
  hex(sha256(secret + method + uri + body)); only when no v3 header is present (workflow
  webhook actions). They carry no timestamp, so a replay of them cannot be told apart:
  the inbox's eventId key is what keeps a replay from doing anything twice.

The SDK's ``Signature.is_valid`` defaults to v2, accepts timestamps from the future and does
not decode the URI the way the docs require, hence this module.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import datetime, timedelta

from connector.errors import SignatureInvalid

WINDOW = timedelta(minutes=5)

# The docs list exactly these escapes to decode in the URI before signing v3.
_DECODED = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_ESCAPE = re.compile("|".join(_DECODED), re.IGNORECASE)
_MILLIS = re.compile(r"[0-9]{1,16}")


def public_uri(public_url: str, raw_path_and_query: str) -> str:
    """The URL HubSpot called: behind a proxy, our public base plus the raw path and query."""
    return public_url.rstrip("/") + raw_path_and_query


def v3_uri(uri: str) -> str:
    """The URI as v3 signs it: the listed percent-escapes decoded, everything else kept."""
    return _ESCAPE.sub(lambda found: _DECODED[found.group(0).upper()], uri)


def sign_v3(secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    source = method.encode() + v3_uri(uri).encode() + body + str(timestamp_ms).encode()
    digest = hmac.new(secret.encode(), source, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def sign_v1(secret: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + body).hexdigest()


def sign_v2(secret: str, method: str, uri: str, body: bytes) -> str:
    return hashlib.sha256(secret.encode() + method.encode() + uri.encode() + body).hexdigest()


def verify(
    secret: str, *, method: str, uri: str, body: bytes, headers: Mapping[str, str], now: datetime
) -> None:
    """Return if the request is HubSpot's; raise SignatureInvalid (401) otherwise."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if "x-hubspot-signature-v3" in lowered:
        _verify_v3(secret, method, uri, body, lowered, now)
    elif "x-hubspot-signature" in lowered:
        _verify_legacy(secret, method, uri, body, lowered)
    else:
        raise SignatureInvalid("unsigned request: no X-HubSpot-Signature-v3 (or X-HubSpot-Signature) header")


def _verify_v3(
    secret: str, method: str, uri: str, body: bytes, headers: dict[str, str], now: datetime
) -> None:
    raw = headers.get("x-hubspot-request-timestamp", "")
    # ASCII digits only, and few: str.isdigit() takes "²" (int() does not) and 5000 digits overflow int().
    if not _MILLIS.fullmatch(raw):
        raise SignatureInvalid("X-HubSpot-Request-Timestamp is missing or not a number of milliseconds")
    timestamp = int(raw)
    # Both ways: a stale request may be a replay; one from the future was not sent by HubSpot now.
    if abs(now.timestamp() * 1000 - timestamp) > WINDOW.total_seconds() * 1000:
        raise SignatureInvalid("X-HubSpot-Request-Timestamp is more than 5 minutes away from now")
    expected = sign_v3(secret, method, uri, body, timestamp)
    _compare(expected, headers["x-hubspot-signature-v3"])


def _verify_legacy(secret: str, method: str, uri: str, body: bytes, headers: dict[str, str]) -> None:
    version = headers.get("x-hubspot-signature-version", "v1").lower()
    if version == "v1":
        expected = sign_v1(secret, body)
    elif version == "v2":
        expected = sign_v2(secret, method, uri, body)
    else:
        raise SignatureInvalid(f"unknown X-HubSpot-Signature-Version {version[:10]!r}")
    _compare(expected, headers["x-hubspot-signature"].lower())


def _compare(expected: str, given: str) -> None:
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise SignatureInvalid("signature does not verify")
