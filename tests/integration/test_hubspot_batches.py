"""Many actions' writes, and many events' deals, in HubSpot's batch calls: the HubSpot adapter's
batch capabilities through the real SDK against the strict fake HubSpot over HTTP."""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime, timedelta

from adapters.base import Write
from adapters.hubspot.batching import isolate, pack, rounds
from adapters.hubspot.errors import OutcomeUnknown
from adapters.hubspot.records import MARKER, token
from adapters.hubspot.setup import SURVEY_LINK, SURVEY_REF
from connector.errors import CrmError, CrmPermanent, CrmRateLimited
from connector.models import Invite, NoteSpec, PropertyUpdate, TaskSpec
from connector.settings import load_settings
from tests.support import adapter_fixtures
from tests.support.faults import Fault
from tests.support.hubspot import (
    FINANCE,
    MARKETING,
    OWNER,
    add_deal,
    fake_time_adapter,
    settings_overrides,
    stage_event,
)

# the shared HubSpot fake, served, and an adapter on it
fake = adapter_fixtures.fake
url = adapter_fixtures.url
adapter = adapter_fixtures.adapter

CREATE = "POST /crm/v3/objects/tasks/batch/create"
NOTES = "POST /crm/v3/objects/notes/batch/create"
TASK_SEARCH = "POST /crm/v3/objects/tasks/search"


def key(n: int | str) -> str:
    return hashlib.sha256(f"action-{n}".encode()).hexdigest()


def deals(fake, count: int) -> list[dict[str, str]]:
    owners = (OWNER, FINANCE, MARKETING)
    return [
        add_deal(
            fake,
            name=f"Project {n}",
            contact=(f"c{n}@client{n}.example", "Cy", f"N{n}"),
            owner=owners[n % 3],
        )
        for n in range(count)
    ]


def tasks(ids, count: int = 3, **fields) -> list[TaskSpec]:
    return [
        TaskSpec(
            step_id=f"step-{n}",
            title=f"Task {n} for {ids['deal']}",
            body="Do it",
            due_at=datetime(2026, 12, 1, 9, tzinfo=UTC) + timedelta(days=n),
            owner_id=OWNER,
            deal_id=ids["deal"],
            company_id=ids["company"],
            contact_id=ids["contact"],
        ).model_copy(update=fields)
        for n in range(count)
    ]


def invite(ids) -> Invite:
    link = f"https://offboard.example/s/{ids['deal']}"
    return Invite(step_id="exit-nps", kind="nps", deal_id=ids["deal"], contact_id=ids["contact"], link=link)


def written_by(fake, object_type: str, body: str, k: str) -> dict[int, str]:
    """The records an action wrote, by position, from their markers."""
    found = {}
    for record in fake.records(object_type):
        for tok, position in MARKER.findall(record.properties.get(body, "")):
            if tok == token(k):
                found[int(position)] = record.id
    return found


def searches(fake) -> int:
    return sum(n for route, n in fake.calls.items() if route.endswith("/search"))


# --- (a) a record HubSpot refuses fails only its own action ---------------------------------------


def test_a_task_hubspot_refuses_fails_only_its_action(adapter, fake):
    portal = deals(fake, 8)
    writes = [Write(key(n), tasks(ids)) for n, ids in enumerate(portal)]
    bad = 5
    writes[bad] = Write(key(bad), tasks(portal[bad], owner_id="999"))  # no such owner: HubSpot refuses
    results = adapter.create_tasks_many(writes)
    assert isinstance(results[bad], CrmPermanent) and results[bad].status == 400
    assert "999 was not one of the allowed options" in str(results[bad])
    assert written_by(fake, "tasks", "hs_task_body", key(bad)) == {}  # its action wrote nothing
    for n, result in enumerate(results):
        if n != bad:
            found = written_by(fake, "tasks", "hs_task_body", key(n))
            assert result == [found[0], found[1], found[2]]  # the ids of its own tasks, in order
            titles = [fake.objects["tasks"][i].properties["hs_task_subject"] for i in result]
            assert titles == [f"Task {p} for {portal[n]['deal']}" for p in range(3)]
    assert len(fake.records("tasks")) == 7 * 3


