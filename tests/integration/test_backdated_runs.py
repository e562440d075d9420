"""Backdated deals: what has passed goes out now, in order, and an answer window counts from the send."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from connector.store import Action
from connector.usecases.tracking import track
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
    sandbox = services.adapters["sandbox"]
    tasks = {t.step_id: t for t in sandbox.tasks("D-1")}
    assert "thank-you" not in tasks  # it waits for the final invoice to be paid (completed)
    survey = action(store, "exit-nps")
    # Every late step goes out now, a minute apart in playbook order: the survey (was 2 Oct) after
    # the tasks that came before it, the later tasks (data retention, ..., follow-up) after it.
    late = sorted([survey.due_at, *(t.due_at for t in tasks.values())])
    late = [due for due in late if due < datetime(2026, 11, 21, tzinfo=UTC)]
    assert late == [datetime(2026, 11, 20, 15, minute, tzinfo=UTC) for minute in range(len(late))]
    before = [t for t in tasks.values() if t.due_at < survey.due_at]
    assert {t.step_id for t in before} >= {"confirm-end-date", "final-invoice", "backup-and-transfer"}
    assert survey.due_at == late[len(before)] == datetime(2026, 11, 20, 15, len(before), tzinfo=UTC)
    assert tasks["confirm-end-date"].due_at == late[0]  # was 1 Sep
    assert tasks["follow-up"].due_at > survey.due_at  # was 12 Nov: still after the survey

    # The invoice is paid straight away, before the survey goes out: the thank-you it releases
    # counts from the payment, and still comes after the survey.
    paid = datetime(2026, 11, 20, 15, 2, tzinfo=UTC)
    sandbox.complete_task(tasks["final-invoice"].id, by="finance-1", at=paid)
    clock.now = paid
    track(services.settings, store, services.adapters, paid)
    worker.run_until_idle()
    (thank_you,) = [t for t in sandbox.tasks("D-1") if t.step_id == "thank-you"]
    assert thank_you.due_at > survey.due_at

    clock.now = survey.due_at
    worker.run_until_idle()
    assert action(store, "exit-nps").state == "done"
    deadline = action(store, "exit-nps:deadline")
    assert (deadline.state, deadline.due_at) == (
        "pending",
        survey.due_at + timedelta(days=5),  # the answer window counts from the late send
    )
    assert len(sandbox.invites("D-1")) == 1  # the survey; no reminder yet


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
