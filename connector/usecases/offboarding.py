"""Start and cancel offboardings: what a deal closing, re-opening or nearing its contract end does.

A deal has one open (active or done) run at a time: whichever trigger comes first
starts it, and every later one finds it already there. Only a cancelled run (the deal
re-opened) makes room: the next close starts the playbook's next generation, with
idempotency keys of its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

from sqlalchemy import func, select

from connector import queue
from connector.errors import Deferred
from connector.models import Deal
from connector.planner import Plan, PlanContext, choose, plan
from connector.playbooks.accounts import account_playbooks
from connector.playbooks.loader import LoadedPlaybook
from connector.queue import RunState
from connector.runs import actions_for, anchor_midnight
from connector.store import Run
from connector.usecases import checklist
from connector.usecases.uow import UnitOfWork

log = logging.getLogger("offboard.offboarding")

Playbooks = Callable[[], list[LoadedPlaybook]]
# A deal event waiting for a playbook file to load is looked at again this often; a worker
# that sees every file load wakes the waiting ones at once.
WAIT_FOR_PLAYBOOKS_SECONDS = 60.0
WAITING = "waiting: "  # how the outcome of an event held back for the playbooks begins


@dataclass(frozen=True)
class Outcome:
    """How an event ends: ``done`` (it changed something, or found it done) or ``ignored``."""

    state: str
    note: str


@dataclass(frozen=True)
class Started:
    run: Run
    created: bool


class PlaybooksIncomplete(Deferred):
    """A playbook file has no version loaded, so no run may start: the event waits for it
    (no playbook file's problem is the event's fault, so no attempt is used)."""

    def __init__(self, files: list[str]) -> None:
        one = len(files) == 1
        which = f"{files[0]} does not" if one else f"{', '.join(files)} do not"
        reason = f"{WAITING}{which} load; fix {'it' if one else 'them'} and run offboard validate"
        super().__init__(reason, seconds=WAIT_FOR_PLAYBOOKS_SECONDS)


def unloaded_playbooks(playbooks: Playbooks) -> list[str]:
    """The playbook files with no version in use (see ``PlaybookRegistry.unloaded``).

    A plain function handing out playbooks has no files of its own that could be missing.
    """
    return list(getattr(playbooks, "unloaded", []))


def closed_too_long_ago(deal: Deal, max_days: int, today: date) -> str | None:
    """Why a deal-closed event starts nothing for a deal that closed over ``max_days`` ago, or None.

    ``max_days`` 0 means no limit; a deal without a close date is not held to one.
    """
    if not max_days or deal.close_date is None or (today - deal.close_date).days <= max_days:
        return None
    return f"closed on {deal.close_date.isoformat()}, more than {max_days} days ago; nothing started"


def start_offboarding(
    uow: UnitOfWork,
    deal: Deal,
    playbooks: Playbooks,
    context: PlanContext,
    *,
    trigger: str,
    event_id: int | None,
) -> Outcome:
    """Start the matching playbook's run for this deal, unless the deal already has one."""
    loaded, _ = choose(deal, playbooks_for(uow, deal, playbooks), trigger=trigger, today=context.today)
    if loaded is None:
        return Outcome("ignored", "no playbook matches this deal")
    started = start_run(uow, deal, loaded, plan(deal, loaded.playbook, context), trigger, event_id)
    run = started.run
    if not started.created:
        return Outcome(
            "done",
            f"nothing new: the deal already has run {run.id} ({run.playbook_id}, {run.trigger}, {run.state})",
        )
    log.info("run %s started: deal %s, playbook %s", run.id, deal.id, loaded.id)
    return Outcome("done", f"run {run.id} started with playbook {loaded.id}")


