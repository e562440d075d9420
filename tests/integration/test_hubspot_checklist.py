"""The HubSpot side of the live checklist, through the real SDK against the strict fake HubSpot:
task status events in, tasks read back in batches, the offboarding record on the deal, and the
progress properties setup creates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hubspot import HubSpot
from hubspot.files import ApiException
from sqlalchemy import select

from adapters.hubspot.api import HubSpotApi
from adapters.hubspot.errors import OutcomeUnknown
from adapters.hubspot.record_file import FOLDER
from adapters.hubspot.records import token
from adapters.hubspot.setup import CHECKLIST_STATES, PROGRESS, ensure_properties
from connector.errors import CrmPermanent, CrmTransient
from connector.models import DealChange, RecordSpec, TaskChange
from connector.settings import load_settings
from connector.store import Event
from connector.web import create_app
from tests.support import adapter_fixtures
from tests.support.faults import Fault
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    OWNER,
    OWNER_USER,
    PORTAL_ID,
    TOKEN,
    FakeHubSpot,
    add_deal,
    fake_time_limits,
    hubspot_services,
    serve,
    settings_overrides,
    signed,
    stage_event,
    standard_portal,
    task_event,
)

fake = adapter_fixtures.fake
url = adapter_fixtures.url
adapter = adapter_fixtures.adapter

PUBLIC = "https://offboard.example.com"
READ = "POST /crm/v3/objects/tasks/batch/read"
UPLOAD = "POST /files/v3/files"
NOTES = "POST /crm/v3/objects/notes/batch/create"
KEY = "5e" * 32
BODY = "Revoke access &amp; badges<br>Then tell IT"


@pytest.fixture
def ids(fake):
    return add_deal(fake)


def at(event: dict) -> datetime:
    return datetime.fromtimestamp(event["occurredAt"] / 1000, tz=UTC)


def add_tasks(fake, deal_id: str, count: int) -> list[str]:
    """Checklist tasks as Offboard writes them: HTML bodies ending in their marker line."""
    return [
        fake.add_record(
            "tasks",
            {
                "hs_timestamp": "2026-12-01T09:00:00.000Z",
                "hs_task_subject": f"Step {n}",
                "hs_task_body": f"{BODY}<br><br>Offboard ref: ob{'a' * 20} #{n}",
                "hs_task_status": "NOT_STARTED",
                "hubspot_owner_id": OWNER,
            },
            links=[("deals", deal_id, 216)],
        )
        for n in range(count)
    ]


# --- task events in ---------------------------------------------------------------------------


def test_task_status_deliveries_are_stored_once_and_mean_task_changes(
    db_url, store, clock, fake, url, adapter, ids
):
    (task,) = add_tasks(fake, ids["deal"], 1)
    settings = make_settings(db_url, OFFBOARD_PUBLIC_URL=PUBLIC, **settings_overrides(url))
    client = create_app(hubspot_services(settings, store, clock)).test_client()
    other_object = task_event(task, "x", event_id=3) | {"objectTypeId": "0-1", "propertyName": "email"}
    events = [
        task_event(task, "COMPLETED", event_id=1, at=clock.now),
        task_event(task, "NOT_STARTED", event_id=2, at=clock.now + timedelta(minutes=5)),
        other_object,
        task_event(task, "Call Pat", event_id=4) | {"propertyName": "hs_task_subject"},
        stage_event(ids["deal"], "closedwon", event_id=5, at=clock.now),
    ]
    body, headers = signed(events, url=PUBLIC + "/webhooks/hubspot", at=clock.now)
    for _ in range(2):  # HubSpot delivers again: nothing new is stored
        assert client.post("/webhooks/hubspot", data=body, headers=headers).status_code == 204
    with store.session() as session:
        stored = session.scalars(select(Event).order_by(Event.id)).all()
        kinds = [(e.source, e.account, e.event_key, e.kind, e.payload) for e in stored]
    assert [k[:4] for k in kinds[:2]] == [
        ("hubspot", str(PORTAL_ID), "1", "object.propertyChange"),
        ("hubspot", str(PORTAL_ID), "2", "object.propertyChange"),
    ]
    assert len(kinds) == 5 and kinds[0][4] == events[0]

    fake.calls.clear()
    meant = adapter.interpret_many([(kind, payload) for *_, kind, payload in kinds])
    completed, reopened, ignored, subject, closed = meant
    assert completed == TaskChange(task_id=task, completed=True, occurred_at=at(events[0]))
    assert reopened == TaskChange(task_id=task, completed=False, occurred_at=at(events[1]))
    assert at(events[1]) - at(events[0]) == timedelta(minutes=5)
    assert (ignored, subject) == (None, None)
    assert isinstance(closed, DealChange) and closed.deal.id == ids["deal"]
    assert fake.calls[READ] == 0  # the task events needed no read: only the deal was read


def test_a_task_event_alone_is_interpreted_without_calling_hubspot(adapter, fake, ids):
    (task,) = add_tasks(fake, ids["deal"], 1)
    fake.calls.clear()
    for status, completed in [("COMPLETED", True), ("IN_PROGRESS", False), ("WAITING", False)]:
        change = adapter.interpret("object.propertyChange", task_event(task, status))
        assert (change.task_id, change.completed) == (task, completed)
    event = task_event(task, "DEFERRED", event_id=9)
    (deferred,) = adapter.interpret_many([("object.propertyChange", event)])
    assert deferred == TaskChange(task_id=task, completed=False, occurred_at=at(event))
    assert sum(fake.calls.values()) == 0


# --- tasks read back --------------------------------------------------------------------------


def test_read_tasks_reads_250_tasks_in_3_batch_calls_and_leaves_out_a_deleted_one(adapter, fake, ids, clock):
    tasks = add_tasks(fake, ids["deal"], 250)
    fake.add_owner("7701", "casey@agency.example", "Casey", "Smith", user_id=OWNER_USER)  # the CSM
    clock.advance(minutes=30)
    fake.complete_task(
        tasks[7], evidence="tickets <b>closed</b> &amp; badges back", attach=["revocation.pdf"]
    )
    fake.complete_task(tasks[8])
    del fake.objects["tasks"][tasks[9]]  # deleted in HubSpot since
    fake.calls.clear()

    states = adapter.read_tasks(tasks)

    assert fake.calls[READ] == 3
    assert [s.id for s in states] == [t for t in tasks if t != tasks[9]]
    done = states[7]
    # HubSpot names the user who completed it; tasks are assigned to the owner behind that user.
    assert (done.completed, done.completed_at, done.completed_by) == (True, clock.now, "7701")
    assert done.body == "Revoke access & badges\nThen tell IT\n\nEvidence: tickets closed & badges back"
    (file_id,) = done.attachments
    assert fake.files[file_id].name == "revocation"
    assert (states[8].completed, states[8].attachments, states[8].body.count("Evidence:")) == (True, (), 0)
    first = states[0]
    assert (first.completed, first.completed_at, first.completed_by, first.owner_id) == (
        False,
        None,
        None,
        OWNER,
    )
    assert (
        first.body == "Revoke access & badges\nThen tell IT"
    )  # the marker line is Offboard's, not the CSM's
    assert first.modified_at == clock.now - timedelta(minutes=30)


def test_a_reopened_task_reads_as_open_and_changed_since_keeps_only_what_changed(adapter, fake, ids, clock):
    tasks = add_tasks(fake, ids["deal"], 3)
    fake.complete_task(tasks[0])
    clock.advance(minutes=10)
    since = clock.now
    clock.advance(seconds=1)
    fake.reopen_task(tasks[0])
    fake.calls.clear()
    (reopened,) = adapter.read_tasks(tasks, changed_since=since)
    assert (reopened.id, reopened.completed, reopened.completed_at) == (tasks[0], False, None)
    assert fake.calls[READ] == 1
    assert adapter.read_tasks([]) == [] and fake.calls[READ] == 1


def test_task_url_is_the_task_record_page_of_the_portal(adapter, fake, ids):
    (task,) = add_tasks(fake, ids["deal"], 1)
    assert adapter.task_url(task) == f"https://app.hubspot.com/contacts/{PORTAL_ID}/record/0-27/{task}"


# --- the record on the deal -------------------------------------------------------------------


def record_for(ids) -> RecordSpec:
    return RecordSpec(
        step_id="record",
        deal_id=ids["deal"],
        title="Offboarding record: Acme website",
        body="Offboarding record\n- Revoke access: done by Sam on 2026-12-02",
        filename="offboarding record Acme.md",
        content="# Offboarding record\n\n| step | done |\n|---|---|\n| Revoke access | 2026-12-02 |\n",
    )


def notes_on(fake, deal_id: str) -> list:
    return [n for n in fake.records("notes") if deal_id in fake.linked(n, "deals")]


def test_write_record_uploads_a_private_file_and_notes_it_on_the_deal_once(adapter, fake, ids, clock):
    record = record_for(ids)
    file_id = adapter.write_record(record, KEY)

    stored = fake.files[file_id]
    assert (stored.folder_path, stored.access) == (FOLDER, "PRIVATE")
    assert (stored.name, stored.extension) == (f"offboarding-record-Acme-{token(KEY)}", "md")
    assert stored.content.decode() == record.content
    (note,) = notes_on(fake, ids["deal"])
    assert note.properties["hs_attachment_ids"] == file_id
    assert note.properties["hs_note_body"].startswith("Offboarding record<br>- Revoke access")
    assert fake.linked(note, "deals") == {ids["deal"]: 214}

    adapter.outcome_unknown(KEY, clock.now)  # the worker lost track: the retry looks first
    assert adapter.write_record(record, KEY) == file_id
    assert (fake.calls[UPLOAD], fake.calls[NOTES], len(fake.files), len(notes_on(fake, ids["deal"]))) == (
        1,
        1,
        1,
        1,
    )


def test_a_lost_upload_is_found_again_not_uploaded_twice(adapter, fake, ids, clock):
    fake.search_lag = timedelta(seconds=10)  # HubSpot's index trails the upload
    fake.inject(Fault.LOST_REPLY, route=UPLOAD)
    with pytest.raises(OutcomeUnknown):
        adapter.write_record(record_for(ids), KEY)
    assert len(fake.files) == 1  # HubSpot kept it; the answer was lost

    with pytest.raises(CrmTransient):  # the search cannot see it yet: wait rather than upload again
        adapter.write_record(record_for(ids), KEY)
    clock.advance(seconds=25)
    file_id = adapter.write_record(record_for(ids), KEY)

    assert list(fake.files) == [file_id] and fake.calls[UPLOAD] == 1
    (note,) = notes_on(fake, ids["deal"])
    assert note.properties["hs_attachment_ids"] == file_id


def test_a_lost_note_is_found_by_its_marker_and_nothing_is_written_twice(adapter, fake, ids, clock):
    fake.inject(Fault.LOST_REPLY, route=NOTES)
    with pytest.raises(OutcomeUnknown):
        adapter.write_record(record_for(ids), KEY)
    clock.advance(seconds=25)
    file_id = adapter.write_record(record_for(ids), KEY)
    assert list(fake.files) == [file_id]
    assert (fake.calls[UPLOAD], fake.calls[NOTES], len(notes_on(fake, ids["deal"]))) == (1, 1, 1)


def test_the_fake_refuses_an_upload_without_access_or_with_two_folders(adapter, fake, url, tmp_path):
    path = tmp_path / "record.md"
    path.write_text("# record")
    with pytest.raises(CrmPermanent, match="access"):
        adapter.api.upload_file(str(path), name="record.md", folder_path=FOLDER, options={})
    with pytest.raises(CrmPermanent, match="unknown options"):
        adapter.api.upload_file(
            str(path), name="record.md", folder_path=FOLDER, options={"access": "PRIVATE", "x": 1}
        )
    files = HubSpot(access_token=TOKEN, host=url).files.files_api
    with pytest.raises(ApiException) as refused:
        files.upload(file=str(path), folder_id="1", folder_path="/a", options='{"access": "PRIVATE"}')
    assert refused.value.status == 400 and "not both" in refused.value.body
    assert fake.files == {}


def test_a_note_cannot_name_a_file_that_does_not_exist(adapter, ids):
    note = {"properties": {"hs_timestamp": "1700000000000", "hs_note_body": "x", "hs_attachment_ids": "999"}}
    with pytest.raises(CrmPermanent, match="no file with id 999"):
        adapter.api.create_batch("notes", [note])


# --- setup: the progress properties -----------------------------------------------------------


def test_setup_creates_the_four_progress_properties_once(httpserver, clock):
    bare = standard_portal(FakeHubSpot(clock=clock))
    portal = load_settings(**settings_overrides(serve(bare, httpserver))).crm("hubspot")
    api = HubSpotApi.from_settings(portal, fake_time_limits(clock))
    enumeration = {
        "name": "offboard_status",
        "label": "Status",
        "type": "enumeration",
        "field_type": "select",
        "group_name": "dealinformation",
    }
    with pytest.raises(CrmPermanent, match="needs options"):  # as HubSpot refuses it
        api.create_property("deals", enumeration)

    first = {o.name: o.state for o in ensure_properties(api) if o.object_type == "deals"}
    progress = [d["name"] for _, d in PROGRESS]
    assert progress == ["offboard_status", "offboard_progress", "offboard_next_due", "offboard_playbook"]
    assert {name: first[name] for name in progress} == dict.fromkeys(progress, "created")
    schema = bare.schema["deals"]
    assert [o["value"] for o in schema["offboard_status"]["options"]] == list(CHECKLIST_STATES)
    assert schema["offboard_status"]["options"][3]["label"] == "Needs evidence"
    assert [schema[n]["type"] for n in progress] == ["enumeration", "string", "date", "string"]
    again = {o.name: o.state for o in ensure_properties(api)}
    assert {again[n] for n in progress} == {"exists"}
