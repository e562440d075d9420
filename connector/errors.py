"""Every error Offboard raises on purpose.

    ConnectorError
    ├── SettingsInvalid        start-up refused: a variable is missing or malformed
    ├── WebhookRejected        an inbound request we will not store (4xx)
    │   ├── SignatureInvalid   401: unsigned, badly signed, stale
    │   ├── PayloadInvalid     400: not JSON/XML, or not the documented schema
    │   ├── SenderUnknown      403: a sender we are not configured to trust
    │   └── EndpointDisabled   503: the endpoint's secret is not configured
    ├── PlaybookError          a playbook file that does not load; names file and field
    ├── LinkProblem            a personal link that cannot be used: expired, forged, used, sent, closed
    ├── FormProblem            a client's submission to correct and send again (field → message)
    ├── Skip                   an action that will not run, for a reason the operator sees (no failure)
    ├── Deferred               work held back a while through no fault of its own; no attempt used
    │   └── Disconnected       its CRM account's connection is disconnected: it waits for a reinstall
    └── CrmError               a CRM call that did not do what we asked
        ├── CrmTransient       worth retrying: 5xx, timeouts, connection resets
        │   ├── OutcomeUnknown the call may have been applied: timeout, lost reply, 5xx after sending
        │   └── CrmRateLimited retry, but after the CRM's window
        └── CrmPermanent       retrying will not help: 400, 401/403, 404
            └── GrantRefused   the CRM refused a code or a refresh token (revoked, uninstalled)

Adapters translate their SDK's exceptions into the CrmError branch with
``raise CrmTransient(...) from exc``; what the worker does about any error (retry, back off,
wait, park, skip, defer) is decided in one place, ``connector.retry``.
"""

from __future__ import annotations

from typing import Literal

Problem = Literal["expired", "forged", "used", "sent", "closed"]


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


class LinkProblem(ConnectorError):
    """A link that cannot be used: expired, forged (or mangled), already answered ("used") or
    sent ("sent"), or its run cancelled ("closed"). The client sees a page saying which."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem)
        self.problem = problem


class FormProblem(ConnectorError):
    """A submission to correct and send again; ``errors`` maps field names to messages."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


class Skip(ConnectorError):
    """This action will not run, for a reason the operator should see (not a failure)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Deferred(ConnectorError):
    """Not now, and no fault of the work: try again in ``seconds`` (the configured deferral when
    None) without using up an attempt. ``reason`` is recorded as said, for the operator."""

    def __init__(self, reason: str, *, seconds: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seconds = seconds


class Disconnected(Deferred):
    """The action's CRM account is disconnected (its refresh token was refused, or it was removed):
    the action waits, using no attempt, until the account is installed again."""

    def __init__(self, crm: str, account: str, why: str | None = None) -> None:
        reason = f"the {crm} account {account} is disconnected" + (f" ({why})" if why else "")
        super().__init__(f"{reason}; it resumes once the account is installed again", seconds=300)
        self.crm, self.account = crm, account


class CrmError(ConnectorError):
    """A CRM call that failed. ``detail`` keeps what the CRM said, for the operator."""

    def __init__(self, message: str, *, status: int | None = None, detail: object = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class CrmTransient(CrmError):
    """Worth retrying: the CRM was down, slow, or reset the connection."""


class OutcomeUnknown(CrmTransient):
    """The call may have reached the CRM and been applied (a timeout, a lost reply, a 5xx after
    sending): an adapter looks for what it wrote before writing again."""


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


class GrantRefused(CrmPermanent):
    """The CRM refused an authorization code or a refresh token as invalid (revoked, expired,
    the app uninstalled). For a refresh token, its connection is then disconnected."""
