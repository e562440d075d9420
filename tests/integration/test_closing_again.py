"""A deal closed, re-opened and closed again gets a fresh run; nothing else starts a second one.

Each test runs on SQLite and Postgres, through the generic webhook and the sandbox CRM.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, func, make_url, select, text

from connector.generic import GenericEvent
from connector.planner import PlanContext, choose, plan
from connector.store import Action, Event, Run, Store
from connector.store.migrate import current, upgrade
from connector.usecases.offboarding import start_run
from connector.usecases.uow import UnitOfWork
from tests.support.helpers import deal_closed_event, signed


def deliver(client, event) -> int:
    body, headers = signed(event)
    return int(client.post("/webhooks/generic", data=body, headers=headers).status_code)


def closed(n: int, **deal: object) -> dict:
    return deal_closed_event("D-1", **deal) | {"id": f"close-{n}"}


def reopened(n: int) -> dict:
    return deal_closed_event("D-1", outcome=None, closed=False, close_date=None, stage="negotiation") | {
        "id": f"reopen-{n}",
        "type": "deal.reopened",
    }


def runs(store) -> list[Run]:
    with store.session() as session:
        return list(session.scalars(select(Run).order_by(Run.id)))


def keys(store, run_id: int) -> set[str]:
    with store.session() as session:
        return set(session.scalars(select(Action.idempotency_key).where(Action.run_id == run_id)))


def outcome(store, key: str) -> str:
    with store.session() as session:
        event = session.scalars(select(Event).where(Event.event_key.like(f"%{key}%"))).one()
        return f"{event.state}: {event.outcome}"


def test_close_reopen_close_starts_a_fresh_run_with_its_own_tasks(client, services, store):
    worker = services.worker()
    assert deliver(client, closed(1)) == 202
    worker.run_until_idle()
    tasks_of_first = {t.marker for t in services.adapters["sandbox"].tasks("D-1")}
    assert tasks_of_first
    assert deliver(client, reopened(1)) == 202
    worker.run_until_idle()
    assert deliver(client, closed(2)) == 202
    worker.run_until_idle()

    first, second = runs(store)
    assert (first.playbook_id, first.state, first.generation) == ("completed-project", "cancelled", 1)
    assert (second.playbook_id, second.state, second.generation) == ("completed-project", "active", 2)
    assert "re-opened" in first.note
    assert outcome(store, "close-2") == f"done: run {second.id} started with playbook completed-project"
    assert keys(store, first.id).isdisjoint(keys(store, second.id))
    # The second run wrote its own checklist; the first run's tasks are still there, untouched.
    tasks = services.adapters["sandbox"].tasks("D-1")
    assert {t.marker for t in tasks} > tasks_of_first
    assert len(tasks) == 2 * len(tasks_of_first)
    with store.session() as session:
        states = dict(
            session.execute(
                select(Action.run_id, func.count()).where(Action.state == "cancelled").group_by(Action.run_id)
            ).all()
        )
    assert set(states) == {first.id}  # the cancelled run's history is kept as it was


def test_a_third_close_after_a_second_reopen_is_the_third_generation(client, services, store):
    worker = services.worker()
    for n in (1, 2):
        deliver(client, closed(n))
        worker.run_until_idle()
        deliver(client, reopened(n))
        worker.run_until_idle()
    deliver(client, closed(3))
    worker.run_until_idle()
    assert [(r.generation, r.state) for r in runs(store)] == [
        (1, "cancelled"),
        (2, "cancelled"),
        (3, "active"),
    ]
    generations = [keys(store, r.id) for r in runs(store)]
    assert len(set().union(*generations)) == sum(len(k) for k in generations)


def test_a_redelivered_close_after_the_second_run_starts_nothing(client, services, store):
    worker = services.worker()
    for event in (closed(1), reopened(1), closed(2)):
        deliver(client, event)
        worker.run_until_idle()
    tasks_before = len(services.adapters["sandbox"].tasks("D-1"))
    assert deliver(client, closed(2)) == 200  # the inbox holds it already
    worker.run_until_idle()
    assert len(runs(store)) == 2
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_before
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Event)) == 3


def test_a_new_close_while_the_run_is_active_starts_nothing(client, services, store):
    worker = services.worker()
    deliver(client, closed(1))
    worker.run_until_idle()
    deliver(client, closed(2))  # another close of the same deal (say, an edit of a closed deal)
    worker.run_until_idle()
    (run,) = runs(store)
    assert run.state == "active"
    assert outcome(store, "close-2").startswith(f"done: nothing new: the deal already has run {run.id} ")


def test_a_close_after_the_run_is_done_starts_nothing(client, services, store, clock):
    worker = services.worker()
    deliver(client, closed(1))
    worker.run_until_idle()
    for _ in range(40):  # every step's day comes, surveys go unanswered: the run finishes
        if runs(store)[0].state == "done":
            break
        clock.advance(days=3)
        worker.run_until_idle()
    (run,) = runs(store)
    assert run.state == "done"
    tasks_before = len(services.adapters["sandbox"].tasks("D-1"))
    deliver(client, closed(2, close_date=clock().date().isoformat()))  # closed again, recently
    worker.run_until_idle()
    assert [(r.id, r.state) for r in runs(store)] == [(run.id, "done")]
    assert len(services.adapters["sandbox"].tasks("D-1")) == tasks_before
    assert "already has run" in outcome(store, "close-2") and "done" in outcome(store, "close-2")


def test_start_run_refuses_a_second_open_run_and_numbers_the_next_generation(services, store, clock):
    deal = GenericEvent.model_validate(closed(1)).to_deal("sandbox")
    context = PlanContext.from_settings(services.settings, clock())
    loaded, _ = choose(deal, services.playbooks(), trigger="deal_closed", today=context.today)
    assert loaded is not None
    laid_out = plan(deal, loaded.playbook, context)

    def start():
        uow = UnitOfWork(session=session, actor="test", now=clock())
        return start_run(uow, deal, loaded, laid_out, "deal_closed", None)

    with store.session() as session:
        first, again = start(), start()
        assert (first.created, again.created, again.run.id) == (True, False, first.run.id)
        first.run.state = "cancelled"
        session.flush()
        third = start()
        assert (third.created, third.run.generation) == (True, 2)
        assert start().run.id == third.run.id


# --- the migration, on a database that already holds runs ---------------------------------------


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_url(request: pytest.FixtureRequest, sqlite_url: str) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url
        return
    admin_url = make_url(request.getfixturevalue("postgres_url")).set(database="postgres")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"offboard_migrate_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    yield admin_url.set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


RUN_ROW = (
    "INSERT INTO runs (id, crm, account, deal_id, playbook_id, playbook_version, playbook_hash,"
    " playbook, deal, \"trigger\", anchor_at, state, created_at, updated_at) VALUES (1, 'sandbox',"
    " '-', 'D-1', 'completed-project', 1, 'h', '{}', '{}', 'deal_closed', '2026-01-01', 'cancelled',"
    " '2026-01-01', '2026-01-01')"
)
ACTION_ROW = (
    "INSERT INTO actions (id, run_id, step_id, kind, payload, due_at, state, attempts,"
    " idempotency_key, created_at, updated_at) VALUES (1, 1, 'tasks', 'tasks', '{}', '2026-01-01',"
    " 'cancelled', 0, 'k-1', '2026-01-01', '2026-01-01')"
)


def test_the_migration_keeps_runs_and_their_actions_and_frees_a_cancelled_deal(empty_url):
    store = Store.from_url(empty_url)
    try:
        upgrade(store.engine, "0006")
        with store.engine.begin() as connection:
            connection.execute(text(RUN_ROW))
            connection.execute(text(ACTION_ROW))
        assert upgrade(store.engine, "0008") and current(store.engine) == "0008"
        with store.engine.connect() as connection:  # the tables as 0008 left them (not today's model)
            (generation,) = connection.execute(text("SELECT generation FROM runs")).one()
            actions = connection.execute(
                text("SELECT idempotency_key, kind FROM actions WHERE run_id = 1")
            ).all()
            assert (generation, [tuple(a) for a in actions]) == (
                1,
                [("k-1", "task")],
            )  # 0008: named like the step kind
        with store.engine.begin() as connection:
            # A second run of the same deal and playbook: allowed now that the first is cancelled …
            second = (
                RUN_ROW.replace("VALUES (1,", "VALUES (2,")
                .replace("'cancelled'", "'active'")
                .replace("updated_at)", "updated_at, generation)")
            )
            connection.execute(text(second[:-1] + ", 2)"))
        # … and an action must still point at a run.
        with pytest.raises(Exception, match=r"(?i)foreign key"), store.engine.begin() as connection:
            connection.execute(text(ACTION_ROW.replace("(1, 1,", "(2, 99,").replace("k-1", "k-2")))
    finally:
        store.dispose()
