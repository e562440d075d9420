"""The sandbox CRM: a small CRM kept in Offboard's own database.

It is the embedded default (``make run``), the demo, and the fake the core's
tests run against. It honours idempotency keys the way the real adapters must:
a write repeated with the same key returns what the first one created.

Faults can be injected for the next N calls of an operation (``offboard
sandbox fail``): ``transient``, ``rate_limited`` and ``permanent`` fail before
writing; ``lost_reply`` writes and then fails, as a timeout after the CRM
received the request would.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import select

from adapters.base import CrmPermanent, CrmRateLimited, CrmTransient
from adapters.sandbox.tables import (
    SandboxContact,
    SandboxDeal,
    SandboxFault,
    SandboxInvite,
    SandboxNote,
    SandboxProperty,
    SandboxTask,
)
from connector.models import AnswerSpec, Deal, Invite, NoteSpec, PropertyUpdate, ReferralSpec, TaskSpec
from connector.store import Store

ACCOUNT = "sandbox"
FAULT_KINDS = ("transient", "rate_limited", "permanent", "lost_reply")


class SandboxAdapter:
    name = "sandbox"

    def __init__(self, store: Store) -> None:
        self.store = store

    @property
    def account(self) -> str:
        return ACCOUNT

    # --- reads -----------------------------------------------------------

    def fetch_deal(self, deal_id: str) -> Deal:
        self._fault("fetch_deal")
        with self.store.session() as session:
            row = session.get(SandboxDeal, deal_id)
            if row is None:
                raise CrmPermanent(f"sandbox: no deal {deal_id!r}", status=404)
            return Deal.model_validate(row.data)

    def deals_ending(self, start: date, end: date) -> Iterable[Deal]:
        self._fault("deals_ending")
        with self.store.session() as session:
            rows = session.scalars(
                select(SandboxDeal)
                .where(SandboxDeal.contract_end >= start.isoformat())
                .where(SandboxDeal.contract_end <= end.isoformat())
                .order_by(SandboxDeal.id)
            ).all()
            return [Deal.model_validate(row.data) for row in rows]

    # --- writes ----------------------------------------------------------

    def create_tasks(self, tasks: Sequence[TaskSpec], key: str) -> list[str]:
        fault = self._fault("create_tasks")
        with self.store.session() as session:
            markers = [f"{key}:{position}" for position in range(len(tasks))]
            existing = {
                row.marker: row.id
                for row in session.scalars(select(SandboxTask).where(SandboxTask.marker.in_(markers)))
            }
            rows = []
            for marker, task in zip(markers, tasks, strict=True):
                if marker in existing:
                    continue
                row = SandboxTask(
                    marker=marker,
                    deal_id=task.deal_id,
                    step_id=task.step_id,
                    subject=task.title[:255],
                    body=task.body,
                    due_at=task.due_at,
                    owner_id=task.owner_id,
                    priority=task.priority,
                    type=task.type,
                    company_id=task.company_id,
                    contact_id=task.contact_id,
                )
                session.add(row)
                rows.append(row)
            session.flush()
            existing |= {row.marker: row.id for row in rows}
            ids = [str(existing[marker]) for marker in markers]
        self._after(fault)
        return ids

    def add_note(self, note: NoteSpec, key: str) -> str:
        fault = self._fault("add_note")
        note_id = self._insert_once(
            SandboxNote,
            key,
            deal_id=note.deal_id,
            body=note.body,
            company_id=note.company_id,
            contact_id=note.contact_id,
        )
        self._after(fault)
        return note_id

    def update_properties(self, update: PropertyUpdate, key: str) -> None:
        fault = self._fault("update_properties")
        self._set_properties(update)
        self._after(fault)

    def send_invite(self, invite: Invite, key: str) -> str:
        fault = self._fault("send_invite")
        send_id = self._insert_once(
            SandboxInvite,
            key,
            deal_id=invite.deal_id,
            contact_id=invite.contact_id,
            kind=invite.kind,
            link=invite.link,
        )
        self._after(fault)
        return send_id

    def record_answer(self, answer: AnswerSpec, key: str) -> str:
        fault = self._fault("record_answer")
        self._set_properties(
            PropertyUpdate(
                step_id=answer.step_id,
                object="contact",
                object_id=answer.contact_id,
                properties={
                    "offboard_last_survey_kind": answer.kind,
                    "offboard_last_exit_score": str(answer.score),
                    "offboard_exit_category": answer.category,
                },
            )
        )
        body = f"{answer.kind.upper()} answer: {answer.score} ({answer.category})"
        if answer.comment:
            body += f"\n\n{answer.comment}"
        note_id = self._insert_once(
            SandboxNote, key, deal_id=answer.deal_id, body=body, company_id=None, contact_id=answer.contact_id
        )
        self._after(fault)
        return note_id

    def create_referral(self, referral: ReferralSpec, key: str) -> str:
        fault = self._fault("create_referral")
        email = referral.email.strip().lower()
        with self.store.session() as session:
            row = session.scalar(select(SandboxContact).where(SandboxContact.email == email))
            if row is None:
                row = SandboxContact(
                    email=email,
                    first_name=referral.first_name,
                    last_name=referral.last_name,
                    company=referral.company,
                    note=referral.note,
                    referred_by=referral.referrer_contact_id,
                    referred_on_deal=referral.deal_id,
                )
                session.add(row)
                session.flush()
            contact_id = f"ref-{row.id}"
        self._after(fault)
        return contact_id

    # --- sandbox-only: seeding and inspection -----------------------------

    def put_deal(self, deal: Deal) -> None:
        """Create or replace a deal in the sandbox CRM."""
        with self.store.session() as session:
            data = deal.model_dump(mode="json")
            end = deal.contract_end.isoformat() if deal.contract_end else None
            row = session.get(SandboxDeal, deal.id)
            if row is None:
                session.add(SandboxDeal(id=deal.id, data=data, contract_end=end))
            else:
                row.data, row.contract_end = data, end

    def contacts(self) -> list[SandboxContact]:
        with self.store.session() as session:
            return list(session.scalars(select(SandboxContact).order_by(SandboxContact.id)))

    def properties(self, object_name: str, object_id: str) -> dict[str, str]:
        with self.store.session() as session:
            rows = session.scalars(select(SandboxProperty).filter_by(object=object_name, object_id=object_id))
            return {row.name: row.value for row in rows}

    def notes(self, deal_id: str) -> list[SandboxNote]:
        with self.store.session() as session:
            query = select(SandboxNote).where(SandboxNote.deal_id == deal_id).order_by(SandboxNote.id)
            return list(session.scalars(query))

    def invites(self, deal_id: str | None = None) -> list[SandboxInvite]:
        with self.store.session() as session:
            query = select(SandboxInvite).order_by(SandboxInvite.id)
            if deal_id is not None:
                query = query.where(SandboxInvite.deal_id == deal_id)
            return list(session.scalars(query))

    def tasks(self, deal_id: str | None = None) -> list[SandboxTask]:
        with self.store.session() as session:
            query = select(SandboxTask).order_by(SandboxTask.due_at, SandboxTask.id)
            if deal_id is not None:
                query = query.where(SandboxTask.deal_id == deal_id)
            return list(session.scalars(query))

    def inject(self, operation: str, kind: str, times: int, message: str = "") -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        with self.store.session() as session:
            session.add(SandboxFault(operation=operation, kind=kind, remaining=times, message=message))

    # --- internals -------------------------------------------------------

    def _set_properties(self, update: PropertyUpdate) -> None:
        with self.store.session() as session:
            for name, value in update.properties.items():
                row = session.scalar(
                    select(SandboxProperty).filter_by(
                        object=update.object, object_id=update.object_id, name=name
                    )
                )
                if row is None:
                    session.add(
                        SandboxProperty(
                            object=update.object, object_id=update.object_id, name=name, value=value
                        )
                    )
                else:
                    row.value = value

    def _insert_once(self, table: Any, key: str, **values: Any) -> str:
        with self.store.session() as session:
            row = session.scalar(select(table).where(table.marker == key))
            if row is None:
                row = table(marker=key, **values)
                session.add(row)
                session.flush()
            return str(row.id)

    def _fault(self, operation: str) -> str | None:
        """Consume one injected fault for ``operation``; raise now unless it strikes after the write."""
        with self.store.session() as session:
            fault = session.scalar(
                select(SandboxFault)
                .where(SandboxFault.operation == operation, SandboxFault.remaining > 0)
                .order_by(SandboxFault.id)
                .limit(1)
            )
            if fault is None:
                return None
            fault.remaining -= 1
            kind, message = fault.kind, fault.message or f"sandbox: injected {fault.kind} failure"
        if kind == "lost_reply":
            return message
        raise _error(kind, message)

    @staticmethod
    def _after(fault: str | None) -> None:
        if fault is not None:
            raise CrmTransient(fault + " (the write happened; the reply was lost)")


def _error(kind: str, message: str) -> Exception:
    if kind == "rate_limited":
        return CrmRateLimited(message, retry_after=1.0)
    if kind == "permanent":
        return CrmPermanent(message, status=400)
    return CrmTransient(message, status=503)
