"""Client pages and the texts that ask for an answer name the sender: the deployment's brand
(OFFBOARD_BRAND_*), or on a link's page the brand of the installed account its run belongs to."""

from __future__ import annotations

import re
from typing import Any

import pytest
import responses
from cryptography.fernet import Fernet
from sqlalchemy import select

from adapters.salesforce.adapter import SalesforceAdapter
from connector.connections import Connections
from connector.keyring import Keyring
from connector.models import Deal, Invite
from connector.services import Services, build
from connector.settings import load_settings
from connector.store import Action, Run
from connector.usecases import offboarding
from connector.usecases.accounts import account_context
from connector.usecases.uow import unit_of_work
from connector.web import create_app
from tests.support.feedback import SURVEY_DAY, path_of
from tests.support.helpers import deal_closed_event, make_settings, signed
from tests.support.salesforce import FakeSalesforce, session_settings

BRAND = {
    "OFFBOARD_BRAND_NAME": "Northwind Studio",
    "OFFBOARD_BRAND_LOGO_URL": "https://cdn.northwind.example/logo.png",
    "OFFBOARD_BRAND_REPLY_TO": "hello@northwind.example",
}


@pytest.fixture
def db_url(sqlite_url: str) -> str:
    """What a page shows does not depend on the database: SQLite only."""
    return sqlite_url


def surveyed(db_url: str, store: Any, clock: Any, **settings: Any) -> tuple[Any, Any, str, str]:
    """A client, services and the survey and referral paths of a completed project."""
    services = build(make_settings(db_url, **settings), store=store, clock=clock)
    client = create_app(services).test_client()
    body, headers = signed(deal_closed_event())
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    worker = services.worker()
    worker.run_until_idle()
    clock.now = SURVEY_DAY
    worker.run_until_idle()
    (invite,) = services.adapters["sandbox"].invites("D-1")
    survey = path_of(invite.link)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(survey).get_data(as_text=True)).group(1)
    assert client.post(survey, data={"csrf": csrf, "score": "10"}).status_code == 200
    clock.advance(days=5)
    worker.run_until_idle()
    referral = next(i for i in services.adapters["sandbox"].invites("D-1") if i.kind == "referral")
    return services, client, survey, path_of(referral.link)


def test_every_client_page_names_the_sender(db_url, store, clock):
    _, client, survey, referral = surveyed(db_url, store, clock, **BRAND)
    csrf = client.get_cookie("offboard_form").value
    pages = {
        "referral form": client.get(referral),
        "referral error": client.post(referral, data={"csrf": csrf, "email": "x"}),
        "referral thanks": client.post(referral, data={"csrf": csrf, "testimonial": "yes"}),
        "already sent": client.get(referral),
        "already answered": client.get(survey),
        "forged link": client.get(survey[:-4] + "AAAA"),
        "refused post": client.post(survey, data={"score": "9"}),
        "missing page": client.get("/s/"),
    }
    for what, page in pages.items():
        html = page.get_data(as_text=True)
        assert "Northwind Studio" in html, what
        assert '<img class="logo" src="https://cdn.northwind.example/logo.png"' in html, what
        assert 'href="mailto:hello@northwind.example"' in html, what
        csp = page.headers["Content-Security-Policy"]
        assert "img-src 'self' https://cdn.northwind.example;" in csp, (what, csp)
    assert "It was sent by Northwind Studio, the team that worked with Acme Corp." in pages[
        "referral form"
    ].get_data(as_text=True)


def test_without_a_brand_the_pages_show_no_logo_and_allow_no_foreign_image(db_url, store, clock):
    _, client, _, referral = surveyed(db_url, store, clock)
    page = client.get(referral)
    html = page.get_data(as_text=True)
    assert "<img" not in html and "mailto:" not in html
    assert "It was sent on behalf of the team that worked with Acme Corp." in html
    assert "img-src 'self';" in page.headers["Content-Security-Policy"]


@pytest.mark.parametrize("logo", ["javascript:alert(1)", "https://cdn.example/x.png; script-src *", "data:x"])
def test_a_logo_url_that_is_not_a_plain_http_url_is_not_shown_or_allowed(db_url, store, clock, logo):
    _, client, _, referral = surveyed(db_url, store, clock, OFFBOARD_BRAND_LOGO_URL=logo)
    page = client.get(referral)
    assert "<img" not in page.get_data(as_text=True)
    assert "img-src 'self';" in page.headers["Content-Security-Policy"]
    assert "script-src" not in page.headers["Content-Security-Policy"]


