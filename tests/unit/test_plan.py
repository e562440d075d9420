"""`offboard plan`: the playbook a deal gets, why not the others, and a concrete timeline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from connector.cli import main
from tests.support.helpers import BUNDLED_PLAYBOOKS, deal_closed_event


def version(playbook: str) -> int:
    """The bundled playbook's version, as its file says."""
    return int(yaml.safe_load((BUNDLED_PLAYBOOKS / f"{playbook}.yaml").read_text())["version"])


def plan(tmp_path: Path, event: dict, *args: str, env: dict | None = None):
    path = tmp_path / "deal.json"
    path.write_text(json.dumps(event))
    environment = {"OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS), "OFFBOARD_ROLES": '{"finance": "finance-1"}'}
    result = CliRunner().invoke(
        main, ["plan", str(path), "--now", "2026-11-20T15:00", *args], env=environment | (env or {})
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_a_won_project_gets_the_completed_project_timeline(tmp_path):
    out = plan(tmp_path, deal_closed_event())
    assert f"Playbook: completed-project v{version('completed-project')} 'Completed project'" in out
    assert "anchor: contract end 2026-12-31" in out
    assert "2026-12-01 Tue 09:00 UTC  task      owner-1      Confirm the end date with Acme Corp" in out
    assert "2026-12-21 Mon 09:00 UTC  task      finance-1    Send the final invoice to Acme Corp" in out
    assert "2027-01-01 Fri 09:00 UTC  survey    -            Send the NPS survey to Pat Lee" in out
    assert (
        "2026-11-20 Fri 15:00 UTC  property  -            Set offboarding_status=in progress on the deal"
        in out
    )
    assert "fallback: matches too, but completed-project wins on priority (20 vs -100)" in out
    assert "terminated-contract: outcome: 'won' is not one of ['lost']" in out
    assert (
        "referral  Ask Pat Lee for a referral / testimonial / case study  "
        "(after exit-nps is answered, when score >= 9)" in out
    )


def test_calendar_offsets_on_a_weekend_move_to_monday(tmp_path):
    out = plan(tmp_path, deal_closed_event())
    # knowledge-transfer is -12d from Thu 31 Dec: Sat 19 Dec, moved to Mon 21 Dec.
    assert (
        "2026-12-21 Mon 09:00 UTC  task      owner-1      Knowledge transfer and training for Acme Corp"
        in out
    )


@pytest.mark.parametrize(
    ("deal", "playbook"),
    [
        ({"outcome": "lost", "contract_type": "subscription"}, "churned-subscription"),
        ({"outcome": "lost", "contract_type": "Retainer"}, "terminated-contract"),
        ({"outcome": "won", "contract_type": "hardware"}, "fallback"),
    ],
)
def test_each_kind_of_deal_gets_its_playbook(tmp_path, deal, playbook):
    out = plan(tmp_path, deal_closed_event(**deal))
    assert f"Playbook: {playbook} v{version(playbook)}" in out


def test_a_deal_without_contract_end_counts_from_the_close_date_and_says_so(tmp_path):
    out = plan(tmp_path, deal_closed_event(contract_end=None))
    assert "anchor: close date 2026-11-20 (deal has no contract end date; counted from the close date)" in out
    assert (  # -30d from the close date has passed: it goes out now, and says so
        "2026-11-20 Fri 15:00 UTC  task      owner-1      Confirm the end date with Acme Corp  "
        "(was due Wed 21 Oct, goes out now)" in out
    )


BUSINESS_DAYS = """
id: business-days
name: Business days
version: 1
anchor: close_date
steps:
  - id: next-business-day
    task: {title: "+1bd", due: +1bd}
  - id: a-week-of-business-days
    task: {title: "+5bd", due: +5bd}
  - id: business-day-before
    task: {title: "-1bd", due: -1bd}
  - id: two-days
    task: {title: "+2d kept", due: +2d}
weekends: keep
"""


def test_business_day_offsets_skip_weekends(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "b.yaml").write_text(BUSINESS_DAYS)
    out = plan(tmp_path, deal_closed_event(close_date="2026-11-20"), "--playbooks", str(folder))  # a Friday
    assert "2026-11-23 Mon 09:00 UTC  task      owner-1      +1bd" in out
    assert "2026-11-27 Fri 09:00 UTC  task      owner-1      +5bd" in out
    assert "2026-11-20 Fri 15:00 UTC  task      owner-1      -1bd  (was due Thu 19 Nov, goes out now)" in out
    assert "2026-11-22 Sun 09:00 UTC  task      owner-1      +2d kept" in out  # weekends: keep


def test_due_times_are_nine_in_the_account_zone_stored_in_utc(tmp_path):
    out = plan(tmp_path, deal_closed_event(), env={"OFFBOARD_TIMEZONE": "America/New_York"})
    assert "2026-12-01 Tue 14:00 UTC  task      owner-1      Confirm the end date with Acme Corp" in out


def test_json_format_for_tools(tmp_path):
    data = json.loads(plan(tmp_path, deal_closed_event(), "--format", "json"))
    assert data["playbook"]["id"] == "completed-project"
    first = data["timeline"][0]
    assert set(first) >= {"step", "kind", "due_at", "owner", "title"}
    confirm = next(s for s in data["timeline"] if s["step"] == "confirm-end-date")
    assert (confirm["due_at"], confirm["owner"]) == ("2026-12-01T09:00:00+00:00", "owner-1")
    assert {c["step"] for c in data["conditional"]} == {
        "nps-reminder",
        "detractor-call",
        "referral-ask",
        "future-work",
        "revoke-access",  # waits for the data transfer to be completed
        "thank-you",  # waits for the final invoice to be paid
    }
    revoke = next(c for c in data["conditional"] if c["step"] == "revoke-access")
    assert (revoke["due_at"], revoke["condition"]) == (None, "after backup-and-transfer is done (+0d)")


def test_no_match_is_said_plainly(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "won.yaml").write_text(
        "id: won\nname: Won\nversion: 1\nmatch: {outcome: [won]}\nsteps:\n  - id: a\n    task: {title: x}\n"
    )
    out = plan(tmp_path, deal_closed_event(outcome="lost"), "--playbooks", str(folder))
    assert "No playbook matches this deal (deal closed)." in out
    assert "won: outcome: 'lost' is not one of ['won']" in out


def test_plan_needs_a_deal(tmp_path):
    result = CliRunner().invoke(main, ["plan"])
    assert result.exit_code == 2
    assert "give either EVENT_FILE or both --crm and --deal" in result.output


def test_a_malformed_deal_file_names_the_field(tmp_path):
    event = deal_closed_event(outcome="maybe")
    path = tmp_path / "deal.json"
    path.write_text(json.dumps(event))
    result = CliRunner().invoke(main, ["plan", str(path)])
    assert result.exit_code == 1
    assert "deal.outcome" in result.output


def test_plan_fetches_the_deal_from_a_crm(tmp_path, monkeypatch, sqlite_url):
    from adapters.sandbox import SandboxAdapter
    from connector.generic import GenericEvent
    from connector.store import Store
    from connector.store.migrate import upgrade

    store = Store.from_url(sqlite_url)
    upgrade(store.engine)
    deal = GenericEvent.model_validate(deal_closed_event("S-1")).to_deal("sandbox")
    SandboxAdapter(store).put_deal(deal)
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(BUNDLED_PLAYBOOKS))
    result = CliRunner().invoke(main, ["plan", "--crm", "sandbox", "--deal", "S-1", "--now", "2026-11-20"])
    assert result.exit_code == 0, result.output
    assert "Deal S-1 'Acme website'" in result.output
    assert f"Playbook: completed-project v{version('completed-project')}" in result.output
    missing = CliRunner().invoke(main, ["plan", "--crm", "sandbox", "--deal", "nope"])
    assert missing.exit_code == 1
    assert "cannot fetch deal nope" in missing.output


# --- backdated deals: what has passed goes out now, in order -------------------------------------


def test_a_backdated_deal_sends_what_has_passed_now_in_playbook_order(tmp_path):
    # The contract ended on 1 Oct; the run starts on 20 Nov: every step's time has passed.
    data = json.loads(plan(tmp_path, deal_closed_event(contract_end="2026-10-01"), "--format", "json"))
    timeline = {s["step"]: s for s in data["timeline"]}
    survey, follow_up = timeline["exit-nps"], timeline["follow-up"]
    assert survey["due_at"] == "2026-11-20T15:07:00+00:00"  # after the seven late tasks, a minute apart
    assert survey["was_due"] == "2026-10-02T09:00:00+00:00"
    assert follow_up["due_at"] > survey["due_at"]  # never due before the survey it follows
    assert follow_up["was_due"] == "2026-11-12T09:00:00+00:00"
    assert "thank-you" not in timeline  # it waits for the final invoice to be paid
    # The answer window counts from the new send, not from the planned one.
    assert survey["detail"]["deadline_at"] == "2026-11-25T09:00:00+00:00"  # +5d (a Wednesday)
    dues = [s["due_at"] for s in data["timeline"]]
    order = [s["step"] for s in sorted(data["timeline"], key=lambda s: s["was_due"] or s["due_at"])]
    assert [s["step"] for s in sorted(data["timeline"], key=lambda s: s["due_at"])] == order
    assert len(set(dues)) == len(dues)  # no two late steps at the same minute: their order is kept


def test_plan_text_says_a_late_step_goes_out_now(tmp_path):
    out = plan(tmp_path, deal_closed_event(contract_end="2026-10-01"))
    assert (
        "2026-11-20 Fri 15:07 UTC  survey    -            Send the NPS survey to Pat Lee  "
        "(was due Fri 02 Oct, goes out now)" in out
    )
    assert "Check in with Pat at Acme Corp  (was due Thu 12 Nov, goes out now)" in out  # +6w has passed too


def test_steps_still_ahead_keep_their_time(tmp_path):
    out = plan(tmp_path, deal_closed_event())  # contract ends 31 Dec, after 20 Nov
    assert "goes out now" not in out


# --- roles with no mapping -----------------------------------------------------------------------


def test_plan_shows_a_role_with_no_mapping_going_to_the_deal_owner(tmp_path):
    out = plan(tmp_path, deal_closed_event(), env={"OFFBOARD_ROLES": "{}"})
    assert (
        "2026-12-21 Mon 09:00 UTC  task      owner-1      Send the final invoice to Acme Corp  "
        "(role:finance → deal owner (no mapping))" in out
    )
    mapped = plan(tmp_path, deal_closed_event())
    assert "no mapping" not in mapped


def test_plan_names_the_fallback_owner_when_one_is_set(tmp_path):
    env = {"OFFBOARD_ROLES": "{}", "OFFBOARD_FALLBACK_OWNER": "ops-1"}
    data = json.loads(plan(tmp_path, deal_closed_event(), "--format", "json", env=env))
    invoice = next(s for s in data["timeline"] if s["step"] == "final-invoice")
    note = "role:finance → fallback owner (no mapping)"
    assert (invoice["owner"], invoice["owner_note"]) == ("ops-1", note)


# --- steps that wait on tasks --------------------------------------------------------------------

WAITING = """
id: waiting
name: Waiting
version: 1
anchor: contract_end
steps:
  - id: transfer-data
    task: {title: Transfer, due: -5bd}
  - id: final-invoice
    task: {title: Invoice, due: -10bd}
  - id: revoke-access
    task: {title: Revoke, after: transfer-data, due: +1bd}
  - id: exit-nps
    survey: {kind: nps, send: +1d}
  - id: archive
    task: {title: Archive, after: [final-invoice, revoke-access], due: +1bd}
  - id: thank-you
    task: {title: Thanks, after: [transfer-data, exit-nps], due: +1bd}
  - id: sorry
    task: {title: Sorry, after: [transfer-data, exit-nps], when: {score: {lte: 6}}, due: +2d}
"""


def test_plan_says_what_a_step_waits_for(tmp_path):
    folder = tmp_path / "books"
    folder.mkdir()
    (folder / "w.yaml").write_text(WAITING)
    out = plan(tmp_path, deal_closed_event(), "--playbooks", str(folder))
    assert "task      Revoke  (after transfer-data is done (+1bd))" in out
    assert "task      Archive  (after final-invoice, revoke-access are done (+1bd))" in out
    assert "task      Thanks  (after transfer-data is done and exit-nps is answered (+1bd))" in out
    assert (
        "task      Sorry  (after transfer-data is done and exit-nps is answered, when score <= 6 (+2d))"
        in out
    )
    timeline = out.split("Timeline:")[1].split("Waiting")[0]
    assert "Revoke" not in timeline and "Transfer" in timeline  # written when the transfer is done


def _waiting_book():
    from connector.playbooks.loader import load_text

    return load_text(WAITING, "w.yaml").playbook


def test_steps_released_by_a_completion_count_from_its_day():
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from connector.generic import GenericEvent
    from connector.planner import PlanContext, plan_follow_ups

    deal = GenericEvent.model_validate(deal_closed_event()).to_deal("sandbox")
    book = _waiting_book()
    now = datetime(2026, 12, 23, 16, 0, tzinfo=UTC)  # Wednesday
    ctx = PlanContext(ZoneInfo("Europe/Paris"), {}, None, now)
    completed = datetime(2026, 12, 23, 15, 30, tzinfo=UTC)
    (revoke,) = plan_follow_ups(deal, book, ctx, [book.step("revoke-access")], since=completed)
    assert revoke.due_at == datetime(2026, 12, 24, 8, 0, tzinfo=UTC)  # +1bd: Thu 24 Dec, 09:00 in Paris
    assert revoke.condition is None and revoke.was_due is None
    # Completed last week and only seen now (a missed webhook): the step is late, and goes out now.
    (late,) = plan_follow_ups(
        deal, book, ctx, [book.step("revoke-access")], since=datetime(2026, 12, 14, 10, 0, tzinfo=UTC)
    )
    assert late.due_at == now and late.was_due == datetime(2026, 12, 15, 8, 0, tzinfo=UTC)
    # An answer (no `since`): counted from today, as before.
    (today,) = plan_follow_ups(deal, book, ctx, [book.step("thank-you")])
    assert today.due_at == datetime(2026, 12, 24, 8, 0, tzinfo=UTC)
