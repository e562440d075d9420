"""Steps that wait on steps: `after` with one id or several, and the graph rules `validate` enforces."""

from __future__ import annotations

import textwrap
from datetime import date

import pytest

from connector.errors import PlaybookError
from connector.playbooks import graph
from connector.playbooks.loader import content_hash, from_pinned, load_text
from connector.playbooks.model import Playbook

HEADER = "id: g\nname: Graph\nversion: 1\nanchor: contract_end\n"


def book(steps: str, header: str = HEADER) -> str:
    return header + "steps:\n" + textwrap.indent(textwrap.dedent(steps).strip("\n"), "  ") + "\n"


def problems(steps: str, header: str = HEADER) -> list[str]:
    with pytest.raises(PlaybookError) as raised:
        load_text(book(steps, header), "g.yaml")
    assert all(line.startswith("g.yaml: ") for line in raised.value.problems)  # the file, then the field
    return [line.removeprefix("g.yaml: ") for line in raised.value.problems]


TRANSFER_REVOKE_NPS = """
- id: transfer
  task: {title: Transfer, due: -5d}
- id: revoke
  task: {title: Revoke, after: transfer, due: +0d}
- id: exit-nps
  survey: {kind: nps, send: +1d}
"""


# --- the language ---------------------------------------------------------------------------------


def test_after_takes_one_id_or_a_list_and_always_offers_a_tuple():
    loaded = load_text(
        book(TRANSFER_REVOKE_NPS + "- id: thanks\n  task: {title: Thanks, after: [revoke, exit-nps]}\n"), "g"
    ).playbook
    assert loaded.step("revoke").after_ids == ("transfer",)
    assert loaded.step("thanks").after_ids == ("revoke", "exit-nps")
    assert loaded.step("transfer").after_ids == ()
    assert loaded.tasks_before(loaded.step("thanks")) == ("revoke",)
    assert loaded.survey_before(loaded.step("thanks")) == "exit-nps"
    assert [s.id for s in loaded.dependants("revoke")] == ["thanks"]
    assert loaded.step("thanks").waits_on("exit-nps") and not loaded.step("thanks").waits_on("transfer")


def test_one_id_dumps_as_it_was_written_so_existing_hashes_hold():
    one = load_text(book(TRANSFER_REVOKE_NPS), "g")
    dumped = one.pinned()["steps"][1]["task"]
    assert dumped["after"] == "transfer"  # not ["transfer"]: the pinned copy and the hash are unchanged
    assert load_text(book(TRANSFER_REVOKE_NPS.replace("after: transfer", "after: [transfer]")), "g").hash == (
        one.hash
    )
    two = load_text(
        book(TRANSFER_REVOKE_NPS + "- id: t\n  task: {title: T, after: [revoke, transfer]}\n"), "g"
    )
    assert two.pinned()["steps"][3]["task"]["after"] == ["revoke", "transfer"]


def test_a_run_pinned_before_lists_still_loads():
    pinned = {
        "id": "old",
        "name": "Old",
        "version": 1,
        "steps": [
            {"id": "exit-nps", "survey": {"kind": "nps"}},
            {"id": "call", "task": {"title": "Call", "after": "exit-nps", "when": {"score": {"lte": 6}}}},
        ],
    }
    playbook = from_pinned(pinned)
    assert playbook.step("call").after_ids == ("exit-nps",)
    assert content_hash(playbook) == content_hash(Playbook.model_validate(pinned))


def test_task_steps_take_evidence_escalation_and_a_contract_end_deadline():
    loaded = load_text(
        book("""
        - id: revoke
          task: {title: Revoke, evidence: required, deadline: contract_end,
                 escalate: {overdue: 2bd, to: role:manager}}
        """),
        "g",
    ).playbook
    task = loaded.step("revoke").task
    assert task is not None and task.evidence == "required" and task.deadline == "contract_end"
    assert task.escalate is not None and (str(task.escalate.overdue), task.escalate.to) == (
        "+2bd",
        "role:manager",
    )


