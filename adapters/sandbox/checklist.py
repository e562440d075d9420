"""The sandbox CRM's checklist side: tasks read back (``TaskReader``), the offboarding record
on the deal (``RecordWriter``), and what a person does to a task there — complete it, re-open
it, add an ``Evidence:`` line, attach a file (``offboard sandbox task``), as a CSM would in
HubSpot or Salesforce.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from adapters.sandbox.tables import SandboxFile, SandboxNote, SandboxTask
from connector.clock import utcnow
from connector.models import RecordSpec, TaskState
from connector.store import Store

DONE = "completed"


class SandboxChecklist:
    """Mixed into the sandbox adapter; ``self.store`` is the sandbox's database."""

    store: Store

    def _fault(self, operation: str) -> str | None:  # the adapter's injected faults
        raise NotImplementedError

    @staticmethod
    def _after(fault: str | None) -> None:
        raise NotImplementedError

    # --- the port ------------------------------------------------------------------------

    def read_tasks(self, task_ids: Sequence[str], changed_since: datetime | None = None) -> list[TaskState]:
        self._fault("read_tasks")
        ids = [int(i) for i in task_ids if str(i).isdigit()]
        with self.store.read() as session:
            query = select(SandboxTask).where(SandboxTask.id.in_(ids))
            if changed_since is not None:
                query = query.where(SandboxTask.modified_at >= changed_since)
            return [_state(row) for row in session.scalars(query.order_by(SandboxTask.id))]

    def task_url(self, task_id: str) -> str | None:
        return f"offboard sandbox tasks (task {task_id})"

    def write_record(self, record: RecordSpec, key: str) -> str:
        fault = self._fault("write_record")
        with self.store.session() as session:
            row = session.scalar(select(SandboxFile).where(SandboxFile.marker == key))
            if row is None:
                note = SandboxNote(marker=f"{key}:note", deal_id=record.deal_id, body=record.body)
                session.add(note)
                session.flush()
                row = SandboxFile(
                    marker=key,
                    deal_id=record.deal_id,
                    filename=record.filename,
                    content_type=record.content_type,
                    content=record.content,
                    note_id=note.id,
                )
                session.add(row)
                session.flush()
            file_id = str(row.id)
        self._after(fault)
        return file_id

    # --- what a person does in the sandbox CRM ---------------------------------------------

    def complete_task(
        self, task_id: str, *, by: str | None = None, evidence: str | None = None, at: datetime | None = None
    ) -> None:
        """Mark the task completed (by ``by``), adding an ``Evidence:`` line when given."""
        when = at or utcnow()
        with self.store.session() as session:
            row = _task(session, task_id)
            row.status, row.completed_at, row.completed_by, row.modified_at = DONE, when, by, when
            if evidence:
                row.body = f"{row.body}\n\nEvidence: {evidence}".strip()

    def reopen_task(self, task_id: str, *, at: datetime | None = None) -> None:
        when = at or utcnow()
        with self.store.session() as session:
            row = _task(session, task_id)
            row.status, row.completed_at, row.completed_by, row.modified_at = "not_started", None, None, when

    def delete_task(self, task_id: str) -> None:
        """Delete the task, as a CSM deletes one that does not apply."""
        with self.store.session() as session:
            session.delete(_task(session, task_id))

    def add_evidence(
        self, task_id: str, *, text: str | None = None, file: str | None = None, at: datetime | None = None
    ) -> None:
        """Add an ``Evidence:`` line to the task's body, or attach a file (its name)."""
        when = at or utcnow()
        with self.store.session() as session:
            row = _task(session, task_id)
            if text:
                row.body = f"{row.body}\n\nEvidence: {text}".strip()
            if file:
                row.attachments = [*(row.attachments or []), file]
            row.modified_at = when

    def files(self, deal_id: str | None = None) -> list[SandboxFile]:
        with self.store.read() as session:
            query = select(SandboxFile).order_by(SandboxFile.id)
            if deal_id is not None:
                query = query.where(SandboxFile.deal_id == deal_id)
            return list(session.scalars(query))


def _task(session: Session, task_id: str) -> SandboxTask:
    row = session.get(SandboxTask, int(task_id)) if str(task_id).isdigit() else None
    if row is None:
        raise LookupError(f"the sandbox CRM has no task {task_id}")
    return row


def _state(row: SandboxTask) -> TaskState:
    return TaskState(
        id=str(row.id),
        completed=row.status == DONE,
        completed_at=row.completed_at,
        completed_by=row.completed_by,
        owner_id=row.owner_id,
        body=row.body or "",
        attachments=tuple(row.attachments or ()),
        modified_at=row.modified_at or row.created_at,
    )
