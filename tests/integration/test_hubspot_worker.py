"""Whole runs through the worker against the fake HubSpot: call counts, limits, faults, no duplicates."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from adapters.hubspot.records import MARKER
from connector.store import Action, Event, Run
from connector.web import create_app
from tests.support.faults import Fault
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    FakeHubSpot,
    add_deal,
    hubspot_services,
    offboard_properties,
    serve,
    settings_overrides,
    signed,
    stage_event,
    standard_portal,
)

PUBLIC = "https://offboard.example.com"
CREATE = "POST /crm/v3/objects/tasks/batch/create"
BUDGET = 10  # requests per rolling 10 s: small, so a few runs must wait for it
# What each kind of action costs in calls: no marker search before a first write; a survey or
# referral send is the contact's properties and a note; an escalation reads its task back.
COST = {"task": 1, "property": 1, "note": 1, "survey": 2, "referral": 2, "deadline": 0, "escalation": 1}
FETCH_DEAL = 4  # deal, owner, company, contacts (the portal id and pipelines are read once)


@pytest.fixture
def fake(clock):
    return offboard_properties(standard_portal(FakeHubSpot(clock=clock, limit_per_10s=BUDGET)))


@pytest.fixture
def track_interval() -> int:
    """OFFBOARD_TRACK_INTERVAL_SECONDS: the default; a test that counts every call turns the pass off."""
    return 300


@pytest.fixture
def services(db_url, store, clock, fake, httpserver, track_interval):
    # No contract-end sweep here: every call counted is a run's.
    overrides = settings_overrides(
        serve(fake, httpserver),
        HUBSPOT_RATE_LIMIT_PER_10S=BUDGET,
        OFFBOARD_SWEEP_INTERVAL_SECONDS=0,
        OFFBOARD_TRACK_INTERVAL_SECONDS=track_interval,
    )
    return hubspot_services(make_settings(db_url, OFFBOARD_PUBLIC_URL=PUBLIC, **overrides), store, clock)


def deliver(services, events) -> None:
    body, headers = signed(events, url=PUBLIC + "/webhooks/hubspot", at=services.clock())
    reply = create_app(services).test_client().post("/webhooks/hubspot", data=body, headers=headers)
    assert reply.status_code == 204, reply.get_data(as_text=True)


def rows(store, table):
    with store.session() as session:
        return list(session.scalars(select(table).order_by(table.id)))


def run_everything(services, clock, store, rounds: int = 60) -> None:
    """Work until nothing is pending, jumping the clock to whatever is due next (back-offs, surveys)."""
    worker = services.worker()
    for _ in range(rounds):
        worker.run_until_idle()
        due = [e.available_at for e in rows(store, Event) if e.state == "pending"]
        due += [a.due_at for a in rows(store, Action) if a.state == "pending"]
        if not due:
            return
        clock.now = max(clock.now, min(due)) + timedelta(seconds=1)
    raise AssertionError(f"work left: {[(a.kind, a.state, a.last_error) for a in rows(store, Action)]}")


def task_markers(fake) -> Counter[tuple[str, str]]:
    return Counter(MARKER.search(t.properties["hs_task_body"]).groups() for t in fake.records("tasks"))


@pytest.mark.parametrize("track_interval", [0])  # no tracking pass: every call counted is an action's
def test_a_whole_checklist_costs_one_task_create_call(services, fake, clock, store):
    ids = add_deal(fake)
    deliver(services, [stage_event(ids["deal"], "closedwon", at=clock.now)])
    run_everything(services, clock, store)
    actions = rows(store, Action)
    assert {a.state for a in actions} == {"done"}
    (batch,) = [a for a in actions if a.step_id == "tasks"]
    planned = len(batch.payload["tasks"])
    assert 0 < planned <= 100
    # Nobody completes a task here: the final invoice falls overdue and gets its one escalation task.
    writes = [a for a in actions if a.kind == "task"]
    assert [a.step_id for a in writes] == ["tasks", "final-invoice:escalation:task"]
    assert len(fake.records("tasks")) == planned + len(writes[1].payload["tasks"]) == planned + 1
    assert fake.calls[CREATE] == len(writes)  # the whole checklist in one call, the escalation in another
    expected = 2 + FETCH_DEAL + sum(COST[a.kind] for a in actions)
    assert sum(fake.calls.values()) == expected, fake.calls


def test_tasks_land_on_deal_company_and_contact_with_owner_and_due_time(services, fake, clock, store):
    ids = add_deal(fake)
    deliver(services, [stage_event(ids["deal"], "closedwon", at=clock.now)])
    services.worker().run_until_idle()
    (run,) = rows(store, Run)
    assert run.playbook_id == "completed-project"
    (batch,) = [a for a in rows(store, Action) if a.kind == "task"]
    by_subject = {t.properties["hs_task_subject"]: t for t in fake.records("tasks")}
    for spec in batch.payload["tasks"]:
        task = by_subject[spec["title"]]
        due = datetime.fromisoformat(spec["due_at"])
        assert task.properties["hs_timestamp"] == str(int(due.timestamp() * 1000))
        assert task.properties["hubspot_owner_id"] == spec["owner_id"]
        assert fake.linked(task, "deals") == {ids["deal"]: 216}
        assert fake.linked(task, "companies") == {ids["company"]: 192}
        assert fake.linked(task, "contacts") == {ids["contact"]: 204}


def test_429s_then_500s_every_action_done_once_and_the_budget_kept(services, fake, clock, store):
    deals = [
        add_deal(fake, name=f"Project {n}", contact=(f"c{n}@client.example", "Cy", f"{n}")) for n in range(4)
    ]
    events = [stage_event(d["deal"], "closedwon", event_id=n, at=clock.now) for n, d in enumerate(deals)]
    deliver(services, events)
    # While the events are read: HubSpot's budget spent by someone else for a while, then 500s.
    fake.inject(429, times=5)
    fake.inject(500, times=3)
    worker = services.worker()
    while any(e.state == "pending" for e in rows(store, Event)):
        worker.process_events()
        clock.advance(minutes=10)
    assert not fake.faults
    # While the actions are written: the same again, and one batch written but its answer lost.
    fake.inject(429, times=9)
    fake.inject(500, times=6)
    fake.inject(Fault.LOST_REPLY, route=CREATE)
    run_everything(services, clock, store)
    assert not fake.faults  # every fault was met
    assert max(a.attempts for a in rows(store, Action)) > 1
    assert {e.state for e in rows(store, Event)} == {"done"}
    actions = rows(store, Action)
    assert {a.state for a in actions} == {"done"}
    planned = sum(len(a.payload["tasks"]) for a in actions if a.kind == "task")
    markers = task_markers(fake)
    assert len(fake.records("tasks")) == planned == len(markers)
    assert set(markers.values()) == {1}  # no task twice
    assert len(fake.records("notes")) == sum(1 for a in actions if a.kind in ("survey", "note"))
    assert fake.max_in_window(10) <= BUDGET * 1.03
    assert fake.natural_429s == 0  # HubSpot never had to stop us itself


def test_a_lost_reply_in_a_run_does_not_duplicate_tasks(services, fake, clock, store):
    ids = add_deal(fake)
    fake.inject(Fault.LOST_REPLY, route=CREATE)
    deliver(services, [stage_event(ids["deal"], "closedwon", at=clock.now)])
    run_everything(services, clock, store)
    writes = [a for a in rows(store, Action) if a.kind == "task"]  # the checklist, then an escalation
    (batch,) = [a for a in writes if a.step_id == "tasks"]
    assert (batch.state, batch.attempts) == ("done", 2)  # its reply lost once, then retried
    assert {a.state for a in writes} == {"done"}
    assert len(fake.records("tasks")) == sum(len(a.payload["tasks"]) for a in writes)
    assert set(task_markers(fake).values()) == {1}  # no task twice
    assert fake.calls[CREATE] == len(writes)  # the batch's retry found its tasks by their markers


def test_a_reopened_deal_cancels_what_is_still_pending(services, fake, clock, store):
    ids = add_deal(fake)
    deliver(services, [stage_event(ids["deal"], "closedwon", event_id=1, at=clock.now)])
    services.worker().run_until_idle()
    clock.advance(minutes=5)
    fake.set_property("deals", ids["deal"], "dealstage", "contractsent")
    deliver(services, [stage_event(ids["deal"], "contractsent", event_id=2, at=clock.now)])
    services.worker().run_until_idle()
    (run,) = rows(store, Run)
    assert run.state == "cancelled"
    assert "cancelled" in {a.state for a in rows(store, Action)}
