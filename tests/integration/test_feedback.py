"""The feedback loop on the sandbox CRM: survey links, answers, branching, referrals, fatigue."""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from connector.store import Action, Answer, Referral, Run
from tests.support.feedback import SURVEY_DAY, path_of
from tests.support.helpers import deal_closed_event, signed


def deliver(client, event):
    body, headers = signed(event)
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202


@pytest.fixture
def surveyed(client, services, clock):
    """A completed project whose exit NPS survey has just been sent; returns the survey path."""
    deliver(client, deal_closed_event())
    worker = services.worker()
    worker.run_until_idle()
    clock.now = SURVEY_DAY
    worker.run_until_idle()
    (invite,) = services.adapters["sandbox"].invites("D-1")
    assert invite.kind == "nps" and invite.contact_id == "contact-1"
    assert invite.link.startswith(f"{services.settings.public_url}/s/")
    return path_of(invite.link)


def answer(client, path, **form):
    page = client.get(path)
    assert page.status_code == 200, page.get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    return client.post(path, data={"csrf": csrf, **form})


def actions(store, **filters):
    with store.session() as session:
        return list(session.scalars(select(Action).filter_by(**filters).order_by(Action.id)))


def test_the_survey_page_speaks_to_the_client(client, surveyed):
    page = client.get(surveyed)
    html = page.get_data(as_text=True)
    assert "Thank you for a great project, Pat!" in html  # completed-project is celebratory
    assert "We loved working with Acme Corp." in html
    assert html.count('type="radio" name="score"') == 11
    assert "<legend>How likely are you to recommend us to a friend or colleague?</legend>" in html
    assert page.headers["X-Frame-Options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_a_promoter_gets_the_referral_ask_and_no_detractor_call(client, services, store, surveyed, clock):
    reply = answer(client, surveyed, score="9", comment="Great team")
    assert reply.status_code == 200
    assert "Thank you, Pat!" in reply.get_data(as_text=True)
    services.worker().run_until_idle()
    sandbox = services.adapters["sandbox"]
    assert sandbox.properties("contact", "contact-1") == {
        "offboard_last_survey_kind": "nps",
        "offboard_last_exit_score": "9",
        "offboard_exit_category": "promoter",
    }
    assert any(n.body == "NPS answer: 9 (promoter)\n\nGreat team" for n in sandbox.notes("D-1"))
    (ask,) = actions(store, step_id="referral-ask")
    assert (ask.state, ask.due_at) == (
        "pending",
        datetime(2027, 1, 4, 9, 0, tzinfo=UTC),
    )  # +2d, a Sunday: Monday
    clock.now = ask.due_at
    services.worker().run_until_idle()
    kinds = [i.kind for i in sandbox.invites("D-1")]
    assert kinds == ["nps", "referral"]
    assert [t.step_id for t in sandbox.tasks("D-1") if t.step_id == "future-work"] == ["future-work"]
    assert not [t for t in sandbox.tasks("D-1") if t.step_id == "detractor-call"]
    (skipped,) = actions(store, step_id="detractor-call")
    assert (skipped.state, skipped.last_error) == ("skipped", "skipped: score 9 is not <= 6")
    with store.session() as session:
        stored = session.scalars(select(Answer)).one()
        assert (stored.score, stored.comment, stored.kind) == (9, "Great team", "nps")


def test_a_detractor_gets_a_call_within_a_business_day_and_no_ask(client, services, store, surveyed, clock):
    clock.now = datetime(2027, 1, 8, 16, 0, tzinfo=UTC)  # answered on a Friday afternoon
    assert answer(client, surveyed, score="3").status_code == 200
    services.worker().run_until_idle()
    sandbox = services.adapters["sandbox"]
    (call,) = [t for t in sandbox.tasks("D-1") if t.step_id == "detractor-call"]
    assert (call.owner_id, call.type, call.priority) == ("owner-1", "call", "high")
    assert call.due_at == datetime(2027, 1, 11, 9, 0, tzinfo=UTC)  # +1bd from Friday: Monday
    assert [i.kind for i in sandbox.invites("D-1")] == ["nps"]
    reasons = {a.step_id: a.last_error for a in actions(store, state="skipped")}
    assert reasons == {
        "referral-ask": "skipped: score 3 is not >= 9",
        "future-work": "skipped: score 3 is not >= 7",
        "nps-reminder": "skipped: the survey was answered",
    }


def test_a_survey_can_be_answered_once(client, services, store, surveyed):
    assert answer(client, surveyed, score="8").status_code == 200
    again = client.get(surveyed)
    assert again.status_code == 409
    assert "You have already answered" in again.get_data(as_text=True)
    csrf = client.get_cookie("offboard_form").value
    assert client.post(surveyed, data={"csrf": csrf, "score": "1"}).status_code == 409
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Answer)) == 1


