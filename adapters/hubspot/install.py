"""HubSpot's OAuth app: how a portal installs Offboard (``GET /install/hubspot``) and keeps its tokens.

The v3 token calls are in ``adapters.hubspot.oauth``; this is the plugin's side of the
core's ``OAuthApp``: which settings installs need, the consent URL, the code and refresh
grants as ``Grant``, and setting the portal up once installed (the properties Offboard
writes, what ``offboard hubspot setup`` does for a private app).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import SecretStr

from adapters.base import CrmAdapter, CrmSettings, Grant
from adapters.hubspot import oauth
from adapters.hubspot.settings import HubSpotSettings
from connector.clock import Clock

if TYPE_CHECKING:
    import requests


class HubSpotApp:
    def __init__(
        self, settings: HubSpotSettings, *, http: requests.Session | None = None, clock: Clock | None = None
    ) -> None:
        self.settings, self.http, self.clock = settings, http, clock

    def missing(self) -> str | None:
        if not self.settings.client_id:
            return "HUBSPOT_CLIENT_ID is not set"
        secret = self.settings.client_secret
        if secret is None or not secret.get_secret_value():
            return "HUBSPOT_CLIENT_SECRET is not set"
        return None

    def verifier(self) -> str | None:
        return None  # a confidential app: the client secret proves the exchange is ours

    def authorize_url(self, redirect_uri: str, state: str, verifier: str | None) -> str:
        return oauth.authorize_url(self.settings, redirect_uri, state)

    def exchange(self, code: str, redirect_uri: str, verifier: str | None) -> Grant:
        tokens = oauth.exchange_code(self.settings, code, redirect_uri, http=self.http, clock=self.clock)
        return _grant(tokens, installed_by=tokens.user or _user(tokens.user_id))

    def refresh(self, account: str, refresh_token: SecretStr, instance_url: str | None) -> Grant:
        tokens = oauth.refresh(
            self.settings, refresh_token, portal_id=int(account), http=self.http, clock=self.clock
        )
        return _grant(tokens)

    def after_install(self, adapter: CrmAdapter) -> list[str]:
        """Create the properties Offboard writes; name the deal properties the portal still lacks."""
        from adapters.hubspot.adapter import HubSpotAdapter
        from adapters.hubspot.setup import check_deal_property, ensure_properties

        assert isinstance(adapter, HubSpotAdapter)
        created = [o.name for o in ensure_properties(adapter.api) if o.state == "created"]
        notes = [f"Created the properties {', '.join(created)}."] if created else []
        for name in (self.settings.contract_type_property, self.settings.contract_end_property):
            if not check_deal_property(adapter.api, name):
                notes.append(
                    f"The deal property {name} does not exist: create it, or name yours with "
                    f"`offboard connections set hubspot {adapter.account} contract_type_property=…` "
                    "(or contract_end_property)."
                )
        return notes


def _grant(tokens: oauth.Tokens, installed_by: str | None = None) -> Grant:
    return Grant(
        account=str(tokens.portal_id),
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=tokens.expires_at,
        scopes=tokens.scopes,
        installed_by=installed_by,
    )


def _user(user_id: int | None) -> str | None:
    return None if user_id is None else f"user {user_id}"


def app(settings: CrmSettings) -> HubSpotApp:
    """The plugin's ``oauth``: the app for these settings."""
    return HubSpotApp(HubSpotSettings.of(settings))
