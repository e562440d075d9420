"""One validated settings object, built once at start-up.

Values come from the environment and, for everything but secrets, from an
optional ``offboard.toml`` in the working directory (or the file named by
``OFFBOARD_CONFIG``). The environment wins. Secrets are ``SecretStr``: they
print as ``**********`` and are only read where they are used.

``Settings`` holds the core's settings. Each CRM plugin brings its own section
(``HUBSPOT_*``, ``SALESFORCE_*``, ``OFFBOARD_SANDBOX``), a ``SettingsSection``
read the same way; ``load_settings`` reads them all at once, reports every bad
value together and hangs the sections on the settings: ``settings.crm("hubspot")``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
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
# Production's floor for the secret key and each CRM's inbound secrets (``CrmSettings.inbound_secrets``);
# the generic endpoint's whsec_ secret has its own rule: at least 16 random bytes, everywhere.
MIN_SECRET_CHARS = 32


def env_field(name: str, default: Any = None, **kw: Any) -> Any:
    """A field read from exactly the environment variable ``name``."""
    if "default_factory" in kw:
        return Field(validation_alias=AliasChoices(name), **kw)
    return Field(default, validation_alias=AliasChoices(name), **kw)


class SettingsSection(BaseSettings):
    """Settings read one way: exact variable names, empty means unset, ``offboard.toml`` without secrets.

    ``Settings`` is the core's section; each CRM plugin subclasses this for its own.
    """

    model_config = SettingsConfigDict(
        # env_ignore_empty: an empty variable never reaches a JSON-decoded field (OFFBOARD_ROLES="").
        extra="ignore",
        case_sensitive=True,
        populate_by_name=False,
        frozen=True,
        env_ignore_empty=True,
    )

    @model_validator(mode="before")
    @classmethod
    def _empty_is_unset(cls, data: Any) -> Any:
        """An empty or blank value, from any source, is "not set": the setting keeps its default.

        A template's ``HUBSPOT_CLIENT_SECRET=`` must not switch an endpoint on with an empty key.
        """
        if not isinstance(data, dict):
            return data
        return {name: value for name, value in data.items() if not _blank(value)}

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

    @classmethod
    def variable(cls, field_name: str) -> str:
        """The environment variable that sets ``field_name``."""
        alias = cls.model_fields[field_name].validation_alias
        assert isinstance(alias, AliasChoices)
        return str(alias.choices[0])

    @classmethod
    def secret_fields(cls) -> list[str]:
        return [
            name
            for name, field in cls.model_fields.items()
            if field.annotation in (SecretStr, SecretStr | None)
        ]

    def secret_values(self) -> list[str]:
        """The literal values of the secrets set here (what logs must never show)."""
        values = [getattr(self, name) for name in self.secret_fields()]
        return [value.get_secret_value() for value in values if value is not None]


class Settings(SettingsSection):
    """The core's settings; each CRM plugin's are reached with ``crm(name)``."""

    _crms: dict[str, CrmSettings] | None = PrivateAttr(default=None)

    env: Literal["development", "test", "production"] = env_field("OFFBOARD_ENV", "development")
    database_url: str = env_field("OFFBOARD_DATABASE_URL", "sqlite:///var/offboard.db")
    playbooks: Path = env_field("OFFBOARD_PLAYBOOKS", Path("./playbooks"))
    public_url: str = env_field("OFFBOARD_PUBLIC_URL", "http://127.0.0.1:8080")
    secret_key: SecretStr = env_field("OFFBOARD_SECRET_KEY", SecretStr(DEV_SECRET_KEY))
    webhook_secret: SecretStr | None = env_field("OFFBOARD_WEBHOOK_SECRET")
    # Fernet keys sealing installed accounts' tokens, comma-separated: the first encrypts, all
    # decrypt (connector/keyring.py). Unset: installs by OAuth are off.
    encryption_keys: SecretStr | None = env_field("OFFBOARD_ENCRYPTION_KEYS")
    timezone: str = env_field("OFFBOARD_TIMEZONE", "UTC")
    roles: dict[str, str | dict[str, str]] = env_field("OFFBOARD_ROLES", default_factory=dict)
    fallback_owner: str | None = env_field("OFFBOARD_FALLBACK_OWNER")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = env_field("OFFBOARD_LOG_LEVEL", "INFO")
    log_format: Literal["text", "json"] = env_field("OFFBOARD_LOG_FORMAT", "text")
    # When set, GET /metrics answers only to "Authorization: Bearer <token>".
    metrics_token: SecretStr | None = env_field("OFFBOARD_METRICS_TOKEN")
    # A deal whose close lies further back than this starts nothing (a replayed or forged close).
    max_close_age_days: int = env_field("OFFBOARD_MAX_CLOSE_AGE_DAYS", 30, ge=0, le=3650)

    # Who the client pages and the texts that ask for an answer say is asking.
    brand_name: str | None = env_field("OFFBOARD_BRAND_NAME")
    brand_logo_url: str | None = env_field("OFFBOARD_BRAND_LOGO_URL")
    brand_reply_to: str | None = env_field("OFFBOARD_BRAND_REPLY_TO")

    # The worker: how it claims, retries and gives up.
    worker_poll_seconds: float = env_field("OFFBOARD_WORKER_POLL_SECONDS", 1.0, gt=0)
    worker_batch: int = env_field("OFFBOARD_WORKER_BATCH", 100, ge=1, le=500)
    # Groups of due actions (one kind, one CRM account) written at once, each call within
    # the account's budget: a CRM's latency, not its limit, would otherwise set the pace.
    worker_concurrency: int = env_field("OFFBOARD_WORKER_CONCURRENCY", 4, ge=1, le=32)
    # A live worker renews its leases three times a lease (at most every 5 s), so a short
    # lease costs nothing while it lives and hands a dead one's rows over within seconds.
    # Below 5 s one slow database write between two renewals could lose a live worker's lease.
    lease_seconds: int = env_field("OFFBOARD_LEASE_SECONDS", 20, ge=5)
    max_attempts: int = env_field("OFFBOARD_MAX_ATTEMPTS", 8, ge=1, le=100)
    retry_base_seconds: float = env_field("OFFBOARD_RETRY_BASE_SECONDS", 30.0, ge=0)
    retry_max_seconds: float = env_field("OFFBOARD_RETRY_MAX_SECONDS", 3600.0, ge=0)
    inline_retries: int = env_field("OFFBOARD_INLINE_RETRIES", 3, ge=1, le=10)
    inline_retry_wait_seconds: float = env_field("OFFBOARD_INLINE_RETRY_WAIT_SECONDS", 0.5, ge=0)

    sweep_interval_seconds: int = env_field("OFFBOARD_SWEEP_INTERVAL_SECONDS", 3600, ge=0)
    # The tracking pass: open checklists' tasks read back, so a missed task webhook costs minutes.
    track_interval_seconds: int = env_field("OFFBOARD_TRACK_INTERVAL_SECONDS", 300, ge=0)
    defer_seconds: int = env_field("OFFBOARD_DEFER_SECONDS", 900, ge=1)
    link_max_age_days: int = env_field("OFFBOARD_LINK_MAX_AGE_DAYS", 30, ge=1, le=365)
    survey_fatigue_days: int = env_field("OFFBOARD_SURVEY_FATIGUE_DAYS", 90, ge=0, le=3650)

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

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return http_url(value)

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

    @field_validator("encryption_keys")
    @classmethod
    def _fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            from connector.keyring import parse_keys

            parse_keys(value.get_secret_value())  # its errors name a key's position, never the key
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def crm(self, name: str) -> CrmSettings:
        """The settings of the CRM plugin called ``name`` (``HUBSPOT_*`` for "hubspot"…)."""
        return self.crms[name]

    @property
    def crms(self) -> Mapping[str, CrmSettings]:
        """Every CRM plugin's settings, by plugin name, in the registry's order."""
        if self._crms is None:  # built directly, not by load_settings: read them now
            self._crms = _crm_sections({})
        return self._crms

    def secret_values(self) -> list[str]:
        """The literal values of every secret setting, the CRMs' included (what logs must never show)."""
        return [
            *super().secret_values(),
            *(v for section in self.crms.values() for v in section.secret_values()),
        ]


