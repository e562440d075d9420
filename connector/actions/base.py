"""What every action kind is: a typed payload, one CRM write, and what follows it.

A handler turns an outbox row into its payload model (``parse``), may refuse to run it
for a business reason (``before``, raising ``Skip``), performs the write through the
CRM's adapter with the action's idempotency key (``perform``), and records what the
write changes on our side (``after``, in the transaction that settles the action).
Local kinds make no CRM call: ``settle`` does all their work inside that transaction.

A kind whose CRM has a batch call for it (``batches``) writes the due actions of many
deals in one call (``perform_many``); each action keeps its own key and its own outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

from adapters.base import CrmAdapter, Results, Write
from connector.settings import Settings
from connector.store import Action, Run
from connector.usecases.uow import UnitOfWork

P = TypeVar("P", bound=BaseModel)


class Handler(Generic[P]):
    kind: ClassVar[str]
    payload: type[P]
    # Written even when the CRM account's budget runs low: the checklist itself.
    urgent: ClassVar[bool] = False
    # No CRM call: the whole work happens in the settling transaction (``settle``).
    local: ClassVar[bool] = False

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def parse(self, action: Action) -> P:
        """The action's payload as its model (a ValidationError parks the action: retrying cannot help)."""
        return self.payload.model_validate(action.payload)

    def before(self, uow: UnitOfWork, run: Run, action: Action, payload: P) -> None:
        """A business rule that may rule the action out (``Skip``) before any CRM call."""

    def perform(self, adapter: CrmAdapter, payload: P, key: str) -> dict[str, Any]:
        """Write to the CRM, once for ``key`` however often this is called; what was written."""
        raise NotImplementedError

    def batches(self, adapter: CrmAdapter) -> bool:
        """Whether ``adapter`` writes many actions of this kind in one call (``perform_many``)."""
        return False

    def perform_many(self, adapter: CrmAdapter, writes: Sequence[Write[P]]) -> Results[dict[str, Any]]:
        """Write many actions of this kind together: each one's result, or the error it alone met."""
        raise NotImplementedError

    def after(self, uow: UnitOfWork, run: Run, action: Action, payload: P, result: dict[str, Any]) -> None:
        """What the write changes on our side, in the transaction that settles the action."""

    def settle(self, uow: UnitOfWork, run: Run, action: Action, payload: P) -> dict[str, Any]:
        """A local kind's whole work (no CRM call)."""
        raise NotImplementedError
