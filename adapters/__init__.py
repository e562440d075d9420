"""CRM adapters: the only code that knows a CRM, one plugin package each.

The core imports this package (the registry) and ``adapters.base`` (the port and
the plugin contract), never ``adapters.<crm>``: see ``adapters.registry``.
"""

from __future__ import annotations

from adapters.registry import (
    PACKAGES,
    AdapterSet,
    NoConnection,
    build,
    commands,
    environment_connections,
    inbound_sources,
    installed_connection,
    installed_lookup,
    load_tables,
    plugin,
    plugins,
)

__all__ = [
    "PACKAGES",
    "AdapterSet",
    "NoConnection",
    "build",
    "commands",
    "environment_connections",
    "inbound_sources",
    "installed_connection",
    "installed_lookup",
    "load_tables",
    "plugin",
    "plugins",
]
