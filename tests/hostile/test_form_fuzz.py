"""The survey and referral pages, fed arbitrary and near-valid form posts with a valid CSRF pair.

Each post: never a 5xx; a 2xx stores one complete, valid answer (or referral)
with its outbox actions and audit line; a 4xx is a page (or JSON) saying why,
changes no table, and echoes nothing unescaped. Runs on SQLite and Postgres
(which refuses NUL characters in text that SQLite would take).
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote_from_bytes

from email_validator import validate_email
from hypothesis import event as statistic
from hypothesis import example, given
from hypothesis import strategies as st

from connector.web.pages import CSRF_COOKIE
from tests.support.hostile import HOSTILE, Tables, strict_json
from tests.support.strategies import HOSTILE_STRINGS, hostile_text, noisy

CSRF = "c" * 43  # what the page would have set
SCRIPT = "<script>alert(1)</script>"
ENCODINGS = ["urlencoded", "multipart", "json", "text/plain", "no-content-type"]
ORIGINS = [None, "http://localhost", "null", "https://evil.example", "http://[::1", "http://é", "ftp://x"]

# --- building the request ---------------------------------------------------------------------


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


@st.composite
def form_request(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[str | None]]) -> dict[str, Any]:
    pairs = []
    for name, values in fields.items():
        value = draw(values)
        if value is not None:
            pairs.append((name, value))
    hostile_transport = draw(st.integers(0, 3)) == 0  # else: a valid CSRF pair, sent as a form
    csrf = CSRF
    if hostile_transport:
        csrf = draw(st.one_of(st.just(CSRF), st.none(), hostile_text(), st.just("c" * 42 + "é")))
    if csrf is not None:
        pairs.append(("csrf", csrf))
    pairs += draw(st.lists(st.tuples(hostile_text(), hostile_text()), max_size=2))
    if pairs and draw(st.integers(0, 4)) == 0:
        pairs.append(draw(st.sampled_from(pairs)))  # a field sent twice
    pairs = draw(st.permutations(pairs))
    encoding = draw(st.sampled_from(ENCODINGS if hostile_transport else ["urlencoded", "multipart"]))
    if encoding == "multipart":
        boundary = "hostileBoundary7MA4YWxk"
        body = (
            b"".join(
                b"--"
                + _bytes(boundary)
                + b'\r\nContent-Disposition: form-data; name="'
                + _bytes(k)
                + b'"\r\n\r\n'
                + _bytes(v)
                + b"\r\n"
                for k, v in pairs
            )
            + b"--"
            + _bytes(boundary)
            + b"--\r\n"
        )
        content_type: str | None = f"multipart/form-data; boundary={boundary}"
    elif encoding == "json":
        body, content_type = _bytes(json.dumps(dict(pairs), ensure_ascii=False)), "application/json"
    else:
        body = b"&".join(
            quote_from_bytes(_bytes(k), safe="").encode()
            + b"="
            + quote_from_bytes(_bytes(v), safe="").encode()
            for k, v in pairs
        )
        content_type = {"urlencoded": "application/x-www-form-urlencoded", "text/plain": "text/plain"}.get(
            encoding
        )
    headers = {"Content-Type": content_type} if content_type else {}
    cookie: str | None = CSRF
    if hostile_transport:
        body = draw(noisy(body))
        origin = draw(st.sampled_from(ORIGINS))
        if origin:
            headers["Origin"] = origin
        cookie = draw(st.sampled_from([CSRF, None, "d" * 43]))
    return {"body": body, "headers": headers, "cookie": cookie}


def post(client: Any, path: str, sent: dict[str, Any]) -> Any:
    if sent["cookie"] is None:
        client.delete_cookie(CSRF_COOKIE)
    else:
        client.set_cookie(CSRF_COOKIE, sent["cookie"])
    return client.post(path, data=sent["body"], headers=sent["headers"])


def check_refusal(reply: Any, tables: Tables, before: Any) -> None:
    assert 400 <= reply.status_code < 500, (reply.status_code, reply.get_data()[:300])
    if reply.is_json:
        assert reply.get_json()["error"].strip()
    else:
        html = reply.get_data(as_text=True)
        assert reply.mimetype == "text/html"
        heading = re.search(r"<h1>(.+?)</h1>", html, re.S)
        assert heading and heading.group(1).strip(), html[:500]
        if reply.status_code == 400:
            assert 'class="error"' in html, html[:1000]  # the field to correct, said on the page
        assert SCRIPT not in html, "hostile input echoed unescaped"
    assert tables.changed(before) == [], "a refused post left rows behind"


def clean_text(value: str, limit: int) -> None:
    assert isinstance(value, str) and len(value) <= limit
    assert "\x00" not in value and not re.search("[\ud800-\udfff]", value)


# --- the survey page -------------------------------------------------------------------------

SCORES = [str(n) for n in range(-1, 12)] + [
    "",
    " 9 ",
    "٩",
    "9.0",
    "1e1",
    "0x9",
    "9\x00",
    "\uff11\uff10",
    "5_0",
    "1" * 5000,
]
SURVEY_FIELDS = {
    "score": st.one_of(st.sampled_from(SCORES[1:12]), st.sampled_from(SCORES), hostile_text(), st.none()),
    "comment": st.one_of(st.none(), st.just(""), hostile_text(200), st.sampled_from(["x" * 6000, SCRIPT])),
}


@HOSTILE
@given(sent=form_request(SURVEY_FIELDS))
@example(sent={"body": b"csrf=" + CSRF.encode() + b"&score=9&comment=ok", "headers": {}, "cookie": CSRF})
@example(sent={"body": b"csrf=" + CSRF.encode() + b"&score=9&comment=a%00b", "headers": {}, "cookie": CSRF})
@example(sent={"body": "csrf=é&score=9".encode(), "headers": {}, "cookie": CSRF})
@example(
    sent={
        "body": b"csrf=" + CSRF.encode() + b"&score=9",
        "headers": {"Origin": "http://[::1"},
        "cookie": CSRF,
    }
)
def test_survey_posts_never_fail_and_never_store_garbage(client, pages, tables, sent):
    before = tables.snapshot()
    reply = post(client, pages["survey"], sent)
    statistic(f"HTTP {reply.status_code}")
    try:
        if reply.status_code >= 300:
            check_refusal(reply, tables, before)
            return
        assert reply.status_code == 200 and "Thank you" in reply.get_data(as_text=True)
        (answer,) = tables.added(before, "answers")
        assert (answer["kind"], answer["step_id"], answer["contact_id"]) == ("nps", "exit-nps", "contact-1")
        assert 0 <= answer["score"] <= 10
        clean_text(answer["comment"], 5000)
        actions = tables.added(before, "actions")
        (write_back,) = [a for a in actions if a["kind"] == "answer"]
        assert (write_back["payload"]["score"], write_back["payload"]["comment"]) == (
            answer["score"],
            answer["comment"],
        )
        (audit,) = tables.added(before, "audit")
        assert audit["verb"] == "survey.answered" and audit["detail"]["score"] == answer["score"]
    finally:
        tables.reset()


# --- the referral page ------------------------------------------------------------------------

EMAILS = [
    "jo@example.com",
    "Jo.Park@Example.COM",
    "o'brien@acme.example",
    "用户@例子.广告",
    "a@b",
    "x" * 300 + "@e.com",
]
REFERRAL_FIELDS = {
    "name": st.one_of(st.just("Jo Park"), st.just("Jo Park"), st.none(), hostile_text()),
    "email": st.one_of(st.sampled_from(EMAILS), st.sampled_from(EMAILS), st.none(), hostile_text()),
    "company": st.one_of(st.none(), st.just("Globex"), hostile_text()),
    "note": st.one_of(st.none(), hostile_text(200), st.just(SCRIPT)),
    "testimonial": st.one_of(
        st.none(), st.sampled_from(["yes", "no", "YES", "yes\x00", *HOSTILE_STRINGS[:3]])
    ),
    "case_study": st.one_of(st.none(), st.sampled_from(["yes", ""])),
}


@HOSTILE
@given(sent=form_request(REFERRAL_FIELDS))
@example(
    sent={
        "body": b"csrf=" + CSRF.encode() + b"&name=Jo+Park&email=jo%40example.com",
        "headers": {},
        "cookie": CSRF,
    }
)
@example(
    sent={
        "body": b"csrf=" + CSRF.encode() + b"&name=J%00o&email=jo%40example.com",
        "headers": {},
        "cookie": CSRF,
    }
)
@example(
    sent={"body": b"csrf=" + CSRF.encode() + b"&testimonial=yes&note=%00", "headers": {}, "cookie": CSRF}
)
def test_referral_posts_never_fail_and_never_store_garbage(client, pages, tables, sent):
    before = tables.snapshot()
    reply = post(client, pages["referral"], sent)
    statistic(f"HTTP {reply.status_code}")
    try:
        if reply.status_code >= 300:
            check_refusal(reply, tables, before)
            return
        assert reply.status_code == 200 and "Thank you!" in reply.get_data(as_text=True)
        referrals = tables.added(before, "referrals")
        actions = tables.added(before, "actions")
        assert len(referrals) <= 1
        for referral in referrals:
            clean_text(referral["name"], 200)
            assert referral["name"].strip()
            clean_text(referral["email"], 255)
            assert (
                validate_email(referral["email"], check_deliverability=False).normalized.lower()
                == referral["email"]
            )
            clean_text(referral["company"], 255)
            clean_text(referral["note"], 2000)
            kinds = sorted(
                a["kind"]
                for a in actions
                if a["step_id"].startswith(f"referral-ask:referral:{referral['id']}")
            )
            assert kinds == ["referral_contact", "task"]
        for action in actions:
            strict_json(action["payload"])
        audits = tables.added(before, "audit")
        assert [a["verb"] for a in audits] == (["referral.received"] if actions else [])
    finally:
        tables.reset()