def test_a_note_whose_deal_is_gone_fails_alone(adapter, fake):
    portal = deals(fake, 4)
    fake.objects["deals"].pop(portal[2]["deal"])  # deleted in HubSpot since
    notes = [NoteSpec(step_id="n", body=f"Note {n}", deal_id=ids["deal"]) for n, ids in enumerate(portal)]
    results = adapter.add_notes_many([Write(key(n), note) for n, note in enumerate(notes)])
    assert isinstance(results[2], CrmPermanent) and "does not exist" in str(results[2])
    for n in (0, 1, 3):
        assert fake.objects["notes"][results[n]].properties["hs_note_body"].startswith(f"Note {n}")
    assert len(fake.records("notes")) == 3


def test_property_updates_fail_only_for_a_bad_property_or_a_deleted_record(adapter, fake):
    portal = deals(fake, 5)
    fake.objects["deals"].pop(portal[3]["deal"])
    updates = [
        PropertyUpdate(
            step_id="p", object="deal", object_id=ids["deal"], properties={"dealname": f"Done {n}"}
        )
        for n, ids in enumerate(portal)
    ]
    updates[1] = updates[1].model_copy(update={"properties": {"no_such_property": "x"}})
    updates.append(
        PropertyUpdate(step_id="p", object="contact", object_id=portal[0]["contact"], properties={})
    )
    results = adapter.update_properties_many([Write(key(n), u) for n, u in enumerate(updates)])
    assert isinstance(results[1], CrmPermanent) and "offboard hubspot setup" in str(results[1])
    assert isinstance(results[3], CrmPermanent) and results[3].status == 404
    assert [results[n] for n in (0, 2, 4, 5)] == [None] * 4
    names = {n: fake.objects["deals"][portal[n]["deal"]].properties["dealname"] for n in (0, 1, 2, 4)}
    assert names == {0: "Done 0", 1: "Project 1", 2: "Done 2", 4: "Done 4"}


def test_two_updates_of_one_record_go_in_order_in_two_calls(adapter, fake):
    (ids,) = deals(fake, 1)
    first, second = (
        PropertyUpdate(step_id="p", object="deal", object_id=ids["deal"], properties={"dealname": name})
        for name in ("First", "Second")
    )
    assert adapter.update_properties_many([Write(key(1), first), Write(key(2), second)]) == [None, None]
    assert fake.objects["deals"][ids["deal"]].properties["dealname"] == "Second"
    assert fake.calls["POST /crm/v3/objects/deals/batch/update"] == 2  # HubSpot refuses an id twice


def test_an_error_that_stops_the_call_is_every_actions(adapter, fake):
    portal = deals(fake, 3)
    fake.inject(429, times=10, route=CREATE)
    results = adapter.create_tasks_many([Write(key(n), tasks(ids)) for n, ids in enumerate(portal)])
    assert all(isinstance(r, CrmRateLimited) for r in results)
    assert fake.calls[CREATE] == 4  # waited out 3 times, then handed back: no splitting for a 429
    assert fake.records("tasks") == []


# --- (b) a lost reply inside a batch writes nothing twice -----------------------------------------


def test_after_a_lost_reply_the_retry_finds_what_was_written_and_writes_only_the_rest(url, fake, clock):
    portal = deals(fake, 4)
    fake.search_lag = timedelta(seconds=5)  # HubSpot's index trails its writes
    first = fake_time_adapter(load_settings(**settings_overrides(url)), clock)
    lost = [Write(key(n), tasks(portal[n])) for n in range(3)]
    fake.inject(Fault.LOST_REPLY, route=CREATE)
    results = first.create_tasks_many(lost)
    assert all(isinstance(r, OutcomeUnknown) for r in results)
    assert len(fake.records("tasks")) == 9  # HubSpot did create them
    # As if the attempt that wrote key(2) had been cut short after its first task.
    fake.objects["tasks"].pop(written_by(fake, "tasks", "hs_task_body", key(2))[1])
    # The retry, in another process, is told which attempts' outcomes are unknown.
    since = clock.now
    retry = fake_time_adapter(load_settings(**settings_overrides(url)), clock)
    again = [Write(w.key, w.item, unsure_since=since) for w in lost] + [Write(key(3), tasks(portal[3]))]
    results = retry.create_tasks_many(again)
    assert clock.now >= since + timedelta(seconds=20)  # it waited for the index before looking
    assert fake.calls[TASK_SEARCH] == 1  # one search for the three unsure actions
    assert fake.calls[CREATE] == 2  # the retry's one call: key(2)'s missing task and key(3)'s tasks
    for n, result in enumerate(results):
        found = written_by(fake, "tasks", "hs_task_body", key(n))
        assert result == [found[0], found[1], found[2]]
    markers = Counter(MARKER.findall(t.properties["hs_task_body"])[0] for t in fake.records("tasks"))
    assert len(markers) == 12 and set(markers.values()) == {1}  # every task once


