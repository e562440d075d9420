"""Hard limits on what rendering one playbook template may cost.

A template is written by RevOps but rendered by the worker for every deal, so
no template may build a huge string, list or number, loop without end, or run
for long. Each render gets a :class:`Budget`; the sandbox (templates.py) checks
it wherever a template can make something big or slow:

- every value a filter, method, operator or ``~`` builds counts towards
  ``MAX_BUILT`` characters (or items), and no single value may exceed ``MAX_TEXT``;
- widths and repeat counts are checked *before* the call that would use them
  (``center(400000000)`` is refused without allocating anything);
- loop iterations count towards ``MAX_LOOPS``, and each iteration is charged the
  loop body's literal text;
- the clock is checked at every one of these points (``MAX_SECONDS``).

Breaking any of them raises :class:`TemplateLimit`, a Jinja ``SecurityError``:
``offboard validate`` reports it against the file and field, and at run time it
fails the one thing being rendered instead of hanging the worker.
"""

from __future__ import annotations

import re
import string
import time
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from contextvars import ContextVar
from decimal import Decimal
from typing import Any

from jinja2.exceptions import SecurityError

MAX_SOURCE = 20_000  # characters of one template's text
MAX_TEXT = 100_000  # characters (or items) in any one value, and in a rendered text
MAX_BUILT = 1_000_000  # characters (or items) built by one render, all values together
MAX_LOOPS = 1_000  # loop iterations in one render, all loops together
MAX_SECONDS = 1.0  # wall-clock time of one render
MAX_FILE_SECONDS = 5.0  # wall-clock time of checking every template of one playbook file
MAX_INT_BITS = 4_096  # about 1,200 decimal digits
MAX_EXPONENT = 1_000


class TemplateLimit(SecurityError):
    """A template went over one of the hard limits; the message says which."""


class Budget:
    """What one render has spent so far."""

    def __init__(self, seconds: float | None = None) -> None:
        seconds = seconds or MAX_SECONDS
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        shared = _file_deadline.get()
        self.by_file = shared is not None and shared < self.deadline
        if shared is not None and self.by_file:
            self.deadline = shared
        self.loops = 0
        self.built = 0

    def tick(self) -> None:
        if time.monotonic() <= self.deadline:
            return
        if self.by_file:
            raise TemplateLimit("checking this file's templates took too long; simplify them")
        raise TemplateLimit(f"rendering took longer than {self.seconds:g} s; simplify the template")

    def loop(self, literal: int) -> None:
        self.loops += 1
        if self.loops > MAX_LOOPS:
            raise TemplateLimit(f"loops ran more than {MAX_LOOPS:,} times in one template")
        self.spend(literal)

    def spend(self, amount: int) -> None:
        self.built += amount
        if self.built > MAX_BUILT:
            raise TemplateLimit(f"the template built more than {MAX_BUILT:,} characters")
        self.tick()

    def charge(self, value: Any) -> Any:
        """``value``, once it is known to be within the limits and paid for."""
        size = sized(value)
        self.spend(size)
        return value


_budget: ContextVar[Budget | None] = ContextVar("offboard_template_budget", default=None)
_file_deadline: ContextVar[float | None] = ContextVar("offboard_file_deadline", default=None)


@contextmanager
def file_budget(seconds: float | None = None) -> Iterator[None]:
    """Every render inside the block shares one deadline as well (checking one playbook file)."""
    token = _file_deadline.set(time.monotonic() + (seconds or MAX_FILE_SECONDS))
    try:
        yield
    finally:
        _file_deadline.reset(token)


@contextmanager
def budget(seconds: float | None = None) -> Iterator[Budget]:
    """A fresh budget for the render inside the ``with`` block."""
    token = _budget.set(Budget(seconds))
    try:
        yield current()
    finally:
        _budget.reset(token)


def current() -> Budget:
    """The budget of the render under way; outside ``budget()``, a fresh one for this check alone."""
    found = _budget.get()
    return found if found is not None else Budget()