def test_the_worker_puts_the_sender_on_every_invite(db_url, store, clock):
    services, *_ = surveyed(db_url, store, clock, **BRAND)
    with store.session() as session:
        sends = list(
            session.scalars(
                select(Action).where(Action.kind.in_(["survey", "referral"]), Action.state == "done")
            )
        )
    assert sends
    handlers = services.worker().performer.handlers
    for action in sends:
        handler = handlers[action.kind]
        invite = handler.invite(handler.parse(action))
        assert (invite.sender, invite.reply_to) == ("Northwind Studio", "hello@northwind.example")


def test_the_salesforce_invite_email_names_the_sender_and_the_reply_address(tmp_path):
    org = FakeSalesforce()
    seed = org.add_opportunity()
    settings = make_settings(f"sqlite:///{tmp_path}/unused.db", **session_settings(org))
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        adapter = SalesforceAdapter.from_settings(settings)
        adapter.send_invite(
            Invite(
                step_id="exit-nps",
                kind="nps",
                deal_id=seed.opportunity,
                contact_id=seed.contacts[0],
                email="pat@acme.example",
                link="https://offboard.example/s/abc",
                sender="Northwind Studio",
                reply_to="hello@northwind.example",
            ),
            "k" * 32,
        )
    (email,) = org.emails
    assert email["emailSubject"] == "One quick question · Northwind Studio"
    assert email["emailBody"].endswith(
        "https://offboard.example/s/abc\n\nThank you.\nNorthwind Studio\n"
        "Questions? Write to hello@northwind.example."
    )


def test_the_hubspot_invite_note_names_the_sender(clock, httpserver):
    from tests.support.hubspot import (
        FakeHubSpot,
        add_deal,
        fake_time_adapter,
        offboard_properties,
        serve,
        settings_overrides,
        standard_portal,
    )

    fake = offboard_properties(standard_portal(FakeHubSpot(clock=clock)))
    adapter = fake_time_adapter(load_settings(**settings_overrides(serve(fake, httpserver))), clock)
    ids = add_deal(fake)
    invite = Invite(
        step_id="exit-nps",
        kind="nps",
        deal_id=ids["deal"],
        contact_id=ids["contact"],
        email="pat@acme.example",
        link="https://offboard.example/s/tok",
        sender="Northwind Studio",
    )
    adapter.send_invite(invite, "ab" * 32)  # keys are sha256 hex digests
    (note,) = fake.records("notes")
    assert "NPS survey on behalf of Northwind Studio to pat@acme.example" in note.properties["hs_note_body"]


# --- each installed account's own brand -------------------------------------------------------

ACCOUNT_BRANDS: dict[str, dict[str, str]] = {
    "111": {
        "brand_name": "Fabrikam Partners",
        "brand_logo_url": "https://img.fabrikam.example/brand/mark.svg",
        "brand_reply_to": "care@fabrikam.example",
    },
    "222": {
        "brand_name": "Contoso Consulting",
        "brand_logo_url": "https://assets.contoso.example/logo.png",
        "brand_reply_to": "team@contoso.example",
    },
    "333": {},  # installed, with no brand of its own: the deployment's
}
SHOWN = {
    "111": ("Fabrikam Partners", "https://img.fabrikam.example/brand/mark.svg", "care@fabrikam.example"),
    "222": ("Contoso Consulting", "https://assets.contoso.example/logo.png", "team@contoso.example"),
    "333": ("Northwind Studio", "https://cdn.northwind.example/logo.png", "hello@northwind.example"),
}
LOGO_HOSTS = {
    "https://img.fabrikam.example",
    "https://assets.contoso.example",
    "https://cdn.northwind.example",
}


def started_in_accounts(db_url: str, store: Any, clock: Any) -> tuple[Services, dict[str, int]]:
    """Three installed HubSpot accounts, each with its brand settings and a run for a closed deal."""
    settings = make_settings(db_url, OFFBOARD_ENCRYPTION_KEYS=Fernet.generate_key().decode(), **BRAND)
    services = build(settings, store=store, clock=clock)
    repo = Connections(store, Keyring.from_settings(settings), clock=clock)
    runs = {}
    for account, brand in ACCOUNT_BRANDS.items():
        repo.save_install(
            "hubspot", account, access_token=f"token-{account}", refresh_token=None, expires_at=None
        )
        repo.configure("hubspot", account, list(brand.items()))
        deal = Deal(crm="hubspot", account=account, **deal_closed_event(f"D-{account}")["deal"])
        with unit_of_work(store, actor="worker", clock=clock) as uow:
            context = account_context(uow.session, settings, "hubspot", account, uow.now)
            offboarding.start_offboarding(
                uow, deal, services.playbooks, context, trigger="deal_closed", event_id=None
            )
        with store.read() as session:
            runs[account] = session.scalars(select(Run.id).filter_by(account=account)).one()
    return services, runs


