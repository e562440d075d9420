"""The offboarding record on the Opportunity: a file (ContentVersion) and a note, each once.

The file is a ContentVersion whose ``FirstPublishLocationId`` is the Opportunity, so
Salesforce links its ContentDocument to the Opportunity (the Files related list) in the same
insert. Its title carries the key's short form, as a note's does (``writes``): when an
attempt's outcome is unknown (``attempts``), the file is looked for by that title on the
Opportunity before anything is uploaded, so a lost reply never leaves two files. The note is
written like every other note (a ContentNote linked to the Opportunity), under its own key,
and names the file.
"""

from __future__ import annotations

import base64

import adapters.salesforce.soql as soql
from adapters.salesforce.attempts import Attempts
from adapters.salesforce.client import SalesforceClient
from adapters.salesforce.writes import NoteWriter, check_id
from connector.errors import CrmPermanent
from connector.models import RecordSpec

TITLE_MAX = 255  # ContentVersion.Title


class RecordWriter:
    def __init__(self, client: SalesforceClient, notes: NoteWriter, attempts: Attempts) -> None:
        self.client, self.notes, self.attempts = client, notes, attempts

    def write(self, record: RecordSpec, key: str) -> str:
        """Upload the file on the Opportunity and log the note, once for ``key``; the file's
        ContentDocument id."""
        check_id(record.deal_id, "Opportunity")
        note_key = f"{key}:note"
        if self.attempts.unsure(key):  # an earlier attempt of the whole record may have written either
            self.attempts.outcome_unknown(note_key)
        document_id = self._file(record, key)
        body = f"{record.body}\n\nFile: {record.filename} ({document_id})"
        self.notes.note(_note_title(record), body, [record.deal_id], note_key)
        return document_id

    def _file(self, record: RecordSpec, key: str) -> str:
        written = self.attempts.written(key)
        if written is not None:
            return str(written)
        title = file_title(record.title, key)
        if self.attempts.unsure(key):
            found = self.client.query(soql.versions_titled(title, record.deal_id))
            if found:
                document_id = str(found[0]["ContentDocumentId"])
                self.attempts.wrote(key, document_id)
                return document_id
        fields = {
            "Title": title,
            "PathOnClient": record.filename,
            "VersionData": base64.b64encode(record.content.encode()).decode(),
            "FirstPublishLocationId": record.deal_id,
        }
        # Unsure until its id is known: a lost reply, or a failed read of its document after a
        # good upload, must make the next attempt look before uploading again.
        self.attempts.outcome_unknown(key)
        created = self.client.rest("sobjects/ContentVersion", method="POST", json=fields)
        (version,) = self.client.query(soql.version(str(created["id"])))
        document_id = str(version["ContentDocumentId"])
        self.attempts.wrote(key, document_id)
        return document_id


def file_title(title: str, key: str) -> str:
    """The file's title with the key's short form: how a retry finds the file."""
    marker = f" [{key[:12]}]"
    if not title.strip():
        raise CrmPermanent("salesforce: the record file needs a title", status=400)
    return title[: TITLE_MAX - len(marker)] + marker


def _note_title(record: RecordSpec) -> str:
    title = f"Offboarding record: {record.step_id}"
    # The note's title must differ from the file's, or a retry could take one for the other.
    return title if title != record.title else f"{title} (note)"
