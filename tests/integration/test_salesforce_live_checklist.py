"""The live checklist against the Salesforce fake org: a Task completed in Salesforce releases the
step waiting on it (by a Flow ``task.completed`` callout, or by the worker's tracking pass when no
callout came), an overdue Task is escalated once across restarts, the Opportunity's progress
fields follow the checklist, and a revocation without evidence waits for it before the record
is filed on the Opportunity.

Each test runs on SQLite and Postgres; Salesforce is the strict fake org behind ``responses``,
and the worker runs in-process on the test's clock.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import responses
from sqlalchemy import func, select

from connector.services import build
from connector.store import ChecklistTask, Event, Run
from tests.support.helpers import make_settings
from tests.support.playbooks import LIVE_CHECKLIST
from tests.support.salesforce import (
    OUTBOUND_PATH,
    FakeSalesforce,
    Seeded,
    opportunity_fields,
    outbound_message,
    session_settings,
)

FLOW_SECRET = "flow-shared-secret-for-tests"
PLAYBOOK = LIVE_CHECKLIST.replace(
    "id: live-checklist\nname: Live checklist", "id: sf-live\nname: On Salesforce"
)
TRANSFER, INVOICE, REVOKE, THANKS = (
    "Transfer Acme Corp's data",
    "Send the final invoice",
    "Revoke access",
    "Thank Pat",
)


def at(day: int, hour: int = 10) -> datetime:
    """A moment in November 2026 (the deal closed on Friday the 20th)."""
    return datetime(2026, 11, day, hour, tzinfo=UTC)


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def people(org) -> dict[str, str]:
    return {
        "finance": org.add_user("Fran Finance"),
        "manager": org.add_user("Max Manager"),
        "it": org.add_user("Ira IT"),
    }


@pytest.fixture
def track_seconds() -> int:
    return 60  # the worker's tick runs the tracking pass once a minute of the test's clock


@pytest.fixture
def settings(db_url, org, people, tmp_path: Path, track_seconds: int):
    folder = tmp_path / "playbooks"
    folder.mkdir()
    (folder / "live.yaml").write_text(PLAYBOOK)
    return make_settings(
        db_url,
        **session_settings(org),
        SALESFORCE_WEBHOOK_SECRET=FLOW_SECRET,
        OFFBOARD_PLAYBOOKS=str(folder),
        OFFBOARD_ROLES=people,
        OFFBOARD_WORKER_CONCURRENCY=1,
        OFFBOARD_TRACK_INTERVAL_SECONDS=track_seconds,
    )


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


@pytest.fixture
def seed(client, services, org, http) -> Seeded:
    """The Opportunity closes (an outbound message); the worker writes the first two Tasks."""
    won = org.add_opportunity()
    body = outbound_message([("04l5g0000000001AAA", opportunity_fields(org, won.opportunity))])
    reply = client.post(OUTBOUND_PATH, data=body, headers={"Content-Type": "text/xml; charset=utf-8"})
    assert reply.status_code == 200
    services.worker().run_until_idle()
    return won


# --- helpers --------------------------------------------------------------------------------------


def tick(services, clock, when: datetime) -> None:
    """Time moves to ``when``; a worker (a fresh one, as after a restart) works until idle."""
    clock.now = when
    services.worker().run_until_idle()


def tasks(org: FakeSalesforce, seed: Seeded, prefix: str = "") -> list[dict[str, Any]]:
    return [t for t in org.records("Task", WhatId=seed.opportunity) if t["Subject"].startswith(prefix)]


def task(org: FakeSalesforce, seed: Seeded, subject: str) -> dict[str, Any]:
    (found,) = [t for t in tasks(org, seed) if t["Subject"] == subject]
    return found


def complete(org: FakeSalesforce, task_id: str, *, by: str, when: datetime, evidence: str = "") -> None:
    """A user closes the Task in Salesforce, writing an ``Evidence:`` line above its description."""
    values: dict[str, Any] = {"Status": "Completed"}
    if evidence:
        values["Description"] = f"Evidence: {evidence}\n" + (org.db["Task"][task_id]["Description"] or "")
    org.edit_task(task_id, by=by, at=when, **values)


def progress(org: FakeSalesforce, seed: Seeded) -> tuple[Any, Any, Any]:
    fields = org.db["Opportunity"][seed.opportunity]
    return fields["Offboard_Status__c"], fields["Offboard_Progress__c"], fields["Offboard_Next_Due__c"]


def items(store) -> dict[str, str]:
    with store.read() as session:
        return {i.step_id: i.status for i in session.scalars(select(ChecklistTask))}


def due_of(store, step_id: str) -> datetime:
    with store.read() as session:
        due = session.scalars(select(ChecklistTask.due_at).filter_by(step_id=step_id)).one()
    return due if due.tzinfo else due.replace(tzinfo=UTC)


def notes_on(org: FakeSalesforce, record_id: str) -> list[tuple[str, str]]:
    """(title, text) of each ContentNote linked to the record."""
    linked = [
        link["ContentDocumentId"] for link in org.records("ContentDocumentLink", LinkedEntityId=record_id)
    ]
    notes = [org.db["ContentNote"][d] for d in linked if d in org.db["ContentNote"]]
    return [(n["Title"], unescape(base64.b64decode(n["Content"]).decode())) for n in notes]


def task_queries(org: FakeSalesforce) -> list[str]:
    return [q for q in org.queries if "FROM Task" in q]


def flow_task_completed(client, task_id: str, when: datetime, event: str = "task.completed"):
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    body = {"recordId": task_id, "event": event, "fields": {"LastModifiedDate": stamp}}
    return client.post("/webhooks/salesforce/flow", json=body, headers={"X-Offboard-Secret": FLOW_SECRET})


def assert_revocation_released(org, seed, store, people) -> None:
    """The transfer was completed on Tuesday 10:00: revocation is due a business day later."""
    revoke = task(org, seed, REVOKE)
    assert (revoke["ActivityDate"], revoke["OwnerId"]) == ("2026-11-25", people["it"])
    assert revoke["WhoId"] == seed.contacts[0]
    assert due_of(store, "revoke-access") == at(25, 9)
    assert items(store)["transfer-data"] == "completed"
    assert progress(org, seed)[:2] == ("overdue", "1/4")  # the invoice was due on Monday


# --- must show 1: a completion releases the step waiting on it, dated from the completion ----------


@pytest.mark.parametrize("track_seconds", [0])  # no tracking pass: the callout alone does it
def test_a_flow_task_completed_callout_releases_the_dependent_task_dated_from_the_completion(
    client, services, store, clock, org, people, seed
):
    transfer = task(org, seed, TRANSFER)["Id"]
    complete(org, transfer, by=seed.owner, when=at(24, 10), evidence="ticket 42")
    clock.now = at(24, 10) + timedelta(minutes=1)
    assert not tasks(org, seed, REVOKE)

    reply = flow_task_completed(client, transfer, at(24, 10))
    assert (reply.status_code, reply.get_json()["status"]) == (202, "accepted")
    services.worker().run_until_idle()

    assert_revocation_released(org, seed, store, people)
    with store.read() as session:
        event = session.scalars(select(Event).where(Event.kind == "task.completed")).one()
        assert (event.state, event.outcome) == ("done", f"task {transfer} is completed")
    # The redelivered callout changes nothing.
    assert flow_task_completed(client, transfer, at(24, 10)).status_code == 200
    services.worker().run_until_idle()
    assert len(tasks(org, seed, REVOKE)) == 1


def test_without_a_callout_the_workers_tracking_pass_reads_the_tasks_back_and_releases_it(
    services, store, clock, org, people, seed
):
    transfer = task(org, seed, TRANSFER)["Id"]
    complete(org, transfer, by=seed.owner, when=at(24, 10), evidence="ticket 42")
    before = len(task_queries(org))

    tick(services, clock, at(24, 11))  # the interval has passed: the tick runs the tracking pass

    assert_revocation_released(org, seed, store, people)
    read_back = task_queries(org)[before:]
    assert read_back and all("Id IN (" in q for q in read_back)  # SOQL on the run's Tasks
    with store.read() as session:
        assert session.scalar(select(func.count()).select_from(Event).where(Event.kind != "opportunity")) == 0


@pytest.mark.parametrize("track_seconds", [0])
def test_a_task_reopened_in_salesforce_counts_as_open_again(client, services, store, clock, org, seed):
    invoice = task(org, seed, INVOICE)["Id"]
    org.complete_task(invoice, at=at(23, 12))
    clock.now = at(23, 13)
    assert flow_task_completed(client, invoice, at(23, 12)).status_code == 202
    services.worker().run_until_idle()
    assert items(store)["final-invoice"] == "completed"
    assert progress(org, seed)[:2] == ("overdue", "1/4")  # the transfer was due Monday 09:00

    org.reopen_task(invoice, at=at(23, 14))
    clock.now = at(23, 15)
    assert flow_task_completed(client, invoice, at(23, 14), "task.reopened").status_code == 202
    services.worker().run_until_idle()
    assert items(store)["final-invoice"] == "open"
    assert progress(org, seed)[:2] == ("overdue", "0/4")


# --- must show 2: an overdue Task is escalated once, also across restarts ------------------------------


def test_an_overdue_task_is_escalated_once_also_after_a_restart(
    settings, services, store, clock, org, people, seed
):
    invoice = task(org, seed, INVOICE)
    assert (invoice["ActivityDate"], invoice["OwnerId"]) == ("2026-11-23", people["finance"])
    tick(services, clock, at(25, 8))  # due Monday 09:00; two business days later it is still open
    assert not tasks(org, seed, "Overdue")

    tick(services, clock, at(25, 10))
    (escalation,) = tasks(org, seed, "Overdue")
    assert escalation["Subject"] == f"Overdue: {INVOICE}" and escalation["OwnerId"] == people["manager"]
    assert f"/lightning/r/Task/{invoice['Id']}/view" in escalation["Description"]
    assert "still open" in escalation["Description"]

    for hour in (11, 12, 15):  # the process restarts: everything is built again from the settings
        restarted = build(settings, store=store, clock=clock)
        tick(restarted, clock, at(25, hour))
    assert len(tasks(org, seed, "Overdue")) == 1
    escalated = [text for _, text in notes_on(org, seed.opportunity) if "Escalated:" in text]
    assert len(escalated) == 1 and INVOICE in escalated[0]
    assert task(org, seed, INVOICE)["Status"] != "Completed"  # it was chased, not touched


# --- must show 3 and 4: progress from not_started to complete; evidence; the record --------------------


def test_the_checklist_lives_on_the_opportunity_from_not_started_to_the_record(
    services, store, clock, org, people, seed
):
    assert sorted(t["Subject"] for t in tasks(org, seed)) == [INVOICE, TRANSFER]
    assert progress(org, seed) == ("not_started", "0/4", "2026-11-23")
    assert org.db["Opportunity"][seed.opportunity]["Offboard_Playbook__c"] == "sf-live@1"

    complete(org, task(org, seed, TRANSFER)["Id"], by=seed.owner, when=at(24, 10), evidence="ticket 42")
    tick(services, clock, at(24, 11))
    revoke = task(org, seed, REVOKE)["Id"]
    assert progress(org, seed)[:2] == ("overdue", "1/4")

    # Revoked without evidence: the run waits for it and whoever revoked is asked, once.
    complete(org, revoke, by=people["it"], when=at(25, 12))
    tick(services, clock, at(25, 13))
    tick(services, clock, at(25, 14))
    assert items(store)["revoke-access"] == "needs_evidence"
    (ask,) = tasks(org, seed, "Add evidence")
    assert ask["Subject"] == f"Add evidence: {REVOKE}" and ask["OwnerId"] == people["it"]
    assert "Evidence:" in ask["Description"]
    assert progress(org, seed)[:2] == ("needs_evidence", "1/4")

    # A file attached to the Task is its evidence: the next pass completes the step.
    org.attach_file(revoke, "access-removed.pdf", b"%PDF-1.7 access removed", at=at(25, 15))
    tick(services, clock, at(25, 16))
    assert items(store)["revoke-access"] == "completed"
    assert len(tasks(org, seed, "Add evidence")) == 1

    # The invoice, done late, releases the thank-you dated from it; the thank-you finishes the run.
    complete(org, task(org, seed, INVOICE)["Id"], by=people["finance"], when=at(26, 10))
    tick(services, clock, at(26, 11))
    thanks = task(org, seed, THANKS)
    assert thanks["ActivityDate"] == "2026-11-27" and thanks["OwnerId"] == seed.owner
    assert progress(org, seed) == ("in_progress", "3/4", "2026-11-27")
    complete(org, thanks["Id"], by=seed.owner, when=at(27, 10))
    tick(services, clock, at(27, 11))
    assert progress(org, seed)[:2] == ("complete", "4/4")
    assert progress(org, seed)[2] in (None, "")

    # The record: a file on the Opportunity listing every step, and the note that names it.
    (version,) = org.records("ContentVersion", FirstPublishLocationId=seed.opportunity)
    assert version["PathOnClient"] == f"offboarding-record-salesforce-{seed.opportunity}.md"
    content = base64.b64decode(version["VersionData"]).decode()
    for step in ("transfer-data", "final-invoice", "revoke-access", "thank-you"):
        assert f"| {step} |" in content
    assert "ticket 42" in content and "access-removed" in content
    assert people["it"] in content and people["finance"] in content
    links = org.records("ContentDocumentLink", LinkedEntityId=seed.opportunity)
    assert version["ContentDocumentId"] in [link["ContentDocumentId"] for link in links]
    (note,) = [
        text for title, text in notes_on(org, seed.opportunity) if title.startswith("Offboarding record")
    ]
    assert f"offboarding-record-salesforce-{seed.opportunity}.md" in note
    assert version["ContentDocumentId"] in note
    assert f"revoke-access: completed by {people['it']}" in note
    with store.read() as session:
        run = session.scalars(select(Run)).one()
        assert (run.status, run.state) == ("complete", "done") and run.finished_at is not None

    tick(services, clock, at(30, 11))  # a finished run is left alone: nothing is filed twice
    assert len(org.records("ContentVersion", FirstPublishLocationId=seed.opportunity)) == 1
