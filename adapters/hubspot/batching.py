"""How many actions' records share HubSpot's batch calls, and how a refused record is found.

HubSpot refuses a whole batch/create or batch/update call (400) when one input is bad, and
its message names the problem, not the input (it answers 207 per input only when each
create carries an ``objectWriteTraceId``, and a batch update only for records it cannot
find). So ``isolate`` splits a refused call in halves until each refused item is alone:
that item's action gets the error, every other item is written. Items the error names
(its ``context``) are set aside at once, without splitting.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from connector.errors import CrmError, CrmPermanent

T = TypeVar("T")
R = TypeVar("R")


def pack(items: Sequence[T], *, size: Callable[[T], int], limit: int) -> list[list[T]]:
    """The items in order, in batches of at most ``limit`` units; an item is never split (one
    larger than ``limit`` goes alone)."""
    batches: list[list[T]] = []
    room = 0
    for item in items:
        units = size(item)
        if not batches or units > room:
            batches.append([])
            room = limit
        batches[-1].append(item)
        room -= units
    return batches


def isolate(
    call: Callable[[list[T]], Mapping[str, R]],
    items: list[T],
    *,
    key: Callable[[T], str],
    named: Callable[[CrmError, list[T]], list[T]] = lambda _error, _items: [],
) -> dict[str, R | CrmError]:
    """``call(items)``'s results by key; when HubSpot refuses the whole call because of some of
    them, those items get the error and the rest are called again.

    An error that is not about the records (a 429, a 5xx, a token) is every item's.
    """
    try:
        return dict(call(items))
    except CrmError as exc:
        if not refused_for_a_record(exc) or len(items) == 1:
            return dict.fromkeys((key(item) for item in items), exc)
        culprits = [item for item in named(exc, items) if item in items]
        if culprits and len(culprits) < len(items):
            rest = [item for item in items if item not in culprits]
            return {
                **dict.fromkeys((key(i) for i in culprits), exc),
                **isolate(call, rest, key=key, named=named),
            }
        half = len(items) // 2
        return {
            **isolate(call, items[:half], key=key, named=named),
            **isolate(call, items[half:], key=key, named=named),
        }


def refused_for_a_record(error: CrmError) -> bool:
    """A 400: HubSpot refused what a record said (a bad value, a missing property or target)."""
    return isinstance(error, CrmPermanent) and error.status == 400


def rounds(items: Sequence[T], *, of: Callable[[T], str]) -> list[list[T]]:
    """The items in calls where no record appears twice (HubSpot refuses duplicate ids in one
    batch update), the earlier change to a record in the earlier call."""
    seen: dict[str, int] = {}
    found: list[list[T]] = []
    for item in items:
        n = seen.get(of(item), 0)
        seen[of(item)] = n + 1
        if n == len(found):
            found.append([])
        found[n].append(item)
    return found