def test_an_expired_link_gets_its_page_and_changes_nothing(client, services, store, surveyed, monkeypatch):
    import time

    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 31 * 86400)  # 31 days on: past the 30-day life
    page = client.get(surveyed)
    assert page.status_code == 410
    assert "This link has expired" in page.get_data(as_text=True)
    assert client.post(surveyed, data={"score": "9"}).status_code == 410
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Answer)) == 0


@pytest.mark.parametrize(
    "mangle",
    [
        pytest.param(lambda p: p[:-3] + ("AAA" if not p.endswith("AAA") else "BBB"), id="tampered-signature"),
        pytest.param(lambda p: p[:20] + "x" + p[21:], id="tampered-payload"),
        pytest.param(lambda p: p.replace("/s/", "/r/"), id="survey-link-on-referral-page"),
        pytest.param(lambda p: "/s/not-a-token", id="garbage"),
    ],
)
def test_a_forged_link_gets_its_page_and_changes_nothing(client, store, surveyed, mangle):
    forged = mangle(surveyed)
    page = client.get(forged)
    assert page.status_code == 404
    assert "This link is not valid" in page.get_data(as_text=True)
    assert client.post(forged, data={"score": "9"}).status_code == 404
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Answer)) == 0


def test_cross_site_posts_are_refused(client, store, surveyed):
    client.get(surveyed)
    csrf = client.get_cookie("offboard_form").value
    foreign = client.post(
        surveyed, data={"csrf": csrf, "score": "9"}, headers={"Origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    client.delete_cookie("offboard_form")
    no_cookie = client.post(surveyed, data={"csrf": csrf, "score": "9"})
    assert no_cookie.status_code == 403
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Answer)) == 0


@pytest.mark.parametrize("score", ["", "11", "-1", "nine"])
def test_a_score_off_the_scale_is_asked_again(client, store, surveyed, score):
    reply = answer(client, surveyed, score=score)
    assert reply.status_code == 400
    assert "choose a score from 0 to 10" in reply.get_data(as_text=True)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Answer)) == 0


def test_no_answer_by_the_deadline_sends_one_reminder_that_answers_the_survey(
    client, services, store, surveyed, clock
):
    worker = services.worker()
    clock.now = datetime(2027, 1, 6, 9, 0, tzinfo=UTC)  # exit-nps deadline: 5 days after the send
    worker.run_until_idle()
    sandbox = services.adapters["sandbox"]
    _, reminder = sandbox.invites("D-1")
    assert (reminder.kind, reminder.contact_id) == ("nps", "contact-1")
    (deadline,) = actions(store, kind="deadline")
    assert (deadline.state, deadline.result) == ("done", {"answered": False, "queued": 1})
    clock.advance(days=30)
    worker.run_until_idle()
    assert len(sandbox.invites("D-1")) == 2  # one reminder, not one a day
    # The reminder's link answers the original survey, and unlocks its steps.
    clock.now = datetime(2027, 1, 7, 9, 0, tzinfo=UTC)
    assert answer(client, path_of(reminder.link), score="10").status_code == 200
    assert client.get(surveyed).status_code == 409
    clock.advance(days=5)
    worker.run_until_idle()
    assert [i.kind for i in sandbox.invites("D-1")] == ["nps", "nps", "referral"]


def test_an_answer_before_the_deadline_means_no_reminder(client, services, store, surveyed, clock):
    answer(client, surveyed, score="7")
    clock.now = datetime(2027, 1, 20, tzinfo=UTC)
    services.worker().run_until_idle()
    assert [i.kind for i in services.adapters["sandbox"].invites("D-1")] == ["nps"]
    (reminder,) = actions(store, step_id="nps-reminder")
    assert (reminder.state, reminder.last_error) == ("skipped", "skipped: the survey was answered")
    with store.session() as session:
        assert session.scalars(select(Run)).one().state == "done"


def referral_path(client, services, surveyed, clock):
    answer(client, surveyed, score="10")
    clock.advance(days=5)
    services.worker().run_until_idle()
    invite = next(i for i in services.adapters["sandbox"].invites("D-1") if i.kind == "referral")
    return path_of(invite.link)