# --- what validate refuses, each naming the field --------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "line"),
    [
        pytest.param(
            """
            - id: a
              task: {title: A, after: [c, b]}
            - id: b
              task: {title: B, after: a}
            - id: c
              task: {title: C}
            """,
            "steps[0].task.after[1]: `after` makes a cycle: a → b → a",
            id="cycle-through-a-list",
        ),
        pytest.param(
            """
            - id: a
              task: {title: A, after: [b, a]}
            - id: b
              task: {title: B}
            """,
            "steps[0].task.after[1]: a step cannot wait for itself",
            id="self-in-a-list",
        ),
        pytest.param(
            """
            - id: a
              task: {title: A, after: [b, b]}
            - id: b
              task: {title: B}
            """,
            "steps[0].task.after[1]: 'b' is listed twice",
            id="listed-twice",
        ),
        pytest.param(
            """
            - id: exit-survey
              survey: {kind: nps}
            - id: y
              task: {title: Y, after: [exit-survey, exit-survy]}
            """,
            "steps[1].task.after[1]: no step has id 'exit-survy'; did you mean exit-survey? "
            "(ids: exit-survey, y)",
            id="unknown-id-in-a-list",
        ),
        pytest.param(
            """
            - id: a
              task: {title: A}
            - id: b
              task: {title: B}
            - id: c
              task: {title: C, after: [a, b], when: {score: {gte: 9}}}
            """,
            "steps[2].task.after: `when` tests a survey's answer, so it needs `after` to name a survey step; "
            "'a', 'b' are not",
            id="when-without-a-survey",
        ),
        pytest.param(
            """
            - id: nps
              survey: {kind: nps}
            - id: csat
              survey: {kind: csat}
            - id: c
              task: {title: C, after: [nps, csat], when: {score: {gte: 9}}}
            """,
            "steps[2].task.after: `when` tests one survey's answer; `after` names 2 surveys (nps, csat): "
            "wait for one of them here",
            id="when-with-two-surveys",
        ),
        pytest.param(
            """
            - id: hello
              note: {body: Hello}
            - id: c
              task: {title: C, after: hello}
            """,
            "steps[1].task.after: 'hello' is a note step, which nobody completes or answers, so this step "
            "would never run: wait for a task (completed in the CRM) or a survey (answered)",
            id="after-a-note",
        ),
        pytest.param(
            """
            - id: nps
              survey: {kind: nps}
            - id: again
              survey: {kind: nps, after: nps, when: {answered: false}}
            - id: call
              task: {title: Call, after: again, when: {score: {lte: 6}}}
            """,
            "steps[2].task.after: 'again' is a reminder: its answers count for 'nps', and this step would "
            "never run; wait for 'nps' instead",
            id="after-a-reminder",
        ),
        pytest.param(
            """
            - id: a
              task: {title: A}
            - id: again
              survey: {kind: nps, after: a, when: {answered: false}}
            """,
            "steps[1].survey.after: a reminder follows a survey; 'a' is a task step",
            id="reminder-after-a-task",
        ),
    ],
)
def test_graph_problems_name_the_field(steps, line):
    assert line in problems(steps)


def test_a_reminder_names_exactly_one_survey():
    found = problems("""
        - id: nps
          survey: {kind: nps}
        - id: csat
          survey: {kind: csat}
        - id: again
          survey: {kind: nps, after: [nps, csat], when: {answered: false}}
        """)
    assert "steps[2].survey: a reminder follows exactly one survey; `after` names 2: nps, csat" in found


def test_a_step_that_needs_two_scores_of_one_survey_never_runs_nor_do_its_dependants():
    found = problems("""
        - id: nps
          survey: {kind: nps}
        - id: thank-promoter
          task: {title: Thanks, after: nps, when: {score: {gte: 9}}}
        - id: call-detractor
          task: {title: Call, after: nps, when: {score: {lte: 6}}}
        - id: debrief
          task: {title: Debrief, after: [thank-promoter, call-detractor]}
        - id: report
          task: {title: Report, after: debrief}
        """)
    assert found == [
        "steps[3].task.after: never runs: it needs thank-promoter (nps score >= 9) and call-detractor "
        "(nps score <= 6); nps is answered once, so these never hold together",
        "steps[4].task.after: waits on 'debrief', which can never run (see steps[3]), "
        "so this step never runs either",
    ]


