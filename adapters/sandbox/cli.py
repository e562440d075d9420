"""``offboard sandbox``: what the sandbox CRM holds, as a CSM would see it in a real CRM, and its faults."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from adapters.sandbox.adapter import FAULT_KINDS, SandboxAdapter
from connector.cli_operator import TIMES
from connector.cli_services import Connections, for_command
from connector.clock import utcnow

SANDBOX_OPERATIONS = [
    "create_tasks",
    "add_note",
    "update_properties",
    "send_invite",
    "record_answer",
    "create_referral",
    "fetch_deal",
    "deals_ending",
    "read_tasks",
    "write_record",
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


@click.group()
def sandbox() -> None:
    """The built-in sandbox CRM."""


@sandbox.command("tasks")
@click.option("--deal", default=None, help="only this deal's tasks")
def sandbox_tasks(deal: str | None) -> None:
    """The tasks the sandbox CRM holds."""
    tasks = _sandbox_crm().tasks(deal)
    if not tasks:
        click.echo("the sandbox CRM holds no tasks")
    by_deal: dict[str, list[Any]] = {}
    for task in tasks:
        by_deal.setdefault(task.deal_id, []).append(task)
    for deal_id, items in by_deal.items():
        click.echo(f"deal {deal_id}:")
        _print_tasks(items)


def _sandbox_crm(connections: Connections | None = None) -> SandboxAdapter:
    crm = (connections or for_command()).adapters.get("sandbox")
    if not isinstance(crm, SandboxAdapter):
        raise click.ClickException("the sandbox CRM is turned off (OFFBOARD_SANDBOX)")
    return crm


@sandbox.command("fail")
@click.argument("operation", required=False, type=click.Choice(SANDBOX_OPERATIONS))
@click.option(
    "--kind",
    type=click.Choice(FAULT_KINDS),
    default="transient",
    show_default=True,
)
@click.option("--times", default=1, show_default=True, type=TIMES, help="0 clears OPERATION's faults")
@click.option("--list", "listing", is_flag=True, help="list the faults still to strike")
@click.option("--clear", is_flag=True, help="clear every fault still to strike")
def sandbox_fail(operation: str | None, kind: str, times: int, listing: bool, clear: bool) -> None:
    """Make the sandbox CRM fail the next TIMES calls of OPERATION (--times 0 clears them)."""
    if sum((operation is not None, listing, clear)) != 1:
        raise click.UsageError("give OPERATION, --list or --clear")
    crm = _sandbox_crm()
    if listing:
        echo_faults(crm.faults())
    elif clear:
        click.echo(f"cleared {crm.clear_faults()} fault(s); the sandbox CRM answers normally")
    elif times == 0:
        click.echo(f"cleared {crm.clear_faults(operation)} {operation} fault(s)")
    else:
        assert operation is not None  # one of the three was given
        crm.inject(operation, kind, times)
        click.echo(f"the next {times} {operation} call(s) will fail ({kind})")


@sandbox.command("faults")
def sandbox_faults() -> None:
    """The faults the sandbox CRM will still produce (`sandbox fail --clear` clears them)."""
    echo_faults(_sandbox_crm().faults())


@sandbox.command("invites")
@click.option("--deal", default=None, help="only this deal's invitations")
@click.option(
    "--reveal-links",
    is_flag=True,
    help="print links whole. They are credentials: whoever holds one answers as that client.",
)
def sandbox_invites(deal: str | None, reveal_links: bool) -> None:
    """The survey and referral invitations the sandbox CRM was asked to send (links masked)."""
    echo_invites(_sandbox_crm().invites(deal), reveal=reveal_links)


@sandbox.command("notes")
@click.option("--deal", default=None, help="only this deal's notes")
def sandbox_notes(deal: str | None) -> None:
    """The notes the sandbox CRM holds (answers, referrals, the offboarding record)."""
    echo_notes(_sandbox_crm().notes(deal))


@sandbox.command("answers")
def sandbox_answers() -> None:
    """The survey answers the sandbox CRM holds on its contacts."""
    echo_answers(_sandbox_crm().answers())


@sandbox.command("seed")
def sandbox_seed() -> None:
    """Add sample deals whose contracts end in the coming weeks (see them with `offboard sweep`)."""
    connections = for_command()
    keeper = _sandbox_crm(connections)
    today = utcnow().astimezone(connections.settings.zone).date()
    for deal in keeper.seed(today):
        click.echo(f"deal {deal.id}  {deal.name}  ({deal.contract_type}, contract ends {deal.contract_end})")
    click.echo(
        "`offboard sweep` starts their contract-end runs; "
        "`offboard plan --crm sandbox --deal ID --trigger contract_end` shows one's timeline"
    )


@sandbox.group("task")
def sandbox_task() -> None:
    """Do what a CSM does to a task in the CRM: complete it, re-open it, add its evidence.

    The next tracking pass (OFFBOARD_TRACK_INTERVAL_SECONDS) reads the change back.
    """


@sandbox_task.command("complete")
@click.argument("task_id")
@click.option("--by", default=None, help="the CRM user who completed it")
@click.option("--evidence", default=None, help="add an 'Evidence:' line saying what was done")
def sandbox_task_complete(task_id: str, by: str | None, evidence: str | None) -> None:
    """Mark a task completed."""
    _change(lambda crm: crm.complete_task(task_id, by=by, evidence=evidence))
    click.echo(f"task {task_id} completed" + (" with evidence" if evidence else ""))


@sandbox_task.command("reopen")
@click.argument("task_id")
def sandbox_task_reopen(task_id: str) -> None:
    """Mark a completed task open again."""
    _change(lambda crm: crm.reopen_task(task_id))
    click.echo(f"task {task_id} is open again")


@sandbox_task.command("delete")
@click.argument("task_id")
def sandbox_task_delete(task_id: str) -> None:
    """Delete a task (it no longer counts once a tracking pass reads every task: daily)."""
    _change(lambda crm: crm.delete_task(task_id))
    click.echo(f"task {task_id} deleted")


@sandbox_task.command("evidence")
@click.argument("task_id")
@click.option("--text", default=None, help="what was done (an 'Evidence:' line on the task)")
@click.option("--file", "file_name", default=None, help="the name of a file attached to the task")
def sandbox_task_evidence(task_id: str, text: str | None, file_name: str | None) -> None:
    """Add evidence to a task: a line of text, or an attached file."""
    if not text and not file_name:
        raise click.UsageError("give --text or --file")
    _change(lambda crm: crm.add_evidence(task_id, text=text, file=file_name))
    click.echo(f"evidence added to task {task_id}")


@sandbox.command("files")
@click.option("--deal", default=None, help="only this deal's files")
def sandbox_files(deal: str | None) -> None:
    """The files on deals (the offboarding records)."""
    files = _sandbox_crm().files(deal)
    if not files:
        click.echo("the sandbox CRM holds no files")
    for item in files:
        click.echo(
            f"deal {item.deal_id}: {item.filename} "
            f"({len(item.content)} characters, {item.created_at:%Y-%m-%d})"
        )


def _change(what: Any) -> None:
    try:
        what(_sandbox_crm())
    except LookupError as exc:
        raise click.ClickException(str(exc)) from None


def _print_tasks(tasks: list[Any]) -> None:
    for task in tasks:
        click.echo(
            f"  {task.due_at:%a %d %b %Y}  [{task.priority:<6}] {task.subject}  "
            f"(task {task.id}, owner {task.owner_id or '-'}, {task.type}, {task.status})"
        )