def sized(value: Any) -> int:
    """The size a value counts for; TemplateLimit when one value alone is too big."""
    if isinstance(value, bool):
        return 1
    if isinstance(value, int):
        if value.bit_length() > MAX_INT_BITS:
            raise TemplateLimit(f"a number larger than {MAX_INT_BITS} bits is not allowed")
        return 1
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
        if len(value) > MAX_TEXT:
            what = "text" if isinstance(value, str | bytes) else "a list"
            raise TemplateLimit(f"{what} longer than {MAX_TEXT:,} is not allowed")
        return len(value)
    return 1


def width(value: Any, what: str = "a width") -> None:
    """Refuse a width, count or padding that would build more than one value may hold."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_TEXT:
        raise TemplateLimit(f"{what} of {value:,} is over the limit of {MAX_TEXT:,}")
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise TemplateLimit(f"{what} longer than {MAX_TEXT:,} is not allowed")


def estimate(size: int, what: str = "the result") -> None:
    """Refuse a call whose result is known in advance to be too big."""
    if size > MAX_TEXT:
        raise TemplateLimit(f"{what} would be {size:,} characters, over the limit of {MAX_TEXT:,}")


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def percent_format(template: str) -> None:
    """``'%400000000s' % x`` and ``'%*s'`` (width taken from the values) are refused."""
    for match in _PERCENT_SPEC.finditer(template):
        for number in match.groups():
            if number == "*":
                raise TemplateLimit("a '*' width in a % format is not allowed; write the width out")
            if number:
                width(int(number), "a format width")


def brace_format(template: str) -> None:
    """``'{:>400000000}'.format(x)`` and nested widths (``'{:{}}'``) are refused."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return  # str.format raises the same error, with its own message
    for _literal, _field, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            raise TemplateLimit("a width taken from a value ({:{}}) is not allowed; write the width out")
        for number in re.findall(r"\d+", spec):
            width(int(number), "a format width")


def binop(operator: str, left: Any, right: Any) -> None:
    """Refuse ``**``, ``*``, ``+`` and ``%`` whose result would be over the limits."""
    if operator == "**":
        _power(left, right)
    elif operator == "*":
        _product(left, right)
    elif operator == "+" and _both(left, right, str | list | tuple):
        estimate(len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        percent_format(left)


def _power(left: Any, right: Any) -> None:
    if not isinstance(right, int | float | Decimal):
        return
    if not -MAX_EXPONENT <= right <= MAX_EXPONENT:
        raise TemplateLimit(f"an exponent above {MAX_EXPONENT} is not allowed")
    if _both(left, right, int) and right > 0 and left.bit_length() * right > MAX_INT_BITS:
        raise TemplateLimit(f"a number larger than {MAX_INT_BITS} bits is not allowed")


def _product(left: Any, right: Any) -> None:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | list | tuple) and isinstance(count, int):
            estimate(len(sequence) * count, "repeating it")
    if _both(left, right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
        raise TemplateLimit(f"a number larger than {MAX_INT_BITS} bits is not allowed")


def _both(left: Any, right: Any, kind: Any) -> bool:
    return (
        isinstance(left, kind)
        and isinstance(right, kind)
        and not isinstance(left, bool)
        and not isinstance(right, bool)
    )


def joined(items: Any, separator: Any) -> list[Any]:
    """The items of a join, once the joined text is known to fit."""
    listed = list(items)
    sized(listed)
    pieces = sum(len(item) if isinstance(item, Sized) else 1 for item in listed)
    estimate(pieces + len(str(separator)) * max(len(listed) - 1, 0))
    return listed


def replaced(text: str, old: str, new: str, count: int = -1) -> None:
    """Refuse a replace whose result would be too big."""
    hits = len(text) + 1 if old == "" else text.count(old)
    if count is not None and count >= 0:
        hits = min(hits, count)
    estimate(len(text) + hits * max(len(new) - len(old), 0))


def indented(text: str, by: Any) -> None:
    width(by, "an indent")
    per_line = by if isinstance(by, int) else len(str(by))
    estimate(len(text) + (text.count("\n") + 1) * max(per_line, 0))
