"""HubSpot's request signatures (developers.hubspot.com/docs/api/webhooks/validating-requests).

Only v3 is accepted: ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(secret, method + uri +
body + timestamp)), with ``X-HubSpot-Request-Timestamp`` in ms, within 5 minutes either way.
HubSpot sends it on every app webhook delivery, beside the older ``X-HubSpot-Signature``
(v1 = sha256(secret + body), v2 = sha256(secret + method + uri + body)) it keeps for backward
compatibility. Those older versions sign no time, so a request captured once would verify
forever; a request that carries only them is refused, saying so.

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


def verify(
    secret: str, *, method: str, uri: str, body: bytes, headers: Mapping[str, str], now: datetime
) -> None:
    """Return if the request is HubSpot's; raise SignatureInvalid (401) otherwise."""
    if not secret:
        # An empty key would make every signature computable by anyone.
        raise SignatureInvalid("no client secret to verify HubSpot signatures with")
    lowered = _signature_headers(headers)
    if "x-hubspot-signature-v3" in lowered:
        _verify_v3(secret, method, uri, body, lowered, now)
    elif "x-hubspot-signature" in lowered:
        raise SignatureInvalid(
            "only X-HubSpot-Signature-v3 is accepted: X-HubSpot-Signature (v1/v2) signs no time, so a "
            "captured request would verify forever; HubSpot's app webhooks send v3"
        )
    else:
        raise SignatureInvalid("unsigned request: no X-HubSpot-Signature-v3 header")


_V3 = ("X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp")
_NAMES = (*_V3, "X-HubSpot-Signature")


def _signature_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The signature headers there are, by lower-case name. A request's headers (werkzeug's) find
    any spelling by the one HubSpot sends, so a signed delivery costs two lookups; otherwise
    (a plain dict spelled another way, or no v3 signature) the mapping is lowered whole."""
    found = {name.lower(): headers.get(name) for name in _V3}
    if any(value is None for value in found.values()):
        lowered = {key.lower(): value for key, value in headers.items()}
        found = {name.lower(): lowered.get(name.lower()) for name in _NAMES}
    return {name: value for name, value in found.items() if value is not None}


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


def _compare(expected: str, given: str) -> None:
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise SignatureInvalid("signature does not verify")
