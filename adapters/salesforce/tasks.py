"""Task records for the sObject Collections API, and the markers that keep retries from duplicating.

A retried write after an unknown outcome passes the same idempotency key. Each
Task carries a marker derived from it: in an external-id field when the org has
one (SALESFORCE_TASK_MARKER_FIELD: the write becomes an upsert, which cannot
duplicate), otherwise as the last line of its Description. When an attempt's
outcome is unknown (``adapters.salesforce.attempts``; never before a first write),
the markers are looked for among the Tasks where they were written, before the
missing ones are created: on the Opportunity (WhatId), or on the Lead (WhoId) for
a Task about a Lead, which has no WhatId (one SOQL ``IN`` query for the unsure
actions of a batch, then one collections call per 200 missing Tasks).

The upsert re-applies Offboard's own values to Tasks that already exist; that
only happens on a retry, seconds to minutes after the first write.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any
from zoneinfo import ZoneInfo

from adapters.salesforce import ids
from adapters.salesforce.picklists import TaskPicklists
from connector.models import TaskSpec

SUBJECT_MAX = 255
DESCRIPTION_MAX = 32000
_MARKER_LINE = re.compile(r"Offboard ref ([0-9a-f]{32}:[a-z0-9]+)\s*$")


def marker(key: str, suffix: int | str) -> str:
    """Short enough for a 40-character external-id field, unique per action and position."""
    return f"{key[:32]}:{suffix}"


def marker_in(description: str | None) -> str | None:
    found = _MARKER_LINE.search(description or "")
    return found.group(1) if found else None


def description(body: str, mark: str | None) -> str:
    if mark is None:
        return body[:DESCRIPTION_MAX]
    line = f"Offboard ref {mark}"
    room = DESCRIPTION_MAX - len(line) - 2
    return f"{body[:room]}\n\n{line}" if body else line


def record(
    spec: TaskSpec,
    picklists: TaskPicklists,
    zone: ZoneInfo,
    *,
    mark: str,
    marker_field: str | None,
) -> dict[str, Any]:
    """One Task on the Opportunity, for its primary contact and owner, due on the local date."""
    fields: dict[str, Any] = {
        "attributes": {"type": "Task"},
        "Subject": spec.title[:SUBJECT_MAX],
        "Description": description(spec.body, None if marker_field else mark),
        "ActivityDate": spec.due_at.astimezone(zone).date().isoformat(),
        "Status": picklists.default_status,
        "Priority": picklists.priority(spec.priority),
        # A Task about a Lead (a referral's follow-up) cannot also be related to the Opportunity.
        "WhatId": None if ids.is_lead(spec.contact_id) else spec.deal_id,
        "WhoId": spec.contact_id,
        "OwnerId": spec.owner_id,
        "Type": picklists.task_type(spec.type),
    }
    if marker_field:
        fields[marker_field] = mark
    return {k: v for k, v in fields.items() if v is not None}


def found_on(spec: TaskSpec) -> tuple[str, str]:
    """Where ``record`` puts the Task, as (relation field, record id): where a retry looks for it."""
    if ids.is_lead(spec.contact_id):
        return "WhoId", str(spec.contact_id)
    return "WhatId", spec.deal_id


def logged(
    *,
    subject: str,
    body: str,
    on: date,
    deal_id: str,
    contact_id: str,
    picklists: TaskPicklists,
    mark: str,
    marker_field: str | None,
) -> dict[str, Any]:
    """A completed Task on the contact: the activity history's record of something done."""
    fields: dict[str, Any] = {
        "attributes": {"type": "Task"},
        "Subject": subject[:SUBJECT_MAX],
        "Description": description(body, None if marker_field else mark),
        "ActivityDate": on.isoformat(),
        "Status": picklists.done_status,
        "Priority": picklists.priority("normal"),
        "WhatId": deal_id,
        "WhoId": contact_id,
        "Type": picklists.task_type("email"),
    }
    if marker_field:
        fields[marker_field] = mark
    return {k: v for k, v in fields.items() if v is not None}
