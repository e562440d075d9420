"""HubSpot records to Offboard's deals, and Offboard's writes to HubSpot inputs.

Writes carry a marker so a write retried after an unknown outcome finds what the first
attempt created instead of creating it again: HubSpot has no idempotency header. The marker
is one line at the end of the task or note body, ``Offboard ref: ob<20 hex> #<position>``;
the ``ob…`` token (from the action's idempotency key) is a single search token, so one
CONTAINS_TOKEN search finds every record an action wrote.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from connector.errors import CrmError
from connector.models import Company, Contact, NoteSpec, Owner, TaskSpec

# HubSpot-defined association type ids (crm/v4/associations/{from}/{to}/labels).
TASK_TO = {"deals": 216, "companies": 192, "contacts": 204}
NOTE_TO = {"deals": 214, "companies": 190, "contacts": 202}
CONTACT_TO = {"deals": 4}
PRIORITY = {"low": "LOW", "normal": "MEDIUM", "high": "HIGH"}
TASK_TYPE = {"todo": "TODO", "call": "CALL", "email": "EMAIL"}
SUBJECT_MAX = 255
NOTE_BODY_MAX = 65_536  # hs_note_body: HubSpot refuses a longer value
SHORTENED = "<br>… (shortened to fit HubSpot's note limit)"
PARTIAL_MARKUP = re.compile(r"&[#0-9A-Za-z]*$|<[^>]*$")  # an entity or tag the cut went through

Target = str | tuple[str, ...] | None  # what a record is associated to, per object type

MARKER = re.compile(r"Offboard ref: (ob[0-9a-f]{20}) #(\d+)")
EXISTING_ID = re.compile(r"Existing ID: (\d+)")


@dataclass(frozen=True)
class Stage:
    """A deal stage as the pipelines API describes it."""

    id: str
    label: str
    pipeline_id: str
    pipeline_label: str
    closed: bool
    won: bool


def token(key: str) -> str:
    """The search token of an idempotency key (a sha256 hex digest)."""
    return "ob" + key[:20]


def marked(body: str, key: str, position: int) -> str:
    return f"{body}{marker_line(key, position)}"


def marker_line(key: str, position: int) -> str:
    return f"<br><br>Offboard ref: {token(key)} #{position}"


def note_body(text: str, key: str) -> str:
    """A note's HTML body ending in its marker, shortened to fit ``hs_note_body`` when too long.

    HubSpot refuses a longer note outright, so the text is cut (never the marker: without it
    a retry could not find the note and would write it again) and says it was.
    """
    body, marker = as_html(text), marker_line(key, 0)
    if units(body + marker) <= NOTE_BODY_MAX:
        return body + marker
    room = NOTE_BODY_MAX - units(SHORTENED + marker)
    cut = body.encode("utf-16-le")[: 2 * room].decode("utf-16-le", "ignore")  # no half a pair
    return PARTIAL_MARKUP.sub("", cut) + SHORTENED + marker


def units(text: str) -> int:
    """Length as HubSpot counts it, assumed to be Java's: UTF-16 code units (an emoji is 2)."""
    return len(text.encode("utf-16-le")) // 2


def position(body: str | None, key: str) -> int | None:
    """Which write of the action ``key`` a record is, from the marker in its body."""
    for found in MARKER.finditer(body or ""):
        if found.group(1) == token(key):
            return int(found.group(2))
    return None


def markers(body: str | None) -> list[tuple[str, int]]:
    """Every (token, position) marker in a record's body: which action wrote it, and which of its records."""
    return [(found.group(1), int(found.group(2))) for found in MARKER.finditer(body or "")]


def as_html(text: str) -> str:
    """Task and note bodies are rich text in HubSpot: keep the playbook's line breaks."""
    return html.escape(text.strip()).replace("\n", "<br>")


# --- writes ----------------------------------------------------------------


def task_input(task: TaskSpec, key: str, position: int) -> dict[str, Any]:
    properties = {
        "hs_timestamp": millis(task.due_at),
        "hs_task_subject": task.title[:SUBJECT_MAX],
        "hs_task_body": marked(as_html(task.body), key, position),
        "hs_task_status": "NOT_STARTED",
        "hs_task_priority": PRIORITY[task.priority],
        "hs_task_type": TASK_TYPE[task.type],
    }
    if task.owner_id:
        properties["hubspot_owner_id"] = task.owner_id
    targets = {"deals": task.deal_id, "companies": task.company_id, "contacts": task.contact_id}
    return {"properties": properties, "associations": associations(TASK_TO, targets)}


def note_input(body: str, key: str, at: datetime, targets: Mapping[str, Target]) -> dict[str, Any]:
    properties = {"hs_timestamp": millis(at), "hs_note_body": note_body(body, key)}
    return {"properties": properties, "associations": associations(NOTE_TO, targets)}


def note_targets(note: NoteSpec) -> dict[str, str | None]:
    return {"deals": note.deal_id, "companies": note.company_id, "contacts": note.contact_id}


def associations(type_ids: dict[str, int], targets: Mapping[str, Target]) -> list[dict[str, Any]]:
    """Inline associations to each target: an id, several ids (e.g. two contacts), or None."""
    return [
        {
            "to": {"id": object_id},
            "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_ids[kind]}],
        }
        for kind, ids in targets.items()
        for object_id in dict.fromkeys((ids,) if ids is None or isinstance(ids, str) else ids)
        if object_id
    ]


def millis(moment: datetime) -> str:
    return str(int(moment.timestamp() * 1000))


# --- reads -----------------------------------------------------------------


def owner(record: Any, owner_id: str) -> Owner:
    if record is None:
        return Owner(id=owner_id)
    name = " ".join(p for p in (record.first_name, record.last_name) if p) or None
    return Owner(id=owner_id, name=name, email=record.email)


def company(record: Any) -> Company:
    props = record.properties or {}
    name = props.get("name") or props.get("domain") or f"Company {record.id}"
    return Company(id=str(record.id), name=name, domain=props.get("domain") or None)


def contact(record: Any, *, primary: bool) -> Contact:
    props = record.properties or {}
    return Contact(
        id=str(record.id),
        email=props.get("email") or None,
        first_name=props.get("firstname") or None,
        last_name=props.get("lastname") or None,
        primary=primary,
    )


def person(record: Any) -> str:
    """A contact as a CSM recognises them: "Pat Lee (pat@acme.example)"."""
    props = record.properties or {}
    name = " ".join(p for p in (props.get("firstname"), props.get("lastname")) if p)
    email = props.get("email")
    if name and email:
        return f"{name} ({email})"
    return name or email or f"contact {record.id}"


def associated_ids(record: Any, kind: str, primary_type: str) -> list[str]:
    """Associated ids, the primary association first (e.g. ``deal_to_company``), no repeats."""
    found = (record.associations or {}).get(kind)
    links = list(found.results) if found is not None else []
    ordered = [link.id for link in links if link.type == primary_type] + [link.id for link in links]
    return list(dict.fromkeys(str(i) for i in ordered))


def decimal(value: str | None) -> Decimal | None:
    try:
        return Decimal(value) if value not in (None, "") else None
    except InvalidOperation:
        return None


def day(value: str | None) -> date | None:
    """A HubSpot date or datetime value: ``2026-12-31``, ISO 8601, or epoch milliseconds."""
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC).date()
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).date()
    except ValueError:
        return None


def existing_id(error: CrmError) -> str | None:
    """The contact HubSpot's 409 "Contact already exists. Existing ID: 123" names."""
    if error.status != 409:
        return None
    found = EXISTING_ID.search(str(error))
    return found.group(1) if found else None
