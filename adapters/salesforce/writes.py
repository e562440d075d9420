"""Tasks and notes written once: each carries a marker, looked for before anything is written again.

Tasks go in one sObject Collections call per 200 (all or none); their marker is in
the Description, or in an external-id field (``SALESFORCE_TASK_MARKER_FIELD``) that
makes the write an upsert. A note is a ContentNote linked to its records in one
composite call; its marker is in the title. See ``adapters.salesforce.tasks``.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from typing import Any
from zoneinfo import ZoneInfo

import adapters.salesforce.soql as soql
import adapters.salesforce.tasks as tasks
from adapters.salesforce.client import API_VERSION, SalesforceClient
from adapters.salesforce.errors import error_list, record_errors
from adapters.salesforce.ids import is_id
from adapters.salesforce.picklists import TaskPicklists
from connector.errors import CrmPermanent
from connector.models import TaskSpec

log = logging.getLogger("offboard.salesforce")


class TaskWriter:
    """Creates a run's Tasks, and the completed Tasks that log a send, at most once per marker."""

    def __init__(self, client: SalesforceClient, zone: ZoneInfo, marker_field: str | None) -> None:
        self.client, self.zone, self.marker_field = client, zone, marker_field
        self._picklists: TaskPicklists | None = None

    def create(self, specs: Sequence[TaskSpec], key: str) -> list[str]:
        if not specs:
            return []
        picklists = self.picklists()
        marks = [tasks.marker(key, n) for n in range(len(specs))]
        records = [
            tasks.record(spec, picklists, self.zone, mark=mark, marker_field=self.marker_field)
            for spec, mark in zip(specs, marks, strict=True)
        ]
        if self.marker_field:
            return self.upsert(records)
        return self._create_missing(records, marks, {tasks.found_on(spec) for spec in specs})

    def write_one(self, record: dict[str, Any]) -> str:
        """One record already marked (a logged send): upserted or created, its id returned."""
        if self.marker_field:
            return self.upsert([record])[0]
        return self.collections("POST", "composite/sobjects", [record])[0]

    def find(self, deal_id: str, mark: str) -> str | None:
        """The Task carrying ``mark`` on the Opportunity, if one was written."""
        if self.marker_field:
            found = self.client.query(soql.tasks_marked(self.marker_field, [mark]))
            return str(found[0]["Id"]) if found else None
        return self._existing_marks({("WhatId", deal_id)}).get(mark)

    def picklists(self) -> TaskPicklists:
        """The org's Task picklists, described once per process."""
        if self._picklists is None:
            self._picklists = TaskPicklists.from_describe(self.client.rest("sobjects/Task/describe"))
        return self._picklists

    def _create_missing(
        self, records: list[dict[str, Any]], marks: list[str], on: set[tuple[str, str]]
    ) -> list[str]:
        existing = self._existing_marks(on)
        missing = [
            (mark, record) for mark, record in zip(marks, records, strict=True) if mark not in existing
        ]
        if len(missing) < len(marks):
            log.info(
                "salesforce: %d of %d task(s) already exist; creating the rest",
                len(marks) - len(missing),
                len(marks),
            )
        for batch in tasks.chunks(missing):
            created = self.collections("POST", "composite/sobjects", [record for _, record in batch])
            existing.update(zip([mark for mark, _ in batch], created, strict=True))
        return [existing[mark] for mark in marks]

    def upsert(self, records: list[dict[str, Any]]) -> list[str]:
        path = f"composite/sobjects/Task/{self.marker_field}"
        return [
            task_id for batch in tasks.chunks(records) for task_id in self.collections("PATCH", path, batch)
        ]

    def collections(self, method: str, path: str, records: list[dict[str, Any]]) -> list[str]:
        """One sObject Collections call; all or none of the records are written."""
        results = self.client.rest(path, method=method, json={"allOrNone": True, "records": records})
        failed = record_errors(list(results or []))
        if failed is not None:
            raise failed
        return [str(result["id"]) for result in results]

    def _existing_marks(self, places: set[tuple[str, str]]) -> dict[str, str]:
        """Marker → Task id among the Tasks at each (relation field, record id)."""
        found: dict[str, str] = {}
        for relation, record_id in sorted(places):
            for task in self.client.query_pages(soql.tasks_on(record_id, relation)):
                mark = tasks.marker_in(task.get("Description"))
                if mark:
                    found[mark] = task["Id"]
        return found


class NoteWriter:
    """ContentNotes (Lightning's Notes), each linked to several records, created once."""

    def __init__(self, client: SalesforceClient) -> None:
        self.client = client

    def note(self, title: str, body: str, linked: list[str | None], key: str) -> str:
        """Create the note once: its title carries a marker, looked for on the first linked record."""
        records = [r for r in dict.fromkeys(linked) if r]
        for record_id in records:
            check_id(record_id, "record")
        title = f"{title[:240]} [{key[:12]}]"
        existing = self._note_titled(records[0], title)
        if existing:
            return existing
        answers = self._composite(_note_requests(title, body, records))
        return str(answers[0]["body"]["id"])

    def _note_titled(self, record_id: str, title: str) -> str | None:
        for link in self.client.query_pages(soql.notes_on(record_id)):
            if (link.get("ContentDocument") or {}).get("Title") == title:
                return str(link["ContentDocumentId"])
        return None

    def _composite(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One composite call (counts once against the API limits); all or none take effect."""
        answer = self.client.rest(
            "composite", method="POST", json={"allOrNone": True, "compositeRequest": requests}
        )
        parts = list((answer or {}).get("compositeResponse") or [])
        failed = [p for p in parts if int(p.get("httpStatusCode", 500)) >= 300]
        if failed or len(parts) != len(requests):
            errors = [e for p in failed for e in error_list(p.get("body"))]
            causes = [e for e in errors if e.get("errorCode") != "PROCESSING_HALTED"] or errors
            summary = "; ".join(f"{e.get('errorCode')}: {e.get('message')}" for e in causes[:5])
            raise CrmPermanent(f"salesforce: composite request refused: {summary}", status=400, detail=causes)
        return parts


def _note_requests(title: str, body: str, linked: list[str]) -> list[dict[str, Any]]:
    base = f"/services/data/v{API_VERSION}/sobjects"
    content = "".join(f"<p>{html.escape(line)}</p>" for line in body.splitlines() or [""])
    requests = [
        {
            "method": "POST",
            "url": f"{base}/ContentNote",
            "referenceId": "note",
            "body": {"Title": title, "Content": base64.b64encode(content.encode()).decode()},
        }
    ]
    for n, record_id in enumerate(linked):
        requests.append(
            {
                "method": "POST",
                "url": f"{base}/ContentDocumentLink",
                "referenceId": f"link{n}",
                # ShareType I: whoever can see the record can see the note.
                "body": {"ContentDocumentId": "@{note.id}", "LinkedEntityId": record_id, "ShareType": "I"},
            }
        )
    return requests


def check_id(value: str, sobject: str) -> None:
    # Ids end up in URL paths and come from stored payloads: refuse anything else here.
    if not is_id(value):
        raise CrmPermanent(f"salesforce: {value!r} is not a {sobject} id", status=400)
