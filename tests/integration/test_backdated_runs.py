"""Backdated deals: what has passed goes out now, in order, and an answer window counts from the send."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from connector.store import Action
from tests.support.helpers import deal_closed_event, signed

BACKDATED = deal_closed_event(contract_end="2026-10-01")  # the run starts on 20 Nov


def deliver(client, event):
    body, headers = signed(event)
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202


def action(store, step_id):
    with store.session() as session:
        return session.scalars(select(Action).filter_by(step_id=step_id)).one()


def test_late_steps_go_out_now_and_the_thank_you_never_precedes_the_survey(client, services, clock, store):
    deliver(client, BACKDATED)
    worker = services.worker()
    worker.run_until_idle()
    tasks = {t.step_id: t for t in services.adapters["sandbox"].tasks("D-1")}
    survey = action(store, "exit-nps")
    assert survey.due_at == datetime(2026, 11, 20, 15, 8, tzinfo=UTC)  # now, after the late tasks
    assert tasks["confirm-end-date"].due_at == datetime(2026, 11, 20, 15, 0, tzinfo=UTC)  # was 1 Sep
    assert tasks["thank-you"].due_at > survey.due_at  # was 12 Oct: still after the survey
    assert tasks["follow-up"].due_at > tasks["thank-you"].due_at
    clock.now = survey.due_at
    worker.run_until_idle()
    assert action(store, "exit-nps").state == "done"
    deadline = action(store, "exit-nps:deadline")
    assert (deadline.state, deadline.due_at) == ("pending", datetime(2026, 11, 25, 15, 8, tzinfo=UTC))
    assert len(services.adapters["sandbox"].invites("D-1")) == 1  # the survey; no reminder yet


def test_a_survey_sent_late_moves_its_deadline_to_the_send_plus_the_window(client, services, clock, store):
    deliver(client, deal_closed_event())  # on time: the survey is planned for Fri 1 Jan 2027
    worker = services.worker()
    worker.run_until_idle()
    assert action(store, "exit-nps:deadline").due_at == datetime(2027, 1, 6, 9, 0, tzinfo=UTC)
    clock.now = datetime(2027, 1, 4, 11, 30, tzinfo=UTC)  # the worker was down over the weekend
    worker.run_until_idle()
    assert action(store, "exit-nps").state == "done"
    deadline = action(store, "exit-nps:deadline")
    assert deadline.due_at == datetime(2027, 1, 11, 11, 30, tzinfo=UTC)  # Sat 9 Jan moves to Monday
    assert len(services.adapters["sandbox"].invites("D-1")) == 1
