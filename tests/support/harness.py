"""The fault suite's machinery: the real processes, HubSpot's side of the webhooks, SIGKILLs
at random moments, and the exactly-once checks.

The fake HubSpot lives in the test process (it must outlive every kill); ``offboard serve
--no-worker`` and one or two ``offboard worker`` processes run against it and against the
test's database. Sizes: ``OFFBOARD_FAULTS_SCALE=full`` for the long runs (``pytest -m
faults``), the reduced size otherwise (``make test``). ``OFFBOARD_FAULTS_SEED`` replays a
schedule of kills and batches (the processes' own timing still varies from run to run).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from adapters.hubspot.records import MARKER, token
from connector.store import Action, Event, Run, Store
from tests.support.faults import Fault
from tests.support.helpers import BUNDLED_PLAYBOOKS, days_from_today
from tests.support.hubspot import (
    CLIENT_SECRET,
    FINANCE,
    TOKEN,
    FakeHubSpot,
    add_deal,
    signed,
    stage_event,
)
from tests.support.server import OFFBOARD, ServerProcess

# --- sizes and settings ------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    name: str
    events: int  # one event per deal, each deal distinct
    max_batch: int  # events per webhook POST (HubSpot sends up to 100)
    send_seconds: float  # the deliveries are spread over this long
    server_kills: int  # SIGKILLs of the web process, at random moments while the events come in
    worker_kills: int  # SIGKILLs of a worker process, at random moments
    chaos_tail: float  # the kills go on this long after the deliveries were due to end
    outage_events: int  # deals of the outage test
    outage_seconds: (
        float  # the outage test's stretch of quick failures (then stalls, then 429s, half as long each)
    )
    quiet_timeout: float  # how long the processes get to finish everything
    both_databases: bool  # the slow and shutdown tests: both databases, or Postgres / SQLite only


REDUCED = Size("reduced", 60, 3, 4.0, 3, 4, 2.0, 20, 2.5, 60.0, False)
FULL = Size("full", 300, 5, 25.0, 12, 18, 8.0, 300, 15.0, 180.0, True)


def size() -> Size:
    return FULL if os.environ.get("OFFBOARD_FAULTS_SCALE", "reduced") == "full" else REDUCED


def only_on(store: Store, database: str) -> None:
    """In the reduced size (make test), run this test on ``database`` only, to keep make test short."""
    if not size().both_databases and store.is_sqlite != (database == "sqlite"):
        pytest.skip(f"reduced size: {database} only (OFFBOARD_FAULTS_SCALE=full runs both databases)")


def full_size_only() -> None:
    if not size().both_databases:
        pytest.skip("full size only (OFFBOARD_FAULTS_SCALE=full), to keep make test short")


def seed(default: int) -> int:
    return int(os.environ.get("OFFBOARD_FAULTS_SEED", default))


LEASE_SECONDS = 5  # the settings' minimum: a killed worker's rows come back quickly
POLL_SECONDS = 0.05
RETRY_BASE_SECONDS = 0.5
RETRY_MAX_SECONDS = 8.0  # below a 429's 10 s wait: no backoff step is shorter than a rate-limit step
INLINE_RETRIES = 3
INLINE_RETRY_WAIT_SECONDS = 0.05
MAX_ATTEMPTS = 12
RATE_LIMIT_PER_10S = 1000  # the processes' own HubSpot budget (the settings' maximum)
SEARCH_PER_S = 50

LATENCY_SECONDS = 0.02  # per HubSpot answer
# HubSpot's search shows a record a little after it was written; a worker that takes over a
# dead one's action must not search before then, or it writes the tasks again.
SEARCH_LAG = timedelta(seconds=1)

PLAYBOOK = "completed-project"


def tasks_per_run() -> int:
    """The playbook's unconditional tasks: all written by the run's first action, at once."""
    steps = yaml.safe_load((BUNDLED_PLAYBOOKS / f"{PLAYBOOK}.yaml").read_text())["steps"]
    return sum(1 for s in steps if "task" in s and not (s["task"].get("after") or s["task"].get("when")))


def default_env(db_url: str, fake_url: str, **extra: str) -> dict[str, str]:
    """What a deployment must set to serve HubSpot from the fake; every other setting its default."""
    return {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_ROLES": json.dumps({"finance": FINANCE}),
        "OFFBOARD_LOG_LEVEL": "INFO",
        "OFFBOARD_SWEEP_INTERVAL_SECONDS": "0",  # only the webhooks start runs
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": fake_url,
        "PYTHONFAULTHANDLER": "1",  # a process that hangs can be made to show where
        **extra,
    }


def process_env(db_url: str, fake_url: str, **extra: str) -> dict[str, str]:
    """Short leases, polls and back-offs, so the many kills of the fault suite fit in minutes."""
    return {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_ROLES": json.dumps({"finance": FINANCE}),
        "OFFBOARD_LOG_LEVEL": "INFO",
        "OFFBOARD_WORKER_POLL_SECONDS": str(POLL_SECONDS),
        "OFFBOARD_LEASE_SECONDS": str(LEASE_SECONDS),
        "OFFBOARD_RETRY_BASE_SECONDS": str(RETRY_BASE_SECONDS),
        "OFFBOARD_RETRY_MAX_SECONDS": str(RETRY_MAX_SECONDS),
        "OFFBOARD_INLINE_RETRIES": str(INLINE_RETRIES),
        "OFFBOARD_INLINE_RETRY_WAIT_SECONDS": str(INLINE_RETRY_WAIT_SECONDS),
        "OFFBOARD_MAX_ATTEMPTS": str(MAX_ATTEMPTS),
        "OFFBOARD_SWEEP_INTERVAL_SECONDS": "0",  # only the webhooks start runs
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": fake_url,
        "HUBSPOT_RATE_LIMIT_PER_10S": str(RATE_LIMIT_PER_10S),
        "HUBSPOT_SEARCH_RATE_LIMIT_PER_S": str(SEARCH_PER_S),
        "HUBSPOT_SEARCH_LAG_SECONDS": str(SEARCH_LAG.total_seconds() * 2),  # the fake's lag, with room
        "PYTHONFAULTHANDLER": "1",  # a process that hangs can be made to show where
        **extra,
    }


class RecordingHubSpot(FakeHubSpot):
    """The fake HubSpot, also keeping every call's time, method, path, body and status, so a test
    can tell which event or action made it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[tuple[datetime, str, str, bytes, int | Fault]] = []  # status or fault played

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Any:
        with self._lock:  # reentrant: the fake's own handle() takes it too
            at = self.clock()
            reply = super().handle(method, path, query, headers, body)
            self.requests.append((at, method, path, body, reply[0]))
            return reply


