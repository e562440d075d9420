"""Installing Offboard into a HubSpot portal: the OAuth v3 authorization-code and refresh grants.

What HubSpot documents, and what this module follows
(developers.hubspot.com/docs/api-reference/auth-oauth-v3/guide):

- the install link is ``https://app.hubspot.com/oauth/authorize`` with ``client_id``,
  ``scope`` (space-separated), ``redirect_uri`` and ``state``;
- ``POST {HUBSPOT_API_BASE_URL}/oauth/v3/token`` takes every parameter in a form body
  (``grant_type`` authorization_code or refresh_token, ``client_id``, ``client_secret``,
  ``redirect_uri`` and ``code``, or ``refresh_token``), so that secrets never sit in a URL;
- its answer carries ``access_token``, ``refresh_token``, ``expires_in`` (seconds; access
  tokens live 30 minutes) and, since 18 Aug 2025, ``hub_id``, ``scopes`` and ``user_id``
  (developers.hubspot.com/changelog/additional-details-returned-when-generating-oauth-access-tokens);
- ``POST /oauth/v3/token/introspect`` (form: ``client_id``, ``client_secret``, ``token``,
  ``token_type_hint``) answers ``active`` and the token's ``hub_id``, ``user_id``, ``user`` (the
  installing user's email), ``scopes`` and ``expires_in``
  (developers.hubspot.com/docs/api-reference/legacy/authentication/oauth-tokens/token-introspect).

``hubspot-api-client`` 12 speaks only the v1 OAuth API (``hubspot.oauth``: ``/oauth/v1/token``,
query-string secrets), which HubSpot deprecates on 16 Feb 2027; the two v3 form POSTs are
therefore written here with requests.

A grant HubSpot refuses (an unknown, used or expired code; a revoked refresh token, as after an
uninstall) raises ``Refused``: the install fails, or the connection must be disconnected. A
token endpoint that is down or slow raises ``CrmTransient``: try again later. Anything else it
refuses is the app's own configuration (client id, secret, redirect URL): ``CrmPermanent``.
No token, code or secret ever appears in a message or an error's detail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import requests
from pydantic import BaseModel, ConfigDict, SecretStr

from adapters.hubspot.settings import HubSpotSettings
from connector.errors import CrmPermanent, CrmRateLimited, CrmTransient, GrantRefused, SettingsInvalid

TOKEN_PATH = "/oauth/v3/token"
INTROSPECT_PATH = "/oauth/v3/token/introspect"
TIMEOUT = (5.0, 20.0)  # connect, read (seconds)
# Refresh this long before HubSpot's expires_in runs out, never waiting for a 401.
REFRESH_MARGIN = timedelta(minutes=5)
# HubSpot's statuses for a grant it will not honour (the code or the refresh token itself).
REFUSED_STATUSES = frozenset({"BAD_AUTH_CODE", "BAD_REFRESH_TOKEN", "EXPIRED_AUTH_CODE"})

Clock = Callable[[], datetime]


class Refused(GrantRefused):
    """HubSpot refused the grant itself: the code (the install fails) or the refresh token (the
    app was uninstalled or its access revoked: the connection must be disconnected)."""


class Tokens(BaseModel):
    """What an install or a refresh leaves: the portal's tokens and what HubSpot said about them."""

    model_config = ConfigDict(frozen=True)

    access_token: SecretStr
    refresh_token: SecretStr
    expires_at: datetime
    portal_id: int
    scopes: tuple[str, ...] = ()
    user: str | None = None  # the installing user's email, when HubSpot told it
    user_id: int | None = None

    def expiring(self, now: datetime, margin: timedelta = REFRESH_MARGIN) -> bool:
        """True once the access token is within ``margin`` of its expiry: time to refresh."""
        return now >= self.expires_at - margin


def authorize_url(
    settings: HubSpotSettings,
    redirect_uri: str,
    state: str,
    scopes: Sequence[str] | None = None,
    optional_scopes: Sequence[str] = (),
) -> str:
    """Where ``GET /install/hubspot`` sends the admin: HubSpot's consent page for this app."""
    params = {
        "client_id": _client_id(settings),
        "scope": " ".join(scopes if scopes is not None else settings.scopes),
        "redirect_uri": redirect_uri,
        "state": state,
    }
    if optional_scopes:
        params["optional_scope"] = " ".join(optional_scopes)
    return f"{settings.authorize_url}?{urlencode(params)}"


def exchange_code(
    settings: HubSpotSettings,
    code: str,
    redirect_uri: str,
    *,
    http: requests.Session | None = None,
    clock: Clock | None = None,
) -> Tokens:
    """Trades the code HubSpot sent to the callback for the portal's tokens, and learns the portal
    and the installing user from the token's introspection."""
    now = (clock or _utc_now)()
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    answer = _post(settings, TOKEN_PATH, form, http, hide=(code,))
    access, refresh_token, expires_in = _tokens(answer)
    about = _post(
        settings,
        INTROSPECT_PATH,
        {"token": access, "token_type_hint": "access_token"},
        http,
        hide=(access, refresh_token),
    )
    if about.get("active") is False:
        raise CrmPermanent("hubspot: the access token just issued is not active")
    portal_id = _integer(about.get("hub_id")) or _integer(answer.get("hub_id"))
    if portal_id is None:
        raise CrmPermanent("hubspot: neither the token nor its introspection names the portal (hub_id)")
    return Tokens(
        access_token=SecretStr(access),
        refresh_token=SecretStr(refresh_token),
        expires_at=now + timedelta(seconds=expires_in),
        portal_id=portal_id,
        scopes=_scopes(about.get("scopes"), answer.get("scopes")),
        user=about["user"] if isinstance(about.get("user"), str) else None,
        user_id=_integer(about.get("user_id")) or _integer(answer.get("user_id")),
    )


