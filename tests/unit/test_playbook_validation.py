"""`offboard validate`: every problem is one line naming the file, the field path and the fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from connector.cli import main
from tests.support.helpers import BUNDLED_PLAYBOOKS

GOOD_STEP = """
  - id: confirm
    task: {title: "Confirm with {{ company.name }}", due: -30d}
"""


def playbook(
    body: str, steps: str = GOOD_STEP, header: str = "id: broken\nname: Broken\nversion: 1\n"
) -> str:
    return header + textwrap.dedent(body) + "steps:" + steps


BROKEN = [
    # (name, file content, field path, words of the fix)
    ("unknown-key", playbook("colour: blue\n"), "colour", "unknown key"),
    (
        "bad-offset",
        playbook("", "\n  - id: a\n    task: {title: x, due: -3x}\n"),
        "steps[0].task.due",
        "business days (bd)",
    ),
    (
        "bad-owner",
        playbook("", "\n  - id: a\n    task: {title: x, owner: bob}\n"),
        "steps[0].task.owner",
        "deal_owner, role:<name> or user:<crm user id>",
    ),
    (
        "unknown-template-name",
        playbook("", "\n  - id: a\n    task: {title: '{{ client.name }}'}\n"),
        "steps[0].task.title",
        "'client' is undefined",
    ),
    (
        "sandbox-escape",
        playbook("", "\n  - id: a\n    task: {title: \"{{ ''.__class__.__mro__ }}\"}\n"),
        "steps[0].task.title",
        "unsafe",
    ),
    (
        "two-kinds",
        playbook("", "\n  - id: a\n    task: {title: x}\n    note: {body: y}\n"),
        "steps[0]",
        "exactly one of task, note, survey, referral, property",
    ),
    (
        "after-nowhere",
        playbook("", "\n  - id: a\n    task: {title: x, after: exit-survey}\n"),
        "steps[0].task.after",
        "no step has id 'exit-survey'",
    ),
    (
        "after-cycle-in-a-list",
        playbook(
            "",
            "\n  - id: a\n    task: {title: x, after: [c, b]}\n  - id: b\n    task: {title: y, after: a}\n"
            "  - id: c\n    task: {title: z}\n",
        ),
        "steps[0].task.after[1]",
        "cycle: a → b → a",
    ),
    (
        "evidence-on-a-survey",
        playbook("", "\n  - id: a\n    survey: {kind: nps, evidence: required}\n"),
        "steps[0].survey.evidence",
        "only task steps take 'evidence'",
    ),
    (
        "escalate-not-overdue",
        playbook("", "\n  - id: a\n    task: {title: x, escalate: {overdue: -2bd, to: role:manager}}\n"),
        "steps[0].task.escalate.overdue",
        "give a positive offset",
    ),
    (
        "after-cycle",
        playbook(
            "", "\n  - id: a\n    task: {title: x, after: b}\n  - id: b\n    task: {title: y, after: a}\n"
        ),
        "steps[0].task.after",
        "cycle",
    ),
    ("duplicate-step-id", playbook("", GOOD_STEP + GOOD_STEP), "steps[1].id", "must be unique"),
    (
        "when-without-after",
        playbook("", "\n  - id: a\n    task: {title: x, when: {score: {gte: 9}}}\n"),
        "steps[0].task",
        "`when` needs `after",
    ),
    (
        "score-on-a-task",
        playbook(
            "", GOOD_STEP + "  - id: b\n    task: {title: y, after: confirm, when: {score: {gte: 9}}}\n"
        ),
        "steps[1].task.after",
        "needs `after` to name a survey step",
    ),
    ("bad-outcome", playbook("match: {outcome: [maybe]}\n"), "match.outcome[0]", "'won' or 'lost'"),
    ("empty-range", playbook("match: {amount: {}}\n"), "match.amount", "at least one of gte, gt, lte, lt"),
    (
        "bad-anchor",
        playbook("anchor: contract_start\n"),
        "anchor",
        "'close_date', 'contract_end' or 'run_start'",
    ),
    (
        "version-zero",
        playbook("", header="id: broken\nname: Broken\nversion: 0\n"),
        "version",
        "greater than or equal to 1",
    ),
    ("no-steps", "id: broken\nname: Broken\nversion: 1\nsteps: []\n", "steps", "at least 1 item"),
    ("bad-id", playbook("", header="id: Broken Playbook\nname: B\nversion: 1\n"), "id", "lowercase letters"),
    ("missing-name", "id: broken\nversion: 1\nsteps:" + GOOD_STEP, "name", "required"),
    (
        "survey-kind",
        playbook("", "\n  - id: a\n    survey: {kind: nsp}\n"),
        "steps[0].survey.kind",
        "'nps', 'csat' or 'ces'",
    ),
]


@pytest.mark.parametrize(("name", "content", "field", "fix"), BROKEN, ids=[b[0] for b in BROKEN])
def test_each_broken_playbook_names_file_field_and_fix(tmp_path: Path, name, content, field, fix):
    path = tmp_path / f"{name}.yaml"
    path.write_text(content)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    expected = f"{path}: {field}: "
    matching = [line for line in lines if line.startswith(expected)]
    assert matching, f"no line starts with {expected!r}:\n{result.output}"
    assert any(fix in line for line in matching), result.output


def test_not_yaml_names_the_line(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("id: x\nsteps: [\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}: not valid YAML:" in result.output and "line" in result.output


def test_problems_between_files(tmp_path: Path):
    one = playbook("match: {outcome: [won]}\npriority: 5\n")
    (tmp_path / "a.yaml").write_text(one)
    (tmp_path / "b.yaml").write_text(one)
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    assert f"{tmp_path / 'b.yaml'}: id: 'broken' is also the id of {tmp_path / 'a.yaml'}" in result.output
    assert (
        f"{tmp_path / 'b.yaml'}: match: matches exactly the same deals as {tmp_path / 'a.yaml'}"
        in result.output
    )


def test_every_problem_in_a_file_is_reported_at_once(tmp_path: Path):
    path = tmp_path / "many.yaml"
    path.write_text(playbook("colour: blue\n", "\n  - id: a\n    task: {title: x, due: soon, owner: bob}\n"))
    result = CliRunner().invoke(main, ["validate", str(path)])
    fields = {line.split(": ")[1] for line in result.output.strip().splitlines()}
    assert {"colour", "steps[0].task.due", "steps[0].task.owner"} <= fields


def test_the_bundled_playbooks_are_valid():
    result = CliRunner().invoke(main, ["validate", str(BUNDLED_PLAYBOOKS)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok  ") == len(list(BUNDLED_PLAYBOOKS.glob("*.yaml")))


def test_the_design_example_loads_and_means_what_it_says(tmp_path: Path):
    from connector.playbooks.loader import load_file

    docs = (BUNDLED_PLAYBOOKS.parent / "docs" / "playbooks.md").read_text()
    example = docs.split("```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.yaml"
    path.write_text(example)
    book = load_file(path).playbook
    assert (book.id, book.version, book.tone, book.anchor, book.priority) == (
        "terminated-retainer",
        3,
        "formal",
        "contract_end",
        10,
    )
    assert book.match.outcome == ["lost"] and book.match.amount and book.match.amount.gte == 1000
    nps, referral, call = book.step("exit-nps"), book.step("referral-ask"), book.step("detractor-call")
    assert nps.survey and nps.survey.kind == "nps" and str(nps.survey.send) == "+3d"
    assert referral.referral and referral.after_ids == ("exit-nps",)
    assert referral.referral.when and referral.referral.when.score and referral.referral.when.score.gte == 9
    assert call.task and str(call.task.due) == "+1bd" and call.task.when.score.lte == 6
    # Steps that wait on tasks, with evidence, escalation and the contract-end deadline.
    transfer, revoke, thanks = book.step("transfer-data"), book.step("revoke-access"), book.step("thank-you")
    assert transfer.task and transfer.task.evidence == "required" and transfer.after_ids == ()
    assert revoke.task and revoke.after_ids == ("transfer-data",) and revoke.task.evidence == "required"
    assert revoke.task.escalate and str(revoke.task.escalate.overdue) == "+2bd"
    assert revoke.task.escalate.to == "role:manager" and revoke.task.deadline == "contract_end"
    assert thanks.after_ids == ("revoke-access", "exit-nps")
    assert book.tasks_before(thanks) == ("revoke-access",) and book.survey_before(thanks) == "exit-nps"


# --- messages RevOps can act on ------------------------------------------------------------------

STEPS_HEADER = "id: a\nname: A\nversion: 1\n"
CLEARER = [
    # (name, file content, the exact line after "<file>: ")
    (
        "misspelt-template-field",
        STEPS_HEADER + "steps:\n  - id: x\n    task: {title: '{{ contact.firstname }}'}\n",
        "steps[0].task.title: template error: contact has no field 'firstname'; did you mean first_name? "
        "(fields: id, first_name, last_name, name, email)",
    ),
    (
        "after-typo",
        STEPS_HEADER + "steps:\n  - id: exit-survey\n    survey: {kind: nps}\n"
        "  - id: y\n    task: {title: x, after: exit-survy}\n",
        "steps[1].task.after: no step has id 'exit-survy'; did you mean exit-survey? (ids: exit-survey, y)",
    ),
    (
        "task-field-at-step-level",
        STEPS_HEADER + "steps:\n  - id: x\n    task:\n      title: hi\n    due: -3d\n",
        "steps[0].due: indentation: 'due' is a task field; indent it under `task:`, not at the step's level",
    ),
    (
        "step-field-inside-task",
        STEPS_HEADER + "steps:\n  - id: x\n    task:\n      title: hi\n      covers: [1]\n",
        "steps[0].task.covers: indentation: 'covers' belongs to the step, not inside it; "
        "indent it less, level with `id:`",
    ),
    (
        "match-key-at-top",
        STEPS_HEADER + "outcome: [won]\nsteps:\n  - id: x\n    task: {title: hi}\n",
        "outcome: indentation: 'outcome' belongs under `match:`; indent it there",
    ),
    (
        "misspelt-key",
        STEPS_HEADER + "steps:\n  - id: x\n    task:\n      title: hi\n      prority: high\n",
        "steps[0].task.prority: unknown key; did you mean priority? "
        "(keys here: after, when, title, body, due, owner, priority, type, evidence, escalate, deadline); "
        "see docs/playbooks.md",
    ),
    (
        "yaml-colon",
        STEPS_HEADER + "steps:\n  - id: x\n    task:\n      title: Note: this\n",
        "not valid YAML: line 7, column 18: a ':' YAML did not expect: put text containing ': ' in quotes, "
        "or check that this line is indented like the keys it belongs with "
        "(YAML: mapping values are not allowed here)",
    ),
    (
        "yaml-tab",
        STEPS_HEADER + "steps:\n  - id: x\n    task:\n\ttitle: hi\n",
        "not valid YAML: line 7, column 1: a tab: indent with spaces only "
        "(YAML: found character '\\t' that cannot start any token)",
    ),
    (
        "yaml-unclosed-quote",
        'id: a\nname: "A\nversion: 1\n',
        "not valid YAML: line 4, column 1: the file ends inside a quote that was never closed "
        "(YAML: found unexpected end of stream); the quoted text began at line 2",
    ),
]


@pytest.mark.parametrize(("name", "content", "line"), CLEARER, ids=[c[0] for c in CLEARER])
def test_problems_say_what_to_do(tmp_path: Path, name, content, line):
    path = tmp_path / f"{name}.yaml"
    path.write_text(content)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert f"{path}: {line}" in result.output.splitlines(), result.output


def test_an_unknown_template_name_suggests_the_nearest(tmp_path: Path):
    path = tmp_path / "a.yaml"
    path.write_text(STEPS_HEADER + "steps:\n  - id: x\n    task: {title: '{{ contacts.name }}'}\n")
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert (
        "'contacts' is undefined; did you mean contact? (templates may use: deal, company," in result.output
    )


# --- roles with no mapping: a warning, not an error ----------------------------------------------

ROLE_BOOK = (
    STEPS_HEADER
    + "steps:\n  - id: x\n    task: {title: hi}\n  - id: y\n    task: {title: pay, owner: role:finance}\n"
)


def test_a_role_with_no_mapping_is_a_warning_naming_file_and_field(tmp_path: Path):
    path = tmp_path / "a.yaml"
    path.write_text(ROLE_BOOK)
    result = CliRunner().invoke(main, ["validate", str(path)], env={"OFFBOARD_ROLES": '{"it": "u-1"}'})
    assert result.exit_code == 0, result.output
    assert (
        f"{path}: steps[1].task.owner: warning: role:finance has no mapping in OFFBOARD_ROLES; "
        "its tasks go to the deal owner"
    ) in result.output.splitlines()
    assert f"ok  {path}  a v1  (2 steps)" in result.output


def test_a_mapped_role_is_not_warned_about(tmp_path: Path):
    path = tmp_path / "a.yaml"
    path.write_text(ROLE_BOOK)
    result = CliRunner().invoke(main, ["validate", str(path)], env={"OFFBOARD_ROLES": '{"finance": "f-1"}'})
    assert result.exit_code == 0 and "warning" not in result.output


def test_the_warning_names_the_fallback_owner_when_set(tmp_path: Path):
    path = tmp_path / "a.yaml"
    path.write_text(ROLE_BOOK)
    env = {"OFFBOARD_ROLES": "{}", "OFFBOARD_FALLBACK_OWNER": "ops-1"}
    result = CliRunner().invoke(main, ["validate", str(path)], env=env)
    assert "its tasks go to the fallback owner (ops-1)" in result.output
