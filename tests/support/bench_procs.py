"""The benchmark's processes and databases: real ``offboard`` processes, their peak memory, a
throwaway Postgres database, the bench playbook, and the database's view of a run.

Everything here reaches Offboard through its public surfaces only (the ``offboard`` command,
its environment, HTTP and the database's tables), so the figures follow whatever the product
does inside.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.support.server import OFFBOARD, ServerProcess

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

# One closed-won deal gets exactly three tasks and an NPS send, as the measure says.
TITLES = ("Confirm the end date", "Transfer files and accounts", "Send the final invoice")
PLAYBOOK = f"""\
id: bench-closed-won
name: Bench closed won
version: 1
match:
  outcome: [won]
anchor: run_start
steps:
  - id: confirm-end-date
    task: {{title: "{TITLES[0]} with {{{{ company.name }}}}", due: +3d, priority: high}}
  - id: transfer
    task: {{title: "{TITLES[1]} to {{{{ company.name }}}}", due: +5d}}
  - id: final-invoice
    task: {{title: "{TITLES[2]} to {{{{ company.name }}}}", due: +7d}}
  - id: exit-nps
    survey: {{kind: nps}}
"""


def write_playbooks(folder: Path) -> Path:
    """A playbook folder holding the bench playbook only (never the bundled ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bench-closed-won.yaml").write_text(PLAYBOOK)
    checked = subprocess.run([OFFBOARD, "validate", str(folder)], capture_output=True, text=True, timeout=60)
    if checked.returncode != 0:
        raise RuntimeError(f"the bench playbook does not validate:\n{checked.stdout}{checked.stderr}")
    return folder


def bench_title(subject: str) -> str | None:
    """Which of the bench playbook's tasks a CRM task is, by its title; None for another task."""
    return next((title for title in TITLES if subject.startswith(title)), None)


# --- peak memory ----------------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


@dataclass
class PeakRss:
    """The peak resident memory (VmHWM) of every process in the watched process groups.

    Each ``offboard`` process runs in its own process group (its session), so a group is one
    ``offboard worker``, or one ``offboard serve`` with the processes its arbiter forks.
    """

    groups: dict[int, str] = field(default_factory=dict)  # pgid → label
    peaks: dict[int, tuple[str, float]] = field(default_factory=dict)  # pid → (label, MiB)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def watch(self, pid: int, label: str) -> None:
        self.groups[pid] = label

    def sample(self) -> None:
        for pgid, label in list(self.groups.items()):
            for pid in _group_members(pgid):
                kb = _status_kb(pid, "VmHWM")
                if kb is None:
                    continue
                name = label if pid == pgid else f"{label.split(' (')[0]}, process {pid}"
                old = self.peaks.get(pid, (name, 0.0))[1]
                self.peaks[pid] = (name, max(old, kb / 1024))

    def start(self, every: float = 0.5) -> PeakRss:
        def loop() -> None:
            while not self._stop.wait(every):
                self.sample()

        self._thread = threading.Thread(target=loop, name="bench-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.sample()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    @property
    def largest(self) -> float:
        return max((mib for _name, mib in self.peaks.values()), default=0.0)

    def lines(self) -> list[str]:
        return [f"{name} (pid {pid}): {mib:.0f} MiB" for pid, (name, mib) in sorted(self.peaks.items())]


# --- processes ----------------------------------------------------------------------------------


class WorkerProc:
    """``offboard worker`` in its own process group, its output in ``log``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProc:
        self.process = subprocess.Popen(
            [OFFBOARD, "worker"],
            env=self.env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@dataclass
class Deployment:
    """One ``offboard serve`` (with its worker thread, or ``--no-worker``) and N worker processes."""

    server: ServerProcess
    workers: list[WorkerProc]
    rss: PeakRss

    @classmethod
    def start(
        cls, env: dict[str, str], logs: Path, *, workers: int = 0, serve_args: tuple[str, ...] = ()
    ) -> Deployment:
        logs.mkdir(parents=True, exist_ok=True)
        args = serve_args + (("--no-worker",) if workers else ())
        server = ServerProcess(env, *args, log=logs / "serve.log").start(timeout=60)
        rss = PeakRss()
        assert server.process is not None
        rss.watch(server.process.pid, "offboard serve (arbiter)")
        # Started after serve: serve migrates the database first.
        started = [WorkerProc(server.env, logs / f"worker-{n}.log").start() for n in range(workers)]
        for n, worker in enumerate(started):
            rss.watch(worker.pid, f"offboard worker {n + 1}")
        deployment = cls(server, started, rss.start())
        deployment.wait_workers(env["OFFBOARD_DATABASE_URL"])
        return deployment

    def wait_workers(self, url: str, timeout: float = 20) -> None:
        """Until every worker process has said it is running (its row in ``workers``), so that
        the burst is not timed from before they could work; at most ``timeout``."""
        pids = {worker.pid for worker in self.workers}
        deadline = time.monotonic() + timeout
        engine = create_engine(url)
        try:
            while pids and time.monotonic() < deadline:
                try:
                    with engine.connect() as connection:
                        seen = {int(pid) for (pid,) in connection.execute(text("SELECT pid FROM workers"))}
                except Exception:  # the table may not be there yet
                    seen = set()
                if pids <= seen:
                    return
                time.sleep(0.2)
        finally:
            engine.dispose()

    def alive(self) -> bool:
        procs = [self.server.process, *(w.process for w in self.workers)]
        return all(p is not None and p.poll() is None for p in procs)

    def stop(self) -> None:
        self.rss.stop()
        for worker in self.workers:
            worker.stop()
        if self.server.process is not None:
            self.server.stop()

    def tail(self, chars: int = 1500) -> str:
        logs = [self.server.log, *(w.log for w in self.workers)]
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in logs if p.exists()
        )


# --- databases -------------------------------------------------------------------------------


def postgres_server_url() -> str:
    return os.environ.get("OFFBOARD_BENCH_DATABASE_URL") or os.environ.get(
        "OFFBOARD_TEST_POSTGRES_URL", DEFAULT_PG
    )


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A throwaway database on the Postgres server (OFFBOARD_BENCH_DATABASE_URL, else the test
    server), dropped afterwards; None when no server answers."""
    admin_url = make_url(postgres_server_url()).set(drivername="postgresql+psycopg")
    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        with admin.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:  # any failure to connect means: no Postgres here
        yield None
        return
    name = f"offboard_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@dataclass(frozen=True)
class DbView:
    """What the database says about a burst: events by state, runs, runs per deal, actions."""

    events: dict[str, int]
    runs: int
    doubled_runs: int  # deals with more than one run
    actions: dict[str, int]  # state → count

    @property
    def events_open(self) -> int:
        return self.events.get("pending", 0) + self.events.get("running", 0)


def db_view(url: str) -> DbView:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            events: dict[Any, Any] = dict(
                connection.execute(text("SELECT state, count(*) FROM events GROUP BY state")).all()
            )
            runs = connection.execute(text("SELECT count(*) FROM runs")).scalar_one()
            doubled = connection.execute(
                text(
                    "SELECT count(*) FROM (SELECT deal_id FROM runs WHERE state != 'cancelled' "
                    "GROUP BY crm, account, deal_id HAVING count(*) > 1) AS doubled"
                )
            ).scalar_one()
            actions: dict[Any, Any] = dict(
                connection.execute(text("SELECT state, count(*) FROM actions GROUP BY state")).all()
            )
    finally:
        engine.dispose()
    return DbView(
        {str(k): int(v) for k, v in events.items()},
        int(runs),
        int(doubled),
        {str(k): int(v) for k, v in actions.items()},
    )


def stored_event_keys(url: str, source: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT event_key FROM events WHERE source = :s"), {"s": source})
            return {str(key) for (key,) in rows}
    finally:
        engine.dispose()


def wait_settled(url: str, timeout: float) -> DbView:
    """Wait until no event is open and no action is being written (a write in flight finishes)."""
    deadline = time.monotonic() + timeout
    while True:
        view = db_view(url)
        if (view.events_open == 0 and view.actions.get("running", 0) == 0) or time.monotonic() > deadline:
            return view
        time.sleep(0.5)
