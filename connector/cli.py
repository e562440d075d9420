"""The ``offboard`` command."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from connector.clock import utcnow
from connector.errors import PlaybookError, SettingsInvalid
from connector.settings import Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsInvalid as exc:
        raise click.ClickException(str(exc)) from None


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _services(settings: Settings, *, migrate: bool = True) -> Any:
    from connector.services import build
    from connector.store.db import engine_for
    from connector.store.migrate import upgrade

    if migrate:
        engine = engine_for(settings.database_url)
        upgrade(engine)
        engine.dispose()
    try:
        return build(settings)
    except PlaybookError as exc:
        raise click.ClickException(f"the playbooks do not load:\n{exc}") from None
    except SettingsInvalid as exc:  # an adapter found its settings incomplete
        raise click.ClickException(str(exc)) from None


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
    _logging(settings)
    _services(settings).close()  # migrates, and refuses to start on playbooks that do not load
    click.echo(f"offboard serving on http://{host}:{port} ({_describe_db(settings)})", err=True)
    run_server(settings, host=host, port=port, workers=workers, with_worker=not no_worker)


@main.command()
@click.option("--once", is_flag=True, help="process what is due now, then exit")
def worker(once: bool) -> None:
    """Run the worker: events into runs, due actions into the CRM."""
    settings = _settings()
    _logging(settings)
    services = _services(settings)
    runner = services.worker()
    if once:
        click.echo(f"handled {runner.run_until_idle()} item(s)")
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
@click.option(
    "--state",
    type=click.Choice(["active", "done", "cancelled", "failed"]),
    default=None,
    help="only runs in this state (failed: runs with a failed action)",
)
@click.option("--limit", default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def runs(state: str | None, limit: int, fmt: str) -> None:
    """Runs, newest first, with their actions and any errors."""
    from connector.reports import run_reports

    settings = _settings()
    services = _services(settings)
    reports = run_reports(services.store, state=state, limit=limit)
    if fmt == "json":
        click.echo(json.dumps(reports, indent=2, default=str))
        return
    if not reports:
        click.echo("no runs yet")
    for report in reports:
        click.echo(_run_line(report))
        for action in report["actions"]:
            if action["state"] in ("failed", "pending") and action["last_error"]:
                click.echo(
                    f"    action {action['id']} {action['step_id']} {action['state']}: {action['last_error']}"
                )


def _run_line(report: dict[str, Any]) -> str:
    counts = Counter(a["state"] for a in report["actions"])
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    return (
        f"run {report['id']}  {report['crm']}:{report['deal_id']}  "
        f"{report['playbook_id']}@v{report['playbook_version']}  {report['state']}  ({summary})"
    )


@main.command()
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
def failed(fmt: str) -> None:
    """Actions parked as failed, with their errors: fix the cause, then `offboard retry`."""
    from connector.operator import failed_actions

    rows = failed_actions(_services(_settings()).store)
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no failed actions")
    for row in rows:
        click.echo(
            f"action {row['id']}  run {row['run_id']}  {row['crm']}:{row['deal_id']}  {row['playbook_id']}/"
            f"{row['step_id']} ({row['kind']}, {row['attempts']} attempt(s))\n    {row['last_error']}"
        )


@main.command()
@click.argument("ids", nargs=-1, type=int)
@click.option("--all", "every", is_flag=True, help="retry every failed action")
def retry(ids: tuple[int, ...], every: bool) -> None:
    """Put failed actions back in the queue (IDS from `offboard failed`, or --all)."""
    from connector.operator import retry as retry_actions

    if bool(ids) == every:
        raise click.UsageError("give action IDS or --all")
    store = _services(_settings()).store
    done = retry_actions(store, None if every else list(ids), actor="cli", now=utcnow())
    missing = sorted(set(ids) - set(done))
    click.echo(
        f"{len(done)} action(s) back in the queue" + (f": {', '.join(map(str, done))}" if done else "")
    )
    if missing:
        raise click.ClickException(f"not failed (or no such action): {', '.join(map(str, missing))}")


@main.command()
@click.argument("run_id", type=int)
@click.option("--reason", default="cancelled by an operator", show_default=True)
def cancel(run_id: int, reason: str) -> None:
    """Cancel a run: its pending actions will not be written."""
    from connector.operator import cancel as cancel_run

    cancelled = cancel_run(_services(_settings()).store, run_id, actor="cli", now=utcnow(), reason=reason)
    if cancelled is None:
        raise click.ClickException(f"no run {run_id}")
    click.echo(f"run {run_id} cancelled; {cancelled} pending action(s) will not be written")


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
    from connector.planner import PlanContext
    from connector.playbooks.loader import load_all
    from connector.preview import preview

    settings = _settings()
    if (event_file is None) == (crm is None or deal_id is None):
        raise click.UsageError("give either EVENT_FILE or both --crm and --deal")
    try:
        playbooks = load_all([folder or settings.playbooks])
    except PlaybookError as exc:
        raise click.ClickException(f"the playbooks do not load:\n{exc}") from None
    deal = _deal_from_file(event_file) if event_file else _deal_from_crm(settings, str(crm), str(deal_id))
    now = at.replace(tzinfo=UTC) if at else utcnow()
    shown = preview(deal, playbooks, PlanContext.from_settings(settings, now), trigger=trigger)
    if fmt == "json":
        click.echo(json.dumps(shown.as_json(), indent=2, default=str))
    else:
        click.echo(shown.as_text())


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
    services = _services(settings)
    runner = services.worker()
    report = runner.sweep()
    for crm, count in report.found.items():
        click.echo(f"{crm}: {count} contract(s) ending within the lead time")
    for crm, error in report.errors.items():
        click.echo(f"{crm}: sweep failed: {error}", err=True)
    click.echo(f"{report.queued} new contract-end event(s) queued")
    runner.run_until_idle()
    for line in _sweep_outcomes(services):
        click.echo(line)
    if report.errors:
        sys.exit(1)


def _sweep_outcomes(services: Any) -> list[str]:
    from sqlalchemy import select

    from connector.store import Event

    with services.store.session() as session:
        events = session.scalars(
            select(Event).where(Event.source == "sweep").order_by(Event.id.desc()).limit(50)
        ).all()
        return [f"  {e.event_key}: {e.state}: {e.outcome}" for e in reversed(events)]


@main.command()
@click.option("--url", default=None, help="a running connector (default: OFFBOARD_PUBLIC_URL)")
@click.option("--in-process", is_flag=True, help="do not look for a running connector")
@click.option("--timeout", default=20.0, show_default=True)
def demo(url: str | None, in_process: bool, timeout: float) -> None:
    """Send a signed sample deal-closed event and print the checklist it produced."""
    from connector import demo as sample
    from connector.clock import utcnow

    settings = _settings()
    if settings.webhook_secret is None:
        raise click.ClickException(
            "OFFBOARD_WEBHOOK_SECRET is not set: run `make demo`, or export it as for `make run`"
        )
    services = _services(settings)
    event = sample.sample_event(utcnow().date())
    body, headers = sample.signed_request(settings.webhook_secret.get_secret_value(), event)
    target = url or settings.public_url
    status, answer = (0, {}) if in_process else _try_post(sample, target, body, headers)
    if status == 0:
        click.echo("no connector is answering; running the demo in-process", err=True)
        from connector.web import create_app

        client = create_app(services).test_client()
        reply = client.post("/webhooks/generic", data=body, headers=headers)
        status, answer = reply.status_code, reply.get_json()
        services.worker().run_until_idle()
    click.echo(f"POST /webhooks/generic → {status} {json.dumps(answer)}")
    if status >= 300:
        raise click.ClickException("the connector refused the sample event")
    deal_id = event["deal"]["id"]
    sandbox = services.adapters["sandbox"]
    tasks = sample.wait_for(lambda: sandbox.tasks(deal_id), timeout)
    if not tasks:
        raise click.ClickException(
            f"no tasks appeared for deal {deal_id} within {timeout:.0f}s; see `offboard runs`"
        )
    click.echo(
        f"\nSandbox CRM, deal {deal_id} ({event['deal']['name']}), closed {event['deal']['close_date']}:"
    )
    _print_tasks(tasks)


def _try_post(sample: Any, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    try:
        return sample.post(url, body, headers)  # type: ignore[no-any-return]
    except OSError:
        return 0, {}


def _print_tasks(tasks: list[Any]) -> None:
    for task in tasks:
        click.echo(
            f"  {task.due_at:%a %d %b %Y}  [{task.priority:<6}] {task.subject}  "
            f"(owner {task.owner_id or '-'}, {task.type})"
        )


@main.group()
def sandbox() -> None:
    """The built-in sandbox CRM."""


@sandbox.command("tasks")
@click.option("--deal", default=None, help="only this deal's tasks")
def sandbox_tasks(deal: str | None) -> None:
    """The tasks the sandbox CRM holds."""
    services = _services(_settings())
    tasks = services.adapters["sandbox"].tasks(deal)
    if not tasks:
        click.echo("the sandbox CRM holds no tasks")
    by_deal: dict[str, list[Any]] = {}
    for task in tasks:
        by_deal.setdefault(task.deal_id, []).append(task)
    for deal_id, items in by_deal.items():
        click.echo(f"deal {deal_id}:")
        _print_tasks(items)


@sandbox.command("fail")
@click.argument(
    "operation",
    type=click.Choice(
        [
            "create_tasks",
            "add_note",
            "update_properties",
            "send_invite",
            "fetch_deal",
            "deals_ending",
        ]
    ),
)
@click.option(
    "--kind",
    type=click.Choice(["transient", "rate_limited", "permanent", "lost_reply"]),
    default="transient",
    show_default=True,
)
@click.option("--times", default=1, show_default=True, type=int)
def sandbox_fail(operation: str, kind: str, times: int) -> None:
    """Make the sandbox CRM fail the next TIMES calls of OPERATION."""
    services = _services(_settings())
    services.adapters["sandbox"].inject(operation, kind, times)
    click.echo(f"the next {times} {operation} call(s) will fail ({kind})")


def _register_crm_commands() -> None:
    from connector.cli_hubspot import hubspot

    main.add_command(hubspot)


_register_crm_commands()


def _describe_db(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.database_url).render_as_string(hide_password=True)
