"""Tasks and notes written once: each carries a marker, looked for only when an attempt is unsure.

Tasks go in sObject Collections calls of 200 (``allOrNone: false``: a refused record fails
only its own action, whose other Tasks are then removed again); their marker is in the
Description, or in an external-id field (``SALESFORCE_TASK_MARKER_FIELD``) that makes the
write an upsert. The Tasks of many actions (many deals) share the calls. A note is a
ContentNote linked to its records in one composite call; its marker is in the title.
What an earlier attempt wrote is looked for only when its outcome is unknown
(``adapters.salesforce.attempts``); see ``adapters.salesforce.tasks`` for the markers.
"""

from __future__ import annotations

import base64
import html
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import adapters.salesforce.soql as soql
import adapters.salesforce.tasks as tasks
from adapters.base import Results, Write
from adapters.salesforce.attempts import Attempts
from adapters.salesforce.client import API_VERSION, SalesforceClient
from adapters.salesforce.collections import chunks, undo, write_all
from adapters.salesforce.errors import error_list, record_errors
from adapters.salesforce.ids import is_id, is_lead
from adapters.salesforce.picklists import TaskPicklists
from connector.errors import CrmError, CrmPermanent, OutcomeUnknown
from connector.models import TaskSpec

log = logging.getLogger("offboard.salesforce")

# One action's Task records: (marker, record, where a retry looks for it).
Marked = list[tuple[str, dict[str, Any], tuple[str, str]]]


class TaskWriter:
    """Creates the Tasks of many actions, and the completed Tasks that log sends, at most once per marker."""

    def __init__(
        self,
        client: SalesforceClient,
        zone: ZoneInfo,
        marker_field: str | None,
        attempts: Attempts | None = None,
    ) -> None:
        self.client, self.zone, self.marker_field = client, zone, marker_field
        self.attempts = attempts or Attempts()
        self._picklists: TaskPicklists | None = None

    def create(self, specs: Sequence[TaskSpec], key: str) -> list[str]:
        """One action's Tasks (``create_many`` of one); its error raised."""
        (result,) = self.create_many([Write(key, specs)])
        if isinstance(result, CrmError):
            raise result
        return result

    def create_many(self, writes: Sequence[Write[Sequence[TaskSpec]]]) -> Results[list[str]]:
        """Each action's Task ids in order, or the error it alone met."""
        if not any(w.item for w in writes):
            return [[] for _ in writes]
        picklists = self.picklists()
        plans = [self.marked(w.key, w.item, picklists) for w in writes]
        return self.write_marked(writes, plans)

    def marked(self, key: str, specs: Sequence[TaskSpec], picklists: TaskPicklists) -> Marked:
        marks = [tasks.marker(key, n) for n in range(len(specs))]
        return [
            (
                mark,
                tasks.record(spec, picklists, self.zone, mark=mark, marker_field=self.marker_field),
                tasks.found_on(spec),
            )
            for spec, mark in zip(specs, marks, strict=True)
        ]

    def write_marked(
        self, writes: Sequence[Write[Any]], plans: list[Marked], found: dict[str, str] | None = None
    ) -> Results[list[str]]:
        """Write the marked records of each action that this process has not written yet.

        What an unsure action's earlier attempt wrote is looked for first, in one query
        (``found``, when the caller has looked already); an upsert on the marker field needs
        no looking: it cannot write twice.
        """
        results: list[Any] = [self.attempts.written(w.key) for w in writes]
        todo = [n for n, r in enumerate(results) if r is None]
        if found is None:
            unsure = [n for n in todo if self.attempts.unsure(writes[n].key, writes[n].unsure_since)]
            found = {} if self.marker_field else self.find_marked([plans[n] for n in unsure])
        groups = [[(m, r) for m, r, _ in plans[n] if m not in found] for n in todo]
        method, path = ("POST", "composite/sobjects")
        if self.marker_field:
            method, path = "PATCH", f"composite/sobjects/Task/{self.marker_field}"
        try:
            written = write_all(self.client, method, path, [[r for _, r in g] for g in groups])
        except OutcomeUnknown:
            for n in todo:
                self.attempts.outcome_unknown(writes[n].key)
            raise
        for n, group, (created, error) in zip(todo, groups, written, strict=True):
            ids = found | {group[pos][0]: task_id for pos, task_id in created.items()}
            if error is None:
                results[n] = [ids[m] for m, _, _ in plans[n]]
                self.attempts.wrote(writes[n].key, results[n])
            else:
                results[n] = undo(self.client, self.attempts, writes[n].key, list(created.values()), error)
        return results

    def find_marked(self, plans: list[Marked]) -> dict[str, str]:
        """Marker → Task id of the planned records an earlier attempt wrote."""
        return self.find(
            {place for plan in plans for _, _, place in plan}, {m for plan in plans for m, _, _ in plan}
        )

    def find(self, places: set[tuple[str, str]], marks: set[str]) -> dict[str, str]:
        """Marker → Task id among the Tasks written with these marks, at these places (one
        query per 200 places, or one on the marker field)."""
        if not marks:
            return {}
        found: dict[str, str] = {}
        if self.marker_field:
            for some in chunks(sorted(marks)):
                for task in self.client.query_pages(soql.tasks_marked(self.marker_field, some)):
                    found[str(task[self.marker_field])] = str(task["Id"])
            return found
        for some in chunks(sorted({record_id for _, record_id in places})):
            leads = [r for r in some if is_lead(r)]
            deals = [r for r in some if not is_lead(r)]
            for task in self.client.query_pages(soql.tasks_related(deals, leads)):
                mark = tasks.marker_in(task.get("Description"))
                if mark in marks:
                    found[mark] = str(task["Id"])
        return found

    def picklists(self) -> TaskPicklists:
        """The org's Task picklists, described once per process."""
        if self._picklists is None:
            self._picklists = TaskPicklists.from_describe(self.client.rest("sobjects/Task/describe"))
        return self._picklists

    def collections(self, method: str, path: str, records: list[dict[str, Any]]) -> list[str]:
        """One sObject Collections call; all or none of the records are written."""
        results = self.client.rest(path, method=method, json={"allOrNone": True, "records": records})
        failed = record_errors(list(results or []))
        if failed is not None:
            raise failed
        return [str(result["id"]) for result in results]


