"""Ingest: signed HubSpot webhooks → stored → 2xx, against a bare Flask app on the same server.

The load comes from ``processes`` processes of threads, one keep-alive connection each (32 in
all by default), sending prepared bytes over plain sockets so that the client costs little
of the machine's two cores. Each request carries one event with its own ``eventId``, signed
as HubSpot signs; the bare app gets exactly the same bytes and answers 204 without reading
them. After the run, every eventId that got a 2xx must be in the events table.

The bare app runs under the same process manager and front as ``offboard serve`` (gunicorn's
arbiter with ``connector.serve.WaitressWorker``, the same worker count and timeouts), so the
difference is the application's work: verifying, storing and answering.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tests.support.hubspot import signed, stage_event
from tests.support.server import free_port

PATH = "/webhooks/hubspot"


# --- the bare app --------------------------------------------------------------------------------


def bare_app() -> Any:
    from flask import Flask

    app = Flask("bench-bare")

    @app.post(PATH)
    def webhook() -> tuple[str, int]:
        return "", 204

    @app.get("/healthz")
    def health() -> str:
        return "ok"

    return app


def serve_bare(port: int, workers: int) -> None:
    """The bare app under ``offboard serve``'s process manager and front."""
    from gunicorn.app.base import BaseApplication

    from connector.serve import GRACEFUL_TIMEOUT, WaitressWorker

    options = {
        "bind": f"127.0.0.1:{port}",
        "workers": workers,
        "worker_class": WaitressWorker,
        "timeout": 60,
        "graceful_timeout": GRACEFUL_TIMEOUT,
        "accesslog": None,
        "loglevel": "info",
        "proc_name": "bench-bare",
    }

    class Bare(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)
            if "control_socket_disable" in self.cfg.settings:
                self.cfg.set("control_socket_disable", True)

        def load(self) -> Any:
            return bare_app()

    Bare().run()


