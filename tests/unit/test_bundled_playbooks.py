"""The bundled playbooks cover the offboarding checklist, and docs/playbooks.md says how."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from connector.playbooks import graph
from connector.playbooks.coverage import COMMAND, table_in
from connector.playbooks.loader import load_all
from connector.playbooks.model import Playbook, Step
from tests.support.checklist import CHECKLIST, CLIENT_FACING, FULL_PLAYBOOKS, coverage_table
from tests.support.helpers import BUNDLED_PLAYBOOKS, ROOT

LOADED = {p.id: p for p in load_all([BUNDLED_PLAYBOOKS])}
PROMOTER = {"nps": 9, "csat": 5, "ces": 6}  # the lowest score that counts as a happy client
DETRACTOR = {"nps": 6, "csat": 3, "ces": 4}


def certain(book: Playbook, step: Step) -> bool:
    """Whether the step runs whatever the client answers (no `when` on it or on a step it waits for)."""
    return step.body.when is None and all(certain(book, book.step(i)) for i in step.after_ids)


def the_step(book: Playbook, line: int) -> Step:
    """The one task step covering ``line`` of the checklist."""
    (step,) = [s for s in book.steps if line in s.covers and s.task is not None]
    return step


def test_all_five_kinds_of_offboarding_are_bundled():
    assert set(FULL_PLAYBOOKS) | {"fallback"} <= set(LOADED)
    assert LOADED["completed-project"].playbook.tone == "celebratory"
    assert LOADED["terminated-contract"].playbook.tone == "formal"
    assert LOADED["contract-ending"].playbook.trigger.contract_end is not None
    assert LOADED["fallback"].playbook.match.model_dump(exclude_none=True) == {"fields": {}}


@pytest.mark.parametrize("playbook_id", FULL_PLAYBOOKS)
def test_each_full_playbook_covers_all_fifteen_lines(playbook_id):
    covered = {line for step in LOADED[playbook_id].playbook.steps for line in step.covers}
    assert covered == set(CHECKLIST), f"missing lines: {sorted(set(CHECKLIST) - covered)}"


def test_together_they_cover_every_line():
    covered = {line for p in LOADED.values() for step in p.playbook.steps for line in step.covers}
    assert covered == set(CHECKLIST)


@pytest.mark.parametrize("playbook_id", sorted(LOADED))
@pytest.mark.parametrize("contract_end", [date(2026, 12, 31) + timedelta(days=d) for d in range(7)])
def test_the_thank_you_is_the_last_client_facing_step(playbook_id, contract_end):
    book = LOADED[playbook_id].playbook
    days = graph.planned_days(book, contract_end)  # each step it waits for done on its planned day
    steps = [s for s in book.steps if certain(book, s)]
    thank_you = [s for s in steps if 14 in s.covers]
    assert len(thank_you) == 1
    client_facing = [s for s in steps if set(s.covers) & CLIENT_FACING]
    latest = max(client_facing, key=lambda s: days[s.id])
    assert days[thank_you[0].id] >= days[latest.id], f"{latest.id} comes after the thank-you"
    follow_up = [s for s in steps if 15 in s.covers]
    assert all(days[s.id] > days[thank_you[0].id] for s in follow_up)


@pytest.mark.parametrize("playbook_id", sorted(LOADED))
def test_the_checklist_has_its_order_in_it(playbook_id):
    """Revocation right after the transfer; the thank-you once the final invoice is paid."""
    book = LOADED[playbook_id].playbook
    invoice, revoke, thank_you = the_step(book, 4), the_step(book, 6), the_step(book, 14)
    assert thank_you.after_ids == (invoice.id,)
    transfer = [s for s in book.steps if 5 in s.covers]
    if transfer:  # the fallback has no transfer step: its revocation counts from the contract end
        assert revoke.after_ids == (transfer[0].id,)
        assert revoke.task is not None and str(revoke.task.due) == "+0d"  # right after it
    else:
        assert revoke.after_ids == ()
    assert playbook_id == "fallback" or transfer, "every full playbook transfers the data"


@pytest.mark.parametrize("playbook_id", sorted(LOADED))
def test_revocation_deletion_and_transfer_need_evidence(playbook_id):
    book = LOADED[playbook_id].playbook
    for step in book.steps:
        if step.task is None:
            continue
        needs = bool({5, 6, 7} & set(step.covers))
        assert (step.task.evidence == "required") == needs, f"{step.id}: evidence {step.task.evidence}"
        if needs:
            assert "Evidence:" in str(step.task.body), f"{step.id} does not tell the CSM how to give it"


@pytest.mark.parametrize("playbook_id", sorted(LOADED))
def test_the_invoice_and_the_revocation_escalate_to_a_manager(playbook_id):
    book = LOADED[playbook_id].playbook
    escalating = {s.id for s in book.steps if s.task is not None and s.task.escalate is not None}
    assert escalating == {the_step(book, 4).id, the_step(book, 6).id}
    for step_id in escalating:
        escalate = book.step(step_id).task.escalate  # type: ignore[union-attr]
        assert (str(escalate.overdue), escalate.to) == ("+2bd", "role:manager")


@pytest.mark.parametrize("playbook_id", sorted(LOADED))
def test_access_ends_by_the_contract_end(playbook_id):
    book = LOADED[playbook_id].playbook
    by_the_end = {s.id for s in book.steps if s.task is not None and s.task.deadline == "contract_end"}
    assert the_step(book, 6).id in by_the_end
    assert by_the_end <= {s.id for s in book.steps if {5, 6} & set(s.covers)}
    days = graph.planned_days(book, date(2026, 12, 31))
    assert all(days[step_id] <= date(2026, 12, 31) for step_id in by_the_end)  # as planned, in time


def _survey_kinds(book: Playbook) -> dict[str, str]:
    """The surveys that ask (reminders, with `after`, only repeat them)."""
    return {s.id: s.survey.kind for s in book.steps if s.survey and s.survey.reminds is None}


@pytest.mark.parametrize("playbook_id", sorted(LOADED))
def test_referral_asks_go_only_to_promoters_and_detractors_get_a_task(playbook_id):
    book = LOADED[playbook_id].playbook
    surveys = _survey_kinds(book)
    for step in book.steps:
        if step.referral is None:
            continue
        survey = book.survey_before(step)
        assert survey in surveys, f"{step.id} does not wait for a survey"
        score = step.referral.when.score if step.referral.when else None
        assert score is not None and score.gte is not None
        assert score.gte >= PROMOTER[surveys[survey]]
    for survey_id, kind in surveys.items():
        followers = [s for s in book.steps if s.task and s.waits_on(survey_id) and s.task.when]
        lows = [s for s in followers if s.task.when.score and s.task.when.score.lte is not None]
        assert lows, f"{playbook_id}: no task for detractors after {survey_id}"
        assert all(s.task.when.score.lte <= DETRACTOR[kind] for s in lows)


def test_the_docs_table_matches_the_playbooks():
    docs = (ROOT / "docs" / "playbooks.md").read_text()
    assert table_in(docs) == coverage_table(list(LOADED.values())), (
        f"docs/playbooks.md's coverage table is out of date: run `{COMMAND}`"
    )


def test_coverage_table_lists_each_step_under_its_line():
    table = coverage_table([LOADED["completed-project"]])
    assert "| 6 | Access revocation, right after transfer | `revoke-access` |" in table


def test_the_coverage_command_prints_and_rewrites_the_table(tmp_path, monkeypatch):
    """A new playbook changes the table; the command the failing test names brings the docs back in step."""
    import shutil

    from click.testing import CliRunner

    from connector.cli import main

    books = tmp_path / "playbooks"
    shutil.copytree(BUNDLED_PLAYBOOKS, books)
    (books / "new.yaml").write_text(
        "id: new-one\nname: New\nversion: 1\nmatch: {contract_type: [pilot]}\n"
        "steps:\n  - id: wave\n    covers: [14]\n    task: {title: Bye}\n"
    )
    docs = tmp_path / "playbooks.md"
    shutil.copy(ROOT / "docs" / "playbooks.md", docs)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(books))
    printed = CliRunner().invoke(main, ["playbooks", "coverage"])
    assert printed.exit_code == 0, printed.output
    assert "`new-one`" in printed.output.splitlines()[0] and "| 14 |" in printed.output
    assert table_in(docs.read_text()) != printed.output.strip()  # the docs are now out of date
    written = CliRunner().invoke(main, ["playbooks", "coverage", "--write", "--docs", str(docs)])
    assert written.exit_code == 0, written.output
    assert table_in(docs.read_text()) == printed.output.strip()
    assert docs.read_text().count("<!-- end coverage table -->") == 1
    again = CliRunner().invoke(main, ["playbooks", "coverage", "--write", "--docs", str(docs)])
    assert "up to date" in again.output


def test_the_coverage_command_says_when_the_markers_are_missing(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from connector.cli import main

    docs = tmp_path / "playbooks.md"
    docs.write_text("# no table here\n")
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(BUNDLED_PLAYBOOKS))
    result = CliRunner().invoke(main, ["playbooks", "coverage", "--write", "--docs", str(docs)])
    assert result.exit_code == 1
    assert "no '<!-- coverage table … -->' and '<!-- end coverage table -->' markers" in result.output
