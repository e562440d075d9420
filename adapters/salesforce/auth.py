"""Which way to log in to Salesforce, chosen from the settings that are present.

    refresh_token       SALESFORCE_REFRESH_TOKEN + SALESFORCE_CONSUMER_KEY (+ SALESFORCE_CONSUMER_SECRET);
                        SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, if set, are used first
    session             SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN (cannot be renewed)
    jwt                 SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE + SALESFORCE_USERNAME
    client_credentials  SALESFORCE_CONSUMER_KEY + SALESFORCE_CONSUMER_SECRET + SALESFORCE_DOMAIN (a My Domain)
    password            SALESFORCE_USERNAME + SALESFORCE_PASSWORD (+ SALESFORCE_SECURITY_TOKEN)

The first complete mode wins, in that order: a refresh token is what an OAuth
install leaves behind and renews without a password; then an explicit token,
the most specific thing an operator can give. Every mode but ``session`` can
log in again when Salesforce says the session expired. Password login uses
SOAP ``login()``, which Salesforce retires in Summer '27: it still works, with
a warning once per process. Secrets are read only inside ``login`` and never
appear in a message.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass

import requests
from pydantic import SecretStr
from simple_salesforce import SalesforceLogin

from adapters.salesforce.oauth import RefreshGrant, instance_host
from adapters.salesforce.settings import SalesforceSettings
from connector.errors import SettingsInvalid

log = logging.getLogger("offboard.salesforce")
Login = Callable[[requests.Session], tuple[str, str]]


@dataclass(frozen=True)
class Auth:
    mode: str
    login: Login  # → (session id, instance host[:port])
    renewable: bool
    # The session to use now, for an auth that keeps its sessions fresh itself (an installed
    # org's token keeper renews them before the session timeout): a new one replaces the old.
    current: Callable[[], str] | None = None


def choose(settings: SalesforceSettings, version: str) -> Auth:
    """The auth mode these settings describe, or SettingsInvalid naming what is missing."""
    for candidate in (_refresh, _session, _jwt, _client_credentials, _password):
        auth = candidate(settings, version)
        if auth is not None:
            return auth
    raise SettingsInvalid(
        "Salesforce is half configured: set SALESFORCE_REFRESH_TOKEN + SALESFORCE_CONSUMER_KEY, "
        "or SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, "
        "or SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE + SALESFORCE_USERNAME (JWT), "
        "or SALESFORCE_CONSUMER_KEY + SALESFORCE_CONSUMER_SECRET + SALESFORCE_DOMAIN (client credentials), "
        "or SALESFORCE_USERNAME + SALESFORCE_PASSWORD (+ SALESFORCE_SECURITY_TOKEN)"
    )


def installed(token: Callable[[], str], instance_url: str | None) -> Auth:
    """An org installed by OAuth: its sessions come from the connection's token keeper, which
    refreshes them (one refresh at a time across processes). A session Salesforce refused is
    handed back, so the keeper renews it unless another process did already."""
    instance = instance_host(instance_url or "")
    if instance is None:
        raise SettingsInvalid("an installed Salesforce org needs its instance URL; install it again")
    refused: list[str] = []
    renew = getattr(token, "renew", None)

    def login(_http: requests.Session) -> tuple[str, str]:
        session = renew(refused[-1]) if refused and renew is not None else token()
        refused.append(session)  # the session in use: the one refused, if it expires
        return session, instance

    return Auth("oauth", login, renewable=True, current=token)


class _FirstGiven:
    """The session the settings give, once; every later login goes through the refresh grant."""

    def __init__(self, given: tuple[SecretStr, str] | None, grant: RefreshGrant) -> None:
        self._given, self._grant = given, grant

    def __call__(self, http: requests.Session) -> tuple[str, str]:
        if self._given is not None:
            (token, instance), self._given = self._given, None
            return token.get_secret_value(), instance
        return self._grant(http)


def _refresh(settings: SalesforceSettings, version: str) -> Auth | None:
    token, key = settings.refresh_token, settings.consumer_key
    if token is None or not token.get_secret_value():
        return None
    if not key:
        raise SettingsInvalid(
            "SALESFORCE_CONSUMER_KEY: the refresh token is renewed with the External Client App's "
            "consumer key; set it along with SALESFORCE_REFRESH_TOKEN"
        )
    grant = RefreshGrant(settings.login_url, key, token, settings.consumer_secret)
    return Auth("refresh_token", _FirstGiven(_given_session(settings), grant), renewable=True)


def _given_session(settings: SalesforceSettings) -> tuple[SecretStr, str] | None:
    url, token = settings.instance_url, settings.access_token
    if not url or token is None:
        return None
    instance = instance_host(url)
    if instance is None:
        raise SettingsInvalid(f"SALESFORCE_INSTANCE_URL: expected https://<instance>, got {url!r}")
    return token, instance


def _session(settings: SalesforceSettings, version: str) -> Auth | None:
    given = _given_session(settings)
    if given is None:
        return None
    token, instance = given
    return Auth("session", lambda _http: (token.get_secret_value(), instance), renewable=False)


def _jwt(settings: SalesforceSettings, version: str) -> Auth | None:
    key, path, user = (
        settings.consumer_key,
        settings.private_key_file,
        settings.username,
    )
    if not (key and path and user):
        return None
    if not path.is_file():
        raise SettingsInvalid(f"SALESFORCE_PRIVATE_KEY_FILE: no file at {path}")

    def login(http: requests.Session) -> tuple[str, str]:
        return SalesforceLogin(
            username=user,
            consumer_key=key,
            privatekey_file=str(path),
            domain=settings.domain or "login",
            sf_version=version,
            session=http,
        )

    return Auth("jwt", login, renewable=True)


def _client_credentials(settings: SalesforceSettings, version: str) -> Auth | None:
    key, secret, domain = (
        settings.consumer_key,
        settings.consumer_secret,
        settings.domain,
    )
    if not (key and secret is not None and domain):
        return None
    if domain in ("login", "test"):
        raise SettingsInvalid(
            "SALESFORCE_DOMAIN: the client credentials flow needs the org's My Domain "
            "(e.g. acme.my), not login or test"
        )

    def login(http: requests.Session) -> tuple[str, str]:
        return SalesforceLogin(
            consumer_key=key,
            consumer_secret=secret.get_secret_value(),
            domain=domain,
            sf_version=version,
            session=http,
        )

    return Auth("client_credentials", login, renewable=True)


def _password(settings: SalesforceSettings, version: str) -> Auth | None:
    user, password = settings.username, settings.password
    if not (user and password is not None):
        return None
    token = settings.security_token
    _warn_soap_login_retires()

    def login(http: requests.Session) -> tuple[str, str]:
        return SalesforceLogin(
            username=user,
            password=password.get_secret_value(),
            # An empty token is how orgs that trust our IP range log in.
            security_token=token.get_secret_value() if token is not None else "",
            domain=settings.domain or "login",
            sf_version=version,
            session=http,
        )

    return Auth("password", login, renewable=True)


@functools.cache  # once per process: the operator needs to hear it, not on every adapter built
def _warn_soap_login_retires() -> None:
    log.warning(
        "salesforce: username-password login uses SOAP login(), which Salesforce retires in Summer '27; "
        "switch to SALESFORCE_REFRESH_TOKEN + SALESFORCE_CONSUMER_KEY (see docs/salesforce.md)"
    )
