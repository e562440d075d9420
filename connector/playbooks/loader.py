"""Load playbook files, and say exactly what is wrong with the ones that do not load.

Every problem is one line: ``<file>: <field path>: <what is expected>``, e.g.
``playbooks/retainer.yaml: steps[3].task.due: '-3x' is not an offset: …``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from connector.errors import PlaybookError
from connector.playbooks import graph, limits
from connector.playbooks.graph import WAITABLE
from connector.playbooks.messages import describe, yaml_reason
from connector.playbooks.model import PINNED, Playbook, Step
from connector.playbooks.sandbox import nearest

SUFFIXES = (".yaml", ".yml")
MAX_FILE_BYTES = 1_000_000  # a playbook is a page of YAML; anything near this is a mistake or an attack


@dataclass(frozen=True)
class LoadedPlaybook:
    playbook: Playbook
    path: str
    hash: str

    @property
    def id(self) -> str:
        return self.playbook.id

    def pinned(self) -> dict[str, Any]:
        """The content a run keeps, so later edits never reach it."""
        return self.playbook.model_dump(mode="json", exclude_none=True)


def content_hash(playbook: Playbook) -> str:
    canonical = json.dumps(
        playbook.model_dump(mode="json", exclude_none=True), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


_pinned: dict[str, Playbook] = {}


def from_pinned(content: dict[str, Any]) -> Playbook:
    """The playbook a run pinned, rebuilt once per process for each distinct content.

    Its templates were checked when it was pinned (and are rendered within the
    hard limits whenever used), so they are not rendered again here: client pages
    and the worker can call this on every request at the cost of a hash.
    """
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    key = hashlib.sha256(canonical.encode()).hexdigest()
    found = _pinned.get(key)
    if found is None:
        if len(_pinned) >= 256:
            _pinned.clear()  # a handful of playbook versions are in use at once; start over rarely
        found = _pinned[key] = Playbook.model_validate(content, context=PINNED)
    return found


def playbook_files(paths: Iterable[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in SUFFIXES and p.is_file()))
        else:
            files.append(path)
    return files


def load_file(path: Path) -> LoadedPlaybook:
    """One playbook, or PlaybookError with one line per problem."""
    return load_text(read_text(path), str(path))


def read_text(path: Path) -> str:
    """A playbook file's text, or PlaybookError saying why it cannot be read."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise PlaybookError([_too_big(path, size)])
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlaybookError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise PlaybookError([f"{path}: not UTF-8 text"]) from None


def load_text(text: str, name: str) -> LoadedPlaybook:
    """One playbook from its YAML text, checked exactly as a file is; ``name`` stands for the file
    in every problem (a path, or ``<crm>:<account>/<id>@<version>`` for a published version)."""
    size = len(text.encode("utf-8"))
    if size > MAX_FILE_BYTES:
        raise PlaybookError([_too_big(name, size)])
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlaybookError([f"{name}: not valid YAML: {yaml_reason(exc)}"]) from None
    except ValueError as exc:  # a scalar YAML cannot turn into a value: 2026-13-45, a 5000-digit number
        raise PlaybookError([f"{name}: not valid YAML: {exc}"]) from None
    except RecursionError:
        raise PlaybookError([f"{name}: not valid YAML: nested too deeply"]) from None
    if not isinstance(data, dict):
        raise PlaybookError([f"{name}: expected a mapping with id, name, version and steps"])
    try:
        with limits.file_budget():
            playbook = Playbook.model_validate(data)
    except ValidationError as exc:
        raise PlaybookError([f"{name}: {line}" for line in describe(exc, data)]) from None
    problems = [f"{name}: {line}" for line in step_problems(playbook)]
    if problems:
        raise PlaybookError(problems)
    return LoadedPlaybook(playbook=playbook, path=name, hash=content_hash(playbook))


def _too_big(name: Path | str, size: int) -> str:
    return f"{name}: the file is {size:,} bytes; a playbook file may be at most {MAX_FILE_BYTES:,}"


