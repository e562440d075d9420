"""The live checklist's own actions: an overdue task's escalation, and the offboarding record.

An escalation is due when its task is overdue by the step's ``escalate.overdue``. It reads the
task from the CRM first (the tracking pass may not have seen a completion yet): still open, it
queues one task for the escalation's owner ("Overdue: <title>", linking the task) and a note on
the deal; completed, it applies the completion instead. Its own idempotency key makes it once
per task, across restarts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from adapters.base import CrmAdapter, RecordWriter, TaskReader
from connector import queue
from connector.actions.base import Handler
from connector.checklist import ItemState
from connector.errors import Skip
from connector.models import NoteSpec, RecordSpec, TaskSpec, TaskState
from connector.runs import TASK, new_action
from connector.store import Action, ChecklistTask, Run
from connector.usecases import checklist
from connector.usecases.uow import UnitOfWork


class EscalationPayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_step: str
    task_id: str
    title: str
    owner_id: str | None
    deal_id: str
    company_id: str | None = None
    contact_id: str | None = None
    due_at: datetime
    overdue: str


class EscalationHandler(Handler[EscalationPayload]):
    kind = "escalation"
    payload = EscalationPayload
    urgent = True

    def before(self, uow: UnitOfWork, run: Run, action: Action, payload: EscalationPayload) -> None:
        state = uow.session.scalar(
            select(ChecklistTask.status).filter_by(run_id=run.id, step_id=payload.task_step)
        )
        if state is not None and state != ItemState.OPEN:
            raise Skip(f"'{payload.title}' was {state} before it was overdue")

    def perform(self, adapter: CrmAdapter, payload: EscalationPayload, key: str) -> dict[str, Any]:
        if not isinstance(adapter, TaskReader):
            return {"open": True, "task_url": None}
        found = adapter.read_tasks([payload.task_id])
        if found and found[0].completed:
            return {"open": False, "task": found[0].model_dump(mode="json")}
        return {"open": True, "task_url": adapter.task_url(payload.task_id), "deleted": not found}

    def after(
        self, uow: UnitOfWork, run: Run, action: Action, payload: EscalationPayload, result: dict[str, Any]
    ) -> None:
        if not result["open"]:  # completed just now: the escalation is not needed
            state = TaskState.model_validate(result["task"])
            checklist.apply(uow, self.settings, run.crm, run.account, [state])
            return
        if result.get("deleted"):
            return  # the task is gone from the CRM: nobody to chase for it
        link = result.get("task_url") or f"task {payload.task_id}"
        due = payload.due_at.date().isoformat()
        body = f"'{payload.title}' was due on {due} and is still open ({payload.overdue} overdue): {link}"
        spec = TaskSpec(
            step_id=action.step_id,
            title=f"Overdue: {payload.title}"[:255],
            body=body,
            due_at=uow.now,
            owner_id=payload.owner_id,
            priority="high",
            deal_id=payload.deal_id,
            company_id=payload.company_id,
            contact_id=payload.contact_id,
        )
        note = NoteSpec(step_id=f"{action.step_id}:note", body=f"Escalated: {body}", deal_id=payload.deal_id)
        task_payload = {"tasks": [spec.model_dump(mode="json")]}
        uow.session.add(new_action(run, f"{action.step_id}:task", TASK, task_payload, uow.now, uow.now))
        note_payload = note.model_dump(mode="json")
        uow.session.add(new_action(run, f"{action.step_id}:note", "note", note_payload, uow.now, uow.now))
        queue.reopen_runs(uow.session, [run.id], now=uow.now)
        uow.audit("task.escalated", run_id=run.id, crm=run.crm, step=payload.task_step, task=payload.task_id)


class RecordHandler(Handler[RecordSpec]):
    """The offboarding record on the deal: a note, and the same record as a file where the CRM
    takes files (``RecordWriter``); else the note carries the whole record."""

    kind = "record"
    payload = RecordSpec

    def perform(self, adapter: CrmAdapter, payload: RecordSpec, key: str) -> dict[str, Any]:
        if isinstance(adapter, RecordWriter):
            return {"file_id": adapter.write_record(payload, key), "filename": payload.filename}
        body = f"{payload.body}\n\n{payload.content}"
        return {
            "note_id": adapter.add_note(
                NoteSpec(step_id=payload.step_id, body=body, deal_id=payload.deal_id), key
            )
        }
