"""The custom properties Offboard writes, and creating them once (``offboard hubspot setup``).

HubSpot has no API to send its NPS/CSAT/CES surveys, so a survey send sets contact
properties and a HubSpot workflow (which the admin builds once) emails the link.
``offboard_survey_ref`` changes once per send, never on a retry: it is the workflow's
re-enrollment trigger, so a retried send cannot email the contact twice.

The deal's checklist progress (``offboard_status``, ``offboard_progress``, ``offboard_next_due``,
``offboard_playbook``) is written as deal properties that reports, views and workflows can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from adapters.hubspot.api import HubSpotApi

SURVEY_KIND = "offboard_survey_kind"
SURVEY_LINK = "offboard_survey_link"
SURVEY_SENT_AT = "offboard_survey_sent_at"
SURVEY_REF = "offboard_survey_ref"
LAST_SURVEY_KIND = "offboard_last_survey_kind"
LAST_EXIT_SCORE = "offboard_last_exit_score"
EXIT_CATEGORY = "offboard_exit_category"
REFERRED_BY = "offboard_referred_by"
OFFBOARDING_STATUS = "offboarding_status"
OFFBOARD_STATUS = "offboard_status"
OFFBOARD_PROGRESS = "offboard_progress"
OFFBOARD_NEXT_DUE = "offboard_next_due"
OFFBOARD_PLAYBOOK = "offboard_playbook"

SURVEY_KINDS = ("nps", "csat", "ces", "referral")
CATEGORIES = ("promoter", "passive", "detractor")
CHECKLIST_STATES = ("not_started", "in_progress", "overdue", "needs_evidence", "complete", "cancelled")


def _options(values: tuple[str, ...]) -> list[dict[str, Any]]:
    return [
        {"label": v.upper() if len(v) <= 4 else v.title(), "value": v, "display_order": n}
        for n, v in enumerate(values)
    ]


def _labelled(values: tuple[str, ...]) -> list[dict[str, Any]]:
    """Options labelled as a CSM reads them: ``needs_evidence`` → "Needs evidence"."""
    return [
        {"label": v.replace("_", " ").capitalize(), "value": v, "display_order": n}
        for n, v in enumerate(values)
    ]


PROGRESS: list[tuple[str, dict[str, Any]]] = [
    (
        "deals",
        {
            "name": OFFBOARD_STATUS,
            "label": "Offboard status",
            "description": "Where the deal's offboarding checklist stands (Offboard keeps it current).",
            "type": "enumeration",
            "field_type": "select",
            "group_name": "dealinformation",
            "options": _labelled(CHECKLIST_STATES),
        },
    ),
    (
        "deals",
        {
            "name": OFFBOARD_PROGRESS,
            "label": "Offboard progress",
            "description": 'Checklist tasks done out of all, e.g. "3/12" (set by Offboard).',
            "type": "string",
            "field_type": "text",
            "group_name": "dealinformation",
        },
    ),
    (
        "deals",
        {
            "name": OFFBOARD_NEXT_DUE,
            "label": "Offboard next due",
            "description": "When the next open checklist task is due (set by Offboard).",
            "type": "date",
            "field_type": "date",
            "group_name": "dealinformation",
        },
    ),
    (
        "deals",
        {
            "name": OFFBOARD_PLAYBOOK,
            "label": "Offboard playbook",
            "description": "The playbook the offboarding runs, as id@version (set by Offboard).",
            "type": "string",
            "field_type": "text",
            "group_name": "dealinformation",
        },
    ),
]

PROPERTIES: list[tuple[str, dict[str, Any]]] = [
    *PROGRESS,
    (
        "deals",
        {
            "name": OFFBOARDING_STATUS,
            "label": "Offboarding status",
            "description": "Where Offboard's offboarding of this deal stands (set by its playbooks).",
            "type": "string",
            "field_type": "text",
            "group_name": "dealinformation",
        },
    ),
    (
        "contacts",
        {
            "name": SURVEY_KIND,
            "label": "Offboard survey kind",
            "description": "What Offboard last asked this contact for: nps, csat, ces or referral.",
            "type": "enumeration",
            "field_type": "select",
            "group_name": "contactinformation",
            "options": _options(SURVEY_KINDS),
        },
    ),
    (
        "contacts",
        {
            "name": SURVEY_LINK,
            "label": "Offboard survey link",
            "description": "The contact's personal survey or referral link; the workflow emails it.",
            "type": "string",
            "field_type": "text",
            "group_name": "contactinformation",
        },
    ),
    (
        "contacts",
        {
            "name": SURVEY_SENT_AT,
            "label": "Offboard survey sent at",
            "description": "When Offboard asked the workflow to send the link.",
            "type": "datetime",
            "field_type": "date",
            "group_name": "contactinformation",
        },
    ),
    (
        "contacts",
        {
            "name": SURVEY_REF,
            "label": "Offboard survey reference",
            "description": "Changes once per send (never on a retry): the workflow's re-enrollment trigger.",
            "type": "string",
            "field_type": "text",
            "group_name": "contactinformation",
        },
    ),
    (
        "contacts",
        {
            "name": LAST_SURVEY_KIND,
            "label": "Offboard last survey answered",
            "description": "Which Offboard survey the contact answered last: nps, csat or ces.",
            "type": "enumeration",
            "field_type": "select",
            "group_name": "contactinformation",
            "options": _options(SURVEY_KINDS[:3]),
        },
    ),
    (
        "contacts",
        {
            "name": LAST_EXIT_SCORE,
            "label": "Offboard exit score",
            "description": "The contact's score in the Offboard survey they answered last.",
            "type": "number",
            "field_type": "number",
            "group_name": "contactinformation",
        },
    ),
    (
        "contacts",
        {
            "name": EXIT_CATEGORY,
            "label": "Offboard exit category",
            "description": "promoter, passive or detractor, from the contact's last exit score.",
            "type": "enumeration",
            "field_type": "select",
            "group_name": "contactinformation",
            "options": _options(CATEGORIES),
        },
    ),
    (
        "contacts",
        {
            "name": REFERRED_BY,
            "label": "Referred by (Offboard)",
            "description": "The client who introduced this contact on Offboard's referral page.",
            "type": "string",
            "field_type": "text",
            "group_name": "contactinformation",
        },
    ),
]


@dataclass(frozen=True)
class Outcome:
    object_type: str
    name: str
    state: str  # created | exists | differs
    note: str = ""


def ensure_properties(api: HubSpotApi) -> list[Outcome]:
    """Create each missing property; leave existing ones alone (safe to run again)."""
    return [_ensure(api, object_type, definition) for object_type, definition in PROPERTIES]


def _ensure(api: HubSpotApi, object_type: str, definition: dict[str, Any]) -> Outcome:
    name = definition["name"]
    existing = api.get_property(object_type, name)
    if existing is None:
        api.create_property(object_type, definition)
        return Outcome(object_type, name, "created")
    if existing.type != definition["type"]:
        note = f"it is a {existing.type} property; Offboard writes {definition['type']} values"
        return Outcome(object_type, name, "differs", note)
    return Outcome(object_type, name, "exists")


def check_deal_property(api: HubSpotApi, name: str) -> bool:
    """Whether the deal property a setting names (contract type/end) exists."""
    return api.get_property("deals", name) is not None


def workflow_instructions(public_url: str) -> str:
    return f"""\
Now, in HubSpot, build the workflow that emails Offboard's survey and referral links
(HubSpot has no API to send its own surveys):
  1. Automation > Workflows > Create workflow > From scratch > Contact-based.
  2. Enrollment trigger: "Offboard survey reference" is known.
     Re-enrollment: on, when "Offboard survey reference" changes (once per send, never on a retry).
  3. Action: Send email. In the email, link a button to the personalization token
     "Offboard survey link". Branch on "Offboard survey kind" (nps, csat, ces, referral)
     for a different email per kind if you like.
  4. Review, and turn the workflow on.
Then, in your app's Webhooks settings, set the target URL to {public_url}/webhooks/hubspot
and subscribe to deal.propertyChange for the dealstage property, and to the tasks'
hs_task_status changes (object.propertyChange, object type 0-27), so a completed task
releases the steps that wait on it within seconds."""
