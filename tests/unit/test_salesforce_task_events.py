"""The Salesforce checklist read back: task events, Tasks read in SOQL chunks with their files,
the offboarding record as a file on the Opportunity, and the progress fields.

Against the strict fake org through simple-salesforce (``responses``).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from adapters.base import Write
from adapters.salesforce import flow, outbound
from adapters.salesforce.install import SalesforceApp
from adapters.salesforce.settings import SalesforceSettings
from connector.errors import CrmError, CrmPermanent, OutcomeUnknown, PayloadInvalid
from connector.models import PropertyUpdate, RecordSpec, TaskChange
from tests.support import adapter_fixtures
from tests.support.faults import Fault
from tests.support.salesforce import ORG_ID, F, outbound_message

org = adapter_fixtures.org
http = adapter_fixtures.http
sf = adapter_fixtures.sf
adapter_for = adapter_fixtures.adapter_for

KEY = "9c2d" * 16
TASK_ID = "00T5g000000AbCdEAB"


def task_queries(org) -> list[str]:
    return [q for q in org.queries if " FROM Task " in q]


def link_queries(org) -> list[str]:
    return [q for q in org.queries if " FROM ContentDocumentLink " in q]


# --- task events ---------------------------------------------------------------------------


def test_a_flow_task_event_is_stored_under_its_name_and_differs_from_a_reopening():
    body = b'{"recordId": "%s", "event": "task.completed", "fields": {"LastModifiedDate": "%s"}}'
    completed = flow.parse(body % (TASK_ID.encode(), b"2026-11-23T09:30:00.000Z"))
    reopened = flow.parse(
        body.replace(b"completed", b"reopened") % (TASK_ID.encode(), b"2026-11-23T09:30:00.000Z")
    )
    assert (completed.kind, completed.payload) == (
        "task.completed",
        {"LastModifiedDate": "2026-11-23T09:30:00.000Z", "Id": TASK_ID, "event": "task.completed"},
    )
    assert reopened.kind == "task.reopened"
    assert completed.event_key != reopened.event_key  # same Task, same time: two events


def test_a_task_event_about_an_opportunity_id_is_refused_naming_record_id():
    with pytest.raises(PayloadInvalid) as refused:
        flow.parse(b'{"recordId": "0065g0000000001AAA", "event": "task.completed", "eventId": "e1"}')
    assert refused.value.details == [{"field": "recordId", "problem": refused.value.details[0]["problem"]}]
    with pytest.raises(PayloadInvalid):
        flow.parse(b'{"recordId": "%s", "event": "task.deleted", "eventId": "e1"}' % TASK_ID.encode())


def test_task_events_interpret_as_task_changes_without_calling_salesforce(org, sf):
    payload = {"Id": TASK_ID, "event": "task.completed", "LastModifiedDate": "2026-11-23T09:30:00.000+0000"}
    assert sf.interpret("task.completed", payload) == TaskChange(
        task_id=TASK_ID, completed=True, occurred_at=datetime(2026, 11, 23, 9, 30, tzinfo=UTC)
    )
    reopened = sf.interpret("task.reopened", {"Id": TASK_ID, "event": "task.reopened"})
    assert reopened == TaskChange(task_id=TASK_ID, completed=False, occurred_at=None)
    with pytest.raises(PayloadInvalid):
        sf.interpret("task.completed", {"Id": "not an id"})
    assert org.calls == []


def test_an_outbound_message_on_task_says_only_that_the_task_changed(org, sf):
    body = outbound_message(
        [("04l5g0000000009AAA", {"Id": TASK_ID, "Status": "Completed", "IsClosed": True})],
        sobject_type="Task",
    )
    (notification,) = outbound.parse(body, ORG_ID).notifications
    assert notification.kind == "task"
    change = sf.interpret(notification.kind, notification.fields)
    assert change == TaskChange(task_id=TASK_ID, completed=None)  # the fields never decide: the core reads it
    assert org.calls == []


def test_interpret_many_reads_the_opportunities_and_passes_task_events_through(org, sf):
    seed = org.add_opportunity()
    events = [
        ("task.completed", {"Id": TASK_ID, "event": "task.completed"}),
        ("opportunity", {"Id": seed.opportunity, "IsClosed": "true"}),
        ("task", {"Id": TASK_ID}),
        ("task.reopened", {"Id": "nope"}),
    ]
    results = sf.interpret_many(events)
    assert results[0] == TaskChange(task_id=TASK_ID, completed=True)
    assert getattr(results[1], "change", None) == "closed"
    assert results[2] == TaskChange(task_id=TASK_ID, completed=None)
    assert isinstance(results[3], PayloadInvalid)
    assert org.calls == ["GET query"]  # the Opportunity only


# --- read_tasks ------------------------------------------------------------------------------


def test_450_tasks_are_read_in_three_queries_with_their_files_deleted_ones_left_out(org, sf):
    seed = org.add_opportunity()
    csm = org.add_user("Casey CSM")
    ids = [
        org.add_task(seed.opportunity, f"Step {n}", Description=f"Do {n}.\n\nOffboard ref {KEY[:32]}:{n}")
        for n in range(450)
    ]
    org.complete_task(ids[0], by=csm)
    org.complete_task(ids[1], by=csm)
    org.reopen_task(ids[1], by=csm)
    org.edit_task(ids[2], by=csm, Description="Revoked.\nEvidence: SSO group removed, ticket IT-42")
    evidence = org.attach_file(ids[3], "revocation.png")
    org.delete("Task", ids[4])

    states = sf.read_tasks(ids)

    assert len(task_queries(org)) == 3 and len(link_queries(org)) == 3
    assert all(len(q) < 16_384 for q in org.queries)
    assert [s.id for s in states] == [i for i in ids if i != ids[4]]
    done, reopened, noted, filed = states[:4]
    assert (done.completed, done.completed_by, done.owner_id) == (True, csm, org.api_user)
    assert done.completed_at is not None and done.completed_at.tzinfo is not None
    assert done.body == "Do 0."  # the marker line is Offboard's, not the CSM's
    assert (reopened.completed, reopened.completed_at, reopened.completed_by) == (False, None, None)
    assert noted.body.splitlines()[1] == "Evidence: SSO group removed, ticket IT-42"
    assert filed.attachments == ("revocation",) and not filed.completed
    assert org.db["ContentDocument"][evidence]["Title"] == "revocation"


def test_changed_since_reads_only_tasks_modified_or_given_a_file_since(org, sf):
    seed = org.add_opportunity()
    ids = [org.add_task(seed.opportunity, f"Step {n}") for n in range(4)]
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    for task_id in ids:  # saved an hour ago (SOQL compares datetimes to the second)
        org.db["Task"][task_id]["LastModifiedDate"] = an_hour_ago
    since = datetime.now(UTC) - timedelta(minutes=1)
    org.complete_task(ids[1])
    org.attach_file(ids[2], "deletion-certificate.pdf")

    states = sf.read_tasks(ids, changed_since=since)

    assert [(s.id, s.completed, s.attachments) for s in states] == [
        (ids[1], True, ()),
        (ids[2], False, ("deletion-certificate",)),
    ]
    assert "LastModifiedDate >= " in task_queries(org)[-1]


def test_ids_are_answered_in_the_form_asked_and_bad_ids_are_left_out(org, sf):
    seed = org.add_opportunity()
    task_id = org.add_task(seed.opportunity)
    states = sf.read_tasks([task_id[:15], "x'); DELETE", task_id])
    assert [s.id for s in states] == [task_id[:15]]
    assert len(task_queries(org)) == 1
    assert sf.read_tasks([]) == [] and len(task_queries(org)) == 1


def test_the_fake_refuses_what_salesforce_refuses_for_these_reads(org, sf):
    with pytest.raises(CrmPermanent, match="ContentDocumentLink requires a filter"):
        sf.client.query("SELECT LinkedEntityId, ContentDocument.Title FROM ContentDocumentLink")
    too_many = ", ".join(f"'00T5g{n:013d}'" for n in range(900))
    with pytest.raises(CrmError):  # over 16,384 bytes of URI: 414
        sf.client.query(f"SELECT Id FROM Task WHERE Id IN ({too_many})")


def test_task_url_is_the_lightning_page_on_the_instance(org, sf):
    assert sf.task_url("00T5g000000AbCdEAB") == (
        f"https://{org.instance}/lightning/r/Task/00T5g000000AbCdEAB/view"
    )


# --- write_record ----------------------------------------------------------------------------


def record_spec(deal_id: str) -> RecordSpec:
    return RecordSpec(
        step_id="record",
        deal_id=deal_id,
        title="Offboarding record: Acme website",
        body="Every step, who completed it and when.\nrevoke-access: Evidence: SSO group removed",
        filename="offboarding-record.md",
        content="# Offboarding record\n\n- revoke-access: done 2026-12-02 by Casey",
    )


def test_write_record_puts_the_file_on_the_opportunity_and_logs_the_note(org, sf):
    seed = org.add_opportunity()
    document_id = sf.write_record(record_spec(seed.opportunity), KEY)

    (version,) = org.records("ContentVersion")
    assert version["ContentDocumentId"] == document_id
    assert version["PathOnClient"] == "offboarding-record.md"
    assert base64.b64decode(version["VersionData"]).decode().startswith("# Offboarding record")
    assert version["FirstPublishLocationId"] == seed.opportunity
    assert org.records("ContentDocumentLink", ContentDocumentId=document_id, LinkedEntityId=seed.opportunity)
    (note,) = org.records("ContentNote")
    assert note["Title"].startswith("Offboarding record: record [")
    text = base64.b64decode(note["Content"]).decode()
    assert "SSO group removed" in text and document_id in text
    assert org.records("ContentDocumentLink", ContentDocumentId=note["Id"], LinkedEntityId=seed.opportunity)
    assert sf.write_record(record_spec(seed.opportunity), KEY) == document_id  # same process: remembered
    assert len(org.records("ContentVersion")) == 1 and len(org.records("ContentNote")) == 1


def test_a_lost_reply_on_the_upload_never_leaves_two_files(org, sf, tmp_path):
    seed = org.add_opportunity()
    org.inject(Fault.LOST_REPLY, match="POST sobjects/ContentVersion")
    with pytest.raises(OutcomeUnknown):
        sf.write_record(record_spec(seed.opportunity), KEY)
    assert len(org.records("ContentVersion")) == 1  # Salesforce did upload it

    again = sf.write_record(record_spec(seed.opportunity), KEY)  # the same process retries

    (version,) = org.records("ContentVersion")
    assert again == version["ContentDocumentId"]
    assert len(org.records("ContentNote")) == 1


def test_a_new_process_told_the_outcome_is_unknown_finds_the_file_and_the_note(org, sf, tmp_path):
    seed = org.add_opportunity()
    org.inject(Fault.LOST_REPLY, match="POST composite")  # the note's reply is lost
    with pytest.raises(OutcomeUnknown):
        sf.write_record(record_spec(seed.opportunity), KEY)
    assert len(org.records("ContentVersion")) == 1 and len(org.records("ContentNote")) == 1

    restarted = adapter_for(org, tmp_path)
    restarted.outcome_unknown(KEY, datetime.now(UTC))
    document_id = restarted.write_record(record_spec(seed.opportunity), KEY)

    assert [v["ContentDocumentId"] for v in org.records("ContentVersion")] == [document_id]
    assert len(org.records("ContentNote")) == 1


def test_the_fake_refuses_a_file_salesforce_would_refuse(org, sf):
    seed = org.add_opportunity()
    good = {"PathOnClient": "r.md", "VersionData": "aGVsbG8=", "FirstPublishLocationId": seed.opportunity}
    for bad, code in [
        ({k: v for k, v in good.items() if k != "PathOnClient"}, "REQUIRED_FIELD_MISSING"),
        ({k: v for k, v in good.items() if k != "VersionData"}, "REQUIRED_FIELD_MISSING"),
        (good | {"VersionData": "not base64!"}, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
        (good | {"FirstPublishLocationId": "0065g0000000404AAA"}, "INVALID_CROSS_REFERENCE_KEY"),
    ]:
        with pytest.raises(CrmPermanent, match=code):
            sf.client.rest("sobjects/ContentVersion", method="POST", json=bad)
    assert org.records("ContentVersion") == []


# --- progress fields ---------------------------------------------------------------------------


def progress_of(deal_id: str, **properties: str) -> PropertyUpdate:
    return PropertyUpdate(step_id="progress", object="deal", object_id=deal_id, properties=properties)


def test_progress_fields_reach_the_opportunity(org, sf):
    seed, other = org.add_opportunity(), org.add_opportunity("Globex app", account="Globex")
    progress = {
        "offboard_status": "in_progress",
        "offboard_progress": "3/12",
        "offboard_next_due": "2026-12-01",
        "offboard_playbook": "terminated-retainer@3",
    }
    sf.update_properties(
        PropertyUpdate(step_id="progress", object="deal", object_id=seed.opportunity, properties=progress),
        KEY,
    )
    opportunity = org.db["Opportunity"][seed.opportunity]
    assert (
        opportunity["Offboard_Status__c"],
        opportunity["Offboard_Progress__c"],
        opportunity["Offboard_Next_Due__c"],
        opportunity["Offboard_Playbook__c"],
    ) == ("in_progress", "3/12", "2026-12-01", "terminated-retainer@3")

    results = sf.update_properties_many(
        [
            Write(KEY, progress_of(seed.opportunity, offboard_status="complete")),
            Write(KEY, progress_of(other.opportunity, offboard_status="done")),
        ]
    )
    assert results[0] is None and isinstance(results[1], CrmPermanent)  # a restricted picklist
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in str(results[1])
    assert org.db["Opportunity"][seed.opportunity]["Offboard_Status__c"] == "complete"
    assert org.db["Opportunity"][other.opportunity]["Offboard_Status__c"] is None


def test_the_install_check_names_missing_progress_fields_and_status_values(org, sf):
    app = SalesforceApp(SalesforceSettings.model_validate({}))
    assert app.after_install(sf) == []
    del org.schema["Opportunity"]["Offboard_Next_Due__c"]
    org.schema["Opportunity"]["Offboard_Status__c"] = F("picklist", 255, values=("not_started", "complete"))
    notes = app.after_install(sf)
    assert len(notes) == 2
    assert "Offboard_Next_Due__c (Date) does not exist" in notes[0]
    assert "in_progress, overdue, needs_evidence, cancelled" in notes[1]