def load_all(paths: Iterable[Path]) -> list[LoadedPlaybook]:
    """Every playbook under ``paths``; PlaybookError listing every problem in every file."""
    loaded: list[LoadedPlaybook] = []
    problems: list[str] = []
    files = playbook_files(paths)
    if not files:
        problems.append(f"{', '.join(str(p) for p in paths)}: no playbook files (*.yaml) found")
    for path in files:
        try:
            loaded.append(load_file(path))
        except PlaybookError as exc:
            problems.extend(exc.problems)
    problems.extend(set_problems(loaded))
    if problems:
        raise PlaybookError(problems)
    return loaded


def step_problems(playbook: Playbook) -> list[str]:
    """Problems a single playbook's steps have with each other: ids, ``after`` links, the graph."""
    problems: list[str] = []
    index: dict[str, int] = {}
    for position, step in enumerate(playbook.steps):
        if step.id in index:
            problems.append(
                f"steps[{position}].id: {step.id!r} is already used by steps[{index[step.id]}]; "
                "step ids must be unique"
            )
        index.setdefault(step.id, position)
    for position, step in enumerate(playbook.steps):
        problems.extend(_after_problems(playbook, position, step, index))
        problems.extend(_when_problems(playbook, position, step, index))
    cycles = _cycles(playbook)
    problems.extend(cycles)
    if not cycles and not problems:
        problems.extend(_unreachable(playbook))
        problems.extend(_deadline_problems(playbook))
    return problems


def _after_field(position: int, step: Step, item: int) -> str:
    """``steps[3].task.after`` for one id, ``steps[3].task.after[1]`` for one of a list."""
    field = f"steps[{position}].{step.kind}.after"
    return f"{field}[{item}]" if len(step.after_ids) > 1 else field


def _after_problems(playbook: Playbook, position: int, step: Step, index: dict[str, int]) -> list[str]:
    problems = []
    for item, after in enumerate(step.after_ids):
        field = _after_field(position, step, item)
        if after not in index:
            guess = nearest(after, index)
            hint = f"; did you mean {guess}?" if guess else ""
            problems.append(f"{field}: no step has id {after!r}{hint} (ids: {', '.join(index)})")
        elif after == step.id:
            problems.append(f"{field}: a step cannot wait for itself")
        elif after in step.after_ids[:item]:
            problems.append(f"{field}: {after!r} is listed twice")
        else:
            problem = _never_done(playbook.steps[index[after]], step)
            if problem:
                problems.append(f"{field}: {problem}")
    return problems


def _never_done(before: Step, step: Step) -> str | None:
    """Why waiting on ``before`` means waiting forever, if it does."""
    if before.kind not in WAITABLE:
        return (
            f"{before.id!r} is a {before.kind} step, which nobody completes or answers, so this step "
            "would never run: wait for a task (completed in the CRM) or a survey (answered)"
        )
    reminds = before.survey.reminds if before.survey else None
    if reminds is not None:
        what = "reminder" if step.survey is not None else "step"
        return (
            f"{before.id!r} is a reminder: its answers count for {reminds!r}, and this {what} "
            f"would never run; wait for {reminds!r} instead"
        )
    if step.survey is not None and before.kind != "survey":
        return f"a reminder follows a survey; {before.id!r} is a {before.kind} step"
    return None


def _when_problems(playbook: Playbook, position: int, step: Step, index: dict[str, int]) -> list[str]:
    when = step.body.when
    known = [i for i in step.after_ids if i in index]
    if when is None or len(known) < len(step.after_ids):
        return []
    field = f"steps[{position}].{step.kind}.after"
    surveys = [i for i in known if playbook.steps[index[i]].kind == "survey"]
    if not surveys:
        named = ", ".join(repr(i) for i in known)
        return [
            f"{field}: `when` tests a survey's answer, so it needs `after` to name a survey step; "
            f"{named} {'is not one' if len(known) == 1 else 'are not'}"
        ]
    if len(surveys) > 1:
        return [
            f"{field}: `when` tests one survey's answer; `after` names {len(surveys)} surveys "
            f"({', '.join(surveys)}): wait for one of them here"
        ]
    return []