class CrmSettings(SettingsSection):
    """A CRM plugin's settings: read like the core's, from the plugin's own variables.

    They describe the environment's connection to that CRM (single-account mode).
    """

    # Fields holding a shared secret that authenticates inbound calls: production wants them long.
    inbound_secrets: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def of(cls, found: CrmSettings | Settings) -> Self:
        """This plugin's settings: ``found`` itself (a connection's), or the section of the core's."""
        if isinstance(found, Settings):
            found = next((s for s in found.crms.values() if isinstance(s, cls)), found)
        if not isinstance(found, cls):
            raise TypeError(f"expected {cls.__name__}, not {type(found).__name__}")
        return found

    @property
    def configured(self) -> bool:
        """Whether these settings turn the CRM on for the environment's account."""
        return False

    def production_problems(self) -> list[str]:
        """What ``OFFBOARD_ENV=production`` refuses in these settings, one line each naming its variable."""
        return []


def _blank(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return isinstance(value, str) and not value.strip()


def http_url(value: str) -> str:
    """An http(s) base URL without its trailing slash, or ValueError."""
    if not value.startswith(("http://", "https://")):
        raise ValueError("expected an http:// or https:// URL")
    return value.rstrip("/")


def production_problems(settings: Settings, *, web_processes: int = 1) -> list[str]:
    """What ``OFFBOARD_ENV=production`` refuses: one line per problem, each naming its variable."""
    if settings.env != "production":
        return []
    problems = _secret_problems(settings)
    for section in settings.crms.values():
        problems.extend(section.production_problems())
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
    for section in settings.crms.values():
        for name in section.inbound_secrets:
            secret: SecretStr | None = getattr(section, name)
            if secret is not None and len(secret.get_secret_value()) < MIN_SECRET_CHARS:
                problems.append(f"{section.variable(name)}: shorter than {MIN_SECRET_CHARS} characters")
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


def sections() -> list[type[SettingsSection]]:
    """The core's settings, then each CRM plugin's, in the registry's order."""
    import adapters  # the registry: the plugins' settings models, no SDK imported

    return [Settings, *(plugin.settings for plugin in adapters.plugins())]


def secret_variables() -> set[str]:
    """Names of the variables that hold secrets (never read from a file, never logged)."""
    return {model.variable(name) for model in sections() for name in model.secret_fields()}


def variable_name(field_name: str, model: type[SettingsSection] | None = None) -> str:
    """The variable that sets ``field_name`` of ``model`` (the core's settings by default)."""
    return (model or Settings).variable(field_name)


def all_variables() -> list[str]:
    """Every environment variable the settings read, in declaration order, the CRMs' included."""
    return ["OFFBOARD_CONFIG", *(model.variable(name) for model in sections() for name in model.model_fields)]


class _NoSecretsToml(TomlConfigSettingsSource):
    """``offboard.toml``, keyed by the variable names; secrets there are refused."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls, toml_file=path)
        leaked = sorted(set(self.toml_data) & secret_variables())
        if leaked:
            raise SettingsInvalid(f"{path}: {', '.join(leaked)} must come from the environment, not a file")


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, the CRMs' included, or raise SettingsInvalid naming every bad variable.

    ``overrides`` are keyed by variable name, as in the environment, whichever section reads them.
    """
    problems: list[str] = []
    core = _read(Settings, overrides, problems)
    crms = _crm_sections(overrides, problems)
    if problems or core is None:
        raise SettingsInvalid("invalid settings:\n  " + "\n  ".join(problems))
    assert isinstance(core, Settings)
    core._crms = crms
    unsafe = production_problems(core)
    if unsafe:
        lines = ["OFFBOARD_ENV=production refuses what is unsafe:", *unsafe]
        raise SettingsInvalid("invalid settings:\n  " + "\n  ".join(lines))
    return core


def _crm_sections(overrides: dict[str, Any], problems: list[str] | None = None) -> dict[str, CrmSettings]:
    """Each CRM plugin's settings; what is wrong goes to ``problems`` (raised at once without it)."""
    import adapters

    found: list[str] = []
    sections: dict[str, CrmSettings] = {}
    for plugin in adapters.plugins():
        section = _read(plugin.settings, overrides, found)
        if isinstance(section, CrmSettings):
            sections[plugin.name] = section
    if problems is not None:
        problems.extend(found)
    elif found:
        raise SettingsInvalid("invalid settings:\n  " + "\n  ".join(found))
    return sections


def _read(
    model: type[SettingsSection], overrides: dict[str, Any], problems: list[str]
) -> SettingsSection | None:
    try:
        return model(**overrides)
    except ValidationError as exc:
        problems.extend(_describe(exc, model))
        return None
    except SettingsError as exc:  # a complex value (OFFBOARD_ROLES) that is not JSON
        found = re.search(r'field "(\w+)"', str(exc))
        name = (
            model.variable(found.group(1)) if found and found.group(1) in model.model_fields else "settings"
        )
        raise SettingsInvalid(
            f'invalid settings:\n  {name}: expected JSON, e.g. {{"finance": "123"}}'
        ) from None


def _describe(exc: ValidationError, model: type[SettingsSection]) -> list[str]:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = error["loc"][0] if error["loc"] else ""
        name = model.variable(str(loc)) if loc in model.model_fields else str(loc or "settings")
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc:
            lines.append(f"{name}: {message}")
        else:  # a rule over several settings: its lines name their own variables
            lines.extend(message.splitlines())
    return lines
