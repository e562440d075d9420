"""The live checklist against the fake HubSpot, worker in process: a task completed in the portal
(with its webhook, or picked up by the tracking pass) releases the step waiting on it, dated
from the completion; an overdue task is escalated once, across restarts; the deal's progress
properties follow the checklist; a revocation without evidence waits for it; the record is on
the deal as a note carrying a file."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from connector.store import ChecklistTask, Run
from connector.web import create_app
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    FINANCE,
    OWNER,
    PORTAL_ID,
    FakeHubSpot,
    add_deal,
    hubspot_services,
    offboard_properties,
    serve,
    settings_overrides,
    signed,
    stage_event,
    standard_portal,
    task_event,
)
from tests.support.playbooks import LIVE_CHECKLIST

PLAYBOOK = LIVE_CHECKLIST
MANAGER, IT = "104", "105"  # HubSpot owners; the fake gives an owner the same user id
ZONE = "America/New_York"  # the portal's zone (the fake's account-info says US/Eastern): 09:00 is 14:00 UTC
PUBLIC = "https://offboard.example.com"
READ = "POST /crm/v3/objects/tasks/batch/read"
DEAL_UPDATES = ("PATCH /crm/v3/objects/deals/{id}", "POST /crm/v3/objects/deals/batch/update")
TRANSFER, INVOICE, REVOKE, THANKS = (
    "Transfer Acme Corp's data",
    "Send the final invoice",
    "Revoke access",
    "Thank Pat",
)


def at(day: int, hour: int = 15, minute: int = 0) -> datetime:
    """A moment of November 2026, in UTC (15:00 UTC is 10:00 in New York)."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC)


@pytest.fixture
def fake(clock):
    fake = offboard_properties(standard_portal(FakeHubSpot(clock=clock)))
    fake.add_owner(MANAGER, "max@agency.example", "Max", "Manager")
    fake.add_owner(IT, "ivy@agency.example", "Ivy", "Tech")
    return fake


@pytest.fixture
def interval() -> int:
    """OFFBOARD_TRACK_INTERVAL_SECONDS: 1, so a tick after the clock moved runs the tracking pass."""
    return 1


@pytest.fixture
def settings(db_url, fake, httpserver, tmp_path: Path, interval: int):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "live.yaml").write_text(PLAYBOOK)
    overrides = settings_overrides(
        serve(fake, httpserver),
        OFFBOARD_ROLES={"finance": FINANCE, "manager": MANAGER, "it": IT},
        OFFBOARD_SWEEP_INTERVAL_SECONDS=0,
        OFFBOARD_TRACK_INTERVAL_SECONDS=interval,
    )
    return make_settings(
        db_url,
        OFFBOARD_PUBLIC_URL=PUBLIC,
        OFFBOARD_PLAYBOOKS=str(folder),
        OFFBOARD_WORKER_CONCURRENCY=1,
        OFFBOARD_TIMEZONE=ZONE,
        **overrides,
    )


@pytest.fixture
def services(settings, store, clock):
    return hubspot_services(settings, store, clock)


@pytest.fixture
def deal(services, fake, clock):
    """A deal won on Friday 2026-11-20, closed by a signed webhook; its first tasks are written."""
    ids = add_deal(fake)
    deliver(services, [stage_event(ids["deal"], "closedwon", event_id=1, at=clock.now)])
    services.worker().run_until_idle()
    return ids["deal"]


def deliver(services, events) -> None:
    body, headers = signed(events, url=PUBLIC + "/webhooks/hubspot", at=services.clock())
    reply = create_app(services).test_client().post("/webhooks/hubspot", data=body, headers=headers)
    assert reply.status_code == 204, reply.get_data(as_text=True)


def tick(services, fake, clock, when: datetime) -> int:
    """Time moves to ``when``; the worker works until idle (its tick runs the tracking pass
    when due). How many deal update calls reached HubSpot meanwhile."""
    before = sum(fake.calls[route] for route in DEAL_UPDATES)
    clock.now = when
    services.worker().run_until_idle()
    return sum(fake.calls[route] for route in DEAL_UPDATES) - before


def tasks(fake, deal_id: str) -> dict[str, object]:
    found = [t for t in fake.records("tasks") if deal_id in fake.linked(t, "deals")]
    by_subject = Counter(t.properties["hs_task_subject"] for t in found)
    assert all(n == 1 for n in by_subject.values()), by_subject  # no task twice
    return {t.properties["hs_task_subject"]: t for t in found}


