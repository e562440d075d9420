"""The ``offboard`` command."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from connector.cli_operator import ID, LIMIT, failed_lines, run_lines, stream_json, timeline_lines
from connector.clock import utcnow
from connector.errors import PlaybookError, SettingsInvalid
from connector.settings import Settings, load_settings, log_startup_warnings, production_problems


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsInvalid as exc:
        raise click.ClickException(str(exc)) from None


def _logging(settings: Settings, *, background: bool = False) -> None:
    """A long-running command's logs and counters: set up once, before any work."""
    from connector import metrics
    from connector.logs import configure_logging

    # Text or JSON lines on stderr, link tokens and keys redacted; the web server writes them from
    # a thread of its own (every request logs a line).
    configure_logging(settings, background=background)
    metrics.record_into(settings.database_url)  # CRM calls, 429s, webhook answers: for /metrics


def _services(settings: Settings, *, migrate: bool = True, playbooks: str = "none") -> Any:
    """What a command works with, migrating the database first.

    ``playbooks``: "none" gives the store and the CRMs only, so commands that never run a
    playbook work with a broken file present; "lenient" adds the playbooks that load and names
    the files that do not (worker, sweep, demo); "strict" refuses to go on while one is broken.
    """
    from connector.cli_services import connect, with_playbooks
    from connector.services import build
    from connector.store.db import engine_for
    from connector.store.migrate import upgrade

    if migrate:
        engine = engine_for(settings.database_url)
        upgrade(engine)
        engine.dispose()
    try:
        if playbooks == "strict":
            return build(settings)
        connections = connect(settings)
        if playbooks == "none":
            return connections
        registry = _lenient_registry(settings)
    except PlaybookError as exc:
        raise click.ClickException(f"the playbooks do not load:\n{exc}") from None
    except SettingsInvalid as exc:  # an adapter found its settings incomplete
        raise click.ClickException(str(exc)) from None
    _report_broken_playbooks(registry)
    return with_playbooks(connections, registry)


def _lenient_registry(settings: Settings) -> Any:
    """The playbooks that load; the broken files are reported by ``_report_broken_playbooks``."""
    import logging

    from connector.playbooks.registry import PlaybookRegistry

    # The registry logs the same problems as an error meant for a server's log; here the
    # command says them once, in its own words, on stderr.
    registry_log = logging.getLogger("offboard.playbooks")
    was_disabled = registry_log.disabled
    registry_log.disabled = True
    try:
        registry = PlaybookRegistry(settings.playbooks, strict=False)
    finally:
        registry_log.disabled = was_disabled
    if not registry.current():
        raise PlaybookError(registry.problems)
    return registry


def _report_broken_playbooks(registry: Any) -> None:
    if not registry.problems:
        return
    files = ", ".join(registry.unloaded) or "some playbook files"
    click.echo(
        f"warning: {files}: not loaded. Until every playbook file loads, no run starts (a deal "
        "the missing playbook is for would get another one, for good): deal events wait, and "
        "the actions of runs already started are still written. Fix these (`offboard validate` "
        "checks them):",
        err=True,
    )
    for line in registry.problems:
        click.echo(f"  {line}", err=True)


