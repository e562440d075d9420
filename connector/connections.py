"""Connections: the CRM accounts installed by OAuth, their sealed tokens and their own settings.

``Connections(store, keyring)`` is the one way in. An install starts with ``start_install``
(a nonce the web side signs into the ``state`` it sends to the CRM; only the nonce's SHA-256
is stored, with Salesforce's PKCE code verifier sealed) and comes back through
``take_state`` (single use: taking it deletes it) and ``save_install`` (the same portal or
org installed again updates its row and connects it again). Tokens are sealed with
``OFFBOARD_ENCRYPTION_KEYS`` (``connector.keyring``) before they reach the database and
opened only when asked for (``StoredConnection.access_token()``).

A refresh runs one at a time per connection across every process: ``claim_refresh`` moves
``refresh_lock_until`` forward in one conditional UPDATE, so of two processes asking at
once exactly one wins; ``update_tokens`` stores the new tokens and lets the claim go.

``remove`` takes an account's tokens away and marks its row ``removed``, keeping its runs
and history (installing again brings it back); ``remove(..., purge=True)`` deletes the
connection and every row of that account in every table (a customer's erasure request),
and audits the purge with row counts only. Every table is either purged by a rule here or
listed in ``NO_ACCOUNT_ROWS`` with the reason; ``purge_rules()`` says which, and a table
with an ``account`` column that no rule reaches stops a purge before it deletes anything.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy import Table, delete, or_, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session

from connector.clock import Clock, utcnow
from connector.errors import ConnectorError
from connector.keyring import EncryptionOff, Keyring
from connector.settings import Settings, http_url
from connector.store import AuditEntry, Base, Event, Run, Store
from connector.store.db import insert
from connector.store.tables import AccountConnection, OAuthState, RateCall, RateWindow
from connector.usecases.uow import unit_of_work

STATE_TTL = timedelta(minutes=10)
CONNECTED, DISCONNECTED, REMOVED = "connected", "disconnected", "removed"
CHUNK = 500  # ids per IN (…): well under SQLite's and Postgres' parameter limits


# --- errors -------------------------------------------------------------------------------------


class ConnectionMissing(ConnectorError):
    """No connection to this CRM account is stored here."""

    def __init__(self, crm: str, account: str) -> None:
        super().__init__(f"no connection to {crm} account {account!r}")


class NotConnected(ConnectorError):
    """The connection holds no token to use: removed by an operator."""


class ConfigInvalid(ConnectorError):
    """A per-account setting that is unknown or malformed; the message names it."""


class StateRefused(ConnectorError):
    """An OAuth ``state`` that cannot complete an install (the callback answers 400)."""

    reason = "refused"


class StateUnknown(StateRefused):
    """Never issued here, issued for another CRM, or already used."""

    reason = "unknown or already used"


class StateExpired(StateRefused):
    """Issued more than ten minutes ago."""

    reason = "expired"


# --- per-account settings -----------------------------------------------------------------------

ROLE_NAME = re.compile(r"[\w.-]{1,100}")  # as a playbook names one: owner: role:<name>
USER_ID = re.compile(r"[\w.@-]{1,64}")  # as a playbook names a CRM user: owner: user:<id>
CRM_FIELD = re.compile(r"[A-Za-z][A-Za-z0-9_.]{0,99}")  # contract_end_date, Contract.EndDate, End__c
KNOWN_KEYS = (
    "role.<name>",
    "time_zone",
    "contract_type_property",
    "contract_end_property",
    "fallback_owner",
    "brand_name",
    "brand_logo_url",
    "brand_reply_to",
)


class AccountConfig(BaseModel):
    """A connection's own settings; each one unset falls back to the environment's value.

    The same rules as the environment's: ``time_zone`` as ``OFFBOARD_TIMEZONE``, ``roles`` and
    ``fallback_owner`` as ``OFFBOARD_ROLES`` and ``OFFBOARD_FALLBACK_OWNER`` (one CRM user id
    each, as a playbook's ``user:<id>``), the brand as ``OFFBOARD_BRAND_*``, the contract
    properties as the CRM's ``…_CONTRACT_TYPE_PROPERTY``/``…_FIELD`` variables.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    roles: dict[str, str] = Field(default_factory=dict)
    time_zone: str | None = None
    contract_type_property: str | None = None
    contract_end_property: str | None = None
    fallback_owner: str | None = None
    brand_name: str | None = Field(None, max_length=200)
    brand_logo_url: str | None = None
    brand_reply_to: str | None = None

    @field_validator("roles")
    @classmethod
    def _roles(cls, value: dict[str, str]) -> dict[str, str]:
        for name, user in value.items():
            if not ROLE_NAME.fullmatch(name):
                raise ValueError(f"role {name!r}: a role name is letters, digits, '_', '.' or '-'")
            _user_id(user, f"role {name}")
        return value

    @field_validator("time_zone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        return None if value is None else Settings._known_zone(value)

    @field_validator("contract_type_property", "contract_end_property")
    @classmethod
    def _crm_field(cls, value: str | None) -> str | None:
        if value is not None and not CRM_FIELD.fullmatch(value):
            raise ValueError("expected a CRM property or field name (letters, digits, '_' and '.')")
        return value

    @field_validator("fallback_owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        return None if value is None else _user_id(value, "the fallback owner")

    @field_validator("brand_name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and any(ord(c) < 32 for c in value):
            raise ValueError("a name on one line, without control characters")
        return value

    @field_validator("brand_logo_url")
    @classmethod
    def _logo(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # What the client pages accept as a logo (connector/web/brand.py, logo_origin): a plain
        # http(s) URL with nothing that could end or extend a Content-Security-Policy source.
        if any(c in value for c in " '\";,\n\r\t"):
            raise ValueError("expected a plain http:// or https:// URL")
        return http_url(value)

    @field_validator("brand_reply_to")
    @classmethod
    def _reply_to(cls, value: str | None) -> str | None:
        if value is None:
            return None
        from email_validator import EmailNotValidError, validate_email

        try:
            return validate_email(value, check_deliverability=False).normalized
        except EmailNotValidError as exc:
            raise ValueError(f"not an email address: {exc}") from None

    def with_setting(self, key: str, value: str) -> AccountConfig:
        """This config with ``key`` set to ``value`` (an empty value unsets it), or ConfigInvalid."""
        data = self.model_dump(exclude_none=True)
        value = value.strip()
        if key.startswith("role."):
            name = key.removeprefix("role.")
            roles = dict(self.roles)
            if value:
                roles[name] = value
            else:
                roles.pop(name, None)
            data["roles"] = roles
        elif key in KNOWN_KEYS:
            data[key] = value or None
        else:
            raise ConfigInvalid(f"unknown setting {key!r}; the known ones are: {', '.join(KNOWN_KEYS)}")
        try:
            return AccountConfig.model_validate(data)
        except ValidationError as exc:
            error = exc.errors(include_input=False, include_url=False)[0]
            message = str(error["msg"]).removeprefix("Value error, ")
            raise ConfigInvalid(f"{key}: {message}") from None

    def stored(self) -> dict[str, Any]:
        """As the ``config`` column holds it: only what is set."""
        return self.model_dump(exclude_none=True, exclude_defaults=True)

    def over(self, settings: Settings) -> AccountSettings:
        """The settings one account works with: its own where set, else the environment's."""
        return AccountSettings(
            roles={**settings.roles, **self.roles},
            time_zone=self.time_zone or settings.timezone,
            fallback_owner=self.fallback_owner or settings.fallback_owner,
            brand_name=self.brand_name or settings.brand_name,
            brand_logo_url=self.brand_logo_url or settings.brand_logo_url,
            brand_reply_to=self.brand_reply_to or settings.brand_reply_to,
            contract_type_property=self.contract_type_property,
            contract_end_property=self.contract_end_property,
        )


def _user_id(value: str, what: str) -> str:
    if not USER_ID.fullmatch(value):
        raise ValueError(f"{what}: expected a CRM user id (letters, digits, '_', '.', '@' or '-')")
    return value


@dataclass(frozen=True)
class AccountSettings:
    """An account's effective settings. A contract property left None is the CRM plugin's own."""

    roles: dict[str, str | dict[str, str]]
    time_zone: str
    fallback_owner: str | None
    brand_name: str | None
    brand_logo_url: str | None
    brand_reply_to: str | None
    contract_type_property: str | None
    contract_end_property: str | None


# --- what is read back --------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredConnection:
    """One connection as stored; its tokens are opened only by ``access_token()``/``refresh_token()``."""

    id: int
    crm: str
    account: str
    status: str
    status_reason: str | None
    installed_by: str | None
    installed_at: datetime
    updated_at: datetime
    scopes: tuple[str, ...]
    token_expires_at: datetime | None
    instance_url: str | None
    config: AccountConfig
    sealed_access: str | None = field(default=None, repr=False)
    sealed_refresh: str | None = field(default=None, repr=False)
    keyring: Keyring | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, row: AccountConnection, keyring: Keyring | None) -> StoredConnection:
        return cls(
            id=row.id,
            crm=row.crm,
            account=row.account,
            status=row.status,
            status_reason=row.status_reason,
            installed_by=row.installed_by,
            installed_at=row.installed_at,
            updated_at=row.updated_at,
            scopes=tuple(row.scopes or ()),
            token_expires_at=row.token_expires_at,
            instance_url=row.instance_url,
            config=AccountConfig.model_validate(row.config or {}),
            sealed_access=row.access_token,
            sealed_refresh=row.refresh_token,
            keyring=keyring,
        )

    @property
    def has_access_token(self) -> bool:
        return self.sealed_access is not None

    @property
    def has_refresh_token(self) -> bool:
        return self.sealed_refresh is not None

    def access_token(self) -> SecretStr:
        """The access token, opened now; NotConnected when the connection holds none."""
        if self.sealed_access is None:
            raise NotConnected(f"{self.crm} account {self.account} holds no access token ({self.status})")
        return SecretStr(self._open(self.sealed_access, "access token"))

    def refresh_token(self) -> SecretStr | None:
        """The refresh token, opened now; None when the CRM gave none."""
        if self.sealed_refresh is None:
            return None
        return SecretStr(self._open(self.sealed_refresh, "refresh token"))

    def expires_within(self, now: datetime, margin: timedelta) -> bool:
        """Whether the access token expires before ``now + margin`` (an unknown expiry never does)."""
        return self.token_expires_at is not None and self.token_expires_at <= now + margin

    def settings(self, settings: Settings) -> AccountSettings:
        return self.config.over(settings)

    def _open(self, sealed: str, what: str) -> str:
        if self.keyring is None:
            raise EncryptionOff()
        return self.keyring.decrypt(sealed, what=f"the {what} of {self.crm} account {self.account}")


@dataclass(frozen=True)
class TakenState:
    """An install's state, taken (and so deleted): the CRM it was for and its PKCE verifier."""

    crm: str
    created_at: datetime
    code_verifier: SecretStr | None


@dataclass(frozen=True)
class Removal:
    """What ``remove`` did: the tokens taken away, and with a purge the rows deleted per table."""

    crm: str
    account: str
    purged: bool
    rows: dict[str, int] = field(default_factory=dict)


def nonce_hash(nonce: str) -> str:
    """What ``oauth_states`` keeps of a nonce: its SHA-256, hex."""
    return hashlib.sha256(nonce.encode()).hexdigest()


# --- the repository -----------------------------------------------------------------------------


class Connections:
    """The connections stored here, and every change to them (each in one unit of work)."""

    def __init__(self, store: Store, keyring: Keyring | None, *, clock: Clock = utcnow) -> None:
        self.store = store
        self.keyring = keyring
        self.clock = clock

    def _sealing(self) -> Keyring:
        if self.keyring is None:
            raise EncryptionOff()
        return self.keyring

    def _seal(self, value: str | SecretStr | None) -> str | None:
        if value is None:
            return None
        plain = value.get_secret_value() if isinstance(value, SecretStr) else value
        return self._sealing().encrypt(plain)

    # --- installs under way (``InstallStates``) ---------------------------------------------------

    def start_install(self, crm: str, *, code_verifier: str | SecretStr | None = None) -> str:
        """A new install's nonce, to sign into the ``state`` sent to the CRM (``InstallStates.start``)."""
        return InstallStates(self.store, self._sealing(), clock=self.clock).start(crm, code_verifier)

    def take_state(self, nonce: str, crm: str) -> TakenState:
        """The install's state, deleted as it is taken (``InstallStates.take``)."""
        return InstallStates(self.store, self._sealing(), clock=self.clock).take(nonce, crm)

    # --- installs and tokens --------------------------------------------------------------------

    def save_install(
        self,
        crm: str,
        account: str,
        *,
        access_token: str | SecretStr,
        refresh_token: str | SecretStr | None,
        expires_at: datetime | None,
        scopes: Sequence[str] = (),
        installed_by: str | None = None,
        instance_url: str | None = None,
        actor: str = "install",
    ) -> StoredConnection:
        """Store an install: a new row, or the same account's row updated and connected again.

        Installing again replaces the tokens, scopes, installer and instance; the account's own
        settings stay.
        """
        values: dict[str, Any] = {
            "status": CONNECTED,
            "status_reason": None,
            "installed_by": installed_by,
            "scopes": list(scopes),
            "access_token": self._seal(access_token),
            "refresh_token": self._seal(refresh_token),
            "token_expires_at": expires_at,
            "instance_url": instance_url,
            "refresh_lock_until": None,
        }
        with unit_of_work(self.store, actor=actor, clock=self.clock) as uow:
            session = uow.session
            values.update(installed_at=uow.now, updated_at=uow.now)
            session.execute(
                insert(session, AccountConnection)
                .values(crm=crm, account=account, config={}, **values)
                .on_conflict_do_nothing(index_elements=["crm", "account"])
            )
            row = _locked(session, crm, account)
            # Sealed just now, so unique: the row holds it only if this INSERT wrote it (drivers
            # disagree on the row count of an INSERT … ON CONFLICT DO NOTHING).
            first = row.access_token == values["access_token"]
            if not first:
                for name, value in values.items():
                    setattr(row, name, value)
            uow.audit(
                "connection.installed" if first else "connection.reinstalled",
                crm=crm,
                account=account,
                scopes=list(scopes),
            )
            session.flush()
            return StoredConnection.of(row, self.keyring)

    def update_tokens(
        self,
        crm: str,
        account: str,
        *,
        access_token: str | SecretStr,
        expires_at: datetime | None,
        refresh_token: str | SecretStr | None = None,
        instance_url: str | None = None,
    ) -> StoredConnection:
        """Store a refresh's tokens (a refresh token only if the CRM sent a new one); lets the claim go.

        NotConnected if an operator removed the connection meanwhile: its tokens stay deleted.
        """
        with self.store.session() as session:
            row = _locked(session, crm, account)
            if row.status == REMOVED:
                raise NotConnected(f"{crm} account {account} was removed; its new tokens are not stored")
            row.access_token = self._seal(access_token)
            if refresh_token is not None:
                row.refresh_token = self._seal(refresh_token)
            if instance_url is not None:
                row.instance_url = instance_url
            row.token_expires_at = expires_at
            row.refresh_lock_until = None
            row.updated_at = self.clock()
            session.flush()
            return StoredConnection.of(row, self.keyring)

    def claim_refresh(self, crm: str, account: str, until: datetime) -> bool:
        """Whether this process may refresh the account's tokens now (until ``until``).

        One conditional UPDATE: on Postgres a second claimer waits on the row lock, then finds
        the claim taken; on SQLite write transactions take turns. A claim not let go (a process
        that died mid-refresh) lapses at ``until``.
        """
        now = self.clock()
        with self.store.session() as session:
            claimed = session.execute(
                update(AccountConnection)
                .where(
                    AccountConnection.crm == crm,
                    AccountConnection.account == account,
                    AccountConnection.status == CONNECTED,
                    or_(
                        AccountConnection.refresh_lock_until.is_(None),
                        AccountConnection.refresh_lock_until <= now,
                    ),
                )
                .values(refresh_lock_until=until)
            )
            return bool(cast("CursorResult[Any]", claimed).rowcount)

    def release_refresh(self, crm: str, account: str) -> None:
        """Let a claim go without new tokens (the refresh failed and may be tried again)."""
        with self.store.session() as session:
            session.execute(
                update(AccountConnection)
                .where(AccountConnection.crm == crm, AccountConnection.account == account)
                .values(refresh_lock_until=None)
            )

    def mark_disconnected(
        self, crm: str, account: str, reason: str, *, actor: str = "refresh"
    ) -> StoredConnection:
        """The CRM refused the refresh (revoked, uninstalled): the account waits for a new install."""
        with unit_of_work(self.store, actor=actor, clock=self.clock) as uow:
            row = _locked(uow.session, crm, account)
            if row.status == REMOVED:  # nothing left to disconnect: it stays removed
                return StoredConnection.of(row, self.keyring)
            row.status, row.status_reason = DISCONNECTED, reason
            row.refresh_lock_until, row.updated_at = None, uow.now
            uow.audit("connection.disconnected", crm=crm, account=account, reason=reason)
            uow.session.flush()
            return StoredConnection.of(row, self.keyring)

    # --- reading --------------------------------------------------------------------------------

    def get(self, crm: str, account: str) -> StoredConnection | None:
        with self.store.read() as session:
            row = session.scalar(
                select(AccountConnection).where(
                    AccountConnection.crm == crm, AccountConnection.account == account
                )
            )
            return None if row is None else StoredConnection.of(row, self.keyring)

    def require(self, crm: str, account: str) -> StoredConnection:
        found = self.get(crm, account)
        if found is None:
            raise ConnectionMissing(crm, account)
        return found

    def list_all(self) -> list[StoredConnection]:
        with self.store.read() as session:
            rows = session.scalars(
                select(AccountConnection).order_by(AccountConnection.crm, AccountConnection.account)
            ).all()
            return [StoredConnection.of(row, self.keyring) for row in rows]

    # --- operators ------------------------------------------------------------------------------

    def set_config(
        self, crm: str, account: str, key: str, value: str, *, actor: str = "cli"
    ) -> StoredConnection:
        """Set one of the account's own settings (``KNOWN_KEYS``; an empty value unsets it)."""
        return self.configure(crm, account, [(key, value)], actor=actor)

    def configure(
        self, crm: str, account: str, changes: Sequence[tuple[str, str]], *, actor: str = "cli"
    ) -> StoredConnection:
        """Set several of the account's settings together: all of them, or (ConfigInvalid) none."""
        with unit_of_work(self.store, actor=actor, clock=self.clock) as uow:
            row = _locked(uow.session, crm, account)
            config = AccountConfig.model_validate(row.config or {})
            for key, value in changes:
                config = config.with_setting(key, value)
            row.config, row.updated_at = config.stored(), uow.now
            settled = {key: value.strip() or None for key, value in changes}
            uow.audit("connection.configured", crm=crm, account=account, settings=settled)
            uow.session.flush()
            return StoredConnection.of(row, self.keyring)

    def remove(
        self,
        crm: str,
        account: str,
        *,
        purge: bool = False,
        actor: str = "cli",
        budget_keys: Iterable[str] = (),
    ) -> Removal:
        """Take the account's tokens away (its row stays, ``removed``); with ``purge`` delete every
        row of the account in every table, the connection's own included.

        ``budget_keys``: the account's rate-window keys, as its CRM plugin names them (a hash of the
        account, so only the plugin knows them); their windows are purged too.
        """
        with unit_of_work(self.store, actor=actor, clock=self.clock) as uow:
            row = _locked(uow.session, crm, account)
            if not purge:
                row.status, row.status_reason = REMOVED, f"removed by {actor}"
                row.access_token = row.refresh_token = row.token_expires_at = None
                row.refresh_lock_until, row.updated_at = None, uow.now
                uow.audit("connection.removed", crm=crm, account=account)
                return Removal(crm=crm, account=account, purged=False)
            rows = purge_account(uow.session, crm, account, budget_keys=budget_keys)
            # Written after the purge, which it would otherwise delete: counts only, no content.
            uow.audit("connection.purged", crm=crm, account=account, rows=rows)
            return Removal(crm=crm, account=account, purged=True, rows=rows)

    def rotate_keys(self, *, actor: str = "cli") -> int:
        """Seal every stored token and code verifier again with the first key; how many were."""
        keyring = self._sealing()
        done = 0
        for chunk in self._connection_chunks():
            with self.store.session() as session:
                rows = session.scalars(
                    select(AccountConnection).where(AccountConnection.id.in_(chunk)).with_for_update()
                ).all()
                for row in rows:
                    where = f"{row.crm} account {row.account}"
                    if row.access_token is not None:
                        row.access_token = keyring.rotate(
                            row.access_token, what=f"the access token of {where}"
                        )
                        done += 1
                    if row.refresh_token is not None:
                        row.refresh_token = keyring.rotate(
                            row.refresh_token, what=f"the refresh token of {where}"
                        )
                        done += 1
        with unit_of_work(self.store, actor=actor, clock=self.clock) as uow:
            states = uow.session.scalars(
                select(OAuthState).where(OAuthState.code_verifier.is_not(None)).with_for_update()
            ).all()
            for state in states:
                state.code_verifier = keyring.rotate(
                    str(state.code_verifier), what="the code verifier of an install under way"
                )
                done += 1
            uow.audit("connection.keys_rotated", secrets=done)
        return done

    def _connection_chunks(self) -> Iterator[list[int]]:
        """Connection ids, a few hundred at a time: each chunk is re-sealed in its own transaction."""
        with self.store.read() as session:
            ids = list(session.scalars(select(AccountConnection.id).order_by(AccountConnection.id)))
        for start in range(0, len(ids), CHUNK):
            yield ids[start : start + CHUNK]


class InstallStates:
    """Installs under way: a state per install, single use, valid for ``STATE_TTL``."""

    def __init__(self, store: Store, keyring: Keyring, *, clock: Clock = utcnow) -> None:
        self.store = store
        self.keyring = keyring
        self.clock = clock

    def start(self, crm: str, code_verifier: str | SecretStr | None = None) -> str:
        """A new install's nonce (to sign into the ``state``), stored for ``STATE_TTL``.

        Expired states are cleared on the way. Only the nonce's SHA-256 is stored.
        """
        nonce = secrets.token_urlsafe(32)
        sealed = None
        if code_verifier is not None:
            plain = (
                code_verifier.get_secret_value() if isinstance(code_verifier, SecretStr) else code_verifier
            )
            sealed = self.keyring.encrypt(plain)
        now = self.clock()
        with self.store.session() as session:
            session.execute(delete(OAuthState).where(OAuthState.expires_at <= now))
            session.add(
                OAuthState(
                    nonce_hash=nonce_hash(nonce),
                    crm=crm,
                    created_at=now,
                    expires_at=now + STATE_TTL,
                    code_verifier=sealed,
                )
            )
        return nonce

    def take(self, nonce: str, crm: str) -> TakenState:
        """The state ``nonce`` names, deleted as it is taken: StateUnknown or StateExpired otherwise.

        Two callbacks presenting the same state: one deletes the row, the other finds it gone.
        """
        now = self.clock()
        with self.store.session() as session:
            row = session.get(OAuthState, nonce_hash(nonce))
            if row is None:
                raise StateUnknown()
            taken = session.execute(delete(OAuthState).where(OAuthState.nonce_hash == row.nonce_hash))
            if not cast("CursorResult[Any]", taken).rowcount:
                raise StateUnknown()
            found = (row.crm, row.created_at, row.expires_at, row.code_verifier)
        state_crm, created_at, expires_at, sealed = found
        if state_crm != crm:
            raise StateUnknown()
        if expires_at <= now:
            raise StateExpired()
        verifier = None
        if sealed is not None:
            verifier = SecretStr(self.keyring.decrypt(sealed, what="the install's code verifier"))
        return TakenState(crm=state_crm, created_at=created_at, code_verifier=verifier)


def _locked(session: Session, crm: str, account: str) -> AccountConnection:
    row = session.scalar(
        select(AccountConnection)
        .where(AccountConnection.crm == crm, AccountConnection.account == account)
        .with_for_update()
    )
    if row is None:
        raise ConnectionMissing(crm, account)
    return row


# --- purging an account -------------------------------------------------------------------------

# Tables that hold no account's rows, and why a purge leaves them.
NO_ACCOUNT_ROWS: dict[str, str] = {
    "schedules": "the deployment's periodic jobs",
    "workers": "live worker processes",
    "metric_counts": "counters labelled by kind, state and CRM, never by account",
    "oauth_states": "installs under way, before any account is known; gone within ten minutes",
}
# Purged by a rule of their own (below), not by the generic crm + account one.
OWN_RULES: dict[str, str] = {
    "events": "source and account: the CRM's own webhooks, sweep hits and generic events naming the CRM",
    "audit": "entries about the account's runs and actions, and entries naming the account",
    "rate_windows": "the account's budget keys, as its CRM plugin names them",
    "rate_calls": "the account's budget keys, as its CRM plugin names them",
}


def _tables() -> list[Table]:
    import adapters

    adapters.load_tables()  # the plugins' tables are purged (or classified) like the core's
    return list(Base.metadata.sorted_tables)


def _crm_records(table: Table) -> bool:
    """A CRM plugin's own records (the sandbox CRM's deals and tasks): the CRM's data, not ours
    about an account, as a HubSpot portal's own records are HubSpot's."""
    import adapters

    names = {p.name for p in adapters.plugins()}
    return "account" not in table.c and table.name.split("_", 1)[0] in names


def purge_rules() -> dict[str, str]:
    """How a purge reaches each table: by a rule, or (``NO_ACCOUNT_ROWS``) why it leaves it alone.

    A table missing here is one nobody has classified.
    """
    tables = _tables()
    rules: dict[str, str] = {}
    for table in tables:
        if table.name in OWN_RULES:
            rules[table.name] = OWN_RULES[table.name]
        elif {"crm", "account"} <= set(table.c.keys()):
            rules[table.name] = "crm and account"
        elif table.name in NO_ACCOUNT_ROWS:
            rules[table.name] = f"left: {NO_ACCOUNT_ROWS[table.name]}"
        elif _crm_records(table):
            rules[table.name] = "left: a CRM plugin's own records"
    changed = True
    while changed:  # rows pointing at purged rows (actions → runs, answers → runs…), to any depth
        changed = False
        for table in tables:
            parents = [fk.column.table.name for fk in table.foreign_keys]
            purged = [p for p in parents if p in rules and not rules[p].startswith("left:")]
            if table.name not in rules and purged:
                rules[table.name] = "rows of " + ", ".join(sorted(set(purged)))
                changed = True
    return rules


def purge_account(
    session: Session, crm: str, account: str, *, budget_keys: Iterable[str] = ()
) -> dict[str, int]:
    """Delete every row of ``crm``/``account`` in every table; rows deleted per table (none left out).

    Refuses, deleting nothing, while a table with an ``account`` column has no rule.
    """
    rules, tables = purge_rules(), _tables()
    unknown = [t.name for t in tables if "account" in t.c and t.name not in rules]
    if unknown:
        raise ConnectorError(f"cannot purge: no purge rule for table(s) {', '.join(unknown)}")
    doomed = _doomed_ids(session, tables, rules, crm, account)
    started = _chunked(session, lambda ids: select(Run.event_id).where(Run.id.in_(ids)), doomed["runs"])
    events = set(_event_ids(session, crm, account)) | {e for e in started if e is not None}
    counts: dict[str, int] = defaultdict(int)
    audit = _audit_ids(session, crm, account, doomed["runs"], doomed.get("actions", []))
    counts["audit"] += _delete_ids(session, AuditEntry.__table__, audit)
    for table in reversed(tables):  # children before their parents
        if table.name in OWN_RULES or rules.get(table.name, "left:").startswith("left:"):
            continue
        if table.name in doomed:
            counts[table.name] += _delete_ids(session, table, doomed[table.name])
        else:  # crm and account, without an id column
            gone = session.execute(delete(table).where(table.c.crm == crm, table.c.account == account))
            counts[table.name] += int(cast("CursorResult[Any]", gone).rowcount or 0)
    counts["events"] += _delete_ids(session, Event.__table__, sorted(events))
    for key in budget_keys:
        for rate_table in (cast(Table, RateCall.__table__), cast(Table, RateWindow.__table__)):
            gone = session.execute(delete(rate_table).where(rate_table.c.key.like(f"{key}:%")))
            counts[rate_table.name] += int(cast("CursorResult[Any]", gone).rowcount or 0)
    return {name: count for name, count in sorted(counts.items()) if count}


def _doomed_ids(
    session: Session, tables: list[Table], rules: dict[str, str], crm: str, account: str
) -> dict[str, list[Any]]:
    """The ids of the account's rows in every purged table with an ``id`` column, parents first."""
    doomed: dict[str, list[Any]] = {}
    for table in tables:
        rule = rules.get(table.name, "left:")
        if table.name in OWN_RULES or rule.startswith("left:") or "id" not in table.c:
            continue
        if rule == "crm and account":
            statement = select(table.c.id).where(table.c.crm == crm, table.c.account == account)
            doomed[table.name] = _ids(session, statement)
            continue
        found: set[Any] = set()
        for fk in table.foreign_keys:
            found.update(_pointing_at(session, table, fk.parent, doomed.get(fk.column.table.name, [])))
        doomed[table.name] = sorted(found)
    doomed.setdefault("runs", [])
    return doomed


def _pointing_at(session: Session, table: Table, column: Any, parent_ids: Sequence[Any]) -> list[Any]:
    """The ids of ``table``'s rows whose ``column`` holds one of ``parent_ids``."""
    return _chunked(session, lambda ids: select(table.c.id).where(column.in_(ids)), parent_ids)


def _ids(session: Session, statement: Any) -> list[Any]:
    return list(session.scalars(statement))


def _chunked(session: Session, statement: Callable[[list[Any]], Any], ids: Sequence[Any]) -> list[Any]:
    """What ``statement(chunk)`` selects, over ``ids`` a chunk at a time (the drivers' parameter limits)."""
    found: list[Any] = []
    for start in range(0, len(ids), CHUNK):
        found.extend(session.scalars(statement(list(ids[start : start + CHUNK]))))
    return found


def _delete_ids(session: Session, table: Any, ids: Sequence[Any]) -> int:
    total = 0
    for start in range(0, len(ids), CHUNK):
        gone = session.execute(delete(table).where(table.c.id.in_(ids[start : start + CHUNK])))
        total += int(cast("CursorResult[Any]", gone).rowcount or 0)
    return total


def _event_ids(session: Session, crm: str, account: str) -> list[int]:
    """The account's events: its CRM's webhooks, sweep hits for its deals, generic events for it."""
    own = _ids(session, select(Event.id).where(Event.source == crm, Event.account == account))
    swept = _ids(
        session,
        select(Event.id).where(
            Event.source == "sweep", Event.account == account, Event.event_key.like(f"{crm}:%")
        ),
    )
    generic = session.execute(
        select(Event.id, Event.payload).where(Event.source == "generic", Event.account == account)
    ).all()
    named = [id_ for id_, payload in generic if isinstance(payload, dict) and payload.get("crm") == crm]
    return own + swept + named


def _audit_ids(session: Session, crm: str, account: str, runs: list[int], actions: list[int]) -> list[int]:
    """Audit entries about the account: its runs', their actions', and those naming the account."""
    found = set(_chunked(session, lambda ids: select(AuditEntry.id).where(AuditEntry.run_id.in_(ids)), runs))
    found.update(
        _chunked(session, lambda ids: select(AuditEntry.id).where(AuditEntry.action_id.in_(ids)), actions)
    )
    named = session.execute(
        select(AuditEntry.id, AuditEntry.detail).where(AuditEntry.crm == crm, AuditEntry.run_id.is_(None))
    ).all()
    found.update(
        id_ for id_, detail in named if isinstance(detail, dict) and detail.get("account") == account
    )
    return sorted(found)