def _cycles(playbook: Playbook) -> list[str]:
    """One problem per ``after`` link that is part of a cycle, through any kind of step."""
    problems = []
    for position, step in enumerate(playbook.steps):
        for item, after in enumerate(step.after_ids):
            if after == step.id:
                continue  # said already: a step cannot wait for itself
            chain = graph.path(playbook, after, step.id)
            if chain is not None:
                shown = " → ".join([step.id, *chain])
                problems.append(f"{_after_field(position, step, item)}: `after` makes a cycle: {shown}")
    return problems


def _unreachable(playbook: Playbook) -> list[str]:
    """Steps that wait on conditions that never hold together, or on a step that never runs."""
    laid = graph.order(playbook)
    assert laid is not None  # cycles were reported first
    rules = graph.score_rules(playbook, laid)
    position = {step.id: i for i, step in enumerate(playbook.steps)}
    never: set[str] = set()
    problems = []
    for step in laid:
        field = f"steps[{position[step.id]}].{step.kind}"
        doomed = next((i for i in step.after_ids if i in never), None)
        if doomed is not None:
            never.add(step.id)
            item = step.after_ids.index(doomed)
            problems.append(
                f"{_after_field(position[step.id], step, item)}: waits on {doomed!r}, which can never "
                f"run (see steps[{position[doomed]}]), so this step never runs either"
            )
            continue
        for survey, held in rules[step.id].items():
            if not graph.can_hold_together([bound for _, bound in held]):
                never.add(step.id)
                said = " and ".join(f"{who} ({graph.describe_range(survey, b)})" for who, b in held)
                problems.append(
                    f"{field}.after: never runs: it needs {said}; {survey} is answered once, "
                    "so these never hold together"
                )
                break
    return problems


def _deadline_problems(playbook: Playbook) -> list[str]:
    """``deadline: contract_end`` on a task the playbook itself plans after the contract end."""
    if playbook.anchor != "contract_end":
        return []  # the steps do not count from the contract end: only a deal can tell
    # A business-day offset lands differently by weekday: a task is late by construction when it
    # is late for a contract ending on any day of the week.
    late: dict[str, int] = {}
    for weekday in range(7):
        anchor = date(2026, 1, 5) + timedelta(days=weekday)
        days = graph.planned_days(playbook, anchor)
        for step in playbook.steps:
            if step.task is not None and step.task.deadline == "contract_end":
                late[step.id] = min(late.get(step.id, 10**6), (days[step.id] - anchor).days)
    return [
        f"steps[{position}].task.deadline: the playbook plans this task at least {late[step.id]} "
        "day(s) after the contract end it must be done by; give it, or the steps it waits on, "
        "an earlier due"
        for position, step in enumerate(playbook.steps)
        if late.get(step.id, 0) > 0
    ]


def set_problems(loaded: list[LoadedPlaybook]) -> list[str]:
    """Problems between playbooks: duplicate ids, two playbooks that always tie."""
    problems = []
    by_id: dict[str, LoadedPlaybook] = {}
    by_match: dict[tuple[str, int], LoadedPlaybook] = {}
    for item in loaded:
        if item.id in by_id:
            problems.append(f"{item.path}: id: {item.id!r} is also the id of {by_id[item.id].path}")
        by_id.setdefault(item.id, item)
        key = (item.playbook.match.model_dump_json(), item.playbook.priority)
        if key in by_match:
            problems.append(
                f"{item.path}: match: matches exactly the same deals as {by_match[key].path} "
                f"with the same priority ({item.playbook.priority}); change one's match or priority"
            )
        by_match.setdefault(key, item)
    return problems
