"""The CRM plugins, and the adapters built from them per connection.

Each package named in ``PACKAGES`` exposes a ``PLUGIN`` (``adapters.base.Plugin``).
The core asks this module, never a package: which plugins there are, their
settings models, their inbound sources, commands and tables, and (``AdapterSet``)
the adapter of each CRM account it works in.
"""

from __future__ import annotations

import functools
import importlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from adapters.base import Connection, CrmAdapter, InboundSource, Plugin

if TYPE_CHECKING:
    import click

    from connector.connections import StoredConnection
    from connector.settings import CrmSettings, Settings
    from connector.store import Store

# The CRM packages under adapters/, in the order they are listed (settings, commands, adapters).
PACKAGES = ("sandbox", "hubspot", "salesforce")


class NoConnection(LookupError):
    """No connection to this CRM account is configured here."""


@functools.cache
def plugins() -> tuple[Plugin, ...]:
    """Every CRM plugin: ``adapters.<name>.PLUGIN`` for each package (no SDK is imported)."""
    found = []
    for name in PACKAGES:
        plugin = importlib.import_module(f"adapters.{name}").PLUGIN
        if not isinstance(plugin, Plugin) or plugin.name != name:
            raise TypeError(f"adapters.{name}.PLUGIN must be the Plugin named {name!r}")
        found.append(plugin)
    return tuple(found)


def plugin(name: str) -> Plugin:
    """The plugin called ``name``; KeyError if there is none."""
    for candidate in plugins():
        if candidate.name == name:
            return candidate
    raise KeyError(f"no CRM plugin named {name!r} is available")


def environment_connections(settings: Settings) -> list[Connection]:
    """One connection per CRM the environment's settings turn on (single-account mode)."""
    return [
        Connection.from_environment(settings, p.name) for p in plugins() if settings.crm(p.name).configured
    ]


# An account's own contract settings, and the plugin settings they stand for (HubSpot names
# properties, Salesforce fields).
ACCOUNT_FIELDS = {
    "contract_type_property": ("contract_type_property", "contract_type_field"),
    "contract_end_property": ("contract_end_property", "contract_end_field"),
}


def installed_connection(
    settings: Settings, stored: StoredConnection, token: Callable[[], str] | None
) -> Connection:
    """The connection to an account installed by OAuth: its plugin's environment settings with the
    account's own contract properties over them, its time zone, its token source and instance."""
    own = stored.settings(settings)
    crm_settings = settings.crm(stored.crm)
    return Connection(
        crm=stored.crm,
        account=stored.account,
        settings=_with_account_fields(crm_settings, own),
        zone=ZoneInfo(own.time_zone),
        token=token,
        instance_url=stored.instance_url,
    )


def _with_account_fields(crm_settings: CrmSettings, own: Any) -> CrmSettings:
    names = type(crm_settings).model_fields
    update: dict[str, Any] = {}
    for setting, fields in ACCOUNT_FIELDS.items():
        value = getattr(own, setting)
        target = next((field for field in fields if field in names), None)
        if value is not None and target is not None:
            update[target] = value
    return crm_settings.model_copy(update=update) if update else crm_settings


def installed_lookup(
    settings: Settings,
    find: Callable[[str, str], StoredConnection | None],
    token: Callable[[str, str], Callable[[], str]],
) -> Callable[[str, str], Connection | None]:
    """An ``AdapterSet`` lookup for the installed accounts: ``find`` reads a stored connection,
    ``token`` gives its token source (``TokenKeeper.token``). A disconnected or removed account
    still has its connection: its token source says it is disconnected when asked."""

    def lookup(crm: str, account: str) -> Connection | None:
        stored = find(crm, account)
        if stored is None:
            return None
        return installed_connection(settings, stored, token(crm, account))

    return lookup


def inbound_sources(settings: Settings) -> list[InboundSource]:
    """Every plugin's inbound endpoints, whether or not its CRM is on (off, they answer 503)."""
    return [source for p in plugins() for source in p.sources(settings.crm(p.name))]


def commands() -> list[click.Command]:
    """Every plugin's ``offboard`` commands."""
    return [command for p in plugins() for command in p.commands()]


def load_tables() -> None:
    """Declare every plugin's tables on the core's metadata (before migrating or dumping it)."""
    for p in plugins():
        for module in p.tables:
            importlib.import_module(module)


def build(connection: Connection, store: Store) -> CrmAdapter:
    """The adapter for one connection, from its plugin (whose SDK is imported only now)."""
    return plugin(connection.crm).build(connection, store)


