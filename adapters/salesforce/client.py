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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from adapters.salesforce.auth import Auth
from adapters.salesforce.budget import ApiBudget
from adapters.salesforce.errors import expired, translate
from connector import metrics

log = logging.getLogger("offboard.salesforce")
T = TypeVar("T")

API_VERSION = "59.0"
TIMEOUT_SECONDS = 30.0
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
    def __init__(self, auth: Auth, budget: ApiBudget, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.auth = auth
        self.budget = budget
        self.http = _Http(timeout)
        self.http.hooks["response"].append(self._observe)
        self._sf: Salesforce | None = None
        self._login_lock = threading.Lock()

    def call(self, operation: Callable[[Salesforce], T]) -> T:
        """Run ``operation`` on the connection; log in again once if the session expired."""
        for attempt in (1, 2):
            sf = self._connected()
            try:
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

    def rest(self, path: str, method: str = "GET", **kwargs: Any) -> Any:
        """A REST call under ``/services/data/vXX.X/``; None for 204 No Content."""
        return self.call(lambda sf: sf.restful(path, method=method, **kwargs))

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
