"""Which way to log in to Salesforce, chosen from the settings that are present.

    session             SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN (cannot be renewed)
    jwt                 SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE + SALESFORCE_USERNAME
    client_credentials  SALESFORCE_CONSUMER_KEY + SALESFORCE_CONSUMER_SECRET + SALESFORCE_DOMAIN (a My Domain)
    password            SALESFORCE_USERNAME + SALESFORCE_PASSWORD (+ SALESFORCE_SECURITY_TOKEN)

The first complete mode wins, in that order: an explicit token is the most
specific thing an operator can give. Every mode but ``session`` can log in
again when Salesforce says the session expired. Secrets are read only inside
``login`` and never appear in a message.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from simple_salesforce import SalesforceLogin

from connector.errors import SettingsInvalid
from connector.settings import Settings

Login = Callable[[requests.Session], tuple[str, str]]


@dataclass(frozen=True)
class Auth:
    mode: str
    login: Login  # → (session id, instance host[:port])
    renewable: bool


def choose(settings: Settings, version: str) -> Auth:
    """The auth mode these settings describe, or SettingsInvalid naming what is missing."""
    for candidate in (_session, _jwt, _client_credentials, _password):
        auth = candidate(settings, version)
        if auth is not None:
            return auth
    raise SettingsInvalid(
        "Salesforce is half configured: set SALESFORCE_INSTANCE_URL + SALESFORCE_ACCESS_TOKEN, "
        "or SALESFORCE_CONSUMER_KEY + SALESFORCE_PRIVATE_KEY_FILE + SALESFORCE_USERNAME (JWT), "
        "or SALESFORCE_CONSUMER_KEY + SALESFORCE_CONSUMER_SECRET + SALESFORCE_DOMAIN (client credentials), "
        "or SALESFORCE_USERNAME + SALESFORCE_PASSWORD (+ SALESFORCE_SECURITY_TOKEN)"
    )


def _session(settings: Settings, version: str) -> Auth | None:
    url, token = settings.salesforce_instance_url, settings.salesforce_access_token
    if not url or token is None:
        return None
    parts = urlsplit(url if "//" in url else f"https://{url}")
    if not parts.hostname:
        raise SettingsInvalid(f"SALESFORCE_INSTANCE_URL: expected https://<instance>, got {url!r}")
    # simple-salesforce always speaks https; keep a non-default port (local fakes).
    instance = parts.hostname + (f":{parts.port}" if parts.port not in (None, 443) else "")
    return Auth("session", lambda _http: (token.get_secret_value(), instance), renewable=False)


def _jwt(settings: Settings, version: str) -> Auth | None:
    key, path, user = (
        settings.salesforce_consumer_key,
        settings.salesforce_private_key_file,
        settings.salesforce_username,
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
            domain=settings.salesforce_domain or "login",
            sf_version=version,
            session=http,
        )

    return Auth("jwt", login, renewable=True)


def _client_credentials(settings: Settings, version: str) -> Auth | None:
    key, secret, domain = (
        settings.salesforce_consumer_key,
        settings.salesforce_consumer_secret,
        settings.salesforce_domain,
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


def _password(settings: Settings, version: str) -> Auth | None:
    user, password = settings.salesforce_username, settings.salesforce_password
    if not (user and password is not None):
        return None
    token = settings.salesforce_security_token

    def login(http: requests.Session) -> tuple[str, str]:
        return SalesforceLogin(
            username=user,
            password=password.get_secret_value(),
            # An empty token is how orgs that trust our IP range log in.
            security_token=token.get_secret_value() if token is not None else "",
            domain=settings.salesforce_domain or "login",
            sf_version=version,
            session=http,
        )

    return Auth("password", login, renewable=True)