def test_in_the_same_process_a_lost_reply_is_remembered_for_the_quick_retry(adapter, fake, clock):
    portal = deals(fake, 2)
    writes = [
        Write(key(n), NoteSpec(step_id="n", body=f"Note {n}", deal_id=ids["deal"]))
        for n, ids in enumerate(portal)
    ]
    fake.inject(Fault.LOST_REPLY, route=NOTES)
    assert all(isinstance(r, OutcomeUnknown) for r in adapter.add_notes_many(writes))
    results = adapter.add_notes_many(writes)  # not told: the adapter knows it lost the answer
    assert sorted(results) == sorted(r.id for r in fake.records("notes"))
    assert len(fake.records("notes")) == 2
    assert fake.calls["POST /crm/v3/objects/notes/search"] == 1


def test_a_lost_invite_batch_is_not_sent_twice(adapter, fake, clock):
    portal = deals(fake, 3)
    writes = [Write(key(n), invite(ids)) for n, ids in enumerate(portal)]
    fake.inject(Fault.LOST_REPLY, route=NOTES)
    assert all(isinstance(r, OutcomeUnknown) for r in adapter.send_invites_many(writes))
    told = [Write(w.key, w.item, unsure_since=clock.now) for w in writes]
    results = adapter.send_invites_many(told)
    assert sorted(results) == sorted(r.id for r in fake.records("notes")) and len(results) == 3
    assert fake.calls["POST /crm/v3/objects/contacts/batch/update"] == 1  # the retry found the notes
    assert fake.objects["contacts"][portal[0]["contact"]].properties[SURVEY_REF] == token(key(0))


def test_an_invite_to_a_deleted_contact_fails_alone(adapter, fake):
    portal = deals(fake, 3)
    fake.objects["contacts"].pop(portal[1]["contact"])
    results = adapter.send_invites_many([Write(key(n), invite(ids)) for n, ids in enumerate(portal)])
    assert isinstance(results[1], CrmPermanent) and results[1].status == 404
    assert len(fake.records("notes")) == 2 and {results[0], results[2]} == {
        r.id for r in fake.records("notes")
    }
    assert fake.objects["contacts"][portal[2]["contact"]].properties[SURVEY_REF] == token(key(2))


# --- (c) no marker search before a first write ---------------------------------------------------


def test_a_fresh_burst_writes_without_searching(adapter, fake):
    portal = deals(fake, 20)
    task_results = adapter.create_tasks_many(
        [Write(key(f"t{n}"), tasks(ids)) for n, ids in enumerate(portal)]
    )
    notes = [
        Write(key(f"n{n}"), NoteSpec(step_id="n", body="Done", deal_id=ids["deal"]))
        for n, ids in enumerate(portal)
    ]
    note_results = adapter.add_notes_many(notes)
    invite_results = adapter.send_invites_many(
        [Write(key(f"i{n}"), invite(ids)) for n, ids in enumerate(portal)]
    )
    single = adapter.create_tasks(tasks(portal[0], 1), key("single"))
    assert not any(isinstance(r, CrmError) for r in [*task_results, *note_results, *invite_results])
    assert len(single) == 1 and len(fake.records("tasks")) == 61
    assert searches(fake) == 0
    assert fake.objects["contacts"][portal[7]["contact"]].properties[SURVEY_LINK] == invite(portal[7]).link


# --- (d) many events' deals read together -------------------------------------------------------------


