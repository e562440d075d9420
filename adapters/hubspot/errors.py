"""HubSpot SDK and urllib3 errors, translated into the port's error tree.

    CrmTransient
    ├── OutcomeUnknown   5xx, read timeouts, dropped connections: the write may have happened
    └── CrmRateLimited   429 (policyName TEN_SECONDLY_ROLLING, SECONDLY or DAILY)
    CrmPermanent         400 (HubSpot's message kept), 401/403 (token or scopes), 404, other 4xx

Each SDK package has its own ``ApiException`` class (``hubspot.crm.deals.ApiException``,
``hubspot.crm.objects.tasks.ApiException``…) with no common base but ``Exception``, so they
are recognised by module and attributes. urllib3's own errors arrive raw because the client
is built with retries off (our limiter must see every request).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from urllib3.exceptions import ConnectTimeoutError, HTTPError, MaxRetryError, NewConnectionError

from connector.errors import CrmError, CrmPermanent, CrmRateLimited, CrmTransient, OutcomeUnknown

SCOPES_HINT = "give the private app the scopes listed in manifest.json (crms → hubspot → scopes)"
DAILY_RETRY_SECONDS = 3600.0


def is_api_exception(exc: BaseException) -> bool:
    return type(exc).__module__.startswith("hubspot.") and hasattr(exc, "status")


def translate(exc: BaseException, what: str) -> CrmError:
    """The port's error for ``exc``, raised while trying ``what`` (e.g. "create tasks")."""
    if is_api_exception(exc):
        return _from_status(int(getattr(exc, "status", 0) or 0), exc, what)
    if isinstance(exc, HTTPError | OSError):
        return _from_network(exc, what)
    if type(exc).__module__.startswith("hubspot."):  # ApiValueError/ApiTypeError: a request we built wrong
        return CrmPermanent(f"HubSpot SDK refused to {what}: {exc}")
    raise exc


def _from_status(status: int, exc: BaseException, what: str) -> CrmError:
    body = _json(getattr(exc, "body", None))
    message = str(body.get("message") or getattr(exc, "reason", "") or "no message")
    if status == 0:  # the SDK's wrapper for TLS failures
        return CrmTransient(f"HubSpot unreachable while trying to {what}: {message}", detail=body)
    if status == 401:
        return CrmPermanent(
            f"HubSpot refused the access token ({message}): check HUBSPOT_ACCESS_TOKEN is current "
            f"and {SCOPES_HINT}",
            status=401,
            detail=body,
        )
    if status == 403:
        scopes = ", ".join(_required_scopes(body)) or "see the message"
        return CrmPermanent(
            f"the HubSpot token lacks a scope needed to {what} (needs: {scopes}); {SCOPES_HINT}",
            status=403,
            detail=body,
        )
    if status == 429:
        return rate_limited(body, getattr(exc, "headers", None), what)
    if status >= 500:
        return OutcomeUnknown(f"HubSpot answered {status} while trying to {what}: {message}", status=status)
    return CrmPermanent(
        f"HubSpot rejected the request to {what} ({status}): {message}", status=status, detail=body
    )


def rate_limited(body: dict[str, Any], headers: Mapping[str, str] | None, what: str) -> CrmRateLimited:
    """A 429: wait one interval (HubSpot sends no Retry-After), or an hour for the daily limit."""
    policy = str(body.get("policyName") or "TEN_SECONDLY_ROLLING")
    if policy == "DAILY":
        retry_after = DAILY_RETRY_SECONDS
    elif policy == "SECONDLY":
        retry_after = 1.0
    else:
        interval = (headers or {}).get("X-HubSpot-RateLimit-Interval-Milliseconds")
        retry_after = int(interval) / 1000 if interval and interval.isdigit() else 10.0
    return CrmRateLimited(
        f"HubSpot rate limit ({policy}) while trying to {what}", retry_after=retry_after, detail=body
    )


def _from_network(exc: BaseException, what: str) -> CrmError:
    cause = exc.reason if isinstance(exc, MaxRetryError) and exc.reason is not None else exc
    text = f"HubSpot unreachable while trying to {what}: {type(cause).__name__}"
    # Refused or timed out while connecting: nothing was sent. A read timeout or a connection
    # dropped mid-answer (ProtocolError) may follow a write HubSpot applied.
    if isinstance(cause, NewConnectionError | ConnectTimeoutError):
        return CrmTransient(text)
    return OutcomeUnknown(text + " (the request may have been applied)")


def _required_scopes(body: dict[str, Any]) -> list[str]:
    scopes: list[str] = []
    for error in body.get("errors") or []:
        context = (error.get("context") or {}) if isinstance(error, dict) else {}
        for key in ("requiredGranularScopes", "requiredScopes"):
            scopes.extend(str(scope) for scope in context.get(key) or [])
    return scopes


def _json(raw: Any) -> dict[str, Any]:
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    try:
        data = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        return {"message": str(raw)[:500]}
    return data if isinstance(data, dict) else {}
