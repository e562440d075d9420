"""Planned against actual for a run under way: dependants move when a step finishes late or early,
and a finish projected past the contract end is flagged, naming the step and by how much."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from connector.generic import GenericEvent
from connector.planner import PlanContext, plan
from connector.playbooks.loader import load_text
from connector.playbooks.model import Playbook
from connector.timeline import StepActual, Timeline, project, render_timeline
from tests.support.helpers import deal_closed_event

DEAL = GenericEvent.model_validate(deal_closed_event()).to_deal("sandbox")  # contract ends Thu 31 Dec 2026
RUN_START = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)

CHAIN = """
id: chain
name: Chain
version: 1
anchor: contract_end
steps:
  - id: first
    task: {title: First, due: -10bd}                     # Thu 17 Dec
  - id: second
    task: {title: Second, after: first, due: +1bd}       # Fri 18 Dec
  - id: third
    task: {title: Third, after: second, due: +2bd}       # Tue 22 Dec
"""

TWO_BEFORE = """
id: two
name: Two before
version: 1
anchor: contract_end
steps:
  - id: invoice
    task: {title: Invoice, due: -10bd}                   # Thu 17 Dec
  - id: transfer
    task: {title: Transfer, due: -8bd}                   # Mon 21 Dec
  - id: goodbye
    task: {title: Goodbye, after: [invoice, transfer], due: +1bd}
