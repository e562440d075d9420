"""The feedback loop on a HubSpot deal: survey link, answer written back, referral to a contact.

A HubSpot deal closes; its run sets the survey link on the contact (the admin's workflow
emails it); the client answers 9 on the page; the answer lands on the contact and as a note;
the referral link follows; the client introduces someone and agrees to a testimonial. The
fake HubSpot then holds one new contact, attributed to the referrer and the deal, and a
follow-up task for the deal owner and one for marketing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from connector.store import Action
from connector.web import create_app
from tests.support.faults import Fault
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    FINANCE,
    MARKETING,
    OWNER,
    TOKEN,
    FakeHubSpot,
    add_deal,
    hubspot_services,
    offboard_properties,
    serve,
    settings_overrides,
    signed,
    stage_event,
    standard_portal,
)

PUBLIC = "https://offboard.example.com"
REFERRAL = {
    "name": "Jo Park",
    "email": "Jo.Park@Globex.example",
    "company": "Globex",
    "note": "Needs a new site in the spring",
    "testimonial": "yes",
}


@pytest.fixture
def fake(clock):
    return offboard_properties(standard_portal(FakeHubSpot(clock=clock)))


@pytest.fixture
def services(exit_nps_playbooks: Path, db_url, store, clock, fake, httpserver):
    overrides = settings_overrides(
        serve(fake, httpserver),
        OFFBOARD_ROLES={"finance": FINANCE, "marketing": MARKETING},
        OFFBOARD_SWEEP_INTERVAL_SECONDS=0,
    )
    settings = make_settings(
        db_url, OFFBOARD_PUBLIC_URL=PUBLIC, OFFBOARD_PLAYBOOKS=str(exit_nps_playbooks), **overrides
    )
    return hubspot_services(settings, store, clock)


@pytest.fixture
def client(services):
    return create_app(services).test_client()


def link_path(link: str) -> str:
    assert link.startswith(PUBLIC + "/"), link
    return link.removeprefix(PUBLIC)


def submit(client, path, **form):
    """As a browser does: open the page (its form carries the CSRF value), then post the form."""
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    return client.post(path, data={"csrf": csrf, **form})


def notes_on(fake, object_type, object_id):
    return [
        n.properties["hs_note_body"]
        for n in fake.records("notes")
        if object_id in fake.linked(n, object_type)
    ]


@pytest.fixture
def referral_path(services, client, fake, clock, store):
    """A closed HubSpot deal whose contact answered the NPS survey 9 on the page; the referral link."""
    ids = add_deal(fake)
    body, headers = signed(
        [stage_event(ids["deal"], "closedwon", at=clock.now)], url=PUBLIC + "/webhooks/hubspot", at=clock.now
    )
    assert client.post("/webhooks/hubspot", data=body, headers=headers).status_code == 204
    worker = services.worker()
    worker.run_until_idle()
    contact = fake.objects["contacts"][ids["contact"]].properties
    assert contact["offboard_survey_kind"] == "nps"
    survey = link_path(contact["offboard_survey_link"])
    assert survey.startswith("/s/")
    reply = submit(client, survey, score="9", comment="Great team")
    assert reply.status_code == 200
    assert "Thank you, Pat!" in reply.get_data(as_text=True)
    worker.run_until_idle()
    assert contact["offboard_survey_kind"] == "referral"  # the referral ask followed at once
    path = link_path(contact["offboard_survey_link"])
    assert path.startswith("/r/")
    return ids, path


def test_a_nine_is_written_back_to_the_hubspot_contact_and_deal(referral_path, fake):
    ids, _ = referral_path
    contact = fake.objects["contacts"][ids["contact"]].properties
    assert (
        contact["offboard_last_survey_kind"],
        contact["offboard_last_exit_score"],
        contact["offboard_exit_category"],
    ) == ("nps", "9", "promoter")
    answer = "NPS answer: 9 (promoter)<br><br>Great team"
    assert [b for b in notes_on(fake, "contacts", ids["contact"]) if b.startswith(answer)]
    assert [b for b in notes_on(fake, "deals", ids["deal"]) if b.startswith(answer)]


def test_a_referral_through_the_page_is_one_attributed_contact_with_tasks(
    referral_path, services, client, fake, store
):
    ids, path = referral_path
    before = {c.id for c in fake.records("contacts")}
    page = client.get(path)
    assert "Know someone we could help, Pat?" in page.get_data(as_text=True)
    assert submit(client, path, **REFERRAL).status_code == 200
    services.worker().run_until_idle()
    # The link takes one submission: sent again, nothing new (no second contact, no second follow-up).
    csrf = client.get_cookie("offboard_form").value
    again = client.post(path, data={"csrf": csrf, **REFERRAL, "email": "jo.park@globex.example "})
    assert again.status_code == 409 and "Already sent" in again.get_data(as_text=True)
    services.worker().run_until_idle()

    (new,) = [c for c in fake.records("contacts") if c.id not in before]
    props = new.properties
    assert (props["email"], props["firstname"], props["lastname"], props["company"]) == (
        "jo.park@globex.example",
        "Jo",
        "Park",
        "Globex",
    )
    # Attributed: on the deal, with the referrer named on the contact and in a note on all three.
    assert fake.linked(new, "deals") == {ids["deal"]: 4}
    assert props["offboard_referred_by"] == "Pat Lee (pat@acme.example), Acme Corp"
    (note,) = [n for n in fake.records("notes") if new.id in fake.linked(n, "contacts")]
    assert set(fake.linked(note, "contacts")) == {new.id, ids["contact"]}
    assert set(fake.linked(note, "deals")) == {ids["deal"]}
    body = note.properties["hs_note_body"]
    assert body.startswith("Jo Park (Globex) was referred by Pat Lee (pat@acme.example) of Acme Corp")
    assert "Needs a new site in the spring" in body

    tasks = {t.properties["hs_task_subject"]: t for t in fake.records("tasks")}
    follow_up = tasks["Follow up with Jo Park (Globex), introduced by Pat Lee"]
    testimonial = tasks["Pat Lee agreed to a testimonial"]
    assert follow_up.properties["hubspot_owner_id"] == OWNER  # the deal owner
    assert testimonial.properties["hubspot_owner_id"] == MARKETING  # OFFBOARD_ROLES marketing
    for task in (follow_up, testimonial):
        assert fake.linked(task, "deals") == {ids["deal"]: 216}
    assert len(tasks) == len(fake.records("tasks"))  # no subject twice
    assert fake.calls["POST /crm/v3/objects/contacts"] == 1
    with store.session() as session:
        referrals = session.scalars(select(Action).filter_by(kind="referral_contact")).all()
    assert [(a.state, a.result) for a in referrals] == [("done", {"contact_id": new.id})]


def test_a_lost_reply_to_the_contact_create_is_found_by_its_email(referral_path, services, client, fake):
    ids, path = referral_path
    # created, but the answer never arrives
    fake.inject(Fault.LOST_REPLY, route="POST /crm/v3/objects/contacts")
    assert submit(client, path, **REFERRAL).status_code == 200
    services.worker().run_until_idle()
    assert not fake.faults
    made = [c for c in fake.records("contacts") if c.properties["email"] == "jo.park@globex.example"]
    assert len(made) == 1
    assert fake.calls["POST /crm/v3/objects/contacts"] == 2  # the retry met HubSpot's 409
    (note,) = [n for n in fake.records("notes") if made[0].id in fake.linked(n, "contacts")]
    assert set(fake.linked(note, "deals")) == {ids["deal"]}


def test_someone_already_in_hubspot_is_not_created_again_nor_changed(referral_path, services, client, fake):
    ids, path = referral_path
    known = fake.add_record("contacts", {"email": "jo.park@globex.example", "firstname": "Joanna"})
    assert submit(client, path, **REFERRAL).status_code == 200
    services.worker().run_until_idle()
    assert [c.id for c in fake.records("contacts") if "globex" in c.properties["email"]] == [known]
    record = fake.objects["contacts"][known]
    assert record.properties["firstname"] == "Joanna"  # what the agency typed stays
    assert "offboard_referred_by" not in record.properties
    (note,) = [n for n in fake.records("notes") if known in fake.linked(n, "contacts")]
    assert set(fake.linked(note, "contacts")) == {known, ids["contact"]}
    assert "was referred by Pat Lee" in note.properties["hs_note_body"]
    subjects = [t.properties["hs_task_subject"] for t in fake.records("tasks")]
    assert "Follow up with Jo Park (Globex), introduced by Pat Lee" in subjects


def call(fake, method, path, body):
    return fake.handle(method, path, {}, {"Authorization": f"Bearer {TOKEN}"}, json.dumps(body).encode())


@pytest.mark.parametrize(
    ("email", "error"),
    [
        ("jo.park@globex", "INVALID_EMAIL"),  # no TLD
        ('"jo park"@globex.example', "INVALID_EMAIL"),  # a quoted local part
        ("jo..park@globex.example", "INVALID_EMAIL"),
        ("jo park@globex.example", "INVALID_EMAIL"),
        ("", "REQUIRED_FIELD"),
    ],
)
def test_the_fake_refuses_a_contact_without_a_valid_email(fake, email, error):
    status, _, body = call(fake, "POST", "/crm/v3/objects/contacts", {"properties": {"email": email}})
    assert (status, body["category"]) == (400, "VALIDATION_ERROR")
    (problem,) = json.loads(body["message"].removeprefix("Property values were not valid: "))
    assert (problem["name"], problem["error"], problem["isValid"]) == ("email", error, False)
    assert fake.records("contacts") == []


def test_the_fake_answers_a_second_contact_for_an_email_with_hubspots_409(fake):
    status, _, first = call(
        fake, "POST", "/crm/v3/objects/contacts", {"properties": {"email": "jo@globex.example"}}
    )
    assert status == 201
    status, _, body = call(
        fake, "POST", "/crm/v3/objects/contacts", {"properties": {"email": "JO@Globex.example"}}
    )
    assert status == 409
    assert set(body) == {"status", "message", "correlationId", "category"}
    assert (body["status"], body["category"]) == ("error", "CONFLICT")
    assert body["message"] == f"Contact already exists. Existing ID: {first['id']}"
    assert len(fake.records("contacts")) == 1


def test_a_referrer_deleted_from_hubspot_meanwhile_is_still_named_by_id(
    referral_path, services, client, fake
):
    ids, path = referral_path
    assert submit(client, path, **REFERRAL).status_code == 200
    del fake.objects["contacts"][ids["contact"]]  # merged or deleted in HubSpot before the worker ran
    services.worker().run_until_idle()
    (new,) = [c for c in fake.records("contacts") if c.properties["email"] == "jo.park@globex.example"]
    assert new.properties["offboard_referred_by"] == f"contact {ids['contact']}, Acme Corp"
    (note,) = [n for n in fake.records("notes") if new.id in fake.linked(n, "contacts")]
    assert set(fake.linked(note, "contacts")) == {new.id}
    assert set(fake.linked(note, "deals")) == {ids["deal"]}
