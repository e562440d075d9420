"""The contract-end sweep: ask each CRM for contracts ending soon, and queue them as events.

Each hit goes through the inbox like a webhook (source ``sweep``, keyed by CRM,
deal and end date), so a deal found by many sweeps is one event, and the
worker starts its run exactly as for a deal-closed event.

A sweep costs the CRM little once one has run. The adapter lists ids and contract
ends only (a page per request, through its rate limits), and only for deals
modified since the last complete sweep or new to the window (the account's
``SweepCursor``); the full deal is fetched only for a hit the inbox does not
hold yet. A sweep cut short (a CRM error, a low budget, a stop) keeps the old
cursor, so the next one asks again; what it queued stays queued.

A sweep talks to CRMs between its writes, so it never holds a transaction open: each
deal it queues, and the cursor at its end, is a unit of work of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from adapters.base import BudgetAware, CrmAdapter, Ending, SweepWindow
from connector import inbox
from connector.errors import CrmError, CrmPermanent
from connector.models import Deal
from connector.planner import sweep_horizon
from connector.playbooks.loader import LoadedPlaybook
from connector.settings import Settings
from connector.store import Store, SweepCursor
from connector.store.db import insert
from connector.usecases.uow import unit_of_work

log = logging.getLogger("offboard.sweep")

# Deals modified this long before a sweep began are listed again by the next one: a
# CRM's search index lags behind its writes, and its clock is not ours.
MARGIN = timedelta(minutes=15)


class SweepCut(Exception):
    """The sweep of one CRM stopped before its end (the message says why); the next one resumes."""


@dataclass
class SweepReport:
    found: dict[str, int] = field(default_factory=dict)  # deals listed, per CRM
    fetched: dict[str, int] = field(default_factory=dict)  # full deals read, per CRM
    queued: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def sweep(
    settings: Settings,
    store: Store,
    adapters: Mapping[str, CrmAdapter],
    playbooks: Callable[[], list[LoadedPlaybook]],
    now: datetime,
    *,
    stop: threading.Event | None = None,
) -> SweepReport:
    """Queue a contract-end event for every deal in the window the inbox does not hold yet."""
    report = SweepReport()
    today = now.astimezone(settings.zone).date()
    horizon = sweep_horizon(playbooks(), today)
    if horizon is None:
        return report
    for name, adapter in adapters.items():
        try:
            _sweep_crm(store, name, adapter, (today, horizon), now, report, stop)
        except (CrmError, SweepCut) as exc:
            log.warning("sweep of %s stopped: %s", name, exc)
            report.errors[name] = str(exc)
    log.info(
        "sweep to %s: listed %s, fetched %s, queued %d",
        horizon,
        report.found,
        report.fetched,
        report.queued,
    )
    return report


def _sweep_crm(
    store: Store,
    name: str,
    adapter: CrmAdapter,
    days: tuple[date, date],
    now: datetime,
    report: SweepReport,
    stop: threading.Event | None,
) -> None:
    account = adapter.account
    window = _window(store, name, account, *days)
    listed = list(adapter.deals_ending(window))
    report.found[name] = len(listed)
    for ending in _not_queued(store, listed):
        _check_go_on(adapter, stop)
        deal = _fetch(adapter, ending)
        report.fetched[name] = report.fetched.get(name, 0) + 1
        if deal and deal.contract_end is not None and window.start <= deal.contract_end <= window.end:
            report.queued += _queue(store, deal, now)
    _save_cursor(store, name, account, window, now)


def _fetch(adapter: CrmAdapter, ending: Ending) -> Deal | None:
    """The full deal, or None if it was deleted since the listing (the search index lags)."""
    try:
        return adapter.fetch_deal(ending.id)
    except CrmPermanent as exc:
        if exc.status != 404:
            raise  # a lost permission stops the sweep; skipping would lose every deal after it
        log.info("sweep: deal %s is gone since it was listed: %s", ending.id, exc)
        return None


def _not_queued(store: Store, listed: list[Ending]) -> list[Ending]:
    held = inbox.known(store, "sweep", [(e.account, e.event_key) for e in listed])
    return [e for e in listed if (e.account, e.event_key) not in held]


def _check_go_on(adapter: CrmAdapter, stop: threading.Event | None) -> None:
    """Stop between two deals when the worker stops, or when the CRM account's budget runs low."""
    if stop is not None and stop.is_set():
        raise SweepCut("the worker is stopping")
    reason = adapter.deferral_reason() if isinstance(adapter, BudgetAware) else None
    if reason is not None:
        raise SweepCut(f"waiting for the budget: {reason}")


def _queue(store: Store, deal: Deal, now: datetime) -> int:
    item = inbox.Incoming(
        source="sweep",
        account=deal.account,
        event_key=f"{deal.crm}:{deal.id}:{deal.contract_end}",
        kind="contract_end",
        payload={"deal": deal.model_dump(mode="json")},
    )
    with unit_of_work(store, actor="sweep", now=now) as uow:
        accepted = inbox.store_items(uow.session, [item], uow.now)
    return sum(1 for one in accepted if not one.duplicate)


def _window(store: Store, crm: str, account: str, start: date, end: date) -> SweepWindow:
    with store.read() as session:
        cursor = session.get(SweepCursor, (crm, account))
        if cursor is None:
            return SweepWindow(start, end)
        return SweepWindow(start, end, changed_since=cursor.changed_since, new_after=cursor.horizon)


def _save_cursor(store: Store, crm: str, account: str, window: SweepWindow, now: datetime) -> None:
    values = {"changed_since": now - MARGIN, "horizon": window.end, "swept_at": now}
    with unit_of_work(store, actor="sweep", now=now) as uow:
        session = uow.session
        session.execute(
            insert(session, SweepCursor)
            .values(crm=crm, account=account, **values)
            .on_conflict_do_update(index_elements=["crm", "account"], set_=values)
        )
