"""simple-salesforce's exceptions, translated into the port's error tree.

    SalesforceExpiredSession (401)      → CrmPermanent (``expired``), after one re-login where possible
    SalesforceRefusedRequest (403)      → CrmRateLimited for REQUEST_LIMIT_EXCEEDED, else CrmPermanent
    SalesforceMalformedRequest (400)    → CrmPermanent
    SalesforceResourceNotFound (404)    → CrmPermanent
    SalesforceMoreThanOneRecord (300)   → CrmPermanent
    SalesforceGeneralError 5xx          → OutcomeUnknown (other statuses: CrmPermanent)
    SalesforceAuthenticationFailed      → CrmPermanent (CrmTransient when the login server was down)
    requests ConnectTimeout             → CrmTransient (the request never left)
    requests ConnectionError / Timeout  → OutcomeUnknown (it may have been applied)

A write whose outcome is unknown may have been applied: the next attempt of its action
looks for what it wrote before writing again (``adapters.salesforce.attempts``).

Salesforce's own ``errorCode``/``message``/``fields`` list is kept in ``detail``
for the operator. Nothing here holds a token: the SDK's messages carry only the
URL and the response body.
"""

from __future__ import annotations

from typing import Any

import requests
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceRefusedRequest,
)

from connector.errors import CrmError, CrmPermanent, CrmRateLimited, CrmTransient, OutcomeUnknown

# The daily allocation is a rolling 24 h window: look again in a while, not in a busy loop.
LIMIT_RETRY_AFTER_SECONDS = 900.0
# Record-level codes that say "try again", not "this record is wrong".
TRANSIENT_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE", "REQUEST_RUNNING_TOO_LONG"})


def translate(exc: Exception) -> CrmError:
    """The CrmError for an SDK or transport exception (callers ``raise translate(e) from e``)."""
    if isinstance(exc, SalesforceAuthenticationFailed):
        return _login_failed(exc)
    if isinstance(exc, SalesforceError):
        return _api_error(exc)
    if isinstance(exc, requests.ConnectTimeout):
        return CrmTransient(f"salesforce: no answer ({type(exc).__name__})")
    if isinstance(exc, requests.Timeout | requests.ConnectionError):
        return OutcomeUnknown(
            f"salesforce: no answer ({type(exc).__name__}); the request may have been applied"
        )
    if isinstance(exc, CrmError):
        return exc
    return CrmPermanent(f"salesforce: unexpected {type(exc).__name__}: {exc}")


def _api_error(exc: SalesforceError) -> CrmError:
    errors = error_list(exc.content)
    codes = [str(e.get("errorCode") or e.get("statusCode") or "") for e in errors]
    summary = "; ".join(
        f"{c}: {e.get('message', '')}".strip(": ") for c, e in zip(codes, errors, strict=True)
    )
    message = f"salesforce: {exc.status} on {exc.resource_name or 'request'}" + (
        f": {summary}" if summary else ""
    )
    detail = errors or exc.content
    if isinstance(exc, SalesforceRefusedRequest) and "REQUEST_LIMIT_EXCEEDED" in codes:
        return CrmRateLimited(
            message, retry_after=LIMIT_RETRY_AFTER_SECONDS, status=exc.status, detail=detail
        )
    if isinstance(exc, SalesforceGeneralError) and exc.status >= 500:
        return OutcomeUnknown(message, status=exc.status, detail=detail)
    if any(code in TRANSIENT_CODES for code in codes):
        return CrmTransient(message, status=exc.status, detail=detail)
    return CrmPermanent(message, status=exc.status, detail=detail)


def expired(exc: SalesforceExpiredSession, why: str) -> CrmPermanent:
    """The session expired and will not be renewed: Salesforce's words, then ``why``."""
    said = _api_error(exc)
    return CrmPermanent(f"{said} (session expired: {why})", status=401, detail=said.detail)


def _login_failed(exc: SalesforceAuthenticationFailed) -> CrmError:
    message = f"salesforce: login failed: {exc}"
    if isinstance(exc.code, int) and exc.code >= 500:
        return CrmTransient(message, status=exc.code)
    return CrmPermanent(message, status=401, detail={"code": exc.code, "message": exc.auth_message})


def error_list(content: Any) -> list[dict[str, Any]]:
    """Salesforce's error bodies are lists of {message, errorCode, fields}; keep those items."""
    if isinstance(content, dict):
        content = [content]
    if not isinstance(content, list):
        return []
    return [dict(item) for item in content if isinstance(item, dict)]


def record_error(result: dict[str, Any]) -> CrmError:
    """The error of one record an sObject Collections call refused (``allOrNone: false``)."""
    errors = [dict(e) for e in result.get("errors") or [] if isinstance(e, dict)]
    summary = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors[:5])
    message = f"salesforce: record refused: {summary or 'no reason given'}"
    if errors and all(e.get("statusCode") in TRANSIENT_CODES for e in errors):
        return CrmTransient(message, status=200, detail=errors)
    return CrmPermanent(message, status=400, detail=errors)


def record_errors(results: list[dict[str, Any]]) -> CrmError | None:
    """The error for an sObject Collections answer with failed records, or None when all succeeded.

    With allOrNone the call answers 200 and marks every record failed: the real
    cause is on the records whose code is not ALL_OR_NONE_OPERATION_ROLLED_BACK.
    """
    failed = [r for r in results if not r.get("success")]
    if not failed:
        return None
    errors = [e for r in failed for e in r.get("errors") or []]
    causes = [e for e in errors if e.get("statusCode") != "ALL_OR_NONE_OPERATION_ROLLED_BACK"] or errors
    summary = "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in causes[:5])
    message = f"salesforce: {len(failed)} of {len(results)} record(s) refused: {summary}"
    if causes and all(e.get("statusCode") in TRANSIENT_CODES for e in causes):
        return CrmTransient(message, status=200, detail=causes)
    return CrmPermanent(message, status=400, detail=causes)
