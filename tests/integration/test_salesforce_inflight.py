"""Calls in flight together, against the fake org over local TLS: the emails of a batch are
sent at once, each call with its own outcome, and never more calls of one connection are in
flight than its bound, whichever threads make them.

The fake's server is watched: how many ``emailSimple`` calls are inside it at once, and, where
a test says so, each such call is held until a given number of them have arrived (a serial
sender would never get there, and the test would see the wait give up).
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

import adapters.salesforce.client as client_module
from adapters.base import Write
from adapters.salesforce.adapter import SalesforceAdapter
from connector.errors import CrmPermanent, OutcomeUnknown
from connector.models import Invite
from tests.support.faults import Fault
from tests.support.helpers import make_settings
from tests.support.salesforce import FakeSalesforce, Seeded, TlsServer, session_settings

EMAIL = "actions/standard/emailSimple"
EARLIER = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)  # when an attempt whose outcome is unknown ended
HOLD_SECONDS = 10.0  # how long a held call waits for the others before the test counts it as alone


class Watch:
    """Counts the ``emailSimple`` calls inside the fake's server at once; with ``hold(n)``, each
    waits until ``n`` are inside together (a reusable barrier, so every n-th call is let go)."""

    def __init__(self, tls: TlsServer) -> None:
        self.now = self.most = self.alone = 0
        self.lock = threading.Lock()
        self.barrier: threading.Barrier | None = None
        watch, base = self, tls.httpd.RequestHandlerClass

        class Watched(base):  # type: ignore[valid-type,misc]
            def _serve(self) -> None:
                if not self.path.endswith(EMAIL):
                    super()._serve()
                    return
                with watch.lock:
                    watch.now += 1
                    watch.most = max(watch.most, watch.now)
                try:
                    watch.wait()
                    super()._serve()
                finally:
                    with watch.lock:
                        watch.now -= 1

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        tls.httpd.RequestHandlerClass = Watched

    def hold(self, together: int) -> None:
        self.barrier = threading.Barrier(together, timeout=HOLD_SECONDS)

    def wait(self) -> None:
        if self.barrier is None:
            return
        try:
            self.barrier.wait()
        except threading.BrokenBarrierError:
            with self.lock:
                self.alone += 1


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def tls(org: FakeSalesforce, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[TlsServer]:
    with TlsServer(org, tmp_path) as served:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", served.ca_file)
        yield served


@pytest.fixture
def watch(tls: TlsServer) -> Watch:
    return Watch(tls)


def adapter_for(org: FakeSalesforce, tmp_path: Any) -> SalesforceAdapter:
    """A new adapter: a new process, which knows nothing of earlier attempts."""
    values = {**session_settings(org), "OFFBOARD_TIMEZONE": "Europe/Paris"}
    return SalesforceAdapter.from_settings(make_settings(f"sqlite:///{tmp_path}/unused.db", **values))


@pytest.fixture
def sf(org: FakeSalesforce, tls: TlsServer, tmp_path: Any) -> SalesforceAdapter:
    return adapter_for(org, tmp_path)


def deals(org: FakeSalesforce, count: int, start: int = 0) -> list[Seeded]:
    return [
        org.add_opportunity(
            f"Deal {n}", account=f"Client {n}", contacts=((f"Pat{n}", "Lee", f"pat{n}@c{n}.example"),)
        )
        for n in range(start, start + count)
    ]


def key(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def sends(seeds: list[Seeded], start: int = 0, email: dict[int, str] | None = None) -> list[Write[Invite]]:
    """An NPS send by email to each deal's contact (as ``deals`` made them); ``email`` overrides some."""
    writes = []
    for n, seed in enumerate(seeds, start=start):
        invite = Invite(
            step_id="exit-nps",
            kind="nps",
            deal_id=seed.opportunity,
            contact_id=seed.contacts[0],
            email=(email or {}).get(n, f"pat{n}@c{n}.example"),
            link=f"https://offboard.example/s/{n}",
        )
        writes.append(Write(key(f"send-{n}"), invite))
    return writes


def sent_to(org: FakeSalesforce) -> Counter[str]:
    return Counter(str(e["emailAddresses"]) for e in org.emails)


