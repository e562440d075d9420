"""The sandbox CRM, kept in Offboard's own database."""

from adapters.sandbox.adapter import SandboxAdapter

__all__ = ["SandboxAdapter"]
