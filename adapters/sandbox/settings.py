"""The sandbox CRM's one setting: whether it is on (it is, unless production turns it off)."""

from __future__ import annotations

from connector.settings import CrmSettings, env_field


class SandboxSettings(CrmSettings):
    # The embedded default, the demo, and the core's test fake.
    enabled: bool = env_field("OFFBOARD_SANDBOX", True)

    @property
    def configured(self) -> bool:
        return self.enabled

    def production_problems(self) -> list[str]:
        if not self.enabled:
            return []
        return [
            "OFFBOARD_SANDBOX: the sandbox CRM is on (the default); set OFFBOARD_SANDBOX=false in production"
        ]