def link_of(services: Services, run_id: int, kind: str) -> str:
    """The path of the personal link the worker would send for the run's first ``kind`` action."""
    with services.store.read() as session:
        action = session.scalars(
            select(Action).where(Action.run_id == run_id, Action.kind == kind).order_by(Action.id)
        ).first()
    assert action is not None, (run_id, kind)
    handler = services.worker().performer.handlers[kind]
    return path_of(handler.invite(handler.parse(action)).link)


def assert_shows(page: Any, account: str) -> None:
    """The page names the account's sender, shows its logo, and allows images from its host alone."""
    name, logo, reply_to = SHOWN[account]
    html = page.get_data(as_text=True)
    assert name in html and f'<img class="logo" src="{logo}"' in html, (account, html)
    assert f'href="mailto:{reply_to}"' in html
    others = [n for a, (n, *_) in SHOWN.items() if n != name]
    assert not any(other in html for other in others), account
    csp = page.headers["Content-Security-Policy"]
    own_host = logo_host(logo)
    assert f"img-src 'self' {own_host};" in csp, (account, csp)
    assert not any(host in csp for host in LOGO_HOSTS - {own_host}), (account, csp)


def logo_host(url: str) -> str:
    return "/".join(url.split("/", 3)[:3])


def test_each_accounts_link_shows_its_own_brand_and_allows_only_its_logo_host(db_url, store, clock):
    services, runs = started_in_accounts(db_url, store, clock)
    client = create_app(services).test_client()
    surveys = {account: link_of(services, run, "survey") for account, run in runs.items()}
    for account, survey in surveys.items():
        assert_shows(client.get(survey), account)
    # Answering, the thanks and "already answered" pages are the account's too.
    for account in ("222", "111"):
        client.get(surveys[account])
        csrf = client.get_cookie("offboard_form").value
        answered = client.post(surveys[account], data={"csrf": csrf, "score": "10"})
        assert answered.status_code == 200
        assert_shows(answered, account)
        again = client.get(surveys[account])
        assert again.status_code == 409
        assert_shows(again, account)
    # A promoter's referral ask: its page too.
    referral = client.get(link_of(services, runs["222"], "referral"))
    assert referral.status_code == 200
    assert_shows(referral, "222")
    # Outside a link, the deployment's brand.
    missing = client.get("/s/")
    assert missing.status_code == 404
    assert_shows(missing, "333")
    forged = client.get(surveys["111"][:-4] + "AAAA")
    assert forged.status_code == 404
    assert_shows(forged, "333")


def test_an_accounts_brand_set_later_shows_on_its_next_page(db_url, store, clock):
    services, runs = started_in_accounts(db_url, store, clock)
    client = create_app(services).test_client()
    survey = link_of(services, runs["333"], "survey")
    assert_shows(client.get(survey), "333")
    repo = Connections(store, Keyring.from_settings(services.settings), clock=clock)
    repo.configure("hubspot", "333", list(ACCOUNT_BRANDS["111"].items()))
    assert_shows(client.get(survey), "111")
    repo.configure("hubspot", "333", [("brand_logo_url", "")])  # its logo unset: the deployment's
    page = client.get(survey)
    html = page.get_data(as_text=True)
    assert "Fabrikam Partners" in html and 'src="https://cdn.northwind.example/logo.png"' in html
    assert "img-src 'self' https://cdn.northwind.example;" in page.headers["Content-Security-Policy"]


def test_each_installed_accounts_survey_invitation_names_its_own_sender(db_url, store, clock, httpserver):
    from tests.integration.test_installed_accounts import (
        FIRST,
        SECOND,
        close_deal,
        configure,
        install,
        installed_services,
    )
    from tests.support.hubspot import FakeHubSpot, offboard_properties, serve, standard_portal

    fake = offboard_properties(standard_portal(FakeHubSpot(clock=clock, token=None, portal_id=FIRST)))
    offboard_properties(standard_portal(fake.add_portal(SECOND)))
    services = installed_services(db_url, store, clock, serve(fake, httpserver), **BRAND)
    install(services, fake, FIRST)
    install(services, fake, SECOND)
    configure(services, FIRST, brand_name="Fabrikam Partners", brand_reply_to="care@fabrikam.example")
    close_deal(services, fake, FIRST, 1)
    close_deal(services, fake, SECOND, 1)
    worker = services.worker()
    worker.run_until_idle()
    clock.now = SURVEY_DAY
    worker.run_until_idle()
    for portal_id, sender in ((FIRST, "Fabrikam Partners"), (SECOND, "Northwind Studio")):
        bodies = [n.properties["hs_note_body"] for n in fake.portal(portal_id).records("notes")]
        surveys = [b for b in bodies if "NPS survey on behalf of" in b]
        assert surveys, (portal_id, bodies)
        assert all(f"on behalf of {sender} " in b for b in surveys), (portal_id, surveys)
