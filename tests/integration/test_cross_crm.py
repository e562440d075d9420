"""One bundled playbook, two CRMs: equivalent deals get the same checklist in HubSpot and Salesforce.

One process with both adapters on, as an agency with clients in both CRMs
would run it. The HubSpot fake is served by pytest-httpserver (its SDK speaks
urllib3); the Salesforce fake sits behind ``responses`` (simple-salesforce
speaks requests). Both deals mirror ``tests.support.helpers.deal_closed_event``: a won
project for Acme Corp, contact Pat Lee, owner Sam Rivera, contract ending
2026-12-31, so the bundled ``completed-project`` playbook picks both.

The account zone is Auckland: tasks are due at 09:00 there, which is the day
before in UTC, so comparing HubSpot's due instant with Salesforce's due date
only agrees when both are read in the account's zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest
import responses
from sqlalchemy import select

from connector.store import Action, Run
from connector.web import create_app
from tests.support.harness import tasks_per_run
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    FINANCE,
    OWNER,
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
from tests.support.salesforce import (
    OUTBOUND_PATH,
    FakeSalesforce,
    opportunity_fields,
    outbound_message,
    session_settings,
)

PUBLIC = "https://offboard.example.com"
ZONE = "Pacific/Auckland"
PRIORITIES = {"HIGH": "High", "MEDIUM": "Normal", "LOW": "Low"}
TYPES = {"TODO": None, "CALL": "Call", "EMAIL": "Email"}


@pytest.fixture
def hubspot(clock) -> FakeHubSpot:
    return offboard_properties(standard_portal(FakeHubSpot(clock=clock)))


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def sf_finance(org) -> str:
    return org.add_user("Fin Ance", "fin@agency.example")


@pytest.fixture
def services(db_url, store, clock, hubspot, httpserver, org, sf_finance):
    overrides = settings_overrides(serve(hubspot, httpserver), OFFBOARD_SWEEP_INTERVAL_SECONDS=0)
    overrides["OFFBOARD_ROLES"] = {
        "finance": {"hubspot": FINANCE, "salesforce": sf_finance},
        "marketing": {"hubspot": OWNER, "salesforce": sf_finance},
    }
    settings = make_settings(
        db_url, OFFBOARD_PUBLIC_URL=PUBLIC, OFFBOARD_TIMEZONE=ZONE, **overrides, **session_settings(org)
    )
    return hubspot_services(settings, store, clock)


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


def local_date(millis: str) -> tuple[str, time]:
    """A HubSpot due instant (epoch ms) as the account's local date and time of day."""
    moment = datetime.fromtimestamp(int(millis) / 1000, UTC).astimezone(ZoneInfo(ZONE))
    return moment.date().isoformat(), moment.time()


def test_the_bundled_playbook_gives_the_same_checklist_in_hubspot_and_salesforce(
    services, store, clock, hubspot, org, http, sf_finance
):
    client = create_app(services).test_client()
    hs = add_deal(hubspot)
    body, headers = signed(
        [stage_event(hs["deal"], "closedwon", at=clock.now)], url=PUBLIC + "/webhooks/hubspot", at=clock.now
    )
    assert client.post("/webhooks/hubspot", data=body, headers=headers).status_code == 204
    sf = org.add_opportunity()
    body = outbound_message([("04l5g0000000001AAA", opportunity_fields(org, sf.opportunity))])
    assert client.post(OUTBOUND_PATH, data=body, headers={"Content-Type": "text/xml"}).status_code == 200

    services.worker().run_until_idle()

    with store.session() as session:
        runs = {r.crm: r.playbook_id for r in session.scalars(select(Run))}
        batches = {
            a.run.crm: [t["step_id"] for t in a.payload["tasks"]]
            for a in session.scalars(select(Action).where(Action.step_id == "tasks"))
        }
    assert runs == {"hubspot": "completed-project", "salesforce": "completed-project"}
    assert batches["hubspot"] == batches["salesforce"] and len(batches["hubspot"]) == tasks_per_run()

    in_hubspot = [
        (
            t.properties["hs_task_subject"],
            *local_date(t.properties["hs_timestamp"]),
            t.properties["hubspot_owner_id"],
            PRIORITIES[t.properties["hs_task_priority"]],
            TYPES[t.properties["hs_task_type"]],
        )
        for t in hubspot.records("tasks")
    ]
    in_salesforce = [
        (t["Subject"], t["ActivityDate"], t["OwnerId"], t["Priority"], t.get("Type"))
        for t in org.records("Task")
    ]
    owners = {OWNER: sf.owner, FINANCE: sf_finance}  # deal owner ↔ Opportunity owner; role:finance mapped

    assert [s for s, *_ in in_hubspot] == [s for s, *_ in in_salesforce]  # same titles, same order
    assert {at for _, _, at, *_ in in_hubspot} == {time(9, 0)}  # the start of the working day, in the zone
    assert [
        (subject, day, owners[owner], priority, kind) for subject, day, _, owner, priority, kind in in_hubspot
    ] == in_salesforce

    # Spot checks against the playbook, so "the same" is not "the same and both wrong".
    checklist = {subject: (day, owner) for subject, day, owner, *_ in in_salesforce}
    assert checklist["Confirm the end date with Acme Corp"] == ("2026-12-01", sf.owner)  # -30d
    assert checklist["Send the final invoice to Acme Corp"] == (
        "2026-12-21",
        sf_finance,
    )  # -10d, role:finance
    assert checklist["Back up, then transfer files, accounts and credentials to Acme Corp"] == (
        "2026-12-28",
        sf.owner,
    )  # -5d is a Saturday: the Monday
    retention = "Delete or archive Acme Corp's data as the contract requires"
    assert checklist[retention] == ("2027-01-07", sf.owner)  # +7d
    assert checklist["Check in with Pat at Acme Corp"] == ("2027-02-11", sf.owner)  # +6w
    # Revocation waits for the transfer task to be completed, in either CRM.
    assert not any(subject.startswith("Revoke") for subject in checklist)

    # The playbook's field update landed on both deals too.
    assert hubspot.objects["deals"][hs["deal"]].properties["offboarding_status"] == "in progress"
    assert org.db["Opportunity"][sf.opportunity]["Offboarding_Status__c"] == "in progress"
