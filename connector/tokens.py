"""Fresh access tokens for the CRM accounts installed by OAuth, one refresh at a time.

``TokenKeeper.token(crm, account)`` is what an installed account's ``Connection.token`` holds:
called before each CRM request, it answers an access token that is good for a while yet.

- This process keeps each account's token until ``REFRESH_MARGIN`` before its expiry
  (HubSpot's live 30 minutes), so most calls cost nothing; it looks at the stored connection
  again at least every ``RECHECK_SECONDS``, so an account removed or disconnected meanwhile
  is not written to for long.
- Then it reads the stored connection again: another process may have refreshed already.
- Still expiring, it claims the refresh (``Connections.claim_refresh``: one conditional UPDATE,
  so of every process and thread asking at once exactly one wins), checks once more that the
  stored token still needs it, asks the CRM's OAuth app for new tokens and stores them (a
  rotated refresh token too), which lets the claim go.
- The others wait, reading the stored connection again, until its expiry moves; past
  ``WAIT_SECONDS`` they raise ``CrmTransient`` and the work is tried again later.

A refresh token the CRM refuses (revoked, the app uninstalled: ``GrantRefused``) marks the
connection ``disconnected`` and raises ``Disconnected``: the account's work waits, using no
attempt, until it is installed again. A connection already disconnected (or removed) raises
``Disconnected`` without asking the CRM. A refresh that fails in passing lets the claim go and
raises ``CrmTransient``.

``AccessToken.renew(refused)`` is for a token the CRM refused before its time (a 401: clocks
drift, an install was replaced): it reads the stored token again and refreshes only if the
store still holds the refused one.

No token appears in a log line, an error or a ``repr``: only the CRM and the account are named.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from connector.clock import Clock, utcnow
from connector.connections import CONNECTED, Connections, NotConnected, StoredConnection
from connector.errors import CrmTransient, Disconnected, GrantRefused

if TYPE_CHECKING:
    from adapters.base import Grant, OAuthApp
    from connector.keyring import Keyring
    from connector.settings import Settings
    from connector.store import Store

log = logging.getLogger("offboard.tokens")

REFRESH_MARGIN = timedelta(minutes=5)  # refresh this long before the CRM's expiry, never after
CLAIM = timedelta(seconds=60)  # a refresh claim lapses after this (its process died mid-refresh)
WAIT_SECONDS = 10.0  # how long a process waits for another's refresh before giving up for now
POLL_SECONDS = 0.1
# A kept token is checked against the store this often, however far its expiry: an account an
# operator removed, or another process found disconnected, stops being written to within it.
RECHECK_SECONDS = 60.0

Apps = Callable[[str], "OAuthApp"]


@dataclass(frozen=True)
class _Cached:
    token: str
    expires_at: datetime | None
    read_at: float  # time.monotonic() when read from the store


class AccessToken:
    """One account's fresh access token, as ``Connection.token``: call it before each request."""

    def __init__(self, keeper: TokenKeeper, crm: str, account: str) -> None:
        self._keeper, self.crm, self.account = keeper, crm, account

    def __call__(self) -> str:
        return self._keeper.fresh(self.crm, self.account)

    def renew(self, refused: str) -> str:
        """A token in place of ``refused``, which the CRM turned down before its expiry."""
        return self._keeper.renew(self.crm, self.account, refused)

    def __repr__(self) -> str:
        return f"AccessToken({self.crm}, {self.account})"


