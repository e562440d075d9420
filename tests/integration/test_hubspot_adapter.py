"""The HubSpot adapter, through the real SDK, against the strict fake HubSpot over HTTP."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest

from adapters.base import SweepWindow
from adapters.hubspot import api as hubspot_api
from adapters.hubspot.errors import OutcomeUnknown
from adapters.hubspot.records import token
from adapters.hubspot.setup import SURVEY_KIND, SURVEY_LINK, SURVEY_REF, SURVEY_SENT_AT
from connector.errors import CrmPermanent, CrmRateLimited, CrmTransient
from connector.models import AnswerSpec, Invite, NoteSpec, PropertyUpdate, ReferralSpec, TaskSpec
from connector.settings import load_settings
from tests.support import adapter_fixtures
from tests.support.faults import Fault
from tests.support.hubspot import (
    FINANCE,
    OWNER,
    PORTAL_ID,
    RENEWALS,
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
KEY = "4f" * 32


@pytest.fixture
def ids(fake):
    return add_deal(fake)


def tasks_for(ids, count, **fields):
    return [
        TaskSpec(
            step_id=f"step-{n}",
            title=f"Task {n}",
            body="First line\nSecond <line>",
            due_at=datetime(2026, 12, 1, 9, 0, tzinfo=UTC) + timedelta(days=n),
            owner_id=OWNER,
            priority="high",
            type="call",
            deal_id=ids["deal"],
            company_id=ids["company"],
            contact_id=ids["contact"],
        ).model_copy(update=fields)
        for n in range(count)
    ]


# --- reads ------------------------------------------------------------------------


def test_fetch_deal_reads_the_deal_its_owner_company_and_contacts(adapter, fake, ids):
    deal = adapter.fetch_deal(ids["deal"])
    assert (deal.crm, deal.account, deal.id, deal.name) == (
        "hubspot",
        str(PORTAL_ID),
        ids["deal"],
        "Acme website",
    )
    assert (deal.closed, deal.outcome, deal.pipeline, deal.stage) == (True, "won", "default", "closedwon")
    assert (deal.contract_type, deal.contract_end) == ("project", date(2026, 12, 31))
    assert deal.close_date == date(2026, 11, 20)
    assert str(deal.amount) == "24000"
    assert (deal.owner.id, deal.owner.name, deal.owner.email) == (OWNER, "Sam Rivera", "sam@agency.example")
    assert (deal.company.id, deal.company.name) == (ids["company"], "Acme Corp")
    assert [(c.id, c.email, c.first_name, c.primary) for c in deal.contacts] == [
        (ids["contact"], "pat@acme.example", "Pat", True)
    ]
    assert deal.properties["contract_type"] == "project"
    # One call each for the portal id and the pipelines (both cached), the deal, owner, company, contacts.
    assert sum(fake.calls.values()) == 6
    adapter.fetch_deal(ids["deal"])  # the owner is kept for a few minutes
    assert sum(fake.calls.values()) == 9


def test_a_deal_that_does_not_exist_is_a_permanent_error(adapter):
    with pytest.raises(CrmPermanent) as raised:
        adapter.fetch_deal("999999")
    assert raised.value.status == 404


def test_a_custom_pipelines_numeric_stage_ids_say_won_or_lost(adapter, fake):
    lost = add_deal(fake, name="Renewal", pipeline=RENEWALS, stage="1003", contract_type="retainer")
    deal = adapter.fetch_deal(lost["deal"])
    assert (deal.closed, deal.outcome, deal.pipeline) == (True, "lost", RENEWALS)


# --- interpreting events ----------------------------------------------------------------


def test_a_closed_stage_event_means_the_deal_closed(adapter, ids, clock):
    change = adapter.interpret("deal.propertyChange", stage_event(ids["deal"], "closedwon", at=clock.now))
    assert change.change == "closed"
    assert change.deal.outcome == "won"
    assert change.occurred_at == clock.now


def test_an_unknown_stage_id_refreshes_the_pipelines_once(adapter, fake, ids):
    adapter.interpret("deal.propertyChange", stage_event(ids["deal"], "closedwon"))
    fake.add_pipeline("999", "Enterprise", [("2001", "Signed", True, "1.0")])
    new = add_deal(fake, name="Enterprise deal", pipeline="999", stage="2001")
    assert adapter.interpret("deal.propertyChange", stage_event(new["deal"], "2001")).deal.outcome == "won"
    assert fake.calls["GET /crm/v3/pipelines/deals"] == 2
    with pytest.raises(CrmPermanent, match="none of portal"):
        adapter.interpret("deal.propertyChange", stage_event(new["deal"], "no-such-stage"))
    assert fake.calls["GET /crm/v3/pipelines/deals"] == 3


def test_moving_from_a_closed_stage_to_an_open_one_is_a_reopening(adapter, fake, ids, clock):
    clock.advance(minutes=5)
    fake.set_property("deals", ids["deal"], "dealstage", "contractsent")
    change = adapter.interpret("deal.propertyChange", stage_event(ids["deal"], "contractsent", at=clock.now))
    assert (change.change, change.deal.id, change.deal.closed) == ("reopened", ids["deal"], False)
    clock.advance(minutes=5)  # moving on between open stages is nothing to us
    fake.set_property("deals", ids["deal"], "dealstage", "appointmentscheduled")
    event = stage_event(ids["deal"], "appointmentscheduled", at=clock.now)
    assert adapter.interpret("deal.propertyChange", event) is None


def test_an_event_that_the_deal_has_moved_past_starts_nothing(adapter, fake, ids, clock):
    event = stage_event(ids["deal"], "closedwon", at=clock.now)
    fake.set_property("deals", ids["deal"], "dealstage", "contractsent")  # re-opened before we looked
    assert adapter.interpret("deal.propertyChange", event) is None


def test_other_events_are_ignored_without_calling_hubspot(adapter, fake, ids):
    assert adapter.interpret("contact.creation", {"objectId": 5, "portalId": PORTAL_ID}) is None
    assert (
        adapter.interpret("deal.propertyChange", stage_event(ids["deal"], "x") | {"propertyName": "amount"})
        is None
    )
    assert sum(fake.calls.values()) == 0


def test_an_event_from_another_portal_is_refused(adapter, ids):
    with pytest.raises(CrmPermanent, match="portal 1"):
        adapter.interpret("deal.propertyChange", stage_event(ids["deal"], "closedwon", portal_id=1))


# --- tasks -------------------------------------------------------------------------------


def test_tasks_carry_due_time_owner_fields_and_associations(adapter, fake, ids):
    created = adapter.create_tasks(tasks_for(ids, 2), KEY)
    by_id = {record.id: record for record in fake.records("tasks")}
    first = by_id[created[0]]
    assert first.properties["hs_timestamp"] == str(
        int(datetime(2026, 12, 1, 9, tzinfo=UTC).timestamp() * 1000)
    )
    assert first.properties["hs_task_subject"] == "Task 0"
    assert first.properties["hs_task_body"].startswith("First line<br>Second &lt;line&gt;")
    assert f"Offboard ref: {token(KEY)} #0" in first.properties["hs_task_body"]
    assert (first.properties["hs_task_status"], first.properties["hs_task_priority"]) == (
        "NOT_STARTED",
        "HIGH",
    )
    assert (first.properties["hs_task_type"], first.properties["hubspot_owner_id"]) == ("CALL", OWNER)
    assert fake.linked(first, "deals") == {ids["deal"]: 216}
    assert fake.linked(first, "companies") == {ids["company"]: 192}
    assert fake.linked(first, "contacts") == {ids["contact"]: 204}
    assert by_id[created[1]].properties["hs_task_subject"] == "Task 1"  # ids come back in input order


def test_priorities_and_types_map_to_hubspots_values(adapter, fake, ids):
    specs = [
        *tasks_for(ids, 1, priority="low", type="todo"),
        *tasks_for(ids, 1, priority="normal", type="email"),
    ]
    adapter.create_tasks(specs, KEY)
    values = {(r.properties["hs_task_priority"], r.properties["hs_task_type"]) for r in fake.records("tasks")}
    assert values == {("LOW", "TODO"), ("MEDIUM", "EMAIL")}


@pytest.mark.parametrize(("count", "create_calls"), [(1, 1), (100, 1), (101, 2), (250, 3)])
def test_tasks_cost_one_create_call_per_100(adapter, fake, ids, count, create_calls):
    created = adapter.create_tasks(tasks_for(ids, count), KEY)
    assert len(created) == len(set(created)) == count == len(fake.records("tasks"))
    assert fake.calls[CREATE] == create_calls
    assert fake.calls["POST /crm/v3/objects/tasks/search"] == 0  # a first attempt does not look


def test_tasks_are_built_without_a_new_sdk_configuration_per_model(adapter, fake, ids, monkeypatch):
    # A generated model made without one builds its own (some 30 µs each, five or six per task).
    from hubspot.crm.objects.tasks.configuration import Configuration

    built = []
    original = Configuration.__init__

    def counted(self, *args, **kwargs):
        built.append(self)
        original(self, *args, **kwargs)

    adapter.create_tasks(tasks_for(ids, 1), KEY)  # the first write may make the shared one
    monkeypatch.setattr(Configuration, "__init__", counted)
    adapter.create_tasks(tasks_for(ids, 50), KEY)
    assert len(fake.records("tasks")) == 51
    assert built == []


def test_a_lost_reply_does_not_create_the_tasks_twice(adapter, fake, ids):
    fake.inject(Fault.LOST_REPLY, route=CREATE)
    with pytest.raises(OutcomeUnknown):
        adapter.create_tasks(tasks_for(ids, 5), KEY)
    assert len(fake.records("tasks")) == 5  # HubSpot did create them
    again = adapter.create_tasks(tasks_for(ids, 5), KEY)  # the worker's retry, same key
    assert sorted(again) == sorted(r.id for r in fake.records("tasks"))
    assert len(fake.records("tasks")) == 5
    assert fake.calls[CREATE] == 1


def test_after_a_lost_reply_a_lagging_search_is_not_trusted(adapter, fake, ids, clock):
    fake.search_lag = timedelta(seconds=5)  # HubSpot's index trails its writes
    fake.inject(Fault.LOST_REPLY, route=CREATE)
    with pytest.raises(OutcomeUnknown):
        adapter.create_tasks(tasks_for(ids, 3), KEY)
    with pytest.raises(CrmTransient, match="search index"):
        adapter.create_tasks(tasks_for(ids, 3), KEY)  # a quick retry: the search saw nothing yet
    clock.advance(seconds=30)
    adapter.create_tasks(tasks_for(ids, 3), KEY)
    assert len(fake.records("tasks")) == 3


def test_a_500_before_writing_is_retried_once_the_index_can_be_trusted(adapter, fake, ids, clock):
    fake.inject(500, route=CREATE)
    with pytest.raises(OutcomeUnknown):
        adapter.create_tasks(tasks_for(ids, 3), KEY)
    clock.advance(seconds=30)
    assert len(adapter.create_tasks(tasks_for(ids, 3), KEY)) == 3
    assert len(fake.records("tasks")) == 3


def test_a_partly_written_action_creates_only_the_rest(adapter, fake, ids, clock):
    first = adapter.create_tasks(tasks_for(ids, 2), KEY)  # as if an attempt stopped after 2 of 5
    adapter.outcome_unknown(KEY, clock.now)  # the worker that made it died: the retry is told
    created = adapter.create_tasks(tasks_for(ids, 5), KEY)
    assert created[:2] == first
    assert len(set(created)) == 5 == len(fake.records("tasks"))
    assert fake.calls[CREATE] == 2


# --- notes, properties, invites -------------------------------------------------------------


def test_a_note_is_associated_to_deal_company_and_contact_once(adapter, fake, ids, clock):
    note = NoteSpec(
        step_id="n",
        body="Hand-over done",
        deal_id=ids["deal"],
        company_id=ids["company"],
        contact_id=ids["contact"],
    )
    first = adapter.add_note(note, KEY)
    adapter.outcome_unknown(KEY, clock.now)  # a retry after an unknown outcome finds it
    assert adapter.add_note(note, KEY) == first
    (record,) = fake.records("notes")
    assert record.properties["hs_note_body"].startswith("Hand-over done")
    assert record.properties["hs_timestamp"]
    assert fake.linked(record, "deals") == {ids["deal"]: 214}
    assert fake.linked(record, "companies") == {ids["company"]: 190}
    assert fake.linked(record, "contacts") == {ids["contact"]: 202}


@pytest.mark.parametrize("text", ["Long " * 14_000, "Q&A <b> " * 9_000, "😀\n" * 40_000])
def test_a_note_over_hubspots_limit_is_written_shortened_with_its_marker(adapter, fake, ids, text, clock):
    note = NoteSpec(step_id="n", body=text, deal_id=ids["deal"])
    first = adapter.add_note(note, KEY)
    adapter.outcome_unknown(KEY, clock.now)
    assert adapter.add_note(note, KEY) == first  # the marker survived: the retry found the note
    (record,) = fake.records("notes")
    body = record.properties["hs_note_body"]
    assert len(body.encode("utf-16-le")) // 2 <= 65_536
    assert body.endswith(f"Offboard ref: {token(KEY)} #0")
    assert "(shortened to fit HubSpot's note limit)" in body
    kept = body.split("<br>… (shortened")[0]
    assert kept and not re.search(r"&[#0-9A-Za-z]*$|<[^>]*$", kept)  # no entity or tag cut in half


def test_properties_are_set_on_deals_companies_and_contacts(adapter, fake, ids):
    for target, object_type, name in [
        ("deal", "deals", "offboarding_status"),
        ("contact", "contacts", SURVEY_LINK),
    ]:
        update = PropertyUpdate(
            step_id="p", object=target, object_id=ids[target], properties={name: "in progress"}
        )
        adapter.update_properties(update, KEY)
        assert fake.objects[object_type][ids[target]].properties[name] == "in progress"


def test_a_missing_property_is_permanent_and_points_at_setup(adapter, ids):
    update = PropertyUpdate(step_id="p", object="company", object_id=ids["company"], properties={"nope": "1"})
    with pytest.raises(CrmPermanent, match="offboard hubspot setup") as raised:
        adapter.update_properties(update, KEY)
    assert 'Property \\"nope\\" does not exist' in str(raised.value)


def test_a_survey_send_sets_the_workflows_properties_and_logs_a_note_once(adapter, fake, ids, clock):
    invite = Invite(
        step_id="exit-nps",
        kind="nps",
        deal_id=ids["deal"],
        contact_id=ids["contact"],
        email="pat@acme.example",
        link="https://offboard.example/s/tok",
    )
    note_id = adapter.send_invite(invite, KEY)
    contact = fake.objects["contacts"][ids["contact"]].properties
    assert (contact[SURVEY_KIND], contact[SURVEY_LINK], contact[SURVEY_REF]) == (
        "nps",
        invite.link,
        token(KEY),
    )
    assert contact[SURVEY_SENT_AT] == str(int(clock.now.timestamp() * 1000))
    (note,) = fake.records("notes")
    assert note.id == note_id and "NPS survey" in note.properties["hs_note_body"]
    assert set(fake.linked(note, "contacts")) == {ids["contact"]} and set(fake.linked(note, "deals")) == {
        ids["deal"]
    }
    assert fake.calls["POST /crm/v3/objects/notes/search"] == 0  # a first send does not look
    adapter.outcome_unknown(KEY, clock.now)
    assert adapter.send_invite(invite, KEY) == note_id  # retried: nothing new, no second enrollment
    assert len(fake.records("notes")) == 1
    assert fake.calls["POST /crm/v3/objects/contacts/batch/update"] == 1


def test_an_answer_lands_on_the_contact_with_a_note(adapter, fake, ids, clock):
    answer = AnswerSpec(
        step_id="exit-nps",
        kind="nps",
        score=10,
        category="promoter",
        comment="Great team",
        deal_id=ids["deal"],
        contact_id=ids["contact"],
        answered_at=clock.now,
    )
    adapter.record_answer(answer, KEY)
    adapter.outcome_unknown(KEY, clock.now)
    adapter.record_answer(answer, KEY)
    contact = fake.objects["contacts"][ids["contact"]].properties
    assert (contact["offboard_last_exit_score"], contact["offboard_exit_category"]) == ("10", "promoter")
    (note,) = fake.records("notes")
    assert "Great team" in note.properties["hs_note_body"]


def test_a_referral_is_one_contact_per_email_on_the_deal(adapter, fake, ids, clock):
    referral = ReferralSpec(
        step_id="referral-ask",
        deal_id=ids["deal"],
        referrer_contact_id=ids["contact"],
        first_name="Ada",
        last_name="Byron",
        email="Ada@Example.com",
        company="Engines Ltd",
    )
    contact_id = adapter.create_referral(referral, KEY)
    adapter.outcome_unknown(KEY, clock.now)
    assert adapter.create_referral(referral, KEY) == contact_id  # HubSpot's 409 names it
    made = fake.objects["contacts"][contact_id]
    assert made.properties["email"] == "ada@example.com"
    assert fake.linked(made, "deals") == {ids["deal"]: 4}
    assert len(fake.records("notes")) == 1


# --- the contract-end sweep -------------------------------------------------------------------


def test_deals_ending_searches_the_contract_end_page_by_page(adapter, fake, monkeypatch):
    monkeypatch.setattr(hubspot_api, "SEARCH_PAGE", 2)
    inside = [add_deal(fake, name=f"In {n}", contract_end=f"2027-01-{n:02d}")["deal"] for n in (1, 15, 31)]
    add_deal(fake, name="After", contract_end="2027-02-01")
    add_deal(fake, name="Before", contract_end="2026-12-31")
    found = adapter.deals_ending(SweepWindow(date(2027, 1, 1), date(2027, 1, 31)))
    assert sorted(d.id for d in found) == sorted(inside)
    assert {d.contract_end for d in found} == {date(2027, 1, 1), date(2027, 1, 15), date(2027, 1, 31)}
    assert fake.calls["POST /crm/v3/objects/deals/search"] == 2


# --- errors and limits ----------------------------------------------------------------------


def test_a_wrong_token_is_permanent_and_says_what_to_check(url, clock, ids):
    adapter = fake_time_adapter(
        load_settings(**settings_overrides(url, HUBSPOT_ACCESS_TOKEN="pat-na1-revoked")), clock
    )
    with pytest.raises(CrmPermanent, match="HUBSPOT_ACCESS_TOKEN") as raised:
        adapter.fetch_deal(ids["deal"])
    assert raised.value.status == 401
    assert "pat-na1-revoked" not in str(raised.value)


def test_a_missing_scope_names_the_scope(adapter, fake, ids):
    fake.denied["GET /crm/v3/objects/deals/{id}"] = "crm.objects.deals.read"
    with pytest.raises(CrmPermanent, match=r"crm\.objects\.deals\.read") as raised:
        adapter.fetch_deal(ids["deal"])
    assert raised.value.status == 403


def test_a_429_is_waited_out_then_handed_to_the_queue(adapter, fake, ids, clock):
    started = clock.now
    fake.inject(429, times=2)
    assert adapter.fetch_deal(ids["deal"]).id == ids["deal"]
    assert clock.now - started >= timedelta(seconds=20)  # one 10 s interval per 429
    fake.inject(429, times=10)
    with pytest.raises(CrmRateLimited) as raised:
        adapter.fetch_deal(ids["deal"])
    assert raised.value.retry_after == 10.0


def test_5xx_are_transient_and_an_unreachable_hubspot_too(adapter, fake, ids, clock):
    fake.inject(502)
    with pytest.raises(OutcomeUnknown):
        adapter.fetch_deal(ids["deal"])
    closed = fake_time_adapter(load_settings(**settings_overrides("http://127.0.0.1:9")), clock)
    with pytest.raises(CrmTransient) as raised:
        closed.fetch_deal(ids["deal"])
    assert not isinstance(raised.value, OutcomeUnknown)  # refused: nothing was sent


def test_a_nearly_spent_daily_budget_defers_non_urgent_work(adapter):
    assert adapter.deferral_reason() is None
    adapter.api.limits.observe(
        {"X-HubSpot-RateLimit-Daily": "1000", "X-HubSpot-RateLimit-Daily-Remaining": "20"}
    )
    assert "2%" in adapter.deferral_reason()


def test_owners_that_left_still_own_their_deals(adapter, fake, ids):
    fake.owners.pop(OWNER)
    assert adapter.fetch_deal(ids["deal"]).owner.id == OWNER
    assert FINANCE in fake.owners
