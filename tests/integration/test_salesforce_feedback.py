"""The feedback loop on Salesforce: the survey link by email, the answer on the Contact, a referral as a Lead.

A closed Opportunity comes in as an outbound message; the survey and the
referral ask happen at once (no ``send:``), so the test does not wait for
calendar days. Pages are driven with the Flask test client, Salesforce is the
strict fake org behind ``responses``.
"""

from __future__ import annotations

import base64
import re

import pytest
import responses
from sqlalchemy import func, select

from connector.store import Action, Referral
from tests.support.helpers import make_settings
from tests.support.salesforce import (
    OUTBOUND_PATH,
    FakeSalesforce,
    Seeded,
    opportunity_fields,
    outbound_message,
    session_settings,
)

LINK = re.compile(r"https?://\S+/([sr])/(\S+)")


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def marketing(org) -> str:
    return org.add_user("Mo Marketing", "mo@ours.example")


@pytest.fixture
def settings(db_url, org, marketing, exit_nps_playbooks):
    return make_settings(
        db_url,
        **session_settings(org),
        OFFBOARD_PLAYBOOKS=str(exit_nps_playbooks),
        OFFBOARD_ROLES={"marketing": marketing},
    )


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


def closed_won(client, org: FakeSalesforce) -> Seeded:
    """A won Opportunity, announced by an outbound message."""
    seed = org.add_opportunity()
    body = outbound_message([("04l5g0000000001AAA", opportunity_fields(org, seed.opportunity))])
    reply = client.post(OUTBOUND_PATH, data=body, headers={"Content-Type": "text/xml"})
    assert reply.status_code == 200
    return seed


def emailed_link(org: FakeSalesforce, n: int, kind: str) -> str:
    """The path of the personal link in the n-th email the org sent (as the client receives it)."""
    email = org.emails[n]
    assert email["emailAddresses"] == "pat@acme.example"
    found = LINK.search(email["emailBody"])
    assert found and found.group(1) == kind, email["emailBody"]
    return f"/{kind}/{found.group(2)}"


def submit(client, path: str, **form: str):
    """GET the page for its CSRF value, then POST the form, as a browser would."""
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    return client.post(path, data={"csrf": csrf, **form})


def note_contents(org: FakeSalesforce, linked_to: str) -> list[tuple[str, str]]:
    """(title, text) of each ContentNote linked to a record."""
    documents = [
        link["ContentDocumentId"] for link in org.records("ContentDocumentLink", LinkedEntityId=linked_to)
    ]
    notes = [org.db["ContentNote"][d] for d in documents]
    return [(n["Title"], base64.b64decode(n["Content"]).decode()) for n in notes]


def test_a_promoter_s_referral_becomes_one_attributed_lead_with_follow_ups(
    client, services, store, org, http, marketing
):
    seed = closed_won(client, org)
    worker = services.worker()
    worker.run_until_idle()

    # The survey went out by email with its personal link, logged as a completed Task on the contact.
    survey = emailed_link(org, 0, "s")
    assert [t["Subject"] for t in org.records("Task", WhoId=seed.contacts[0])] == ["NPS survey sent"]

    reply = submit(client, survey, score="9", comment="Great team")
    assert reply.status_code == 200 and "Thank you, Pat!" in reply.get_data(as_text=True)
    worker.run_until_idle()

    # The answer is on the Contact and in a note on the Opportunity and the Contact.
    contact = org.db["Contact"][seed.contacts[0]]
    assert (
        contact["Offboard_Last_Survey_Kind__c"],
        contact["Offboard_Last_Exit_Score__c"],
        contact["Offboard_Exit_Category__c"],
    ) == ("nps", 9, "promoter")
    expected_note = ("NPS answer: 9 (promoter)", "<p>NPS answer: 9 (promoter)</p><p></p><p>Great team</p>")
    for record in (seed.opportunity, seed.contacts[0]):
        ((title, text),) = note_contents(org, record)
        assert (title.rsplit(" [", 1)[0], text) == expected_note

    # A 9 unlocked the referral ask: a second email, with the /r/ link.
    referral = emailed_link(org, 1, "r")
    page = client.get(referral)
    assert "Know someone we could help, Pat?" in page.get_data(as_text=True)
    form = {
        "name": "Jo Park",
        "email": "Jo.Park@Example.COM",
        "company": "Globex",
        "note": "Needs a new site",
        "testimonial": "yes",
    }
    assert submit(client, referral, **form).status_code == 200
    worker.run_until_idle()

    (lead,) = org.records("Lead")
    assert (lead["FirstName"], lead["LastName"], lead["Email"], lead["Company"]) == (
        "Jo",
        "Park",
        "jo.park@example.com",
        "Globex",
    )
    assert lead["LeadSource"] == "Partner Referral"  # the org's referral value, read from the describe
    assert lead["Description"] == (
        f"Referred by Pat Lee (contact {seed.contacts[0]}) of Acme Corp, "
        f'on opportunity "Acme website" ({seed.opportunity}).\n\nNeeds a new site'
    )
    (created,) = [a for a in _actions(store) if a.kind == "referral_contact"]
    assert (created.state, created.result) == ("done", {"contact_id": lead["Id"]})

    # The owner follows up on the Lead itself (a Lead's Task can have no Related To); marketing gets
    # the testimonial on the Opportunity; both due the next business day.
    (on_lead,) = org.records("Task", WhoId=lead["Id"])
    assert on_lead["WhatId"] is None
    follow_ups = {
        t["Subject"]: t
        for t in [*org.records("Task", WhatId=seed.opportunity), on_lead]
        if t["Subject"] not in ("NPS survey sent", "Referral request sent")
    }
    assert {s: t["OwnerId"] for s, t in follow_ups.items()} == {
        "Follow up with Jo Park (Globex), introduced by Pat Lee": seed.owner,
        "Pat Lee agreed to a testimonial": marketing,
    }
    assert {(t["Priority"], t["Status"], t["ActivityDate"]) for t in follow_ups.values()} == {
        ("High", "Not Started", "2026-11-23")  # submitted on Friday 2026-11-20: Monday
    }

    # The link takes one submission: a second visit is told so, and nothing more is written.
    tasks_before = len(org.records("Task"))
    assert "Already sent" in client.get(referral).get_data(as_text=True)
    worker.run_until_idle()
    assert len(org.records("Lead")) == 1
    assert len(org.records("Task")) == tasks_before
    assert org.count("POST", "sobjects/Lead") == 1
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Referral)) == 1
    states = {a.step_id: a.state for a in _actions(store) if a.kind != "deadline"}  # the deadline: a week on
    assert set(states.values()) == {"done"}, states


def test_a_referral_of_someone_already_in_the_org_creates_no_lead(client, services, store, org, http):
    existing = org.add_lead("Jo", "Park", "jo.park@example.com", company="Globex")
    closed_won(client, org)
    worker = services.worker()
    worker.run_until_idle()
    submit(client, emailed_link(org, 0, "s"), score="10")
    worker.run_until_idle()
    reply = submit(client, emailed_link(org, 1, "r"), name="Jo Park", email="JO.PARK@example.com")
    assert reply.status_code == 200
    worker.run_until_idle()
    assert [lead["Id"] for lead in org.records("Lead")] == [existing]
    (found,) = [a for a in _actions(store) if a.kind == "referral_contact"]
    assert (found.state, found.result) == ("done", {"contact_id": existing})
    assert org.count("POST", "sobjects/Lead") == 0


def _actions(store) -> list[Action]:
    with store.session() as session:
        return list(session.scalars(select(Action).order_by(Action.id)))