def playbooks_for(uow: UnitOfWork, deal: Deal, playbooks: Playbooks) -> list[LoadedPlaybook]:
    """The playbooks a deal may get: its account's own published ones where the account has any
    (and only those), else the deployment's folder.

    Raises ``PlaybooksIncomplete`` while one of them does not load: the missing one may be the
    deal's, and another playbook's run would be for good.
    """
    own = account_playbooks(playbooks).for_account(uow.session, deal.crm, deal.account)
    if own is not None:
        if own.unloaded:
            raise PlaybooksIncomplete(own.unloaded)
        return own.loaded
    loaded_all = playbooks()
    missing = unloaded_playbooks(playbooks)
    if missing:
        raise PlaybooksIncomplete(missing)
    return loaded_all


def start_run(
    uow: UnitOfWork, deal: Deal, loaded: LoadedPlaybook, laid_out: Plan, trigger: str, event_id: int | None
) -> Started:
    """Create the run and its actions, or return the run this deal already has for the playbook."""
    session, now = uow.session, uow.now
    values = {
        "crm": deal.crm,
        "account": deal.account,
        "deal_id": deal.id,
        "playbook_id": loaded.id,
        "playbook_version": loaded.playbook.version,
        "playbook_hash": loaded.hash,
        "generation": _next_generation(uow, deal, loaded.id),
        "playbook": loaded.pinned(),
        "deal": deal.model_dump(mode="json"),
        "trigger": trigger,
        "anchor_at": anchor_midnight(laid_out),
        "event_id": event_id,
        "note": laid_out.anchor_note,
        "created_at": now,
        "updated_at": now,
    }
    run_id = queue.insert_run(session, values)
    if run_id is None:
        return Started(_existing_run(uow, deal, loaded.id), created=False)
    run = session.get_one(Run, run_id)
    session.add_all(actions_for(run, deal, laid_out, now))
    detail = {"playbook": loaded.id, "version": loaded.playbook.version, "trigger": trigger, "deal": deal.id}
    uow.audit("run.started", run_id=run.id, crm=deal.crm, detail=detail)
    return Started(run, created=True)


def _existing_run(uow: UnitOfWork, deal: Deal, playbook_id: str) -> Run:
    """The run that stopped this one: the deal's open run, or (a race lost) the playbook's latest."""
    runs = uow.session.scalars(
        select(Run).filter_by(crm=deal.crm, account=deal.account, deal_id=deal.id).order_by(Run.id.desc())
    ).all()
    open_runs = [run for run in runs if run.state != RunState.CANCELLED]
    same = [run for run in runs if run.playbook_id == playbook_id]
    return (open_runs or same)[0]


def _next_generation(uow: UnitOfWork, deal: Deal, playbook_id: str) -> int:
    """One more than the deal's latest run of this playbook (all cancelled, or the insert stops)."""
    latest = uow.session.scalar(
        select(func.max(Run.generation)).filter_by(
            crm=deal.crm, account=deal.account, deal_id=deal.id, playbook_id=playbook_id
        )
    )
    return (latest or 0) + 1


def cancel(uow: UnitOfWork, run: Run, *, reason: str) -> int:
    """Cancel a run and its actions not yet written, audited; how many actions were cancelled."""
    cancelled = queue.cancel_run(uow.session, run, reason=reason, now=uow.now)
    checklist.cancelled(uow, run)  # the deal shows the offboarding cancelled
    uow.audit("run.cancelled", run_id=run.id, crm=run.crm, reason=reason, actions_cancelled=cancelled)
    return cancelled


def cancel_deal(uow: UnitOfWork, deal: Deal, *, reason: str) -> Outcome:
    """Cancel every active run of this deal (it re-opened)."""
    runs = uow.session.scalars(
        select(Run).filter_by(crm=deal.crm, account=deal.account, deal_id=deal.id, state=RunState.ACTIVE)
    ).all()
    for run in runs:
        cancelled = cancel(uow, run, reason=reason)
        log.info("run %s cancelled (%d pending actions): %s", run.id, cancelled, reason)
    return Outcome("done", f"cancelled {len(runs)} run(s)") if runs else Outcome("ignored", "no active run")
