"""The step graph of a playbook: which step waits on which (``after``), in what order they can
happen, the cycles, the score conditions a step inherits, and each step's planned day.

Pure functions of a ``Playbook``; ``loader`` turns what they find into validation problems and
``timeline`` lays actual dates over the same order.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import date

from connector.playbooks.model import Playbook, Range, Step
from connector.playbooks.offsets import Offset, add_business_days

# The step kinds whose outcome Offboard sees: a task completed in the CRM, a survey answered.
WAITABLE = ("task", "survey")


def order(playbook: Playbook) -> list[Step] | None:
    """The steps, each after every step it waits on (playbook order otherwise); None on a cycle.

    Ids that name no step are ignored here (``validate`` reports them).
    """
    ids = {step.id for step in playbook.steps}
    waiting = {step.id: {i for i in step.after_ids if i in ids and i != step.id} for step in playbook.steps}
    laid: list[Step] = []
    done: set[str] = set()
    pending = list(playbook.steps)
    while pending:
        ready = [step for step in pending if waiting[step.id] <= done]
        if not ready:
            return None
        for step in ready:
            laid.append(step)
            done.add(step.id)
        pending = [step for step in pending if step.id not in done]
    return laid


def path(playbook: Playbook, start: str, target: str) -> list[str] | None:
    """The shortest chain of ``after`` links from ``start`` to ``target`` (both included), if any."""
    after = {step.id: step.after_ids for step in playbook.steps}
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if current == target:
            chain = [current]
            while (previous := came_from[chain[-1]]) is not None:
                chain.append(previous)
            return chain[::-1]
        for following in after.get(current, ()):
            if following not in came_from:
                came_from[following] = current
                queue.append(following)
    return None


ScoreRule = tuple[str, Range]  # (the step whose `when` says it, the range)


def score_rules(playbook: Playbook, laid: list[Step]) -> dict[str, dict[str, list[ScoreRule]]]:
    """For each step, per survey, every score range that must hold for it to run: its own
    ``when.score`` and those of every step it waits on, directly or not."""
    rules: dict[str, dict[str, list[ScoreRule]]] = {}
    for step in laid:
        mine: dict[str, list[ScoreRule]] = {}
        for before in step.after_ids:
            for survey, inherited in rules.get(before, {}).items():
                known = mine.setdefault(survey, [])
                known.extend(rule for rule in inherited if rule not in known)
        when = step.body.when
        tested = playbook.survey_before(step)
        if when is not None and when.score is not None and tested is not None:
            mine.setdefault(tested, []).append((step.id, when.score))
        rules[step.id] = mine
    return rules


def can_hold_together(ranges: list[Range]) -> bool:
    """Whether one whole-number score satisfies every range (a survey is answered once)."""
    low, high = -math.inf, math.inf
    for bound in ranges:
        if bound.gte is not None:
            low = max(low, math.ceil(bound.gte))
        if bound.gt is not None:
            low = max(low, math.floor(bound.gt) + 1)
        if bound.lte is not None:
            high = min(high, math.floor(bound.lte))
        if bound.lt is not None:
            high = min(high, math.ceil(bound.lt) - 1)
    return low <= high


def day_after(offset: Offset, start: date, playbook: Playbook) -> date:
    """``offset`` from ``start``, a weekend moved to the Monday unless the playbook keeps it."""
    day = offset.apply(start)
    return add_business_days(day, 0) if playbook.weekends == "next_weekday" else day


def planned_days(playbook: Playbook, anchor: date, run_start: date | None = None) -> dict[str, date]:
    """Each step's planned day, every step it waits on done on its own planned day.

    A task counts as done on its due day; a survey as answered at the end of its answer window
    (its send day plus ``deadline``), the latest an answer is waited for. A step that waits counts
    its offset from the last of those; one that waits for nothing, from the anchor. Steps without
    an offset happen when the run starts (``run_start``, else the anchor). Needs an acyclic graph.
    """
    laid = order(playbook)
    if laid is None:
        raise ValueError("the steps' `after` make a cycle")
    start = run_start or anchor
    day: dict[str, date] = {}
    done: dict[str, date] = {}
    for step in laid:
        known = [done[i] for i in step.after_ids if i in done]
        base = max(known) if known else anchor
        offset = offset_of(step)
        day[step.id] = day_after(offset, base, playbook) if offset else (max(known) if known else start)
        done[step.id] = day[step.id]
        if step.survey is not None:
            done[step.id] = day_after(step.survey.deadline, day[step.id], playbook)
    return day


def offset_of(step: Step) -> Offset | None:
    """The step's offset (``due``, ``send`` or ``at``); None for steps that happen at once."""
    for name in ("due", "send", "at"):
        value = getattr(step.body, name, None)
        if isinstance(value, Offset):
            return value
    return None


def describe_range(survey: str, bound: Range) -> str:
    return f"{survey} score {bound.describe()}"
