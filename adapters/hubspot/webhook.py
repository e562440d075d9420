"""HubSpot webhook bodies: a JSON array of up to 100 events, each kept as HubSpot sent it.

The web layer stores every event (keyed by portal and ``eventId``) and answers at once; the
worker later asks ``stage_change`` whether an event is a deal moving stage, and ``task_change``
whether it is a checklist task's status changing (the app's generic ``object.propertyChange``
subscription for tasks, objectTypeId ``0-27``, property ``hs_task_status``). Other events are
stored and then ignored: HubSpot retries anything that is not a 2xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from connector.errors import PayloadInvalid
from connector.generic import load_json
from connector.models import TaskChange

MAX_EVENTS = 100
DEAL_OBJECT_TYPE = "0-3"  # objectTypeId of deals in the generic object.* subscriptions
TASK_OBJECT_TYPE = "0-27"  # objectTypeId of tasks (CRM-FACTS.md, "Webhooks for tasks")
TASK_STATUS = "hs_task_status"
COMPLETED = "COMPLETED"  # the other statuses (NOT_STARTED, IN_PROGRESS, WAITING, DEFERRED) are open


@dataclass(frozen=True)
class WebhookEvent:
    account: str  # the portal id
    event_key: str  # HubSpot's eventId
    kind: str  # subscriptionType (or eventType)
    payload: dict[str, Any]


@dataclass(frozen=True)
class StageChange:
    portal_id: str
    deal_id: str
    stage_id: str
    occurred_at: datetime | None


def parse(body: bytes) -> list[WebhookEvent]:
    """The batch's events, or PayloadInvalid (400) naming every problem."""
    data = load_json(body)  # standard, storable JSON only
    if not isinstance(data, list):
        raise PayloadInvalid("body must be a JSON array of HubSpot webhook events")
    if len(data) > MAX_EVENTS:
        raise PayloadInvalid(f"a batch holds at most {MAX_EVENTS} events, this one {len(data)}")
    problems = [problem for index, item in enumerate(data) for problem in _problems(index, item)]
    if problems:
        raise PayloadInvalid("body does not follow HubSpot's webhook event schema", details=problems)
    return [_event(item) for item in data]


def _problems(index: int, item: Any) -> list[dict[str, str]]:
    if not isinstance(item, dict):
        return [{"field": f"[{index}]", "problem": "must be an object"}]
    problems = []
    for name in ("eventId", "portalId"):
        if not _is_id(item.get(name)):
            problems.append(
                {"field": f"[{index}].{name}", "problem": "must be a number or a non-empty string"}
            )
    kind = _kind(item)
    if not isinstance(kind, str) or not 0 < len(kind) <= 64:
        problems.append({"field": f"[{index}].subscriptionType", "problem": "must be a string (1-64 chars)"})
    return problems


def _is_id(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and 0 < len(value) <= 64)


def _kind(item: dict[str, Any]) -> Any:
    # The docs name it subscriptionType; some pages say eventType.
    return item.get("subscriptionType", item.get("eventType"))


def _event(item: dict[str, Any]) -> WebhookEvent:
    return WebhookEvent(str(item["portalId"]), str(item["eventId"]), str(_kind(item)), item)


def stage_change(kind: str, payload: dict[str, Any]) -> StageChange | None:
    """The deal and its new stage id when the event is a deal's ``dealstage`` changing, else None."""
    if payload.get("propertyName") != "dealstage" or not payload.get("propertyValue"):
        return None
    is_deal = kind == "deal.propertyChange" or (
        kind == "object.propertyChange" and payload.get("objectTypeId") == DEAL_OBJECT_TYPE
    )
    if not is_deal or not _is_id(payload.get("objectId")):
        return None
    return StageChange(
        portal_id=str(payload.get("portalId")),
        deal_id=str(payload["objectId"]),
        stage_id=str(payload["propertyValue"]),
        occurred_at=_millis(payload.get("occurredAt")),
    )


def task_change(kind: str, payload: dict[str, Any]) -> TaskChange | None:
    """A task's new status when the event is a task's ``hs_task_status`` changing, else None.

    The event carries the new value (``propertyValue``), so no read is needed to know whether the
    task is now completed or open again (re-opened, or set back to in progress / waiting).
    """
    if kind != "object.propertyChange" or str(payload.get("objectTypeId")) != TASK_OBJECT_TYPE:
        return None
    status = payload.get("propertyValue")
    if payload.get("propertyName") != TASK_STATUS or not isinstance(status, str) or not status:
        return None
    if not _is_id(payload.get("objectId")):
        return None
    return TaskChange(
        task_id=str(payload["objectId"]),
        completed=status == COMPLETED,
        occurred_at=_millis(payload.get("occurredAt")),
    )


def _millis(value: Any) -> datetime | None:
    """``occurredAt`` as a time; None when it is missing or no possible time (a hostile value)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None
