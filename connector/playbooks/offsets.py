"""Offsets from an anchor: ``-30d``, ``+3d``, ``+1bd`` (business days), ``2w``.

Business days skip Saturdays and Sundays; holidays are not modelled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal

_PATTERN = re.compile(r"^\s*([+-]?)\s*(\d{1,4})\s*(bd|d|w)\s*$")
Unit = Literal["d", "bd", "w"]


@dataclass(frozen=True)
class Offset:
    days: int
    unit: Unit

    @classmethod
    def parse(cls, text: str) -> Offset:
        match = _PATTERN.match(str(text))
        if not match:
            raise ValueError(
                f"{text!r} is not an offset: expected a signed number of days (d), "
                "business days (bd) or weeks (w), e.g. -30d, +1bd, 2w"
            )
        sign, number, unit = match.groups()
        value = -int(number) if sign == "-" else int(number)
        return cls(value, unit)  # type: ignore[arg-type]

    def apply(self, anchor: date) -> date:
        if self.unit == "w":
            return anchor + timedelta(weeks=self.days)
        if self.unit == "d":
            return anchor + timedelta(days=self.days)
        return add_business_days(anchor, self.days)

    def __str__(self) -> str:
        return f"{'+' if self.days >= 0 else '-'}{abs(self.days)}{self.unit}"


def add_business_days(start: date, count: int) -> date:
    """``count`` weekdays after (or before, if negative) ``start``; 0 rolls a weekend forward."""
    step = 1 if count >= 0 else -1
    day = start
    if count == 0:
        while day.weekday() >= 5:
            day += timedelta(days=1)
        return day
    remaining = abs(count)
    while remaining:
        day += timedelta(days=step)
        if day.weekday() < 5:
            remaining -= 1
    return day
