"""The sandbox CRM, kept in Offboard's own database (``PLUGIN`` is what the core finds)."""

from __future__ import annotations

from adapters.sandbox.adapter import SandboxAdapter
from adapters.sandbox.plugin import PLUGIN

__all__ = ["PLUGIN", "SandboxAdapter"]
