"""Problems in a playbook file, said the way the person who wrote it can fix them.

A YAML error names the line and says what usually causes it; an unknown key that
belongs one level up or down says it is indented wrongly, and a misspelt one
names the nearest key that exists.
"""

from __future__ import annotations

import typing
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from connector.playbooks.model import Playbook
from connector.playbooks.sandbox import nearest

# What PyYAML's problems usually mean in a hand-written playbook.
_YAML_MEANINGS = (
    (
        "mapping values are not allowed",
        "a ':' YAML did not expect: put text containing ': ' in quotes, "
        "or check that this line is indented like the keys it belongs with",
    ),
    (
        "could not find expected ':'",
        "a line that is not 'key: value': check for a missing ':' or a wrong indentation",
    ),
    ("did not find expected key", "this line's indentation does not line up with the keys around it"),
    ("expected <block end>", "this line's indentation does not line up with the lines above it"),
    (
        "did not find expected '-' indicator",
        "a list item's indentation does not line up with the items above it",
    ),
    ("found character '\\t'", "a tab: indent with spaces only"),
    ("that cannot start any token", "a value cannot start with this character: put the value in quotes"),
    ("found unexpected end of stream", "the file ends inside a quote that was never closed"),
    ("did not find expected ',' or ']'", "a '[' list that was never closed with ']'"),
    ("did not find expected ',' or '}'", "a '{' mapping that was never closed with '}'"),
    ("found undefined alias", "a '*' starts an alias: put a value starting with '*' in quotes"),
    ("found duplicate anchor", "an '&' starts an anchor: put a value starting with '&' in quotes"),
)


_OPENERS = (
    ("quoted scalar", "the quoted text"),
    ("flow sequence", "the [ list"),
    ("flow mapping", "the { mapping"),
    ("block", "the block it belongs to"),
)


def yaml_reason(exc: yaml.YAMLError) -> str:
    """``line 3, column 9: <what it usually means> (YAML: <its own words>)``."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    meaning = next((plain for words, plain in _YAML_MEANINGS if words in problem), None)
    said = f"{meaning} (YAML: {problem})" if meaning else problem
    opened = getattr(exc, "context_mark", None)
    if opened is not None and mark is not None and opened.line != mark.line:
        context = str(getattr(exc, "context", "") or "")
        what = next((name for words, name in _OPENERS if words in context), "it")
        said += f"; {what} began at line {opened.line + 1}"
    return f"line {mark.line + 1}, column {mark.column + 1}: {said}" if mark else said


def describe(exc: ValidationError, data: Any = None) -> list[str]:
    """One ``<field path>: <problem>`` line per error pydantic found in ``data``."""
    lines = []
    for error in exc.errors(include_url=False, include_input=True):
        path = field_path(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = unknown_key(error["loc"], data)
        elif error["type"] == "missing":
            message = "required"
        lines.append(f"{path or '(top)'}: {message}")
    return lines


def field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif "[" in part or part[:1].isupper() or part in ("text", "by_tone"):
            continue  # pydantic's names for union members, not a field of the file
        else:
            path += f".{part}" if path else part
    return path


def unknown_key(loc: tuple[int | str, ...], data: Any) -> str:
    """Why a key is unknown where it is: indented at the wrong level, or misspelt."""
    key = str(loc[-1])
    here = _model_at(loc[:-1])
    allowed = list(here.model_fields) if here else []
    misplaced = _belongs_elsewhere(key, loc[:-1], here, data)
    if misplaced:
        return misplaced
    guess = nearest(key, allowed)
    text = "unknown key"
    if guess:
        text += f"; did you mean {guess}?"
    if allowed:
        text += f" (keys here: {', '.join(allowed)})"
    return text + "; see docs/playbooks.md"


def _belongs_elsewhere(
    key: str, parent: tuple[int | str, ...], here: type[BaseModel] | None, data: Any
) -> str | None:
    from connector.playbooks.model import STEP_KINDS, TASK_ONLY, Step, TaskStep

    if key in TASK_ONLY and here not in (None, Step, TaskStep) and _step_level(parent):
        return f"only task steps take {key!r}: nobody completes a {parent[-1]} step"
    if here is Step:
        kind = next((k for k in STEP_KINDS if isinstance(_value_at(data, (*parent, k)), dict)), None)
        child = _model_at((*parent, kind)) if kind else None
        if child is not None and key in child.model_fields:
            return (
                f"indentation: {key!r} is a {kind} field; indent it under `{kind}:`, not at the step's level"
            )
    if here is not None and here is not Step and _step_level(parent) and key in Step.model_fields:
        return f"indentation: {key!r} belongs to the step, not inside it; indent it less, level with `id:`"
    if here is Playbook:
        for field in ("match", "trigger"):
            inner = _model_at((field,))
            if inner is not None and key in inner.model_fields:
                return f"indentation: {key!r} belongs under `{field}:`; indent it there"
        if key in Step.model_fields:
            return (
                f"indentation: {key!r} belongs to a step; indent it under `steps:` "
                "as part of a `- id: …` item"
            )
    return None


def _step_level(parent: tuple[int | str, ...]) -> bool:
    return len(parent) >= 3 and parent[0] == "steps" and isinstance(parent[1], int)


def _model_at(loc: tuple[int | str | None, ...]) -> type[BaseModel] | None:
    """The model class that validates the value at ``loc`` of a playbook, where there is one."""
    model: type[BaseModel] | None = Playbook
    for part in loc:
        if model is None or part is None:
            return None
        if isinstance(part, int) or part not in model.model_fields:
            continue  # list positions and pydantic's union member names
        model = _model_in(model.model_fields[part].annotation)
    return model


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None


def _value_at(data: Any, loc: tuple[int | str | None, ...]) -> Any:
    for part in loc:
        found = isinstance(data, dict) and part in data
        found = found or (isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data))
        if not found:
            return None
        data = data[part]
    return data
