"""A real browser through the NPS page: the score reaches the CRM and picks the next step."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from adapters.sandbox import SandboxAdapter
from connector.demo import post, wait_for
from connector.store import Action, Run, Store
from tests.support.browser import DESKTOP, PHONE, browser, require_browser
from tests.support.helpers import WEBHOOK_SECRET, deal_closed_today, signed
from tests.support.playbooks import exit_nps_referral
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def chromium():
    return require_browser()


@pytest.fixture
def live(tmp_path, sqlite_url):
    folder = exit_nps_referral(tmp_path / "playbooks", detractor_call=True)
    env = {
        "OFFBOARD_DATABASE_URL": sqlite_url,
        "OFFBOARD_PLAYBOOKS": str(folder),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
    }
    server = ServerProcess(env, log=tmp_path / "server.log").start()
    store = Store.from_url(sqlite_url)
    yield server, SandboxAdapter(store), store
    server.stop()
    store.dispose()


def survey_link(server, sandbox, deal_id):
    body, headers = signed(deal_closed_today(deal_id))
    assert post(server.url, body, headers)[0] == 202
    invites = wait_for(lambda: sandbox.invites(deal_id), 20)
    assert invites, "the survey was not sent"
    return invites[0].link


def answer_in_browser(chromium, link, score, viewport):
    with browser(chromium) as instance:
        page = instance.new_page(viewport=viewport)
        page.goto(link)
        assert page.locator("h1").inner_text() == "Thank you for a great project, Pat!"
        page.get_by_label(str(score), exact=True).check()  # each radio is labelled by its score
        page.get_by_label("What is the main reason for your score?").fill("Typed in a real browser")
        page.get_by_role("button", name="Send my answer").click()
        page.wait_for_load_state()
        return page.locator("h1").inner_text(), page.url


def test_a_promoter_answers_in_a_browser_and_gets_the_referral_ask(chromium, live):
    server, sandbox, _ = live
    link = survey_link(server, sandbox, "B-9")
    heading, _ = answer_in_browser(chromium, link, 9, DESKTOP)
    assert heading == "Thank you, Pat!"
    props = wait_for(lambda: sandbox.properties("contact", "contact-1").get("offboard_last_exit_score"), 20)
    assert props == "9"
    assert wait_for(lambda: [i for i in sandbox.invites("B-9") if i.kind == "referral"], 20)
    assert not [t for t in sandbox.tasks("B-9") if t.step_id == "detractor-call"]


def test_a_detractor_on_a_phone_gets_a_call_and_no_ask(chromium, live):
    server, sandbox, store = live
    link = survey_link(server, sandbox, "B-3")
    heading, _ = answer_in_browser(chromium, link, 3, PHONE)
    assert heading == "Thank you, Pat!"
    calls = wait_for(lambda: [t for t in sandbox.tasks("B-3") if t.step_id == "detractor-call"], 20)
    assert [c.subject for c in calls] == ["Call Pat about their score"]
    with store.session() as session:
        skipped = session.scalars(
            select(Action).join(Run).where(Run.deal_id == "B-3", Action.step_id == "referral-ask")
        ).one()
    assert (skipped.state, skipped.last_error) == ("skipped", "skipped: score 3 is not >= 9")
    assert [i.kind for i in sandbox.invites("B-3")] == ["nps"]
    assert json.loads(server.cli("runs", "--format", "json").stdout)
