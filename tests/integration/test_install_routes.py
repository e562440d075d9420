"""Installing by OAuth through the routes: ``GET /install/<crm>`` → the CRM's consent → the callback.

Two HubSpot portals and one Salesforce org are installed into one deployment against the
fakes, as an admin's browser would (the fakes' ``consent`` follows the install link and
approves it). The state check (forged, expired, reused, missing) and a refused code each
answer 400 and store nothing.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from connector import installs
from connector.connections import Connections
from connector.keyring import Keyring
from connector.services import build
from connector.store import AuditEntry, Base
from connector.web import create_app
from tests.support.accounts import GLOBEX, salesforce_host
from tests.support.helpers import make_settings
from tests.support.hubspot import FakeHubSpot, oauth_overrides, serve, standard_portal
from tests.support.salesforce import CONSUMER_KEY, CONSUMER_SECRET

PUBLIC = "https://offboard.agency.example"
OTHER_PORTAL = 99_000_222
KEY = Fernet.generate_key().decode()
SECRET = "the-deployments-secret-key-for-install-tests-0042"


@pytest.fixture
def hubspot(clock) -> FakeHubSpot:
    host = standard_portal(FakeHubSpot(clock=clock))
    standard_portal(host.add_portal(OTHER_PORTAL))
    return host


@pytest.fixture
def org(clock):
    with salesforce_host(clock) as acme:
        yield acme


@pytest.fixture
def services(db_url, store, clock, hubspot, httpserver, org):
    settings = make_settings(
        db_url,
        OFFBOARD_PUBLIC_URL=PUBLIC,
        OFFBOARD_ENCRYPTION_KEYS=KEY,
        OFFBOARD_SECRET_KEY=SECRET,
        SALESFORCE_CONSUMER_KEY=CONSUMER_KEY,
        SALESFORCE_CONSUMER_SECRET=CONSUMER_SECRET,
        **oauth_overrides(serve(hubspot, httpserver)),
    )
    return build(settings, store=store, clock=clock)


@pytest.fixture
def client(services):
    return create_app(services).test_client()


@pytest.fixture
def repo(services):
    return Connections(services.store, Keyring.from_settings(services.settings), clock=services.clock)


def callback_path(url: str) -> str:
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == PUBLIC
    return f"{parts.path}?{parts.query}"


def install_hubspot(client, hubspot: FakeHubSpot, portal_id: int):
    started = client.get("/install/hubspot")
    assert started.status_code == 302
    return client.get(callback_path(hubspot.consent(started.headers["Location"], portal_id=portal_id)))


def stored_rows(store) -> str:
    """Every value of every table, as text."""
    with store.engine.connect() as connection:
        return "\n".join(
            repr(tuple(row))
            for table in Base.metadata.sorted_tables
            for row in connection.execute(text(f'SELECT * FROM "{table.name}"'))
        )


def test_the_install_link_sends_the_admin_to_hubspot_with_the_apps_client_id_scopes_and_a_signed_state(
    client, services
):
    answer = client.get("/install/hubspot")
    assert answer.status_code == 302
    link = urlsplit(answer.headers["Location"])
    query = {k: v[0] for k, v in parse_qs(link.query).items()}
    assert query["client_id"] == services.settings.crm("hubspot").client_id
    assert query["redirect_uri"] == f"{PUBLIC}/oauth/hubspot/callback"
    assert "crm.objects.deals.read" in query["scope"].split()
    assert len(query["state"]) > 40 and "." in query["state"]  # signed, not a bare nonce


def test_two_portals_install_through_the_routes_each_its_own_connection_and_properties(
    client, hubspot, repo, store
):
    first = install_hubspot(client, hubspot, hubspot.portal_id)
    second = install_hubspot(client, hubspot, OTHER_PORTAL)
    assert first.status_code == second.status_code == 200
    assert f"portal {OTHER_PORTAL}" in second.get_data(as_text=True)
    installed = {c.account: c for c in repo.list_all()}
    assert set(installed) == {str(hubspot.portal_id), str(OTHER_PORTAL)}
    assert all(c.status == "connected" and c.has_refresh_token for c in installed.values())
    # The properties Offboard writes were created in each portal by the install.
    for portal in hubspot.portals.values():
        assert "offboard_survey_link" in portal.schema["contacts"]
    # No token in clear anywhere in the database.
    dump = stored_rows(store)
    for token in hubspot.oauth.access:
        assert token not in dump


def test_installing_again_into_the_same_portal_updates_its_connection(client, hubspot, repo, store):
    install_hubspot(client, hubspot, OTHER_PORTAL)
    before = repo.get("hubspot", str(OTHER_PORTAL)).access_token().get_secret_value()
    assert install_hubspot(client, hubspot, OTHER_PORTAL).status_code == 200
    assert len(repo.list_all()) == 1
    assert repo.get("hubspot", str(OTHER_PORTAL)).access_token().get_secret_value() != before
    with store.read() as session:
        assert session.scalars(select(AuditEntry.verb).where(AuditEntry.verb.like("connection.%"))).all() == [
            "connection.installed",
            "connection.reinstalled",
        ]


def test_a_forged_state_answers_400_and_stores_nothing(client, hubspot, repo):
    started = client.get("/install/hubspot")
    back = hubspot.consent(started.headers["Location"], portal_id=OTHER_PORTAL)
    forged = back.replace("state=", "state=x")
    answer = client.get(callback_path(forged))
    assert answer.status_code == 400
    assert "not one this deployment made" in answer.get_data(as_text=True)
    assert repo.list_all() == []


def test_a_reused_state_answers_400_the_second_time(client, hubspot, repo):
    started = client.get("/install/hubspot")
    back = callback_path(hubspot.consent(started.headers["Location"], portal_id=OTHER_PORTAL))
    assert client.get(back).status_code == 200
    again = client.get(back)
    assert again.status_code == 400 and "already used" in again.get_data(as_text=True)
    assert len(repo.list_all()) == 1


def test_a_state_older_than_ten_minutes_answers_400_and_stores_nothing(client, hubspot, repo, clock):
    started = client.get("/install/hubspot")
    back = callback_path(hubspot.consent(started.headers["Location"], portal_id=OTHER_PORTAL))
    clock.advance(minutes=11)
    answer = client.get(back)
    assert answer.status_code == 400 and "expired" in answer.get_data(as_text=True)
    assert repo.list_all() == []


def test_a_missing_state_or_code_answers_400(client, repo):
    assert client.get("/oauth/hubspot/callback?code=abc").status_code == 400
    assert client.get("/oauth/hubspot/callback?state=abc").status_code == 400
    denied = client.get("/oauth/hubspot/callback?error=access_denied&error_description=The+user+said+no")
    assert denied.status_code == 400 and "The user said no" in denied.get_data(as_text=True)
    assert repo.list_all() == []


def test_a_code_hubspot_refuses_answers_400_and_stores_nothing(client, hubspot, repo):
    started = client.get("/install/hubspot")
    back = hubspot.consent(started.headers["Location"], portal_id=OTHER_PORTAL)
    code = parse_qs(urlsplit(back).query)["code"][0]
    wrong = back.replace(f"code={code}", "code=na1-not-a-code")
    answer = client.get(callback_path(wrong))
    assert answer.status_code == 400
    body = answer.get_data(as_text=True)
    assert "refused the install" in body and "na1-not-a-code" not in body
    assert repo.list_all() == []


def test_installs_are_off_without_encryption_keys(db_url, store, clock, hubspot, httpserver):
    settings = make_settings(
        db_url, OFFBOARD_PUBLIC_URL=PUBLIC, **oauth_overrides(serve(hubspot, httpserver))
    )
    client = create_app(build(settings, store=store, clock=clock)).test_client()
    answer = client.get("/install/hubspot")
    assert answer.status_code == 503 and "OFFBOARD_ENCRYPTION_KEYS" in answer.get_data(as_text=True)
    assert client.get("/install/pipedrive").status_code == 404


def test_a_salesforce_org_installs_with_pkce_and_its_org_id_from_the_identity_url(client, org, repo):
    started = client.get("/install/salesforce")
    assert started.status_code == 302
    link = started.headers["Location"]
    query = {k: v[0] for k, v in parse_qs(urlsplit(link).query).items()}
    assert link.startswith("https://login.salesforce.com/services/oauth2/authorize?")
    assert query["response_type"] == "code" and query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == f"{PUBLIC}/oauth/salesforce/callback"
    assert "code_verifier" not in link  # the verifier stays on the server
    answer = client.get(callback_path(org.consent(link, org_id=GLOBEX)))
    assert answer.status_code == 200, answer.get_data(as_text=True)
    (stored,) = repo.list_all()
    assert stored.crm == "salesforce" and stored.account == GLOBEX
    assert stored.instance_url == "https://globex.my.salesforce.com"


def test_a_salesforce_callback_with_a_code_for_another_challenge_answers_400(client, org, repo):
    first = client.get("/install/salesforce").headers["Location"]
    second = client.get("/install/salesforce").headers["Location"]
    code = parse_qs(urlsplit(org.consent(first, org_id=GLOBEX)).query)["code"][0]
    other_state = parse_qs(urlsplit(org.consent(second, org_id=GLOBEX)).query)["state"][0]
    # The second install's state with the first install's code: its verifier does not match.
    answer = client.get(f"/oauth/salesforce/callback?code={code}&state={other_state}")
    assert answer.status_code == 400
    assert repo.list_all() == []


def test_an_installed_org_posts_its_outbound_messages_to_its_own_url_and_only_it(client, org, store):
    import html
    import re

    from tests.support.salesforce import outbound_message

    link = client.get("/install/salesforce").headers["Location"]
    page = client.get(callback_path(org.consent(link, org_id=GLOBEX))).get_data(as_text=True)
    url = html.unescape(re.search(r"(https://\S+/webhooks/salesforce\?org=\S+&amp;key=[\w-]+)", page)[1])
    own = url.removeprefix(PUBLIC)
    assert f"org={GLOBEX}" in own
    body = outbound_message([("04l000000000001AAA", {"Id": "0065g0000000001AAA"})], org_id=GLOBEX)
    answer = client.post(own, data=body, content_type="text/xml")
    assert answer.status_code == 200 and b"<Ack>true</Ack>" in answer.data
    with store.read() as session:
        from connector.store import Event

        assert session.scalars(select(Event.account).where(Event.source == "salesforce")).all() == [GLOBEX]
    # Another org's id with this org's key, or this org with a made-up key: refused, nothing stored.
    forged = own.replace(f"org={GLOBEX}", "org=00D5g00000Other")
    assert client.post(forged, data=body, content_type="text/xml").status_code == 401
    wrong_key = re.sub(r"key=[\w-]+", "key=" + "x" * 43, own)
    assert client.post(wrong_key, data=body, content_type="text/xml").status_code == 401


def test_deals_close_in_two_installed_portals_and_an_installed_org_each_gets_its_tasks_in_its_own_account(
    client, services, hubspot, org, store, clock
):
    import html
    import re

    from tests.support.hubspot import add_deal, offboard_properties, signed, stage_event
    from tests.support.salesforce import opportunity_fields, outbound_message

    offboard_properties(hubspot)
    offboard_properties(hubspot.portal(OTHER_PORTAL))
    for portal_id in (hubspot.portal_id, OTHER_PORTAL):
        assert install_hubspot(client, hubspot, portal_id).status_code == 200
    link = client.get("/install/salesforce").headers["Location"]
    page = client.get(callback_path(org.consent(link, org_id=GLOBEX))).get_data(as_text=True)
    own_url = html.unescape(re.search(r"https://\S+/webhooks/salesforce\?org=\S+&amp;key=[\w-]+", page)[0])

    # Each account's own finance person (the bundled playbooks' role:finance).
    globex = next(o for o in org.orgs.values() if o is not org)
    repo = Connections(services.store, Keyring.from_settings(services.settings), clock=clock)
    repo.configure("hubspot", str(hubspot.portal_id), [("role.finance", "102")])
    repo.configure("hubspot", str(OTHER_PORTAL), [("role.finance", "103")])
    fin = globex.add_user("Fin Globex", "fin@globex.example")
    repo.configure("salesforce", GLOBEX, [("role.finance", fin)])

    deals = {p: add_deal(hubspot.portal(p))["deal"] for p in (hubspot.portal_id, OTHER_PORTAL)}
    events = [
        stage_event(d, "closedwon", event_id=n, portal_id=p, at=clock.now)
        for n, (p, d) in enumerate(deals.items())
    ]
    body, headers = signed(events, url=PUBLIC + "/webhooks/hubspot", at=clock.now)
    assert client.post("/webhooks/hubspot", data=body, headers=headers).status_code == 204
    seeded = globex.add_opportunity("Globex rebrand", account="Globex Corp")
    message = outbound_message(
        [("04l5g0000000009AAA", opportunity_fields(globex, seeded.opportunity))], org_id=GLOBEX
    )
    assert client.post(own_url.removeprefix(PUBLIC), data=message, content_type="text/xml").status_code == 200

    services.worker().run_until_idle()

    for portal_id, deal_id in deals.items():
        tasks = hubspot.portal(portal_id).records("tasks")
        assert tasks and all(hubspot.portal(portal_id).linked(t, "deals") == {deal_id: 216} for t in tasks)
        owners = {t.properties["hubspot_owner_id"] for t in tasks}
        assert ("102" in owners) == (portal_id == hubspot.portal_id)  # its own finance person
        assert ("103" in owners) == (portal_id == OTHER_PORTAL)
    in_globex = [t for t in globex.db["Task"].values() if t.get("WhatId") == seeded.opportunity]
    assert len(in_globex) >= 10 and fin in {t["OwnerId"] for t in in_globex}
    assert not [t for t in org.db["Task"].values()]  # the environment's org (Acme) got nothing
    with store.read() as session:
        from connector.store import Run

        assert sorted((r.crm, r.account) for r in session.scalars(select(Run))) == sorted(
            [("hubspot", str(hubspot.portal_id)), ("hubspot", str(OTHER_PORTAL)), ("salesforce", GLOBEX)]
        )


def test_an_installed_orgs_session_that_salesforce_ends_early_is_renewed_once_and_the_work_finishes(
    client, services, org, store, clock
):
    from tests.support.salesforce import opportunity_fields, outbound_message

    link = client.get("/install/salesforce").headers["Location"]
    assert client.get(callback_path(org.consent(link, org_id=GLOBEX))).status_code == 200
    globex = next(o for o in org.orgs.values() if o is not org)
    repo = Connections(services.store, Keyring.from_settings(services.settings), clock=clock)
    repo.configure(
        "salesforce", GLOBEX, [("role.finance", globex.add_user("Fin Globex", "fin@globex.example"))]
    )
    first_session = repo.get("salesforce", GLOBEX).access_token().get_secret_value()
    org.expire(first_session)  # ended before its time: an admin's session timeout, a revoke
    seeded = globex.add_opportunity("Globex rebrand", account="Globex Corp")
    message = outbound_message(
        [("04l5g0000000007AAA", opportunity_fields(globex, seeded.opportunity))], org_id=GLOBEX
    )
    own = f"/webhooks/salesforce?org={GLOBEX}&key={installs.inbound_key(SECRET, 'salesforce', GLOBEX)}"
    assert client.post(own, data=message, content_type="text/xml").status_code == 200

    services.worker().run_until_idle()

    assert org.refresh_calls == 1
    assert len([t for t in globex.db["Task"].values() if t.get("WhatId") == seeded.opportunity]) >= 10
    renewed = repo.get("salesforce", GLOBEX).access_token().get_secret_value()
    assert renewed != first_session and renewed not in stored_rows(store)


def test_an_installed_orgs_flow_callouts_go_to_its_own_url_and_only_it(client, org, store):
    link = client.get("/install/salesforce").headers["Location"]
    assert client.get(callback_path(org.consent(link, org_id=GLOBEX))).status_code == 200
    key = installs.inbound_key(SECRET, "salesforce", GLOBEX)
    body = {
        "recordId": "0065g0000000001AAA",
        "fields": {"IsClosed": True, "LastModifiedDate": "2026-11-20T14:59:58Z"},
    }
    answer = client.post(f"/webhooks/salesforce/flow?org={GLOBEX}&key={key}", json=body)
    assert answer.status_code == 202, answer.get_data(as_text=True)
    assert (
        client.post(f"/webhooks/salesforce/flow?org=00D5g00000Other&key={key}", json=body).status_code == 401
    )
    with store.read() as session:
        from connector.store import Event

        assert session.scalars(select(Event.account).where(Event.source == "salesforce")).all() == [GLOBEX]