class TokenKeeper:
    """The installed accounts' access tokens, kept fresh for every thread of this process."""

    def __init__(
        self,
        store: Store,
        keyring: Keyring,
        settings: Settings,
        clock: Clock = utcnow,
        *,
        apps: Apps | None = None,
        sleep: Callable[[float], None] = time.sleep,
        wait_seconds: float = WAIT_SECONDS,
    ) -> None:
        self.connections = Connections(store, keyring, clock=clock)
        self.settings, self.clock, self.sleep, self.wait_seconds = settings, clock, sleep, wait_seconds
        self._apps = apps or self._plugin_app
        self._cache: dict[tuple[str, str], _Cached] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def token(self, crm: str, account: str) -> AccessToken:
        """The account's token source, for its ``Connection``."""
        return AccessToken(self, crm, account)

    def fresh(self, crm: str, account: str) -> str:
        """An access token good for ``REFRESH_MARGIN`` at least; Disconnected or CrmTransient if none."""
        key = (crm, account)
        found = self._cached(key)
        if found is not None:
            return found
        with self._lock(key):  # this process's threads queue here; one of them asks the store
            return self._cached(key) or self._from_store(crm, account, refused=None)

    def renew(self, crm: str, account: str, refused: str) -> str:
        """A token other than ``refused`` (refreshed if the store holds no other)."""
        key = (crm, account)
        with self._lock(key):
            cached = self._cache.get(key)
            if cached is not None and cached.token != refused:
                return cached.token  # another thread renewed it meanwhile
            self._cache.pop(key, None)
            return self._from_store(crm, account, refused=refused)

    # --- the store, and the one refresh ---------------------------------------------------

    def _from_store(self, crm: str, account: str, *, refused: str | None) -> str:
        deadline = time.monotonic() + self.wait_seconds
        while True:
            stored = self._connected(crm, account)
            if self._usable(stored, refused):
                return self._keep(stored)
            if self.connections.claim_refresh(crm, account, self.clock() + CLAIM):
                return self._refresh(crm, account, refused)
            if time.monotonic() >= deadline:
                raise CrmTransient(
                    f"the {crm} account {account}'s access token is being refreshed by another "
                    "process; trying again shortly"
                )
            self.sleep(POLL_SECONDS)

    def _refresh(self, crm: str, account: str, refused: str | None) -> str:
        """Holding the claim: refresh, unless the store meanwhile holds a good token."""
        try:
            stored = self._connected(crm, account)
            if self._usable(stored, refused):  # refreshed between our read and our claim
                self.connections.release_refresh(crm, account)
                return self._keep(stored)
            grant = self._grant(stored)
        except Disconnected:
            raise
        except BaseException:
            self.connections.release_refresh(crm, account)
            raise
        try:
            saved = self.connections.update_tokens(
                crm,
                account,
                access_token=grant.access_token,
                expires_at=grant.expires_at,
                refresh_token=_rotated(stored, grant),
                instance_url=grant.instance_url,
            )
        except NotConnected:
            raise Disconnected(crm, account, "removed by an operator") from None
        log.info("refreshed the access token of %s account %s", crm, account)
        return self._keep(saved)

    def _grant(self, stored: StoredConnection) -> Grant:
        """New tokens from the CRM's OAuth app; Disconnected when it refuses the refresh token."""
        crm, account = stored.crm, stored.account
        refresh_token = stored.refresh_token()
        if refresh_token is None:
            raise self._disconnect(crm, account, "the CRM gave no refresh token to renew the access token")
        try:
            return self._apps(crm).refresh(account, refresh_token, stored.instance_url)
        except GrantRefused as exc:
            raise self._disconnect(crm, account, f"the CRM refused the refresh token: {exc}") from None

    def _disconnect(self, crm: str, account: str, reason: str) -> Disconnected:
        """Mark the connection disconnected (which lets the claim go); the error to raise."""
        self._cache.pop((crm, account), None)
        self.connections.mark_disconnected(crm, account, reason)
        log.warning("%s account %s is disconnected: %s", crm, account, reason)
        return Disconnected(crm, account, reason)

    def _connected(self, crm: str, account: str) -> StoredConnection:
        stored = self.connections.get(crm, account)
        if stored is None:
            self._cache.pop((crm, account), None)
            raise Disconnected(crm, account, "no connection is stored")
        if stored.status != CONNECTED or not stored.has_access_token:
            self._cache.pop((crm, account), None)
            raise Disconnected(crm, account, stored.status_reason or stored.status)
        return stored

    def _usable(self, stored: StoredConnection, refused: str | None) -> bool:
        if stored.expires_within(self.clock(), REFRESH_MARGIN):
            return False
        return refused is None or stored.access_token().get_secret_value() != refused

    def _keep(self, stored: StoredConnection) -> str:
        token = stored.access_token().get_secret_value()
        self._cache[(stored.crm, stored.account)] = _Cached(token, stored.token_expires_at, time.monotonic())
        return token

    def _cached(self, key: tuple[str, str]) -> str | None:
        cached = self._cache.get(key)
        if cached is None or time.monotonic() - cached.read_at > RECHECK_SECONDS:
            return None
        if cached.expires_at is not None and cached.expires_at <= self.clock() + REFRESH_MARGIN:
            return None
        return cached.token

    def _lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _plugin_app(self, crm: str) -> OAuthApp:
        from adapters import plugin

        make = plugin(crm).oauth
        if make is None:
            raise CrmTransient(f"the {crm} plugin has no OAuth app: its tokens cannot be refreshed")
        return make(self.settings.crm(crm))


def _rotated(stored: StoredConnection, grant: Grant) -> str | None:
    """The refresh token to store: the grant's when the CRM sent another, else None (keep it)."""
    if grant.refresh_token is None:
        return None
    given = grant.refresh_token.get_secret_value()
    kept = stored.refresh_token()
    return None if kept is not None and kept.get_secret_value() == given else given