"""


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def load(text: str) -> Playbook:
    return load_text(text, "t.yaml").playbook


def timeline(text: str, now: str, actuals: dict[str, StepActual], zone: str = "UTC") -> Timeline:
    book = load(text)
    started = PlanContext(ZoneInfo(zone), {}, None, RUN_START)
    laid_out = plan(DEAL, book, started)
    return project(laid_out, book, DEAL, PlanContext(ZoneInfo(zone), {}, None, at(now)), actuals)


def done(due: str, when: str) -> StepActual:
    return StepActual(at(due), at(when), "completed")


def open_(due: str) -> StepActual:
    return StepActual(at(due), None, "open")


def rows(result: Timeline) -> dict:
    return {row.step_id: row for row in result.rows}


def test_without_actuals_each_dependency_is_done_on_its_planned_day():
    result = rows(timeline(CHAIN, "2026-11-20T15:00", {}))
    assert [result[s].planned_due for s in ("first", "second", "third")] == [
        at("2026-12-17T09:00"),
        at("2026-12-18T09:00"),
        at("2026-12-22T09:00"),
    ]
    assert all(row.late_days == 0 for row in result.values())
    assert result["second"].status == "waiting" and result["second"].note == "after first is done (+1bd)"


def test_a_step_after_two_tasks_counts_from_the_later_completion():
    planned = rows(timeline(TWO_BEFORE, "2026-11-20T15:00", {}))
    assert planned["goodbye"].planned_due == at("2026-12-22T09:00")  # the transfer's Mon 21 Dec, +1bd
    actual = {
        "invoice": done("2026-12-17T09:00", "2026-12-16T10:00"),  # a day early
        "transfer": done("2026-12-21T09:00", "2026-12-23T16:30"),  # Wed, two days late
    }
    result = rows(timeline(TWO_BEFORE, "2026-12-23T17:00", actual))
    assert result["invoice"].late_days == -1
    assert result["transfer"].late_days == 2
    assert result["goodbye"].projected_due == at("2026-12-24T09:00")
    assert result["goodbye"].late_days == 2


def test_a_first_task_three_business_days_late_moves_the_whole_chain():
    actual = {"first": done("2026-12-17T09:00", "2026-12-22T14:00")}  # Tue 22 Dec: 3 business days late
    result = rows(timeline(CHAIN, "2026-12-22T15:00", actual))
    assert result["first"].late_days == 5  # calendar days, a weekend among them
    assert result["second"].projected_due == at("2026-12-23T09:00")  # +1bd from the completion
    assert result["third"].projected_due == at("2026-12-25T09:00")  # +2bd from the second's new date
    assert result["third"].late_days == 3
    # Released, the second task carries the due the CRM has; the third counts from it.
    actual["second"] = open_("2026-12-28T09:00")
    moved = rows(timeline(CHAIN, "2026-12-22T15:00", actual))
    assert moved["third"].projected_due == at("2026-12-30T09:00")


def test_an_early_finish_pulls_the_dependants_forward():
    actual = {"first": done("2026-12-17T09:00", "2026-12-14T11:00")}  # Mon 14 Dec, 3 business days early
    result = rows(timeline(CHAIN, "2026-12-14T12:00", actual))
    assert result["second"].projected_due == at("2026-12-15T09:00")
    assert result["third"].projected_due == at("2026-12-17T09:00")
    assert result["third"].late_days == -5  # Thu 17 Dec instead of Tue 22 Dec


def test_an_open_task_counts_from_now_once_its_due_has_passed():
    actual = {"first": open_("2026-12-17T09:00")}
    result = rows(timeline(CHAIN, "2026-12-21T10:00", actual))  # Mon 21 Dec: the first is overdue
    assert result["first"].finish == at("2026-12-21T10:00")
    assert result["second"].projected_due == at("2026-12-22T09:00")  # +1bd from today at the earliest


def test_a_finish_projected_past_the_contract_end_is_flagged_with_the_step_and_the_days():
    actual = {"first": done("2026-12-17T09:00", "2026-12-31T16:00")}  # done on the contract's last day
    result = timeline(CHAIN, "2026-12-31T17:00", actual)
    assert result.projected_finish == at("2027-01-05T09:00")  # Fri 1 Jan +2bd
    assert result.at_risk
    assert result.risk == (
        "the checklist is projected to finish on Tue 05 Jan 2027 (third), "
        "5 days after the contract end (Thu 31 Dec 2026)"
    )
    on_time = timeline(CHAIN, "2026-12-17T17:00", {"first": done("2026-12-17T09:00", "2026-12-17T16:00")})
    assert not on_time.at_risk and on_time.risk is None


def test_a_step_due_by_the_contract_end_is_flagged_even_when_the_plan_runs_past_it():
    text = CHAIN.replace("due: +1bd}", "due: +1bd, deadline: contract_end}") + (
        "  - id: follow-up\n    task: {title: Follow up, due: +6w}\n"
    )
    on_course = timeline(text, "2026-12-17T17:00", {"first": done("2026-12-17T09:00", "2026-12-17T16:00")})
    assert not on_course.at_risk  # the follow-up is after the contract end by design
    late = timeline(text, "2027-01-04T12:00", {"first": done("2026-12-17T09:00", "2027-01-04T11:00")})
    assert late.risks == [
        "second is projected to be done on Tue 05 Jan 2027, 5 days after the contract end "
        "(Thu 31 Dec 2026) it must be done by"
    ]


def test_a_survey_counts_as_done_when_its_answer_window_closes_unless_answered():
    text = """
id: s
name: S
version: 1
anchor: contract_end
steps:
  - id: exit-nps
    survey: {kind: nps, send: +1d, deadline: 5d}       # Fri 1 Jan; the window closes Wed 6 Jan
  - id: debrief
    task: {title: Debrief, after: exit-nps, due: +1bd}
"""
    planned = rows(timeline(text, "2026-11-20T15:00", {}))
    assert planned["debrief"].planned_due == at("2027-01-07T09:00")
    answered = {"exit-nps": StepActual(at("2027-01-01T09:00"), at("2027-01-02T08:00"), "completed")}
    result = rows(timeline(text, "2027-01-02T09:00", answered))
    assert result["debrief"].projected_due == at("2027-01-04T09:00")  # Sat 2 Jan +1bd
    assert result["debrief"].late_days == -3


def test_conditional_and_ruled_out_steps_count_for_nothing():
    text = """
