"""A burst of closed deals against the HubSpot fake: Offboard's processes, and the baseline.

The fake answers every call after ``latency`` seconds and refuses (429) past
``limit_per_10s`` calls in any rolling 10 s, as HubSpot does. A burst is N closed-won deals,
each with its company and contact, announced by signed webhooks in batches of 100 (HubSpot's
largest); it is drained when every deal has its three tasks and its contact got the NPS send.
What was written is read from the fake (HubSpot's side) and from the database.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pytest_httpserver import HTTPServer

from tests.support.bench_baseline import BaselineRun, Pacer, Tool
from tests.support.bench_procs import TITLES, DbView, Deployment, bench_title, wait_settled
from tests.support.helpers import days_from_today
from tests.support.hubspot import (
    CLIENT_SECRET,
    FINANCE,
    MARKETING,
    OWNER,
    TOKEN,
    FakeHubSpot,
    offboard_properties,
    serve,
    signed,
    stage_event,
    standard_portal,
)

SURVEY_REF = "offboard_survey_ref"  # the contact property that changes once per survey send
OWNERS = (OWNER, FINANCE, MARKETING)
WRITES = ("POST", "PATCH")


@dataclass
class Portal:
    fake: FakeHubSpot
    server: HTTPServer
    url: str
    deals: list[str]
    contacts: dict[str, str]  # deal → contact

    def close(self) -> None:
        self.server.clear()
        if self.server.is_running():
            self.server.stop()


def portal(deals: int, *, latency: float, limit: int) -> Portal:
    """A fake portal with ``deals`` closed-won deals, served from a threaded server."""
    fake = offboard_properties(standard_portal(FakeHubSpot(limit_per_10s=limit)))
    fake.latency = latency
    ids, contacts = seed(fake, deals)
    server = HTTPServer(host="127.0.0.1", threaded=True)
    server.start()
    return Portal(fake, server, serve(fake, server), ids, contacts)


def seed(fake: FakeHubSpot, deals: int) -> tuple[list[str], dict[str, str]]:
    """``deals`` closed-won deals closed today, each with its company and contact; the deal ids,
    and each deal's contact."""
    ids, contacts = [], {}
    for n in range(deals):
        company = fake.add_record("companies", {"name": f"Client {n}", "domain": f"client{n}.example"})
        contact = fake.add_record(
            "contacts", {"email": f"pat{n}@client{n}.example", "firstname": "Pat", "lastname": f"Lee{n}"}
        )
        deal = fake.add_record(
            "deals",
            {
                "dealname": f"Client {n} website",
                "amount": "24000",
                "pipeline": "default",
                "dealstage": "closedwon",
                "closedate": f"{days_from_today()}T10:00:00.000Z",
                "hubspot_owner_id": OWNERS[n % len(OWNERS)],
                "contract_type": "project",
                "contract_end_date": days_from_today(41),
            },
            links=[("companies", company, 5), ("contacts", contact, 3)],
        )
        ids.append(deal)
        contacts[deal] = contact
    return ids, contacts


def offboard_env(db_url: str, fake_url: str, playbooks: Path, limit: int) -> dict[str, str]:
    """A deployment's settings for one HubSpot portal; everything else at its default."""
    return {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(playbooks),
        "OFFBOARD_SWEEP_INTERVAL_SECONDS": "0",  # only the webhooks start runs
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": fake_url,
        "HUBSPOT_RATE_LIMIT_PER_10S": str(limit),
    }


# --- what the fake holds --------------------------------------------------------------------


@dataclass
class Written:
    """Per deal, what HubSpot holds of the bench playbook's work."""

    done: int  # deals with their three tasks and the NPS send
    doubled: int  # deals with a task, or a survey send, twice
    duplicate_markers: int  # tasks whose idempotency marker another task carries too


def written(fake: FakeHubSpot, contacts: dict[str, str]) -> Written:
    with fake._lock:  # a consistent view while the processes write
        tasks = [(dict(r.properties), list(fake.linked(r, "deals"))) for r in fake.records("tasks")]
        sends = {c: len(fake.objects["contacts"][c].history.get(SURVEY_REF, [])) for c in contacts.values()}
    per_deal: Counter[tuple[str, str]] = Counter()
    markers: Counter[tuple[str, str]] = Counter()
    marker = _marker_pattern()
    for properties, deals in tasks:
        title = bench_title(properties.get("hs_task_subject") or "")
        for deal in deals:
            if title:
                per_deal[(deal, title)] += 1
        found = marker.search(properties.get("hs_task_body") or "") if marker else None
        if found:
            markers[(found.group(1), found.group(2))] += 1
    done = doubled = 0
    for deal, contact in contacts.items():
        counts = [per_deal[(deal, title)] for title in TITLES]
        done += all(counts) and sends[contact] >= 1
        doubled += any(n > 1 for n in counts) or sends[contact] > 1
    return Written(done, doubled, sum(1 for n in markers.values() if n > 1))


def _marker_pattern() -> Any:
    """The marker Offboard writes in a task's body, if this version writes one."""
    try:
        from adapters.hubspot.records import MARKER
    except ImportError:
        return None
    return MARKER


# --- Offboard's burst ---------------------------------------------------------------------------


