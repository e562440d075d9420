"""Roles a playbook names (``owner: role:finance``) that the deployment has not mapped to a user.

Such tasks still get an owner (the fallback owner, else the deal owner), so this
is a warning for ``offboard validate``, not an error: the file is valid, but its
author probably expected someone else to get the task.
"""

from __future__ import annotations

from collections.abc import Mapping

from connector.playbooks.loader import LoadedPlaybook


def unmapped_roles(
    loaded: list[LoadedPlaybook], roles: Mapping[str, object], *, fallback_owner: str | None = None
) -> list[str]:
    """One ``<file>: <field>: warning: …`` line per task owner naming a role ``roles`` lacks."""
    to = f"the fallback owner ({fallback_owner})" if fallback_owner else "the deal owner"
    lines = []
    for item in loaded:
        for position, step in enumerate(item.playbook.steps):
            if step.task is None:
                continue
            escalate = step.task.escalate
            named = [
                ("owner", step.task.owner, "its tasks"),
                ("escalate.to", escalate.to if escalate else None, "its escalations"),
            ]
            for field, owner, what in named:
                if owner and owner.startswith("role:") and owner.removeprefix("role:") not in roles:
                    lines.append(
                        f"{item.path}: steps[{position}].task.{field}: warning: {owner} has no mapping "
                        f"in OFFBOARD_ROLES; {what} go to {to}"
                    )
    return lines