def due(task) -> datetime:
    return datetime.fromtimestamp(int(task.properties["hs_timestamp"]) / 1000, tz=UTC)


def progress(fake, deal_id: str) -> tuple[str, str]:
    properties = fake.objects["deals"][deal_id].properties
    return properties["offboard_status"], properties["offboard_progress"]


def items(store) -> dict[str, str]:
    with store.read() as session:
        return {i.step_id: i.status for i in session.scalars(select(ChecklistTask))}


def notes(fake, deal_id: str) -> list:
    return [n for n in fake.records("notes") if deal_id in fake.linked(n, "deals")]


# --- (a) a completion webhook releases the dependent step -------------------------------------


@pytest.mark.parametrize("interval", [0])  # no tracking pass: only the webhook can tell
def test_a_completion_webhook_releases_the_dependent_task_dated_from_the_completion(
    services, fake, clock, store, deal
):
    assert set(tasks(fake, deal)) == {TRANSFER, INVOICE}
    transfer = tasks(fake, deal)[TRANSFER]
    assert due(transfer) == at(23, 14)  # Monday 09:00 in New York

    # Tuesday 10:30 New York: the CSM ticks the transfer off in HubSpot, with its evidence.
    clock.now = completed = at(24, 15, 30)
    fake.complete_task(transfer.id, by=OWNER, evidence="export sent, ticket 42")
    # The webhook comes an hour later (HubSpot retried it): the due date counts from the completion.
    clock.now = at(24, 16, 30)
    fake.calls.clear()
    deliver(services, [task_event(transfer.id, "COMPLETED", event_id=2, at=completed)])
    services.worker().run_until_idle()

    revoke = tasks(fake, deal)[REVOKE]
    assert due(revoke) == at(25, 14)  # one business day after the completion, 09:00 New York
    assert revoke.properties["hubspot_owner_id"] == IT
    assert fake.linked(revoke, "deals") == {deal: 216}
    assert fake.calls[READ] == 1  # the event's task was read once; no tracking pass ran
    assert items(store) == {"transfer-data": "completed", "final-invoice": "open", "revoke-access": "open"}
    with store.read() as session:
        item = session.scalars(select(ChecklistTask).filter_by(step_id="transfer-data")).one()
        assert (item.completed_at, item.completed_by) == (completed, OWNER)
        assert item.evidence == "export sent, ticket 42"

    # HubSpot delivers the same event again: nothing more is written.
    deliver(services, [task_event(transfer.id, "COMPLETED", event_id=2, at=completed)])
    services.worker().run_until_idle()
    assert set(tasks(fake, deal)) == {TRANSFER, INVOICE, REVOKE}


# --- (b) no webhook: the tracking pass picks it up ----------------------------------------------


def test_without_the_webhook_the_workers_tracking_pass_releases_it(services, fake, clock, store, deal):
    transfer = tasks(fake, deal)[TRANSFER]
    clock.now = completed = at(24, 15, 30)
    fake.complete_task(transfer.id, by=OWNER, evidence="export sent")
    assert REVOKE not in tasks(fake, deal)

    # No webhook at all. The worker's next tick, the next morning, runs the tracking pass.
    fake.calls.clear()
    tick(services, fake, clock, at(25, 13))
    assert fake.calls[READ] == 1  # the open checklist's two tasks, in one batch read
    revoke = tasks(fake, deal)[REVOKE]
    assert due(revoke) == at(25, 14)  # counted from Tuesday's completion, not from this pass
    with store.read() as session:
        item = session.scalars(select(ChecklistTask).filter_by(step_id="transfer-data")).one()
        assert item.completed_at == completed

    # A later pass reads only what changed since (less its margin): nothing is written twice.
    tick(services, fake, clock, at(25, 13, 30))
    assert set(tasks(fake, deal)) == {TRANSFER, INVOICE, REVOKE}


# --- (c) escalation, once, across restarts ------------------------------------------------------


