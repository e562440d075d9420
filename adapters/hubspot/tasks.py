"""Reading checklist tasks back from HubSpot: the ``TaskReader`` side of the HubSpot adapter.

The tracking pass and a task event ask for many tasks at once: they are read with the tasks
batch read (``POST /crm/v3/objects/tasks/batch/read``, 100 ids per call, each call through the
account's rate budget like every other). A task deleted in HubSpot is named in the 207
answer's errors and simply left out. ``changed_since`` is applied here, to what the batch
read returned, rather than by a search on ``hs_lastmodifieddate``: searches have a budget of
their own (about 5 a second) and trail writes by seconds, so a search could miss the very
change the pass is looking for.

Who completed a task: HubSpot has no "completed by" property. ``hs_updated_by_user_id`` (the
HubSpot user who last changed the task) is read; at the moment the task is seen completed,
that is the person who completed it (a later edit by someone else changes it, so the core
keeps what the read that first saw the completion said). It is a user id, and tasks are
assigned to owner ids (HubSpot refuses a user id as ``hubspot_owner_id``), so it is turned into
the owner behind that user (``GET /crm/v3/owners/{userId}?idProperty=userId``), once per user
and process; a user who is no owner gives None (the core then asks the task's owner).
The status' property history would name the user exactly, but asking for history in a batch
read is not documented to keep the 100-id limit, and the read must stay at 100 ids a call.

The body is HTML (rich text in HubSpot's editor) and comes back as plain text with its line
breaks kept, so the core can find the ``Evidence:`` line a CSM added; the marker line that
makes a retried write idempotent (``records.marker_line``) is left out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from adapters.hubspot import records
from adapters.hubspot.api import HubSpotApi
from adapters.hubspot.webhook import COMPLETED
from connector.errors import CrmPermanent
from connector.models import TaskState

TASK_PROPERTIES = (
    "hs_task_status",
    "hs_task_completion_date",
    "hs_task_body",
    "hubspot_owner_id",
    "hs_attachment_ids",
    "hs_lastmodifieddate",
    "hs_updated_by_user_id",
)
# Where a person opens a task. HubSpot documents no URL for a task itself; the record page of
# any object is /contacts/{portal}/record/{objectTypeId}/{id}, and tasks are object type 0-27.
TASK_URL = "https://{domain}/contacts/{portal}/record/0-27/{task_id}"
# Tags after which HubSpot's rich text starts a new line.
BREAKS = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote"})


class UserOwners:
    """The owner id behind each HubSpot user id, read once per user and process."""

    def __init__(self, api: HubSpotApi) -> None:
        self.api = api
        self._known: dict[str, str | None] = {}

    def __call__(self, user_id: str | None) -> str | None:
        if not user_id:
            return None
        if user_id not in self._known:
            try:
                found = self.api.owner(user_id, by="userId")
                self._known[user_id] = str(found.id) if found is not None and found.id else None
            except CrmPermanent:  # not an owner (deactivated, or never one): nobody to assign
                self._known[user_id] = None
        return self._known[user_id]


def read_tasks(
    api: HubSpotApi, task_ids: Sequence[str], changed_since: datetime | None, owners: UserOwners | None = None
) -> list[TaskState]:
    """The tasks as HubSpot holds them now, in the order asked; deleted ones are left out."""
    wanted = list(dict.fromkeys(str(i) for i in task_ids))
    if not wanted:
        return []
    found = {str(r.id): state(r) for r in api.read_batch("tasks", wanted, TASK_PROPERTIES)}
    if owners is not None:
        found = {i: s.model_copy(update={"completed_by": owners(s.completed_by)}) for i, s in found.items()}
    states = [found[i] for i in wanted if i in found]
    if changed_since is None:
        return states
    return [s for s in states if s.modified_at is None or s.modified_at >= changed_since]


def state(record: Any) -> TaskState:
    props = record.properties or {}
    completed = props.get("hs_task_status") == COMPLETED
    return TaskState(
        id=str(record.id),
        completed=completed,
        completed_at=moment(props.get("hs_task_completion_date")) if completed else None,
        completed_by=(props.get("hs_updated_by_user_id") or None) if completed else None,
        owner_id=props.get("hubspot_owner_id") or None,
        body=plain_text(props.get("hs_task_body") or ""),
        attachments=attachment_ids(props.get("hs_attachment_ids")),
        modified_at=moment(props.get("hs_lastmodifieddate")) or _aware(getattr(record, "updated_at", None)),
    )


def task_url(domain: str, portal: str, task_id: str) -> str:
    return TASK_URL.format(domain=domain, portal=portal, task_id=task_id)


def attachment_ids(value: str | None) -> tuple[str, ...]:
    """``hs_attachment_ids``: the attached files' ids, separated by semicolons."""
    return tuple(part.strip() for part in (value or "").split(";") if part.strip())


def moment(value: str | None) -> datetime | None:
    """A HubSpot datetime value: ISO 8601 (what v3 answers) or epoch milliseconds."""
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    try:
        return _aware(datetime.fromisoformat(value.replace("Z", "+00:00")))
    except ValueError:
        return None


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class _Text(HTMLParser):
    """Text and line breaks of an HTML fragment. The standard library's parser is enough for
    this (no dependency): it tolerates broken markup and decodes entities (``convert_charrefs``);
    nothing is rendered, so nothing in the markup can run."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        starts_a_line = tag in BREAKS and self.parts and not self.parts[-1].endswith("\n")
        if tag == "br" or starts_a_line:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in BREAKS and tag != "br":
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data.replace("\r", ""))  # a body written as plain text keeps its newlines


def plain_text(body: str) -> str:
    """A task body as plain text: tags removed, line breaks kept, Offboard's marker line left out."""
    parser = _Text()
    parser.feed(body)
    parser.close()
    lines = [line.rstrip().replace("\xa0", " ") for line in "".join(parser.parts).split("\n")]
    kept = [line for line in lines if not records.MARKER.fullmatch(line.strip())]
    text = "\n".join(kept).strip()
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text
