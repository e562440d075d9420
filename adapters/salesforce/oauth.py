"""The OAuth 2.0 refresh-token grant: a new Salesforce session from a refresh token.

simple-salesforce logs in with a password (SOAP ``login()``, retiring in
Summer '27), a JWT or client credentials, but has no refresh-token grant, so
this one form POST to ``{SALESFORCE_LOGIN_URL}/services/oauth2/token`` is
written here, on the same requests session (timeouts included) as every other
call. The answer's ``access_token`` and ``instance_url`` make the session.

Neither the refresh token nor the access token appears in a message, a log
line or an error's detail: refusals keep only Salesforce's ``error`` and
``error_description``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import requests
from pydantic import SecretStr

from connector.errors import CrmPermanent, CrmTransient

TOKEN_PATH = "/services/oauth2/token"


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
            raise _refused(response.status_code, answer)
        token, host = answer.get("access_token"), instance_host(str(answer.get("instance_url") or ""))
        if not isinstance(token, str) or not token or host is None:
            raise CrmPermanent("salesforce: the token endpoint's answer has no access_token or instance_url")
        rotated = answer.get("refresh_token")
        if isinstance(rotated, str) and rotated:
            # With refresh-token rotation the old token stops working once used: keep the new one.
            self.refresh_token = SecretStr(rotated)
        return token, host


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _refused(status: int, answer: dict[str, Any]) -> CrmPermanent:
    error = str(answer.get("error") or "refused")[:100]
    description = str(answer.get("error_description") or "")[:200]
    said = f"{error}: {description}" if description else error
    return CrmPermanent(
        f"salesforce: the refresh token was refused ({said}); authorise Offboard in the org again "
        "and set the new SALESFORCE_REFRESH_TOKEN",
        status=status,
        detail={"error": error, "error_description": description},
    )
