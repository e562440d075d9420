"""What the operator commands accept and print: ids and limits checked, runs and actions as text.

Bad numbers are usage errors (one line, exit 2), never a traceback: an id is a
whole number that fits the database's BIGINT, a limit is at least 1.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

import click

MAX_ID = 2**63 - 1  # BIGINT, the widest id any table here can hold


class RecordId(click.ParamType):
    """An id from `offboard runs` or `offboard failed`."""

    name = "id"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not an id: ids are whole numbers from 1", param, ctx)
        if not 1 <= number <= MAX_ID:
            self.fail(f"{value} is not an id: ids are whole numbers from 1 to {MAX_ID}", param, ctx)
        return number


ID = RecordId()
LIMIT = click.IntRange(min=1)
# Sandbox fault counts live in a 32-bit column on Postgres.
TIMES = click.IntRange(min=0, max=2**31 - 1)


def stream_json(items: Iterable[dict[str, Any]], echo: Callable[..., None] = click.echo) -> None:
    """A JSON array written item by item, so a long listing is never held whole in memory."""
    echo("[")
    first = True
    for item in items:
        text = json.dumps(item, indent=2, default=str)
        echo(("" if first else ",\n") + "\n".join("  " + line for line in text.splitlines()), nl=False)
        first = False
    echo("\n]" if not first else "]")


def when(value: str | None) -> str:
    if not value:
        return "-"
    return f"{datetime.fromisoformat(value):%Y-%m-%d %H:%M} UTC"


# --- runs ---------------------------------------------------------------------


def run_lines(report: dict[str, Any]) -> Iterator[str]:
    """A run's summary line, what it writes next, and why anything is stuck."""
    counts = Counter(a["state"] for a in report["actions"])
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no actions"
    yield (
        f"run {report['id']}  {report['crm']}:{report['deal_id']}  "
        f"{report['playbook_id']}@v{report['playbook_version']}  {report['state']}  ({summary})"
    )
    if report.get("checklist"):
        yield f"    checklist: {report['checklist']}"
    if report.get("at_risk"):
        yield f"    at risk: {report['at_risk']}"
    upcoming = report.get("next")
    if upcoming:
        yield f"    next: {upcoming['step_id']} ({upcoming['kind']}) due {when(upcoming['due_at'])}"
    elif report["state"] == "cancelled" and report.get("note"):
        yield f"    cancelled: {report['note']}"
    for action in report["actions"]:
        reason = _stuck(action)
        if reason:
            yield f"    {reason}"


def _stuck(action: dict[str, Any]) -> str | None:
    name = f"action {action['id']} {action['step_id']}"
    if action["state"] == "failed":
        return f"failed: {name}: {action['last_error']}"
    if action["state"] == "waiting":
        return f"waiting: {name} waits for {action.get('waits_for') or 'another step'}"
    if action["state"] == "pending" and action["last_error"]:
        return f"retrying: {name} ({action['attempts']} attempt(s)): {action['last_error']}"
    return None


def timeline_lines(report: dict[str, Any]) -> Iterator[str]:
    """One run's every action in due order: state, when due and done, CRM ids, link, last error."""
    yield (
        f"run {report['id']}  {report['crm']}:{report['deal_id']}  "
        f"{report['playbook_id']}@v{report['playbook_version']}  {report['state']}  "
        f"(trigger {report['trigger']}, started {when(report['created_at'])})"
    )
    if report.get("note"):
        yield f"  note: {report['note']}"
    if report.get("checklist"):
        finished = f", finished {when(report['finished_at'])}" if report.get("finished_at") else ""
        yield f"  checklist: {report['checklist']}{finished}"
    if report.get("at_risk"):
        yield f"  at risk: {report['at_risk']}"
    for action in report["actions"]:
        done = f", done {when(action['done_at'])}" if action["done_at"] else ""
        yield (
            f"  {when(action['due_at']):<21} {action['state']:<9} {action['step_id']} ({action['kind']})"
            f"  action {action['id']}{done}"
        )
        yield from _timeline_details(action)


def _timeline_details(action: dict[str, Any]) -> Iterator[str]:
    for task in action.get("tasks", []):
        yield (
            f"      task {task['crm_id'] or '(not written)'}: {task['title']}  "
            f"due {when(task['due_at'])}, owner {task['owner_id'] or '-'}"
        )
    ids = {k: v for k, v in action["crm_ids"].items() if k != "task_ids"}
    if ids:
        yield "      CRM: " + ", ".join(f"{k} {v}" for k, v in ids.items())
    if action.get("link"):
        yield f"      link: {action['link']}"
    if action.get("waits_for"):
        yield f"      waits for {action['waits_for']}"
    if action.get("reason"):
        yield f"      {action['reason']}"
    if action["last_error"]:
        yield f"      last error ({action['attempts']} attempt(s)): {action['last_error']}"


def failed_lines(row: dict[str, Any]) -> str:
    return (
        f"action {row['id']}  run {row['run_id']}  {row['crm']}:{row['deal_id']}  {row['playbook_id']}/"
        f"{row['step_id']} ({row['kind']}, {row['attempts']} attempt(s))\n    {row['last_error']}"
    )