def test_an_overdue_task_is_escalated_once_also_across_restarts(services, settings, store, fake, clock, deal):
    invoice = tasks(fake, deal)[INVOICE]
    assert due(invoice) == at(23, 14)  # Monday 09:00 New York; escalated two business days later

    tick(services, fake, clock, at(25, 13))  # Wednesday 08:00 New York: not yet
    assert not [s for s in tasks(fake, deal) if s.startswith("Overdue")]

    restarted = hubspot_services(settings, store, clock)  # a new process
    tick(restarted, fake, clock, at(25, 14, 30))
    escalation = tasks(fake, deal)["Overdue: Send the final invoice"]
    assert escalation.properties["hubspot_owner_id"] == MANAGER
    link = f"https://app.hubspot.com/contacts/{PORTAL_ID}/record/0-27/{invoice.id}"
    assert link in escalation.properties["hs_task_body"]
    assert fake.linked(escalation, "deals") == {deal: 216}
    (note,) = [n for n in notes(fake, deal) if "Escalated:" in n.properties["hs_note_body"]]

    for day, hour in [(25, 16), (26, 15), (30, 15)]:  # later ticks, each by a process started anew
        again = hubspot_services(settings, store, clock)
        tick(again, fake, clock, at(day, hour))
    overdue = [s for s in tasks(fake, deal) if s.startswith("Overdue")]
    assert overdue == ["Overdue: Send the final invoice"]
    assert [n.id for n in notes(fake, deal) if "Escalated:" in n.properties["hs_note_body"]] == [note.id]
    assert progress(fake, deal)[0] == "overdue"


# --- (d) the deal's progress properties, from not_started to complete ---------------------------


def walk_to_complete(services, fake, clock, deal) -> tuple[list[tuple[str, str]], list[int]]:
    """The checklist worked to the end, a tracking pass after each change: the deal's
    (offboard_status, offboard_progress) as they changed, and the deal update calls per pass."""
    seen, updates = [progress(fake, deal)], []

    def step(when: datetime) -> None:
        updates.append(tick(services, fake, clock, when))
        if progress(fake, deal) != seen[-1]:
            seen.append(progress(fake, deal))

    # Monday 08:00 New York: the transfer is done before anything is due.
    clock.now = at(23, 13)
    fake.complete_task(tasks(fake, deal)[TRANSFER].id, by=OWNER, evidence="export sent")
    step(at(23, 13, 30))
    step(at(24, 15))  # Tuesday: the invoice, due Monday, is still open
    # Revocation and invoice done together: one pass takes both.
    clock.now = at(24, 16)
    fake.complete_task(tasks(fake, deal)[REVOKE].id, by=IT, evidence="SSO account removed")
    fake.complete_task(tasks(fake, deal)[INVOICE].id, by=FINANCE)
    step(at(24, 16, 30))
    assert due(tasks(fake, deal)[THANKS]) == at(25, 14)
    clock.now = at(25, 15)
    fake.complete_task(tasks(fake, deal)[THANKS].id, by=OWNER)
    step(at(25, 15, 30))
    step(at(25, 17))  # nothing changed: nothing is written
    return seen, updates


def test_the_deals_progress_follows_the_checklist_from_not_started_to_complete(
    services, fake, clock, store, deal
):
    properties = fake.objects["deals"][deal].properties
    assert progress(fake, deal) == ("not_started", "0/4")
    assert (properties["offboard_next_due"], properties["offboard_playbook"]) == (
        "2026-11-23",
        "live-checklist@1",
    )

    seen, updates = walk_to_complete(services, fake, clock, deal)

    assert seen == [
        ("not_started", "0/4"),
        ("in_progress", "1/4"),
        ("overdue", "1/4"),
        ("in_progress", "3/4"),
        ("complete", "4/4"),
    ]
    history = [value for value, _ in fake.objects["deals"][deal].history["offboard_status"]]
    assert history == ["not_started", "in_progress", "overdue", "in_progress", "complete"]
    assert properties["offboard_next_due"] == ""
    assert updates[0] == updates[1] == 1 and updates[-1] == 0
    with store.read() as session:
        run = session.scalars(select(Run)).one()
        assert (run.status, run.finished_at) == ("complete", at(25, 15, 30))


def test_at_most_one_deal_update_per_pass_even_when_a_completion_releases_a_step(
    services, fake, clock, store, deal
):
    _, updates = walk_to_complete(services, fake, clock, deal)
    assert max(updates) <= 1, f"deal update calls per pass: {updates}"
    dues = [value for value, _ in fake.objects["deals"][deal].history["offboard_next_due"]]
    assert dues == ["2026-11-23", "2026-11-25", ""]  # never blank while a step is still to do


