"""Salesforce's settings: the environment's org (one of five ways to log in) and its inbound secrets."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import SecretStr, ValidationInfo, field_validator

from connector.settings import CrmSettings, env_field, http_url


class SalesforceSettings(CrmSettings):
    # The Flow callouts' shared secret and the key in the outbound-message URL.
    inbound_secrets: ClassVar[tuple[str, ...]] = ("webhook_secret", "outbound_key")

    instance_url: str | None = env_field("SALESFORCE_INSTANCE_URL")
    access_token: SecretStr | None = env_field("SALESFORCE_ACCESS_TOKEN")
    username: str | None = env_field("SALESFORCE_USERNAME")
    password: SecretStr | None = env_field("SALESFORCE_PASSWORD")
    security_token: SecretStr | None = env_field("SALESFORCE_SECURITY_TOKEN")
    consumer_key: str | None = env_field("SALESFORCE_CONSUMER_KEY")
    consumer_secret: SecretStr | None = env_field("SALESFORCE_CONSUMER_SECRET")
    private_key_file: Path | None = env_field("SALESFORCE_PRIVATE_KEY_FILE")
    domain: str | None = env_field("SALESFORCE_DOMAIN")
    org_id: str | None = env_field("SALESFORCE_ORG_ID")
    webhook_secret: SecretStr | None = env_field("SALESFORCE_WEBHOOK_SECRET")
    # Outbound messages carry no signature: the key in their URL is what authenticates them.
    outbound_key: SecretStr | None = env_field("SALESFORCE_OUTBOUND_KEY")
    refresh_token: SecretStr | None = env_field("SALESFORCE_REFRESH_TOKEN")
    login_url: str = env_field("SALESFORCE_LOGIN_URL", "https://login.salesforce.com")
    # The Experience Cloud site guest survey invitations are sent through.
    community_id: str | None = env_field("SALESFORCE_COMMUNITY_ID")
    contract_type_field: str = env_field("SALESFORCE_CONTRACT_TYPE_FIELD", "Type")
    contract_end_field: str = env_field("SALESFORCE_CONTRACT_END_FIELD", "Contract.EndDate")
    # Other integrations share the org's daily API allocation: past this share, non-urgent work waits.
    api_budget_share: float = env_field("SALESFORCE_API_BUDGET_SHARE", 0.8, gt=0, le=1)
    task_marker_field: str | None = env_field("SALESFORCE_TASK_MARKER_FIELD")
    survey_ids: dict[str, str] = env_field("SALESFORCE_SURVEY_IDS", default_factory=dict)

    @field_validator("survey_ids")
    @classmethod
    def _survey_kinds(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - {"nps", "csat", "ces"})
        if unknown:
            raise ValueError(f"survey kinds must be nps, csat or ces (not {', '.join(unknown)})")
        return value

    @field_validator("survey_ids")
    @classmethod
    def _surveys_need_a_site(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # Guests answer survey invitations on an Experience Cloud site; Salesforce refuses them without one.
        if value and not info.data.get("community_id"):
            raise ValueError(
                "guest survey invitations need the Experience Cloud site: set SALESFORCE_COMMUNITY_ID "
                "(the site's Network id, 0DB…) or leave SALESFORCE_SURVEY_IDS unset to send links by email"
            )
        return value

    @field_validator("outbound_key")
    @classmethod
    def _long_outbound_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if len(value.get_secret_value()) < 32:
            raise ValueError(
                "the outbound-message key must be at least 32 characters; generate one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

    @field_validator("login_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

    @property
    def configured(self) -> bool:
        """Any setting that names the environment's org turns it on (a half-done set is refused when
        built). The External Client App's key alone names no org: with it, orgs install by OAuth."""
        by_key = self.consumer_key and (self.private_key_file or self.domain or self.refresh_token)
        return bool(self.instance_url or self.username or by_key)
