"""Ingest under concurrency: every delivery answered 2xx is stored, once; a delivery the database
does not take is never answered 2xx; deliveries arriving together share one transaction.

Each test runs on SQLite and on Postgres. Many threads post at once, each with its own test
client (the app's requests run concurrently, as under the server's threads), including
redeliveries of the same events, and the answers are compared with the rows.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import func, select, text

from connector import inbox
from connector.services import build
from connector.store import Event, Store, direct
from connector.web import create_app
from tests.support.helpers import deal_closed_event, make_settings
from tests.support.helpers import signed as signed_generic
from tests.support.hubspot import hubspot_services, settings_overrides, signed, stage_event
from tests.support.salesforce import (
    EXPECTED_ACK,
    OUTBOUND_PATH,
    FakeSalesforce,
    outbound_message,
    session_settings,
)

PUBLIC = "https://offboard.example.com"
HUBSPOT = "/webhooks/hubspot"
THREADS = 12


def in_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(n)`` in ``count`` threads started together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    failures: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait()
            work(n)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def stored(store: Store, source: str) -> dict[str, int]:
    """Event key → row id, for every event of ``source``."""
    with store.read() as session:
        rows = session.execute(select(Event.event_key, Event.id).where(Event.source == source))
        return {key: int(row_id) for key, row_id in rows}


def rows(store: Store) -> int:
    with store.read() as session:
        return int(session.scalar(select(func.count()).select_from(Event)) or 0)


@pytest.fixture
def hubspot_app(db_url, store, clock) -> Any:
    settings = make_settings(db_url, OFFBOARD_PUBLIC_URL=PUBLIC, **settings_overrides("http://127.0.0.1:9"))
    return create_app(hubspot_services(settings, store, clock))


def post_batch(client: Any, event_ids: list[int | str], clock: Any) -> Any:
    events = [stage_event("7001", "closedwon", event_id=n) for n in event_ids]  # type: ignore[arg-type]
    body, headers = signed(events, url=PUBLIC + HUBSPOT, at=clock.now)
    return client.post(HUBSPOT, data=body, headers=headers)


# --- every 2xx is stored ---------------------------------------------------------------------


def test_concurrent_batches_with_redeliveries_store_every_answered_event_once(hubspot_app, store, clock):
    answered: list[tuple[list[int | str], int]] = []

    def deliver(n: int) -> None:
        client, rng = hubspot_app.test_client(), random.Random(n)
        for _ in range(15):
            # Ids from a small shared range: the same event arrives from several threads at once.
            batch: list[int | str] = rng.sample(range(1, 120), rng.randint(1, 4))
            answered.append((batch, post_batch(client, batch, clock).status_code))

    in_threads(THREADS, deliver)
    assert {status for _, status in answered} == {204}
    sent = {str(n) for batch, _ in answered for n in batch}
    assert set(stored(store, "hubspot")) == sent
    assert rows(store) == len(sent)  # every redelivery recognised, nothing stored twice


def test_concurrent_generic_deliveries_answer_the_id_of_the_stored_event(db_url, store, clock):
    client_app = create_app(build(make_settings(db_url), store=store))  # the real clock: signatures are fresh
    answers: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    lock = threading.Lock()

    def deliver(n: int) -> None:
        client, rng = client_app.test_client(), random.Random(100 + n)
        for _ in range(15):
            msg_id = f"msg_{rng.randint(1, 60)}"
            body, headers = signed_generic(deal_closed_event(f"D-{msg_id}"), msg_id=msg_id)
            reply = client.post("/webhooks/generic", data=body, headers=headers)
            with lock:
                answers[msg_id].append((reply.status_code, reply.get_json()))

    in_threads(THREADS, deliver)
    held = stored(store, "generic")
    assert set(held) == set(answers)
    for msg_id, replies in answers.items():
        statuses = sorted(status for status, _ in replies)
        assert statuses == [200] * (len(replies) - 1) + [202], msg_id  # one "accepted", then duplicates
        assert {(body["status"], body["event_id"]) for status, body in replies if status == 202} == {
            ("accepted", held[msg_id])
        }
        assert {body["event_id"] for _, body in replies} == {held[msg_id]}
    assert rows(store) == len(answers)


def test_concurrent_outbound_messages_are_acked_only_with_every_notification_stored(db_url, store, clock):
    org = FakeSalesforce()  # no call reaches it: an outbound message is only verified and stored
    app = create_app(build(make_settings(db_url, **session_settings(org)), store=store, clock=clock))
    acked: list[list[str]] = []

    def deliver(n: int) -> None:
        client, rng = app.test_client(), random.Random(200 + n)
        for _ in range(8):
            ids = [f"04l5g00000{k:05d}AAA" for k in rng.sample(range(40), rng.randint(1, 3))]
            body = outbound_message([(i, {"Id": f"006{i[3:]}", "StageName": "Closed Won"}) for i in ids])
            reply = client.post(OUTBOUND_PATH, data=body, headers={"Content-Type": "text/xml"})
            assert (reply.status_code, reply.data) == (200, EXPECTED_ACK)
            acked.append(ids)

    in_threads(8, deliver)
    sent = {f"om:{i}" for ids in acked for i in ids}  # keyed by notification id
    assert set(stored(store, "salesforce")) == sent
    assert rows(store) == len(sent)


# --- never a 2xx for what was not stored -----------------------------------------------------


@pytest.fixture
def poisoned(store: Store) -> Iterator[None]:
    """The database itself refuses every event whose key starts with "poison" (a trigger)."""
    if store.is_sqlite:
        create = [
            "CREATE TRIGGER test_poison BEFORE INSERT ON events WHEN NEW.event_key LIKE 'poison%' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned event'); END"
        ]
        drop = ["DROP TRIGGER IF EXISTS test_poison"]
    else:
        create = [
            "CREATE FUNCTION test_poison() RETURNS trigger AS $$ BEGIN "
            "IF NEW.event_key LIKE 'poison%' THEN RAISE EXCEPTION 'poisoned event'; END IF; "
            "RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER test_poison BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION test_poison()",
        ]
        drop = ["DROP TRIGGER IF EXISTS test_poison ON events", "DROP FUNCTION IF EXISTS test_poison()"]
    with store.engine.begin() as connection:
        for statement in create:
            connection.execute(text(statement))
    yield
    with store.engine.begin() as connection:
        for statement in drop:
            connection.execute(text(statement))


def test_a_batch_the_database_refuses_is_answered_500_and_the_batches_beside_it_are_stored(
    hubspot_app, store, clock, poisoned
):
    answered: list[tuple[list[int | str], int, Any]] = []

    def deliver(n: int) -> None:
        client = hubspot_app.test_client()
        for k in range(10):
            batch: list[int | str] = [n * 100 + k * 2 + 1, n * 100 + k * 2 + 2]
            if k % 3 == 0:
                batch.append(f"poison-{n}-{k}")  # this whole batch must be refused: one transaction
            reply = post_batch(client, batch, clock)
            answered.append((batch, reply.status_code, reply.get_json(silent=True)))

    in_threads(THREADS, deliver)
    refused = [
        (batch, status, body) for batch, status, body in answered if any("poison" in str(e) for e in batch)
    ]
    accepted = [batch for batch, status, _ in answered if status == 204]
    assert refused and all(
        status == 500 and body == {"error": "internal error; nothing was stored"}
        for _, status, body in refused
    )
    assert len(accepted) == len(answered) - len(refused)  # the batches sharing a transaction with them
    assert set(stored(store, "hubspot")) == {str(e) for batch in accepted for e in batch}


def dead_database_app(db_url: str, **overrides: Any) -> Any:
    """The app with a database nobody listens on: every transaction fails to connect."""
    away = Store.from_url("postgresql://offboard@127.0.0.1:9/offboard")
    return create_app(build(make_settings(db_url, **overrides), store=away))


def test_a_database_that_is_away_gets_503_and_never_2xx(sqlite_url):
    client = dead_database_app(sqlite_url).test_client()
    body, headers = signed_generic(deal_closed_event())
    reply = client.post("/webhooks/generic", data=body, headers=headers)
    assert reply.status_code == 503
    assert reply.get_json() == {
        "error": "could not store the events now; nothing was stored, send them again"
    }


def test_an_outbound_message_the_database_cannot_take_gets_a_soap_fault_not_the_ack(sqlite_url):
    client = dead_database_app(sqlite_url, **session_settings(FakeSalesforce())).test_client()
    body = outbound_message([("04l5g0000000001AAA", {"Id": "0065g0000000001AAA"})])
    reply = client.post(OUTBOUND_PATH, data=body, headers={"Content-Type": "text/xml"})
    assert reply.status_code == 503 and reply.mimetype == "text/xml"
    assert b"soapenv:Fault" in reply.data and b"<Ack>" not in reply.data
    assert b"send them again" in reply.data


# --- group commit ----------------------------------------------------------------------------


@pytest.mark.parametrize("writers", [1, 3])
def test_requests_that_wait_together_share_one_transaction(store, clock, monkeypatch, writers):
    """While the write lock is held elsewhere, 20 requests come in: as many as the inbox has
    writers start a transaction each and wait for the lock; the others queue, and are then stored
    together, in at most one more transaction per writer, not one each."""
    began, commits = count_inbox_transactions(monkeypatch)
    group = inbox.Inbox(store, writers=writers)
    results: dict[int, list[inbox.Accepted]] = {}
    with store.session() as holder:
        hold_the_write_lock(holder, store)
        threads = [
            threading.Thread(target=lambda n=n: results.__setitem__(n, _accept(group, n, clock)))
            for n in range(20)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # every request is waiting now: the writers for the lock, the others for them
        assert not results
        assert len(began) == writers
    for thread in threads:
        thread.join()
    if writers == 1:
        assert len(commits) == 2  # the first request's, everyone else's
    else:
        assert writers < len(commits) <= 2 * writers
    assert sorted(results) == list(range(20))
    assert set(stored(store, "sandbox")) == {f"key-{n}" for n in range(20)}


def count_inbox_transactions(monkeypatch: Any) -> tuple[list[int], list[int]]:
    """The inbox's write transactions: one entry each as it begins, and once committed."""
    began: list[int] = []
    committed: list[int] = []
    real = direct.transaction

    @contextmanager
    def counted(store: Store, held: direct.Held) -> Iterator[direct.Transaction]:
        began.append(1)
        with real(store, held) as transaction:
            yield transaction
        committed.append(1)

    monkeypatch.setattr(direct, "transaction", counted)
    return began, committed