def logged(org: FakeSalesforce) -> list[dict[str, Any]]:
    return org.records("Task", Status="Completed")


def test_the_emails_of_a_batch_are_in_flight_together(org, sf, watch):
    seeds = deals(org, 6)
    watch.hold(6)  # each email call waits inside the org until all six are there
    results = sf.send_invites_many(sends(seeds))
    assert watch.alone == 0 and watch.most == 6
    assert sorted(results) == sorted(t["Id"] for t in logged(org))  # type: ignore[type-var]
    assert sent_to(org) == Counter(f"pat{n}@c{n}.example" for n in range(6))
    assert org.count("POST", EMAIL) == 6  # one email a call
    assert org.count("POST", "composite/sobjects") == 1  # the six log Tasks together


def test_a_refused_email_among_those_in_flight_fails_only_its_send(org, sf, watch):
    seeds = deals(org, 6)
    writes = sends(seeds, email={2: "pat2-at-nowhere"})
    watch.hold(6)
    results = sf.send_invites_many(writes)
    assert watch.alone == 0
    refused = results[2]
    assert isinstance(refused, CrmPermanent) and "INVALID_EMAIL_ADDRESS" in str(refused)
    assert sent_to(org) == Counter(f"pat{n}@c{n}.example" for n in (0, 1, 3, 4, 5))
    tasks = {t["Id"]: t for t in logged(org)}
    for n in (0, 1, 3, 4, 5):
        assert tasks[results[n]]["WhoId"] == seeds[n].contacts[0]  # type: ignore[index]
    assert len(tasks) == 5  # the refused send is not logged
    watch.barrier = None
    again = sf.send_invites_many(writes)  # the core tries them again: only the refused one calls
    assert again[:2] + again[3:] == results[:2] + results[3:] and isinstance(again[2], CrmPermanent)
    assert org.count("POST", EMAIL) == 7 and len(org.emails) == 5


def test_a_lost_reply_on_one_email_in_flight_leaves_only_that_send_unsure(org, sf, watch, tmp_path):
    seeds = deals(org, 6)
    writes = sends(seeds)
    org.inject(Fault.LOST_REPLY, match=f"POST {EMAIL}")  # one of the six, whichever the org does first
    watch.hold(6)
    results = sf.send_invites_many(writes)
    assert watch.alone == 0
    lost = [n for n, r in enumerate(results) if isinstance(r, OutcomeUnknown)]
    assert len(lost) == 1  # the org sent it; its answer never came
    assert len(org.emails) == 6 and len(logged(org)) == 5
    watch.barrier = None
    # The core retries the six in another process, each marked unsure: the five logged sends are
    # found by their markers and not sent again; only the one whose reply was lost is tried again
    # (a resend is better than a silent gap in the playbook).
    unsure = [Write(w.key, w.item, EARLIER) for w in writes]
    again = adapter_for(org, tmp_path).send_invites_many(unsure)
    assert [again[n] for n in range(6) if n not in lost] == [results[n] for n in range(6) if n not in lost]
    assert all(isinstance(r, str) for r in again) and len(logged(org)) == 6
    counts = sent_to(org)
    assert all(counts[f"pat{n}@c{n}.example"] == 1 for n in range(6) if n not in lost)


def test_never_more_calls_in_flight_than_the_bound_from_every_thread_together(
    org, tls, watch, tmp_path, monkeypatch
):
    monkeypatch.setattr(client_module, "CALLS_IN_FLIGHT", 3)
    sf = adapter_for(org, tmp_path)
    assert sf.client.in_flight == 3
    first, second = deals(org, 6), deals(org, 6, start=6)
    watch.hold(3)  # three at a time are let go together: the bound is reached
    org.latency = 0.2  # and each stays in flight a while, so a fourth would be seen
    batches = [sends(first), sends(second, start=6)]
    results: list[Any] = [None, None]

    def send(n: int) -> None:
        results[n] = sf.send_invites_many(batches[n])

    threads = [threading.Thread(target=send, args=(n,)) for n in range(2)]  # two groups of one worker
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert watch.alone == 0 and watch.most == 3
    assert len(org.emails) == 12 and len(logged(org)) == 12
    assert all(isinstance(r, str) for batch in results for r in batch)
