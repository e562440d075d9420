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

Every CRM account is swept: each CRM's environment connection, and each account installed
here by OAuth and connected (its own adapter, token, cursor and budget; named ``crm:account``
in the report).

A sweep talks to CRMs between its writes, so it never holds a transaction open: each
deal it queues, and the cursor at its end, is a unit of work of its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import select

from adapters.base import BudgetAware, CrmAdapter, Ending, SweepWindow
from connector import inbox
from connector.connections import CONNECTED
from connector.errors import ConnectorError, CrmError, CrmPermanent, Deferred
from connector.models import Deal
from connector.planner import sweep_horizon
from connector.playbooks.accounts import in_use
from connector.playbooks.loader import LoadedPlaybook
from connector.settings import Settings
from connector.store import Store, SweepCursor
from connector.store.db import insert
from connector.store.tables import AccountConnection, PlaybookVersion
from connector.usecases.performing import adapter_for
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
    if sweep_horizon(playbooks(), today) is None and not _published_anywhere(store):
        return report  # no playbook here starts from a contract's end: nothing to look for
    for name, crm, adapter in _accounts(settings, store, adapters, report):
        try:
            # Each account looks as far ahead as its own playbooks need (the folder's, or those
            # it published).
            with store.read() as session:
                horizon = sweep_horizon(in_use(session, playbooks, crm, adapter.account), today)
            if horizon is not None:
                _sweep_crm(store, name, crm, adapter, (today, horizon), now, report, stop)
        except (CrmError, Deferred, SweepCut) as exc:  # Deferred: an account disconnected meanwhile
            log.warning("sweep of %s stopped: %s", name, exc)
            report.errors[name] = str(exc)
    log.info("sweep: listed %s, fetched %s, queued %d", report.found, report.fetched, report.queued)
    return report


def _published_anywhere(store: Store) -> bool:
    """Whether any account published playbooks of its own (which may start from a contract's end)."""
    with store.read() as session:
        return session.scalar(select(PlaybookVersion.id).limit(1)) is not None


def _accounts(
    settings: Settings, store: Store, adapters: Mapping[str, CrmAdapter], report: SweepReport
) -> list[tuple[str, str, CrmAdapter]]:
    """What to sweep, as (name in the report, CRM, adapter): each CRM's environment connection,
    then each account installed here and connected (named ``crm:account``)."""
    found: list[tuple[str, str, CrmAdapter]] = [(name, name, adapter) for name, adapter in adapters.items()]
    if settings.encryption_keys is None:
        return found
    with store.read() as session:
        installed = session.execute(
            select(AccountConnection.crm, AccountConnection.account)
            .where(AccountConnection.status == CONNECTED)
            .order_by(AccountConnection.crm, AccountConnection.account)
        ).all()
    seen = {id(adapter) for _, _, adapter in found}
    for crm, account in installed:
        try:
            adapter = adapter_for(adapters, crm, account)
        except ConnectorError as exc:  # no adapter here, or settings it cannot be built from
            log.warning("sweep: %s account %s has no adapter here: %s", crm, account, exc)
            report.errors[f"{crm}:{account}"] = str(exc)
            continue
        if id(adapter) not in seen:  # not the environment's (the same portal installed too)
            seen.add(id(adapter))
            found.append((f"{crm}:{account}", crm, adapter))
    return found


def _sweep_crm(
    store: Store,
    name: str,
    crm: str,
    adapter: CrmAdapter,
    days: tuple[date, date],
    now: datetime,
    report: SweepReport,
    stop: threading.Event | None,
) -> None:
    account = adapter.account
    window = _window(store, crm, account, *days)
    listed = list(adapter.deals_ending(window))
    report.found[name] = len(listed)
    for ending in _not_queued(store, listed):
        _check_go_on(adapter, stop)
        deal = _fetch(adapter, ending)
        report.fetched[name] = report.fetched.get(name, 0) + 1
        if deal and deal.contract_end is not None and window.start <= deal.contract_end <= window.end:
            report.queued += _queue(store, deal, now)
    _save_cursor(store, crm, account, window, now)


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
