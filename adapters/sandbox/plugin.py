"""The sandbox CRM as a plugin: one setting, an adapter on the store, its tables and commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from adapters.base import Connection, CrmAdapter, Plugin
from adapters.sandbox.settings import SandboxSettings

if TYPE_CHECKING:
    import click

    from connector.store import Store


def build(connection: Connection, store: Store) -> CrmAdapter:
    from adapters.sandbox.adapter import SandboxAdapter

    return SandboxAdapter(store)


def commands() -> Sequence[click.Command]:
    from adapters.sandbox.cli import sandbox

    return [sandbox]


PLUGIN = Plugin(
    name="sandbox",
    settings=SandboxSettings,
    build=build,
    commands=commands,
    tables=("adapters.sandbox.tables",),
)
