"""Many accounts in one deployment, end to end, on SQLite and Postgres.

Two HubSpot portals and one Salesforce org are installed through the routes against the fakes
(``GET /install/<crm>``, the CRM's consent, the callback). An operator gives each its own roles
and time zone (``offboard connections set``) and publishes a playbook of its own for the first
portal (``offboard playbooks publish --account``); the second portal and the org use the
deployment's folder. A deal closes in each (a signed HubSpot webhook naming its ``portalId``, an
outbound message to the org's own URL); the worker runs until idle. Each account's tasks are
then in its own portal or org alone, from its own playbooks, owned by its own people and due at
the start of the workday in its own time zone.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from connector.planner import WORKDAY_START
from connector.services import Services, build
from connector.store import Action, Run
from connector.web import create_app
from tests.support.accounts import GLOBEX, install_hubspot, install_salesforce, operator, salesforce_host
from tests.support.helpers import BUNDLED_PLAYBOOKS, make_settings
from tests.support.hubspot import (
    FakeHubSpot,
    add_deal,
    oauth_overrides,
    offboard_properties,
    serve,
    signed,
    stage_event,
    standard_portal,
)
from tests.support.salesforce import (
    CONSUMER_KEY,
    CONSUMER_SECRET,
    FakeSalesforce,
    opportunity_fields,
    outbound_message,
)

PUBLIC = "https://offboard.agency.example"
SECRET = "the-deployments-secret-key-for-many-accounts-0042"
FIRST, SECOND = 81_000_001, 82_000_002  # HubSpot portals
ZONES = {
    "first": "America/New_York",
    "second": "Asia/Tokyo",
    # 09:00 in Auckland is the evening before in UTC: a Task's date shows whose zone was used.
    "globex": "Pacific/Auckland",
}
FOLDER_PLAYBOOK = "completed-project"  # the deployment folder's playbook for a won project
OWN_PLAYBOOK = """\
id: first-portal-close
name: The first portal's own close-out
version: 1
tone: neutral
match: {outcome: [won]}
anchor: run_start
steps:
  - id: handover-pack
    task: {title: "First portal: send the handover pack", due: +1bd, owner: deal_owner}
  - id: close-books
    task: {title: "First portal: close the books", due: +3bd, owner: role:finance}
"""
OWN_TITLES = {"First portal: send the handover pack", "First portal: close the books"}


@pytest.fixture
def hubspot(clock) -> FakeHubSpot:
    host = offboard_properties(standard_portal(FakeHubSpot(clock=clock, token=None, portal_id=FIRST)))
    offboard_properties(standard_portal(host.add_portal(SECOND)))
    return host


@pytest.fixture
def salesforce(clock):
    with salesforce_host(clock) as acme:
        yield acme


@pytest.fixture
def env(db_url, hubspot, httpserver) -> dict[str, Any]:
    """The deployment's environment: installs on, no private-app token, no session of its own."""
    return {
        "OFFBOARD_PUBLIC_URL": PUBLIC,
        "OFFBOARD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "OFFBOARD_SECRET_KEY": SECRET,
        "OFFBOARD_SWEEP_INTERVAL_SECONDS": "0",
        "SALESFORCE_CONSUMER_KEY": CONSUMER_KEY,
        "SALESFORCE_CONSUMER_SECRET": CONSUMER_SECRET,
        **oauth_overrides(serve(hubspot, httpserver)),
    }


@pytest.fixture
def services(db_url, store, clock, env) -> Services:
    return build(make_settings(db_url, **env), store=store, clock=clock)