def test_a_referral_creates_one_attributed_contact_and_a_follow_up(client, services, store, surveyed, clock):
    path = referral_path(client, services, surveyed, clock)
    page = client.get(path)
    assert page.status_code == 200
    assert "Know someone we could help, Pat?" in page.get_data(as_text=True)
    form = {
        "name": "Jo Park",
        "email": "Jo.Park@Example.COM",
        "company": "Globex",
        "note": "Needs a new site",
        "testimonial": "yes",
    }
    assert answer(client, path, **form).status_code == 200
    again = client.get(path)  # the link is used: the "already sent" page, no form
    assert again.status_code == 409 and "Already sent" in again.get_data(as_text=True)
    assert 'name="csrf"' not in again.get_data(as_text=True)
    services.worker().run_until_idle()
    sandbox = services.adapters["sandbox"]
    (contact,) = sandbox.contacts()
    assert (contact.email, contact.first_name, contact.last_name, contact.company) == (
        "jo.park@example.com",
        "Jo",
        "Park",
        "Globex",
    )
    assert (contact.referred_by, contact.referred_on_deal) == ("contact-1", "D-1")
    tasks = [t for t in sandbox.tasks("D-1") if t.step_id.startswith("referral-ask:")]
    follow_up = next(t for t in tasks if t.subject.startswith("Follow up"))
    assert follow_up.contact_id == f"ref-{contact.id}"  # the task points at the person to call
    titles = {t.subject: t.owner_id for t in tasks}
    assert titles == {
        "Follow up with Jo Park (Globex), introduced by Pat Lee": "owner-1",
        "Pat Lee agreed to a testimonial": "marketing-1",
    }
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Referral)) == 1


@pytest.mark.parametrize(
    ("form", "says"),
    [
        ({"name": "Jo", "email": "not-an-email"}, "email address"),
        ({"name": "", "email": "jo@example.com"}, "give the name"),
        ({}, "introduce someone, or tick a box"),
    ],
)
def test_a_bad_referral_is_asked_again(client, services, store, surveyed, form, says, clock):
    path = referral_path(client, services, surveyed, clock)
    reply = answer(client, path, **form)
    assert reply.status_code == 400
    assert says in reply.get_data(as_text=True)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Referral)) == 0
    assert not actions(store, kind="referral_contact")


def test_no_second_survey_of_a_kind_within_the_fatigue_window(client, services, store, clock):
    worker = services.worker()
    deliver(client, deal_closed_event("D-1"))
    deliver(client, deal_closed_event("D-2", contract_end="2027-01-20"))  # the same client contact
    worker.run_until_idle()
    clock.now = SURVEY_DAY
    worker.run_until_idle()
    clock.now = datetime(2027, 1, 21, 9, 0, tzinfo=UTC)
    worker.run_until_idle()
    assert services.adapters["sandbox"].invites("D-2") == []
    assert services.adapters["sandbox"].invites("D-1")[0].kind == "nps"
    with store.session() as session:
        second = session.scalars(
            select(Action).join(Run).where(Run.deal_id == "D-2", Action.kind == "survey")
        ).one()
    assert second.state == "skipped"
    assert second.last_error == (
        "skipped: the contact got a NPS survey on 2027-01-01 (run 1); no second one within 90 days"
    )


# --- one use per link, closed links, races ------------------------------------------


def the_run_id(store):
    with store.session() as session:
        return session.scalars(select(Run.id)).one()


def counts(store):
    with store.session() as session:
        return {
            "answers": session.scalar(select(func.count()).select_from(Answer)),
            "referrals": session.scalar(select(func.count()).select_from(Referral)),
            "answer actions": session.scalar(select(func.count()).where(Action.kind == "answer")),
            "referral actions": session.scalar(
                select(func.count()).where(Action.step_id.like("referral-ask:%"))
            ),
        }


def test_a_referral_link_takes_one_submission(client, services, store, surveyed, clock):
    path = referral_path(client, services, surveyed, clock)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)
    replies = [
        client.post(path, data={"csrf": csrf, "name": f"Person {n}", "email": f"p{n}@example.com"})
        for n in range(50)
    ]
    assert [r.status_code for r in replies] == [200] + [409] * 49
    assert all("Already sent" in r.get_data(as_text=True) for r in replies[1:])
    services.worker().run_until_idle()
    assert [c.email for c in services.adapters["sandbox"].contacts()] == ["p0@example.com"]
    assert counts(store)["referrals"] == 1
    assert counts(store)["referral actions"] == 2  # the contact and its follow-up task


def test_links_of_a_cancelled_run_show_the_closed_page_and_write_nothing(
    client, services, store, surveyed, clock
):
    from connector.usecases import operator

    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(surveyed).get_data(as_text=True)).group(1)
    operator.cancel(store, the_run_id(store), actor="test", now=clock.now, reason="deal reopened")
    for reply in (client.get(surveyed), client.post(surveyed, data={"csrf": csrf, "score": "10"})):
        assert reply.status_code == 410
        assert "This link is closed" in reply.get_data(as_text=True)
    services.worker().run_until_idle()
    assert counts(store) == {"answers": 0, "referrals": 0, "answer actions": 0, "referral actions": 0}
    assert "offboard_last_exit_score" not in services.adapters["sandbox"].properties("contact", "contact-1")