@dataclass(frozen=True)
class Note:
    """A note to write: its title (with the action's marker), body, and the records it is linked to."""

    title: str
    body: str
    linked: list[str]

    @classmethod
    def of(cls, title: str, body: str, linked: Sequence[str | None], key: str) -> Note:
        records = [r for r in dict.fromkeys(linked) if r]
        for record_id in records:
            check_id(record_id, "record")
        if not records:
            raise CrmPermanent("salesforce: a note needs a record to go on", status=400)
        return cls(f"{title[:240]} [{key[:12]}]", body, records)


class NoteWriter:
    """ContentNotes (Lightning's Notes), each linked to several records, created once.

    One note goes in one composite call (the note and its links, all or none). Many go in
    two sObject Collections calls per 200: the notes, then their links; a note whose link is
    refused is removed again. An unsure note is looked for by its title, and its missing
    links are added, so a note left without links by a lost reply is found too.
    """

    def __init__(self, client: SalesforceClient, attempts: Attempts | None = None) -> None:
        self.client = client
        self.attempts = attempts or Attempts()

    def note(self, title: str, body: str, linked: list[str | None], key: str) -> str:
        """Create the note once (``notes_many`` of one); its error raised."""
        (result,) = self.notes_many([Write(key, Note.of(title, body, linked, key))])
        if isinstance(result, CrmError):
            raise result
        return result

    def notes_many(self, writes: Sequence[Write[Note]]) -> Results[str]:
        """Each note's id (the ContentDocument's), or the error it alone met."""
        results: list[Any] = [self.attempts.written(w.key) for w in writes]
        todo = [n for n, r in enumerate(results) if r is None]
        unsure = [
            writes[n].item.title for n in todo if self.attempts.unsure(writes[n].key, writes[n].unsure_since)
        ]
        found, linked = self._found(unsure)
        new = [n for n in todo if writes[n].item.title not in found]
        if len(new) == 1 and len(todo) == 1:  # one note: one composite call, the note and its links
            results[new[0]] = self._composite_one(writes[new[0]])
            return results
        try:
            created = write_all(
                self.client, "POST", "composite/sobjects", [[_content(writes[n].item)] for n in new]
            )
        except OutcomeUnknown:
            for n in new:
                self.attempts.outcome_unknown(writes[n].key)
            raise
        notes = {n: found.get(writes[n].item.title) for n in todo}
        for n, (ids, error) in zip(new, created, strict=True):
            notes[n] = ids.get(0)
            results[n] = error
        ready = [n for n in todo if notes[n] and results[n] is None]
        self._link_all(
            [writes[n].item for n in ready], [str(notes[n]) for n in ready], linked, results, ready
        )
        for n in todo:
            key, note_id = writes[n].key, notes[n]
            if isinstance(results[n], CrmError):
                mine = [str(note_id)] if note_id and n in new else []
                results[n] = undo(self.client, self.attempts, key, mine, results[n])
            else:
                results[n] = str(note_id)
                self.attempts.wrote(key, results[n])
        return results

    def _link_all(
        self,
        notes: list[Note],
        ids: list[str],
        linked: set[tuple[str, str]],
        results: list[Any],
        at: list[int],
    ) -> None:
        """Link each note to the records it is not linked to yet; a failed link fails its note."""
        links = [
            [_link(i, r) for r in note.linked if (i, r) not in linked]
            for note, i in zip(notes, ids, strict=True)
        ]
        try:
            outcomes = [error for _, error in write_all(self.client, "POST", "composite/sobjects", links)]
        except CrmError as exc:  # the notes are written, not linked: each fails with the call
            outcomes = [exc] * len(links)
        for n, error in zip(at, outcomes, strict=True):
            results[n] = error

    def _found(self, titles: list[str]) -> tuple[dict[str, str], set[tuple[str, str]]]:
        """The notes with these titles (title → id), and the links they have (note id, record id)."""
        found: dict[str, str] = {}
        for some in chunks(sorted(set(titles))):
            for document in self.client.query_pages(soql.documents_titled(some)):
                found.setdefault(str(document["Title"]), str(document["Id"]))
        links: set[tuple[str, str]] = set()
        for some in chunks(sorted(set(found.values()))):
            for link in self.client.query_pages(soql.links_of(some)):
                links.add((str(link["ContentDocumentId"]), str(link["LinkedEntityId"])))
        return found, links

    def _composite_one(self, write: Write[Note]) -> str | CrmError:
        note = write.item
        try:
            answers = self._composite(_note_requests(note.title, note.body, note.linked))
        except OutcomeUnknown:
            self.attempts.outcome_unknown(write.key)
            raise
        except CrmError as exc:
            return exc
        note_id = str(answers[0]["body"]["id"])
        self.attempts.wrote(write.key, note_id)
        return note_id

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


def _content(note: Note) -> dict[str, Any]:
    return {"attributes": {"type": "ContentNote"}, "Title": note.title, "Content": _html(note.body)}


def _link(note_id: str, record_id: str) -> dict[str, Any]:
    # ShareType I: whoever can see the record can see the note.
    return {
        "attributes": {"type": "ContentDocumentLink"},
        "ContentDocumentId": note_id,
        "LinkedEntityId": record_id,
        "ShareType": "I",
    }


def _html(body: str) -> str:
    content = "".join(f"<p>{html.escape(line)}</p>" for line in body.splitlines() or [""])
    return base64.b64encode(content.encode()).decode()


def _note_requests(title: str, body: str, linked: list[str]) -> list[dict[str, Any]]:
    base = f"/services/data/v{API_VERSION}/sobjects"
    requests = [
        {
            "method": "POST",
            "url": f"{base}/ContentNote",
            "referenceId": "note",
            "body": {"Title": title, "Content": _html(body)},
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