class BareProcess:
    def __init__(self, workers: int, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.bench_ingest", str(self.port), str(workers)],
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the bare app did not start:\n{log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


# --- the load ---------------------------------------------------------------------------------------


@dataclass
class Target:
    port: int
    sign_url: str  # the URL the receiver checks the v3 signature against
    secret: str


@dataclass(frozen=True)
class Usage:
    """Where the machine's time went in the measured stretch: CPU seconds of the server's
    processes (its process group) and of Postgres's, and the share of all cores left idle."""

    server: float
    postgres: float
    idle: float


@dataclass
class LoadRun:
    seconds: float
    latencies: list[float]  # seconds, 2xx answers in the measured stretch
    statuses: Counter[int]
    errors: int
    accepted: list[int] = field(default_factory=list)  # eventIds answered 2xx, warm-up included
    usage: Usage | None = None  # when the server's process group was given

    def cpu_per_answer(self, seconds: float) -> float:
        """``seconds`` of CPU per answered request of the measured stretch, in microseconds."""
        return seconds / len(self.latencies) * 1e6 if self.latencies else float("nan")

    @property
    def per_s(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, share: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(int(len(ordered) * share), len(ordered) - 1)] * 1000


def load(
    target: Target,
    *,
    seconds: float,
    warmup: float,
    connections: int,
    processes: int,
    group: int | None = None,
) -> LoadRun:
    """``connections`` keep-alive connections for ``warmup`` + ``seconds``; the stretch after the
    warm-up. With the server's process ``group``, also where the CPU went meanwhile (``Usage``)."""
    start_at = time.time() + 4.0  # every process imported and connected by then
    threads = [connections // processes + (1 if n < connections % processes else 0) for n in range(processes)]
    usage: list[Usage] = []
    sampler = threading.Thread(target=_sample, args=(group, start_at + warmup, seconds, usage), daemon=True)
    if group is not None:
        sampler.start()
    with ProcessPoolExecutor(max_workers=processes, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(_generate, target, count, start_at, warmup, seconds, 1 + n * 10**8)
            for n, count in enumerate(threads)
        ]
        parts = [future.result() for future in futures]
    if group is not None:
        sampler.join(timeout=seconds + 10)
    run = LoadRun(seconds, [], Counter(), 0, usage=usage[0] if usage else None)
    for part in parts:
        run.latencies += part["latencies"]
        run.statuses.update(part["statuses"])
        run.errors += part["errors"]
        run.accepted += part["accepted"]
    return run


def _sample(group: int, start_at: float, seconds: float, into: list[Usage]) -> None:
    time.sleep(max(start_at - time.time(), 0))
    before = cpu_times(group)
    time.sleep(seconds)
    after = cpu_times(group)
    server, postgres, idle, total = (b - a for a, b in zip(before, after, strict=True))
    into.append(Usage(server, postgres, idle / total if total else float("nan")))


def cpu_times(group: int) -> tuple[float, float, float, float]:
    """CPU seconds so far of the processes in ``group`` and of those named ``postgres``, and the
    machine's idle and total seconds over all cores (Linux's /proc; zeros elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    server = postgres = 0
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            name, _, rest = (entry / "stat").read_text().rpartition(")")
            fields = rest.split()
        except OSError:  # gone meanwhile
            continue
        used = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        if int(fields[2]) == group:
            server += used
        elif name.endswith("(postgres"):
            postgres += used
    try:
        cpu = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except OSError:
        return 0.0, 0.0, 0.0, 0.0
    return server / tick, postgres / tick, (cpu[3] + cpu[4]) / tick, sum(cpu) / tick


def _generate(
    target: Target, threads: int, start_at: float, warmup: float, seconds: float, id_base: int
) -> dict[str, Any]:
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def connection(n: int) -> None:
        part = _connection(target, start_at, warmup, seconds, id_base + n * 10**6)
        with lock:
            results.append(part)

    running = [threading.Thread(target=connection, args=(n,)) for n in range(threads)]
    for each in running:
        each.start()
    for each in running:
        each.join()
    statuses: Counter[int] = Counter()
    for part in results:
        statuses.update(part["statuses"])
    return {
        "latencies": [x for part in results for x in part["latencies"]],
        "statuses": statuses,
        "errors": sum(part["errors"] for part in results),
        "accepted": [x for part in results for x in part["accepted"]],
    }


def _connection(
    target: Target, start_at: float, warmup: float, seconds: float, first_id: int
) -> dict[str, Any]:
    ids = itertools.count(first_id)
    latencies: list[float] = []
    accepted: list[int] = []
    statuses: Counter[int] = Counter()
    errors = 0
    measure_from, end = start_at + warmup, start_at + warmup + seconds
    sock: socket.socket | None = None
    reader: Any = None
    time.sleep(max(start_at - time.time(), 0))
    while time.time() < end:
        if sock is None:
            sock = socket.create_connection(("127.0.0.1", target.port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = sock.makefile("rb")
        event_id = next(ids)
        request = _request(target, event_id)
        sent_at = time.time()
        began = time.perf_counter()
        try:
            sock.sendall(request)
            status, keep = _answer(reader)
        except OSError:
            errors += 1
            sock.close()
            sock = None
            continue
        took = time.perf_counter() - began
        if 200 <= status < 300:
            accepted.append(event_id)
            if sent_at >= measure_from:
                latencies.append(took)
        if sent_at >= measure_from:
            statuses[status] += 1
        if not keep:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    return {"latencies": latencies, "accepted": accepted, "statuses": statuses, "errors": errors}


def _request(target: Target, event_id: int) -> bytes:
    body, headers = signed(
        [stage_event("1001", "closedwon", event_id=event_id)], url=target.sign_url, at=datetime.now(UTC)
    )
    lines = [f"POST {PATH} HTTP/1.1", f"Host: 127.0.0.1:{target.port}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _answer(reader: Any) -> tuple[int, bool]:
    """The status of one HTTP/1.1 answer, read in full, and whether the connection stays open."""
    status_line = reader.readline()
    if not status_line:
        raise ConnectionResetError("closed before an answer")
    status = int(status_line.split()[1])
    length, keep = 0, True
    while True:
        line = reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value.strip())
        elif name == "connection" and value.strip().lower() == "close":
            keep = False
    if length:
        reader.read(length)
    return status, keep


if __name__ == "__main__":
    serve_bare(int(sys.argv[1]), int(sys.argv[2]))
