"""Two HubSpot portals installed by OAuth in one deployment, each kept apart: its own tasks,
roles and time zone; a revoked install disconnects its portal alone, and installing it again
resumes what waited. No private-app token: every call carries a portal's OAuth access token.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from adapters.hubspot import oauth
from adapters.hubspot.install import HubSpotApp
from adapters.hubspot.ratelimit import account_key
from adapters.hubspot.settings import HubSpotSettings
from connector import queue
from connector.keyring import Keyring
from connector.planner import WORKDAY_START
from connector.playbooks.registry import PlaybookRegistry
from connector.services import Services, installed_adapters
from connector.store import Action, Event, Run
from connector.store.tables import RateCall
from connector.tokens import TokenKeeper
from connector.usecases.uow import unit_of_work
from connector.web import create_app
from tests.integration.test_connections import every_value
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    FINANCE,
    MARKETING,
    PORTAL_ID,
    REDIRECT_URI,
    TOKEN,
    FakeHubSpot,
    add_deal,
    oauth_overrides,
    offboard_properties,
    serve,
    signed,
    stage_event,
    standard_portal,
)

PUBLIC = "https://offboard.example.com"
FIRST, SECOND = 71_000_001, 72_000_002
ZONES = {FIRST: "America/New_York", SECOND: "Europe/Berlin"}
FINANCE_OWNER = {FIRST: FINANCE, SECOND: MARKETING}  # the first keeps the deployment's role
INVOICE = "final-invoice"  # the bundled project playbook's step owned by role:finance


@pytest.fixture
def fake(clock) -> FakeHubSpot:
    host = offboard_properties(standard_portal(FakeHubSpot(clock=clock, token=None, portal_id=FIRST)))
    offboard_properties(standard_portal(host.add_portal(SECOND)))
    return host


@pytest.fixture
def services(db_url, store, clock, fake, httpserver) -> Services:
    return installed_services(db_url, store, clock, serve(fake, httpserver))


def installed_services(db_url: str, store: Any, clock: Any, url: str, **extra: Any) -> Services:
    """What a deployment with installs on builds: no private-app token, the keyring, the token
    keeper (its OAuth app on the test's clock, as the fake's token lifetimes are)."""
    settings = make_settings(
        db_url,
        OFFBOARD_PUBLIC_URL=PUBLIC,
        OFFBOARD_ENCRYPTION_KEYS=Fernet.generate_key().decode(),
        OFFBOARD_SWEEP_INTERVAL_SECONDS=0,
        OFFBOARD_ROLES={"finance": FINANCE},
        **oauth_overrides(url),
        **extra,
    )
    keyring = Keyring.from_settings(settings)
    assert keyring is not None
    portal = HubSpotSettings.of(settings)
    keeper = TokenKeeper(store, keyring, settings, clock, apps=lambda crm: HubSpotApp(portal, clock=clock))
    return Services(
        settings=settings,
        store=store,
        playbooks=PlaybookRegistry(settings.playbooks),
        adapters=installed_adapters(settings, store, keeper),
        clock=clock,
        tokens=keeper,
    )


def install(services: Services, fake: FakeHubSpot, portal_id: int) -> oauth.Tokens:
    """An admin of ``portal_id`` installs the app: the code exchanged, the connection saved."""
    portal = HubSpotSettings.of(services.settings)
    code = fake.authorize(portal_id, scopes=HubSpotSettings.scopes)
    tokens = oauth.exchange_code(portal, code, REDIRECT_URI, clock=services.clock)
    assert services.tokens is not None
    services.tokens.connections.save_install(
        "hubspot",
        str(tokens.portal_id),
        access_token=tokens.access_token,
        refresh_token=tokens.refresh_token,
        expires_at=tokens.expires_at,
        scopes=tokens.scopes,
        installed_by=tokens.user,
    )
    return tokens


def configure(services: Services, portal_id: int, **values: str) -> None:
    assert services.tokens is not None
    changes = [(key.replace("__", "."), value) for key, value in values.items()]
    services.tokens.connections.configure("hubspot", str(portal_id), changes)


def deliver(services: Services, events: list[dict[str, Any]]) -> None:
    body, headers = signed(events, url=PUBLIC + "/webhooks/hubspot", at=services.clock())
    reply = create_app(services).test_client().post("/webhooks/hubspot", data=body, headers=headers)
    assert reply.status_code == 204, reply.get_data(as_text=True)


def rows(store, table) -> list[Any]:
    with store.session() as session:
        return list(session.scalars(select(table).order_by(table.id)))


def run_everything(services: Services, rounds: int = 40) -> None:
    """Work until nothing is due but what waits for a disconnected account to be installed
    again, jumping the clock to whatever is due next."""
    clock, store = services.clock, services.store
    worker = services.worker()
    for _ in range(rounds):
        worker.run_until_idle()
        due = [e.available_at for e in rows(store, Event) if e.state == "pending"]
        due += [a.due_at for a in rows(store, Action) if a.state == "pending" and not disconnected(a)]
        if not due:
            return
        clock.now = max(clock.now, min(due)) + timedelta(seconds=1)  # type: ignore[attr-defined]
    raise AssertionError(f"work left: {[(a.kind, a.state, a.last_error) for a in rows(store, Action)]}")


def disconnected(action: Action) -> bool:
    return " is disconnected" in (action.last_error or "")


def close_deal(services: Services, fake: FakeHubSpot, portal_id: int, event_id: int, **deal: Any) -> str:
    ids = add_deal(fake.portal(portal_id), **deal)
    deliver(services, [stage_event(ids["deal"], "closedwon", event_id=event_id, portal_id=portal_id)])
    return ids["deal"]


def task_actions(store, portal_id: int) -> list[Action]:
    """The portal's checklist batches (not the escalations of tasks left open, nor the steps
    that wait for a task to be completed)."""
    runs = {r.id for r in rows(store, Run) if r.account == str(portal_id)}
    return [a for a in rows(store, Action) if a.run_id in runs and a.kind == "task" and a.step_id == "tasks"]


def api_calls(fake: FakeHubSpot, portal_id: int) -> int:
    """Calls to the portal's records (the host's OAuth endpoints aside)."""
    return sum(n for route, n in fake.portal(portal_id).calls.items() if " /oauth/" not in route)


@pytest.fixture
def two_portals(services, fake) -> dict[int, str]:
    """Both portals installed, each with its own settings; a deal closed in each."""
    install(services, fake, FIRST)
    install(services, fake, SECOND)
    configure(services, FIRST, time_zone=ZONES[FIRST])
    configure(services, SECOND, time_zone=ZONES[SECOND], role__finance=MARKETING)
    first = close_deal(services, fake, FIRST, 1, name="First's project")
    second = close_deal(services, fake, SECOND, 1, name="Second's project", company="Beta GmbH")
    return {FIRST: first, SECOND: second}


def test_each_portals_deal_gets_its_tasks_in_its_own_portal_with_its_own_roles_and_time_zone(
    services, fake, store, two_portals
):
    run_everything(services)
    assert {a.state for a in rows(store, Action)} == {"done"}
    runs = rows(store, Run)
    assert sorted((r.crm, r.account, r.deal_id) for r in runs) == sorted(
        ("hubspot", str(p), d) for p, d in two_portals.items()
    )
    for portal_id, deal_id in two_portals.items():
        portal = fake.portal(portal_id)
        (batch,) = task_actions(store, portal_id)
        planned = batch.payload["tasks"]
        checklist = {t["title"] for t in planned}
        tasks = [t for t in portal.records("tasks") if t.properties["hs_task_subject"] in checklist]
        assert len(tasks) == len(planned) > 0
        assert all(portal.linked(t, "deals") == {deal_id: 216} for t in tasks)
        invoice = next(t for t in planned if t["step_id"] == INVOICE)
        assert invoice["owner_id"] == FINANCE_OWNER[portal_id]
        zone = ZoneInfo(ZONES[portal_id])
        for spec in planned:
            due = datetime.fromisoformat(spec["due_at"])
            assert due.astimezone(zone).time() == WORKDAY_START, (portal_id, spec["due_at"])
        written = next(t for t in tasks if t.properties["hs_task_subject"] == invoice["title"])
        assert written.properties["hubspot_owner_id"] == FINANCE_OWNER[portal_id]
    # Each portal's calls drew on its own budget, keyed by its portal id.
    portal = HubSpotSettings.of(services.settings)
    with store.session() as session:
        keys = set(session.scalars(select(RateCall.key).where(RateCall.key.startswith("hubspot:"))))
    assert {key.rsplit(":", 1)[0] for key in keys} == {account_key(portal, str(p)) for p in (FIRST, SECOND)}
    # The same day, nine o'clock in New York and in Berlin: six hours apart.
    first, second = (
        datetime.fromisoformat(next(t for t in task_actions(store, p)[0].payload["tasks"])["due_at"])
        for p in (FIRST, SECOND)
    )
    assert first - second == timedelta(hours=6)


def test_no_token_is_in_any_table_or_log_line(services, fake, store, two_portals, clock, caplog):
    caplog.set_level(logging.DEBUG)
    services.worker().process_events()
    fake.expire(services.tokens.token("hubspot", str(FIRST))())  # one refresh on the way
    fake.revoke(portal_id=SECOND)  # and one refused
    run_everything(services)
    issued = [*fake.oauth.access, *fake.oauth.installs]  # every access and refresh token
    assert len(issued) >= 5
    shown = every_value(store) + caplog.text
    assert [token for token in issued if token in shown] == []


def test_an_event_for_a_portal_with_no_connection_is_stored_and_ignored_with_the_reason(
    services, fake, store
):
    install(services, fake, FIRST)
    stranger = 73_000_003
    deliver(services, [stage_event("4242", "closedwon", event_id=9, portal_id=stranger)])
    services.worker().run_until_idle()
    (event,) = rows(store, Event)
    assert (event.account, event.state) == (str(stranger), "ignored")
    assert event.outcome == f"no connection to the hubspot account {stranger} is installed here"
    assert rows(store, Run) == []
    assert api_calls(fake, FIRST) == api_calls(fake, SECOND) == 0


def test_a_revoked_install_disconnects_its_portal_alone_and_installing_again_resumes_its_actions(
    services, fake, store, two_portals, clock
):
    # The first portal uninstalls the app before its deal's actions are written.
    services.worker().process_events()
    fake.revoke(portal_id=FIRST)
    run_everything(services)

    waiting = [a for a in rows(store, Action) if a.state == "pending"]
    assert waiting and {a.run_id for a in waiting} == {
        r.id for r in rows(store, Run) if r.account == str(FIRST)
    }
    assert all(a.last_error.startswith(f"the hubspot account {FIRST} is disconnected") for a in waiting)
    assert all(a.attempts == 0 for a in waiting)  # waiting used no attempt
    assert fake.portal(FIRST).records("tasks") == []
    assert {a.state for a in task_actions(store, SECOND)} == {"done"}  # the other portal went on
    second = task_actions(store, SECOND)[0].payload["tasks"]
    titles = {t["title"] for t in second}
    assert len(
        [t for t in fake.portal(SECOND).records("tasks") if t.properties["hs_task_subject"] in titles]
    ) == len(second)
    stored = services.tokens.connections.get("hubspot", str(FIRST))
    assert stored.status == "disconnected" and "BAD_REFRESH_TOKEN" in stored.status_reason

    # Its webhooks are still answered 2xx, stored, and settled ignored with the reason.
    another = add_deal(fake.portal(FIRST), name="Later project")["deal"]
    deliver(services, [stage_event(another, "closedwon", event_id=2, portal_id=FIRST)])
    services.worker().process_events()
    late = [e for e in rows(store, Event) if (e.account, e.event_key) == (str(FIRST), "2")]
    assert [e.state for e in late] == ["ignored"]
    assert f"the hubspot account {FIRST} is disconnected" in late[0].outcome

    # Installed again: what waited is due now, and completes, each task written once.
    install(services, fake, FIRST)
    with unit_of_work(store, actor="install", clock=clock) as uow:
        assert queue.resume_account(uow.session, "hubspot", str(FIRST), now=uow.now) == len(waiting)
    services.worker().run_until_idle()
    assert {a.state for a in rows(store, Action)} == {"done"}
    planned = task_actions(store, FIRST)[0].payload["tasks"]
    titles = {t["title"] for t in planned}
    written = [t.properties["hs_task_subject"] for t in fake.portal(FIRST).records("tasks")]
    assert sorted(t for t in written if t in titles) == sorted(titles)  # besides, escalations of overdue ones


def test_the_contract_end_sweep_lists_each_installed_portals_own_deals(services, fake, store, clock):
    install(services, fake, FIRST)
    install(services, fake, SECOND)
    soon = (clock.now.date() + timedelta(days=10)).isoformat()
    ending = {p: add_deal(fake.portal(p), contract_type="retainer", contract_end=soon)["deal"] for p in ZONES}
    report = services.worker().sweep()
    names = {f"hubspot:{FIRST}", f"hubspot:{SECOND}"}
    assert set(report.found) - {"sandbox"} == names  # the sandbox is the environment's, always on
    assert report.found[f"hubspot:{FIRST}"] == report.found[f"hubspot:{SECOND}"] == 1
    assert report.queued == 2 and report.errors == {}
    events = [e for e in rows(store, Event) if e.source == "sweep"]
    assert sorted((e.account, e.payload["deal"]["id"]) for e in events) == sorted(
        (str(p), d) for p, d in ending.items()
    )
    # Each portal keeps its own cursor: the next sweep asks each for what changed since.
    assert services.worker().sweep().queued == 0


def test_the_environments_private_app_portal_and_an_installed_portal_work_side_by_side(
    db_url, store, clock, httpserver
):
    host = offboard_properties(standard_portal(FakeHubSpot(clock=clock)))  # the private app's portal
    offboard_properties(standard_portal(host.add_portal(SECOND)))
    services = installed_services(db_url, store, clock, serve(host, httpserver), HUBSPOT_ACCESS_TOKEN=TOKEN)
    install(services, host, SECOND)
    mine = close_deal(services, host, PORTAL_ID, 1, name="Private app's project")
    theirs = close_deal(services, host, SECOND, 1, name="Installed portal's project")
    run_everything(services)
    assert {a.state for a in rows(store, Action)} == {"done"}
    assert sorted((r.account, r.deal_id) for r in rows(store, Run)) == sorted(
        [(str(PORTAL_ID), mine), (str(SECOND), theirs)]
    )
    for portal_id, deal_id in ((PORTAL_ID, mine), (SECOND, theirs)):
        tasks = host.portal(portal_id).records("tasks")
        assert tasks and all(host.portal(portal_id).linked(t, "deals") == {deal_id: 216} for t in tasks)


def test_an_event_met_by_the_disconnect_waits_for_the_reinstall_and_then_starts_its_run(
    services, fake, store, clock
):
    install(services, fake, FIRST)
    deal = close_deal(services, fake, FIRST, 1)
    fake.revoke(portal_id=FIRST)  # uninstalled before the event was read
    worker = services.worker()
    worker.process_events()
    (event,) = rows(store, Event)
    assert event.state == "pending" and event.attempts == 0
    assert event.outcome.startswith(f"the hubspot account {FIRST} is disconnected")
    clock.advance(seconds=301)
    worker.process_events()  # still disconnected: it keeps waiting rather than being dropped
    (event,) = rows(store, Event)
    assert event.state == "pending" and "BAD_REFRESH_TOKEN" in event.outcome
    assert rows(store, Run) == []

    install(services, fake, FIRST)
    with unit_of_work(store, actor="install", clock=clock) as uow:
        assert queue.resume_account(uow.session, "hubspot", str(FIRST), uow.now) == 1
    run_everything(services)
    (event,) = rows(store, Event)
    (run,) = rows(store, Run)
    assert event.state == "done" and (run.account, run.deal_id) == (str(FIRST), deal)
    assert {a.state for a in rows(store, Action)} == {"done"}


def test_a_portals_own_contract_properties_decide_its_playbook(services, fake, store):
    install(services, fake, FIRST)
    install(services, fake, SECOND)
    second = fake.portal(SECOND)
    second.define_property("deals", "engagement_kind")
    second.define_property("deals", "engagement_end", "date")
    configure(
        services, SECOND, contract_type_property="engagement_kind", contract_end_property="engagement_end"
    )
    ids = {p: add_deal(fake.portal(p), contract_type="retainer") for p in (FIRST, SECOND)}
    second.set_property("deals", ids[SECOND]["deal"], "engagement_kind", "project")
    second.set_property("deals", ids[SECOND]["deal"], "engagement_end", "2027-01-29")
    events = [stage_event(ids[p]["deal"], "closedwon", event_id=1, portal_id=p) for p in (FIRST, SECOND)]
    deliver(services, events)
    services.worker().process_events()
    runs = {r.account: r for r in rows(store, Run)}
    assert runs[str(FIRST)].playbook_id != "completed-project"  # a retainer, as its contract_type says
    assert runs[str(SECOND)].playbook_id == "completed-project"  # a project, as engagement_kind says
    assert runs[str(SECOND)].deal["contract_end"] == "2027-01-29"


def test_an_installed_orgs_contract_fields_and_zone_are_its_own_over_the_environments(services):
    from adapters import installed_connection

    assert services.tokens is not None
    repo = services.tokens.connections
    org = "00D5g000004XyZaEAK"
    repo.save_install(
        "salesforce",
        org,
        access_token="00D5g000004XyZa!session",
        refresh_token="5Aep861refresh",
        expires_at=None,
        instance_url="https://acme.my.salesforce.com",
    )
    repo.configure("salesforce", org, [("contract_end_property", "End__c"), ("time_zone", "Asia/Tokyo")])
    connection = installed_connection(services.settings, repo.require("salesforce", org), None)
    environment = services.settings.crm("salesforce")
    assert (connection.crm, connection.account, str(connection.zone)) == ("salesforce", org, "Asia/Tokyo")
    assert connection.instance_url == "https://acme.my.salesforce.com"
    assert connection.settings.contract_end_field == "End__c"  # type: ignore[attr-defined]
    assert connection.settings.contract_type_field == environment.contract_type_field  # type: ignore[attr-defined]


def test_the_sweep_looks_as_far_ahead_as_each_accounts_own_playbooks_need(
    db_url, store, clock, fake, httpserver, tmp_path
):
    import shutil

    from connector.playbooks.published import PublishedPlaybooks, read_drafts
    from tests.support.helpers import BUNDLED_PLAYBOOKS

    folder = tmp_path / "folder"  # the deployment's: nothing starts from a contract's end
    folder.mkdir()
    shutil.copy(BUNDLED_PLAYBOOKS / "completed-project.yaml", folder)
    own = tmp_path / "contract-ending.yaml"  # the first portal's own: 45 days ahead
    own.write_text((BUNDLED_PLAYBOOKS / "contract-ending.yaml").read_text().replace("lead: 30d", "lead: 45d"))
    services = installed_services(
        db_url, store, clock, serve(fake, httpserver), OFFBOARD_PLAYBOOKS=str(folder)
    )
    install(services, fake, FIRST)
    install(services, fake, SECOND)
    PublishedPlaybooks(store, clock=clock).publish("hubspot", str(FIRST), read_drafts([own]), by="revops")
    in_40_days = (clock.now.date() + timedelta(days=40)).isoformat()
    for portal_id in (FIRST, SECOND):
        add_deal(fake.portal(portal_id), contract_type="retainer", contract_end=in_40_days)
    report = services.worker().sweep()
    assert report.found.get(f"hubspot:{FIRST}") == 1 and f"hubspot:{SECOND}" not in report.found
    assert [e.account for e in rows(store, Event) if e.source == "sweep"] == [str(FIRST)]
