"""A survey's answer window closing: an action of our own, no CRM call.

It is queued with the survey, due when the window closes (moved later if the survey
went out late), and runs the survey's no-answer steps unless an answer came.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from connector.actions.base import Handler
from connector.store import Action, Run
from connector.usecases import feedback
from connector.usecases.uow import UnitOfWork


class DeadlinePayload(BaseModel):
    model_config = ConfigDict(extra="forbid")

    survey_step: str


class DeadlineHandler(Handler[DeadlinePayload]):
    kind = "deadline"
    payload = DeadlinePayload
    local = True

    def settle(self, uow: UnitOfWork, run: Run, action: Action, payload: DeadlinePayload) -> dict[str, Any]:
        return feedback.deadline_passed(uow, self.settings, run, payload.survey_step)