@click.group()
@click.version_option(package_name="offboard")
def main() -> None:
    """Offboard: client-offboarding playbooks written into your CRM."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="web processes (use 1 with SQLite)")
@click.option("--no-worker", is_flag=True, help="serve webhooks only; run `offboard worker` elsewhere")
def serve(host: str, port: int, workers: int, no_worker: bool) -> None:
    """Migrate the database, then serve webhooks (and run the worker)."""
    from connector.serve import serve as run_server

    settings = _settings()
    unsafe = production_problems(settings, web_processes=workers)
    if unsafe:  # before migrating or binding anything
        lines = "\n  ".join(unsafe)
        raise click.ClickException(f"OFFBOARD_ENV=production refuses what is unsafe:\n  {lines}")
    _logging(settings, background=True)
    log_startup_warnings(settings)
    _services(settings, playbooks="strict").close()  # migrates; refuses to start on a broken playbook
    click.echo(f"offboard serving on http://{host}:{port} ({_describe_db(settings)})", err=True)
    run_server(settings, host=host, port=port, workers=workers, with_worker=not no_worker)


@main.command()
@click.option("--once", is_flag=True, help="process what is due now, then exit")
def worker(once: bool) -> None:
    """Run the worker: events into runs, due actions into the CRM."""
    settings = _settings()
    _logging(settings)
    log_startup_warnings(settings)
    services = _services(settings, playbooks="lenient")
    runner = services.worker()
    if once:
        click.echo(f"handled {runner.run_until_idle()} item(s)")
        _report_waiting_events(services.store)
        return
    import signal

    # The loop runs in a thread, the main thread only waits for it: a signal handler runs in
    # the main thread, and setting an Event there while that same thread waits on it (as the
    # loop does between polls) can deadlock on the Event's own lock.
    stop = threading.Event()
    failed: list[BaseException] = []

    def _run() -> None:
        try:
            runner.run_forever(stop)
        except BaseException as exc:
            failed.append(exc)
            raise

    def _stop(signum: int, _frame: Any) -> None:
        if stop.is_set():  # asked twice: leave now
            raise SystemExit(128 + signum)
        click.echo(
            "offboard worker stopping: finishing the action in hand, putting back the rest "
            "(send the signal again to leave at once)",
            err=True,
        )
        stop.set()

    # SIGTERM (a deployment stopping it) and Ctrl-C alike: stop claiming, finish the row in
    # hand, put back what was claimed and not started, then exit 0.
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    loop = threading.Thread(target=_run, name="offboard-worker", daemon=True)
    loop.start()
    try:
        while loop.is_alive():
            loop.join(timeout=1.0)
    except SystemExit:
        # Leaving at once: put back what was claimed and not started; the row in hand stays
        # leased and comes back when its lease runs out (the CRM shows by then what it wrote).
        runner.release()
        raise
    finally:
        services.close()
    if failed:
        raise click.ClickException(f"the worker stopped on an error: {failed[0]}")


def _report_waiting_events(store: Any) -> None:
    """Say on stderr how many events wait for a playbook file, and why (their outcome)."""
    from sqlalchemy import func, select

    from connector.store import Event
    from connector.usecases.offboarding import WAITING

    with store.read() as session:
        waiting = session.execute(
            select(Event.outcome, func.count())
            .where(Event.state == "pending", Event.outcome.startswith(WAITING))
            .group_by(Event.outcome)
        ).all()
    for outcome, count in waiting:
        click.echo(f"{count} event(s) {outcome}", err=True)


@main.group()
def db() -> None:
    """The database."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply every migration (safe to run again)."""
    from connector.store.db import engine_for
    from connector.store.migrate import current, upgrade

    settings = _settings()
    engine = engine_for(settings.database_url)
    upgrade(engine)
    click.echo(f"database at revision {current(engine)} ({_describe_db(settings)})")
    engine.dispose()