def test_scores_that_can_hold_together_are_fine():
    load_text(
        book("""
        - id: nps
          survey: {kind: nps}
        - id: happy
          task: {title: Happy, after: nps, when: {score: {gte: 7}}}
        - id: very-happy
          task: {title: Very, after: [happy, nps], when: {score: {gt: 8.5}}}
        """),
        "g",
    )


@pytest.mark.parametrize("key", ["evidence: required", "escalate: {overdue: 2bd, to: deal_owner}"])
def test_evidence_and_escalation_are_for_task_steps_only(key):
    name = key.split(":")[0]
    found = problems(f"- id: hello\n  note: {{body: Hi, {key}}}\n")
    assert found == [f"steps[0].note.{name}: only task steps take {name!r}: nobody completes a note step"]


@pytest.mark.parametrize("overdue", ["0d", "-1bd"])
def test_escalation_waits_a_positive_time(overdue):
    (line,) = problems(f"- id: a\n  task: {{title: A, escalate: {{overdue: {overdue}, to: role:manager}}}}\n")
    assert line.startswith("steps[0].task.escalate.overdue: ")
    assert "give a positive offset, e.g. 2bd" in line


def test_an_escalation_names_who_hears_of_it():
    assert problems("- id: a\n  task: {title: A, escalate: {overdue: 2bd}}\n") == [
        "steps[0].task.escalate.to: required"
    ]


def test_a_contract_end_deadline_on_a_task_planned_after_it_is_refused():
    found = problems("""
        - id: transfer
          task: {title: Transfer, due: -1d}
        - id: revoke
          task: {title: Revoke, after: transfer, due: +2bd, deadline: contract_end}
        """)
    assert found == [
        "steps[1].task.deadline: the playbook plans this task at least 1 day(s) after the contract end "
        "it must be done by; give it, or the steps it waits on, an earlier due"
    ]


def test_a_contract_end_deadline_counts_from_the_deal_whatever_the_anchor():
    # Counted from the close date, only the deal says whether the task lands before its contract end.
    header = HEADER.replace("anchor: contract_end", "anchor: close_date")
    load_text(book("- id: a\n  task: {title: A, due: +30d, deadline: contract_end}\n", header), "g")


def test_deadline_takes_contract_end_only():
    (line,) = problems("- id: a\n  task: {title: A, deadline: close_date}\n")
    assert line.startswith("steps[0].task.deadline: ") and "'contract_end'" in line


# --- the graph itself -----------------------------------------------------------------------------


def test_order_puts_every_step_after_what_it_waits_for():
    loaded = load_text(
        book("""
        - id: thanks
          task: {title: Thanks, after: [revoke, invoice]}
        - id: revoke
          task: {title: Revoke, after: transfer}
        - id: transfer
          task: {title: Transfer}
        - id: invoice
          task: {title: Invoice}
        """),
        "g",
    ).playbook
    laid = graph.order(loaded)
    assert laid is not None
    ids = [s.id for s in laid]
    assert ids.index("transfer") < ids.index("revoke") < ids.index("thanks")
    assert ids.index("invoice") < ids.index("thanks")


def test_planned_days_follow_chains_and_survey_windows():
    loaded = load_text(
        book("""
        - id: transfer
          task: {title: Transfer, due: -5d}
        - id: invoice
          task: {title: Invoice, due: -10d}
        - id: revoke
          task: {title: Revoke, after: transfer, due: +1bd}
        - id: exit-nps
          survey: {kind: nps, send: +1d, deadline: 5d}
        - id: thanks
          task: {title: Thanks, after: [revoke, exit-nps], due: +1bd}
        """),
        "g",
    ).playbook
    days = graph.planned_days(loaded, date(2026, 12, 31))  # a Thursday
    assert days["transfer"] == date(2026, 12, 28)  # Sat 26 Dec moves to Monday
    assert days["revoke"] == date(2026, 12, 29)
    assert days["exit-nps"] == date(2027, 1, 1)
    # The survey counts as done when its answer window closes (Wed 6 Jan), later than the revocation.
    assert days["thanks"] == date(2027, 1, 7)
