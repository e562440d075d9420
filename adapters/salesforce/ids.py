"""Salesforce record ids: 15 characters (case-sensitive) or 18 (with a case-folding suffix)."""

from __future__ import annotations

import re

_ID = re.compile(r"[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?")
_SUFFIX_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"


def is_id(value: object) -> bool:
    """Whether ``value`` looks like a record id (so it is safe in a URL path)."""
    return isinstance(value, str) and bool(_ID.fullmatch(value))  # no trailing newline slips through


def short(record_id: str) -> str:
    """The 15-character form: the one every id has, whichever form Salesforce sent."""
    return record_id[:15]


def long(record_id: str) -> str:
    """The 18-character form; its last 3 characters encode which of the first 15 are upper case."""
    if len(record_id) == 18:
        return record_id
    suffix = ""
    for start in range(0, 15, 5):
        chunk = record_id[start : start + 5]
        bits = sum(1 << i for i, char in enumerate(chunk) if char.isupper())
        suffix += _SUFFIX_ALPHABET[bits]
    return record_id + suffix


def same(a: str, b: str) -> bool:
    """Two ids name the same record; compare the 15-char prefix when either side is 15 long."""
    if len(a) == 15 or len(b) == 15:
        return short(a) == short(b)
    return a == b


def is_lead(record_id: str | None) -> bool:
    """Lead ids start with the Lead key prefix, 00Q."""
    return bool(record_id) and str(record_id).startswith("00Q")
