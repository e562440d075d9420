"""The retry policy, branch by branch: (error, attempts, settings) → decision, no database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import BaseModel, ValidationError

from connector.errors import (
    ConnectorError,
    CrmPermanent,
    CrmRateLimited,
    CrmTransient,
    Deferred,
    FormProblem,
    LinkProblem,
    OutcomeUnknown,
    PayloadInvalid,
    PlaybookError,
    Skip,
)
from connector.retry import Decision, RetryPolicy, Verdict, describe, worth_a_quick_retry
from connector.settings import load_settings


def policy(jitter: float = 1.0, **overrides: float) -> RetryPolicy:
    """Attempt limit 4, schedule 10 s → 20 s → 40 s capped at 60 s; ``jitter`` pins the draw."""
    knobs: dict[str, float] = {
        "max_attempts": 4,
        "base_seconds": 10.0,
        "max_seconds": 60.0,
        "defer_seconds": 900.0,
        "quick_tries": 3,
        "quick_pause_seconds": 0.5,
    } | overrides
    return RetryPolicy(**knobs, random=lambda: jitter)  # type: ignore[arg-type]


def seconds(decision: Decision) -> float:
    return decision.delay.total_seconds()


# --- transient: back off on the schedule, park at the limit -----------------------------------


@pytest.mark.parametrize(("attempts", "step"), [(1, 10.0), (2, 20.0), (3, 40.0)])
def test_a_transient_error_under_the_limit_backs_off_on_the_doubling_schedule(attempts, step):
    decision = policy().decide(CrmTransient("HubSpot answered 503"), attempts)
    assert (decision.verdict, seconds(decision), decision.counts_attempt) == (Verdict.BACK_OFF, step, True)
    assert decision.note == "CrmTransient: HubSpot answered 503"
    assert not decision.unexpected


def test_the_schedule_is_capped_at_the_longest_delay():
    assert policy(max_attempts=20).backoff(10) == timedelta(seconds=60)


def test_the_jitter_takes_up_to_a_fifth_off_the_step():
    assert seconds(policy(jitter=0.0).decide(CrmTransient("down"), 2)) == pytest.approx(16.0)
    assert seconds(policy(jitter=0.5).decide(CrmTransient("down"), 2)) == pytest.approx(18.0)
    assert seconds(policy(jitter=0.999).decide(CrmTransient("down"), 2)) <= 20.0


def test_the_jitter_is_drawn_from_the_injected_random():
    draws = iter([0.0, 1.0])
    varied = RetryPolicy(base_seconds=10.0, random=lambda: next(draws))
    assert [seconds(varied.decide(CrmTransient("down"), 1)) for _ in range(2)] == [8.0, 10.0]


@pytest.mark.parametrize("attempts", [4, 5, 100])
def test_a_transient_error_at_or_over_the_limit_parks(attempts):
    decision = policy().decide(CrmTransient("still down"), attempts)
    assert (decision.verdict, decision.delay) == (Verdict.PARK, timedelta(0))
    assert decision.note == "CrmTransient: still down"


def test_an_unknown_outcome_is_transient():
    assert policy().decide(OutcomeUnknown("read timed out"), 1).verdict is Verdict.BACK_OFF
    assert policy().decide(OutcomeUnknown("read timed out"), 4).verdict is Verdict.PARK


@pytest.mark.parametrize("error", [ConnectionError("reset by peer"), TimeoutError("timed out")])
def test_connection_errors_are_transient_and_expected(error):
    decision = policy().decide(error, 2)
    assert (decision.verdict, seconds(decision), decision.unexpected) == (Verdict.BACK_OFF, 20.0, False)
    assert policy().decide(error, 4).verdict is Verdict.PARK


# --- permanent: park at once -------------------------------------------------------------------


def test_a_permanent_error_parks_at_the_first_attempt_with_what_the_crm_said():
    error = CrmPermanent("HubSpot rejected the request (400)", status=400, detail={"category": "VALIDATION"})
    decision = policy().decide(error, 1)
    assert decision.verdict is Verdict.PARK
    assert decision.note == "CrmPermanent: HubSpot rejected the request (400) | {'category': 'VALIDATION'}"


class Shape(BaseModel):
    n: int


def validation_error() -> ValidationError:
    with pytest.raises(ValidationError) as raised:
        Shape.model_validate({"n": "many"})
    return raised.value


@pytest.mark.parametrize(
    "error",
    [PlaybookError(["step shout: template error"]), PayloadInvalid("not the schema"), validation_error()],
    ids=["playbook", "payload", "validation"],
)
def test_our_own_refusals_park_at_once_since_they_come_out_the_same_each_time(error):
    decision = policy().decide(error, 1)
    assert (decision.verdict, decision.unexpected) == (Verdict.PARK, False)


# --- rate limits: wait for the window, never counting an attempt -------------------------------


def test_a_rate_limit_with_retry_after_waits_exactly_that_long():
    decision = policy(jitter=0.0).decide(CrmRateLimited("TEN_SECONDLY_ROLLING", retry_after=2.5), 1)
    assert (decision.verdict, seconds(decision), decision.counts_attempt) == (Verdict.WAIT, 2.5, False)


def test_a_rate_limit_without_retry_after_waits_the_base_delay_whatever_the_attempts():
    for attempts in (1, 3, 7):
        decision = policy(jitter=0.0).decide(CrmRateLimited("slow down", retry_after=None), attempts)
        assert (decision.verdict, seconds(decision)) == (Verdict.WAIT, 10.0)


def test_a_rate_limit_never_parks_however_many_attempts():
    decision = policy().decide(CrmRateLimited("DAILY", retry_after=3600.0), 1000)
    assert (decision.verdict, seconds(decision), decision.counts_attempt) == (Verdict.WAIT, 3600.0, False)


# --- skip and defer ----------------------------------------------------------------------------


def test_skip_skips_with_its_reason_even_past_the_limit():
    decision = policy().decide(Skip("the contact got an NPS survey on 2026-11-01"), 99)
    assert (decision.verdict, decision.note) == (Verdict.SKIP, "the contact got an NPS survey on 2026-11-01")


def test_a_deferral_waits_the_configured_time_without_counting_an_attempt():
    decision = policy().decide(Deferred("deferred: daily API usage 85%"), 4)
    assert (decision.verdict, seconds(decision), decision.counts_attempt) == (Verdict.DEFER, 900.0, False)
    assert decision.note == "deferred: daily API usage 85%"


def test_a_deferral_that_names_its_delay_waits_that_long():
    decision = policy().decide(Deferred("waiting: books/a.yaml does not load", seconds=60), 1)
    assert (decision.verdict, seconds(decision)) == (Verdict.DEFER, 60.0)


def test_waiting_for_a_playbook_file_is_a_deferral():
    from connector.usecases.offboarding import WAIT_FOR_PLAYBOOKS_SECONDS, WAITING, PlaybooksIncomplete

    decision = policy().decide(PlaybooksIncomplete(["books/a.yaml"]), 1)
    assert (decision.verdict, seconds(decision)) == (Verdict.DEFER, WAIT_FOR_PLAYBOOKS_SECONDS)
    assert decision.note.startswith(WAITING) and not decision.counts_attempt


# --- unexpected exceptions: transient up to the limit, flagged ---------------------------------


@pytest.mark.parametrize("error", [KeyError("deal_id"), RuntimeError("boom"), OSError("disk")])
def test_an_unexpected_exception_backs_off_up_to_the_limit_and_is_flagged(error):
    under = policy().decide(error, 1)
    assert (under.verdict, seconds(under), under.unexpected) == (Verdict.BACK_OFF, 10.0, True)
    over = policy().decide(error, 4)
    assert (over.verdict, over.unexpected) == (Verdict.PARK, True)


# --- quick inline retries ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "worth"),
    [
        (CrmTransient("502"), True),
        (OutcomeUnknown("lost reply"), True),
        (CrmRateLimited("429", retry_after=1.0), False),  # waits in the queue, not in a busy loop
        (CrmPermanent("400"), False),
        (ConnectionError("not translated by an adapter"), False),
        (Skip("fatigue"), False),
        (Deferred("budget"), False),
        (RuntimeError("bug"), False),
    ],
)
def test_which_errors_are_worth_a_quick_retry(error, worth):
    assert worth_a_quick_retry(error) is worth
    assert (policy().quick(error, 1) is not None) is worth


def test_quick_retries_pause_briefly_doubling_and_stop_after_the_configured_tries():
    quick = policy(quick_tries=3, quick_pause_seconds=0.5)
    first, second = quick.quick(CrmTransient("502"), 1), quick.quick(CrmTransient("502"), 2)
    assert first is not None and second is not None
    assert (first.verdict, seconds(first), seconds(second)) == (Verdict.RETRY_NOW, 0.5, 1.0)
    assert quick.quick(CrmTransient("502"), 3) is None  # the queue's rules take over


def test_a_quick_pause_never_exceeds_ten_seconds():
    slow = policy(quick_tries=10, quick_pause_seconds=4.0)
    decision = slow.quick(CrmTransient("502"), 5)
    assert decision is not None and seconds(decision) == 10.0


# --- settings and the shared error tree --------------------------------------------------------


def test_the_policy_reads_its_numbers_from_the_settings(monkeypatch):
    for name, value in {"MAX_ATTEMPTS": "5", "RETRY_BASE_SECONDS": "7", "RETRY_MAX_SECONDS": "70"}.items():
        monkeypatch.setenv(f"OFFBOARD_{name}", value)
    monkeypatch.setenv("OFFBOARD_DEFER_SECONDS", "30")
    settings = load_settings()
    built = RetryPolicy.from_settings(settings, random=lambda: 1.0)
    assert (built.max_attempts, built.base_seconds, built.max_seconds, built.defer_seconds) == (
        5,
        7.0,
        70.0,
        30,
    )
    assert (built.quick_tries, built.quick_pause_seconds) == (
        settings.inline_retries,
        settings.inline_retry_wait_seconds,
    )
    assert seconds(built.decide(CrmTransient("down"), 5)) == 0.0  # the limit: parked
    assert seconds(built.decide(CrmTransient("down"), 4)) == 56.0


def test_every_error_raised_on_purpose_is_in_one_tree():
    for error in (Skip, Deferred, LinkProblem, FormProblem, OutcomeUnknown, CrmRateLimited, PlaybookError):
        assert issubclass(error, ConnectorError), error
    assert issubclass(OutcomeUnknown, CrmTransient)


def test_the_old_homes_hand_out_the_same_classes():
    from adapters.hubspot import errors as hubspot_errors
    from connector import links
    from connector.actions import invites
    from connector.web import forms, pages

    assert hubspot_errors.OutcomeUnknown is OutcomeUnknown
    assert (links.LinkProblem, forms.FormProblem) == (LinkProblem, FormProblem)
    assert (pages.LinkProblem, pages.FormProblem) == (LinkProblem, FormProblem)
    assert invites.Skip is Skip


def test_a_long_error_is_cut_to_what_the_row_keeps():
    assert len(describe(CrmTransient("x" * 5000))) == 2000