def test_a_referral_link_of_a_cancelled_run_is_closed(client, services, store, surveyed, clock):
    from connector.usecases import operator

    path = referral_path(client, services, surveyed, clock)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(path).get_data(as_text=True)).group(1)
    operator.cancel(store, the_run_id(store), actor="test", now=clock.now, reason="deal reopened")
    form = {"csrf": csrf, "name": "Jo Park", "email": "jo@example.com", "testimonial": "yes"}
    for reply in (client.get(path), client.post(path, data=form)):
        assert reply.status_code == 410
        assert "This link is closed" in reply.get_data(as_text=True)
    services.worker().run_until_idle()
    assert counts(store)["referrals"] == 0 and counts(store)["referral actions"] == 0
    assert services.adapters["sandbox"].contacts() == []


def race(app, path, form, n=8):
    """``n`` clients post the same form to ``path`` at the same instant; their answers."""
    barrier = threading.Barrier(n)
    replies: list = [None] * n

    def post(i):
        own = app.test_client()
        own.set_cookie("offboard_form", "r" * 32)
        barrier.wait()
        replies[i] = own.post(path, data={"csrf": "r" * 32, **form})

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return replies


def test_concurrent_consents_on_one_referral_link_make_one_submission(
    app, client, services, store, surveyed, clock
):
    path = referral_path(client, services, surveyed, clock)
    replies = race(app, path, {"testimonial": "yes", "case_study": "yes"})
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [409] * 7, statuses
    assert all(r.mimetype == "text/html" for r in replies)
    assert counts(store)["referrals"] == 1
    assert counts(store)["referral actions"] == 2  # one testimonial task, one case-study task


def test_concurrent_answers_on_one_survey_link_make_one_answer(app, client, store, surveyed):
    client.get(surveyed)
    replies = race(app, surveyed, {"score": "9"})
    statuses = sorted(r.status_code for r in replies)
    assert statuses == [200] + [409] * 7, statuses
    assert all(r.mimetype == "text/html" for r in replies)
    assert counts(store)["answers"] == 1 and counts(store)["answer actions"] == 1


def test_client_pages_answer_errors_in_html(app, client, surveyed, monkeypatch):
    from connector.usecases import feedback

    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get(surveyed).get_data(as_text=True)).group(1)

    def broken(*args, **kwargs):
        raise RuntimeError("the database went away")

    monkeypatch.setattr(feedback, "record_answer", broken)
    replies = {
        500: client.post(surveyed, data={"csrf": csrf, "score": "9"}),
        413: client.post(surveyed, data={"csrf": csrf, "comment": "x" * (2 * 1024 * 1024)}),
        405: client.delete(surveyed),
        404: client.get("/s/"),
    }
    for status, reply in replies.items():
        assert reply.status_code == status
        assert reply.mimetype == "text/html" and "<h1>" in reply.get_data(as_text=True), status
        assert "the database went away" not in reply.get_data(as_text=True)
    assert client.get("/webhooks/nothing").is_json  # elsewhere: JSON


def test_referrals_sent_twice_before_the_one_submission_rule_are_kept(sqlite_url):
    from sqlalchemy import text

    from connector.store import Store
    from connector.store.migrate import upgrade

    store = Store.from_url(sqlite_url)
    upgrade(store.engine, "0004")
    with store.engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO runs (id, crm, account, deal_id, playbook_id, playbook_version,"
                ' playbook_hash, playbook, deal, "trigger", anchor_at, state, created_at, updated_at)'
                " VALUES (1, 'sandbox', '-', 'D-1', 'p', 1, 'h', '{}', '{}', 'event', '2026-01-01',"
                " 'active', '2026-01-01', '2026-01-01')"
            )
        )
        for n, email in enumerate(["a@example.com", "b@example.com"]):
            connection.execute(
                text(
                    "INSERT INTO referrals (run_id, step_id, referrer_contact_id, name, email, company, note,"
                    " testimonial, case_study, created_at) VALUES (1, 'referral-ask', 'c-1', :name, :email,"
                    " '', '', 0, 0, '2026-01-01')"
                ),
                {"name": f"Person {n}", "email": email},
            )
    upgrade(store.engine)
    with store.session() as session:
        kept = [(r.step_id, r.email) for r in session.scalars(select(Referral).order_by(Referral.id))]
    store.dispose()
    assert kept == [("referral-ask", "a@example.com"), ("referral-ask:2", "b@example.com")]