# --- processes ------------------------------------------------------------------------------


class WorkerProcess:
    """``offboard worker`` in its own process group."""

    def __init__(self, env: dict[str, str], log: Path, name: str) -> None:
        self.env = env
        self.log = log
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            [OFFBOARD, "worker"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        assert self.process is not None
        self.process.wait()

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (once: a second one means "leave at once"), and the exit code."""
        self.signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float = 30) -> int:
        """The exit code; if it does not exit in ``timeout``, SIGABRT (its threads' stacks go to its
        log: PYTHONFAULTHANDLER) and -6."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGABRT)
            self.process.wait()
            return -6


class Cluster:
    """The web process (no worker thread, unless ``with_worker``) and the worker processes, all on
    one database."""

    def __init__(self, env: dict[str, str], logs: Path, workers: int, *, with_worker: bool = False) -> None:
        self.server = ServerProcess(env, *(() if with_worker else ("--no-worker",)), log=logs / "server.log")
        self.workers = [
            WorkerProcess(self.server.env, logs / f"worker-{n}.log", f"worker-{n}") for n in range(workers)
        ]
        self.logs = logs

    @property
    def webhook_url(self) -> str:
        return f"{self.server.url}/webhooks/hubspot"

    def start(self) -> Cluster:
        for worker in self.workers:  # they start while the server does
            worker.start()
        self.server.start()
        return self

    def restart_server(self) -> None:
        for attempt in range(3):
            try:
                self.server.start()
                return
            except RuntimeError:
                if attempt == 2:
                    raise
                time.sleep(0.5)

    def stop(self) -> dict[str, int]:
        """SIGTERM everything at once; the exit codes."""
        running = [worker for worker in self.workers if worker.process is not None]
        for worker in running:
            worker.signal(signal.SIGTERM)
        codes = {worker.name: worker.wait() for worker in running}
        if self.server.process is not None:
            codes["server"] = self.server.stop()
        return codes

    def kill_all(self) -> None:
        for worker in self.workers:
            if worker.running:
                worker.kill()
        if self.server.process is not None and self.server.process.poll() is None:
            self.server.stop(signal.SIGKILL)

    def tail(self, chars: int = 2500) -> str:
        parts = []
        for path in sorted(self.logs.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts)


class Chaos:
    """SIGKILLs the server and the workers at random moments (seeded), restarting each at once.

    The schedule is drawn up front: ``server_kills`` and ``worker_kills`` moments spread at
    random over ``window`` seconds, in a random order (a worker kill picks one of the workers).
    """

    def __init__(
        self, cluster: Cluster, rng: random.Random, *, server_kills: int, worker_kills: int, window: float
    ) -> None:
        self.cluster = cluster
        targets = ["server"] * server_kills + [rng.choice(cluster.workers).name for _ in range(worker_kills)]
        rng.shuffle(targets)
        moments = sorted(rng.uniform(0.3, window) for _ in targets)
        self.schedule = list(zip(moments, targets, (rng.uniform(0.0, 0.4) for _ in targets), strict=True))
        self.kills: Counter[str] = Counter()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="chaos", daemon=True)
        self._started = 0.0
        self.last_restart = 0.0  # time.monotonic() when the last killed process was up again

    def start(self) -> Chaos:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def finish(self, timeout: float = 120) -> None:
        """Wait for the last kill (and its restart); raise what went wrong in the chaos thread."""
        self._thread.join(timeout=timeout)
        self._stop.set()
        self._thread.join(timeout=30)
        if self._error is not None:
            raise self._error

    @property
    def total(self) -> int:
        return sum(self.kills.values())

    def _run(self) -> None:
        try:
            for moment, target, pause in self.schedule:
                if self._stop.wait(max(self._started + moment - time.monotonic(), 0)):
                    return
                self._kill(target, pause)
        except BaseException as exc:  # surfaced by finish()
            self._error = exc

    def _kill(self, target: str, pause: float) -> None:
        self.kills[target] += 1
        if target == "server":
            self.cluster.server.stop(signal.SIGKILL)
            time.sleep(pause)
            self.cluster.restart_server()
        else:
            worker = next(w for w in self.cluster.workers if w.name == target)
            worker.kill()
            time.sleep(pause)
            worker.start()
        self.last_restart = time.monotonic()


