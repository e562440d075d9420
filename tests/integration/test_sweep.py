"""The contract-end sweep runs beside the worker loop: a slow CRM listing never holds up events or actions."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from adapters.base import SweepWindow
from adapters.sandbox import SandboxAdapter
from connector.generic import GenericEvent
from connector.services import build
from connector.store import Event, Run, SweepCursor
from connector.web import create_app
from tests.support.helpers import deal_closed_event, make_settings, signed


class SlowSandbox(SandboxAdapter):
    """The sandbox CRM, whose contract-end listing hangs until the test lets it answer."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.listing = threading.Event()  # set while a listing is in progress
        self.answer = threading.Event()

    def deals_ending(self, window: SweepWindow):
        self.listing.set()
        assert self.answer.wait(30), "the test never let the listing answer"
        return super().deals_ending(window)


@pytest.fixture
def services(db_url, store, clock):
    settings = make_settings(db_url, OFFBOARD_WORKER_POLL_SECONDS=0.05)
    services = build(settings, store=store, clock=clock)
    services.adapters["sandbox"] = SlowSandbox(store)
    return services


def eventually(check, within: float = 5.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"not within {within} s")


def put_retainer(services, deal_id: str, ends: date) -> None:
    event = deal_closed_event(deal_id, contract_type="retainer", contract_end=ends.isoformat())
    services.adapters["sandbox"].put_deal(GenericEvent.model_validate(event).to_deal("sandbox"))


def runs_for(store, deal_id: str) -> list[Run]:
    with store.session() as session:
        return list(session.scalars(select(Run).where(Run.deal_id == deal_id)))


def test_events_and_actions_go_on_while_a_slow_sweep_runs(services, store, clock):
    put_retainer(services, "R-1", clock.now.date() + timedelta(days=20))
    slow = services.adapters["sandbox"]
    stop = threading.Event()
    worker = threading.Thread(target=services.worker().run_forever, args=(stop,))
    worker.start()
    try:
        assert slow.listing.wait(5), "the worker did not start its sweep"
        body, headers = signed(deal_closed_event("D-1"))
        assert (
            create_app(services)
            .test_client()
            .post("/webhooks/generic", data=body, headers=headers)
            .status_code
            == 202
        )
        # The sweep still hangs; the deal-closed event becomes a run and its checklist reaches the CRM.
        eventually(lambda: slow.tasks("D-1"))
        assert not slow.answer.is_set() and runs_for(store, "R-1") == []
        slow.answer.set()
        (run,) = eventually(lambda: runs_for(store, "R-1"))
        assert run.trigger == "contract_end"
    finally:
        slow.answer.set()
        stop.set()
        worker.join(15)
    assert not worker.is_alive()


def test_a_sweep_stops_between_deals_when_the_worker_stops_and_keeps_its_cursor(services, store, clock):
    for n in range(3):
        put_retainer(services, f"R-{n}", clock.now.date() + timedelta(days=20))
    slow = services.adapters["sandbox"]
    slow.answer.set()
    stop = threading.Event()
    stop.set()  # already stopping: nothing is fetched, nothing queued, the cursor stays unwritten
    report = services.worker().sweep(stop=stop)
    assert report.queued == 0 and "stopping" in report.errors["sandbox"]
    with store.session() as session:
        assert session.scalars(select(SweepCursor)).all() == []
    assert services.worker().sweep().queued == 3


def test_a_sweep_waits_for_the_budget_and_the_next_one_resumes(services, store, clock):
    put_retainer(services, "R-1", clock.now.date() + timedelta(days=20))
    services.adapters["sandbox"].answer.set()
    services.adapters["sandbox"].deferral_reason = lambda: "daily API usage 91% is past the 80% budget"
    report = services.worker().sweep()
    assert report.queued == 0 and "budget" in report.errors["sandbox"]
    del services.adapters["sandbox"].deferral_reason
    assert services.worker().sweep().queued == 1


def test_the_sweep_is_not_held_to_the_close_age(services, store, clock):
    """A contract ending soon starts its run however long ago the deal closed: the limit is for closes."""
    event = deal_closed_event("R-9", contract_type="retainer", close_date="2024-05-02")
    event["deal"]["contract_end"] = (clock.now.date() + timedelta(days=20)).isoformat()
    services.adapters["sandbox"].put_deal(GenericEvent.model_validate(event).to_deal("sandbox"))
    services.adapters["sandbox"].answer.set()
    worker = services.worker()
    assert worker.sweep().queued == 1
    worker.run_until_idle()
    assert [r.trigger for r in runs_for(store, "R-9")] == ["contract_end"]
    with store.session() as session:
        assert session.scalars(select(Event)).one().state == "done"