def refresh(
    settings: HubSpotSettings,
    refresh_token: SecretStr,
    *,
    portal_id: int,
    http: requests.Session | None = None,
    clock: Clock | None = None,
) -> Tokens:
    """A new access token for ``portal_id`` from its refresh token (HubSpot keeps the refresh
    token unless its answer names another). ``Refused`` when HubSpot will not honour it."""
    now = (clock or _utc_now)()
    secret = refresh_token.get_secret_value()
    form = {"grant_type": "refresh_token", "refresh_token": secret}
    answer = _post(settings, TOKEN_PATH, form, http, hide=(secret,))
    access, rotated, expires_in = _tokens(answer, keep=secret)
    said = _integer(answer.get("hub_id"))
    if said is not None and said != portal_id:
        raise CrmPermanent(f"hubspot: the refresh token belongs to portal {said}, not {portal_id}")
    return Tokens(
        access_token=SecretStr(access),
        refresh_token=SecretStr(rotated),
        expires_at=now + timedelta(seconds=expires_in),
        portal_id=portal_id,
        scopes=_scopes(answer.get("scopes")),
        user_id=_integer(answer.get("user_id")),
    )


# --- the two form POSTs -----------------------------------------------------------------------


def _post(
    settings: HubSpotSettings,
    path: str,
    form: dict[str, str],
    http: requests.Session | None,
    *,
    hide: Iterable[str],
) -> dict[str, Any]:
    client_id, secret = _client_id(settings), settings.client_secret
    if secret is None or not secret.get_secret_value():
        raise SettingsInvalid("HUBSPOT_CLIENT_SECRET: the app's client secret is needed for OAuth")
    body = {**form, "client_id": client_id, "client_secret": secret.get_secret_value()}
    hidden = (*hide, secret.get_secret_value())
    try:
        response = (http or requests).post(
            settings.api_base_url + path,
            data=body,
            headers={"Accept": "application/json"},
            timeout=TIMEOUT,
        )
    except requests.RequestException as exc:
        problem = type(exc).__name__
        raise CrmTransient(f"hubspot: the OAuth endpoint did not answer ({problem})") from exc
    answer = _json(response)
    if response.status_code == 429:
        raise CrmRateLimited("hubspot: the OAuth endpoint answered 429", status=429)
    if response.status_code >= 500:
        status = response.status_code
        raise CrmTransient(f"hubspot: the OAuth endpoint answered {status}", status=status)
    if response.status_code != 200:
        raise _refusal(response.status_code, answer, hidden)
    return answer


def _refusal(status: int, answer: dict[str, Any], hidden: Sequence[str]) -> CrmPermanent:
    """HubSpot's own words (its ``status``/``category`` and ``message``), with nothing secret."""
    code = str(answer.get("status") or answer.get("error") or answer.get("category") or status)[:60]
    message = _scrub(str(answer.get("message") or answer.get("error_description") or ""), hidden)[:200]
    detail = {"status": code, "message": message}
    said = f"{code}: {message}" if message else code
    refused = (
        code in REFUSED_STATUSES
        or answer.get("error") == "invalid_grant"
        or answer.get("subCategory") == "INVALID_TOKEN"
    )
    if refused:
        return Refused(f"hubspot: the grant was refused ({said})", status=status, detail=detail)
    return CrmPermanent(
        f"hubspot: the OAuth endpoint refused the request ({said}); check HUBSPOT_CLIENT_ID, "
        "HUBSPOT_CLIENT_SECRET and the app's redirect URL",
        status=status,
        detail=detail,
    )


def _tokens(answer: dict[str, Any], *, keep: str | None = None) -> tuple[str, str, int]:
    access, refresh_token = answer.get("access_token"), answer.get("refresh_token") or keep
    expires_in = _integer(answer.get("expires_in"))
    if not (isinstance(access, str) and access and isinstance(refresh_token, str) and refresh_token):
        raise CrmPermanent("hubspot: the token endpoint's answer has no access_token or refresh_token")
    if expires_in is None or expires_in <= 0:
        raise CrmPermanent("hubspot: the token endpoint's answer has no expires_in")
    return access, refresh_token, expires_in


def _client_id(settings: HubSpotSettings) -> str:
    if not settings.client_id:
        raise SettingsInvalid("HUBSPOT_CLIENT_ID: the app's client id is needed for OAuth installs")
    return settings.client_id


def _scopes(*candidates: Any) -> tuple[str, ...]:
    for given in candidates:
        if isinstance(given, str):
            given = given.split()
        if isinstance(given, list) and given:
            return tuple(str(scope) for scope in given)
    return ()


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _scrub(text: str, hidden: Sequence[str]) -> str:
    for secret in hidden:
        if secret:
            text = text.replace(secret, "[hidden]")
    return text


def _utc_now() -> datetime:
    return datetime.now(UTC)
