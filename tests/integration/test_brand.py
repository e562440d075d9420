"""Client pages and the texts that ask for an answer name the sender (OFFBOARD_BRAND_*)."""

from __future__ import annotations

import re
from typing import Any

import pytest
import responses
from sqlalchemy import select

from adapters.salesforce.adapter import SalesforceAdapter
from connector.models import Invite
from connector.services import build
from connector.settings import load_settings
from connector.store import Action
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
