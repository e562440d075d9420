"""Action kinds: one handler per kind, found by name in the registry.

To add a kind: write its payload model and handler (``connector.actions.base.Handler``),
list it in ``registry``, and queue actions of it (``connector.runs.new_action``). The
worker needs no change. Kinds named like a playbook step kind (task, note, property,
survey, referral) are that step's writes; the others are the feedback loop's
(answer, referral_contact) and our own timers (deadline).
"""

from __future__ import annotations

from typing import Any

from connector.actions.base import Handler
from connector.actions.checklist import EscalationHandler, RecordHandler
from connector.actions.deadline import DeadlineHandler
from connector.actions.invites import ReferralHandler, SurveyHandler
from connector.actions.writes import (
    AnswerHandler,
    NoteHandler,
    PropertyHandler,
    ReferralContactHandler,
    TaskHandler,
)
from connector.settings import Settings

KINDS: tuple[type[Handler[Any]], ...] = (
    TaskHandler,
    NoteHandler,
    PropertyHandler,
    SurveyHandler,
    ReferralHandler,
    AnswerHandler,
    ReferralContactHandler,
    DeadlineHandler,
    EscalationHandler,
    RecordHandler,
)
URGENT_KINDS = frozenset(cls.kind for cls in KINDS if cls.urgent)


def registry(settings: Settings) -> dict[str, Handler[Any]]:
    """Every action kind's handler, by kind."""
    return {cls.kind: cls(settings) for cls in KINDS}