class AdapterSet(MutableMapping[str, CrmAdapter]):
    """The adapters of the CRM accounts this process works in: one per connection, built once.

    ``for_connection(crm, account)`` finds an account's adapter. Keyed by CRM name it is
    also a mapping of each CRM's environment connection (``adapters["hubspot"]``), what
    the single-account worker and sweep iterate. An adapter put in by name (a test's,
    a tool's) stands for that CRM's environment connection.

    ``lookup`` finds connections not given up front (installed accounts kept elsewhere);
    their adapters are built on first use and kept, and looked up again at most every
    ``RECHECK_SECONDS``: an account whose settings changed (``offboard connections set``:
    its contract properties, its time zone) gets a new adapter, so a running worker follows
    the change within a minute, without a restart.
    """

    RECHECK_SECONDS = 60.0

    def __init__(
        self,
        connections: Iterable[Connection] = (),
        *,
        build: Callable[[Connection], CrmAdapter] | None = None,
        lookup: Callable[[str, str], Connection | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connections: dict[tuple[str, str | None], Connection] = {}
        self._adapters: dict[tuple[str, str | None], CrmAdapter] = {}
        self._build, self._lookup, self._clock = build, lookup, clock
        self._looked_up: dict[tuple[str, str | None], float] = {}  # installed accounts: when last read
        for connection in connections:
            self._connections[(connection.crm, connection.account)] = connection

    @classmethod
    def from_settings(cls, settings: Settings, store: Store) -> AdapterSet:
        """The environment's connections, their adapters built now (bad settings fail at start-up)."""
        found = cls(environment_connections(settings), build=lambda c: build(c, store))
        for connection in found.connections:
            found.adapter(connection)
        return found

    @classmethod
    def of(cls, adapters: Mapping[str, CrmAdapter]) -> AdapterSet:
        """A set of ready adapters, each standing for its CRM's environment connection."""
        found = cls()
        found.update(adapters)
        return found

    @property
    def connections(self) -> list[Connection]:
        return list(self._connections.values())

    def connection(self, crm: str, account: str) -> Connection:
        """The connection to this account: its own (given, or found by ``lookup``), else the
        CRM's environment connection."""
        found = self._connections.get((crm, account))
        if found is None and self._lookup is not None:
            found = self._lookup(crm, account)
            if found is not None:
                self._connections[(crm, found.account)] = found
                self._looked_up[(crm, found.account)] = self._clock()
        found = found or self._connections.get((crm, None))
        if found is None:
            raise NoConnection(f"no connection to {crm} account {account!r} is configured")
        return found

    def for_connection(self, crm: str, account: str) -> CrmAdapter:
        """The adapter for this CRM account, built on first use.

        An account installed here has its own; otherwise the environment's connection answers
        for every account, and its adapter refuses what belongs to another (a webhook from
        another portal).
        """
        if (crm, account) in self._looked_up:
            self._recheck(crm, account)
        if (crm, account) in self._adapters:
            return self._adapters[(crm, account)]
        if (crm, account) not in self._connections and self._lookup is None and (crm, None) in self._adapters:
            return self._adapters[(crm, None)]
        connection = self.connection(crm, account)
        if connection.account is None and (crm, None) in self._adapters:
            return self._adapters[(crm, None)]
        return self.adapter(connection)

    def _recheck(self, crm: str, account: str) -> None:
        """Read an installed account's connection again when the last read is old; a changed one
        (its settings, zone or instance) is rebuilt on next use, a gone one forgotten."""
        key = (crm, account)
        now = self._clock()
        if self._lookup is None or now - self._looked_up[key] < self.RECHECK_SECONDS:
            return
        found = self._lookup(crm, account)
        self._looked_up[key] = now
        if found == self._connections.get(key):
            return
        self._adapters.pop(key, None)
        if found is None:
            self._connections.pop(key, None)
            self._looked_up.pop(key, None)
        else:
            self._connections[key] = found

    def adapter(self, connection: Connection) -> CrmAdapter:
        key = (connection.crm, connection.account)
        if key not in self._adapters:
            if self._build is None:
                raise NoConnection(f"no adapter can be built here for {connection.crm}")
            self._adapters[key] = self._build(connection)
        return self._adapters[key]

    # --- the mapping: CRM name → its environment connection's adapter ---------------------

    def _names(self) -> list[str]:
        keys = [*self._connections, *self._adapters]
        return list(dict.fromkeys(crm for crm, account in keys if account is None))

    def __getitem__(self, crm: str) -> CrmAdapter:
        key = (crm, None)
        if key in self._adapters:
            return self._adapters[key]
        if key in self._connections:
            return self.adapter(self._connections[key])
        raise KeyError(crm)

    def __setitem__(self, crm: str, adapter: CrmAdapter) -> None:
        self._adapters[(crm, None)] = adapter

    def __delitem__(self, crm: str) -> None:
        if crm not in self._names():
            raise KeyError(crm)
        self._adapters.pop((crm, None), None)
        self._connections.pop((crm, None), None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"AdapterSet({self._names()!r})"
