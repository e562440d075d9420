"""The worker applies the retry policy's decisions to both queues, through its state writes."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from connector.errors import CrmRateLimited
from connector.store import Action, Event
from connector.usecases.events import EventProcessor
from tests.support.harness import tasks_per_run
from tests.support.helpers import deal_closed_event, signed


def deliver(client, event):
    body, headers = signed(event)
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202


def the_event(store) -> Event:
    with store.session() as session:
        return session.scalars(select(Event)).one()


def failing_interpret(monkeypatch, error: BaseException, *, times: int) -> None:
    """Interpreting an event raises ``error`` the first ``times`` times, then works."""
    real = EventProcessor.interpret
    calls: list[int] = []

    def interpret(self, event, *read):
        calls.append(event.id)
        if len(calls) <= times:
            raise error
        return real(self, event, *read)

    monkeypatch.setattr(EventProcessor, "interpret", interpret)


def test_an_event_that_times_out_backs_off_and_then_starts_its_run(
    client, services, store, clock, monkeypatch
):
    failing_interpret(monkeypatch, TimeoutError("the CRM read timed out"), times=1)
    deliver(client, deal_closed_event())
    worker = services.worker()
    worker.run_until_idle()
    event = the_event(store)
    assert (event.state, event.attempts, event.outcome) == (
        "pending",
        1,
        "TimeoutError: the CRM read timed out",
    )
    base = services.settings.retry_base_seconds
    assert timedelta(seconds=0.8 * base) <= event.available_at - clock.now <= timedelta(seconds=base)
    clock.advance(seconds=base + 1)
    worker.run_until_idle()
    assert the_event(store).state == "done"
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_per_run()


def test_an_unexpected_error_in_an_event_is_retried_up_to_the_limit_then_failed(
    client, services, store, clock, monkeypatch
):
    failing_interpret(monkeypatch, KeyError("dealstage"), times=1000)
    deliver(client, deal_closed_event())
    worker = services.worker()
    for _ in range(services.settings.max_attempts + 2):
        worker.run_until_idle()
        clock.advance(hours=2)
    event = the_event(store)
    assert (event.state, event.attempts) == ("failed", services.settings.max_attempts)
    assert event.outcome == "KeyError: 'dealstage'"
    assert event.processed_at is not None


def test_a_rate_limited_event_waits_the_base_delay_without_using_attempts(
    client, services, store, clock, monkeypatch
):
    failing_interpret(monkeypatch, CrmRateLimited("slow down", retry_after=None), times=3)
    deliver(client, deal_closed_event())
    worker = services.worker()
    waits = []
    for _ in range(3):
        worker.run_until_idle()
        event = the_event(store)
        assert (event.state, event.attempts) == ("pending", 0)
        waits.append(event.available_at - clock.now)
        clock.now = event.available_at
    assert waits == [timedelta(seconds=services.settings.retry_base_seconds)] * 3
    worker.run_until_idle()
    assert (the_event(store).state, the_event(store).attempts) == ("done", 1)


def test_an_action_whose_stored_payload_does_not_fit_its_model_is_parked_at_once(client, services, store):
    deliver(client, deal_closed_event())
    worker = services.worker()
    worker.process_events()
    with store.session() as session:
        session.execute(
            update(Action).where(Action.kind == "task").values(payload={"tasks": [{"title": None}]})
        )
    worker.run_until_idle()
    with store.session() as session:
        batch = session.scalars(select(Action).where(Action.kind == "task")).one()
    assert (batch.state, batch.attempts) == ("failed", 1)
    assert batch.last_error.startswith("ValidationError: ")
    assert services.adapters["sandbox"].tasks("D-1") == []
