"""One validated settings object, built once at start-up.

Values come from the environment and, for everything but secrets, from an
optional ``offboard.toml`` in the working directory (or the file named by
``OFFBOARD_CONFIG``). The environment wins. Secrets are ``SecretStr``: they
print as ``**********`` and are only read where they are used.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

from connector.errors import SettingsInvalid

log = logging.getLogger("offboard.settings")

DEV_SECRET_KEY = "offboard-development-key-not-for-production"
MIN_SECRET_CHARS = 32  # production's floor for the secret key and the shared webhook secrets
# Shared secrets that authenticate inbound calls (the generic endpoint's whsec_ secret has its
# own rule: at least 16 random bytes, in every environment).
WEBHOOK_SECRETS = ("hubspot_client_secret", "salesforce_webhook_secret", "salesforce_outbound_key")


def _env(name: str, default: Any = None, **kw: Any) -> Any:
    """A field read from exactly the environment variable ``name``."""
    if "default_factory" in kw:
        return Field(validation_alias=AliasChoices(name), **kw)
    return Field(default, validation_alias=AliasChoices(name), **kw)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        # env_ignore_empty: an empty variable never reaches a JSON-decoded field (OFFBOARD_ROLES="").
        extra="ignore",
        case_sensitive=True,
        populate_by_name=False,
        frozen=True,
        env_ignore_empty=True,
    )

    env: Literal["development", "test", "production"] = _env("OFFBOARD_ENV", "development")
    database_url: str = _env("OFFBOARD_DATABASE_URL", "sqlite:///var/offboard.db")
    playbooks: Path = _env("OFFBOARD_PLAYBOOKS", Path("./playbooks"))
    public_url: str = _env("OFFBOARD_PUBLIC_URL", "http://127.0.0.1:8080")
    secret_key: SecretStr = _env("OFFBOARD_SECRET_KEY", SecretStr(DEV_SECRET_KEY))
    webhook_secret: SecretStr | None = _env("OFFBOARD_WEBHOOK_SECRET")
    timezone: str = _env("OFFBOARD_TIMEZONE", "UTC")
    roles: dict[str, str | dict[str, str]] = _env("OFFBOARD_ROLES", default_factory=dict)
    fallback_owner: str | None = _env("OFFBOARD_FALLBACK_OWNER")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = _env("OFFBOARD_LOG_LEVEL", "INFO")
    log_format: Literal["text", "json"] = _env("OFFBOARD_LOG_FORMAT", "text")
    # When set, GET /metrics answers only to "Authorization: Bearer <token>".
    metrics_token: SecretStr | None = _env("OFFBOARD_METRICS_TOKEN")
    # A deal whose close lies further back than this starts nothing (a replayed or forged close).
    max_close_age_days: int = _env("OFFBOARD_MAX_CLOSE_AGE_DAYS", 30, ge=0, le=3650)

    # Who the client pages and the texts that ask for an answer say is asking.
    brand_name: str | None = _env("OFFBOARD_BRAND_NAME")
    brand_logo_url: str | None = _env("OFFBOARD_BRAND_LOGO_URL")
    brand_reply_to: str | None = _env("OFFBOARD_BRAND_REPLY_TO")

    # The worker: how it claims, retries and gives up.
    worker_poll_seconds: float = _env("OFFBOARD_WORKER_POLL_SECONDS", 1.0, gt=0)
    worker_batch: int = _env("OFFBOARD_WORKER_BATCH", 20, ge=1, le=500)
    # A live worker renews its leases three times a lease (at most every 5 s), so a short
    # lease costs nothing while it lives and hands a dead one's rows over within seconds.
    # Below 5 s one slow database write between two renewals could lose a live worker's lease.
    lease_seconds: int = _env("OFFBOARD_LEASE_SECONDS", 20, ge=5)
    max_attempts: int = _env("OFFBOARD_MAX_ATTEMPTS", 8, ge=1, le=100)
    retry_base_seconds: float = _env("OFFBOARD_RETRY_BASE_SECONDS", 30.0, ge=0)
    retry_max_seconds: float = _env("OFFBOARD_RETRY_MAX_SECONDS", 3600.0, ge=0)
    inline_retries: int = _env("OFFBOARD_INLINE_RETRIES", 3, ge=1, le=10)
    inline_retry_wait_seconds: float = _env("OFFBOARD_INLINE_RETRY_WAIT_SECONDS", 0.5, ge=0)

    sweep_interval_seconds: int = _env("OFFBOARD_SWEEP_INTERVAL_SECONDS", 3600, ge=0)
    defer_seconds: int = _env("OFFBOARD_DEFER_SECONDS", 900, ge=1)
    link_max_age_days: int = _env("OFFBOARD_LINK_MAX_AGE_DAYS", 30, ge=1, le=365)
    survey_fatigue_days: int = _env("OFFBOARD_SURVEY_FATIGUE_DAYS", 90, ge=0, le=3650)

    # The sandbox CRM: the embedded default, the demo, and the core's test fake.
    sandbox_enabled: bool = _env("OFFBOARD_SANDBOX", True)

    hubspot_access_token: SecretStr | None = _env("HUBSPOT_ACCESS_TOKEN")
    hubspot_client_secret: SecretStr | None = _env("HUBSPOT_CLIENT_SECRET")
    hubspot_api_base_url: str = _env("HUBSPOT_API_BASE_URL", "https://api.hubapi.com")
    hubspot_contract_type_property: str = _env("HUBSPOT_CONTRACT_TYPE_PROPERTY", "contract_type")
    hubspot_contract_end_property: str = _env("HUBSPOT_CONTRACT_END_PROPERTY", "contract_end_date")
    # HubSpot's 10-second limit is per app and account (the daily one is shared by the account's
    # apps); this is one process's share of the app's window, and the search API's own limit.
    hubspot_rate_limit_per_10s: int = _env("HUBSPOT_RATE_LIMIT_PER_10S", 100, ge=1, le=1000)
    hubspot_search_rate_limit_per_s: int = _env("HUBSPOT_SEARCH_RATE_LIMIT_PER_S", 4, ge=1, le=50)
    # How long HubSpot's search may miss a record just written: a write whose outcome is
    # unknown is looked for only once this has passed.
    hubspot_search_lag_seconds: float = _env("HUBSPOT_SEARCH_LAG_SECONDS", 20.0, ge=0, le=300)

    salesforce_instance_url: str | None = _env("SALESFORCE_INSTANCE_URL")
    salesforce_access_token: SecretStr | None = _env("SALESFORCE_ACCESS_TOKEN")
    salesforce_username: str | None = _env("SALESFORCE_USERNAME")
    salesforce_password: SecretStr | None = _env("SALESFORCE_PASSWORD")
    salesforce_security_token: SecretStr | None = _env("SALESFORCE_SECURITY_TOKEN")
    salesforce_consumer_key: str | None = _env("SALESFORCE_CONSUMER_KEY")
    salesforce_consumer_secret: SecretStr | None = _env("SALESFORCE_CONSUMER_SECRET")
    salesforce_private_key_file: Path | None = _env("SALESFORCE_PRIVATE_KEY_FILE")
    salesforce_domain: str | None = _env("SALESFORCE_DOMAIN")
    salesforce_org_id: str | None = _env("SALESFORCE_ORG_ID")
    salesforce_webhook_secret: SecretStr | None = _env("SALESFORCE_WEBHOOK_SECRET")
    # Outbound messages carry no signature: the key in their URL is what authenticates them.
    salesforce_outbound_key: SecretStr | None = _env("SALESFORCE_OUTBOUND_KEY")
    salesforce_refresh_token: SecretStr | None = _env("SALESFORCE_REFRESH_TOKEN")
    salesforce_login_url: str = _env("SALESFORCE_LOGIN_URL", "https://login.salesforce.com")
    # The Experience Cloud site guest survey invitations are sent through.
    salesforce_community_id: str | None = _env("SALESFORCE_COMMUNITY_ID")
    salesforce_contract_type_field: str = _env("SALESFORCE_CONTRACT_TYPE_FIELD", "Type")
    salesforce_contract_end_field: str = _env("SALESFORCE_CONTRACT_END_FIELD", "Contract.EndDate")
    # Other integrations share the org's daily API allocation: past this share, non-urgent work waits.
    salesforce_api_budget_share: float = _env("SALESFORCE_API_BUDGET_SHARE", 0.8, gt=0, le=1)
    salesforce_task_marker_field: str | None = _env("SALESFORCE_TASK_MARKER_FIELD")
    salesforce_survey_ids: dict[str, str] = _env("SALESFORCE_SURVEY_IDS", default_factory=dict)

    @field_validator("salesforce_survey_ids")
    @classmethod
    def _survey_kinds(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - {"nps", "csat", "ces"})
        if unknown:
            raise ValueError(f"survey kinds must be nps, csat or ces (not {', '.join(unknown)})")
        return value

    @field_validator("salesforce_survey_ids")
    @classmethod
    def _surveys_need_a_site(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        # Guests answer survey invitations on an Experience Cloud site; Salesforce refuses them without one.
        if value and not info.data.get("salesforce_community_id"):
            raise ValueError(
                "guest survey invitations need the Experience Cloud site: set SALESFORCE_COMMUNITY_ID "
                "(the site's Network id, 0DB…) or leave SALESFORCE_SURVEY_IDS unset to send links by email"
            )
        return value

    @field_validator("salesforce_outbound_key")
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

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError("expected a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("public_url", "hubspot_api_base_url", "salesforce_login_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")

    @field_validator("webhook_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value().removeprefix("whsec_")
        try:
            decoded = base64.b64decode(raw + "==", validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("expected a Standard Webhooks secret: whsec_ followed by base64") from exc
        if len(decoded) < 16:
            raise ValueError("the secret is too short: use at least 16 random bytes (whsec_ + base64)")
        return value

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """An empty or blank value, from any source, is "not set": the setting keeps its default.

        A template's ``HUBSPOT_CLIENT_SECRET=`` must not switch an endpoint on with an empty key.
        """
        if not isinstance(data, dict):
            return data
        return {name: value for name, value in data.items() if not _blank(value)}

    @model_validator(mode="after")
    def _production_is_safe(self) -> Settings:
        problems = production_problems(self)
        if problems:
            raise ValueError("OFFBOARD_ENV=production refuses what is unsafe:\n" + "\n".join(problems))
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("OFFBOARD_CONFIG", "offboard.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml_path.is_file():
            sources.append(_NoSecretsToml(settings_cls, toml_path))
        return tuple(sources)


def _blank(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return isinstance(value, str) and not value.strip()


def production_problems(settings: Settings, *, web_processes: int = 1) -> list[str]:
    """What ``OFFBOARD_ENV=production`` refuses: one line per problem, each naming its variable."""
    if settings.env != "production":
        return []
    problems = _secret_problems(settings)
    if settings.sandbox_enabled:
        problems.append(
            "OFFBOARD_SANDBOX: the sandbox CRM is on (the default); set OFFBOARD_SANDBOX=false in production"
        )
    problems.extend(_public_url_problems(settings.public_url))
    if settings.is_sqlite and web_processes > 1:
        problems.append(
            f"OFFBOARD_DATABASE_URL: SQLite serves one web process, not {web_processes}; "
            "use Postgres, or serve with --workers 1"
        )
    return problems


def _secret_problems(settings: Settings) -> list[str]:
    problems = []
    key = settings.secret_key.get_secret_value()
    if key == DEV_SECRET_KEY:
        problems.append(
            "OFFBOARD_SECRET_KEY: not set, so client links would be signed with the public development "
            f"key; set at least {MIN_SECRET_CHARS} random characters"
        )
    elif len(key) < MIN_SECRET_CHARS:
        problems.append(f"OFFBOARD_SECRET_KEY: shorter than {MIN_SECRET_CHARS} characters")
    for name in WEBHOOK_SECRETS:
        secret: SecretStr | None = getattr(settings, name)
        if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_CHARS:
            problems.append(f"{variable_name(name)}: shorter than {MIN_SECRET_CHARS} characters")
    return problems


def _public_url_problems(url: str) -> list[str]:
    parts = urlsplit(url)
    problems = []
    if parts.scheme != "https":
        problems.append("OFFBOARD_PUBLIC_URL: must start with https:// (clients open its links)")
    if _is_loopback(parts.hostname or ""):
        problems.append(
            f"OFFBOARD_PUBLIC_URL: {parts.hostname or 'no host'} is this machine, not an address "
            "clients and CRMs can reach"
        )
    return problems


def _is_loopback(host: str) -> bool:
    host = host.lower().rstrip(".")
    if not host or host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def log_startup_warnings(settings: Settings) -> list[str]:
    """Log (and return) what ``serve`` and ``worker`` warn about when they start."""
    warnings = []
    if settings.secret_key.get_secret_value() == DEV_SECRET_KEY:
        warnings.append(
            "OFFBOARD_SECRET_KEY is not set: client links are signed with the public development key, "
            f"so anyone could forge them; set at least {MIN_SECRET_CHARS} random characters before "
            "sending links to clients"
        )
    for warning in warnings:
        log.warning(warning)
    return warnings


def secret_variables() -> set[str]:
    """Names of the variables that hold secrets (never read from a file, never logged)."""
    return {
        variable_name(name)
        for name, field in Settings.model_fields.items()
        if field.annotation in (SecretStr, SecretStr | None)
    }


def variable_name(field_name: str) -> str:
    alias = Settings.model_fields[field_name].validation_alias
    assert isinstance(alias, AliasChoices)
    return str(alias.choices[0])


def all_variables() -> list[str]:
    """Every environment variable the settings read, in declaration order."""
    return ["OFFBOARD_CONFIG", *(variable_name(name) for name in Settings.model_fields)]


class _NoSecretsToml(TomlConfigSettingsSource):
    """``offboard.toml``, keyed by the variable names; secrets there are refused."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls, toml_file=path)
        leaked = sorted(set(self.toml_data) & secret_variables())
        if leaked:
            raise SettingsInvalid(f"{path}: {', '.join(leaked)} must come from the environment, not a file")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, or raise SettingsInvalid naming every bad variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsInvalid(_describe(exc)) from None
    except SettingsError as exc:  # a complex value (OFFBOARD_ROLES) that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = variable_name(found.group(1)) if found else "settings"
        raise SettingsInvalid(
            f'invalid settings:\n  {name}: expected JSON, e.g. {{"finance": "123"}}'
        ) from None


def _describe(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = error["loc"][0] if error["loc"] else ""
        name = variable_name(str(loc)) if loc in Settings.model_fields else str(loc or "settings")
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc:
            lines.append(f"{name}: {message}")
        else:  # a rule over several settings: its lines name their own variables
            lines.extend(message.splitlines())
    return "invalid settings:\n  " + "\n  ".join(lines)
