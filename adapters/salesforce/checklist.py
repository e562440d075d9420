"""The checklist read back: Task events in, and the Tasks of open runs read in SOQL chunks.

A task event is a Flow callout (``task.completed`` / ``task.reopened``, see ``flow``) or an
outbound message on Task, which an admin may add; the callout says what happened, the
outbound message only that the Task changed (the core then reads it).

``read_tasks`` reads 200 Tasks to a SOQL ``Id IN`` query (a query of 200 ids is about 5,500
characters in the URL, well under the 16,384 bytes Salesforce takes, help article 000386264),
and the files attached to them with one ContentDocumentLink query per chunk (Salesforce
requires such a query to filter on LinkedEntityId or ContentDocumentId). A Task deleted in
Salesforce is not returned by a query, so it is left out. With ``changed_since`` only the
Tasks modified since then, or with a file attached since then, are read (attaching a file
does not change the Task's LastModifiedDate).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import adapters.salesforce.ids as ids
import adapters.salesforce.soql as soql
from adapters.salesforce.client import SalesforceClient
from adapters.salesforce.collections import chunks
from connector.errors import PayloadInvalid
from connector.models import TaskChange, TaskState

log = logging.getLogger("offboard.salesforce")

# Flow events by kind: what each says about the Task (see ``flow``); an outbound message on
# Task (kind ``task``) says nothing of its state.
TASK_KINDS: dict[str, bool | None] = {"task.completed": True, "task.reopened": False, "task": None}
# Fields that may carry the time of the change, the most precise first.
_WHEN_FIELDS = ("CompletedDateTime", "LastModifiedDate", "SystemModstamp")
_MARKER_LINE = re.compile(r"\n*Offboard ref [0-9a-f]{32}:[a-z0-9]+\s*$")


def task_change(kind: str, payload: dict[str, Any]) -> TaskChange | None:
    """What a stored task event means; None when ``kind`` is not a task event."""
    if kind not in TASK_KINDS:
        return None
    task_id = payload.get("Id")
    if not ids.is_id(task_id):
        raise PayloadInvalid(f"salesforce: the stored task event has no Task Id ({task_id!r})")
    when = next((t for t in (when_of(payload.get(name)) for name in _WHEN_FIELDS) if t), None)
    return TaskChange(task_id=str(task_id), completed=TASK_KINDS[kind], occurred_at=when)


def when_of(value: Any) -> datetime | None:
    """A Salesforce datetime (``2026-11-20T15:00:00.000+0000`` or ``…Z``) as an aware datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class TaskReads:
    """Reads checklist Tasks back, 200 to a query, with the files attached to them."""

    def __init__(self, client: SalesforceClient) -> None:
        self.client = client

    def read(self, task_ids: Sequence[str], changed_since: datetime | None = None) -> list[TaskState]:
        """The Tasks as the org holds them now, in the order asked, each id as the caller gave it."""
        asked: dict[str, str] = {}
        for task_id in task_ids:
            if ids.is_id(task_id):
                asked.setdefault(ids.short(task_id), task_id)
            else:  # no Task can have it: left out like a deleted one
                log.warning("salesforce: %r is not a Task id; not read", task_id)
        since = _utc(changed_since) if changed_since else None
        found: dict[str, TaskState] = {}
        for some in chunks(sorted(asked)):
            files, fresh = self._files(some, since)
            for record in self.client.query_pages(soql.tasks_by_id(some, since, sorted(fresh))):
                key = ids.short(str(record["Id"]))
                found[key] = _state(record, asked[key], tuple(files.get(key, ())))
        return [found[key] for key in dict.fromkeys(ids.short(t) for t in asked.values()) if key in found]

    def _files(self, some: list[str], since: datetime | None) -> tuple[dict[str, list[str]], set[str]]:
        """The titles of the files on each Task (by short id), and the Tasks given a file since ``since``."""
        files: dict[str, list[str]] = {}
        fresh: set[str] = set()
        for link in self.client.query_pages(soql.files_on(some)):
            key = ids.short(str(link["LinkedEntityId"]))
            document = link.get("ContentDocument") or {}
            files.setdefault(key, []).append(str(document.get("Title") or link["ContentDocumentId"]))
            stamp = when_of(link.get("SystemModstamp"))
            if since is not None and stamp is not None and stamp >= since:
                fresh.add(key)
        return files, fresh


def _state(record: dict[str, Any], task_id: str, attachments: tuple[str, ...]) -> TaskState:
    closed = bool(record.get("IsClosed"))
    modified = when_of(record.get("LastModifiedDate"))
    return TaskState(
        id=task_id,
        completed=closed,
        completed_at=(when_of(record.get("CompletedDateTime")) or modified) if closed else None,
        completed_by=str(record["LastModifiedById"]) if closed and record.get("LastModifiedById") else None,
        owner_id=record.get("OwnerId"),
        body=_MARKER_LINE.sub("", str(record.get("Description") or "")),
        attachments=attachments,
        modified_at=modified,
    )


def _utc(moment: datetime) -> datetime:
    """SOQL needs an offset on a datetime literal: a naive one is taken as UTC."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
