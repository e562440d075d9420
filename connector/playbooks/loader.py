"""Load playbook files, and say exactly what is wrong with the ones that do not load.

Every problem is one line: ``<file>: <field path>: <what is expected>``, e.g.
``playbooks/retainer.yaml: steps[3].task.due: '-3x' is not an offset: …``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from connector.errors import PlaybookError
from connector.playbooks import limits
from connector.playbooks.messages import describe, yaml_reason
from connector.playbooks.model import PINNED, Playbook
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
    """Problems a single playbook's steps have with each other."""
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
        after = step.body.after
        if after is None:
            continue
        field = f"steps[{position}].{step.kind}.after"
        if after not in index:
            guess = nearest(after, index)
            hint = f"; did you mean {guess}?" if guess else ""
            problems.append(f"{field}: no step has id {after!r}{hint} (ids: {', '.join(index)})")
        elif after == step.id:
            problems.append(f"{field}: a step cannot wait for itself")
        elif step.body.when and step.body.when.score and playbook.steps[index[after]].kind != "survey":
            problems.append(
                f"{field}: `when.score` needs `after` to name a survey step; {after!r} is not one"
            )
    problems.extend(_cycles(playbook, index))
    return problems


def _cycles(playbook: Playbook, index: dict[str, int]) -> list[str]:
    problems = []
    for position, step in enumerate(playbook.steps):
        seen = [step.id]
        current = step.body.after
        while current is not None and current in index and current not in seen:
            seen.append(current)
            current = playbook.steps[index[current]].body.after
        if current == step.id and len(seen) > 1:
            chain = " → ".join([*seen, step.id])
            problems.append(f"steps[{position}].{step.kind}.after: `after` makes a cycle: {chain}")
    return problems


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
