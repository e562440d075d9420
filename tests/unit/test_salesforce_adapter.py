"""The Salesforce adapter against a strict fake org (responses): reads, writes, no duplicates, errors."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

from adapters.base import SweepWindow
from adapters.salesforce import soql
from connector.errors import CrmPermanent, CrmTransient, SettingsInvalid
from connector.models import AnswerSpec, Invite, NoteSpec, PropertyUpdate, ReferralSpec, TaskSpec
from tests.support import adapter_fixtures
from tests.support.faults import Fault
from tests.support.salesforce import ORG_ID, Seeded

# the shared fake org, its HTTP mock and an adapter on it
org = adapter_fixtures.org
http = adapter_fixtures.http
sf = adapter_fixtures.sf
adapter_for = adapter_fixtures.adapter_for

KEY = "5e1f" * 16
OTHER_KEY = "a7c3" * 16


@pytest.fixture
def seed(org) -> Seeded:
    return org.add_opportunity()


def task(seed: Seeded, n: int = 0, **fields: Any) -> TaskSpec:
    values: dict[str, Any] = {
        "step_id": f"step-{n}",
        "title": f"Task {n}",
        "body": "Do the thing.",
        "due_at": datetime(2026, 12, 1, 8, 0, tzinfo=UTC),  # 09:00 in Paris
        "owner_id": seed.owner,
        "priority": "high",
        "type": "call",
        "deal_id": seed.opportunity,
        "company_id": seed.account,
        "contact_id": seed.contacts[0],
    }
    return TaskSpec(**(values | fields))


# --- reads --------------------------------------------------------------------


def test_fetch_deal_gets_the_opportunity_with_account_owner_contract_and_contacts_in_one_query(org, sf):
    seed = org.add_opportunity(contacts=(("Pat", "Lee", "pat@acme.example"), ("Alex", "Kim", None)))
    deal = sf.fetch_deal(seed.opportunity)
    assert org.calls == ["GET query"]
    assert (deal.crm, deal.account, deal.id, deal.name) == (
        "salesforce",
        ORG_ID[:15],
        seed.opportunity,
        "Acme website",
    )
    assert (deal.closed, deal.outcome, deal.stage, deal.pipeline) == (True, "won", "Closed Won", "default")
    assert deal.amount == Decimal("24000")
    assert (deal.close_date, deal.contract_end, deal.contract_type) == (
        date(2026, 11, 20),
        date(2026, 12, 31),
        "project",
    )
    assert deal.owner is not None and (deal.owner.id, deal.owner.name) == (seed.owner, "Sam Rivera")
    assert deal.company is not None and (deal.company.name, deal.company.domain) == (
        "Acme Corp",
        "acme.example",
    )
    assert [(c.first_name, c.primary) for c in deal.contacts] == [("Pat", True), ("Alex", False)]
    assert deal.primary_contact is not None and deal.primary_contact.id == seed.contacts[0]


def test_a_lost_opportunity_without_contract_or_contacts(org, sf):
    seed = org.add_opportunity(stage="Closed Lost", contract_end=None, contacts=())
    deal = sf.fetch_deal(seed.opportunity)
    assert (deal.outcome, deal.contract_end, deal.contacts) == ("lost", None, ())


def test_contract_fields_come_from_the_settings(org, http, tmp_path):
    seed = org.add_opportunity(type="retainer", Description="ends soon")
    org.db["Opportunity"][seed.opportunity]["Offboarding_Status__c"] = "subscription"
    sf = adapter_for(
        org,
        tmp_path,
        SALESFORCE_CONTRACT_TYPE_FIELD="Offboarding_Status__c",
        SALESFORCE_CONTRACT_END_FIELD="CloseDate",
    )
    deal = sf.fetch_deal(seed.opportunity)
    assert (deal.contract_type, deal.contract_end) == ("subscription", date(2026, 11, 20))


def test_an_unknown_opportunity_is_permanent(org, sf):
    with pytest.raises(CrmPermanent, match="no Opportunity") as refused:
        sf.fetch_deal("0065g0000000999AAA")
    assert refused.value.status == 404


def test_an_id_that_is_not_an_id_never_reaches_salesforce(org, sf):
    with pytest.raises(CrmPermanent, match="not a Opportunity id"):
        sf.fetch_deal("006' OR Name != '")
    assert org.calls == []


def test_deals_ending_pages_through_won_opportunities_in_range(org, http, tmp_path):
    org.page_size = 2
    inside = [
        org.add_opportunity(f"Deal {n}", contract_end=f"2026-12-{10 + n}").opportunity for n in range(5)
    ]
    org.add_opportunity("Too late", contract_end="2027-03-01")
    org.add_opportunity("Lost", stage="Closed Lost", contract_end="2026-12-12")
    org.add_opportunity("No contract", contract_end=None)
    sf = adapter_for(org, tmp_path)
    found = list(sf.deals_ending(SweepWindow(date(2026, 12, 1), date(2026, 12, 31))))
    assert [d.id for d in found] == inside
    assert found[0].contract_end == date(2026, 12, 10)
    first, *more = org.calls  # 2 + 2 + 1 records: the query, then two nextRecordsUrl pages
    assert first == "GET query"
    assert len(more) == 2 and all(call.startswith("GET query/") for call in more)


# --- SOQL is built with format_soql ------------------------------------------------


def test_format_soql_escapes_what_string_formatting_would_not(org, sf, seed):
    name = "O'Brien \\ survey"
    assert sf.client.query(soql.survey_invitation(name)) == []
    lead = org.add_lead("Dana", "O'Brien", "dana.o'brien@example.com")
    assert sf.create_referral(referral(seed, email="dana.o'brien@example.com"), KEY) == lead
    naive = f"SELECT Id FROM SurveyInvitation WHERE Name = '{name}'"
    with pytest.raises(CrmPermanent, match="MALFORMED_QUERY"):
        sf.client.query(naive)


def test_dates_go_in_unquoted_as_salesforce_requires(org, sf):
    assert "Contract.EndDate >= 2026-12-01 AND" in soql.contracts_ending(
        "Contract.EndDate", SweepWindow(date(2026, 12, 1), date(2026, 12, 2))
    )
    quoted = "SELECT Id FROM Opportunity WHERE CloseDate >= '2026-12-01'"
    with pytest.raises(CrmPermanent, match="INVALID_QUERY_FILTER_OPERATOR"):
        sf.client.query(quoted)


@pytest.mark.parametrize("field", ["Contract.EndDate, (SELECT Id FROM Tasks)", "EndDate'", "a..b", "A B"])
def test_configured_field_names_are_checked_before_they_reach_soql(org, http, tmp_path, field):
    with pytest.raises(SettingsInvalid, match="SALESFORCE_CONTRACT_END_FIELD"):
        adapter_for(org, tmp_path, SALESFORCE_CONTRACT_END_FIELD=field)


def test_an_empty_field_setting_is_unset_and_keeps_the_default(org, http, tmp_path):
    assert adapter_for(org, tmp_path, SALESFORCE_CONTRACT_END_FIELD="").end_field == "Contract.EndDate"


# --- tasks ----------------------------------------------------------------------


def test_tasks_are_created_in_one_collections_call_on_the_opportunity(org, sf, seed):
    specs = [task(seed, 0), task(seed, 1, priority="low", type="email", owner_id=None, contact_id=None)]
    ids = sf.create_tasks(specs, KEY)
    assert org.count("POST", "composite/sobjects") == 1
    stored = [org.db["Task"][i] for i in ids]
    first, second = stored
    assert (first["WhatId"], first["WhoId"], first["OwnerId"]) == (
        seed.opportunity,
        seed.contacts[0],
        seed.owner,
    )
    assert (first["ActivityDate"], first["Status"], first["Priority"], first["Type"]) == (
        "2026-12-01",
        "Not Started",
        "High",
        "Call",
    )
    assert first["Subject"] == "Task 0"
    assert first["Description"].startswith("Do the thing.")
    assert (second["Priority"], second["Type"], second["WhoId"]) == ("Low", "Email", None)
    assert second["OwnerId"] == org.api_user  # no owner given: the org's default, the API user


def test_the_due_date_is_the_local_date(org, sf, seed):
    (task_id,) = sf.create_tasks([task(seed, due_at=datetime(2026, 12, 1, 23, 30, tzinfo=UTC))], KEY)
    assert org.db["Task"][task_id]["ActivityDate"] == "2026-12-02"  # 00:30 in Paris


def test_more_than_200_tasks_take_one_call_per_200(org, sf, seed):
    ids = sf.create_tasks([task(seed, n) for n in range(450)], KEY)
    assert len(set(ids)) == 450 == len(org.records("Task"))
    assert org.count("POST", "composite/sobjects") == 3


def test_a_retry_after_a_lost_reply_creates_nothing_twice(org, sf, seed):
    specs = [task(seed, n) for n in range(3)]
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")
    with pytest.raises(CrmTransient, match="no answer"):
        sf.create_tasks(specs, KEY)
    assert len(org.records("Task")) == 3  # Salesforce did the work
    ids = sf.create_tasks(specs, KEY)
    assert len(org.records("Task")) == 3
    assert sorted(ids) == sorted(org.db["Task"])
    assert org.count("POST", "composite/sobjects") == 1


def test_a_retried_task_about_a_lead_is_found_on_the_lead_and_not_written_twice(org, sf, seed):
    lead = org.add_lead("Robin", "Friend", "robin@friend.example")
    follow_up = task(seed, title="Call Robin about the referral", contact_id=lead)
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")
    with pytest.raises(CrmTransient):
        sf.create_tasks([follow_up], KEY)
    (written,) = org.records("Task")
    assert (written["WhoId"], written["WhatId"]) == (lead, None)  # a Task about a Lead has no WhatId
    assert sf.create_tasks([follow_up], KEY) == [written["Id"]]
    assert len(org.records("Task")) == 1
    assert org.count("POST", "composite/sobjects") == 1


def test_a_task_about_a_lead_cannot_also_name_the_opportunity(org, sf, seed):
    lead = org.add_lead("Robin", "Friend", "robin@friend.example")
    record = {"attributes": {"type": "Task"}, "Subject": "x", "WhoId": lead, "WhatId": seed.opportunity}
    with pytest.raises(CrmPermanent, match="FIELD_INTEGRITY_EXCEPTION"):
        sf.tasks.collections("POST", "composite/sobjects", [record])
    assert org.records("Task") == []


def test_a_retry_creates_only_the_tasks_that_are_missing(org, sf, seed):
    first_batch = sf.create_tasks([task(seed, n) for n in range(200)], KEY)
    org.inject(Fault.TRANSIENT, match="POST composite/sobjects")  # the second batch of 200 fails
    with pytest.raises(CrmTransient):
        sf.create_tasks([task(seed, n) for n in range(250)], OTHER_KEY)
    ids = sf.create_tasks([task(seed, n) for n in range(250)], OTHER_KEY)
    assert len(org.records("Task")) == 450
    assert not set(first_batch) & set(ids)


@pytest.mark.parametrize(
    "org", [{"task_marker_field": "Offboard_Key__c"}], indirect=True, ids=["marker-field"]
)
def test_with_an_external_id_field_tasks_are_upserted_and_a_retry_cannot_duplicate(org, http, tmp_path, seed):
    sf = adapter_for(org, tmp_path, SALESFORCE_TASK_MARKER_FIELD="Offboard_Key__c")
    specs = [task(seed, n) for n in range(3)]
    org.inject(Fault.LOST_REPLY, match="PATCH composite/sobjects/Task/Offboard_Key__c")
    with pytest.raises(CrmTransient):
        sf.create_tasks(specs, KEY)
    ids = sf.create_tasks(specs, KEY)
    stored = org.records("Task")
    assert len(stored) == 3
    assert sorted(r["Id"] for r in stored) == sorted(ids)
    assert {r["Offboard_Key__c"] for r in stored} == {f"{KEY[:32]}:{n}" for n in range(3)}
    assert all("Offboard ref" not in r["Description"] for r in stored)
    assert org.count("PATCH", "composite/sobjects/Task/Offboard_Key__c") == 2
    assert org.count("GET", "query") == 0


def test_picklists_are_read_once_and_mapped_to_the_orgs_values(org, sf, seed):
    org.set_picklist("Task", "Priority", ["Urgent", "Medium", "Minor"], default="Medium")
    org.set_picklist("Task", "Status", ["Open", "Waiting", "Done"], default="Open")
    ids = sf.create_tasks([task(seed, 0, priority="high"), task(seed, 1, priority="normal")], KEY)
    ids += sf.create_tasks([task(seed, 2, priority="low")], OTHER_KEY)
    assert [org.db["Task"][i]["Priority"] for i in ids] == ["Urgent", "Medium", "Minor"]
    assert {org.db["Task"][i]["Status"] for i in ids} == {"Open"}
    assert org.count("GET", "sobjects/Task/describe") == 1


def test_a_record_the_org_refuses_fails_the_whole_batch_with_salesforces_reasons(org, sf, seed):
    with pytest.raises(CrmPermanent) as refused:
        sf.create_tasks([task(seed, 0), task(seed, 1, owner_id="0055g0000000999AAA")], KEY)
    assert org.records("Task") == []  # allOrNone
    (error,) = refused.value.detail
    assert (error["statusCode"], error["fields"]) == ("INVALID_CROSS_REFERENCE_KEY", ["OwnerId"])
    assert "INVALID_CROSS_REFERENCE_KEY" in str(refused.value)


def test_long_subjects_are_cut_to_255(org, sf, seed):
    (task_id,) = sf.create_tasks([task(seed, title="x" * 300)], KEY)
    assert len(org.db["Task"][task_id]["Subject"]) == 255


# --- notes and fields --------------------------------------------------------------


def note(seed: Seeded) -> NoteSpec:
    return NoteSpec(
        step_id="handover",
        body="Handed over <all> files\n& credentials.",
        deal_id=seed.opportunity,
        company_id=seed.account,
        contact_id=seed.contacts[0],
    )


def test_a_note_is_a_content_note_linked_to_the_deal_company_and_contact_in_one_call(org, sf, seed):
    import base64

    note_id = sf.add_note(note(seed), KEY)
    assert org.count("POST", "composite") == 1
    stored = org.db["ContentNote"][note_id]
    assert (
        base64.b64decode(stored["Content"])
        == b"<p>Handed over &lt;all&gt; files</p><p>&amp; credentials.</p>"
    )
    links = {r["LinkedEntityId"] for r in org.records("ContentDocumentLink", ContentDocumentId=note_id)}
    assert links == {seed.opportunity, seed.account, seed.contacts[0]}


def test_a_note_is_not_added_twice_after_a_lost_reply(org, sf, seed):
    org.inject(Fault.LOST_REPLY, match="POST composite")
    with pytest.raises(CrmTransient):
        sf.add_note(note(seed), KEY)
    note_id = sf.add_note(note(seed), KEY)
    assert list(org.db["ContentNote"]) == [note_id]
    assert len(org.records("ContentDocumentLink")) == 3


def test_a_failed_link_rolls_the_note_back(org, sf, seed):
    bad = note(seed).model_copy(update={"contact_id": "0035g0000000999AAA"})
    with pytest.raises(CrmPermanent, match="INVALID_CROSS_REFERENCE_KEY"):
        sf.add_note(bad, KEY)
    assert org.db["ContentNote"] == {} and org.records("ContentDocumentLink") == []


def test_properties_become_fields_on_the_record(org, sf, seed):
    sf.update_properties(
        PropertyUpdate(
            step_id="s",
            object="deal",
            object_id=seed.opportunity,
            properties={"offboarding_status": "in progress"},
        ),
        KEY,
    )
    assert org.db["Opportunity"][seed.opportunity]["Offboarding_Status__c"] == "in progress"
    assert org.count("PATCH", f"sobjects/Opportunity/{seed.opportunity}") == 1


def test_a_field_the_org_does_not_have_is_permanent_with_its_error_code(org, sf, seed):
    update = PropertyUpdate(
        step_id="s", object="company", object_id=seed.account, properties={"tier": "gold"}
    )
    with pytest.raises(CrmPermanent) as refused:
        sf.update_properties(update, KEY)
    assert refused.value.detail == [
        {
            "message": "No such column 'Tier__c' on sobject of type Account",
            "errorCode": "INVALID_FIELD",
            "fields": ["Tier__c"],
        }
    ]


# --- survey and referral sends -------------------------------------------------------


def invite(seed: Seeded, kind: str = "nps") -> Invite:
    return Invite(
        step_id="exit-nps",
        kind=kind,
        deal_id=seed.opportunity,
        contact_id=seed.contacts[0],  # type: ignore[arg-type]
        email="pat@acme.example",
        link="https://offboard.example/s/abc",
    )


def test_a_survey_link_is_emailed_and_logged_as_a_completed_task_on_the_contact(org, sf, seed):
    log_id = sf.send_invite(invite(seed), KEY)
    (email,) = org.emails
    assert email["emailAddresses"] == "pat@acme.example"
    assert "https://offboard.example/s/abc" in email["emailBody"]
    logged = org.db["Task"][log_id]
    assert (logged["Status"], logged["WhoId"], logged["WhatId"]) == (
        "Completed",
        seed.contacts[0],
        seed.opportunity,
    )
    assert logged["Subject"] == "NPS survey sent"
    assert logged["ActivityDate"] == datetime.now(UTC).astimezone(sf.zone).date().isoformat()


def test_a_survey_is_not_sent_twice(org, sf, seed):
    first = sf.send_invite(invite(seed), KEY)
    # no effect: nothing is written the second time
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")
    assert sf.send_invite(invite(seed), KEY) == first
    assert len(org.emails) == 1


def test_a_lost_reply_on_the_log_task_does_not_resend_the_email(org, sf, seed):
    org.inject(Fault.LOST_REPLY, match="POST composite/sobjects")
    with pytest.raises(CrmTransient):
        sf.send_invite(invite(seed), KEY)
    sf.send_invite(invite(seed), KEY)
    assert len(org.emails) == 1
    assert len(org.records("Task")) == 1


def test_with_salesforce_surveys_a_survey_invitation_is_created_instead(org, http, tmp_path, seed):
    survey, site = org.add_survey("Exit NPS"), org.add_community()
    sf = adapter_for(org, tmp_path, SALESFORCE_SURVEY_IDS={"nps": survey}, SALESFORCE_COMMUNITY_ID=site)
    sf.send_invite(invite(seed), KEY)
    (invitation,) = org.records("SurveyInvitation")
    assert (invitation["SurveyId"], invitation["ParticipantId"]) == (survey, seed.contacts[0])
    assert (invitation["OptionsAllowGuestUserResponse"], invitation["CommunityId"]) == (True, site)
    assert org.emails == []
    (logged,) = org.records("Task")
    assert logged["Status"] == "Completed" and "survey invitation" in logged["Description"]
    sf.send_invite(invite(seed, "referral"), OTHER_KEY)  # no survey for referrals: by email
    assert len(org.emails) == 1


def test_survey_ids_without_the_experience_cloud_site_are_refused_at_start_up(org, tmp_path):
    with pytest.raises(SettingsInvalid, match="SALESFORCE_COMMUNITY_ID"):
        adapter_for(org, tmp_path, SALESFORCE_SURVEY_IDS={"nps": org.add_survey()})
    with pytest.raises(SettingsInvalid, match="SALESFORCE_COMMUNITY_ID: 'site' is not a Salesforce id"):
        adapter_for(org, tmp_path, SALESFORCE_COMMUNITY_ID="site")


def test_the_org_refuses_a_guest_invitation_without_its_site(org, http, tmp_path, seed):
    survey = org.add_survey()
    sf = adapter_for(
        org, tmp_path, SALESFORCE_SURVEY_IDS={"nps": survey}, SALESFORCE_COMMUNITY_ID=org.add_community()
    )
    sf.sends.community_id = None  # an adapter built around the settings check
    with pytest.raises(CrmPermanent, match="SALESFORCE_COMMUNITY_ID"):
        sf.send_invite(invite(seed), KEY)
    invitation = {"Name": "x", "SurveyId": survey, "ParticipantId": seed.contacts[0]}
    with pytest.raises(CrmPermanent, match=r"FIELD_INTEGRITY_EXCEPTION.*community"):
        sf.client.rest(
            "sobjects/SurveyInvitation",
            method="POST",
            json=invitation | {"OptionsAllowGuestUserResponse": True},
        )
    assert org.records("SurveyInvitation") == [] and org.emails == []


def test_a_contact_without_email_cannot_be_sent_a_link(org, sf, seed):
    with pytest.raises(CrmPermanent, match="no email"):
        sf.send_invite(invite(seed).model_copy(update={"email": None}), KEY)


# --- survey answers and referrals ------------------------------------------------------


def answer(seed: Seeded, score: int = 9, comment: str = "Great <team>!") -> AnswerSpec:
    return AnswerSpec(
        step_id="exit-nps",
        kind="nps",
        score=score,
        category="promoter" if score >= 9 else "detractor",
        comment=comment,
        deal_id=seed.opportunity,
        contact_id=seed.contacts[0],
        answered_at=datetime(2027, 1, 2, tzinfo=UTC),
    )


def test_an_answer_goes_on_the_contact_and_in_a_note_once(org, sf, seed):
    note_id = sf.record_answer(answer(seed), KEY)
    contact = org.db["Contact"][seed.contacts[0]]
    assert (
        contact["Offboard_Last_Survey_Kind__c"],
        contact["Offboard_Last_Exit_Score__c"],
        contact["Offboard_Exit_Category__c"],
    ) == ("nps", 9, "promoter")
    assert org.db["ContentNote"][note_id]["Title"].startswith("NPS answer: 9 (promoter)")
    assert sf.record_answer(answer(seed), KEY) == note_id
    assert len(org.db["ContentNote"]) == 1


def referral(seed: Seeded, email: str = "Robin@Friend.example", **fields: Any) -> ReferralSpec:
    values = {
        "step_id": "referral-ask",
        "deal_id": seed.opportunity,
        "referrer_contact_id": seed.contacts[0],
        "referrer_company": "Acme Corp",
        "first_name": "Robin",
        "email": email,
        "note": "Met at a fair",
    }
    return ReferralSpec(**(values | fields))


def test_a_referral_becomes_a_lead_attributed_to_the_referrer(org, sf, seed):
    lead_id = sf.create_referral(referral(seed), KEY)
    lead = org.db["Lead"][lead_id]
    assert (lead["FirstName"], lead["LastName"], lead["Email"], lead["Company"]) == (
        "Robin",
        "[not provided]",
        "robin@friend.example",
        "[not provided]",
    )
    assert lead["LeadSource"] == "Partner Referral"
    assert seed.contacts[0] in lead["Description"] and seed.opportunity in lead["Description"]
    assert "Met at a fair" in lead["Description"]


def test_the_same_person_twice_is_one_lead_even_after_a_lost_reply(org, sf, seed):
    org.inject(Fault.LOST_REPLY, match="POST sobjects/Lead")
    with pytest.raises(CrmTransient):
        sf.create_referral(referral(seed), KEY)
    lead_id = sf.create_referral(referral(seed, email="robin@friend.example"), OTHER_KEY)
    assert list(org.db["Lead"]) == [lead_id]


def test_someone_who_already_is_a_contact_is_not_made_a_lead(org, sf, seed):
    assert sf.create_referral(referral(seed, email="PAT@acme.example"), KEY) == seed.contacts[0]
    assert org.db["Lead"] == {}


# --- inbound events ----------------------------------------------------------------------


def test_an_open_message_is_checked_against_the_org_before_it_reopens_anything(org, sf, seed):
    # The seeded Opportunity is still closed: the "open" message is stale.
    assert sf.interpret("opportunity", {"Id": seed.opportunity, "IsClosed": "false"}) is None
    org.db["Opportunity"][seed.opportunity].update(StageName="Prospecting", IsClosed=False, IsWon=False)
    change = sf.interpret("opportunity", {"Id": seed.opportunity, "IsClosed": "false"})
    assert change is not None and change.change == "reopened" and change.deal.id == seed.opportunity


def test_other_objects_are_ignored_without_a_call(org, sf, seed):
    assert sf.interpret("account", {"Id": seed.account}) is None
    assert org.calls == []


def test_a_closed_opportunity_is_fetched_whole(org, sf, seed):
    change = sf.interpret(
        "opportunity", {"Id": seed.opportunity, "IsClosed": "true", "StageName": "Closed Won"}
    )
    assert change is not None and change.change == "closed"
    assert change.deal.owner is not None and change.deal.owner.id == seed.owner


def test_without_is_closed_the_org_decides(org, sf, seed):
    org.set_stage(seed.opportunity, "Negotiation/Review")
    assert sf.interpret("opportunity", {"Id": seed.opportunity, "StageName": "Negotiation/Review"}) is None
    assert org.calls == ["GET query"]
