"""The contract-end sweep: ask each CRM for contracts ending soon, and queue them as events.

Each hit goes through the inbox like a webhook (source ``sweep``, keyed by CRM,
deal and end date), so a deal found by many sweeps is one event, and the
worker starts its run exactly as for a deal-closed event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from adapters.base import CrmAdapter
from connector import inbox
from connector.errors import CrmError
from connector.planner import sweep_horizon
from connector.playbooks.loader import LoadedPlaybook
from connector.settings import Settings
from connector.store import Store

log = logging.getLogger("offboard.sweep")


@dataclass
class SweepReport:
    found: dict[str, int] = field(default_factory=dict)
    queued: int = 0
    errors: dict[str, str] = field(default_factory=dict)


def sweep(
    settings: Settings,
    store: Store,
    adapters: Mapping[str, CrmAdapter],
    playbooks: Callable[[], list[LoadedPlaybook]],
    now: datetime,
) -> SweepReport:
    report = SweepReport()
    today = now.astimezone(settings.zone).date()
    horizon = sweep_horizon(playbooks(), today)
    if horizon is None:
        return report
    for name, adapter in adapters.items():
        try:
            deals = list(adapter.deals_ending(today, horizon))
        except CrmError as exc:
            log.warning("sweep of %s failed: %s", name, exc)
            report.errors[name] = str(exc)
            continue
        report.found[name] = len(deals)
        items = [
            inbox.Incoming(
                source="sweep",
                account=deal.account,
                event_key=f"{deal.crm}:{deal.id}:{deal.contract_end}",
                kind="contract_end",
                payload={"deal": deal.model_dump(mode="json")},
            )
            for deal in deals
        ]
        accepted = inbox.accept(store, items, now) if items else []
        report.queued += sum(1 for a in accepted if not a.duplicate)
    log.info("sweep to %s: found %s, queued %d", horizon, report.found, report.queued)
    return report