@main.command()
@click.argument("run_id", metavar="[RUN]", required=False, type=ID)
@click.option(
    "--state",
    type=click.Choice(["active", "done", "cancelled", "failed"]),
    default=None,
    help="only runs in this state (failed: runs with a failed action)",
)
@click.option("--limit", default=50, show_default=True, type=LIMIT, help="at most this many runs")
@click.option("--before", default=None, type=ID, help="runs older than this run id (the next page)")
@click.option(
    "--reveal-links",
    is_flag=True,
    help="with RUN: print survey and referral links whole. They are credentials: whoever holds "
    "one answers as that client. Masked by default.",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def runs(
    run_id: int | None, state: str | None, limit: int, before: int | None, reveal_links: bool, fmt: str
) -> None:
    """Runs, newest first: what each writes next and what is stuck.

    With RUN, that run's whole timeline: every action with its state, due and done
    times, the CRM ids it wrote, the link it sent (masked unless --reveal-links) and
    its last error.
    """
    from connector.reports import run_pages

    settings = _settings()
    store = _services(settings).store
    if run_id is not None:
        _run_timeline(settings, store, run_id, reveal_links=reveal_links, fmt=fmt)
        return
    pages = run_pages(store, state=state, limit=limit, before=before)
    if fmt == "json":
        stream_json(pages)
        return
    shown, last = 0, 0
    for report in pages:
        shown, last = shown + 1, report["id"]
        for line in run_lines(report):
            click.echo(line)
    if not shown:
        click.echo("no runs" + (f" {state}" if state else " yet"))
    elif shown == limit:
        click.echo(f"({limit} shown: `--before {last}` shows older ones; `runs RUN` shows one in full)")


def _run_timeline(settings: Settings, store: Any, run_id: int, *, reveal_links: bool, fmt: str) -> None:
    from connector.reports import run_timeline, sent_links

    secret = settings.secret_key.get_secret_value()
    timeline = run_timeline(store, run_id, sent_links(settings.public_url, secret, reveal=reveal_links))
    if timeline is None:
        raise click.ClickException(f"no run {run_id}")
    if fmt == "json":
        click.echo(json.dumps(timeline, indent=2, default=str))
        return
    for line in timeline_lines(timeline):
        click.echo(line)


@main.command()
@click.option("--limit", default=100, show_default=True, type=LIMIT, help="at most this many actions")
@click.option("--after", default=None, type=ID, help="actions after this action id (the next page)")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def failed(limit: int, after: int | None, fmt: str) -> None:
    """Actions parked as failed, with their errors: fix the cause, then `offboard retry`."""
    from connector.usecases.operator import failed_count, failed_pages

    store = _services(_settings()).store
    rows = failed_pages(store, limit=limit, after=after or 0)
    if fmt == "json":
        stream_json(rows)
        return
    shown, last = 0, 0
    for row in rows:
        shown, last = shown + 1, row["id"]
        click.echo(failed_lines(row))
    if not shown:
        click.echo("no failed actions" + (f" after action {after}" if after else ""))
    elif shown == limit:
        total = failed_count(store)
        click.echo(f"({shown} of {total} failed action(s) shown: `--after {last}` shows the next ones)")


@main.command()
@click.argument("ids", nargs=-1, type=ID)
@click.option("--all", "every", is_flag=True, help="retry every failed action")
def retry(ids: tuple[int, ...], every: bool) -> None:
    """Put failed actions back in the queue (IDS from `offboard failed`, or --all).

    Written a few hundred at a time, so webhooks and workers go on meanwhile.
    """
    from connector.usecases.operator import retry as retry_actions

    if bool(ids) == every:
        raise click.UsageError("give action IDS or --all")
    store = _services(_settings()).store
    done = retry_actions(store, None if every else list(ids), actor="cli", now=utcnow())
    missing = sorted(set(ids) - set(done))
    listed = f": {', '.join(map(str, done))}" if done and len(done) <= 20 else ""
    click.echo(f"{len(done)} action(s) back in the queue{listed}")
    if missing:
        raise click.ClickException(f"not failed (or no such action): {', '.join(map(str, missing))}")


@main.command()
@click.argument("run_id", type=ID)
@click.option("--reason", default="cancelled by an operator", show_default=True)
def cancel(run_id: int, reason: str) -> None:
    """Cancel a run: its pending actions will not be written.

    Tasks it already wrote stay open in the CRM (no CRM here closes tasks for us):
    the output says how many, to close there if they no longer apply.
    """
    from connector.usecases.operator import cancel as cancel_run

    done = cancel_run(_services(_settings()).store, run_id, actor="cli", now=utcnow(), reason=reason)
    if done is None:
        raise click.ClickException(f"no run {run_id}")
    if done.already:
        by = f" by {done.actor}" if done.actor else ""
        click.echo(f"run {run_id} was already cancelled on {done.at:%Y-%m-%d %H:%M} UTC{by}: {done.reason}")
    else:
        click.echo(f"run {run_id} cancelled; {done.actions_cancelled} pending action(s) will not be written")
    if done.tasks_written:
        click.echo(
            f"{done.tasks_written} task(s) already written stay open in the CRM; "
            "close them there if they no longer apply"
        )


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
def validate(paths: tuple[Path, ...]) -> None:
    """Check playbooks; exit 1 with one line per problem, naming file and field."""
    from connector.playbooks.loader import load_all
    from connector.playbooks.pins import check_against_database

    settings = _settings()
    targets = list(paths) or [settings.playbooks]
    try:
        loaded = load_all(targets)
    except PlaybookError as exc:
        for line in exc.problems:
            click.echo(line)
        sys.exit(1)
    problems, note = check_against_database(settings.database_url, loaded)
    for line in problems:
        click.echo(line)
    if note:
        click.echo(note, err=True)
    if problems:
        sys.exit(1)
    from connector.playbooks.roles import unmapped_roles

    for line in unmapped_roles(loaded, settings.roles, fallback_owner=settings.fallback_owner):
        click.echo(line)  # a warning: the playbook is valid, the exit status stays 0
    for item in loaded:
        click.echo(f"ok  {item.path}  {item.id} v{item.playbook.version}  ({len(item.playbook.steps)} steps)")


@main.command()
@click.argument("event_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--crm", default=None, help="fetch the deal from this CRM (with --deal)")
@click.option("--deal", "deal_id", default=None, help="the deal's id in that CRM")
@click.option(
    "--trigger", type=click.Choice(["deal_closed", "contract_end"]), default="deal_closed", show_default=True
)
@click.option(
    "--playbooks",
    "folder",
    default=None,
    type=click.Path(path_type=Path),
    help="preview these playbooks instead of OFFBOARD_PLAYBOOKS",
)
@click.option(
    "--now",
    "at",
    default=None,
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M"]),
    help="lay the plan out as if the run started then (UTC)",
)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def plan(
    event_file: Path | None,
    crm: str | None,
    deal_id: str | None,
    trigger: str,
    folder: Path | None,
    at: datetime | None,
    fmt: str,
) -> None:
    """Show which playbook a deal gets and its timeline, writing nothing.

    The deal comes from EVENT_FILE (a generic event, as posted to /webhooks/generic)
    or from a CRM with --crm and --deal.
    """
    from connector.cli_playbooks import plan_playbooks
    from connector.planner import PlanContext
    from connector.preview import preview

    settings = _settings()
    if (event_file is None) == (crm is None or deal_id is None):
        raise click.UsageError("give either EVENT_FILE or both --crm and --deal")
    deal = _deal_from_file(event_file) if event_file else _deal_from_crm(settings, str(crm), str(deal_id))
    try:  # the deal's account's own playbooks where it published some, else the folder's
        playbooks = plan_playbooks(settings, deal, folder)
    except PlaybookError as exc:
        raise click.ClickException(f"the playbooks do not load:\n{exc}") from None
    now = at.replace(tzinfo=UTC) if at else utcnow()
    try:
        shown = preview(deal, playbooks, PlanContext.from_settings(settings, now), trigger=trigger)
    except PlaybookError as exc:  # a template fails for this deal's data
        raise click.ClickException(str(exc)) from None
    under_way = _under_way(settings, deal, now)  # a run already started: planned against actual
    if fmt == "json":
        shown_json = shown.as_json()
        if under_way is not None:
            shown_json["under_way"] = under_way.as_json()
        click.echo(json.dumps(shown_json, indent=2, default=str))
    else:
        click.echo(shown.as_text())
        if under_way is not None:
            click.echo("\n" + "\n".join(under_way.lines()))


def _under_way(settings: Settings, deal: Any, now: datetime) -> Any:
    """The deal's run under way, as ``connector.usecases.projection`` projects it, or None."""
    from connector.usecases.projection import under_way

    return under_way(_services(settings).store, settings, deal, now)


def _deal_from_file(path: Path) -> Any:
    from connector.errors import PayloadInvalid
    from connector.generic import parse

    try:
        event = parse(path.read_bytes())
    except PayloadInvalid as exc:
        details = "".join(f"\n  {d['field']}: {d['problem']}" for d in exc.details)
        raise click.ClickException(f"{path}: {exc.reason}{details}") from None
    return event.to_deal(event.account or "-")


def _deal_from_crm(settings: Settings, crm: str, deal_id: str) -> Any:
    from connector.errors import CrmError

    services = _services(settings)
    adapter = services.adapters.get(crm)
    if adapter is None:
        raise click.ClickException(
            f"the {crm!r} CRM is not configured (configured: {', '.join(services.adapters)})"
        )
    try:
        return adapter.fetch_deal(deal_id)
    except CrmError as exc:
        raise click.ClickException(f"{crm}: cannot fetch deal {deal_id}: {exc}") from None


@main.command()
def sweep() -> None:
    """Look for contracts ending within a playbook's lead time and start their runs now."""
    settings = _settings()
    _logging(settings)
    services = _services(settings, playbooks="lenient")
    runner = services.worker()
    report = runner.sweep()
    for crm, count in report.found.items():
        click.echo(f"{crm}: {count} contract(s) ending within the lead time, new or changed since last sweep")
    for crm, error in report.errors.items():
        click.echo(f"{crm}: sweep failed: {error}", err=True)
    click.echo(f"{report.queued} new contract-end event(s) queued")
    runner.run_until_idle()
    for line in _sweep_outcomes(services):
        click.echo(line)
    if report.errors:
        sys.exit(1)


@main.command()
def track() -> None:
    """Read back the tasks of every checklist under way now, and write what follows (the worker
    does this every OFFBOARD_TRACK_INTERVAL_SECONDS)."""
    from connector.clock import utcnow
    from connector.usecases.tracking import track as tracking_pass

    settings = _settings()
    _logging(settings)
    services = _services(settings, playbooks="lenient")
    report = tracking_pass(settings, services.store, services.adapters, utcnow(), actor="cli")
    for account, read in report.read.items():
        click.echo(f"{account}: {read} task(s) read back, {report.changed.get(account, 0)} changed")
    for account, problem in report.problems.items():
        click.echo(f"{account}: tracking pass cut short: {problem}", err=True)
    if not report.read and not report.problems:
        click.echo("no checklist is under way")
    services.worker().run_until_idle()
    if report.problems:
        sys.exit(1)


def _sweep_outcomes(services: Any) -> list[str]:
    from sqlalchemy import select

    from connector.store import Event

    with services.store.read() as session:
        events = session.scalars(
            select(Event).where(Event.source == "sweep").order_by(Event.id.desc()).limit(50)
        ).all()
        return [f"  {e.event_key}: {e.state}: {e.outcome}" for e in reversed(events)]


@main.command()
@click.option("--url", default=None, help="send it to the connector at URL; fail if none answers there")
@click.option("--in-process", is_flag=True, help="play the connector in this process (no server needed)")
@click.option("--timeout", default=20.0, show_default=True, help="seconds to wait for the checklist")
def demo(url: str | None, in_process: bool, timeout: float) -> None:
    """Send a signed sample deal-closed event and print the checklist it produced.

    With neither option: send it to OFFBOARD_PUBLIC_URL, or play the connector in this
    process when none answers there, and say which happened.
    """
    from connector import demo as sample

    if url is not None and in_process:
        raise click.UsageError("give --url or --in-process, not both")
    settings = _settings()
    if settings.webhook_secret is None:
        raise click.ClickException(
            "OFFBOARD_WEBHOOK_SECRET is not set: run `make demo`, or export it as for `make run`"
        )
    if not settings.crm("sandbox").configured:
        raise click.ClickException("the demo writes to the sandbox CRM, which OFFBOARD_SANDBOX turns off")
    event = sample.sample_event(utcnow().date())
    body, headers = sample.signed_request(settings.webhook_secret.get_secret_value(), event)
    if in_process:
        click.echo("Running the demo in-process: this process plays the connector, no server needed.")
    reply = None if in_process else _demo_send(url, settings.public_url, body, headers)
    remote = reply is not None
    services = _services(settings, playbooks="none" if remote else "lenient")
    if not remote and services.playbooks.unloaded:  # its event would only wait: say so, send nothing
        from connector.usecases.offboarding import WAITING, PlaybooksIncomplete

        reason = PlaybooksIncomplete(services.playbooks.unloaded).reason.removeprefix(WAITING)
        raise click.ClickException(f"the demo starts a run, and none starts while {reason}")
    status, answer = reply or _demo_in_process(services, body, headers)
    click.echo(f"POST /webhooks/generic → {status} {json.dumps(answer)}")
    if status >= 300:
        raise click.ClickException("the connector refused the sample event")
    deal_id = event["deal"]["id"]
    tasks = sample.wait_for(lambda: services.adapters["sandbox"].tasks(deal_id), timeout)
    if not tasks:
        where = " by a worker on this database" if remote else ""
        raise click.ClickException(
            f"no tasks appeared for deal {deal_id} within {timeout:.0f}s{where} "
            f"({_describe_db(settings)}); see `offboard runs`"
        )
    click.echo(
        f"\nSandbox CRM, deal {deal_id} ({event['deal']['name']}), closed {event['deal']['close_date']}:"
    )
    _print_tasks(tasks)


def _demo_send(
    url: str | None, default: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, Any]] | None:
    """Send to ``url`` (or ``default``); None to run in-process when nothing answers at ``default``."""
    from connector import demo as sample

    target = (url or default).rstrip("/")
    try:
        reply = sample.post(target, body, headers)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    except sample.NotAnswering as exc:
        if url is not None:
            raise click.ClickException(
                f"No connector is answering at {target} ({exc}); nothing was written here. "
                "Start one (`make run`), or run the demo with --in-process."
            ) from None
        click.echo(f"No connector is answering at {target}: running the demo in-process instead.")
        return None
    click.echo(f"Sent to the connector at {target}.")
    return reply


def _demo_in_process(services: Any, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    from connector.web import create_app

    reply = create_app(services).test_client().post("/webhooks/generic", data=body, headers=headers)
    services.worker().run_until_idle()
    return reply.status_code, reply.get_json()


def _print_tasks(tasks: list[Any]) -> None:
    for task in tasks:
        click.echo(
            f"  {task.due_at:%a %d %b %Y}  [{task.priority:<6}] {task.subject}  "
            f"(owner {task.owner_id or '-'}, {task.type})"
        )


def _register_crm_commands() -> None:
    import adapters
    from connector.cli_connections import connections
    from connector.cli_playbooks import playbooks

    for command in adapters.commands():  # each CRM plugin's own (sandbox, hubspot…)
        main.add_command(command)
    main.add_command(playbooks)
    main.add_command(connections)


_register_crm_commands()


def _describe_db(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)