def test_interpret_many_reads_150_deals_in_a_handful_of_calls_and_means_what_interpret_means(
    url, fake, clock
):
    portal = deals(fake, 150)
    gone = portal[40]["deal"]
    events = [
        ("deal.propertyChange", stage_event(ids["deal"], "closedwon", event_id=n, at=clock.now))
        for n, ids in enumerate(portal)
    ]
    events.append(("contact.creation", {"objectId": 5, "portalId": 62515}))
    events.append(("deal.propertyChange", stage_event(portal[1]["deal"], "closedwon", portal_id=1)))
    fake.objects["deals"].pop(gone)
    many = fake_time_adapter(load_settings(**settings_overrides(url)), clock)
    results = many.interpret_many(events)
    calls = sum(fake.calls.values())
    assert calls <= 16, fake.calls  # not 4 per deal
    assert fake.calls["POST /crm/v3/objects/deals/batch/read"] == 2
    assert fake.calls["POST /crm/v4/associations/deals/companies/batch/read"] == 2
    assert fake.calls["POST /crm/v4/associations/deals/contacts/batch/read"] == 2
    assert fake.calls["GET /crm/v3/owners/{id}"] == 3  # each owner once
    single = fake_time_adapter(load_settings(**settings_overrides(url)), clock)
    for (kind, payload), result in zip(events, results, strict=True):
        try:
            expected = single.interpret(kind, payload)
        except CrmError as exc:
            assert type(result) is type(exc) and result.status == exc.status, (payload, result, exc)
            continue
        assert result == expected
    assert isinstance(results[40], CrmPermanent) and results[40].status == 404
    assert (
        results[0].deal.contacts[0].email == "c0@client0.example"
        and results[0].deal.company.name == "Acme Corp"
    )


def test_interpret_many_tells_closings_reopenings_and_stale_events_apart(adapter, fake, clock):
    closed, reopened, moved_on = deals(fake, 3)
    clock.advance(minutes=5)
    fake.set_property("deals", reopened["deal"], "dealstage", "contractsent")
    fake.set_property("deals", moved_on["deal"], "dealstage", "contractsent")
    events = [
        ("deal.propertyChange", stage_event(closed["deal"], "closedwon", at=clock.now)),
        ("deal.propertyChange", stage_event(reopened["deal"], "contractsent", at=clock.now)),
        (
            "deal.propertyChange",
            stage_event(moved_on["deal"], "closedwon", at=clock.now - timedelta(minutes=5)),
        ),
        ("deal.propertyChange", stage_event(closed["deal"], "no-such-stage")),
    ]
    bare = fake.add_record(
        "deals", {"dealname": "No one yet", "pipeline": "default", "dealstage": "closedlost"}
    )
    events.append(("deal.propertyChange", stage_event(bare, "closedlost", at=clock.now)))
    first, second, third, fourth, fifth = adapter.interpret_many(events)
    assert fake.calls["POST /crm/v3/objects/deals/batch/read"] == 1  # the closings read together
    assert (fifth.deal.outcome, fifth.deal.company, fifth.deal.contacts) == ("lost", None, ())
    assert (first.change, first.deal.outcome) == ("closed", "won")
    assert (second.change, second.deal.id) == ("reopened", reopened["deal"])
    assert third is None  # closed, then re-opened before we looked
    assert isinstance(fourth, CrmPermanent) and "none of portal" in str(fourth)


def test_an_owner_is_read_once_per_few_minutes(adapter, fake, clock):
    (ids,) = deals(fake, 1)
    adapter.fetch_deal(ids["deal"])
    fake.owners[OWNER]["firstName"] = "Samantha"
    assert adapter.fetch_deal(ids["deal"]).owner.name == "Sam Rivera"  # kept
    assert fake.calls["GET /crm/v3/owners/{id}"] == 1
    clock.advance(minutes=6)
    assert adapter.fetch_deal(ids["deal"]).owner.name == "Samantha Rivera"  # read again
    assert fake.calls["GET /crm/v3/owners/{id}"] == 2


# --- (e) calls per deal ---------------------------------------------------------------------------