def hold_the_write_lock(session: Any, store: Store) -> None:
    """Make ``session``'s transaction hold what an event insert needs until it ends."""
    if store.is_sqlite:
        session.execute(text("SELECT 1"))  # the transaction starts: BEGIN IMMEDIATE takes the lock
    else:
        session.execute(text("LOCK TABLE events IN SHARE ROW EXCLUSIVE MODE"))


def _accept(group: inbox.Inbox, n: int, clock: Any) -> list[inbox.Accepted]:
    item = inbox.Incoming("sandbox", "acct", f"key-{n}", "deal.closed", {"n": n})
    return group.accept([item], clock())


def test_a_redelivery_inside_one_shared_transaction_is_recognised(store, clock, monkeypatch):
    """Two requests carrying the same event, stored in one transaction: one new, one duplicate."""
    first = inbox.Incoming("sandbox", "acct", "same", "deal.closed", {"n": 1})
    group = inbox.Inbox(store, writers=1)
    _, commits = count_inbox_transactions(monkeypatch)
    with store.session() as holder:  # the first request waits for the lock, the other two behind it
        hold_the_write_lock(holder, store)
        outcomes: list[list[inbox.Accepted]] = []
        threads = [
            threading.Thread(target=lambda: outcomes.append(group.accept([first], clock()))) for _ in range(3)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join()
    assert len(commits) == 2  # the first request's, the other two's together
    flat = sorted((a.duplicate, a.event_id) for found in outcomes for a in found)
    assert [duplicate for duplicate, _ in flat] == [False, True, True]
    assert len({event_id for _, event_id in flat}) == 1
    assert rows(store) == 1
    assert json.dumps(stored(store, "sandbox")) == json.dumps({"same": flat[0][1]})


def test_the_inbox_write_stores_what_the_store_reads_back_in_groups_larger_than_one_statement(
    store, clock, monkeypatch
):
    """The inbox binds its rows for the driver itself: each stored event reads back through the ORM
    as written (payload, aware UTC times, pending and available from its arrival), across more
    rows than one statement takes, with a redelivery inside the group and one stored before."""
    monkeypatch.setattr(direct.Transaction, "ROWS_PER_STATEMENT", {"sqlite": 100, "postgresql": 100})
    before = inbox.accept(
        store, [inbox.Incoming("hubspot", "1001", "k-7", "deal.creation", {"n": 7})], clock()
    )
    payload = {"text": "Zo\u00eb \u201cdeal\u201d", "nested": {"list": [1, 2.5, None, True]}, "big": 10**30}
    items = [
        inbox.Incoming("hubspot", "1001", f"k-{n}", "deal.propertyChange", {**payload, "n": n})
        for n in range(250)
    ]
    items.append(items[3])  # the same event twice in one delivery
    accepted = inbox.accept(store, items, clock())
    assert accepted[7] == inbox.Accepted(before[0].event_id, duplicate=True)
    assert accepted[250] == inbox.Accepted(accepted[3].event_id, duplicate=True)
    assert [a.duplicate for a in accepted].count(True) == 2
    with store.read() as session:
        found = {e.event_key: e for e in session.scalars(select(Event).where(Event.source == "hubspot"))}
    assert len(found) == 250
    # Every answer names its own row: in the statements that inserted all their rows, and in the
    # one that skipped k-7 (on SQLite, ids read off each statement, not returned by it).
    assert {n: accepted[n].event_id for n in range(250)} == {n: found[f"k-{n}"].id for n in range(250)}
    event = found["k-42"]
    assert event.id == accepted[42].event_id
    assert event.payload == {**payload, "n": 42}
    assert event.received_at == event.available_at == clock()
    assert event.received_at.tzinfo is not None
    assert (event.state, event.attempts, event.kind, event.account) == (
        "pending",
        0,
        "deal.propertyChange",
        "1001",
    )


def test_a_delivery_longer_than_one_statement_is_stored_whole_or_not_at_all(
    store, clock, poisoned, monkeypatch
):
    """A group of more rows than one statement takes is one transaction: a row the database refuses
    in the third statement leaves nothing of the first two behind."""
    monkeypatch.setattr(direct.Transaction, "ROWS_PER_STATEMENT", {"sqlite": 50, "postgresql": 50})
    items = [inbox.Incoming("hubspot", "1001", f"k-{n:03}", "deal.creation", {"n": n}) for n in range(120)]
    with pytest.raises(inbox.NotStored, match="poisoned event"):
        inbox.accept(
            store, [*items, inbox.Incoming("hubspot", "1001", "poison", "deal.creation", {})], clock()
        )
    assert rows(store) == 0
    accepted = inbox.accept(store, items, clock())
    assert not any(a.duplicate for a in accepted)
    assert set(stored(store, "hubspot")) == {item.event_key for item in items}


@pytest.mark.postgres
def test_a_delivery_after_the_database_dropped_the_inbox_connection_is_stored_not_refused(
    postgres_url, clock
):
    """The inbox keeps its connection between writes; when Postgres ends it (a restart, an admin),
    the next delivery is stored on a new connection instead of answered 503."""
    store = Store.from_url(postgres_url)
    _truncate_events(store)
    try:
        first = inbox.accept(store, [inbox.Incoming("sandbox", "acct", "before", "deal.closed", {})], clock())
        with Store.from_url(postgres_url).engine.connect() as admin:
            ended = admin.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
        assert ended and ended >= 1
        after = inbox.accept(store, [inbox.Incoming("sandbox", "acct", "after", "deal.closed", {})], clock())
        assert not after[0].duplicate and after[0].event_id != first[0].event_id
        assert set(stored(store, "sandbox")) == {"before", "after"}
    finally:
        store.dispose()


def _truncate_events(store: Store) -> None:
    with store.session() as session:
        session.execute(text("TRUNCATE events RESTART IDENTITY CASCADE"))


# --- served in turn (the server's front) -----------------------------------------------------


def in_turn(group: inbox.Inbox, clock: Any, keys: list[str]) -> tuple[list[Any], list[str]]:
    """Serve one request per key in turn, each storing its event through ``group``: what each got
    (its answers, or the exception it raised), and the order things happened in."""
    outcomes: list[Any] = [None] * len(keys)
    order: list[str] = []

    def request(n: int, key: str) -> Callable[[], None]:
        def run() -> None:
            order.append(f"before {n}")
            item = inbox.Incoming("sandbox", "acct", key, "deal.closed", {})
            try:
                outcomes[n] = group.accept([item], clock())
            except inbox.NotStored as exc:
                outcomes[n] = exc
            order.append(f"after {n}")

        return run

    inbox.serve_in_turn([request(n, key) for n, key in enumerate(keys)])
    return outcomes, order


def test_requests_served_in_turn_are_stored_in_one_transaction_each_with_its_own_answer(
    store, clock, monkeypatch
):
    began, commits = count_inbox_transactions(monkeypatch)
    keys = [f"key-{n}" for n in range(20)] + ["key-3"]  # the last one redelivers an event of the round
    outcomes, order = in_turn(inbox.Inbox(store), clock, keys)
    assert (len(began), len(commits)) == (1, 1)
    # Every request ran up to its store before any was stored, and on from there after.
    assert order == [f"before {n}" for n in range(21)] + [f"after {n}" for n in range(21)]
    ids = stored(store, "sandbox")
    assert [outcome[0].event_id for outcome in outcomes] == [ids[key] for key in keys]
    assert [n for n, outcome in enumerate(outcomes) if outcome[0].duplicate] == [20]  # the first is new
    assert rows(store) == 20


def test_requests_served_in_turn_take_as_many_transactions_as_their_items_need(store, clock, monkeypatch):
    _, commits = count_inbox_transactions(monkeypatch)
    outcomes, _ = in_turn(inbox.Inbox(store, group_items=3), clock, [f"key-{n}" for n in range(10)])
    assert len(commits) == 4  # 3 + 3 + 3 + 1 events
    assert all(not outcome[0].duplicate for outcome in outcomes)
    assert set(stored(store, "sandbox")) == {f"key-{n}" for n in range(10)}


def test_a_request_served_in_turn_whose_events_the_database_refuses_fails_alone(store, clock, poisoned):
    outcomes, _ = in_turn(inbox.Inbox(store), clock, ["key-1", "poison-2", "key-3", "key-4"])
    refused = outcomes.pop(1)
    assert isinstance(refused, inbox.NotStored) and "poisoned event" in str(refused)
    assert not refused.retry  # the database refused it: sending it again will not help
    assert all(not outcome[0].duplicate for outcome in outcomes)
    assert set(stored(store, "sandbox")) == {"key-1", "key-3", "key-4"}


def test_requests_served_in_turn_get_the_error_of_a_database_that_is_away(clock):
    away = Store.from_url("postgresql://offboard@127.0.0.1:9/offboard")
    outcomes, _ = in_turn(inbox.Inbox(away), clock, ["key-1", "key-2"])
    assert all(isinstance(outcome, inbox.NotStored) and outcome.retry for outcome in outcomes)


def test_a_request_served_in_turn_that_fails_is_logged_and_the_others_are_answered(
    store, clock, monkeypatch, caplog
):
    _, commits = count_inbox_transactions(monkeypatch)
    group = inbox.Inbox(store)
    answered: list[list[inbox.Accepted]] = []

    def stores(key: str) -> Callable[[], None]:
        item = inbox.Incoming("sandbox", "acct", key, "deal.closed", {})
        return lambda: answered.append(group.accept([item], clock()))

    def fails() -> None:
        raise RuntimeError("a bug in one request")

    with caplog.at_level("ERROR", logger="offboard.inbox"):
        inbox.serve_in_turn([stores("key-1"), fails, stores("key-2"), lambda: None])
    assert len(answered) == 2 and len(commits) == 1
    assert set(stored(store, "sandbox")) == {"key-1", "key-2"}
    assert "a request served in turn failed" in caplog.text and "a bug in one request" in caplog.text


def test_requests_served_in_turn_that_store_nothing_take_no_transaction(store, clock, monkeypatch):
    began, _ = count_inbox_transactions(monkeypatch)
    group = inbox.Inbox(store)
    done: list[int] = []
    inbox.serve_in_turn([lambda: done.append(len(group.accept([], clock()))), lambda: done.append(1)])
    assert done == [0, 1] and not began
