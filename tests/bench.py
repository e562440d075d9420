"""``make bench``: Offboard in a burst, side by side with a one-call-per-record tool and a bare
Flask endpoint measured in the same run, as ratios, beside the targets of issue 12.

Every figure comes from real processes (``offboard serve``, ``offboard worker``) reached
through their public surfaces: webhooks over HTTP, the CRM fakes' record of every call they
received, and the database's tables; so the figures follow whatever Offboard does inside. Of
Offboard's code the bench process uses only the server class the bare app runs under (so both
run on the same server) and HubSpot's signing, to sign the webhooks.

- **HubSpot burst**: N closed-won deals (``OFFBOARD_BENCH_DEALS``, 300) announced by signed
  webhooks, against the HubSpot fake answering each call after 150 ms and refusing past 100
  calls in any 10 s; a playbook giving each deal three tasks and an NPS send. Deals drained per
  second (from the first webhook accepted to the last write), calls per deal, 429s, the busiest
  10 s, nothing lost and nothing twice (per deal: each task once, one survey send, one run),
  the peak RSS of every process. On SQLite, one ``offboard serve`` with its worker; on Postgres,
  ``offboard serve --no-worker`` and two ``offboard worker`` processes.
- **Baseline**: a tool that reads the deal and the contact and writes each record with one call
  (six calls a deal), several deals in flight, paced to the same budget, on its own fake (both
  baselines run at once, before the bursts: they spend little CPU). A rolling window lets it
  spend a whole window's budget at once at the start, so on small bursts it beats 1.67 deals/s.
- **Salesforce burst**: the same against the Salesforce fake (150 ms a call, over local TLS),
  and the same baseline.
- **Ingest**: signed HubSpot webhooks (one event each) → stored → 2xx on ``offboard serve
  --workers 2 --no-worker``, 32 keep-alive connections, on SQLite and Postgres, against a bare
  Flask app answering 204 on the same server; every 2xx-answered event must be in the table.
  The three are measured one after the other in each of ``OFFBOARD_BENCH_INGEST_ROUNDS`` (3)
  rounds, each on a new database, and each ratio is taken within its round: this machine's
  speed drifts by a fifth from one minute to the next (the bare app's rate with it), so one
  round's ratio could be a drift's. The round with the median ratio (the lower middle, for an
  even count) is shown; a note lists every round's, and where the time went in the one shown:
  the server's CPU per answered request (and Postgres's), beside the bare app's, and how much
  of the machine sat idle (from /proc, over the measured stretch).
- **Memory** (``OFFBOARD_BENCH_BIG=1``, ``make bench-big``): 5,000 deals
  (``OFFBOARD_BENCH_BIG_DEALS``) on SQLite and Postgres; every process's peak RSS.

An Offboard burst that has not drained after ``OFFBOARD_BENCH_TIMEOUT`` seconds (120;
``OFFBOARD_BENCH_BIG_TIMEOUT``, 1,800, for the big run) is stopped and its rate counted on the
deals it finished. Postgres: ``OFFBOARD_BENCH_DATABASE_URL`` names the server (else the tests'
local one); each run gets a throwaway database; without a server the Postgres rows say so.
``OFFBOARD_BENCH_ONLY`` picks parts (``hubspot,postgres,salesforce,ingest``). Other sizes:
``OFFBOARD_BENCH_LATENCY``, ``OFFBOARD_BENCH_LIMIT``, ``OFFBOARD_BENCH_INGEST_SECONDS``,
``OFFBOARD_BENCH_INGEST_ROUNDS``,
``OFFBOARD_BENCH_CONNECTIONS``, ``OFFBOARD_BENCH_LOAD_PROCESSES``. The bench reports; it never
fails on a missed target.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import bench_hubspot, bench_ingest, bench_salesforce
from tests.support.bench_baseline import BaselineRun
from tests.support.bench_hubspot import BurstRun
from tests.support.bench_procs import postgres_database, stored_event_keys, write_playbooks
from tests.support.hubspot import CLIENT_SECRET, TOKEN, FakeHubSpot, serve, standard_portal

PARTS = ("hubspot", "postgres", "salesforce", "ingest")
MB = 1024 * 1024 / 1_000_000  # MB per MiB: the target says MB


def setting(name: str, default: float) -> float:
    return float(os.environ.get(f"OFFBOARD_BENCH_{name}") or default)


@dataclass(frozen=True)
class Config:
    deals: int
    latency: float
    limit: int
    timeout: float
    ingest_seconds: float
    ingest_rounds: int
    connections: int
    load_processes: int
    big: bool
    big_deals: int
    big_timeout: float
    parts: tuple[str, ...]

    @classmethod
    def from_env(cls) -> Config:
        parts = os.environ.get("OFFBOARD_BENCH_ONLY") or ",".join(PARTS)
        return cls(
            deals=int(setting("DEALS", 300)),
            latency=setting("LATENCY", 0.15),
            limit=int(setting("LIMIT", 100)),
            timeout=setting("TIMEOUT", 120),
            ingest_seconds=setting("INGEST_SECONDS", 10),
            ingest_rounds=max(int(setting("INGEST_ROUNDS", 3)), 1),
            connections=int(setting("CONNECTIONS", 32)),
            load_processes=int(setting("LOAD_PROCESSES", 2)),
            big=os.environ.get("OFFBOARD_BENCH_BIG", "") not in ("", "0"),
            big_deals=int(setting("BIG_DEALS", 5000)),
            big_timeout=setting("BIG_TIMEOUT", 1800),
            parts=tuple(p.strip() for p in parts.split(",") if p.strip()),
        )


# --- the table ---------------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    offboard: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    ok: bool | None = None

    @property
    def verdict(self) -> str:
        return "" if self.ok is None else "PASS" if self.ok else "MISS"


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory: list[str] = field(default_factory=list)

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    def print(self, title: str, took: float) -> None:
        heads = ("measure", "Offboard", "baseline", "ratio", "target", "")
        cells = [heads] + [
            (r.measure, r.offboard, r.baseline, r.ratio, r.target, r.verdict) for r in self.rows
        ]
        widths = [max(len(c[n]) for c in cells) for n in range(len(heads))]
        print(f"\n{title}\n")
        for n, cell in enumerate(cells):
            print(" | ".join(text.ljust(widths[i]) for i, text in enumerate(cell)).rstrip())
            if n == 0:
                print("-+-".join("-" * w for w in widths))
        if self.memory:
            print("\npeak RSS per process (VmHWM):")
            for line in self.memory:
                print(f"  {line}")
        for note in self.notes:
            print(f"\nnote: {note}")
        print(f"\nbench took {took:.0f} s")


def ratio(value: float, base: float, unit: str = "x") -> str:
    if not base or math.isnan(value) or math.isnan(base):
        return "-"
    return f"{value / base * 100:.0f}%" if unit == "%" else f"{value / base:.1f}x"


def share(part: int, whole: int) -> str:
    return f"{part} ({part / whole * 100:.1f}%)" if whole else str(part)


# --- rows per part ---------------------------------------------------------------------------------


def burst_rows(run: BurstRun, base: BaselineRun | None, config: Config, *, calls_target: bool) -> list[Row]:
    tag = f"{run.label}: "
    base_rate = base.deals_per_s if base else float("nan")
    drained = f"{run.drained}/{run.deals}" + (" (timed out)" if run.timed_out else "")
    lost = "?" if run.lost is None else str(run.lost)
    twice = run.doubled + run.duplicate_markers
    rows = [
        Row(
            tag + f"deals/s ({drained})",
            f"{run.deals_per_s:.2f}",
            _f(base_rate),
            ratio(run.deals_per_s, base_rate),
            f"≥ 10x the baseline (≥ {10 * base_rate:.1f})" if base else "",
            run.deals_per_s >= 10 * base_rate if base else None,
        ),
        Row(
            tag + "calls per deal",
            f"{run.calls_per_deal:.2f}",
            _f(base.calls_per_deal if base else math.nan),
            ratio(run.calls_per_deal, base.calls_per_deal if base else math.nan),
            "≤ 0.5" if calls_target else "",
            run.calls_per_deal <= 0.5 if calls_target else None,
        ),
        Row(
            tag + "calls/s used",
            f"{run.calls / run.seconds:.1f}",
            f"{base.calls / base.seconds:.1f}" if base else "",
            "",
            f"budget {config.limit / 10:g}/s" if calls_target else "",
        ),
        Row(
            tag + "429s (share of calls)",
            share(run.refused, run.calls),
            share(base.refused, base.calls) if base else "",
            "",
            "< 1%",
            run.refused < 0.01 * run.calls if run.calls else None,
        ),
        Row(
            tag + "busiest 10 s (calls)",
            str(run.busiest_10s),
            str(base.busiest_10s) if base else "",
            "",
            f"≤ {config.limit}" if calls_target else "",
            run.busiest_10s <= config.limit if calls_target else None,
        ),
        Row(
            tag + "lost / twice",
            f"{lost} / {twice}",
            "",
            "",
            "0 / 0",
            None if run.lost is None else run.lost == 0 and twice == 0,
        ),
        Row(
            tag + "peak RSS, largest process",
            f"{run.peak_rss * MB:.0f} MB",
            "",
            "",
            "< 150 MB",
            run.peak_rss * MB < 150 if run.rss else None,
        ),
    ]
    return rows


def _f(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.2f}"


def record(report: Report, run: BurstRun, rows: list[Row]) -> None:
    """A burst's rows, each process's peak memory, and what went wrong on the way."""
    report.add(*rows)
    report.memory += [f"{run.label}: {name}: {mib * MB:.0f} MB" for name, mib in sorted(run.rss.items())]
    report.notes += run.notes
    failed = run.db.actions.get("failed", 0) if run.db else 0
    if failed:
        report.notes.append(f"{run.label}: {failed} actions failed (offboard failed lists them)")


# --- the parts ----------------------------------------------------------------------------------------


def run_baselines(
    config: Config, folder: Path, report: Report
) -> tuple[BaselineRun | None, BaselineRun | None]:
    """Both baselines at once: each on its own fake, both paced to the budget (they use little CPU)."""
    results: dict[str, BaselineRun] = {}

    def hubspot() -> None:
        site = bench_hubspot.portal(config.deals, latency=config.latency, limit=config.limit)
        try:
            results["hubspot"] = bench_hubspot.baseline(site, config.limit)
        finally:
            site.close()

    def salesforce() -> None:
        site = bench_salesforce.org_with_deals(
            config.deals, latency=config.latency, folder=folder / "sf-base"
        )
        try:
            results["salesforce"] = bench_salesforce.baseline(site, config.limit)
        finally:
            site.close()

    wanted = [("the HubSpot baseline", hubspot)] if {"hubspot", "postgres"} & set(config.parts) else []
    wanted += [("the Salesforce baseline", salesforce)] if "salesforce" in config.parts else []
    threads = [threading.Thread(target=guarded, args=(report, name, each)) for name, each in wanted]
    for each in threads:
        each.start()
    for each in threads:
        each.join()
    for name, run in results.items():
        if run.failures:
            report.notes.append(f"the {name} baseline: {len(run.failures)} failures, e.g. {run.failures[:3]}")
    return results.get("hubspot"), results.get("salesforce")


def hubspot_burst(
    config: Config, folder: Path, db_url: str, label: str, *, workers: int, deals: int, timeout: float
) -> BurstRun:
    site = bench_hubspot.portal(deals, latency=config.latency, limit=config.limit)
    try:
        env = bench_hubspot.offboard_env(db_url, site.url, folder / "playbooks", config.limit)
        logs = folder / label.replace(" ", "-").replace(",", "")
        return bench_hubspot.burst(label, site, env, logs, workers=workers, timeout=timeout)
    finally:
        site.close()


def salesforce_burst(config: Config, folder: Path) -> BurstRun:
    site = bench_salesforce.org_with_deals(config.deals, latency=config.latency, folder=folder / "sf")
    try:
        env = bench_salesforce.offboard_env(f"sqlite:///{folder / 'sf.db'}", site, folder / "playbooks")
        return bench_salesforce.burst(
            "Salesforce burst, SQLite", site, env, folder / "sf-logs", timeout=config.timeout
        )
    finally:
        site.close()


@dataclass
class Ingest:
    label: str
    load: bench_ingest.LoadRun
    missing: int  # 2xx-answered events not in the table (None for the bare app)


def ingest_offboard(config: Config, folder: Path, db_url: str, label: str) -> Ingest:
    from tests.support.server import ServerProcess

    fake = standard_portal(FakeHubSpot(limit_per_10s=1000))
    httpserver = _fake_server(fake)
    try:
        env = {
            "OFFBOARD_DATABASE_URL": db_url,
            "OFFBOARD_PLAYBOOKS": str(folder / "playbooks"),
            "OFFBOARD_SWEEP_INTERVAL_SECONDS": "0",
            "HUBSPOT_ACCESS_TOKEN": TOKEN,
            "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
            "HUBSPOT_API_BASE_URL": httpserver[1],
        }
        log = folder / f"ingest-{label.split()[-1].lower()}.log"
        server = ServerProcess(env, "--workers", "2", "--no-worker", log=log).start(timeout=60)
        try:
            target = bench_ingest.Target(server.port, f"{server.url}{bench_ingest.PATH}", CLIENT_SECRET)
            assert server.process is not None
            run = _load(config, target, server.process.pid)  # a session of its own: its pid is its group
        finally:
            server.stop()
    finally:
        httpserver[0].clear()
        httpserver[0].stop()
    stored = stored_event_keys(db_url, "hubspot")
    return Ingest(label, run, sum(1 for event_id in run.accepted if str(event_id) not in stored))


def _fake_server(fake: FakeHubSpot) -> tuple[Any, str]:
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    return server, serve(fake, server)


def ingest_bare(config: Config, folder: Path) -> Ingest:
    bare = bench_ingest.BareProcess(2, folder / "bare.log")
    try:
        target = bench_ingest.Target(bare.port, f"{bare.url}{bench_ingest.PATH}", CLIENT_SECRET)
        return Ingest("bare Flask", _load(config, target, bare.process.pid), 0)
    finally:
        bare.stop()


def _load(config: Config, target: bench_ingest.Target, group: int) -> bench_ingest.LoadRun:
    return bench_ingest.load(
        target,
        seconds=config.ingest_seconds,
        warmup=2.0,
        connections=config.connections,
        processes=config.load_processes,
        group=group,
    )


def ingest_rows(rounds: list[tuple[Ingest, Ingest]]) -> tuple[list[Row], str]:
    """The rows of the round with the median ratio (and a note of every round's ratio); the
    not-stored count is every round's."""
    ranked = sorted(rounds, key=lambda pair: pair[0].load.per_s / max(pair[1].load.per_s, 1e-9))
    run, bare = ranked[(len(ranked) - 1) // 2]  # the lower of two middles: never the better by choice
    ours, base = run.load, bare.load
    tag = f"ingest, {run.label}: "
    other = sum(
        n for one, _ in rounds for status, n in one.load.statuses.items() if not 200 <= status < 300
    ) + sum(one.load.errors for one, _ in rounds)
    missing = sum(one.missing for one, _ in rounds)
    each = ", ".join(
        f"{a:.0f} / {b:.0f} req/s ({ratio(a, b, '%')})"
        for a, b in ((one.load.per_s, base_run.load.per_s) for one, base_run in rounds)
    )
    note = f"ingest, {run.label}, each round (Offboard / bare Flask): {each}; the median round is shown"
    if ours.usage is not None and base.usage is not None:
        pg = ours.usage.postgres
        postgres = f", Postgres {ours.cpu_per_answer(pg):.0f} µs" if pg else ""
        note += (
            f". Where the time went in that round: server CPU per answered request "
            f"{ours.cpu_per_answer(ours.usage.server):.0f} µs (bare Flask "
            f"{base.cpu_per_answer(base.usage.server):.0f} µs){postgres}; the machine idle "
            f"{ours.usage.idle:.0%} of the time (bare Flask {base.usage.idle:.0%})"
        )
    rows = [
        Row(
            tag + "req/s (2xx)",
            f"{ours.per_s:.0f}",
            f"{base.per_s:.0f}",
            ratio(ours.per_s, base.per_s, "%"),
            "≥ 50% of bare Flask",
            ours.per_s >= 0.5 * base.per_s,
        ),
        Row(
            tag + "p50",
            f"{ours.percentile(0.5):.1f} ms",
            f"{base.percentile(0.5):.1f} ms",
            ratio(ours.percentile(0.5), base.percentile(0.5)),
        ),
        Row(
            tag + "p99",
            f"{ours.percentile(0.99):.1f} ms",
            f"{base.percentile(0.99):.1f} ms",
            ratio(ours.percentile(0.99), base.percentile(0.99)),
            "< 25 ms",
            ours.percentile(0.99) < 25,
        ),
        Row(
            tag + "2xx not stored / other answers (all rounds)",
            f"{missing} / {other}",
            "",
            "",
            "0 / 0",
            missing == 0 and other == 0,
        ),
    ]
    return rows, note


# --- running it -------------------------------------------------------------------------------------


def guarded(report: Report, what: str, step: Callable[[], None]) -> None:
    """One part; a part that breaks is reported and the others still run."""
    try:
        step()
    except Exception as exc:  # the bench reports, it does not stop
        report.notes.append(f"{what} did not run to the end: {type(exc).__name__}: {exc}")


def standard(config: Config, folder: Path, report: Report) -> None:
    hubspot_base, salesforce_base = run_baselines(config, folder, report)
    sqlite_run: BurstRun | None = None
    if "hubspot" in config.parts:

        def sqlite_part() -> None:
            nonlocal sqlite_run
            sqlite_run = hubspot_burst(
                config,
                folder,
                f"sqlite:///{folder / 'hubspot.db'}",
                "HubSpot burst, SQLite",
                workers=0,
                deals=config.deals,
                timeout=config.timeout,
            )
            record(report, sqlite_run, burst_rows(sqlite_run, hubspot_base, config, calls_target=True))

        guarded(report, "the HubSpot burst on SQLite", sqlite_part)
    if "postgres" in config.parts:
        guarded(
            report,
            "the HubSpot burst on Postgres",
            lambda: postgres_part(config, folder, report, hubspot_base, sqlite_run),
        )
    if "salesforce" in config.parts:

        def salesforce_part() -> None:
            run = salesforce_burst(config, folder)
            record(report, run, burst_rows(run, salesforce_base, config, calls_target=False))

        guarded(report, "the Salesforce burst", salesforce_part)
    if "ingest" in config.parts:
        guarded(report, "ingest", lambda: ingest_part(config, folder, report))


def postgres_part(
    config: Config, folder: Path, report: Report, base: BaselineRun | None, one_worker: BurstRun | None
) -> None:
    with postgres_database() as url:
        if url is None:
            report.notes.append("no Postgres server answered: the Postgres burst did not run")
            return
        run = hubspot_burst(
            config,
            folder,
            url,
            "HubSpot burst, Postgres, 2 workers",
            workers=2,
            deals=config.deals,
            timeout=config.timeout,
        )
    rows = burst_rows(run, base, config, calls_target=True)
    if one_worker is not None:
        rows.insert(
            1,
            Row(
                run.label + ": deals/s vs one worker (SQLite)",
                f"{run.deals_per_s:.2f}",
                f"{one_worker.deals_per_s:.2f}",
                ratio(run.deals_per_s, one_worker.deals_per_s),
                "≥ 1.0x",
                run.deals_per_s >= one_worker.deals_per_s,
            ),
        )
    record(report, run, rows)


def ingest_part(config: Config, folder: Path, report: Report) -> None:
    rounds: dict[str, list[tuple[Ingest, Ingest]]] = {"SQLite": [], "Postgres": []}
    for n in range(config.ingest_rounds):
        bare = ingest_bare(config, folder)
        sqlite = ingest_offboard(config, folder, f"sqlite:///{folder / f'ingest-{n}.db'}", "SQLite")
        rounds["SQLite"].append((sqlite, bare))
        with postgres_database() as url:
            if url is not None:
                rounds["Postgres"].append((ingest_offboard(config, folder, url, "Postgres"), bare))
    for label, measured in rounds.items():
        if not measured:
            report.notes.append(f"no {label} server answered: ingest on {label} did not run")
            continue
        rows, note = ingest_rows(measured)
        report.add(*rows)
        report.notes.append(note)


def big(config: Config, folder: Path, report: Report) -> None:
    def one(db_url: str, label: str, workers: int) -> None:
        run = hubspot_burst(
            config, folder, db_url, label, workers=workers, deals=config.big_deals, timeout=config.big_timeout
        )
        record(report, run, burst_rows(run, None, config, calls_target=True))

    guarded(
        report,
        "the big burst on SQLite",
        lambda: one(f"sqlite:///{folder / 'big.db'}", f"{config.big_deals} deals, SQLite", 0),
    )

    def postgres() -> None:
        with postgres_database() as url:
            if url is None:
                report.notes.append("no Postgres server answered: the big burst on Postgres did not run")
                return
            one(url, f"{config.big_deals} deals, Postgres, 2 workers", 2)

    guarded(report, "the big burst on Postgres", postgres)


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the HubSpot fake's server: one line a call
    config = Config.from_env()
    began = time.monotonic()
    report = Report()
    with tempfile.TemporaryDirectory(prefix="offboard-bench-") as tmp:
        folder = Path(tmp)
        write_playbooks(folder / "playbooks")
        if config.big:
            big(config, folder, report)
            latency = f"{config.latency * 1000:.0f} ms a call"
            title = f"Offboard memory bench: {config.big_deals} closed deals, {latency}"
        else:
            standard(config, folder, report)
            title = (
                f"Offboard bench: {config.deals} closed deals, {config.latency * 1000:.0f} ms a call, "
                f"{config.limit} calls / 10 s; ingest {config.connections} connections for "
                f"{config.ingest_seconds:.0f} s"
            )
    report.print(title, time.monotonic() - began)


if __name__ == "__main__":
    main()
