"""The org's Task picklists (Status, Priority, Type), read once from ``describe`` and mapped.

Orgs rename and reorder these values, so nothing is hard-coded beyond the
defaults Salesforce ships with; where a default is missing the nearest value
is taken, and said so in the docstring of each choice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.errors import CrmPermanent
from connector.models import TaskPriority, TaskType

_PRIORITY_WORDS: dict[str, tuple[str, ...]] = {
    "high": ("high", "urgent", "critical"),
    "normal": ("normal", "medium", "standard"),
    "low": ("low",),
}
_TYPE_WORDS: dict[str, tuple[str, ...]] = {
    "call": ("call",),
    "email": ("email", "e-mail"),
    "todo": ("to do", "to-do", "todo"),
}
_DONE_WORDS = ("completed", "complete", "done", "closed")


@dataclass(frozen=True)
class TaskPicklists:
    statuses: tuple[str, ...]
    default_status: str
    priorities: tuple[str, ...]
    types: tuple[str, ...]

    @classmethod
    def from_describe(cls, describe: dict[str, Any]) -> TaskPicklists:
        fields = {f["name"]: f for f in describe.get("fields", [])}
        statuses, default = _values(fields.get("Status"))
        priorities, _ = _values(fields.get("Priority"))
        types, _ = _values(fields.get("Type"))
        if not statuses or not priorities:
            raise CrmPermanent("salesforce: the Task Status or Priority picklist has no active value")
        return cls(statuses, default or _pick(statuses, ("not started",)) or statuses[0], priorities, types)

    def priority(self, wanted: TaskPriority) -> str:
        """The org's value for ``wanted``; else by position (Salesforce lists High, Normal, Low)."""
        found = _pick(self.priorities, _PRIORITY_WORDS[wanted])
        if found:
            return found
        position = {"high": 0, "normal": len(self.priorities) // 2, "low": -1}[wanted]
        return self.priorities[position]

    def task_type(self, wanted: TaskType) -> str | None:
        """The org's Type value for a to-do, call or email; None leaves Type empty."""
        return _pick(self.types, _TYPE_WORDS[wanted])

    @property
    def done_status(self) -> str:
        found = _pick(self.statuses, _DONE_WORDS)
        if found is None:
            raise CrmPermanent(
                f"salesforce: no completed Task status among {', '.join(self.statuses)}", detail=self.statuses
            )
        return found


def _values(field: dict[str, Any] | None) -> tuple[tuple[str, ...], str | None]:
    entries = [v for v in (field or {}).get("picklistValues") or [] if v.get("active", True)]
    default = next((v["value"] for v in entries if v.get("defaultValue")), None)
    return tuple(v["value"] for v in entries), default


def _pick(values: tuple[str, ...], words: tuple[str, ...]) -> str | None:
    folded = {v.casefold(): v for v in values}
    for word in words:
        if word in folded:
            return folded[word]
    return None
