"""The queue is the only writer of event, run and action state, and only along its table."""

from __future__ import annotations

import ast
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connector import queue
from connector.queue import NEW, TRANSITIONS, ActionState, EventState, IllegalTransition, RunState
from connector.store import Action, Event, Run
from tests.support.helpers import ROOT

STATES = {"event": EventState, "run": RunState, "action": ActionState}
NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def docstring_table() -> dict[str, set[tuple[str, str]]]:
    """The transitions drawn in ``connector.queue``'s docstring."""
    drawn: dict[str, set[tuple[str, str]]] = {name: set() for name in STATES}
    for line in (queue.__doc__ or "").splitlines():
        match = re.match(r"^(event|run|action)\s+(\w+)\s+(\w+)\s+\S", line)
        if match:
            table, source, target = match.groups()
            drawn[table].add((source, target))
    return drawn


def test_the_docstring_table_is_the_table_the_code_checks():
    assert docstring_table() == {name: set(moves) for name, moves in TRANSITIONS.items()}


def test_every_state_is_reachable_and_every_named_state_exists():
    for name, enum in STATES.items():
        named = {s for move in TRANSITIONS[name] for s in move} - {NEW}
        assert named == {str(s) for s in enum}, name


@pytest.mark.parametrize(
    ("table", "source", "target"),
    [
        (Action, "done", "pending"),  # a written action is never written again
        (Action, "cancelled", "pending"),
        (Action, "skipped", "running"),
        (Run, "cancelled", "active"),  # a cancelled run stays cancelled; a new close starts a new one
        (Event, "done", "pending"),
        (Event, NEW, "running"),
    ],
)
def test_any_other_move_is_refused(table, source, target):
    with pytest.raises(IllegalTransition):
        queue.check(table, source, target)


def test_a_new_action_must_start_in_an_allowed_state():
    with pytest.raises(IllegalTransition):
        queue.new_action(
            run_id=1, step_id="s", kind="note", payload={}, key="k", due=NOW, now=NOW, state=ActionState.DONE
        )


def a_run_with_one_action(store) -> tuple[int, int]:
    values = {
        "crm": "sandbox",
        "account": "sandbox",
        "deal_id": "D-1",
        "playbook_id": "p",
        "playbook_version": 1,
        "playbook_hash": "h",
        "generation": 1,
        "playbook": {},
        "deal": {},
        "trigger": "deal_closed",
        "anchor_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }
    with store.session() as session:
        run_id = queue.insert_run(session, values)
        assert run_id is not None
        action = queue.new_action(
            run_id=run_id, step_id="s", kind="note", payload={}, key="k", due=NOW, now=NOW
        )
        session.add(action)
        session.flush()
        return run_id, action.id


def test_a_worker_settles_only_what_it_still_holds(store):
    run_id, action_id = a_run_with_one_action(store)
    with store.session() as session:
        claimed = queue.claim(
            session, Action, worker_id="first", now=NOW, lease=timedelta(seconds=20), limit=10
        )
    assert [a.id for a in claimed.rows] == [action_id]
    later = NOW + timedelta(seconds=21)  # the first worker's lease ran out; another takes it over
    with store.session() as session:
        taken = queue.claim(
            session, Action, worker_id="second", now=later, lease=timedelta(seconds=20), limit=10
        )
    assert taken.reclaimed == {action_id: NOW + timedelta(seconds=20)}
    with store.session() as session:
        assert not queue.settle_action(session, action_id, ActionState.DONE, worker_id="first", now=later)
        assert queue.settle_action(session, action_id, ActionState.DONE, worker_id="second", now=later)
        assert queue.close_run_if_finished(session, run_id, now=later) == 1
    with store.session() as session:
        assert session.get_one(Action, action_id).state == "done"
        assert session.get_one(Run, run_id).state == "done"


# --- nobody else writes state -------------------------------------------------------------

ROWS = {"Event", "Run", "Action"}


def state_writes(tree: ast.AST) -> list[int]:
    """Lines that write a ``state``: ``x.state = …``, ``….values(state=…)``, ``Action(state=…)``,
    an insert's values with a "state" key."""
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for part in ast.walk(target):
                    if isinstance(part, ast.Attribute) and part.attr == "state":
                        lines.append(node.lineno)
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in {"values", *ROWS} and any(k.arg == "state" for k in node.keywords):
                lines.append(node.lineno)
        if isinstance(node, ast.Dict) and any(
            isinstance(k, ast.Constant) and k.value == "state" for k in node.keys
        ):
            lines.append(node.lineno)
    return lines


def test_only_the_queue_writes_event_run_and_action_state():
    writers = {}
    for path in sorted((ROOT / "connector").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative in {"connector/queue.py"} or "/migrations/" in relative or "/store/" in relative:
            continue
        lines = state_writes(ast.parse(path.read_text(), filename=relative))
        if lines:
            writers[relative] = lines
    allowed = {"connector/reports.py"}  # builds "state" keys to show, and writes nothing
    assert {p: lines for p, lines in writers.items() if p not in allowed} == {}


def test_the_guard_sees_a_state_write():
    caught = state_writes(ast.parse("run.state = 'done'\nsession.execute(update(Run).values(state='x'))\n"))
    assert caught == [1, 2]


def test_the_guard_is_pointed_at_the_right_folder():
    assert Path(ROOT / "connector" / "queue.py").exists()
