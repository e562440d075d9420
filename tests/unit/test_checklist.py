"""What a checklist amounts to: evidence on a task, which steps still count, the deal's status."""

from __future__ import annotations

from datetime import UTC, datetime

import yaml

from connector.checklist import Facts, Item, Status, find_evidence, needed, progress
from connector.models import TaskState
from connector.playbooks.model import Playbook

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)
EARLIER = datetime(2026, 11, 24, 9, tzinfo=UTC)
LATER = datetime(2026, 11, 26, 9, tzinfo=UTC)

PLAYBOOK = Playbook.model_validate(
    yaml.safe_load(
        """
id: p
name: P
version: 1
steps:
  - {id: transfer, task: {title: T, evidence: required}}
  - {id: revoke, task: {title: R, after: transfer}}
  - {id: nps, survey: {kind: nps}}
  - {id: call, task: {title: C, after: nps, when: {score: {lte: 6}}}}
  - {id: thanks, task: {title: Th, after: [revoke, nps]}}
"""
    )
)


def facts(**kw) -> Facts:
    values = {"items": {}, "actions": {}, "answered": {}, "windows_closed": frozenset()} | kw
    return Facts(**values)


def test_evidence_is_the_text_after_the_last_evidence_line_or_a_file():
    task = TaskState(
        id="1", completed=True, body="Do it.\nEvidence: old\n- evidence: ticket 42\n  closed by IT"
    )
    assert find_evidence(task) == "ticket 42\n  closed by IT"
    assert find_evidence(TaskState(id="1", completed=True, body="Evidence:   ")) is None
    assert find_evidence(TaskState(id="1", completed=True, body="no proof")) is None
    assert find_evidence(TaskState(id="1", completed=True, attachments=("a.pdf",))) == "file: a.pdf"


def test_a_step_waiting_on_an_answer_that_rules_it_out_no_longer_counts():
    assert needed(PLAYBOOK, facts())["call"] is True  # the answer may still come
    promoter = needed(PLAYBOOK, facts(answered={"nps": 9}))
    assert promoter["call"] is False and promoter["thanks"] is True
    silent = needed(PLAYBOOK, facts(windows_closed=frozenset({"nps"})))
    assert silent["call"] is False and silent["thanks"] is False  # it waited on the answer too
    skipped = needed(PLAYBOOK, facts(actions={"revoke": "skipped"}))
    assert skipped["revoke"] is False and skipped["thanks"] is False


def items(**states: tuple[str, datetime]) -> list[Item]:
    return [Item(step, state, due) for step, (state, due) in states.items()]


def test_status_follows_the_checklist():
    promoter = facts(answered={"nps": 9})
    fresh = progress(PLAYBOOK, promoter, items(transfer=("open", LATER)), NOW, cancelled=False)
    assert (fresh.status, fresh.text, fresh.next_due) == (Status.NOT_STARTED, "0/3", LATER)
    late = progress(PLAYBOOK, promoter, items(transfer=("open", EARLIER)), NOW, cancelled=False)
    assert late.status == Status.OVERDUE
    waiting = progress(PLAYBOOK, promoter, items(transfer=("needs_evidence", EARLIER)), NOW, cancelled=False)
    assert waiting.status == Status.NEEDS_EVIDENCE and waiting.next_due is None
    going = items(transfer=("completed", EARLIER), revoke=("open", LATER))
    assert progress(PLAYBOOK, promoter, going, NOW, cancelled=False).status == Status.IN_PROGRESS
    done = items(transfer=("completed", EARLIER), revoke=("completed", LATER), thanks=("completed", LATER))
    finished = progress(PLAYBOOK, promoter, done, NOW, cancelled=False)
    assert (finished.status, finished.text, finished.finished) == (Status.COMPLETE, "3/3", True)
    assert progress(PLAYBOOK, promoter, done, NOW, cancelled=True).status == Status.CANCELLED
    assert finished.properties("p@1", UTC) == {
        "offboard_status": "complete",
        "offboard_progress": "3/3",
        "offboard_next_due": "",
        "offboard_playbook": "p@1",
    }


def test_a_step_that_may_yet_be_ruled_out_is_not_counted_and_holds_the_finish():
    before = items(transfer=("completed", EARLIER), revoke=("completed", LATER), thanks=("completed", LATER))
    waiting = progress(PLAYBOOK, facts(), before, NOW, cancelled=False)
    # The detractor call waits on a score not yet given: not in the total, but not finished either.
    assert (waiting.text, waiting.finished, waiting.status) == ("3/3", False, Status.IN_PROGRESS)
    detractor = progress(PLAYBOOK, facts(answered={"nps": 3}), before, NOW, cancelled=False)
    assert (detractor.text, detractor.finished) == ("3/4", False)
    cancelled = progress(PLAYBOOK, facts(), items(transfer=("open", LATER)), NOW, cancelled=True)
    assert (cancelled.status, cancelled.next_due) == (Status.CANCELLED, None)
