"""What `offboard sandbox` prints: what the sandbox CRM holds, as a CSM would see it in a real CRM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

SANDBOX_OPERATIONS = [
    "create_tasks",
    "add_note",
    "update_properties",
    "send_invite",
    "record_answer",
    "create_referral",
    "fetch_deal",
    "deals_ending",
]
HIDDEN = "<hidden: --reveal-links shows it>"


def mask_link(link: str) -> str:
    """The link with its token hidden: the token alone lets its holder answer as the client."""
    base, _, _token = link.rpartition("/")
    return f"{base}/{HIDDEN}" if base else HIDDEN


def echo_invites(invites: Sequence[Any], *, reveal: bool) -> None:
    if not invites:
        click.echo("the sandbox CRM sent no invitations")
    for invite in invites:
        link = invite.link if reveal else mask_link(invite.link)
        click.echo(
            f"invite {invite.id}  deal {invite.deal_id}  contact {invite.contact_id}  {invite.kind}  "
            f"sent {invite.sent_at:%Y-%m-%d %H:%M} UTC\n    {link}"
        )


def echo_notes(notes: Sequence[Any]) -> None:
    if not notes:
        click.echo("the sandbox CRM holds no notes")
    for note in notes:
        about = f"  contact {note.contact_id}" if note.contact_id else ""
        click.echo(f"note {note.id}  deal {note.deal_id}{about}  {note.created_at:%Y-%m-%d %H:%M} UTC")
        for line in note.body.splitlines() or [""]:
            click.echo(f"    {line}")


def echo_answers(properties: Sequence[Any]) -> None:
    if not properties:
        click.echo("the sandbox CRM holds no survey answers")
    by_contact: dict[str, dict[str, Any]] = {}
    for prop in properties:
        by_contact.setdefault(prop.object_id, {})[prop.name] = prop
    for contact, values in by_contact.items():
        kind = _value(values, "offboard_last_survey_kind").upper()
        score = _value(values, "offboard_last_exit_score")
        category = _value(values, "offboard_exit_category")
        at = max(prop.updated_at for prop in values.values())
        click.echo(f"contact {contact}  {kind} {score} ({category})  {at:%Y-%m-%d %H:%M} UTC")


def _value(values: dict[str, Any], name: str) -> str:
    prop = values.get(name)
    return str(prop.value) if prop is not None else "-"


def echo_faults(faults: Sequence[Any]) -> None:
    if not faults:
        click.echo("no faults: the sandbox CRM answers normally")
    for fault in faults:
        message = f": {fault.message}" if fault.message else ""
        click.echo(f"{fault.operation}  {fault.kind}  {fault.remaining} more call(s){message}")