@dataclass
class BurstRun:
    label: str
    deals: int
    drained: int
    seconds: float
    calls: int
    refused: int  # 429s
    busiest_10s: int
    doubled: int
    duplicate_markers: int
    timed_out: bool
    db: DbView | None
    rss: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def deals_per_s(self) -> float:
        return self.drained / self.seconds if self.seconds else 0.0

    @property
    def calls_per_deal(self) -> float:
        return self.calls / self.drained if self.drained else float("nan")

    @property
    def refused_share(self) -> float:
        return self.refused / self.calls if self.calls else 0.0

    @property
    def lost(self) -> int | None:
        return None if self.timed_out else self.deals - self.drained

    @property
    def peak_rss(self) -> float:
        return max(self.rss.values(), default=0.0)


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = 10) -> int | None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def deliver(url: str, deals: list[str]) -> float:
    """Every deal's closedwon event, signed, in batches of 100, each until a 2xx; when the first
    was accepted (time.monotonic())."""
    events = [stage_event(deal, "closedwon", event_id=n + 1) for n, deal in enumerate(deals)]
    first: float | None = None
    for start in range(0, len(events), 100):
        batch = events[start : start + 100]
        for _attempt in range(50):
            body, headers = signed(batch, url=url, at=datetime.now(UTC))
            status = post(url, body, headers)
            if status is not None and 200 <= status < 300:
                first = first if first is not None else time.monotonic()
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"a webhook batch was never accepted (last answer {status})")
    assert first is not None
    return first


def burst(
    label: str, site: Portal, env: dict[str, str], logs: Path, *, workers: int, timeout: float
) -> BurstRun:
    """Start the deployment, deliver the burst, wait until it drains (or ``timeout``), stop it."""
    deployment = Deployment.start(env, logs, workers=workers)
    notes: list[str] = []
    try:
        started = deliver(f"{deployment.server.url}/webhooks/hubspot", site.deals)
        seen = wait_drained(site, deployment, started + timeout)
        timed_out = seen.done < len(site.deals)
        if timed_out:
            notes.append(
                f"{label}: timed out after {timeout:.0f} s with {seen.done}/{len(site.deals)} drained"
            )
        view = wait_settled(env["OFFBOARD_DATABASE_URL"], timeout=0 if timed_out else 30)
        if not deployment.alive():
            notes.append(f"{label}: a process exited during the burst\n{deployment.tail()}")
    finally:
        deployment.stop()
    seen = written(site.fake, site.contacts)
    log = list(site.fake.log)
    end = last_write(log, started)
    return BurstRun(
        label=label,
        deals=len(site.deals),
        drained=seen.done,
        seconds=max(end - started, 1e-9),
        calls=len(log),
        refused=sum(1 for _at, _route, status in log if status == 429),
        busiest_10s=site.fake.max_in_window(10.0),
        doubled=seen.doubled + view.doubled_runs,
        duplicate_markers=seen.duplicate_markers,
        timed_out=timed_out,
        db=view,
        rss={name: mib for name, mib in deployment.rss.peaks.values()},
        notes=notes,
    )


def wait_drained(site: Portal, deployment: Deployment, deadline: float) -> Written:
    while True:
        site.server.clear_log()  # pytest-httpserver keeps every request otherwise
        seen = written(site.fake, site.contacts)
        if seen.done >= len(site.deals) or time.monotonic() > deadline or not deployment.alive():
            return seen
        time.sleep(0.5)


def last_write(log: list[tuple[datetime, str, Any]], started: float) -> float:
    """When the last successful write reached the fake, on the time.monotonic() scale."""
    writes = [
        at
        for at, route, status in log
        if route.split()[0] in WRITES and "/search" not in route and "/batch/read" not in route
        if isinstance(status, int) and status < 300
    ]
    if not writes:
        return started
    offset = time.monotonic() - datetime.now(UTC).timestamp()
    return max(writes).timestamp() + offset


# --- the baseline -------------------------------------------------------------------------------


def baseline(site: Portal, limit: int) -> BaselineRun:
    """The one-call-per-record tool on its own portal: six calls a deal, paced to ``limit`` / 10 s."""
    base = site.url
    api = f"{base}/crm/v3/objects"

    def prepare(session: Any) -> None:
        session.headers.update({"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})

    tool = Tool(Pacer(limit), prepare)

    def work(session: Any, deal_id: str) -> None:
        read = f"{api}/deals/{deal_id}?properties=dealname,hubspot_owner_id&associations=contacts,companies"
        deal = tool.call(session, "GET", read).json()
        owner = deal["properties"].get("hubspot_owner_id")
        contact_id = deal["associations"]["contacts"]["results"][0]["id"]
        contact = tool.call(session, "GET", f"{api}/contacts/{contact_id}?properties=email,firstname").json()
        now = int(time.time() * 1000)
        for n, title in enumerate(TITLES):
            task = {
                "properties": {
                    "hs_timestamp": str(now + (n + 3) * 86_400_000),
                    "hs_task_subject": f"{title} ({deal['properties'].get('dealname')})",
                    "hs_task_body": f"For {contact['properties'].get('email')}",
                    "hs_task_status": "NOT_STARTED",
                    "hubspot_owner_id": owner,
                },
                "associations": [
                    {
                        "to": {"id": deal_id},
                        "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 216}],
                    }
                ],
            }
            tool.call(session, "POST", f"{api}/tasks", data=json.dumps(task))
        survey = {
            "offboard_survey_kind": "nps",
            "offboard_survey_link": f"https://bench.example/s/{deal_id}",
            "offboard_survey_sent_at": str(now),
            SURVEY_REF: f"bench-{deal_id}",
        }
        tool.call(session, "PATCH", f"{api}/contacts/{contact_id}", data=json.dumps({"properties": survey}))

    run = tool.run(site.deals, work)
    run.busiest_10s = site.fake.max_in_window(10.0)
    seen = written(site.fake, site.contacts)
    if seen.done != len(site.deals):
        run.failures.append(f"the baseline wrote {seen.done} of {len(site.deals)} deals")
    return run
