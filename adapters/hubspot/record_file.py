"""The offboarding record on a HubSpot deal: the ``RecordWriter`` side of the HubSpot adapter.

The record is uploaded with the Files API (``POST /files/v3/files``, multipart, PRIVATE: a
private file opens only through a signed URL, for users of the portal) into
``/offboard/records``, then a note on the deal carries it: ``hs_attachment_ids`` holds the
file id, ``hs_note_body`` the record's text, so an auditor downloads the file from the deal's
timeline (HubSpot's files guide, "Attach a file to a record" through the notes API).

Once per key, though neither call takes an idempotency key: the note carries the action's
marker like every note Offboard writes (``CreateOnce``), and the file's name carries the
same token (``…-ob<20 hex>.md``). A first attempt writes without looking. When an earlier
attempt's outcome is unknown (a lost answer here, or the worker says so), the note is looked
for first (found: its file is the answer, nothing is written), then the file by name (found:
it is attached, not uploaded again); while HubSpot's index may still miss what a lost attempt
wrote, the write waits (CrmTransient) rather than risk a second file.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from adapters.hubspot import records
from adapters.hubspot.api import HubSpotApi
from adapters.hubspot.errors import OutcomeUnknown
from adapters.hubspot.once import CreateOnce
from adapters.hubspot.tasks import attachment_ids
from connector.clock import Clock
from connector.errors import CrmPermanent, CrmTransient
from connector.models import RecordSpec

FOLDER = "/offboard/records"
# ``access`` is required (HubSpot refuses an upload without it); PRIVATE keeps the record off
# the public file URLs. No ``ttl``: the record is kept.
UPLOAD_OPTIONS = {"access": "PRIVATE"}
UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class RecordFiler:
    def __init__(self, api: HubSpotApi, once: CreateOnce, clock: Clock) -> None:
        self.api, self.once, self.clock = api, once, clock

    def write(self, record: RecordSpec, key: str) -> str:
        """The file on the deal and the note that carries it, once for ``key``; the file's id."""
        file_id = None
        if self.once.unsure(key):
            noted = self.once.existing("notes", key)
            if 0 in noted:
                return self._attached_to(noted[0])
            file_id = self._uploaded(key)
            if file_id is None and self.once.too_soon(key):
                raise CrmTransient(
                    "an earlier attempt may have uploaded this record; waiting for HubSpot's index "
                    "to show it before uploading again"
                )
        if file_id is None:
            file_id = self._upload(record, key)
        note = records.note_input(record.body, key, self.clock(), {"deals": record.deal_id})
        note["properties"]["hs_attachment_ids"] = file_id
        self.once.create("notes", [note], key)
        return file_id

    def _upload(self, record: RecordSpec, key: str) -> str:
        name = file_name(record.filename, key)
        # The SDK sends the file part from a path on disk; its content type is guessed from the
        # name's extension (``.md``: text/markdown).
        with tempfile.TemporaryDirectory(prefix="offboard-record-") as folder:
            path = Path(folder) / name
            path.write_text(record.content, encoding="utf-8")
            try:
                uploaded = self.api.upload_file(
                    str(path), name=name, folder_path=FOLDER, options=UPLOAD_OPTIONS
                )
            except OutcomeUnknown:
                self.once.lost(key)  # HubSpot may have stored it: the next attempt looks first
                raise
        return str(uploaded.id)

    def _uploaded(self, key: str) -> str | None:
        """The file an earlier attempt of ``key`` uploaded, found by the token in its name."""
        token = records.token(key)
        found = [f for f in self.api.search_files(token) if token in str(f.name or "")]
        return min((str(f.id) for f in found), key=int, default=None)

    def _attached_to(self, note_id: str) -> str:
        note = self.api.get("notes", note_id, ("hs_attachment_ids",))
        ids = attachment_ids((note.properties or {}).get("hs_attachment_ids"))
        if not ids:
            raise CrmPermanent(f"the record's note {note_id} no longer carries its file in HubSpot")
        return ids[0]


def file_name(filename: str, key: str) -> str:
    """The record's file name in HubSpot, with the action's token before the extension."""
    base = UNSAFE.sub("-", Path(filename).name).strip("-.") or "offboarding-record.md"
    stem, dot, extension = base.rpartition(".")
    if not dot or not stem:
        stem, extension = base, "md"
    return f"{stem}-{records.token(key)}.{extension}"
