"""Salesforce's OAuth 2.0: the install (web-server flow with PKCE) and the refresh-token grant.

simple-salesforce logs in with a password (SOAP ``login()``, retiring in
Summer '27), a JWT or client credentials, but has neither the authorization-code
nor the refresh-token grant, so these form POSTs to
``{SALESFORCE_LOGIN_URL}/services/oauth2/token`` are written here, on the same
requests session (timeouts included) as every other call.

The install (help.salesforce.com, "OAuth 2.0 Web Server Flow for Web App
Integration"; PKCE per RFC 7636, which Salesforce requires of new External Client
Apps): the admin is sent to ``/services/oauth2/authorize`` with
``response_type=code``, ``client_id``, ``redirect_uri``, ``code_challenge``
(S256) and ``state``; the callback trades the code, with its ``code_verifier``,
for ``access_token``, ``refresh_token``, ``instance_url``, ``id`` (the identity
URL ``…/id/<orgId>/<userId>``), ``issued_at``, ``scope`` and ``signature``
(base64 HMAC-SHA256 of ``id + issued_at`` keyed with the consumer secret,
checked here when the secret is set).

A grant Salesforce refuses as ``invalid_grant`` (an expired, used or unknown
code, a bad code verifier, a revoked refresh token: "expired access/refresh
token", help.salesforce.com "OAuth 2.0 Authorization Errors") raises
``Refused``: the install fails, or the connection must be disconnected. Other
refusals (``invalid_client_id``, ``invalid_client``, ``redirect_uri_mismatch``)
are the app's configuration: ``CrmPermanent``. A token endpoint that is down is
``CrmTransient``.

Neither a code, a verifier, the refresh token nor the access token appears in a
message, a log line or an error's detail: refusals keep only Salesforce's
``error`` and ``error_description``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from pydantic import BaseModel, ConfigDict, SecretStr

from connector.errors import CrmPermanent, CrmTransient, GrantRefused, SettingsInvalid

TOKEN_PATH = "/services/oauth2/token"
AUTHORIZE_PATH = "/services/oauth2/authorize"
SCOPES = ("api", "refresh_token")  # what manifest.json asks of the org
TIMEOUT = (5.0, 30.0)  # connect, read (seconds), when no session of the adapter's is given
# The identity URL's path: /id/<org id>/<user id>, each 15 or 18 characters (00D…, 005…).
IDENTITY_PATH = re.compile(
    r"/id/(00D[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?)/(005[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?)"
)


class Refused(GrantRefused):
    """Salesforce refused the grant itself (``invalid_grant``): the code (the install fails) or
    the refresh token (revoked, or the user or app blocked: the connection must be disconnected)."""


@dataclass(frozen=True)
class Pkce:
    """A PKCE pair (RFC 7636): the verifier stays with us (in the signed state), the challenge
    goes to Salesforce's authorize page."""

    verifier: str = field(repr=False)
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        # 64 random bytes → 86 characters of [A-Za-z0-9_-]: within the 43 to 128 unreserved
        # characters RFC 7636 section 4.1 allows, with 512 bits of entropy.
        verifier = secrets.token_urlsafe(64)
        return cls(verifier, challenge(verifier))


def challenge(verifier: str) -> str:
    """S256: BASE64URL(SHA256(ASCII(verifier))), without padding (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Session(BaseModel):
    """What an install leaves: the org's tokens, its instance and who installed."""

    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    refresh_token: SecretStr
    instance_url: str
    org_id: str  # as the identity URL gives it (18 characters)
    user_id: str
    issued_at: datetime
    scopes: tuple[str, ...] = ()

    @property
    def instance(self) -> str:
        """The instance host (``acme.my.salesforce.com``), as simple-salesforce takes it."""
        host = instance_host(self.instance_url)
        assert host is not None  # checked when the session was made
        return host


