"""One Salesforce connection: lazy login, one re-login on an expired session, errors translated.

An expired session (401 ``INVALID_SESSION_ID``) is renewed once, through the
auth mode's own login (refresh token, JWT, client credentials or password),
and the call is made again; a plain session id cannot be renewed, and the
error says so and what to set instead. The worker's loop and its sweep thread
share one connection: a session that expires under both is renewed once, by
whichever notices first, and the other goes on with the new one.

Every call goes through ``call`` so each answer's ``Sforce-Limit-Info`` reaches
the budget (a response hook on the requests session sees every response,
refusals included, which ``sf.api_usage`` does not) and every SDK exception
leaves as the port's error tree.

Calls are kept in flight together, so the CRM's latency does not set the pace: ``each``
runs independent calls (one email each, say) on a small pool of threads, and at most
``CALLS_IN_FLIGHT`` calls of one connection, from every thread of the process together, are
in flight at once. Salesforce has no short-term rate limit, but allows an org 25 requests
running longer than 20 seconds at a time: two workers at the bound stay under it even if the
org slows down. The threads share one requests session: requests' connection pool (urllib3's)
is thread-safe, simple-salesforce copies its headers for each call (its one write per call is
a single assignment of the last usage it read), and nothing changes the session's settings
once it is made. The pool keeps as many connections as calls may be in flight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from adapters.salesforce.auth import Auth
from adapters.salesforce.budget import ApiBudget
from adapters.salesforce.errors import expired, translate
from connector import metrics

log = logging.getLogger("offboard.salesforce")
T = TypeVar("T")
A = TypeVar("A")

API_VERSION = "59.0"
TIMEOUT_SECONDS = 30.0
CALLS_IN_FLIGHT = 10  # a connection's calls in flight at once, every thread of the process together
CANNOT_RENEW = (
    "a session id (SALESFORCE_ACCESS_TOKEN) cannot be renewed: set SALESFORCE_REFRESH_TOKEN and "
    "SALESFORCE_CONSUMER_KEY, or another login mode, so Offboard can renew it"
)


class _Http(requests.Session):
    """A requests session with a timeout on every call: simple-salesforce sets none."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(*args, **kwargs)


class SalesforceClient:
    def __init__(
        self,
        auth: Auth,
        budget: ApiBudget,
        *,
        timeout: float = TIMEOUT_SECONDS,
        in_flight: int | None = None,
    ) -> None:
        self.auth = auth
        self.budget = budget
        self.in_flight = max(1, CALLS_IN_FLIGHT if in_flight is None else in_flight)
        self.http = _Http(timeout)
        self.http.mount("https://", HTTPAdapter(pool_maxsize=self.in_flight))
        self.http.hooks["response"].append(self._observe)
        self._sf: Salesforce | None = None
        self._login_lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(self.in_flight)

    def call(self, operation: Callable[[Salesforce], T]) -> T:
        """Run ``operation`` on the connection; log in again once if the session expired."""
        for attempt in (1, 2):
            sf = self._connected()
            try:
                with self._slots:
                    return operation(sf)
            except SalesforceExpiredSession as exc:
                if not self.auth.renewable:
                    raise expired(exc, CANNOT_RENEW) from exc
                if attempt == 2:
                    why = f"it expired again right after a new login ({self.auth.mode} auth)"
                    raise expired(exc, why) from exc
                self._drop(sf)
            except (SalesforceError, requests.RequestException) as exc:
                raise translate(exc) from exc
        raise AssertionError("unreachable")

    def each(self, work: Callable[[A], T], items: Sequence[A]) -> list[T]:
        """``work`` on every item, up to ``in_flight`` at once; the results in the items' order.

        For calls that do not depend on each other. ``work`` should return its item's outcome,
        errors included, rather than raise: an exception reaches the caller only once every
        item's work has ended, and the others' outcomes are then lost to it.
        """
        if len(items) <= 1 or self.in_flight == 1:
            return [work(item) for item in items]
        with ThreadPoolExecutor(min(self.in_flight, len(items)), thread_name_prefix="salesforce") as pool:
            return list(pool.map(work, items))

    def rest(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        """A REST call under ``/services/data/vXX.X/``; None for 204 No Content."""
        return self.call(lambda sf: sf.restful(path, method=method, **kwargs))

    def instance(self) -> str:
        """The org's instance host (``acme.my.salesforce.com``), logging in first if need be."""
        return str(self._connected().sf_instance)

    def query(self, soql: str) -> list[dict[str, Any]]:
        return list(self.query_pages(soql))

    def query_pages(self, soql: str) -> Iterator[dict[str, Any]]:
        """Every record of a query, a page at a time (nextRecordsUrl), each page its own call."""
        page = self.call(lambda sf: sf.query(soql))
        while True:
            yield from page["records"]
            if page.get("done", True):
                return
            page = self._next_page(page["nextRecordsUrl"])

    def _next_page(self, url: str) -> dict[str, Any]:
        page: dict[str, Any] = self.call(lambda sf: sf.query_more(url, identifier_is_url=True))
        return page

    def _connected(self) -> Salesforce:
        with self._login_lock:
            current = self.auth.current
            if self._sf is not None and current is not None and current() != self._sf.session_id:
                self._sf = None  # the keeper renewed the session before it timed out
            if self._sf is None:
                try:
                    session_id, instance = self.auth.login(self.http)
                except (SalesforceError, requests.RequestException) as exc:
                    raise translate(exc) from exc
                self._sf = Salesforce(
                    session_id=session_id, instance=instance, session=self.http, version=API_VERSION
                )
            return self._sf

    def _drop(self, expired_sf: Salesforce) -> None:
        """Forget an expired session, unless another thread has already put a new one in its place."""
        with self._login_lock:
            if self._sf is expired_sf:
                log.info("salesforce session expired; logging in again (%s auth)", self.auth.mode)
                self._sf = None

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        metrics.crm_call("salesforce", response.status_code)
        self.budget.observe(response.headers.get("Sforce-Limit-Info"))
