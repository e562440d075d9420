"""The contract-end sweep against the strict fake HubSpot: a first sweep fetches, later ones cost a search."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from adapters.hubspot import api as hubspot_api
from connector.store import Event
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    FakeHubSpot,
    add_deal,
    hubspot_services,
    offboard_properties,
    serve,
    settings_overrides,
    standard_portal,
)

SEARCH = "POST /crm/v3/objects/deals/search"
DEALS = 50


@pytest.fixture
def fake(clock):
    return offboard_properties(standard_portal(FakeHubSpot(clock=clock)))


@pytest.fixture
def services(db_url, store, clock, fake, httpserver):
    overrides = settings_overrides(serve(fake, httpserver))
    services = hubspot_services(make_settings(db_url, **overrides), store, clock)
    services.adapters = {"hubspot": services.adapters["hubspot"]}
    return services


@pytest.fixture
def deals(fake, clock):
    """50 retainers whose contracts end within the 30 days contract-ending looks ahead (from 2026-11-20)."""
    ends = [clock.now.date() + timedelta(days=1 + n % 28) for n in range(DEALS)]
    made = [add_deal(fake, contract_type="retainer", contract_end=end.isoformat())["deal"] for end in ends]
    add_deal(fake, name="Far out", contract_type="retainer", contract_end="2027-03-01")
    return made


def sweep_events(store):
    with store.session() as session:
        return list(session.scalars(select(Event).where(Event.source == "sweep").order_by(Event.id)))


def calls(fake) -> int:
    return sum(fake.calls.values())


def test_the_first_sweep_queues_every_deal_and_the_next_costs_one_search(services, fake, deals, clock, store):
    worker = services.worker()
    first = worker.sweep()
    assert (first.found, first.fetched, first.queued) == ({"hubspot": DEALS}, {"hubspot": DEALS}, DEALS)
    assert sorted(e.event_key.split(":")[1] for e in sweep_events(store)) == sorted(deals)
    assert fake.calls[SEARCH] == 1  # one page of ids and contract ends
    # Besides: the portal id and the pipelines, read once; each deal, its company and contacts;
    # the deals' one owner, read once and kept a few minutes.
    assert calls(fake) == 1 + 2 + 3 * DEALS + 1

    before = calls(fake)
    clock.advance(hours=1)
    second = worker.sweep()
    assert second.queued == 0 and second.fetched == {}
    assert calls(fake) - before == 1  # the search; nothing is fetched again
    assert len(sweep_events(store)) == DEALS

    before = calls(fake)
    clock.advance(hours=1)
    third = worker.sweep()  # nothing changed since the last sweep: HubSpot lists nothing
    assert (third.found, third.queued, calls(fake) - before) == ({"hubspot": 0}, 0, 1)


def test_a_deal_changed_into_the_window_is_picked_up(services, fake, deals, clock, store):
    worker = services.worker()
    worker.sweep()
    far = next(r.id for r in fake.records("deals") if r.properties["dealname"] == "Far out")
    clock.advance(hours=1)
    fake.set_property("deals", far, "contract_end_date", "2026-12-05")
    before = calls(fake)
    clock.advance(hours=1)
    report = worker.sweep()
    assert (report.fetched, report.queued) == ({"hubspot": 1}, 1)
    assert sweep_events(store)[-1].event_key == f"hubspot:{far}:2026-12-05"
    assert calls(fake) - before == 1 + 4  # the search, then the deal, its owner, company and contacts


def test_a_contract_that_comes_into_the_window_is_found_without_a_change(services, fake, clock, store):
    later = add_deal(fake, contract_type="retainer", contract_end="2026-12-23")["deal"]  # 33 days out
    worker = services.worker()
    assert worker.sweep().queued == 0
    clock.advance(days=4)  # the window now reaches 2026-12-24
    report = worker.sweep()
    assert report.queued == 1
    assert [e.event_key for e in sweep_events(store)] == [f"hubspot:{later}:2026-12-23"]


def test_the_listing_pages_through_the_search_limit(services, fake, deals, monkeypatch):
    monkeypatch.setattr(hubspot_api, "SEARCH_PAGE", 20)
    report = services.worker().sweep()
    assert report.queued == DEALS
    assert fake.calls[SEARCH] == 3  # 20 + 20 + 10
    assert fake.natural_429s == 0  # the search limiter kept the pages under HubSpot's limit


def test_a_failed_fetch_keeps_the_cursor_so_the_next_sweep_finishes(services, fake, deals, clock, store):
    fake.inject(503, times=1, route="GET /crm/v3/objects/deals/{id}")
    worker = services.worker()
    report = worker.sweep()
    assert "hubspot" in report.errors and report.queued == 0
    clock.advance(hours=1)
    again = worker.sweep()
    assert again.queued == DEALS and again.errors == {}


def test_a_deal_deleted_since_the_listing_is_skipped(services, fake, deals, store):
    fake.inject(404, times=1, route="GET /crm/v3/objects/deals/{id}")
    report = services.worker().sweep()
    assert (report.queued, report.errors) == (DEALS - 1, {})
    assert len(sweep_events(store)) == DEALS - 1
