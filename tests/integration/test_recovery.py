"""A dead worker's actions: taken over within seconds, and never written twice though HubSpot's
search lags behind what the dead attempt wrote."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from connector.settings import Settings
from connector.store import Action, Event
from connector.web import create_app
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
SEARCH_LAG = timedelta(seconds=15)  # HubSpot's index trails its writes by this much here


@pytest.fixture
def fake(clock):
    return offboard_properties(standard_portal(FakeHubSpot(clock=clock, search_lag=SEARCH_LAG)))


@pytest.fixture
def url(fake, httpserver):
    return serve(fake, httpserver)


def process(db_url, store, clock, url):
    """What one ``offboard`` process builds: its own adapters, knowing nothing of the others."""
    overrides = settings_overrides(url, OFFBOARD_SWEEP_INTERVAL_SECONDS=0)
    return hubspot_services(make_settings(db_url, OFFBOARD_PUBLIC_URL=PUBLIC, **overrides), store, clock)


def actions(store, kind=None):
    with store.session() as session:
        query = select(Action).order_by(Action.id)
        return list(session.scalars(query.where(Action.kind == kind) if kind else query))


def closed_deal(services, fake):
    ids = add_deal(fake)
    body, headers = signed(
        [stage_event(ids["deal"], "closedwon", at=services.clock())],
        url=PUBLIC + "/webhooks/hubspot",
        at=services.clock(),
    )
    reply = create_app(services).test_client().post("/webhooks/hubspot", data=body, headers=headers)
    assert reply.status_code == 204, reply.get_data(as_text=True)
    return ids


def test_the_default_lease_hands_a_dead_workers_actions_over_within_30_seconds(
    db_url, store, clock, url, fake
):
    assert Settings.model_fields["lease_seconds"].default <= 25  # a lease run out, plus a poll or two
    first = process(db_url, store, clock, url)
    closed_deal(first, fake)
    dead = first.worker("dead")
    dead.process_events()
    assert dead._claim(Action)  # claims its batch, then dies
    other = process(db_url, store, clock, url).worker("alive")
    assert other.execute_due_actions() == 0  # still leased
    clock.advance(seconds=first.settings.lease_seconds + first.settings.worker_poll_seconds)
    assert other.execute_due_actions() > 0
    assert {a.claimed_by for a in actions(store) if a.state == "done"} == {"alive"}


def test_a_taken_over_action_does_not_write_what_the_dead_attempt_wrote_seconds_ago(
    db_url, store, clock, url, fake
):
    first = process(db_url, store, clock, url)
    closed_deal(first, fake)
    dead = first.worker("dead")
    dead.process_events()
    (batch,) = [a for a in dead._claim(Action) if a.kind == "task"]
    planned = len(batch.payload["tasks"])
    # The dead attempt writes the tasks at the very end of its lease (after a long rate-limit
    # wait, say), then dies before it can record that it did.
    clock.advance(seconds=first.settings.lease_seconds - 1)
    tasks = dead.performer.handlers["task"]
    tasks.perform(first.adapters["hubspot"], tasks.parse(batch), batch.idempotency_key)
    assert len(fake.records("tasks")) == planned
    clock.advance(seconds=2)  # the lease has run out; the search does not show the tasks yet

    second = process(db_url, store, clock, url)
    assert second.adapters["hubspot"].once.existing("tasks", batch.idempotency_key) == {}
    second.worker("alive").run_until_idle()

    (done,) = actions(store, "task")
    assert (done.state, done.claimed_by, done.attempts) == ("done", "alive", 2)
    assert len(fake.records("tasks")) == planned  # found, not written again
    assert fake.calls[CREATE] == 1
    assert sorted(done.result["task_ids"]) == sorted(t.id for t in fake.records("tasks"))


def test_an_action_taken_over_and_put_back_still_tells_the_next_worker(db_url, store, clock, url, fake):
    first = process(db_url, store, clock, url)
    closed_deal(first, fake)
    dead = first.worker("dead")
    dead.process_events()
    claimed = dead._claim(Action)
    ran_out = {a.id: a.lease_until for a in actions(store) if a.state == "running"}
    clock.advance(seconds=first.settings.lease_seconds + 1)

    stopping = process(db_url, store, clock, url).worker("stopping")
    taken = stopping._claim(Action)  # takes the batch over, then is told to stop
    assert {a.id for a in taken} == {a.id for a in claimed}
    with stopping._held_lock:
        stopping._held[Action].update(a.id for a in taken)
    assert stopping.release() == len(taken)

    put_back = {a.id: (a.state, a.lease_until) for a in actions(store) if a.id in ran_out}
    assert put_back == {i: ("pending", ran_out[i]) for i in ran_out}
    next_one = process(db_url, store, clock, url).worker("next")
    next_one._claim(Action)
    assert next_one._reclaimed == ran_out
    assert not [e for e in _events(store) if e.state != "done"]


def _events(store):
    with store.session() as session:
        return list(session.scalars(select(Event)))
