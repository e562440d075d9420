"""The unit of work every use case runs in: one transaction, one clock reading, one actor.

Audit entries are written here and nowhere else (``UnitOfWork.audit``), in the same
transaction as the change they record, so the trail never claims what did not happen.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import insert as plain_insert
from sqlalchemy.orm import Session

from connector.clock import Clock, utcnow
from connector.store import AuditEntry, Store


@dataclass
class UnitOfWork:
    """What a use case changes, and who changes it when: ``session`` commits as the block ends."""

    session: Session
    actor: str
    now: datetime

    def audit(
        self,
        verb: str,
        *,
        run_id: int | None = None,
        action_id: int | None = None,
        crm: str | None = None,
        detail: dict[str, Any] | None = None,
        **more: Any,
    ) -> None:
        """One line of the audit trail: who did what to which run or action, and the particulars."""
        self.session.add(
            AuditEntry(
                actor=self.actor,
                verb=verb,
                run_id=run_id,
                action_id=action_id,
                crm=crm,
                detail={**(detail or {}), **more},
                at=self.now,
            )
        )

    def audit_many(self, verb: str, entries: list[dict[str, Any]]) -> None:
        """The same verb for many actions at once (an operator's bulk retry): one statement."""
        if entries:
            rows = [
                {
                    "actor": self.actor,
                    "verb": verb,
                    "run_id": entry.pop("run_id", None),
                    "action_id": entry.pop("action_id", None),
                    "crm": entry.pop("crm", None),
                    "detail": entry,
                    "at": self.now,
                }
                for entry in (dict(e) for e in entries)
            ]
            self.session.execute(plain_insert(AuditEntry), rows)


@contextmanager
def unit_of_work(
    store: Store, *, actor: str, clock: Clock = utcnow, now: datetime | None = None
) -> Iterator[UnitOfWork]:
    """One transaction for one use case: committed when the block ends, rolled back if it raises."""
    with store.session() as session:
        yield UnitOfWork(session=session, actor=actor, now=now or clock())
