"""The pages clients see: surveys under /s/<token>, referral asks under /r/<token>.

Plain HTML forms that work without JavaScript. Cross-site posts are refused:
each form carries a random value that must match a SameSite=Strict cookie set
with the page, and a foreign Origin is refused outright. Every page names the
sender: on a link's page, the brand of the account its run belongs to (the
account's own settings over ``OFFBOARD_BRAND_*``); elsewhere, the deployment's.
Every answer under /s/ and /r/ is HTML, errors included.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, make_response, render_template, request
from sqlalchemy.orm import Session

from connector import links
from connector.errors import FormProblem, LinkProblem
from connector.links import Claims
from connector.settings import Settings
from connector.store import Run
from connector.usecases import accounts, feedback
from connector.usecases.feedback import LinkPage
from connector.usecases.uow import unit_of_work
from connector.web import brand, forms, services
from connector.web.brand import Brand

bp = Blueprint("pages", __name__)
CSRF_COOKIE = "offboard_form"

QUESTIONS = {
    "nps": {
        "title": "How likely are you to recommend us?",
        "text": "How likely are you to recommend us to a friend or colleague?",
        "values": list(range(0, 11)),
        "low": "Not at all likely",
        "high": "Extremely likely",
        "why": "What is the main reason for your score?",
    },
    "csat": {
        "title": "How satisfied are you?",
        "text": "Overall, how satisfied are you with how we worked together?",
        "values": list(range(1, 6)),
        "low": "Very dissatisfied",
        "high": "Very satisfied",
        "why": "What could we have done better?",
    },
    "ces": {
        "title": "How easy was it?",
        "text": "How easy did we make it to wrap up our work together?",
        "values": list(range(1, 8)),
        "low": "Very difficult",
        "high": "Very easy",
        "why": "What made it easy or hard?",
    },
}

GREETINGS = {
    "celebratory": (
        "Thank you for a great project, {first}!",
        "We loved working with {company}. One quick question before we say goodbye:",
    ),
    "neutral": (
        "One quick question, {first}",
        "As our work with {company} comes to an end, we would value your feedback.",
    ),
    "formal": (
        "Dear {first},",
        "As our engagement with {company} concludes, we would be grateful for your feedback. "
        "It takes less than a minute.",
    ),
}
THANKS = {
    "celebratory": (
        "Thank you, {first}!",
        "Your answer means a lot to us. It was a pleasure working with {company}.",
    ),
    "neutral": ("Thank you, {first}", "We have your answer. Thank you for taking the time."),
    "formal": ("Thank you", "Your feedback has been received. We appreciate you taking the time."),
}
REFERRAL_GREETINGS = {
    "celebratory": (
        "Know someone we could help, {first}?",
        "Thank you for the kind words about our work with {company}. If someone you know could "
        "use the same, we would love an introduction.",
    ),
    "neutral": (
        "Could we help someone you know, {first}?",
        "If someone you know could use what we did for {company}, an introduction would mean a lot.",
    ),
    "formal": (
        "Dear {first},",
        "Thank you for your positive feedback. Should anyone in your network benefit from similar "
        "work, we would be grateful for an introduction.",
    ),
}
PROBLEMS = {
    "expired": (
        410,
        "This link has expired",
        [
            "Links stay open for {days} days. If you still want to tell us something, "
            "simply reply to our email."
        ],
    ),
    "used": (
        409,
        "You have already answered",
        ["Thank you, we have your answer. Each link can be used once."],
    ),
    "forged": (
        404,
        "This link is not valid",
        ["It may have been cut short when it was copied. Please open it again from the email."],
    ),
    "sent": (
        409,
        "Already sent",
        ["Thank you, we have what you sent. Each link can be used once."],
    ),
    "closed": (
        410,
        "This link is closed",
        ["The work it was about has been closed, so there is nothing more to send. Thank you."],
    ),
}
ERRORS = {
    400: ("Something was not right", "The page could not read what was sent. Please open the link again."),
    404: ("This page does not exist", "Please open the link again from the email."),
    405: ("This page cannot do that", "Please open the link again from the email."),
    413: ("That was too long", "Please shorten what you wrote and send it again."),
    500: ("Something went wrong on our side", "Nothing was stored. Please try again in a moment."),
}


@bp.get("/s/<token>")
def survey(token: str) -> Response:
    _, page = _open("survey", token)
    return _form_page("survey.html", page, **_survey_context(page))


@bp.post("/s/<token>")
def answer_survey(token: str) -> Response:
    claims, page = _open("survey", token)
    _check_form_origin()
    found = services()
    comment = forms.comment(request.form)
    try:
        score = forms.score(claims.kind, request.form.get("score"))
        with unit_of_work(found.store, actor="survey", clock=found.clock) as uow:
            feedback.record_answer(uow, found.settings, claims, score, comment)
    except FormProblem as problem:
        return _form_page(
            "survey.html",
            page,
            status=400,
            errors=problem.errors,
            comment=comment,
            chosen=request.form.get("score"),
            **_survey_context(page),
        )
    except LinkProblem as problem:
        return _problem(problem.problem)
    heading, line = THANKS[page.tone]
    return _message(200, _fill(heading, page), [_fill(line, page)], page)


@bp.get("/r/<token>")
def referral(token: str) -> Response:
    _, page = _open("referral", token)
    return _form_page("referral.html", page, form={}, **_referral_context(page))


@bp.post("/r/<token>")
def submit_referral(token: str) -> Response:
    claims, page = _open("referral", token)
    _check_form_origin()
    found = services()
    raw = {
        key: request.form.get(key, "")
        for key in ("name", "email", "company", "note", "testimonial", "case_study")
    }
    try:
        form = forms.referral(raw)
        with unit_of_work(found.store, actor="referral", clock=found.clock) as uow:
            feedback.record_referral(uow, found.settings, claims, form)
    except FormProblem as problem:
        shown = raw | {"testimonial": raw["testimonial"] == "yes", "case_study": raw["case_study"] == "yes"}
        return _form_page(
            "referral.html", page, status=400, errors=problem.errors, form=shown, **_referral_context(page)
        )
    except LinkProblem as problem:
        return _problem(problem.problem)
    return _message(
        200, "Thank you!", ["We will be in touch, and we will take good care of anyone you introduced."], page
    )


# --- helpers ---------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


@bp.errorhandler(_Refused)
def _refused(exc: _Refused) -> Response:
    return exc.response


@bp.app_context_processor
def _brand() -> dict[str, Any]:
    return {"brand": brand.current(services().settings)}


def error_page(status: int, detail: str | None = None) -> Response:
    """The HTML answer to an HTTP error under /s/ or /r/ (a client reads it, not a program)."""
    heading, line = ERRORS.get(status, ERRORS[500 if status >= 500 else 400])
    return _message(status, heading, [*([f"What was sent is {detail}."] if detail else []), line])


def _open(purpose: str, token: str) -> tuple[Claims, LinkPage]:
    found = services()
    try:
        settings = found.settings
        secret = settings.secret_key.get_secret_value()
        claims = links.read_link(secret, purpose, token, max_age_days=settings.link_max_age_days)
        with unit_of_work(found.store, actor="client", clock=found.clock) as uow:
            _use_account_brand(uow.session, settings, claims)
            return claims, feedback.open_link(uow, claims)
    except LinkProblem as problem:
        raise _Refused(_problem(problem.problem)) from None


def _use_account_brand(session: Session, settings: Settings, claims: Claims) -> None:
    """The page names the sender of the account the link's run belongs to, whatever it answers
    (the form, the thanks, "already answered"); an account not installed here shows the
    deployment's brand."""
    run = session.get(Run, claims.run)  # open_link reads the same row from the session
    if run is None:
        return
    own = accounts.account_settings(session, settings, run.crm, run.account)
    if own is not None:
        brand.use(Brand.from_account(own))


