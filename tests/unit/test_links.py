"""Personal survey and referral links: what one carries comes back, and nothing else passes."""

from __future__ import annotations

import time

import pytest
from itsdangerous import TimestampSigner

from connector.errors import LinkProblem
from connector.links import make_link, read_link, serializer

PUBLIC = "https://offboard.example.com"
KEY = "a-secret-key-for-the-link-tests-0123456789"
SURVEY = {"run": 7, "step": "exit-nps", "contact": "contact-1", "kind": "nps"}
REFERRAL = {"run": 7, "step": "referral-ask", "contact": "contact-1", "kind": "referral"}
DAYS = 30


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


def problem(purpose: str, token: str, key: str = KEY) -> str:
    with pytest.raises(LinkProblem) as raised:
        read_link(key, purpose, token, max_age_days=DAYS)
    return raised.value.problem


def signed_days_ago(monkeypatch: pytest.MonkeyPatch, days: float, purpose: str, claims: dict) -> str:
    then = int(time.time() - days * 86400)
    with monkeypatch.context() as patch:
        patch.setattr(TimestampSigner, "get_timestamp", lambda self: then)
        return token_of(make_link(PUBLIC, KEY, purpose, claims))


@pytest.mark.parametrize(
    ("purpose", "claims", "prefix"), [("survey", SURVEY, "/s/"), ("referral", REFERRAL, "/r/")]
)
def test_a_link_reads_back_its_claims(purpose, claims, prefix):
    link = make_link(PUBLIC, KEY, purpose, claims)
    assert link.startswith(PUBLIC + prefix)
    assert read_link(KEY, purpose, token_of(link), max_age_days=DAYS).model_dump() == claims


def test_a_tampered_token_is_forged():
    token = token_of(make_link(PUBLIC, KEY, "survey", SURVEY))
    payload, _, signature = token.rpartition(".")
    flipped = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    assert problem("survey", f"{payload}.{flipped}") == "forged"
    # another run's claims under this token's timestamp and signature
    other = token_of(make_link(PUBLIC, KEY, "survey", SURVEY | {"run": 8}))
    spliced = ".".join([other.rsplit(".", 2)[0], *token.rsplit(".", 2)[1:]])
    assert spliced != other and spliced != token
    assert problem("survey", spliced) == "forged"
    assert problem("survey", "not-a-token") == "forged"


def test_a_token_signed_with_another_key_is_forged():
    token = token_of(make_link(PUBLIC, "another-key-entirely-0123456789abcdef", "survey", SURVEY))
    assert problem("survey", token) == "forged"


def test_an_expired_link_is_expired_and_one_inside_its_age_still_reads(monkeypatch):
    assert problem("survey", signed_days_ago(monkeypatch, DAYS + 1, "survey", SURVEY)) == "expired"
    fresh = signed_days_ago(monkeypatch, DAYS - 1, "survey", SURVEY)
    assert read_link(KEY, "survey", fresh, max_age_days=DAYS).run == 7


def test_a_survey_token_used_as_a_referral_token_is_forged_and_the_other_way_round():
    survey = token_of(make_link(PUBLIC, KEY, "survey", SURVEY))
    referral = token_of(make_link(PUBLIC, KEY, "referral", REFERRAL))
    assert problem("referral", survey) == "forged"
    assert problem("survey", referral) == "forged"


def test_claims_that_do_not_match_the_purpose_are_forged_even_when_signed():
    """Signed with the survey salt but naming a referral (or a survey under the referral salt)."""
    assert problem("survey", serializer(KEY, "survey").dumps(REFERRAL)) == "forged"
    assert problem("referral", serializer(KEY, "referral").dumps(SURVEY)) == "forged"


@pytest.mark.parametrize(
    "claims",
    [
        {"run": 7, "step": "exit-nps", "contact": "contact-1"},
        SURVEY | {"kind": "stars"},
        SURVEY | {"run": "x"},
    ],
)
def test_signed_claims_of_the_wrong_shape_are_forged(claims):
    assert problem("survey", serializer(KEY, "survey").dumps(claims)) == "forged"
