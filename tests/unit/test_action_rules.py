"""The pure rules actions follow: survey fatigue and which work waits for a CRM's budget."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from connector.actions import KINDS, URGENT_KINDS, registry
from connector.actions.invites import Touch, fatigue
from connector.usecases.performing import deferral
from tests.support.helpers import make_settings

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)


def sent(days_ago: float, kind: str = "nps", run_id: int = 1) -> Touch:
    return Touch(kind=kind, sent_at=NOW - timedelta(days=days_ago), run_id=run_id)


def test_a_survey_of_the_same_kind_within_the_window_from_another_run_is_ruled_out():
    reason = fatigue([sent(10)], kind="nps", run_id=2, now=NOW, days=30)
    assert reason == "the contact got a NPS survey on 2026-11-17 (run 1); no second one within 30 days"


@pytest.mark.parametrize(
    ("touches", "why"),
    [
        ([sent(31)], "outside the window"),
        ([sent(30.0001)], "just outside the window"),
        ([sent(5, kind="csat")], "another kind"),
        ([sent(5, run_id=2)], "the same run (its reminder)"),
        ([], "never surveyed"),
    ],
)
def test_a_survey_goes_out(touches, why):
    assert fatigue(touches, kind="nps", run_id=2, now=NOW, days=30) is None, why


def test_the_window_includes_its_first_day():
    assert fatigue([sent(30)], kind="nps", run_id=2, now=NOW, days=30) is not None


def test_zero_days_turns_the_rule_off():
    assert fatigue([sent(0)], kind="nps", run_id=2, now=NOW, days=0) is None


def test_the_latest_earlier_send_is_named():
    reason = fatigue([sent(20), sent(3, run_id=7), sent(9)], kind="nps", run_id=2, now=NOW, days=30)
    assert reason is not None and "(run 7)" in reason and "2026-11-24" in reason


def test_only_the_checklist_is_urgent():
    assert {"task", "escalation"} == URGENT_KINDS  # its tasks, and chasing one left open


@pytest.mark.parametrize("kind", sorted(cls.kind for cls in KINDS))
def test_work_waits_for_a_low_budget_unless_urgent(kind):
    urgent = kind in URGENT_KINDS
    assert deferral(urgent, None) is None
    waits = deferral(urgent, "daily API usage 85% is past the 80% budget")
    assert (waits is None) == urgent
    if waits is not None:
        assert waits == "deferred: daily API usage 85% is past the 80% budget"


def test_every_kind_has_one_handler_named_like_its_step(tmp_path):
    handlers = registry(make_settings(f"sqlite:///{tmp_path}/x.db"))
    assert set(handlers) == {
        "task",
        "note",
        "property",
        "survey",
        "referral",
        "answer",
        "referral_contact",
        "deadline",
        "escalation",
        "record",
    }
    assert all(handler.kind == kind for kind, handler in handlers.items())
    step_kinds = {"task", "note", "property", "survey", "referral"}  # the playbook language's
    assert step_kinds <= set(handlers)