# --- (e) evidence, and the record on the deal ---------------------------------------------------


def test_a_revocation_without_evidence_waits_for_it_and_the_record_lands_on_the_deal(
    services, fake, clock, store, deal
):
    clock.now = at(23, 13)
    fake.complete_task(tasks(fake, deal)[TRANSFER].id, by=OWNER, evidence="export sent, ticket 42")
    fake.complete_task(tasks(fake, deal)[INVOICE].id, by=FINANCE)
    tick(services, fake, clock, at(23, 13, 30))
    revoke = tasks(fake, deal)[REVOKE]

    # Revoked on Tuesday, without a word of evidence.
    clock.now = at(24, 15)
    fake.complete_task(revoke.id, by=IT)
    tick(services, fake, clock, at(24, 15, 30))
    tick(services, fake, clock, at(24, 16))
    assert items(store)["revoke-access"] == "needs_evidence"
    assert progress(fake, deal) == ("needs_evidence", "2/4")
    asks = [t for s, t in tasks(fake, deal).items() if s.startswith("Add evidence")]
    assert len(asks) == 1, [s for s in tasks(fake, deal)]
    (ask,) = asks
    assert ask.properties["hs_task_subject"] == "Add evidence: Revoke access"
    assert ask.properties["hubspot_owner_id"] == IT  # the person who completed it
    assert "Evidence:" in ask.properties["hs_task_body"]
    assert THANKS not in tasks(fake, deal)  # the thank-you waits for the revocation's evidence

    # The engineer adds the evidence to the task's notes: the next pass completes the step.
    clock.now = at(24, 17)
    fake.edit_task(revoke.id, by=IT, evidence="SSO account removed, ticket 77")
    tick(services, fake, clock, at(24, 17, 30))
    assert items(store)["revoke-access"] == "completed"
    assert progress(fake, deal) == ("in_progress", "3/4")
    clock.now = at(25, 15)
    fake.complete_task(tasks(fake, deal)[THANKS].id, by=OWNER)
    tick(services, fake, clock, at(25, 15, 30))
    assert progress(fake, deal) == ("complete", "4/4")
    assert len([s for s in tasks(fake, deal) if s.startswith("Add evidence")]) == 1

    # The record: a note on the deal carrying a private file that lists every step.
    (record,) = [n for n in notes(fake, deal) if n.properties.get("hs_attachment_ids")]
    assert fake.linked(record, "deals") == {deal: 214}
    (file_id,) = record.properties["hs_attachment_ids"].split(";")
    stored = fake.files[file_id]
    assert stored.access == "PRIVATE" and stored.extension == "md"
    content = stored.content.decode()
    for step_id in ("transfer-data", "final-invoice", "revoke-access", "thank-you"):
        assert f"| {step_id} |" in content
    assert "export sent, ticket 42" in content and "SSO account removed, ticket 77" in content
    assert "revoke-access: completed by " + IT in record.properties["hs_note_body"]
    tick(services, fake, clock, at(26, 15))  # later passes write it no more
    assert len(fake.files) == 1
    assert len([n for n in notes(fake, deal) if n.properties.get("hs_attachment_ids")]) == 1


def test_the_evidence_ask_goes_to_the_owner_of_the_hubspot_user_who_completed_the_task(
    services, fake, clock, store, deal
):
    fake.add_owner("106", "otto@agency.example", "Otto", "Ops", user_id="9106")  # owner 106 is user 9106
    clock.now = at(23, 13)
    fake.complete_task(tasks(fake, deal)[TRANSFER].id, by=OWNER, evidence="export sent")
    tick(services, fake, clock, at(23, 13, 30))
    clock.now = at(24, 15)
    fake.complete_task(tasks(fake, deal)[REVOKE].id, by="9106")  # HubSpot names the user, not the owner
    tick(services, fake, clock, at(24, 15, 30))
    assert items(store)["revoke-access"] == "needs_evidence"
    (ask,) = [t for s, t in tasks(fake, deal).items() if s.startswith("Add evidence")]
    assert ask.properties["hubspot_owner_id"] == "106"