def test_three_installed_accounts_each_get_their_own_checklist_in_their_own_crm(
    db_url, services, store, clock, env, hubspot, salesforce, tmp_path
):
    client = create_app(services).test_client()
    install_hubspot(client, hubspot, FIRST, PUBLIC)
    install_hubspot(client, hubspot, SECOND, PUBLIC)
    globex_url = install_salesforce(client, salesforce, GLOBEX, PUBLIC)
    globex = next(o for o in salesforce.orgs.values() if o is not salesforce)

    # Each account's own people: a finance owner only its own CRM knows.
    hubspot.portal(FIRST).add_owner("8101", "fiona@first.example", "Fiona", "First")
    hubspot.portal(SECOND).add_owner("8202", "sora@second.example", "Sora", "Second")
    finance = {
        "first": "8101",
        "second": "8202",
        "globex": globex.add_user("Gus Globex", "gus@globex.example"),
    }
    offboard = operator(
        {"OFFBOARD_DATABASE_URL": db_url, "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS), **env},
        env["OFFBOARD_ENCRYPTION_KEYS"],
    )
    for name, (crm, account) in accounts().items():
        offboard(
            "connections", "set", crm, account, f"role.finance={finance[name]}", f"time_zone={ZONES[name]}"
        )
    own = tmp_path / "first-portal-close.yaml"
    own.write_text(OWN_PLAYBOOK)
    offboard(
        "playbooks", "publish", str(own), "--account", f"hubspot:{FIRST}", "--by", "revops@first.example"
    )

    deals = close_deals(client, hubspot, globex, globex_url, clock.now)
    services.worker().run_until_idle()

    runs = runs_by_account(store)
    assert set(runs) == {("hubspot", str(FIRST)), ("hubspot", str(SECOND)), ("salesforce", GLOBEX)}
    assert runs["hubspot", str(FIRST)].playbook_id == "first-portal-close"
    assert runs["hubspot", str(SECOND)].playbook_id == FOLDER_PLAYBOOK
    assert runs["salesforce", GLOBEX].playbook_id == FOLDER_PLAYBOOK
    planned = {key: planned_tasks(store, run.id) for key, run in runs.items()}
    assert {t["title"] for t in planned["hubspot", str(FIRST)]} == OWN_TITLES
    assert not OWN_TITLES & {t["title"] for t in planned["hubspot", str(SECOND)]}
    assert_hubspot_portal(hubspot, FIRST, deals["first"], planned["hubspot", str(FIRST)], "first", finance)
    assert_hubspot_portal(
        hubspot, SECOND, deals["second"], planned["hubspot", str(SECOND)], "second", finance
    )
    assert_globex(globex, deals["globex"], planned["salesforce", GLOBEX], finance["globex"])
    assert not salesforce.db["Task"], "the host's own org is not installed here: nothing is written there"


def accounts() -> dict[str, tuple[str, str]]:
    return {
        "first": ("hubspot", str(FIRST)),
        "second": ("hubspot", str(SECOND)),
        "globex": ("salesforce", GLOBEX),
    }


def close_deals(
    client: Any, hubspot: FakeHubSpot, globex: FakeSalesforce, globex_url: str, now: datetime
) -> dict[str, str]:
    """A won deal in each account, told to the deployment as each CRM tells it."""
    deals = {
        "first": add_deal(hubspot.portal(FIRST), name="First's website")["deal"],
        "second": add_deal(hubspot.portal(SECOND), name="Second's app", company="Beta KK")["deal"],
    }
    events = [
        stage_event(deals["first"], "closedwon", event_id=1, portal_id=FIRST, at=now),
        stage_event(deals["second"], "closedwon", event_id=1, portal_id=SECOND, at=now),
    ]
    body, headers = signed(events, url=PUBLIC + "/webhooks/hubspot", at=now)
    assert client.post("/webhooks/hubspot", data=body, headers=headers).status_code == 204
    seeded = globex.add_opportunity("Globex rebrand", account="Globex Corp")
    message = outbound_message(
        [("04l5g0000000009AAA", opportunity_fields(globex, seeded.opportunity))], org_id=GLOBEX
    )
    assert client.post(globex_url, data=message, content_type="text/xml").status_code == 200
    return deals | {"globex": seeded.opportunity}


def runs_by_account(store: Any) -> dict[tuple[str, str], Run]:
    with store.read() as session:
        runs = list(session.scalars(select(Run)))
    assert len(runs) == 3, [(r.crm, r.account) for r in runs]
    return {(r.crm, r.account): r for r in runs}


def planned_tasks(store: Any, run_id: int) -> list[dict[str, Any]]:
    """The tasks the run planned, from its task actions, every one written."""
    with store.read() as session:
        actions = list(session.scalars(select(Action).where(Action.run_id == run_id, Action.kind == "task")))
    assert actions and all(a.state == "done" for a in actions), [(a.state, a.last_error) for a in actions]
    return [task for action in actions for task in action.payload["tasks"]]


def assert_due_at_workday_start(planned: list[dict[str, Any]], zone: ZoneInfo) -> None:
    for task in planned:
        due = datetime.fromisoformat(task["due_at"])
        assert due.astimezone(zone).time() == WORKDAY_START, (zone, task["due_at"])


def assert_hubspot_portal(
    hubspot: FakeHubSpot,
    portal_id: int,
    deal_id: str,
    planned: list[dict[str, Any]],
    name: str,
    finance: dict[str, str],
) -> None:
    """The portal holds its run's tasks, and only those, on its own deal, owned and dated as its own."""
    portal = hubspot.portal(portal_id)
    tasks = {t.properties["hs_task_subject"]: t for t in portal.records("tasks")}
    assert set(tasks) == {t["title"] for t in planned}, portal_id
    assert all(portal.linked(t, "deals") == {deal_id: 216} for t in tasks.values())
    zone = ZoneInfo(ZONES[name])
    assert_due_at_workday_start(planned, zone)
    for spec in planned:
        written = tasks[spec["title"]]
        due = datetime.fromtimestamp(int(written.properties["hs_timestamp"]) / 1000, UTC)
        assert due.astimezone(zone).time() == WORKDAY_START, (portal_id, spec["title"])
        assert written.properties["hubspot_owner_id"] == spec["owner_id"]
    by_finance = [t for t in tasks.values() if t.properties["hubspot_owner_id"] == finance[name]]
    assert by_finance, f"portal {portal_id}: no task for its own finance owner"
    others = {v for k, v in finance.items() if k != name}
    assert not any(t.properties["hubspot_owner_id"] in others for t in tasks.values())


def assert_globex(globex: FakeSalesforce, opportunity: str, planned: list[dict[str, Any]], fin: str) -> None:
    """The org holds its run's tasks on its opportunity, owned by its finance user where the
    playbook says role:finance, each on the local date in the org's own time zone."""
    tasks = [t for t in globex.db["Task"].values() if t.get("WhatId") == opportunity]
    assert sorted(t["Subject"] for t in tasks) == sorted(t["title"] for t in planned)
    zone = ZoneInfo(ZONES["globex"])
    assert_due_at_workday_start(planned, zone)
    dates = {t["title"]: datetime.fromisoformat(t["due_at"]).astimezone(zone).date() for t in planned}
    assert {t["Subject"]: t["ActivityDate"] for t in tasks} == {k: d.isoformat() for k, d in dates.items()}
    invoice = next(t for t in planned if t["step_id"] == "final-invoice")
    assert invoice["owner_id"] == fin
    assert fin in {t["OwnerId"] for t in tasks}
