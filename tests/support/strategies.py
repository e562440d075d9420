"""Hypothesis strategies for hostile input: arbitrary values, and near-valid payloads mutated.

A mutation starts from a valid payload and drops, adds, retypes, nests or empties
fields; some values become raw JSON tokens the encoder would never write (huge
numbers, NaN, ``\\u0000``, lone surrogates, deep nesting); then the bytes may be
truncated, salted with invalid UTF-8, re-encoded as UTF-16, or given a BOM.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import strategies as st

HOSTILE_STRINGS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\ud800",  # a lone surrogate: not encodable as UTF-8
    "x\udfffy",
    "\ufeff",
    "\u202egnp.exe",
    "💥",
    "Ω" * 70,
    "x" * 300,
    "y" * 70_000,
    "' OR Name LIKE '%",
    "\\",
    '"',
    "<script>alert(1)</script>",
    "{{ 7*7 }}",
    "../../etc/passwd",
    "\r\nX-Injected: 1",
    "²",
    "٣",
    "\uff11\uff12",  # fullwidth digits
    "NaN",
    "1e999",
    "-0",
    "null",
    "0x10",
    "closedwon",
    "deal.propertyChange",
]
HUGE_INTS = [2**31, 2**63, -(2**63) - 1, 2**64, 10**100, 10**4000]
# Tokens spliced into the JSON text as they are: what json.dumps would never produce.
RAW_JSON = [
    "1e999",
    "-1e999",
    "1e+100",  # finite, but Postgres would give it back as a 101-digit integer
    "-2.5e-301",
    "NaN",
    "Infinity",
    "-Infinity",
    "1" * 5000,  # past Python's int-from-string digit limit
    "-" + "9" * 4400,
    '"\\u0000"',
    '"nul\\u0000inside"',
    '"\\ud800"',
    '"\\udc00\\ud800"',
    "[" * 3000 + "]" * 3000,  # deeper than the recursion limit
    '{"a":' * 2000 + "0" + "}" * 2000,
    "[" * 40 + "]" * 40,
    "01",
    "+1",
    ".5",
    "'single'",
    "undefined",
    "0x1F",
    '"\\x41"',
]


def hostile_text(max_size: int = 30) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(HOSTILE_STRINGS), st.text(max_size=max_size))


def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.sampled_from(HUGE_INTS),
        st.floats(allow_nan=False, allow_infinity=False),
        hostile_text(),
    )


def values() -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars(),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(hostile_text(), children, max_size=3)
        ),
        max_leaves=8,
    )


# --- mutating a valid payload --------------------------------------------------------------


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from paths(child, (*prefix, index))


def _replace(root: Any, path: tuple[Any, ...], change: Callable[[Any], Any]) -> Any:
    if not path:
        return change(root)
    parent = root
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = change(parent[path[-1]])
    return root


def _drop(root: Any, path: tuple[Any, ...]) -> Any:
    if not path:
        return root
    parent = root
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return root


MUTATIONS = ("drop", "replace", "raw", "wrap-list", "wrap-object", "extra", "empty", "duplicate", "stringify")


@st.composite
def mutated(draw: st.DrawFn, base: Any, *, max_mutations: int = 3) -> tuple[Any, list[str]]:
    """``base`` changed by up to ``max_mutations`` mutations; raw tokens are placeholders ``@@raw<n>@@``."""
    value = copy.deepcopy(base)
    raws: list[str] = []
    for _ in range(draw(st.integers(0, max_mutations))):
        path = draw(st.sampled_from(list(paths(value))))
        operation = draw(st.sampled_from(MUTATIONS))
        if operation == "drop":
            value = _drop(value, path)
        elif operation == "replace":
            new = draw(values())
            value = _replace(value, path, lambda _old, new=new: new)
        elif operation == "raw":
            raws.append(draw(st.sampled_from(RAW_JSON)))
            marker = f"@@raw{len(raws) - 1}@@"
            value = _replace(value, path, lambda _old, marker=marker: marker)
        elif operation == "wrap-list":
            value = _replace(value, path, lambda old: [old])
        elif operation == "wrap-object":
            value = _replace(value, path, lambda old: {"value": old})
        elif operation == "extra":
            key, extra = draw(hostile_text()), draw(values())
            value = _replace(
                value,
                path,
                lambda old, key=key, extra=extra: {**old, key: extra} if isinstance(old, dict) else old,
            )
        elif operation == "empty":
            value = _replace(
                value, path, lambda old: type(old)() if isinstance(old, dict | list | str) else None
            )
        elif operation == "duplicate":
            value = _replace(value, path, lambda old: [*old, *old] if isinstance(old, list) else old)
        elif operation == "stringify":
            value = _replace(value, path, lambda old: json.dumps(old) if not isinstance(old, str) else old)
    return value, raws


def to_json(value: Any, raws: list[str], *, ascii_only: bool) -> bytes:
    text = json.dumps(value, ensure_ascii=ascii_only)
    for index, raw in enumerate(raws):
        text = text.replace(json.dumps(f"@@raw{index}@@"), raw)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate becomes invalid UTF-8


@st.composite
def noisy(draw: st.DrawFn, body: bytes) -> bytes:
    """``body``, most often as it is; otherwise truncated, salted, re-encoded or wrapped."""
    kind = draw(
        st.sampled_from(["as-is"] * 12 + ["truncate", "insert", "invalid-utf8", "bom", "utf16", "trailing"])
    )
    if kind == "truncate" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if kind == "insert":
        at = draw(st.integers(0, len(body)))
        return body[:at] + draw(st.binary(min_size=1, max_size=8)) + body[at:]
    if kind == "invalid-utf8":
        at = draw(st.integers(0, len(body)))
        return (
            body[:at]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80"]))
            + body[at:]
        )
    if kind == "bom":
        return b"\xef\xbb\xbf" + body
    if kind == "utf16":
        try:
            return body.decode("utf-8").encode("utf-16")
        except UnicodeDecodeError:
            return body
    if kind == "trailing":
        return body + draw(st.sampled_from([b" ", b"\n", b"{}", b"]", b"\x00", b",", b"garbage"]))
    return body


@st.composite
def json_bodies(draw: st.DrawFn, base: Any) -> bytes:
    """A near-valid JSON body built from ``base``."""
    value, raws = draw(mutated(base))
    return draw(noisy(to_json(value, raws, ascii_only=draw(st.booleans()))))


CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "text/xml; charset=utf-8",
    "application/octet-stream",
    "",
]