def authorize_url(
    login_url: str,
    consumer_key: str | None,
    redirect_uri: str,
    state: str,
    code_challenge: str,
    scopes: Sequence[str] = SCOPES,
) -> str:
    """Where ``GET /install/salesforce`` sends the admin: the org's consent page, PKCE S256."""
    if not consumer_key:
        raise SettingsInvalid("SALESFORCE_CONSUMER_KEY: the External Client App's key is needed to install")
    params = {
        "response_type": "code",
        "client_id": consumer_key,
        "redirect_uri": redirect_uri,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
        "state": state,
        "scope": " ".join(scopes),
    }
    return f"{login_url}{AUTHORIZE_PATH}?{urlencode(params)}"


def exchange_code(
    login_url: str,
    consumer_key: str | None,
    consumer_secret: SecretStr | None,
    *,
    code: str,
    redirect_uri: str,
    code_verifier: str,
    http: requests.Session | None = None,
) -> Session:
    """Trades the callback's code (with its PKCE verifier) for the org's session and refresh token."""
    if not consumer_key:
        raise SettingsInvalid("SALESFORCE_CONSUMER_KEY: the External Client App's key is needed to install")
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": consumer_key,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    if consumer_secret is not None:
        form["client_secret"] = consumer_secret.get_secret_value()
    answer = _post(http, login_url, form, doing="the authorization code")
    return _session(answer, consumer_secret)


def _session(answer: dict[str, Any], consumer_secret: SecretStr | None) -> Session:
    access, refresh_token = answer.get("access_token"), answer.get("refresh_token")
    if not (isinstance(access, str) and access):
        raise CrmPermanent("salesforce: the token endpoint's answer has no access_token")
    if not (isinstance(refresh_token, str) and refresh_token):
        raise CrmPermanent(
            "salesforce: no refresh_token was granted; give the External Client App the "
            "refresh_token (offline access) scope"
        )
    instance_url = str(answer.get("instance_url") or "")
    if not instance_url.startswith("https://") or instance_host(instance_url) is None:
        raise CrmPermanent("salesforce: the token endpoint's answer has no https instance_url")
    org_id, user_id = identity(answer.get("id"))
    issued = str(answer.get("issued_at") or "")
    if consumer_secret is not None and not _signed(answer, issued, consumer_secret):
        raise CrmPermanent("salesforce: the token answer's signature does not match its id and issued_at")
    return Session(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh_token),
        instance_url=instance_url.rstrip("/"),
        org_id=org_id,
        user_id=user_id,
        issued_at=_moment(issued),
        scopes=tuple(str(answer.get("scope") or "").split()),
    )


def identity(url: Any) -> tuple[str, str]:
    """(org id, user id) from the identity URL ``https://login.salesforce.com/id/00D…/005…``."""
    parts = urlsplit(url) if isinstance(url, str) else None
    found = IDENTITY_PATH.fullmatch(parts.path) if parts is not None else None
    if parts is None or parts.scheme != "https" or not parts.hostname or found is None:
        raise CrmPermanent("salesforce: the token answer's id is not an identity URL (…/id/<org>/<user>)")
    return found.group(1), found.group(2)


def _signed(answer: dict[str, Any], issued: str, consumer_secret: SecretStr) -> bool:
    given = answer.get("signature")
    if not isinstance(given, str):
        return False
    key = consumer_secret.get_secret_value().encode()
    expected = hmac.new(key, (str(answer.get("id")) + issued).encode(), hashlib.sha256).digest()
    return hmac.compare_digest(base64.b64encode(expected).decode(), given)


def _moment(issued: str) -> datetime:
    """``issued_at`` is milliseconds since the epoch; now when it is missing or malformed."""
    if issued.isdigit():
        return datetime.fromtimestamp(int(issued) / 1000, UTC)
    return datetime.now(UTC)


def _post(
    http: requests.Session | None, login_url: str, form: dict[str, str], *, doing: str
) -> dict[str, Any]:
    try:
        response = (http or requests).post(
            login_url + TOKEN_PATH, data=form, headers={"Accept": "application/json"}, timeout=TIMEOUT
        )
    except requests.RequestException as exc:
        problem = type(exc).__name__
        raise CrmTransient(f"salesforce: the token endpoint did not answer ({problem})") from exc
    answer = _json(response)
    if response.status_code >= 500:
        status = response.status_code
        raise CrmTransient(f"salesforce: the token endpoint answered {status}", status=status)
    if response.status_code != 200:
        raise _refused(response.status_code, answer, doing=doing)
    return answer


