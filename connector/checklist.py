"""What a run's checklist amounts to, from what the CRM says about its tasks.

Pure functions over a run's pinned playbook and its ``checklist_tasks`` rows: which task
steps still count (a step that can no longer happen does not), where the checklist stands
(the deal's ``offboard_status`` and ``offboard_progress``), whether a completed task carries
the evidence its step requires, and the offboarding record written when it is done.
The use cases that react to the CRM are in ``connector.usecases.checklist``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from zoneinfo import ZoneInfo

from connector.models import TaskState
from connector.playbooks import graph
from connector.playbooks.model import Playbook, Step


class Status(StrEnum):
    """The deal's ``offboard_status``."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    OVERDUE = "overdue"
    NEEDS_EVIDENCE = "needs_evidence"
    COMPLETE = "complete"
    CANCELLED = "cancelled"


class ItemState(StrEnum):
    """A checklist task's status (``checklist_tasks.status``): what the CRM says of it."""

    OPEN = "open"
    COMPLETED = "completed"
    NEEDS_EVIDENCE = "needs_evidence"
    CANCELLED = "cancelled"


# Actions of a step that settle it without a task: ruled out, or cancelled with the run.
SETTLED_ACTIONS = frozenset({"skipped", "cancelled"})

# A line that starts "Evidence:" (any case, after optional list markers), and what follows it.
_EVIDENCE = re.compile(r"^[ \t>*\-•]*evidence[ \t]*:", re.IGNORECASE | re.MULTILINE)


def find_evidence(task: TaskState) -> str | None:
    """The evidence on a completed task: the text after its last ``Evidence:`` line (on that
    line and below), or the files attached to it; None when there is neither."""
    found = None
    for match in _EVIDENCE.finditer(task.body):
        found = match
    text = task.body[found.end() :].strip() if found else ""
    files = [f"file: {name}" for name in task.attachments]
    parts = [text] if text else []
    parts += files
    return "; ".join(parts)[:4000] if parts else None


@dataclass(frozen=True)
class Facts:
    """What is known of one run, for deciding which of its task steps still count."""

    items: Mapping[str, str]  # task step id → its checklist state
    actions: Mapping[str, str]  # step id → its action's state
    answered: Mapping[str, int]  # survey step id → the answer's score
    windows_closed: frozenset[str]  # surveys whose answer window closed without an answer


def task_steps(playbook: Playbook) -> list[Step]:
    return [step for step in playbook.steps if step.task is not None]


def needed(playbook: Playbook, facts: Facts) -> dict[str, bool]:
    """For each step, whether it still counts: False once it was ruled out or can no longer
    happen (it waits on an answer that did not come, or on a step that will not happen)."""
    steps = {step.id: step for step in playbook.steps}
    memo: dict[str, bool] = {}

    def counts(step_id: str, trail: frozenset[str] = frozenset()) -> bool:
        if step_id in memo:
            return memo[step_id]
        step = steps.get(step_id)
        if step is None or step_id in trail:
            return False
        memo[step_id] = _counts(step, facts, lambda dep: counts(dep, trail | {step_id}))
        return memo[step_id]

    return {step_id: counts(step_id) for step_id in steps}


def _counts(step: Step, facts: Facts, dep_counts: Callable[[str], bool]) -> bool:
    if step.id in facts.items:
        return facts.items[step.id] != ItemState.CANCELLED
    state = facts.actions.get(step.id)
    if state is not None:
        return state not in SETTLED_ACTIONS
    return all(dep_counts(dep) and _may_release(step, dep, facts) for dep in step.after_ids)


def _may_release(step: Step, dep: str, facts: Facts) -> bool:
    """Whether ``dep``'s outcome so far still lets ``step`` happen."""
    when = step.body.when
    if dep in facts.answered:
        if when is None:
            return True
        if when.answered is False:
            return False  # a reminder or a no-answer step: the answer came
        return when.score is None or when.score.holds(facts.answered[dep])
    # The answer window closed without an answer: only no-answer steps still happen.
    return dep not in facts.windows_closed or (when is not None and when.answered is False)


def undecided(playbook: Playbook, facts: Facts, counting: Mapping[str, bool]) -> set[str]:
    """Steps that still count but may yet be ruled out: not released, and waiting on a survey's
    score (their own ``when``, or a step they wait on) that has not come. The deal's total leaves
    them out until they are released; the checklist is not finished while any is left."""
    maybe: set[str] = set()
    for step in graph.order(playbook) or playbook.steps:  # each step after those it waits on
        if not counting.get(step.id) or step.id in facts.items or step.id in facts.actions:
            continue
        when = step.body.when
        waits_on_score = when is not None and when.score is not None
        if any(
            dep in maybe or (waits_on_score and dep not in facts.answered and dep not in facts.windows_closed)
            for dep in step.after_ids
        ):
            maybe.add(step.id)
    return maybe


@dataclass(frozen=True)
class Progress:
    """Where a run's checklist stands, as the deal's properties show it."""

    status: Status
    done: int
    total: int
    next_due: datetime | None
    finished: bool

    @property
    def text(self) -> str:
        return f"{self.done}/{self.total}"

    def properties(self, playbook: str, zone: ZoneInfo) -> dict[str, str]:
        """The deal properties (Salesforce: Opportunity fields) that show it."""
        due = self.next_due.astimezone(zone).date().isoformat() if self.next_due else ""
        return {
            "offboard_status": str(self.status),
            "offboard_progress": self.text,
            "offboard_next_due": due,
            "offboard_playbook": playbook,
        }


@dataclass(frozen=True)
class Item:
    """A checklist task as ``progress`` needs it."""

    step_id: str
    status: str
    due_at: datetime


def progress(
    playbook: Playbook, facts: Facts, items: Sequence[Item], now: datetime, *, cancelled: bool
) -> Progress:
    """The checklist's status: complete once every task step that counts is completed."""
    counting = needed(playbook, facts)
    maybe = undecided(playbook, facts, counting)
    steps = [step.id for step in task_steps(playbook) if counting[step.id] and step.id not in maybe]
    by_step = {item.step_id: item for item in items}
    done = sum(1 for step in steps if step in by_step and by_step[step].status == ItemState.COMPLETED)
    open_items = [by_step[s] for s in steps if s in by_step and by_step[s].status == ItemState.OPEN]
    next_due = None if cancelled else min((item.due_at for item in open_items), default=None)
    finished = done == len(steps) and not any(step.id in maybe for step in task_steps(playbook))
    if cancelled:
        status = Status.CANCELLED
    elif finished:
        status = Status.COMPLETE
    elif any(by_step[s].status == ItemState.NEEDS_EVIDENCE for s in steps if s in by_step):
        status = Status.NEEDS_EVIDENCE
    elif next_due is not None and next_due < now:
        status = Status.OVERDUE
    elif done:
        status = Status.IN_PROGRESS
    else:
        status = Status.NOT_STARTED
    return Progress(status, done, len(steps), next_due, finished and not cancelled)
