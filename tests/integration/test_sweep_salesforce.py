"""The contract-end sweep against the strict fake Salesforce org: SOQL pages of ids, then only what is new."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import responses
from sqlalchemy import select

from adapters.salesforce.adapter import SalesforceAdapter
from connector.playbooks.registry import PlaybookRegistry
from connector.store import Event
from connector.usecases.sweep import sweep
from tests.support.helpers import make_settings
from tests.support.salesforce import FakeSalesforce, session_settings

DEALS = 50


@pytest.fixture
def org():
    return FakeSalesforce(page_size=20)


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


@pytest.fixture
def settings(org, db_url):
    return make_settings(db_url, **session_settings(org))


@pytest.fixture
def crm(settings, http):
    return {"salesforce": SalesforceAdapter.from_settings(settings)}


def backdate(org, hours: float) -> None:
    """As if every Opportunity and Contract was last saved ``hours`` ago."""
    stamp = (datetime.now(UTC) - timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    for sobject in ("Opportunity", "Contract"):
        for record in org.db[sobject].values():
            record["SystemModstamp"] = stamp


@pytest.fixture
def seeded(org):
    """50 won deals whose contracts end within 30 days, one ending later, one lost: all saved 2 h ago."""
    today = datetime.now(UTC).date()
    made = [
        org.add_opportunity(
            f"Deal {n}", type="retainer", contract_end=str(today + timedelta(days=1 + n % 28))
        )
        for n in range(DEALS)
    ]
    org.add_opportunity("Far out", type="retainer", contract_end=str(today + timedelta(days=90)))
    org.add_opportunity("Lost", stage="Closed Lost", contract_end=str(today + timedelta(days=3)))
    backdate(org, hours=2)
    return made


def run_sweep(settings, store, crm, now=None):
    playbooks = PlaybookRegistry(settings.playbooks)
    return sweep(settings, store, crm, playbooks, now or datetime.now(UTC))


def queued(store):
    with store.session() as session:
        return [e.event_key for e in session.scalars(select(Event).where(Event.source == "sweep"))]


def test_the_first_sweep_pages_and_fetches_the_next_asks_once(settings, store, crm, org, seeded):
    first = run_sweep(settings, store, crm)
    assert (first.found, first.queued) == ({"salesforce": DEALS}, DEALS)
    listing = [c for c in org.calls if c.startswith("GET query/")]
    assert len(listing) == 2  # 20 + 20 + 10 ids: the query, then two nextRecordsUrl pages
    assert sorted(k.split(":")[1] for k in queued(store)) == sorted(s.opportunity for s in seeded)

    org.calls.clear()
    second = run_sweep(settings, store, crm)
    assert (second.found, second.queued) == ({"salesforce": 0}, 0)
    assert org.calls == ["GET query"]  # nothing saved since: one query, nothing fetched


def test_a_contract_changed_into_the_window_is_picked_up(settings, store, crm, org, seeded):
    run_sweep(settings, store, crm)
    far = next(r for r in org.db["Opportunity"].values() if r["Name"] == "Far out")
    new_end = str(datetime.now(UTC).date() + timedelta(days=10))
    org.edit("Contract", far["ContractId"], EndDate=new_end)  # the Opportunity itself is untouched
    org.calls.clear()
    report = run_sweep(settings, store, crm)
    assert (report.found, report.queued) == ({"salesforce": 1}, 1)
    assert f"salesforce:{far['Id']}:{new_end}" in queued(store)
    assert org.calls == ["GET query", "GET query"]  # the listing, then the one Opportunity


def test_a_contract_that_comes_into_the_window_is_found_without_a_change(settings, store, crm, org, seeded):
    run_sweep(settings, store, crm)
    org.calls.clear()
    report = run_sweep(settings, store, crm, now=datetime.now(UTC) + timedelta(days=61))
    far = next(r for r in org.db["Opportunity"].values() if r["Name"] == "Far out")
    assert report.queued == 1
    assert any(k.startswith(f"salesforce:{far['Id']}:") for k in queued(store))
