"""What a HubSpot task event means, and how a task's HTML body reads as plain text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.hubspot import records, webhook
from adapters.hubspot.record_file import file_name
from adapters.hubspot.tasks import attachment_ids, moment, plain_text
from connector.models import TaskChange
from tests.support.hubspot import stage_event, task_event

AT = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "completed"),
    [
        ("COMPLETED", True),
        ("NOT_STARTED", False),
        ("IN_PROGRESS", False),
        ("WAITING", False),
        ("DEFERRED", False),
    ],
)
def test_a_task_status_change_says_whether_the_task_is_done(status, completed):
    change = webhook.task_change("object.propertyChange", task_event("4242", status, at=AT))
    assert change == TaskChange(task_id="4242", completed=completed, occurred_at=AT)


@pytest.mark.parametrize(
    "changed",
    [
        {"objectTypeId": "0-3"},  # a deal
        {"objectTypeId": "0-1", "propertyName": "email"},  # a contact
        {"propertyName": "hs_task_subject"},  # another task property
        {"propertyValue": ""},
        {"propertyValue": None},
        {"objectId": True},
        {"objectId": None},
    ],
)
def test_other_property_changes_are_not_task_changes(changed):
    assert webhook.task_change("object.propertyChange", task_event("4242", "COMPLETED") | changed) is None


def test_only_the_generic_subscription_carries_task_changes():
    event = task_event("4242", "COMPLETED")
    assert webhook.task_change("deal.propertyChange", event) is None
    assert webhook.task_change("object.propertyChange", stage_event("7", "closedwon")) is None
    assert webhook.stage_change("object.propertyChange", event) is None  # nor is it a stage change


def test_a_hostile_occurred_at_leaves_the_time_unknown():
    event = task_event("4242", "COMPLETED") | {"occurredAt": 10**30}
    assert webhook.task_change("object.propertyChange", event).occurred_at is None


FIELDS = sorted(task_event("1", "COMPLETED"))
VALUES = (
    st.none() | st.booleans() | st.integers() | st.text(max_size=12) | st.sampled_from(["0-27", "COMPLETED"])
)


@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=6))
def test_any_payload_is_a_task_change_or_none_never_an_error(changed):
    result = webhook.task_change("object.propertyChange", task_event("1", "COMPLETED") | changed)
    assert result is None or isinstance(result, TaskChange)


def test_html_bodies_read_as_lines():
    body = "<p>Revoke access</p><p>Evidence:</p><ul><li>ticket 42</li><li>badge returned</li></ul>x&nbsp;y"
    assert plain_text(body) == "Revoke access\nEvidence:\nticket 42\nbadge returned\nx y"
    assert plain_text("<div>a<br/>b</div><script>c</script>") == "a\nb\nc"  # tags go, nothing runs


@given(st.text(alphabet=st.sampled_from("abc XYZ.:&<>\"'\n"), max_size=80))
def test_a_body_offboard_wrote_reads_back_as_its_text(text):
    key = "7d" * 32
    expected = "\n".join(line.rstrip() for line in text.strip().split("\n")).strip()
    while "\n\n\n" in expected:
        expected = expected.replace("\n\n\n", "\n\n")
    assert plain_text(records.marked(records.as_html(text), key, 0)) == expected


def test_attachments_times_and_file_names():
    assert attachment_ids("101; 102;;") == ("101", "102")
    assert attachment_ids(None) == ()
    assert moment("2026-12-02T15:30:00.000Z") == AT == moment(str(int(AT.timestamp() * 1000)))
    assert moment("not a time") is None
    key = "ab" * 32
    assert file_name("offboarding record: Acme/Co.md", key) == f"Co-{records.token(key)}.md"
    assert file_name("record of Acme", key) == f"record-of-Acme-{records.token(key)}.md"
    assert file_name("../..", key) == f"offboarding-record-{records.token(key)}.md"