def test_a_hundred_deals_writes_cost_a_few_calls_in_all(adapter, fake):
    portal = deals(fake, 100)
    assert adapter.account  # read once per adapter, as on any first call
    before = sum(fake.calls.values())
    task_results = adapter.create_tasks_many(
        [Write(key(f"t{n}"), tasks(ids)) for n, ids in enumerate(portal)]
    )
    note_results = adapter.add_notes_many(
        [
            Write(key(f"n{n}"), NoteSpec(step_id="n", body="Hand-over", deal_id=ids["deal"]))
            for n, ids in enumerate(portal)
        ]
    )
    invite_results = adapter.send_invites_many(
        [Write(key(f"i{n}"), invite(ids)) for n, ids in enumerate(portal)]
    )
    updates = [
        Write(
            key(f"p{n}"),
            PropertyUpdate(
                step_id="p", object="deal", object_id=ids["deal"], properties={"dealname": "Offboarded"}
            ),
        )
        for n, ids in enumerate(portal)
    ]
    property_results = adapter.update_properties_many(updates)
    results = [*task_results, *note_results, *invite_results, *property_results]
    assert not any(isinstance(r, CrmError) for r in results)
    calls = sum(fake.calls.values()) - before
    # 300 tasks in 4 calls (33 actions' tasks each: an action's tasks are never split), 100 notes
    # in 1, the invites' contacts and notes in 2, the deals in 1.
    assert fake.calls[CREATE] == 4
    assert calls == 8, fake.calls
    assert calls / len(portal) <= 0.08
    assert len(fake.records("tasks")) == 300 and len(fake.records("notes")) == 200


# --- packing and isolating -----------------------------------------------------------------------


def test_pack_keeps_each_item_whole_and_under_the_limit():
    assert pack([3, 3, 3, 5, 1], size=lambda n: n, limit=6) == [[3, 3], [3], [5, 1]]
    assert pack([150, 2], size=lambda n: n, limit=100) == [[150], [2]]


def test_isolate_splits_until_the_refused_items_are_alone():
    calls = []

    def call(items):
        calls.append(list(items))
        if "bad" in items:
            raise CrmPermanent("refused", status=400)
        return {item: "ok" for item in items}

    items = ["a", "b", "c", "bad", "e", "f", "g", "h"]
    results = isolate(call, items, key=lambda item: item)
    assert isinstance(results.pop("bad"), CrmPermanent)
    assert results == dict.fromkeys("abcefgh", "ok")
    assert len(calls) == 7  # 1 + 2 + 2 + 2, not one per item


def test_rounds_put_each_record_once_per_call_in_order():
    assert rounds(["a1", "b1", "a2", "a3", "c1"], of=lambda s: s[0]) == [["a1", "b1", "c1"], ["a2"], ["a3"]]


def test_isolate_sets_aside_at_once_what_the_refusal_names():
    calls = []

    def call(items):
        calls.append(list(items))
        if "dup" in items:
            raise CrmPermanent("Duplicate IDs found in batch input: [dup]", status=400)
        return {item: "ok" for item in items}

    def named(error, items):
        return [item for item in items if f"[{item}]" in str(error)]

    results = isolate(call, ["a", "dup", "b", "c"], key=lambda item: item, named=named)
    assert isinstance(results.pop("dup"), CrmPermanent) and results == dict.fromkeys("abc", "ok")
    assert calls == [["a", "dup", "b", "c"], ["a", "b", "c"]]


def test_several_actions_of_a_worker_long_dead_are_each_looked_for_before_writing(url, fake, clock):
    """A dead worker's lease ran out long before the next claim: every one of its actions in the
    retry's batch is still searched for, not only the last one told."""
    portal = deals(fake, 3)
    first = fake_time_adapter(load_settings(**settings_overrides(url)), clock)
    lost = [Write(key(n), tasks(portal[n])) for n in range(3)]
    fake.inject(Fault.LOST_REPLY, route=CREATE)
    assert all(isinstance(r, OutcomeUnknown) for r in first.create_tasks_many(lost))
    since = clock.now
    clock.advance(minutes=5)  # the lease ran out; the index lag is long past
    retry = fake_time_adapter(load_settings(**settings_overrides(url)), clock)
    results = retry.create_tasks_many([Write(w.key, w.item, unsure_since=since) for w in lost])
    assert fake.calls[CREATE] == 1  # only the lost attempt's call: nothing written again
    assert fake.calls[TASK_SEARCH] == 1
    for n, result in enumerate(results):
        found = written_by(fake, "tasks", "hs_task_body", key(n))
        assert result == [found[0], found[1], found[2]]
    markers = Counter(MARKER.findall(t.properties["hs_task_body"])[0] for t in fake.records("tasks"))
    assert len(markers) == 9 and set(markers.values()) == {1}
