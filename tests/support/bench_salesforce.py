"""The same burst against the Salesforce fake: Offboard's process, and the baseline.

The fake org answers over local TLS after ``latency`` seconds. Salesforce has no 10-second
limit (its allocation is daily), so Offboard runs at whatever pace it keeps; the baseline
paces itself to the same budget as on HubSpot, so the two CRMs' figures compare. A deal is
drained when its Opportunity has its three tasks and its primary contact got the NPS email.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from tests.support.bench_baseline import BaselineRun, Pacer, Tool
from tests.support.bench_hubspot import BurstRun, post
from tests.support.bench_procs import TITLES, Deployment, bench_title, wait_settled
from tests.support.helpers import days_from_today
from tests.support.salesforce import (
    API_VERSION,
    OUTBOUND_PATH,
    FakeSalesforce,
    TlsServer,
    opportunity_fields,
    outbound_message,
    session_settings,
)

OWNERS = ("Sam Rivera", "Fin Ance", "Mia Marketing")


@dataclass
class Org:
    org: FakeSalesforce
    tls: TlsServer
    deals: list[str]
    emails: dict[str, str]  # opportunity → its primary contact's email

    def close(self) -> None:
        self.tls.__exit__(None, None, None)


def org_with_deals(deals: int, *, latency: float, folder: Path) -> Org:
    org = FakeSalesforce()
    ids, emails = [], {}
    for n in range(deals):
        email = f"pat{n}@client{n}.example"
        seeded = org.add_opportunity(
            f"Client {n} website",
            account=f"Client {n}",
            website=f"https://client{n}.example",
            owner=OWNERS[n % len(OWNERS)],
            contacts=(("Pat", f"Lee{n}", email),),
            close_date=days_from_today(),
            contract_end=days_from_today(41),
        )
        ids.append(seeded.opportunity)
        emails[seeded.opportunity] = email
    org.latency = latency
    folder.mkdir(parents=True, exist_ok=True)
    tls = TlsServer(org, folder).__enter__()
    return Org(org, tls, ids, emails)


def offboard_env(db_url: str, site: Org, playbooks: Path) -> dict[str, str]:
    return {
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_PLAYBOOKS": str(playbooks),
        "OFFBOARD_SWEEP_INTERVAL_SECONDS": "0",
        "REQUESTS_CA_BUNDLE": site.tls.ca_file,
        **session_settings(site.org),
    }


@dataclass
class Written:
    done: int
    doubled: int


def written(site: Org) -> Written:
    with site.org._lock:
        tasks = [(t.get("WhatId"), t.get("Subject") or "") for t in site.org.records("Task")]
        emails = [str(e.get("emailAddresses") or "") for e in site.org.emails]
    per_deal: Counter[tuple[str, str]] = Counter()
    for what, subject in tasks:
        title = bench_title(subject)
        if title and what:
            per_deal[(what, title)] += 1
    sent: Counter[str] = Counter()
    for addresses in emails:
        for address in addresses.split(","):
            sent[address.strip()] += 1
    done = doubled = 0
    for deal, email in site.emails.items():
        counts = [per_deal[(deal, title)] for title in TITLES]
        done += all(counts) and sent[email] >= 1
        doubled += any(n > 1 for n in counts) or sent[email] > 1
    return Written(done, doubled)


def deliver(url: str, site: Org) -> float:
    """Outbound messages of up to 100 notifications (Salesforce's largest), each until a 2xx."""
    first: float | None = None
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
    for start in range(0, len(site.deals), 100):
        notes = [
            (f"04l5g{n:010d}AAA", opportunity_fields(site.org, deal))
            for n, deal in enumerate(site.deals[start : start + 100], start=start + 1)
        ]
        body = outbound_message(notes)
        for _attempt in range(50):
            status = post(url, body, headers)
            if status is not None and 200 <= status < 300:
                first = first if first is not None else time.monotonic()
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"an outbound message was never acknowledged (last answer {status})")
    assert first is not None
    return first