id: c
name: C
version: 1
anchor: contract_end
steps:
  - id: exit-nps
    survey: {kind: nps, send: -5d}
  - id: call
    task: {title: Call, after: exit-nps, when: {score: {lte: 6}}, due: +30d}
  - id: report
    task: {title: Report, after: call, due: +30d}
  - id: wrap-up
    task: {title: Wrap up, due: -1d}
"""
    waiting = timeline(text, "2026-11-20T15:00", {})
    assert rows(waiting)["call"].status == "conditional" and rows(waiting)["report"].status == "conditional"
    assert rows(waiting)["call"].note == "after exit-nps is answered, when score <= 6"
    assert waiting.projected_finish == at("2026-12-30T09:00") and not waiting.at_risk
    skipped = {"call": StepActual(None, None, "skipped")}
    ruled_out = rows(timeline(text, "2026-12-29T15:00", skipped))
    assert (ruled_out["call"].status, ruled_out["report"].status) == ("skipped", "not_run")
    assert ruled_out["report"].note == "waits on call" and ruled_out["report"].projected_due is None


def test_a_task_completed_without_its_evidence_is_not_done_yet():
    actual = {"first": StepActual(at("2026-12-17T09:00"), at("2026-12-17T10:00"), "needs_evidence")}
    result = rows(timeline(CHAIN, "2026-12-21T10:00", actual))
    assert result["first"].finish == at("2026-12-21T10:00")
    assert result["second"].projected_due == at("2026-12-22T09:00")


def test_dates_are_days_in_the_account_zone():
    actual = {"first": done("2026-12-17T14:00", "2026-12-18T03:00")}  # Thu 17 Dec, 22:00 in Los Angeles
    result = rows(timeline(CHAIN, "2026-12-18T04:00", actual, zone="America/Los_Angeles"))
    assert result["first"].late_days == 0
    assert result["second"].projected_due == at("2026-12-18T17:00")  # Fri 18 Dec, 09:00 there


def test_the_rendering_lists_every_task_then_the_finish_and_the_risk():
    actual = {"first": done("2026-12-17T09:00", "2026-12-31T16:00")}
    lines = render_timeline(timeline(CHAIN, "2026-12-31T17:00", actual))
    assert lines[0] == "Planned against actual (dates in UTC, as of 2026-12-31 17:00):"
    assert lines[1].split() == ["step", "planned", "projected/actual", "done", "at", "status"]
    assert lines[2] == (
        "  first   2026-12-17 Thu  2026-12-17 Thu    2026-12-31 16:00  completed; 14 days late"
    )
    assert lines[3] == (
        "  second  2026-12-18 Fri  2027-01-01 Fri    -                 "
        "not released yet; projected 14 days late; after first is done (+1bd)"
    )
    assert lines[-2] == (
        "projected finish 2027-01-05 Tue "
        "(planned 2026-12-22 Tue; after the contract end on 2026-12-31 Thu: at risk)"
    )
    assert lines[-1] == (
        "  at risk: the checklist is projected to finish on Tue 05 Jan 2027 (third), "
        "5 days after the contract end (Thu 31 Dec 2026)"
    )


def test_the_rendering_says_when_the_plan_is_on_course():
    lines = render_timeline(timeline(CHAIN, "2026-11-20T15:00", {}))
    assert (
        lines[-1]
        == "projected finish 2026-12-22 Tue (planned 2026-12-22 Tue; by the contract end on 2026-12-31 Thu)"
    )
    no_end = DEAL.model_copy(update={"contract_end": None})
    book = load(CHAIN)
    ctx = PlanContext(ZoneInfo("UTC"), {}, None, RUN_START)
    result = project(plan(no_end, book, ctx), book, no_end, ctx, {})
    assert "the deal has no contract end date" in render_timeline(result)[-1] and not result.at_risk
    # Counted from the close date, the first task went out at the run's start; the chain follows it.
    assert result.planned_finish is not None and result.planned_finish.date() == date(2026, 11, 25)
