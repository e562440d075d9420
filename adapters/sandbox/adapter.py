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

from sqlalchemy import delete, or_, select

from adapters.base import CrmPermanent, CrmRateLimited, CrmTransient, Ending, SweepWindow
from adapters.sandbox.batches import OneByOne
from adapters.sandbox.checklist import SandboxChecklist
from adapters.sandbox.samples import sample_deals
from adapters.sandbox.tables import (
    SandboxContact,
    SandboxDeal,
    SandboxFault,
    SandboxInvite,
    SandboxNote,
    SandboxProperty,
    SandboxTask,
)
from connector.clock import utcnow
from connector.models import AnswerSpec, Deal, Invite, NoteSpec, PropertyUpdate, ReferralSpec, TaskSpec
from connector.store import Store
from connector.store.db import insert

ACCOUNT = "sandbox"
FAULT_KINDS = ("transient", "rate_limited", "permanent", "lost_reply")
ANSWER_PROPERTIES = ("offboard_last_survey_kind", "offboard_last_exit_score", "offboard_exit_category")


class SandboxAdapter(OneByOne, SandboxChecklist):
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

    def deals_ending(self, window: SweepWindow) -> Iterable[Ending]:
        self._fault("deals_ending")
        conditions = [
            SandboxDeal.contract_end >= window.start.isoformat(),
            SandboxDeal.contract_end <= window.end.isoformat(),
        ]
        if window.changed_since is not None:
            changed = SandboxDeal.updated_at >= window.changed_since
            new_from = window.new_from
            conditions.append(
                or_(changed, SandboxDeal.contract_end >= new_from.isoformat()) if new_from else changed
            )
        with self.store.session() as session:
            rows = session.scalars(select(SandboxDeal).where(*conditions).order_by(SandboxDeal.id)).all()
            return [
                Ending(
                    crm=row.data.get("crm", self.name),
                    account=row.data.get("account", ACCOUNT),
                    id=row.id,
                    contract_end=date.fromisoformat(str(row.contract_end)),
                )
                for row in rows
            ]

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
        """Create or replace a deal in the sandbox CRM.

        The worker calls this for every deal a generic event names (the sandbox holds
        only what it is told), so ``offboard plan --crm sandbox`` and the contract-end
        sweep find those deals later. An upsert, so two workers telling it about the
        same deal at once do not collide.
        """
        data = deal.model_dump(mode="json")
        end = deal.contract_end.isoformat() if deal.contract_end else None
        with self.store.session() as session:
            statement = insert(session, SandboxDeal).values(
                id=deal.id, data=data, contract_end=end, updated_at=utcnow()
            )
            session.execute(
                statement.on_conflict_do_update(
                    index_elements=[SandboxDeal.id],
                    set_={
                        "data": statement.excluded.data,
                        "contract_end": statement.excluded.contract_end,
                        "updated_at": statement.excluded.updated_at,
                    },
                )
            )

    def seed(self, today: date) -> list[Deal]:
        """Put the sample deals (contracts ending in the coming weeks) in the sandbox; return them."""
        deals = sample_deals(today)
        for deal in deals:
            self.put_deal(deal)
        return deals

    def contacts(self) -> list[SandboxContact]:
        with self.store.read() as session:
            return list(session.scalars(select(SandboxContact).order_by(SandboxContact.id)))

    def properties(self, object_name: str, object_id: str) -> dict[str, str]:
        with self.store.read() as session:
            rows = session.scalars(select(SandboxProperty).filter_by(object=object_name, object_id=object_id))
            return {row.name: row.value for row in rows}

    def notes(self, deal_id: str | None = None) -> list[SandboxNote]:
        with self.store.read() as session:
            query = select(SandboxNote).order_by(SandboxNote.id)
            if deal_id is not None:
                query = query.where(SandboxNote.deal_id == deal_id)
            return list(session.scalars(query))

    def invites(self, deal_id: str | None = None) -> list[SandboxInvite]:
        with self.store.read() as session:
            query = select(SandboxInvite).order_by(SandboxInvite.id)
            if deal_id is not None:
                query = query.where(SandboxInvite.deal_id == deal_id)
            return list(session.scalars(query))

    def tasks(self, deal_id: str | None = None) -> list[SandboxTask]:
        with self.store.read() as session:
            query = select(SandboxTask).order_by(SandboxTask.due_at, SandboxTask.id)
            if deal_id is not None:
                query = query.where(SandboxTask.deal_id == deal_id)
            return list(session.scalars(query))

    def answers(self) -> list[SandboxProperty]:
        """The survey answers on contacts, as the properties a CRM workflow would read."""
        with self.store.read() as session:
            query = select(SandboxProperty).where(
                SandboxProperty.object == "contact", SandboxProperty.name.in_(ANSWER_PROPERTIES)
            )
            return list(session.scalars(query.order_by(SandboxProperty.object_id, SandboxProperty.name)))

    def inject(self, operation: str, kind: str, times: int, message: str = "") -> None:
        """Fail the next ``times`` calls of ``operation``; ``times`` 0 clears its faults instead."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        if times <= 0:
            self.clear_faults(operation)
            return
        with self.store.session() as session:
            session.add(SandboxFault(operation=operation, kind=kind, remaining=times, message=message))

    def faults(self) -> list[SandboxFault]:
        """Injected faults still to strike, in the order they will."""
        with self.store.read() as session:
            query = select(SandboxFault).where(SandboxFault.remaining > 0).order_by(SandboxFault.id)
            return list(session.scalars(query))

    def clear_faults(self, operation: str | None = None) -> int:
        """Forget the faults still to strike (of one operation, or all); return how many."""
        with self.store.session() as session:
            query = delete(SandboxFault)
            if operation is not None:
                query = query.where(SandboxFault.operation == operation)
            cleared = session.execute(query.returning(SandboxFault.id)).scalars().all()
            return len(cleared)

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