def burst(label: str, site: Org, env: dict[str, str], logs: Path, *, timeout: float) -> BurstRun:
    deployment = Deployment.start(env, logs)
    notes: list[str] = []
    try:
        started = deliver(f"{deployment.server.url}{OUTBOUND_PATH}", site)
        deadline = started + timeout
        while True:
            seen = written(site)
            if seen.done >= len(site.deals) or time.monotonic() > deadline or not deployment.alive():
                break
            time.sleep(0.5)
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
    seen = written(site)
    log = list(site.org.log)
    api = [(at, call, status) for at, call, status in log if " /services/" not in call]  # no logins
    writes = [at for at, call, status in api if not call.startswith("GET") and 0 < status < 300]
    offset = time.monotonic() - time.time()
    end = max(writes).timestamp() + offset if writes else started
    return BurstRun(
        label=label,
        deals=len(site.deals),
        drained=seen.done,
        seconds=max(end - started, 1e-9),
        calls=len(api),
        refused=sum(1 for _at, _call, status in api if status in (403, 429)),
        busiest_10s=_busiest(api),
        doubled=seen.doubled + view.doubled_runs,
        duplicate_markers=0,
        timed_out=timed_out,
        db=view,
        rss={name: mib for name, mib in deployment.rss.peaks.values()},
        notes=notes,
    )


def _busiest(log: list[tuple[Any, str, int]]) -> int:
    times = sorted(at.timestamp() for at, _call, _status in log)
    most, start = 0, 0
    for end, at in enumerate(times):
        while times[start] <= at - 10.0:
            start += 1
        most = max(most, end - start + 1)
    return most


def baseline(site: Org, limit: int) -> BaselineRun:
    """Six calls a deal, paced to ``limit`` calls per 10 s: two SOQL reads, a Task per task, one email."""
    api = f"{site.tls.url}/services/data/v{API_VERSION}"

    def prepare(session: Any) -> None:
        session.verify = site.tls.ca_file
        session.headers.update(
            {"Authorization": f"Bearer {site.org.access_token}", "Content-Type": "application/json"}
        )

    tool = Tool(Pacer(limit), prepare)

    def query(session: Any, soql: str) -> list[dict[str, Any]]:
        return list(tool.call(session, "GET", f"{api}/query?q={quote(soql)}").json()["records"])

    def work(session: Any, deal: str) -> None:
        opportunity = query(
            session, f"SELECT Id, Name, OwnerId, Account.Name FROM Opportunity WHERE Id = '{deal}'"
        )[0]
        role = query(
            session,
            "SELECT ContactId, Contact.Email, Contact.FirstName FROM OpportunityContactRole "
            f"WHERE OpportunityId = '{deal}' AND IsPrimary = true",
        )[0]
        for n, title in enumerate(TITLES):
            task = {
                "Subject": f"{title} ({opportunity['Name']})",
                "WhatId": deal,
                "WhoId": role["ContactId"],
                "OwnerId": opportunity["OwnerId"],
                "ActivityDate": days_from_today(3 + n),
                "Status": "Not Started",
                "Priority": "Normal",
            }
            tool.call(session, "POST", f"{api}/sobjects/Task", data=json.dumps(task))
        email = {
            "emailAddresses": role["Contact"]["Email"],
            "emailSubject": "One quick question",
            "emailBody": f"How likely are you to recommend us? https://bench.example/s/{deal}",
        }
        tool.call(
            session, "POST", f"{api}/actions/standard/emailSimple", data=json.dumps({"inputs": [email]})
        )

    run = tool.run(site.deals, work)
    run.busiest_10s = _busiest(list(site.org.log))
    seen = written(site)
    if seen.done != len(site.deals):
        run.failures.append(f"the baseline wrote {seen.done} of {len(site.deals)} deals")
    return run
