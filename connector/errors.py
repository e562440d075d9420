"""Every error Offboard raises on purpose.

    ConnectorError
    ├── SettingsInvalid        start-up refused: a variable is missing or malformed
    ├── WebhookRejected        an inbound request we will not store (4xx)
    │   ├── SignatureInvalid   401: unsigned, badly signed, stale
    │   ├── PayloadInvalid     400: not JSON/XML, or not the documented schema
    │   └── SenderUnknown      403: a sender we are not configured to trust
    ├── PlaybookError          a playbook file that does not load; names file and field
    └── CrmError               a CRM call that did not do what we asked
        ├── CrmTransient       worth retrying: 5xx, timeouts, connection resets
        │   └── CrmRateLimited retry, but after the CRM's window
        └── CrmPermanent       retrying will not help: 400, 401/403, 404

Adapters translate their SDK's exceptions into the CrmError branch with
``raise CrmTransient(...) from exc`` so the worker decides retries on one tree.
"""

from __future__ import annotations


class ConnectorError(Exception):
    """Base of every error Offboard raises on purpose."""


class SettingsInvalid(ConnectorError):
    """The settings are missing or malformed; the message names each variable."""


class WebhookRejected(ConnectorError):
    """An inbound request that will not be stored."""

    status = 400

    def __init__(self, reason: str, *, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details or []


class SignatureInvalid(WebhookRejected):
    """The request is unsigned or its signature does not verify."""

    status = 401


class PayloadInvalid(WebhookRejected):
    """The body is not well formed, or does not follow the documented schema."""

    status = 400


class SenderUnknown(WebhookRejected):
    """The sender is not the account this connector is configured for."""

    status = 403


class EndpointDisabled(WebhookRejected):
    """The endpoint's secret is not configured, so nothing can be verified."""

    status = 503


class PlaybookError(ConnectorError):
    """A playbook that does not load. ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class CrmError(ConnectorError):
    """A CRM call that failed. ``detail`` keeps what the CRM said, for the operator."""

    def __init__(self, message: str, *, status: int | None = None, detail: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class CrmTransient(CrmError):
    """Worth retrying: the CRM was down, slow, or reset the connection."""


class CrmRateLimited(CrmTransient):
    """The CRM said slow down. ``retry_after`` is seconds, when the CRM told us."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        detail: object = None,
    ) -> None:
        super().__init__(message, status=status, detail=detail)
        self.retry_after = retry_after


class CrmPermanent(CrmError):
    """Retrying will not help: the request or the credentials are wrong."""
