"""The sandbox's batch calls: each write in turn, each with its own outcome.

A real CRM's batch call answers per record the same way (HubSpot's batch create with its
errors per input, Salesforce's sObject Collections with ``allOrNone: false``), so the core's
batched path — a record refused inside a batch fails only its action — runs against the
sandbox exactly as against them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from adapters.base import CrmError, Results, Write
from connector.models import Invite, NoteSpec, PropertyUpdate, TaskSpec

W = TypeVar("W")
R = TypeVar("R")


class _Writes(Protocol):
    def create_tasks(self, tasks: Sequence[TaskSpec], key: str) -> list[str]: ...
    def add_note(self, note: NoteSpec, key: str) -> str: ...
    def update_properties(self, update: PropertyUpdate, key: str) -> None: ...
    def send_invite(self, invite: Invite, key: str) -> str: ...


def one_by_one(call: Callable[[Write[W]], R], writes: Sequence[Write[W]]) -> Results[R]:
    """Each write's result, or the CrmError it alone met."""
    results: Results[R] = []
    for write in writes:
        try:
            results.append(call(write))
        except CrmError as exc:
            results.append(exc)
    return results


class OneByOne:
    """The batch capabilities (``TaskBatches``, ``NoteBatches``, ``PropertyBatches``,
    ``InviteBatches``) for an adapter that writes one at a time."""

    def create_tasks_many(self: _Writes, writes: Sequence[Write[Sequence[TaskSpec]]]) -> Results[list[str]]:
        return one_by_one(lambda w: self.create_tasks(w.item, w.key), writes)

    def add_notes_many(self: _Writes, writes: Sequence[Write[NoteSpec]]) -> Results[str]:
        return one_by_one(lambda w: self.add_note(w.item, w.key), writes)

    def update_properties_many(self: _Writes, writes: Sequence[Write[PropertyUpdate]]) -> Results[None]:
        return one_by_one(lambda w: self.update_properties(w.item, w.key), writes)

    def send_invites_many(self: _Writes, writes: Sequence[Write[Invite]]) -> Results[str]:
        return one_by_one(lambda w: self.send_invite(w.item, w.key), writes)
