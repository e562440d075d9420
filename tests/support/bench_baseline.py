"""The one-call-per-record tool the benchmark measures Offboard against.

For each deal it reads what it needs and writes each record with its own call: two reads
(the deal with its associations, the contact), one create per task (three), one write for
the NPS send: six calls a deal. It keeps several deals in flight (threads) and paces itself
to the CRM account's budget, so the budget, not the latency, sets its rate: at 100 calls per
10 s that is 10 calls/s, 1.67 deals/s.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import requests

THREADS = 8
# The fake stamps a call when it arrives, a moment after the tool counted it: this much room
# keeps a paced tool inside the CRM's rolling window.
MARGIN_SECONDS = 0.25


class Pacer:
    """At most ``limit`` calls in any rolling ``window`` seconds, shared by every thread."""

    def __init__(self, limit: int, window: float = 10.0) -> None:
        self.limit, self.window = limit, window + MARGIN_SECONDS
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                while self._sent and self._sent[0] <= now - self.window:
                    self._sent.popleft()
                if len(self._sent) < self.limit:
                    self._sent.append(now)
                    return
                wait = self._sent[0] + self.window - now
            time.sleep(max(wait, 0.001))


@dataclass
class BaselineRun:
    deals: int
    seconds: float
    calls: int
    refused: int  # 429s (or Salesforce's limit answers) the tool got and waited out
    failures: list[str]
    busiest_10s: int = 0  # the most calls the CRM received in any 10 s

    @property
    def deals_per_s(self) -> float:
        return self.deals / self.seconds if self.seconds else 0.0

    @property
    def calls_per_deal(self) -> float:
        return self.calls / self.deals if self.deals else 0.0


class Tool:
    """The loop: ``work(session, call, deal)`` does one deal; ``call`` paces and sends each request."""

    def __init__(self, pacer: Pacer, prepare: Callable[[requests.Session], None]) -> None:
        self.pacer, self.prepare = pacer, prepare
        self.calls = self.refused = 0
        self.failures: list[str] = []
        self._lock = threading.Lock()

    def call(self, session: requests.Session, method: str, url: str, **kwargs: object) -> requests.Response:
        for _attempt in range(20):
            self.pacer.acquire()
            answer = session.request(method, url, timeout=30, verify=session.verify, **kwargs)  # type: ignore[arg-type]
            with self._lock:
                self.calls += 1
            if answer.status_code != 429:
                if answer.status_code >= 300:
                    raise RuntimeError(f"{method} {url}: {answer.status_code} {answer.text[:300]}")
                return answer
            with self._lock:
                self.refused += 1
            time.sleep(1.0)
        raise RuntimeError(f"{method} {url}: still refused after 20 tries")

    def run(self, deals: list[str], work: Callable[[requests.Session, str], None]) -> BaselineRun:
        todo: queue.Queue[str] = queue.Queue()
        for deal in deals:
            todo.put(deal)

        def thread() -> None:
            with requests.Session() as session:
                self.prepare(session)
                while True:
                    try:
                        deal = todo.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        work(session, deal)
                    except Exception as exc:  # counted and shown, not raised
                        with self._lock:
                            self.failures.append(f"{deal}: {exc}")

        started = time.monotonic()
        threads = [threading.Thread(target=thread, name=f"baseline-{n}") for n in range(THREADS)]
        for each in threads:
            each.start()
        for each in threads:
            each.join()
        return BaselineRun(len(deals), time.monotonic() - started, self.calls, self.refused, self.failures)
