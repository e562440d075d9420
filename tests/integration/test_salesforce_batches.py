"""The Salesforce adapter's batch calls against the strict fake org, through simple-salesforce.

The actions of many deals share sObject Collections calls of 200 (``allOrNone: false``): a
record the org refuses fails only its own action; a lost reply writes nothing twice; no
marker query precedes a first write; the events of many Opportunities are read with SOQL
``IN`` queries and mean what ``interpret`` says of each.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.base import Write
from connector.errors import CrmError, CrmPermanent, OutcomeUnknown, PayloadInvalid
from connector.models import DealChange, Invite, NoteSpec, PropertyUpdate, TaskSpec
from tests.support import adapter_fixtures
from tests.support.faults import Fault
from tests.support.salesforce import FakeSalesforce, Seeded

# the shared fake org, its HTTP mock and an adapter on it
org = adapter_fixtures.org
http = adapter_fixtures.http
sf = adapter_fixtures.sf
adapter_for = adapter_fixtures.adapter_for

EARLIER = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # when an attempt whose outcome is unknown ended


def deals(org: FakeSalesforce, count: int) -> list[Seeded]:
    return [
        org.add_opportunity(
            f"Deal {n}", account=f"Client {n}", contacts=((f"Pat{n}", "Lee", f"pat{n}@c.example"),)
        )
        for n in range(count)
    ]


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def task(seed: Seeded, n: int = 0, **fields: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "step_id": f"step-{n}",
        "title": f"Task {n}",
        "body": "Do the thing.",
        "due_at": datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        "owner_id": seed.owner,
        "priority": "normal",
        "type": "todo",
        "deal_id": seed.opportunity,
        "company_id": seed.account,
        "contact_id": seed.contacts[0],
    }
    return TaskSpec(**(values | fields))


def checklists(seeds: list[Seeded], per_deal: int = 3, unsure: set[int] = frozenset()) -> list[Write[Any]]:  # type: ignore[assignment]
    return [
        Write(key(f"tasks-{n}"), [task(s, t) for t in range(per_deal)], EARLIER if n in unsure else None)
        for n, s in enumerate(seeds)
    ]


def note(seed: Seeded, **fields: Any) -> NoteSpec:
    values = {
        "step_id": "handover",
        "body": "Handed over.",
        "deal_id": seed.opportunity,
        "company_id": seed.account,
        "contact_id": seed.contacts[0],
    }
    return NoteSpec(**(values | fields))


def invite(seed: Seeded, email: str | None = "pat@c.example") -> Invite:
    return Invite(
        step_id="exit-nps",
        kind="nps",
        deal_id=seed.opportunity,
        contact_id=seed.contacts[0],
        email=email,
        link="https://offboard.example/s/abc",
    )


def tasks_on(org: FakeSalesforce, seed: Seeded) -> list[dict[str, Any]]:
    return org.records("Task", WhatId=seed.opportunity)


# --- (a) a record refused inside a collection fails only its own action -----------------


def test_a_refused_task_fails_only_its_action_whose_other_tasks_are_removed(org, sf):
    seeds = deals(org, 5)
    writes = checklists(seeds, per_deal=2)
    bad = writes[3].item[1].model_copy(update={"owner_id": "0055g0000000999AAA"})  # no such user
    writes[3] = Write(writes[3].key, [writes[3].item[0], bad])
    results = sf.create_tasks_many(writes)
    refused = results[3]
    assert isinstance(refused, CrmPermanent)
    (error,) = refused.detail  # type: ignore[misc]
    assert (error["statusCode"], error["fields"]) == ("INVALID_CROSS_REFERENCE_KEY", ["OwnerId"])
    assert tasks_on(org, seeds[3]) == []  # its first Task was written, then removed again
    for n in (0, 1, 2, 4):
        assert sorted(results[n]) == sorted(t["Id"] for t in tasks_on(org, seeds[n]))  # type: ignore[arg-type]
        assert len(results[n]) == 2  # type: ignore[arg-type]
    assert org.count("POST", "composite/sobjects") == 1
    assert org.count("DELETE", "composite/sobjects") == 1


def test_a_half_written_action_that_cannot_be_undone_is_unsure_and_its_retry_writes_only_the_rest(org, sf):
    (seed,) = deals(org, 1)
    good, bad = task(seed, 0), task(seed, 1, owner_id="0055g0000000999AAA")
    org.inject(Fault.TRANSIENT, match="DELETE composite/sobjects")  # the undo fails
    (result,) = sf.create_tasks_many([Write(key("half"), [good, bad])])
    assert isinstance(result, OutcomeUnknown) and "INVALID_CROSS_REFERENCE_KEY" in str(result)
    (left,) = tasks_on(org, seed)
    fixed = task(seed, 1)  # an operator fixed the owner; the action is retried
    (ids,) = sf.create_tasks_many([Write(key("half"), [good, fixed])])
    assert ids[0] == left["Id"] and len(tasks_on(org, seed)) == 2  # type: ignore[index]
    assert len(org.queries) == 1  # this process knew to look


def test_a_refused_link_fails_only_its_note(org, sf):
    seeds = deals(org, 4)
    writes = [Write(key(f"note-{n}"), note(s)) for n, s in enumerate(seeds)]
    writes[1] = Write(writes[1].key, note(seeds[1], contact_id="0035g0000000999AAA"))  # no such contact
    results = sf.add_notes_many(writes)
    assert isinstance(results[1], CrmPermanent) and "INVALID_CROSS_REFERENCE_KEY" in str(results[1])
    assert len(org.db["ContentNote"]) == 3 and results[1] not in org.db["ContentNote"]
    for n in (0, 2, 3):
        linked = {
            r["LinkedEntityId"] for r in org.records("ContentDocumentLink", ContentDocumentId=results[n])
        }
        assert linked == {seeds[n].opportunity, seeds[n].account, seeds[n].contacts[0]}
    assert org.count("POST", "composite/sobjects") == 2  # the notes, then their links
    assert org.count("POST", "composite") == 0


def test_a_refused_field_update_fails_only_its_action_and_one_record_is_never_twice_in_a_call(org, sf):
    seeds = deals(org, 3)
    writes = [
        Write(
            key("p0"),
            PropertyUpdate(
                step_id="s",
                object="deal",
                object_id=seeds[0].opportunity,
                properties={"offboarding_status": "in progress"},
            ),
        ),
        Write(
            key("p1"),
            PropertyUpdate(
                step_id="s", object="company", object_id=seeds[1].account, properties={"tier": "gold"}
            ),
        ),  # the org has no Tier__c
        Write(
            key("p2"),
            PropertyUpdate(
                step_id="s",
                object="deal",
                object_id=seeds[2].opportunity,
                properties={"offboarding_status": "in progress"},
            ),
        ),
        Write(
            key("p3"),
            PropertyUpdate(
                step_id="s",
                object="deal",
                object_id=seeds[0].opportunity,
                properties={"offboarding_status": "complete"},
            ),
        ),
        Write(
            key("p4"),
            PropertyUpdate(
                step_id="s",
                object="deal",
                object_id="006' OR 1=1",
                properties={"offboarding_status": "complete"},
            ),
        ),
    ]
    results = sf.update_properties_many(writes)
    assert results[0] is None and results[2] is None and results[3] is None
    assert isinstance(results[1], CrmPermanent) and results[1].detail[0]["statusCode"] == "INVALID_FIELD"  # type: ignore[index]
    assert isinstance(results[4], CrmPermanent)  # not an id: never sent
    assert org.db["Opportunity"][seeds[0].opportunity]["Offboarding_Status__c"] == "complete"  # in order
    assert org.db["Opportunity"][seeds[2].opportunity]["Offboarding_Status__c"] == "in progress"
    assert org.count("PATCH", "composite/sobjects") == 2  # the second update of deal 0 waits for its own call


def test_an_invite_without_an_email_fails_alone_and_the_others_are_logged_together(org, sf):
    seeds = deals(org, 4)
    writes = [Write(key(f"inv-{n}"), invite(s)) for n, s in enumerate(seeds)]
    writes[2] = Write(writes[2].key, invite(seeds[2], email=None))
    results = sf.send_invites_many(writes)
    assert isinstance(results[2], CrmPermanent) and "no email" in str(results[2])
    assert len(org.emails) == 3
    logged = org.records("Task", Status="Completed")
    assert sorted(r["Id"] for r in logged) == sorted(results[n] for n in (0, 1, 3))  # type: ignore[type-var]
    assert org.count("POST", "composite/sobjects") == 1  # the three log Tasks in one call


# --- (b) a lost reply inside a batch writes nothing twice ----------------------------


def test_a_lost_reply_on_a_batch_of_tasks_writes_nothing_twice_in_this_process_or_another(
    org, http, sf, tmp_path
):
    seeds = deals(org, 30)
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")
    with pytest.raises(OutcomeUnknown):
        sf.create_tasks_many(checklists(seeds))
    assert len(org.records("Task")) == 90  # the org did the work; the answer was lost
    again = sf.create_tasks_many(checklists(seeds))  # this process knows its attempt was unsure
    assert sorted(i for ids in again for i in ids) == sorted(org.db["Task"])  # type: ignore[union-attr]
    other = adapter_for(org, tmp_path).create_tasks_many(checklists(seeds, unsure=set(range(30))))
    assert other == again
    assert len(org.records("Task")) == 90
    assert org.count("POST", "composite/sobjects") == 1


def test_a_lost_reply_on_one_call_of_a_batch_fails_only_the_actions_in_that_call(org, http, sf, tmp_path):
    seeds = deals(org, 70)  # 210 Tasks: 66 checklists (198 Tasks) in the first call, 4 in the second
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")
    results = sf.create_tasks_many(checklists(seeds))
    assert all(isinstance(r, OutcomeUnknown) for r in results[:66])
    assert all(isinstance(r, list) and len(r) == 3 for r in results[66:])
    assert len(org.records("Task")) == 210
    queries = len(org.queries)
    # The core retries the 66 whose outcome is unknown, marked so, in another process.
    retried = adapter_for(org, tmp_path).create_tasks_many(checklists(seeds[:66], unsure=set(range(66))))
    assert len(org.records("Task")) == 210 and org.count("POST", "composite/sobjects") == 2
    assert len(org.queries) == queries + 1  # the 66 unsure checklists looked up in one IN query
    assert "WhatId IN (" in org.queries[-1]
    for seed, ids in zip(seeds[:66], retried, strict=True):
        assert sorted(ids) == sorted(t["Id"] for t in tasks_on(org, seed))  # type: ignore[arg-type]


def test_a_lost_reply_on_the_notes_leaves_no_second_note_and_links_them_on_the_retry(org, http, sf, tmp_path):
    seeds = deals(org, 10)
    writes = [Write(key(f"note-{n}"), note(s)) for n, s in enumerate(seeds)]
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")  # the notes' call
    with pytest.raises(OutcomeUnknown):
        sf.add_notes_many(writes)
    assert len(org.db["ContentNote"]) == 10 and org.records("ContentDocumentLink") == []
    unsure = [Write(w.key, w.item, EARLIER) for w in writes]
    results = adapter_for(org, tmp_path).add_notes_many(unsure)
    assert sorted(results) == sorted(org.db["ContentNote"])  # type: ignore[type-var]
    assert len(org.records("ContentDocumentLink")) == 30


def test_a_lost_reply_on_the_send_logs_sends_no_email_twice(org, http, sf, tmp_path):
    seeds = deals(org, 5)
    writes = [Write(key(f"inv-{n}"), invite(s)) for n, s in enumerate(seeds)]
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")
    results = sf.send_invites_many(writes)
    assert all(isinstance(r, OutcomeUnknown) for r in results)
    assert len(org.emails) == 5 and len(org.records("Task")) == 5
    again = sf.send_invites_many(writes)
    assert sorted(again) == sorted(org.db["Task"])  # type: ignore[type-var]
    unsure = [Write(w.key, w.item, EARLIER) for w in writes]
    assert adapter_for(org, tmp_path).send_invites_many(unsure) == again
    assert len(org.emails) == 5 and len(org.records("Task")) == 5


@pytest.mark.parametrize(
    "org", [{"task_marker_field": "Offboard_Key__c"}], indirect=True, ids=["marker-field"]
)
def test_with_an_external_id_field_a_lost_batch_is_upserted_again_without_a_query(org, http, tmp_path):
    sf = adapter_for(org, tmp_path, SALESFORCE_TASK_MARKER_FIELD="Offboard_Key__c")
    seeds = deals(org, 10)
    org.inject(Fault.LOST_REPLY, match="PATCH composite/sobjects/Task/Offboard_Key__c")
    with pytest.raises(OutcomeUnknown):
        sf.create_tasks_many(checklists(seeds))
    results = adapter_for(org, tmp_path, SALESFORCE_TASK_MARKER_FIELD="Offboard_Key__c").create_tasks_many(
        checklists(seeds, unsure=set(range(10)))
    )
    assert sorted(i for ids in results for i in ids) == sorted(org.db["Task"])  # type: ignore[union-attr]
    assert len(org.records("Task")) == 30 and org.queries == []


# --- (c) no marker query precedes a first write -------------------------------------------


def test_first_writes_make_no_marker_query(org, sf):
    seeds = deals(org, 20)
    sf.create_tasks_many(checklists(seeds))
    sf.add_notes_many([Write(key(f"note-{n}"), note(s)) for n, s in enumerate(seeds)])
    sf.send_invites_many([Write(key(f"inv-{n}"), invite(s)) for n, s in enumerate(seeds)])
    sf.create_tasks(  # the single-action path keeps the same rule
        [task(seeds[0], 9)], key("one more")
    )
    sf.add_note(note(seeds[1]), key("one more note"))
    assert org.queries == []
    assert len(org.records("Task")) == 20 * 3 + 20 + 1
    assert len(org.db["ContentNote"]) == 21


def test_only_the_unsure_writes_of_a_batch_are_looked_up_in_one_query(org, sf):
    seeds = deals(org, 20)
    sf.create_tasks_many(checklists(seeds, unsure={4, 11}))
    (query,) = org.queries
    assert "WhatId IN (" in query
    assert seeds[4].opportunity in query and seeds[11].opportunity in query
    assert seeds[0].opportunity not in query
    assert len(org.records("Task")) == 60


def test_an_unknown_outcome_the_core_reports_makes_a_single_write_look_first(org, http, sf, tmp_path):
    (seed,) = deals(org, 1)
    (first,) = sf.create_tasks([task(seed)], key("single"))
    assert org.queries == []
    later = adapter_for(org, tmp_path)  # another process takes the action over after a dead attempt
    later.outcome_unknown(key("single"), EARLIER)
    assert later.create_tasks([task(seed)], key("single")) == [first]
    assert len(org.queries) == 1 and len(org.records("Task")) == 1


# --- (d) the events of many Opportunities -----------------------------------------------------


def test_interpret_many_reads_150_events_in_a_handful_of_queries_and_means_what_interpret_says(org, sf):
    seeds = deals(org, 140)
    for seed in seeds[::7]:
        org.set_stage(seed.opportunity, "Prospecting")  # re-opened
    events: list[tuple[str, dict[str, Any]]] = [
        ("opportunity", {"Id": s.opportunity, "IsClosed": "true" if n % 3 else "false"})
        for n, s in enumerate(seeds)
    ]
    events += [
        ("opportunity", {"Id": seeds[n].opportunity[:15]}) for n in range(5)
    ]  # the same deals, 15-char ids
    events += [("account", {"Id": seeds[0].account}), ("opportunity", {"Id": "not an id"})]
    events += [("opportunity", {"Id": "0065g0000000999AAA"})]  # an Opportunity the org does not have
    events += [("opportunity", {"Id": seeds[n].opportunity, "IsClosed": True}) for n in range(2)]  # a Flow's
    assert len(events) == 150
    many = sf.interpret_many(events)
    assert len(org.queries) == 1 and "FROM Opportunity WHERE Id IN (" in org.queries[0]
    for event, batched in zip(events, many, strict=True):
        try:
            single: Any = sf.interpret(*event)
        except (CrmError, PayloadInvalid) as exc:
            single = exc
        if isinstance(single, Exception):
            assert type(batched) is type(single) and str(batched) == str(single)
        else:
            assert batched == single
    changes = [r.change for r in many if isinstance(r, DealChange)]
    assert changes.count("closed") > 80 and changes.count("reopened") > 5  # every case was met
    assert None in many and sum(isinstance(r, Exception) for r in many) == 2


def test_a_failed_read_is_the_result_of_its_events(org, sf):
    seeds = deals(org, 3)
    org.inject(Fault.TRANSIENT, match="GET query")
    results = sf.interpret_many([("opportunity", {"Id": s.opportunity}) for s in seeds] + [("account", {})])
    assert all(isinstance(r, OutcomeUnknown) for r in results[:3]) and results[3] is None


# --- (e) calls per deal ------------------------------------------------------------------------


def test_100_deals_tasks_take_two_collections_calls(org, sf, http, tmp_path):
    seeds = deals(org, 100)
    results = sf.create_tasks_many(checklists(seeds))
    assert org.calls == ["GET sobjects/Task/describe", "POST composite/sobjects", "POST composite/sobjects"]
    assert len(org.calls) / len(seeds) == 0.03  # calls per deal
    for seed, ids in zip(seeds, results, strict=True):
        assert sorted(ids) == sorted(t["Id"] for t in tasks_on(org, seed))  # type: ignore[arg-type]
    one_by_one = adapter_for(org, tmp_path)
    before = len(org.calls)
    for n, seed in enumerate(seeds):
        one_by_one.create_tasks([task(seed, t) for t in range(3)], key(f"alone-{n}"))
    assert (len(org.calls) - before) / len(seeds) == 1.01  # one call per deal, and the describe