# --- HubSpot's side of the webhooks ------------------------------------------------------------


def portal_with_deals(fake: FakeHubSpot, count: int) -> list[str]:
    """``count`` closed-won project deals, each with its own company and contact."""
    return [
        add_deal(
            fake,
            name=f"Client {n} website",
            company=f"Client {n}",
            contact=(f"pat{n}@client{n}.example", "Pat", f"Lee{n}"),
            close_date=days_from_today(),
            contract_end=days_from_today(41),
        )["deal"]
        for n in range(count)
    ]


def batches_for(deals: list[str], rng: random.Random, max_batch: int) -> list[list[dict[str, Any]]]:
    """One closedwon event per deal (eventId n+1), cut into batches of 1..max_batch."""
    events = [stage_event(deal, "closedwon", event_id=n + 1) for n, deal in enumerate(deals)]
    batches, start = [], 0
    while start < len(events):
        step = rng.randint(1, max_batch)
        batches.append(events[start : start + step])
        start += step
    return batches


@dataclass
class Sender:
    """Delivers each batch until it gets a 2xx, signing every delivery afresh, as HubSpot does.

    A batch that got a 2xx is never sent again; one that did not (the server was killed
    mid-request, or was down) is sent again after a short pause.
    """

    url: str
    deliveries: int = 0
    resent: int = 0
    accepted: Counter[int] = field(default_factory=Counter)  # eventId → 2xx answers received
    failures: Counter[str] = field(default_factory=Counter)

    def send_all(self, batches: list[list[dict[str, Any]]], over_seconds: float) -> None:
        pause = over_seconds / max(len(batches), 1)
        for batch in batches:
            self.deliver(batch)
            time.sleep(pause)

    def deliver(self, batch: list[dict[str, Any]], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            body, headers = signed(batch, url=self.url, at=datetime.now(UTC))
            self.deliveries += 1
            status = self._post(body, headers)
            if status is not None and 200 <= status < 300:
                for event in batch:
                    self.accepted[event["eventId"]] += 1
                return
            self.failures[str(status) if status is not None else "no answer"] += 1
            self.resent += 1
            if time.monotonic() > deadline:
                raise AssertionError(f"a batch was not accepted in {timeout}s: {dict(self.failures)}")
            time.sleep(0.1)

    def _post(self, body: bytes, headers: dict[str, str]) -> int | None:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:  # HubSpot waits 5 s
                return int(reply.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            return None


# --- the database's view ---------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    events: dict[str, int]
    runs: int
    actions: dict[str, int]  # "kind:state" → count
    open_due: int  # actions pending or running and due within the hour (a retry's backoff included)

    @property
    def events_total(self) -> int:
        return sum(self.events.values())

    @property
    def events_open(self) -> int:
        return self.events.get("pending", 0) + self.events.get("running", 0)


# Actions due within this are owed now (a retry waits at most OFFBOARD_RETRY_MAX_SECONDS); the
# playbook's surveys and answer deadlines are days away.
OWED_NOW = timedelta(hours=1)


def snapshot(store: Store) -> Snapshot:
    now = datetime.now(UTC)
    with store.session() as session:
        events = dict(session.execute(select(Event.state, func.count()).group_by(Event.state)).all())
        runs = session.scalar(select(func.count()).select_from(Run)) or 0
        actions = {
            f"{kind}:{state}": n
            for kind, state, n in session.execute(
                select(Action.kind, Action.state, func.count()).group_by(Action.kind, Action.state)
            ).all()
        }
        open_due = (
            session.scalar(
                select(func.count())
                .select_from(Action)
                .where(Action.state.in_(("pending", "running")), Action.due_at <= now + OWED_NOW)
            )
            or 0
        )
    return Snapshot(events, int(runs), actions, int(open_due))


def wait_until_quiet(
    store: Store, *, events: int, runs: int, timeout: float, tail: Callable[[], str]
) -> float:
    """Wait until every event is processed and every action due now is finished; the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        seen = snapshot(store)
        if seen.events_total == events and seen.events_open == 0 and seen.runs == runs and seen.open_due == 0:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"not quiet after {timeout}s: {seen}\n{tail()}")
        time.sleep(0.25)


# --- exactly once -----------------------------------------------------------------------------


@dataclass
class Outcome:
    tasks: int
    per_deal: Counter[str]
    duplicated_markers: dict[tuple[str, str], int]
    missing_markers: set[tuple[str, str]]
    unexpected_markers: set[tuple[str, str]]
    reclaimed_actions: int  # actions claimed more than once (a kill, a lease, a retry)
    reclaimed_events: int


def check_exactly_once(fake: FakeHubSpot, store: Store, deals: list[str], sender: Sender) -> Outcome:
    """The fake holds each run's tasks once: none missing, none twice; the inbox holds each event once."""
    expected_per_run = tasks_per_run()
    # HubSpot's side: every event got exactly one 2xx, so none was re-sent after acceptance.
    assert sorted(sender.accepted) == list(range(1, len(deals) + 1))
    assert set(sender.accepted.values()) == {1}
    with store.session() as session:
        events = session.scalars(select(Event).where(Event.source == "hubspot")).all()
        runs = session.scalars(select(Run)).all()
        actions = session.scalars(select(Action)).all()
        # The database's side: each event stored once and processed, one run per deal.
        assert sorted(int(e.event_key) for e in events) == list(range(1, len(deals) + 1))
        assert Counter(e.state for e in events) == {"done": len(deals)}, [
            (e.event_key, e.state, e.outcome) for e in events if e.state != "done"
        ]
        assert sorted(r.deal_id for r in runs) == sorted(deals)
        assert {r.playbook_id for r in runs} == {PLAYBOOK}
        due = [a for a in actions if a.kind in ("task", "property")]
        assert {(a.kind, a.state) for a in due} == {("task", "done"), ("property", "done")}, [
            (a.id, a.kind, a.state, a.last_error) for a in due if a.state != "done"
        ]
        assert not [a for a in actions if a.state == "failed"]
        expected = {
            (token(a.idempotency_key), str(n))
            for a in actions
            if a.kind == "task"
            for n in range(len(a.payload["tasks"]))
        }
        assert all(len(a.payload["tasks"]) == expected_per_run for a in actions if a.kind == "task")
        reclaimed_actions = sum(1 for a in actions if a.attempts > 1)
        reclaimed_events = sum(1 for e in events if e.attempts > 1)
    tasks = fake.records("tasks")
    per_deal: Counter[str] = Counter(deal for task in tasks for deal in fake.linked(task, "deals"))
    markers: Counter[tuple[str, str]] = Counter()
    for task in tasks:
        found = MARKER.search(task.properties.get("hs_task_body", ""))
        assert found is not None, task.properties
        markers[(found.group(1), found.group(2))] += 1
    outcome = Outcome(
        tasks=len(tasks),
        per_deal=per_deal,
        duplicated_markers={m: n for m, n in markers.items() if n > 1},
        missing_markers=expected - set(markers),
        unexpected_markers=set(markers) - expected,
        reclaimed_actions=reclaimed_actions,
        reclaimed_events=reclaimed_events,
    )
    assert not outcome.duplicated_markers, f"duplicated tasks: {outcome.duplicated_markers}"
    assert not outcome.missing_markers, f"missing tasks: {sorted(outcome.missing_markers)[:10]}"
    assert not outcome.unexpected_markers, f"tasks nobody asked for: {outcome.unexpected_markers}"
    wrong = {deal: n for deal, n in per_deal.items() if n != expected_per_run}
    assert not wrong and set(per_deal) == set(deals), f"tasks per deal: {wrong}"
    assert len(tasks) == expected_per_run * len(deals)
    statuses = {fake.objects["deals"][d].properties.get("offboarding_status") for d in deals}
    assert statuses == {"in progress"}
    return outcome


def report(title: str, **numbers: Any) -> None:
    """One line per run (pytest -s shows it); OFFBOARD_FAULTS_REPORT names a file that collects them."""
    line = json.dumps({"test": title, "at": datetime.now(UTC).isoformat(timespec="seconds"), **numbers})
    print(f"\n[faults] {line}")
    target = os.environ.get("OFFBOARD_FAULTS_REPORT")
    if target:
        with open(target, "a") as out:
            out.write(line + "\n")


def since(start: float) -> float:
    return round(time.monotonic() - start, 1)
