"""The Salesforce checklist read back through the app: task events stored once by the Flow and
outbound endpoints and interpreted as task changes, and the Tasks Offboard wrote read back.

Each test runs on SQLite and Postgres; Salesforce is the strict fake org behind ``responses``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import responses
from sqlalchemy import select

from connector.models import TaskChange, TaskSpec
from connector.store import Event
from tests.support.helpers import make_settings
from tests.support.salesforce import (
    ORG_ID,
    OUTBOUND_PATH,
    FakeSalesforce,
    outbound_message,
    session_settings,
)

FLOW_SECRET = "flow-shared-secret-for-tests"
KEY = "7b1e" * 16


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def settings(db_url, org):
    return make_settings(db_url, **session_settings(org), SALESFORCE_WEBHOOK_SECRET=FLOW_SECRET)


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


def flow_post(client, body: object):
    return client.post("/webhooks/salesforce/flow", json=body, headers={"X-Offboard-Secret": FLOW_SECRET})


def stored(store) -> list[Event]:
    with store.session() as session:
        return list(session.scalars(select(Event).order_by(Event.id)).all())


def checklist_task(org: FakeSalesforce) -> str:
    seed = org.add_opportunity()
    return org.add_task(seed.opportunity, "Revoke Acme's access", OwnerId=seed.owner)


def test_a_flow_task_completed_event_is_stored_once_and_interpreted_as_a_task_change(
    client, services, store, org, http
):
    task_id = checklist_task(org)
    org.complete_task(task_id)
    when = "2026-12-02T10:15:00.000Z"
    body = {"recordId": task_id, "event": "task.completed", "fields": {"LastModifiedDate": when}}

    first, again = flow_post(client, body), flow_post(client, body)
    reopened = flow_post(client, body | {"event": "task.reopened"})

    assert [(r.status_code, r.get_json()["status"]) for r in (first, again, reopened)] == [
        (202, "accepted"),
        (200, "duplicate"),
        (202, "accepted"),
    ]
    completed_event, reopened_event = stored(store)
    assert (completed_event.source, completed_event.account, completed_event.kind) == (
        "salesforce",
        ORG_ID[:15],
        "task.completed",
    )
    assert completed_event.payload["Id"] == task_id
    assert org.calls == []  # the web answered without calling Salesforce

    adapter = services.adapters["salesforce"]
    assert adapter.interpret(completed_event.kind, completed_event.payload) == TaskChange(
        task_id=task_id, completed=True, occurred_at=datetime(2026, 12, 2, 10, 15, tzinfo=UTC)
    )
    changes = adapter.interpret_many([(e.kind, e.payload) for e in (completed_event, reopened_event)])
    assert [(c.task_id, c.completed) for c in changes] == [(task_id, True), (task_id, False)]


def test_an_outbound_message_on_task_is_stored_and_means_read_the_task(client, services, store, org, http):
    task_id = checklist_task(org)
    body = outbound_message(
        [("04l5g0000000077AAA", {"Id": task_id, "Status": "Completed"})], sobject_type="Task"
    )

    reply = client.post(OUTBOUND_PATH, data=body, headers={"Content-Type": "text/xml; charset=utf-8"})

    assert reply.status_code == 200
    (event,) = stored(store)
    assert event.kind == "task"
    change = services.adapters["salesforce"].interpret(event.kind, event.payload)
    assert change == TaskChange(task_id=task_id, completed=None)


def test_the_tasks_offboard_wrote_are_read_back_as_the_csm_left_them(services, org, http):
    seed = org.add_opportunity()
    csm = org.add_user("Casey CSM")
    adapter = services.adapters["salesforce"]
    specs = [
        TaskSpec(
            step_id=f"step-{n}",
            title=f"Step {n}",
            body="Revoke every account.",
            due_at=datetime(2026, 12, 1, 8, tzinfo=UTC),
            owner_id=seed.owner,
            priority="normal",
            type="todo",
            deal_id=seed.opportunity,
            company_id=seed.account,
            contact_id=seed.contacts[0],
        )
        for n in range(3)
    ]
    written = adapter.create_tasks(specs, KEY)
    org.edit_task(written[0], by=csm, Status="Completed", Description="Revoked.\nEvidence: IT-42")
    org.attach_file(written[1], "sso-export.csv")
    org.delete("Task", written[2])

    states = adapter.read_tasks(written)

    assert [(s.id, s.completed, s.completed_by) for s in states] == [
        (written[0], True, csm),
        (written[1], False, None),
    ]
    assert "Evidence: IT-42" in states[0].body and states[1].attachments == ("sso-export",)
    assert "Offboard ref" not in states[1].body
    assert adapter.task_url(written[0]).endswith(f"/lightning/r/Task/{written[0]}/view")