def _check_form_origin() -> None:
    origin = request.headers.get("Origin")
    expected = {_origin(services().settings.public_url), _origin(request.host_url)}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.form.get("csrf", "")
    # compare_digest takes str only when ASCII: compare the bytes, whatever was sent.
    if (origin and origin != "null" and _origin(origin) not in expected) or not (
        cookie and sent and hmac.compare_digest(cookie.encode(), sent.encode())
    ):
        raise _Refused(
            _message(
                403,
                "Please try again",
                [
                    "This form was open for too long, or was sent from another site. "
                    "Reload the page and send it again."
                ],
            )
        )


def _origin(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. "http://[::1": no origin we could be
        return ""
    return f"{parts.scheme}://{parts.netloc}"


def _survey_context(page: LinkPage) -> dict[str, Any]:
    heading, intro = GREETINGS[page.tone]
    return {
        "question": QUESTIONS[page.claims.kind],
        "greeting": _fill(heading, page),
        "intro": _fill(intro, page),
    }


def _referral_context(page: LinkPage) -> dict[str, Any]:
    heading, intro = REFERRAL_GREETINGS[page.tone]
    return {
        "ask": page.ask or ("referral", "testimonial"),
        "greeting": _fill(heading, page),
        "intro": _fill(intro, page),
    }


def _fill(text: str, page: LinkPage) -> str:
    return text.format(first=page.first_name or "there", company=page.company)


def _form_page(template: str, page: LinkPage, *, status: int = 200, **context: Any) -> Response:
    value = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    context.setdefault("errors", {})
    html = render_template(template, company=page.company, csrf=value, **context)
    response = make_response(html, status)
    secure = services().settings.public_url.startswith("https://")
    response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="Strict", secure=secure, max_age=86400)
    return response


def _problem(problem: str) -> Response:
    status, heading, lines = PROBLEMS[problem]
    days = services().settings.link_max_age_days
    return _message(status, heading, [line.format(days=days) for line in lines])


def _message(status: int, heading: str, lines: list[str], page: LinkPage | None = None) -> Response:
    html = render_template(
        "message.html", heading=heading, lines=lines, company=page.company if page else None
    )
    return make_response(html, status)
