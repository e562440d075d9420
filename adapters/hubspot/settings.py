"""HubSpot's settings: the environment's portal (a private-app token), the app's OAuth credentials
(installs into many portals) and its webhook secret."""

from __future__ import annotations

from typing import ClassVar

from pydantic import SecretStr, field_validator

from connector.settings import CrmSettings, env_field, http_url


class HubSpotSettings(CrmSettings):
    # The app's client secret: it signs the webhooks HubSpot sends (v3 signatures).
    inbound_secrets: ClassVar[tuple[str, ...]] = ("client_secret",)

    # What an install asks for: the scopes manifest.json lists, and ``oauth``, which every OAuth
    # app holds (and which GET /account-info/v3/details needs).
    scopes: ClassVar[tuple[str, ...]] = (
        "oauth",
        "crm.objects.deals.read",
        "crm.objects.deals.write",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.objects.companies.read",
        "crm.objects.owners.read",
        "crm.schemas.deals.read",
        "crm.schemas.deals.write",
        "crm.schemas.contacts.read",
        "crm.schemas.contacts.write",
        "files",  # the offboarding record, uploaded to the file manager (Files API)
    )

    access_token: SecretStr | None = env_field("HUBSPOT_ACCESS_TOKEN")
    client_id: str | None = env_field("HUBSPOT_CLIENT_ID")
    client_secret: SecretStr | None = env_field("HUBSPOT_CLIENT_SECRET")
    authorize_url: str = env_field("HUBSPOT_AUTHORIZE_URL", "https://app.hubspot.com/oauth/authorize")
    api_base_url: str = env_field("HUBSPOT_API_BASE_URL", "https://api.hubapi.com")
    contract_type_property: str = env_field("HUBSPOT_CONTRACT_TYPE_PROPERTY", "contract_type")
    contract_end_property: str = env_field("HUBSPOT_CONTRACT_END_PROPERTY", "contract_end_date")
    # HubSpot's 10-second limit is per app and account (the daily one is shared by the account's
    # apps): this is the whole deployment's budget per account, every process together (counted
    # in the database), and the search API's own limit, likewise shared.
    rate_limit_per_10s: int = env_field("HUBSPOT_RATE_LIMIT_PER_10S", 100, ge=1, le=1000)
    search_rate_limit_per_s: int = env_field("HUBSPOT_SEARCH_RATE_LIMIT_PER_S", 4, ge=1, le=50)
    # How long HubSpot's search may miss a record just written: a write whose outcome is
    # unknown is looked for only once this has passed.
    search_lag_seconds: float = env_field("HUBSPOT_SEARCH_LAG_SECONDS", 20.0, ge=0, le=300)

    @field_validator("api_base_url", "authorize_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @property
    def configured(self) -> bool:
        """A private-app token turns HubSpot on for its portal."""
        return self.access_token is not None

    @property
    def installable(self) -> bool:
        """The app's client id and secret turn on installs by OAuth (``GET /install/hubspot``)."""
        return bool(self.client_id) and self.client_secret is not None
