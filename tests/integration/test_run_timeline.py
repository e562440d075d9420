"""What a client was sent: `offboard runs RUN` and `offboard sandbox invites|notes|answers`."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from connector.cli import main
from connector.store import Run
from tests.support.feedback import SURVEY_DAY, path_of
from tests.support.helpers import deal_closed_event, signed


@pytest.fixture
def cli(services, monkeypatch):
    monkeypatch.setenv("OFFBOARD_DATABASE_URL", services.settings.database_url)
    monkeypatch.setenv("OFFBOARD_PLAYBOOKS", str(services.settings.playbooks))

    def invoke(*args: str):
        result = CliRunner().invoke(main, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


@pytest.fixture
def surveyed(client, services, store, clock):
    """A completed project whose tasks are written and whose exit survey has gone out; its run id."""
    body, headers = signed(deal_closed_event())
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    clock.now = SURVEY_DAY
    services.worker().run_until_idle()
    with store.session() as session:
        return session.scalars(select(Run.id)).one()


def token_of(link: str) -> str:
    return link.rsplit("/", 1)[1]


def test_the_timeline_shows_every_action_with_its_crm_ids(cli, services, surveyed):
    sandbox = services.adapters["sandbox"]
    timeline = json.loads(cli("runs", str(surveyed), "--format", "json"))
    assert timeline["id"] == surveyed and timeline["deal_id"] == "D-1"
    by_step = {a["step_id"]: a for a in timeline["actions"]}
    assert {"tasks", "exit-nps", "exit-nps:deadline"} <= set(by_step)
    in_order = sorted(sandbox.tasks("D-1"), key=lambda t: int(t.id))
    batch_steps = {t["step_id"] for t in by_step["tasks"]["tasks"]}
    written = [str(task.id) for task in in_order if task.step_id in batch_steps]
    assert len(written) == len(batch_steps)
    assert by_step["tasks"]["crm_ids"]["task_ids"] == written
    assert [t["crm_id"] for t in by_step["tasks"]["tasks"]] == written
    # Every task on the deal (the checklist and, the invoice being overdue by now, its escalation)
    # shows under exactly one action, with its CRM id.
    shown = [i for a in timeline["actions"] for i in a["crm_ids"].get("task_ids", [])]
    assert sorted(shown, key=int) == [str(task.id) for task in in_order]
    assert by_step["tasks"]["done_at"] is not None and by_step["tasks"]["state"] == "done"
    (invite,) = sandbox.invites("D-1")
    survey = by_step["exit-nps"]
    assert (survey["state"], survey["crm_ids"]) == ("done", {"invite_id": str(invite.id)})
    assert survey["done_at"].startswith("2027-01-01")
    deadline = by_step["exit-nps:deadline"]
    assert (deadline["state"], deadline["done_at"]) == ("pending", None)
    dues = [a["due_at"] for a in timeline["actions"]]
    assert dues == sorted(dues)

    text = cli("runs", str(surveyed))
    first_task = sandbox.tasks("D-1")[0]
    assert f"task {first_task.id}: {first_task.subject}" in text
    assert re.search(r"done\s+exit-nps \(survey\)", text)
    assert f"CRM: invite_id {invite.id}" in text


def test_links_are_masked_unless_revealed(cli, client, services, surveyed):
    (invite,) = services.adapters["sandbox"].invites("D-1")
    secret_part = token_of(invite.link)
    masked = cli("runs", str(surveyed))
    assert f"link: {services.settings.public_url}/s/<hidden: --reveal-links shows it>" in masked
    assert secret_part not in masked and "/s/ey" not in masked
    as_json = json.loads(cli("runs", str(surveyed), "--format", "json"))
    (survey,) = [a for a in as_json["actions"] if a["step_id"] == "exit-nps"]
    assert survey["link"].endswith("<hidden: --reveal-links shows it>")

    revealed = cli("runs", str(surveyed), "--reveal-links")
    (link,) = re.findall(r"link: (\S+)", revealed)
    assert link.startswith(f"{services.settings.public_url}/s/")
    page = client.get(path_of(link))  # the revealed link is the client's: it opens their survey
    assert page.status_code == 200
    assert "How likely are you to recommend us" in page.get_data(as_text=True)
    assert "credentials" in cli("runs", "--help")


def test_the_timeline_shows_the_last_error(cli, client, services, store):
    services.adapters["sandbox"].inject("create_tasks", "permanent", 1, message="sandbox: owner 42 inactive")
    body, headers = signed(deal_closed_event("D-2"))
    client.post("/webhooks/generic", data=body, headers=headers)
    services.worker().run_until_idle()
    with store.session() as session:
        run_id = session.scalars(select(Run.id)).one()
    text = cli("runs", str(run_id))
    assert re.search(r"failed\s+tasks \(task\)", text)
    assert "last error (1 attempt(s)): CrmPermanent: sandbox: owner 42 inactive" in text
    assert "task (not written):" in text


def test_sandbox_shows_invites_notes_and_answers(cli, client, services, surveyed):
    (invite,) = services.adapters["sandbox"].invites("D-1")
    assert cli("sandbox", "answers").strip() == "the sandbox CRM holds no survey answers"
    invites = cli("sandbox", "invites")
    assert f"invite {invite.id}  deal D-1  contact contact-1  nps" in invites
    assert token_of(invite.link) not in invites and "<hidden: --reveal-links shows it>" in invites
    assert invite.link in cli("sandbox", "invites", "--deal", "D-1", "--reveal-links")
    assert cli("sandbox", "invites", "--deal", "D-404").strip() == "the sandbox CRM sent no invitations"

    page = client.get(path_of(invite.link))
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.get_data(as_text=True)).group(1)
    form = {"csrf": csrf, "score": "9", "comment": "Great team"}
    assert client.post(path_of(invite.link), data=form).status_code == 200
    services.worker().run_until_idle()
    assert cli("sandbox", "answers").startswith("contact contact-1  NPS 9 (promoter)  ")
    notes = cli("sandbox", "notes", "--deal", "D-1")
    assert "    NPS answer: 9 (promoter)" in notes and "    Great team" in notes
    assert "contact contact-1" in notes