def instance_host(url: str) -> str | None:
    """``https://acme.my.salesforce.com`` → ``acme.my.salesforce.com`` (a non-default port kept)."""
    parts = urlsplit(url if "//" in url else f"https://{url}")
    if not parts.hostname:
        return None
    # simple-salesforce always speaks https; keep a non-default port (local fakes).
    return parts.hostname + (f":{parts.port}" if parts.port not in (None, 443) else "")


@dataclass
class RefreshGrant:
    """Trades the refresh token for a session: ``grant(http)`` → (session id, instance host)."""

    login_url: str
    consumer_key: str
    refresh_token: SecretStr = field(repr=False)
    consumer_secret: SecretStr | None = field(default=None, repr=False)
    # A connection's org: an answer naming another org is refused.
    org_id: str | None = None
    # Told the new refresh token when Salesforce rotates it, so that a connection can keep it.
    on_rotate: Callable[[SecretStr], None] | None = field(default=None, repr=False)

    def __call__(self, http: requests.Session) -> tuple[str, str]:
        form = {
            "grant_type": "refresh_token",
            "client_id": self.consumer_key,
            "refresh_token": self.refresh_token.get_secret_value(),
        }
        if self.consumer_secret is not None:
            form["client_secret"] = self.consumer_secret.get_secret_value()
        try:
            response = http.post(
                self.login_url + TOKEN_PATH, data=form, headers={"Accept": "application/json"}
            )
        except requests.RequestException as exc:
            problem = type(exc).__name__
            raise CrmTransient(f"salesforce: the token endpoint did not answer ({problem})") from exc
        return self._session(response)

    def _session(self, response: requests.Response) -> tuple[str, str]:
        answer = _json(response)
        if response.status_code >= 500:
            raise CrmTransient(
                f"salesforce: the token endpoint answered {response.status_code}", status=response.status_code
            )
        if response.status_code != 200:
            raise _refused(response.status_code, answer, doing="the refresh token")
        token, host = answer.get("access_token"), instance_host(str(answer.get("instance_url") or ""))
        if not isinstance(token, str) or not token or host is None:
            raise CrmPermanent("salesforce: the token endpoint's answer has no access_token or instance_url")
        if self.org_id is not None and "id" in answer:
            org_id = identity(answer["id"])[0]
            if org_id[:15] != self.org_id[:15]:
                raise CrmPermanent(
                    f"salesforce: the refresh token belongs to org {org_id}, not {self.org_id}"
                )
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            # With refresh-token rotation the old token stops working once used: keep the new one.
            self.refresh_token = SecretStr(rotated)
            if self.on_rotate is not None:
                self.on_rotate(self.refresh_token)
        return token, host


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _refused(status: int, answer: dict[str, Any], *, doing: str) -> CrmPermanent:
    error = str(answer.get("error") or "refused")[:100]
    description = str(answer.get("error_description") or "")[:200]
    said = f"{error}: {description}" if description else error
    detail = {"error": error, "error_description": description}
    if error != "invalid_grant":
        # invalid_client_id, invalid_client, redirect_uri_mismatch…: the app's own settings.
        message = f"salesforce: {doing} was refused ({said}); check SALESFORCE_CONSUMER_KEY"
        if doing == "the refresh token":
            message += " and SALESFORCE_CONSUMER_SECRET"
        else:
            message += ", SALESFORCE_CONSUMER_SECRET and the app's callback URL"
        return CrmPermanent(message, status=status, detail=detail)
    if doing == "the refresh token":
        return Refused(
            f"salesforce: the refresh token was refused ({said}); authorise Offboard in the org again "
            "(install it again, or set the new SALESFORCE_REFRESH_TOKEN)",
            status=status,
            detail=detail,
        )
    return Refused(f"salesforce: {doing} was refused ({said})", status=status, detail=detail)
