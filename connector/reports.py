"""What operators read: runs with their actions, as plain data for the CLI to print.

Every read here is a read transaction (``Store.read``): however long a listing,
it never holds the write lock a webhook or a worker needs. Long listings are
read a page at a time (keyset pages on the id, each its own short transaction),
so printing 100k rows holds nothing open while it prints.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload

from connector.runs import TASK
from connector.store import Action, Run, Store

PAGE = 100  # runs per read transaction
CRM_ID_FIELDS = ("task_ids", "note_id", "invite_id", "answer_id", "contact_id")
LinkFor = Callable[[Run, Action], "str | None"]


def run_pages(
    store: Store, *, state: str | None = None, limit: int = 50, before: int | None = None
) -> Iterator[dict[str, Any]]:
    """Runs newest first (ids below ``before``), at most ``limit``, read page by page."""
    remaining, cursor = limit, before
    while remaining > 0:
        size = min(PAGE, remaining)
        with store.read() as session:
            page = [_report(run) for run in session.scalars(_runs_query(state, cursor, size))]
        yield from page
        if len(page) < size:
            return
        remaining, cursor = remaining - len(page), page[-1]["id"]


def run_reports(store: Store, *, state: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    return list(run_pages(store, state=state, limit=limit))


def _runs_query(state: str | None, before: int | None, size: int) -> Select[Any]:
    query = select(Run).options(selectinload(Run.actions)).order_by(Run.id.desc()).limit(size)
    if before is not None:
        query = query.where(Run.id < before)
    if state == "failed":
        query = query.where(Run.actions.any(Action.state == "failed"))
    elif state is not None:
        query = query.where(Run.state == state)
    return query


def run_timeline(store: Store, run_id: int, link_for: LinkFor) -> dict[str, Any] | None:
    """One run with every action in due order: what was written, where, and what is still owed.

    ``link_for`` gives the personal link an action sent (or None); the caller
    decides whether it is shown whole or masked.
    """
    with store.read() as session:
        run = session.get(Run, run_id, options=[selectinload(Run.actions)])
        if run is None:
            return None
        report = _run_fields(run)
        ordered = sorted(run.actions, key=lambda a: (a.due_at, a.id))
        report["actions"] = [_timeline_entry(run, action, link_for) for action in ordered]
        return report


def _report(run: Run) -> dict[str, Any]:
    report = _run_fields(run)
    report["actions"] = [_action_fields(a) for a in run.actions]
    report["next"] = next_due(run.actions)
    return report


def _run_fields(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "crm": run.crm,
        "account": run.account,
        "deal_id": run.deal_id,
        "playbook_id": run.playbook_id,
        "playbook_version": run.playbook_version,
        "state": run.state,
        "checklist": run.status,  # the deal's offboard_status; None before its tasks are written
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "at_risk": run.at_risk,
        "trigger": run.trigger,
        "note": run.note,
        "created_at": run.created_at.isoformat(),
        "updated_at": run.updated_at.isoformat(),
    }


def _action_fields(action: Action) -> dict[str, Any]:
    return {
        "id": action.id,
        "step_id": action.step_id,
        "kind": action.kind,
        "state": action.state,
        "due_at": action.due_at.isoformat(),
        "done_at": action.done_at.isoformat() if action.done_at else None,
        "attempts": action.attempts,
        "last_error": action.last_error,
        "waits_for": (action.payload or {}).get("after") if action.state == "waiting" else None,
    }


def next_due(actions: list[Action]) -> dict[str, Any] | None:
    """The pending action due first: what the run writes next."""
    pending = [a for a in actions if a.state == "pending"]
    if not pending:
        return None
    first = min(pending, key=lambda a: (a.due_at, a.id))
    return {"id": first.id, "step_id": first.step_id, "kind": first.kind, "due_at": first.due_at.isoformat()}


def _timeline_entry(run: Run, action: Action, link_for: LinkFor) -> dict[str, Any]:
    entry = _action_fields(action)
    result = action.result or {}
    entry["crm_ids"] = {field: result[field] for field in CRM_ID_FIELDS if field in result}
    entry["link"] = link_for(run, action)
    if action.kind == TASK:
        ids = list(result.get("task_ids") or [])
        entry["tasks"] = [
            {
                "step_id": task.get("step_id"),
                "title": task.get("title"),
                "due_at": task.get("due_at"),
                "owner_id": task.get("owner_id"),
                "crm_id": ids[position] if position < len(ids) else None,
            }
            for position, task in enumerate((action.payload or {}).get("tasks", []))
        ]
    elif result.get("reason"):
        entry["reason"] = result["reason"]
    return entry


def sent_links(public_url: str, secret_key: str, *, reveal: bool) -> LinkFor:
    """The personal link a survey or referral action sent, masked unless ``reveal``.

    A link is a credential: whoever holds it answers as that client. Tokens are
    never stored, so a revealed link is signed again with the claims the worker
    signed when it sent the invitation (run, step answered, contact, kind): it
    opens the same page.
    """
    from connector import links

    def link_for(run: Run, action: Action) -> str | None:
        payload = action.payload or {}
        sent = action.kind in ("survey", "referral") and action.state == "done"
        if not sent or not payload.get("contact_id"):
            return None
        purpose, claims = links.invite_claims(run.id, action.kind, action.step_id, payload)
        if not reveal:
            return f"{public_url}/{links.PREFIX[purpose]}/<hidden: --reveal-links shows it>"
        return links.make_link(public_url, secret_key, purpose, claims)

    return link_for
