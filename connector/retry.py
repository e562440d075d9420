"""What to do when handling an event or an action raised: one set of rules for both queues.

``RetryPolicy.decide(error, attempts)`` is a pure function of the error, how many times the row
has been claimed (this claim included) and the settings; it returns a ``Decision`` the worker
applies with its state writes. ``RetryPolicy.quick(error, tries)`` says whether a CRM call is
tried again at once, inside the same claim, before the queue's rules apply.

    error                                   verdict        delay                    attempt
    Skip                                    skip           -                        -
    Deferred                                defer          its seconds, or the      given back
                                                           configured deferral
    CrmRateLimited                          wait           retry_after, or the      given back
                                                           base delay
    CrmPermanent                            park           -                        -
    CrmTransient, ConnectionError,          back off       base · 2^(attempts-1),   used
    TimeoutError                            (park at the   capped, x 0.8-1.0
                                            attempt limit)
    other ConnectorError, ValidationError   park           -                        -
    anything else (unexpected)              as transient, flagged ``unexpected`` (logged loudly)

Why these rules:

- A rate limit is the CRM's window, not the work's fault: it never uses up attempts and
  never parks, however long the CRM keeps saying no. Without a ``retry_after`` the wait is
  the first step of the schedule, whatever the attempts so far.
- Our own refusals (a playbook that does not render for this deal, a payload that does not
  fit its model) come out the same however often they are tried: parked at once.
- An unexpected exception may be a passing fault (a dropped database connection, a race) or
  a bug a deploy will fix: both are served by a few spaced retries before an operator looks.
- Quick retries are for blips: ``CrmTransient`` but rate limits (those wait in the queue,
  not in a busy loop inside a claim). ``OutcomeUnknown`` is a blip too: adapters look for
  what an earlier try wrote before writing again. Errors that did not come from the CRM
  (a bare ``ConnectionError`` an adapter did not translate) go straight to the queue's rules.

Events and actions follow the same table. The differences are in what the worker writes,
not in the rules: a skipped event is ``ignored`` where an action is ``skipped``, and a parked
action gets an audit entry (an event has no run to file it under). Skip and Deferred come
from actions' checks (survey fatigue, a CRM budget running low) and from events waiting for
a playbook file to load.

The jitter is drawn from ``random`` (an injectable ``() -> float`` in [0, 1)), so tests can
pin it; many actions failing together do not all come back at the same instant.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from pydantic import ValidationError

from connector.errors import (
    ConnectorError,
    CrmError,
    CrmPermanent,
    CrmRateLimited,
    CrmTransient,
    Deferred,
    Skip,
)
from connector.settings import Settings

QUICK_PAUSE_CAP_SECONDS = 10.0  # the longest pause between quick tries; longer waits belong in the queue
JITTER_LOW = 0.8  # a back-off is 80-100% of its step of the schedule
NOTE_LIMIT = 2000  # how much of an error's text is recorded on the row


class Verdict(StrEnum):
    RETRY_NOW = "retry now"  # try the call again inside this claim, after ``delay``
    BACK_OFF = "back off"  # back in the queue, due after ``delay``; the attempt counts
    WAIT = "wait"  # back in the queue for the CRM's window; the attempt is given back
    PARK = "park"  # failed: an operator retries or cancels it
    SKIP = "skip"  # will not run, for a reason that is no failure
    DEFER = "defer"  # back in the queue after ``delay``; the attempt is given back


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    note: str  # what the row records (last_error / outcome)
    delay: timedelta = timedelta(0)
    unexpected: bool = False  # an exception nobody raised on purpose: log it with its traceback

    @property
    def counts_attempt(self) -> bool:
        """Whether the claim that failed uses up one of the work's attempts."""
        return self.verdict not in (Verdict.WAIT, Verdict.DEFER)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 30.0
    max_seconds: float = 3600.0
    defer_seconds: float = 900.0
    quick_tries: int = 3
    quick_pause_seconds: float = 0.5
    random: Callable[[], float] = field(default=_random.random, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings, random: Callable[[], float] = _random.random) -> RetryPolicy:
        return cls(
            max_attempts=settings.max_attempts,
            base_seconds=settings.retry_base_seconds,
            max_seconds=settings.retry_max_seconds,
            defer_seconds=settings.defer_seconds,
            quick_tries=settings.inline_retries,
            quick_pause_seconds=settings.inline_retry_wait_seconds,
            random=random,
        )

    def decide(self, error: BaseException, attempts: int) -> Decision:
        """What the queue does with work whose ``attempts``-th claim raised ``error``."""
        if isinstance(error, Skip):
            return Decision(Verdict.SKIP, error.reason)
        if isinstance(error, Deferred):
            seconds = self.defer_seconds if error.seconds is None else error.seconds
            return Decision(Verdict.DEFER, error.reason, timedelta(seconds=seconds))
        if isinstance(error, CrmRateLimited):
            seconds = self.base_seconds if error.retry_after is None else error.retry_after
            return Decision(Verdict.WAIT, describe(error), timedelta(seconds=seconds))
        if isinstance(error, CrmPermanent) or _ours_and_final(error):
            return Decision(Verdict.PARK, describe(error))
        unexpected = not is_transient(error)
        if attempts >= self.max_attempts:
            return Decision(Verdict.PARK, describe(error), unexpected=unexpected)
        return Decision(Verdict.BACK_OFF, describe(error), self.backoff(attempts), unexpected=unexpected)

    def backoff(self, attempts: int) -> timedelta:
        """The pause after the ``attempts``-th failed claim: doubling from the base, capped, jittered."""
        step = min(self.base_seconds * 2 ** max(attempts - 1, 0), self.max_seconds)
        return timedelta(seconds=step * (JITTER_LOW + (1 - JITTER_LOW) * self.random()))

    def quick(self, error: BaseException, tries: int) -> Decision | None:
        """Try again at once (RETRY_NOW, after a short pause) after ``tries`` tries of one claim,
        or None: the error goes to ``decide``."""
        if not worth_a_quick_retry(error) or tries >= self.quick_tries:
            return None
        pause = min(self.quick_pause_seconds * 2 ** max(tries - 1, 0), QUICK_PAUSE_CAP_SECONDS)
        return Decision(Verdict.RETRY_NOW, describe(error), timedelta(seconds=pause))


def is_transient(error: BaseException) -> bool:
    """The CRM or the network failed in a way a later try may not."""
    return isinstance(error, CrmTransient | ConnectionError | TimeoutError)


def worth_a_quick_retry(error: BaseException) -> bool:
    # Rate limits wait for the CRM's window in the queue, not in a busy loop inside a claim.
    return isinstance(error, CrmTransient) and not isinstance(error, CrmRateLimited)


def describe(error: BaseException) -> str:
    """The error as recorded on the row: its type, its message, and what the CRM said."""
    text = f"{type(error).__name__}: {error}"
    if isinstance(error, CrmError) and error.detail:
        text += f" | {error.detail}"
    return text[:NOTE_LIMIT]


def _ours_and_final(error: BaseException) -> bool:
    """Our own refusal, or data that does not fit its model: the same however often it is tried."""
    ours = isinstance(error, ConnectorError) and not isinstance(error, CrmError)
    return ours or isinstance(error, ValidationError)
