"""Due work of many deals goes out together: one CRM call per kind and account where the CRM allows,
each action keeping its own key and its own outcome; events read their deals together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from adapters.base import CrmError, Results, Write
from adapters.sandbox import SandboxAdapter
from connector import inbox
from connector.errors import OutcomeUnknown
from connector.models import DealChange, TaskSpec
from connector.services import build
from connector.store import Action, Event, Run
from connector.web import create_app
from tests.support.harness import tasks_per_run
from tests.support.helpers import deal_closed_event, make_settings, signed

DEALS = 8


def deliver(client, event):
    body, headers = signed(event)
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202


def rows(store, table, **where):
    with store.session() as session:
        return list(session.scalars(select(table).filter_by(**where).order_by(table.id)))


class Counting(SandboxAdapter):
    """The sandbox, counting its batch calls and what each write was told."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.task_batches: list[list[Write[Sequence[TaskSpec]]]] = []
        self.lose_reply_of: set[str] = set()  # keys whose first batch write "loses its reply"

    def create_tasks_many(self, writes: Sequence[Write[Sequence[TaskSpec]]]) -> Results[list[str]]:
        self.task_batches.append(list(writes))
        results = super().create_tasks_many(writes)
        for n, write in enumerate(writes):
            if write.key in self.lose_reply_of:
                self.lose_reply_of.discard(write.key)
                results[n] = OutcomeUnknown("the reply was lost")  # written, but nobody heard
        return results


def counting(services, store) -> Counting:
    adapter = Counting(store)
    services.adapters["sandbox"] = adapter
    return adapter


def test_the_checklists_of_many_deals_go_out_in_one_call(client, services, store):
    adapter = counting(services, store)
    for n in range(DEALS):
        deliver(client, deal_closed_event(f"D-{n}"))
    services.worker().run_until_idle()
    assert len(adapter.task_batches) == 1 and len(adapter.task_batches[0]) == DEALS
    keys = [w.key for w in adapter.task_batches[0]]
    assert len(set(keys)) == DEALS  # each action keeps its own key
    assert all(w.unsure_since is None for w in adapter.task_batches[0])  # first writes: nothing to look for
    for n in range(DEALS):
        assert len(adapter.tasks(f"D-{n}")) == tasks_per_run()
    assert {a.state for a in rows(store, Action, step_id="tasks")} == {"done"}


def test_a_record_refused_inside_a_batch_fails_only_its_action(client, services, store):
    adapter = counting(services, store)
    adapter.inject("create_tasks", "permanent", times=1, message="sandbox: owner 42 inactive")
    for n in range(DEALS):
        deliver(client, deal_closed_event(f"D-{n}"))
    services.worker().run_until_idle()
    states = [a.state for a in rows(store, Action, step_id="tasks")]
    assert sorted(states) == ["done"] * (DEALS - 1) + ["failed"]
    assert len(adapter.task_batches) == 1  # one call, one refusal inside it
    (failed,) = rows(store, Action, step_id="tasks", state="failed")
    assert "owner 42 inactive" in failed.last_error
    written = sum(len(adapter.tasks(f"D-{n}")) for n in range(DEALS))
    assert written == tasks_per_run() * (DEALS - 1)


def test_a_lost_reply_inside_a_batch_is_looked_for_and_written_once(client, services, store, clock):
    adapter = counting(services, store)
    for n in range(3):
        deliver(client, deal_closed_event(f"D-{n}"))
    worker = services.worker()
    worker.process_events()
    lost = rows(store, Action, step_id="tasks")[1]
    adapter.lose_reply_of.add(lost.idempotency_key)
    worker.run_until_idle()
    clock.advance(seconds=3600)  # past the back-off
    worker.run_until_idle()
    first, retry = adapter.task_batches[0], adapter.task_batches[-1]
    assert len(first) == 3 and [w.key for w in retry] == [lost.idempotency_key]
    assert retry[0].unsure_since is not None  # the retry is told to look before writing
    assert all(len(adapter.tasks(f"D-{n}")) == tasks_per_run() for n in range(3))  # nothing twice
    assert {a.state for a in rows(store, Action, step_id="tasks")} == {"done"}


TWO_STEPS = """
id: two-steps
name: Two steps
version: 1
match: {}
anchor: close_date
steps:
  - id: call
    task: {title: "Call {{ company.name }}", due: +0d, owner: deal_owner}
  - id: mark
    property: {object: deal, set: {offboard_status: in_progress}}
"""


def test_groups_settle_side_by_side_and_each_run_closes(store, db_url, clock, tmp_path):
    """A run's task and property actions settle in transactions of their own, at the same time:
    whichever settles last sees the other and closes the run."""
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "two-steps.yaml").write_text(TWO_STEPS)
    services = build(make_settings(db_url, OFFBOARD_PLAYBOOKS=str(folder)), store=store, clock=clock)
    app = create_app(services)
    for n in range(DEALS):
        deliver(app.test_client(), deal_closed_event(f"D-{n}"))
    worker = services.worker()
    worker.process_events()
    clock.advance(seconds=60)  # the property goes out a minute after the checklist
    assert worker.execute_due_actions() == 2 * DEALS  # two groups, written at once
    # The checklist written, each deal's progress properties follow (one batch of its own).
    assert worker.execute_due_actions() == DEALS
    assert {a.state for a in rows(store, Action)} == {"done"}
    assert [r.state for r in rows(store, Run)] == ["done"] * DEALS


class Reading(SandboxAdapter):
    """A CRM whose events name a deal it reads: many at once (``DealBatches``)."""

    name = "reading"

    def __init__(self, store) -> None:
        super().__init__(store)
        self.reads: list[int] = []

    def interpret(self, kind: str, payload: dict[str, Any]) -> DealChange | None:
        raise AssertionError("events of a group are read together")

    def interpret_many(self, events: Sequence[tuple[str, dict[str, Any]]]) -> Results[DealChange | None]:
        self.reads.append(len(events))
        results: Results[DealChange | None] = []
        for _kind, payload in events:
            if payload["deal"] == "gone":
                results.append(CrmError("the deal was deleted"))
            elif payload["deal"] == "open":
                results.append(None)
            else:
                deal = self.fetch_deal(payload["deal"]).model_copy(update={"crm": "reading"})
                results.append(DealChange(deal=deal, change="closed"))
        return results


def test_events_of_one_source_read_their_deals_together(client, services, store, clock):
    reading = Reading(store)
    services.adapters["reading"] = reading
    for n in range(3):  # the sandbox learns the deals from generic events first
        deliver(client, deal_closed_event(f"D-{n}"))
    services.worker().run_until_idle()
    items = [
        inbox.Incoming("reading", "sandbox", f"e-{n}", "deal", {"deal": deal})
        for n, deal in enumerate(["D-0", "D-1", "gone", "open", "D-2"])
    ]
    inbox.accept(store, items, clock())
    services.worker().process_events()
    assert reading.reads == [5]
    outcomes = {e.event_key: (e.state, e.outcome) for e in rows(store, Event, source="reading")}
    assert outcomes["e-3"] == ("ignored", "not a deal closing or re-opening")
    assert outcomes["e-2"][0] == "pending" and "deleted" in outcomes["e-2"][1]  # back off, alone
    assert all(outcomes[f"e-{n}"][0] == "done" for n in (0, 1, 4))
    assert len([r for r in rows(store, Run) if r.crm == "reading"]) == 3
