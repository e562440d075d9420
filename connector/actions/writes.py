"""The plain CRM writes: the checklist's tasks, a note, property updates, a survey answer, a referral."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import select

from adapters.base import CrmAdapter, NoteBatches, PropertyBatches, Results, TaskBatches, Write
from connector import queue
from connector.actions.base import Handler
from connector.errors import CrmError
from connector.models import AnswerSpec, NoteSpec, PropertyUpdate, ReferralSpec, TaskSpec
from connector.store import Action, Run
from connector.usecases import checklist
from connector.usecases.uow import UnitOfWork


class TaskPayload(BaseModel):
    """One or more checklist tasks written together; ``after`` names the action a waiting one follows."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskSpec]
    after: str | None = None


class TaskHandler(Handler[TaskPayload]):
    kind = "task"
    payload = TaskPayload
    urgent = True

    def perform(self, adapter: CrmAdapter, payload: TaskPayload, key: str) -> dict[str, Any]:
        return {"task_ids": adapter.create_tasks(payload.tasks, key)}

    def batches(self, adapter: CrmAdapter) -> bool:
        return isinstance(adapter, TaskBatches)

    def perform_many(
        self, adapter: CrmAdapter, writes: Sequence[Write[TaskPayload]]
    ) -> Results[dict[str, Any]]:
        assert isinstance(adapter, TaskBatches)
        tasks = [Write[Sequence[TaskSpec]](w.key, w.item.tasks, w.unsure_since) for w in writes]
        return [r if isinstance(r, CrmError) else {"task_ids": r} for r in adapter.create_tasks_many(tasks)]

    def after(
        self, uow: UnitOfWork, run: Run, action: Action, payload: TaskPayload, result: dict[str, Any]
    ) -> None:
        """The playbook's task steps among them join the run's live checklist."""
        checklist.tasks_written(uow, self.settings, run, payload.tasks, [str(i) for i in result["task_ids"]])


class NoteHandler(Handler[NoteSpec]):
    kind = "note"
    payload = NoteSpec

    def perform(self, adapter: CrmAdapter, payload: NoteSpec, key: str) -> dict[str, Any]:
        return {"note_id": adapter.add_note(payload, key)}

    def batches(self, adapter: CrmAdapter) -> bool:
        return isinstance(adapter, NoteBatches)

    def perform_many(self, adapter: CrmAdapter, writes: Sequence[Write[NoteSpec]]) -> Results[dict[str, Any]]:
        assert isinstance(adapter, NoteBatches)
        return [r if isinstance(r, CrmError) else {"note_id": r} for r in adapter.add_notes_many(writes)]


class PropertyHandler(Handler[PropertyUpdate]):
    kind = "property"
    payload = PropertyUpdate

    def perform(self, adapter: CrmAdapter, payload: PropertyUpdate, key: str) -> dict[str, Any]:
        adapter.update_properties(payload, key)
        return {"properties": payload.properties}

    def batches(self, adapter: CrmAdapter) -> bool:
        return isinstance(adapter, PropertyBatches)

    def perform_many(
        self, adapter: CrmAdapter, writes: Sequence[Write[PropertyUpdate]]
    ) -> Results[dict[str, Any]]:
        assert isinstance(adapter, PropertyBatches)
        done = adapter.update_properties_many(writes)
        return [
            r if isinstance(r, CrmError) else {"properties": w.item.properties}
            for w, r in zip(writes, done, strict=True)
        ]


class AnswerHandler(Handler[AnswerSpec]):
    """A client's survey answer, written back to the contact and the deal."""

    kind = "answer"
    payload = AnswerSpec

    def perform(self, adapter: CrmAdapter, payload: AnswerSpec, key: str) -> dict[str, Any]:
        return {"answer_id": adapter.record_answer(payload, key)}


class ReferralContactHandler(Handler[ReferralSpec]):
    """Someone a client introduced becomes a contact (or lead); their follow-up task may then go."""

    kind = "referral_contact"
    payload = ReferralSpec

    def perform(self, adapter: CrmAdapter, payload: ReferralSpec, key: str) -> dict[str, Any]:
        return {"contact_id": adapter.create_referral(payload, key)}

    def after(
        self, uow: UnitOfWork, run: Run, action: Action, payload: ReferralSpec, result: dict[str, Any]
    ) -> None:
        """The follow-up task waiting for this contact goes now, pointing at them."""
        follow_up = _waiting_follow_up(uow, action)
        if follow_up is None:
            return
        contact_id = str(result["contact_id"])
        tasks = [task | {"contact_id": contact_id} for task in follow_up.payload["tasks"]]
        queue.release_waiting(uow.session, follow_up.id, payload={"tasks": tasks}, now=uow.now)


def _waiting_follow_up(uow: UnitOfWork, referral: Action) -> Action | None:
    return uow.session.scalar(
        select(Action).where(
            Action.run_id == referral.run_id,
            Action.step_id == f"{referral.step_id}:follow-up",
            Action.state == queue.ActionState.WAITING,
        )
    )
