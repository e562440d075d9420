"""Flow HTTP callouts: a documented JSON body and a shared-secret header.

For orgs that use a Flow's HTTP Callout action instead of an outbound message.
The Flow sends ``POST /webhooks/salesforce/flow`` with the header
``X-Offboard-Secret: <SALESFORCE_WEBHOOK_SECRET>`` (an External Credential's
custom header) and the body::

    {"recordId": "006…",                       required: the Opportunity's id
     "fields": {"StageName": "Closed Won",      the fields the Flow has at hand
                "IsClosed": true, "IsWon": true,
                "LastModifiedDate": "2026-11-20T15:00:00.000Z"},
     "eventId": "…"}                            a delivery id for deduplication

A Flow on Task tells Offboard that a checklist task was completed or re-opened: the same
body with ``"event": "task.completed"`` or ``"task.reopened"`` and the Task's id as
``recordId`` (``00T…``); without ``event`` a callout is about an Opportunity, as before.
Task events are stored under their event name as kind (a dot never appears in an sObject
name, so they cannot meet an outbound message's kind).

Each callout needs ``eventId`` or, in ``fields``, the change's time
(``LastModifiedDate`` or ``SystemModstamp``): a delivery is recognised by its
``eventId``, else by a hash of its content, time included. Without a time a
close, a re-open and a second close with the same fields would hash alike and
the second close would be taken for a redelivery, so such a callout is refused
(400). The fields are never trusted for state: the adapter reads the
Opportunity from the org.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from connector.errors import PayloadInvalid, SignatureInvalid
from connector.generic import load_json

SECRET_HEADER = "X-Offboard-Secret"
# Fields that hold the time of the change: either makes two identical-looking changes differ.
CHANGE_TIME_FIELDS = ("LastModifiedDate", "SystemModstamp")
Scalar = str | int | float | bool | None
TASK_EVENTS = ("task.completed", "task.reopened")
TASK_PREFIX = "00T"  # the key prefix of Task ids


class FlowCallout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    recordId: str = Field(pattern=r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")
    fields: dict[str, Scalar] = Field(default_factory=dict, max_length=500)
    eventId: str | None = Field(default=None, min_length=1, max_length=200)
    event: Literal["task.completed", "task.reopened"] | None = None

    @property
    def kind(self) -> str:
        """How the event is stored: ``opportunity``, or the task event's name."""
        return self.event or "opportunity"

    @property
    def payload(self) -> dict[str, Any]:
        """Stored like an outbound notification's fields, so one ``interpret`` reads both; a task
        event keeps its name, so two events about one Task at one time never hash alike."""
        extra = {"event": self.event} if self.event else {}
        return {**self.fields, "Id": self.recordId, **extra}

    @property
    def event_key(self) -> str:
        if self.eventId:
            return f"flow:{self.eventId}"
        canonical = json.dumps(self.payload, sort_keys=True, separators=(",", ":"))
        return "flow:" + hashlib.sha256(canonical.encode()).hexdigest()[:40]


def verify(secret: str, given: str | None) -> None:
    """SignatureInvalid unless the header holds the shared secret (compared in constant time)."""
    if not given:
        raise SignatureInvalid(f"missing {SECRET_HEADER} header")
    if not hmac.compare_digest(given.encode(), secret.encode()):
        raise SignatureInvalid(f"{SECRET_HEADER} does not match SALESFORCE_WEBHOOK_SECRET")


def parse(body: bytes) -> FlowCallout:
    data = load_json(body)  # standard, storable JSON only
    if not isinstance(data, dict):
        raise PayloadInvalid('body must be a JSON object: {"recordId": "006…", "fields": {…}}')
    try:
        callout = FlowCallout.model_validate(data)
    except ValidationError as exc:
        details = [
            {"field": ".".join(str(p) for p in error["loc"]) or "(body)", "problem": error["msg"]}
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise PayloadInvalid("body does not follow the Flow callout schema", details=details) from None
    if callout.eventId is None and not any(callout.fields.get(name) for name in CHANGE_TIME_FIELDS):
        problem = "required unless fields carry the change's time (LastModifiedDate or SystemModstamp)"
        raise PayloadInvalid(f"eventId is {problem}", details=[{"field": "eventId", "problem": problem}])
    if callout.event and not callout.recordId.startswith(TASK_PREFIX):
        problem = f"a {callout.event} event needs the Task's id (00T…)"
        raise PayloadInvalid(f"recordId: {problem}", details=[{"field": "recordId", "problem": problem}])
    return callout
