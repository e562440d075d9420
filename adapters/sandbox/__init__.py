"""The sandbox CRM, kept in Offboard's own database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.sandbox.adapter import SandboxAdapter

if TYPE_CHECKING:
    from connector.settings import Settings
    from connector.store import Store

__all__ = ["SandboxAdapter", "build"]


def build(settings: Settings, store: Store) -> SandboxAdapter:
    return SandboxAdapter(store)
