"""One Salesforce connection: lazy login, one re-login on an expired session, errors translated.

Every call goes through ``call`` so each answer's ``Sforce-Limit-Info`` reaches
the budget (a response hook on the requests session sees every response,
refusals included, which ``sf.api_usage`` does not) and every SDK exception
leaves as the port's error tree.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceError, SalesforceExpiredSession

from adapters.salesforce.auth import Auth
from adapters.salesforce.budget import ApiBudget
from adapters.salesforce.errors import translate

log = logging.getLogger("offboard.salesforce")
T = TypeVar("T")

API_VERSION = "59.0"
TIMEOUT_SECONDS = 30.0


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

    def call(self, operation: Callable[[Salesforce], T]) -> T:
        """Run ``operation`` on the connection; log in again once if the session expired."""
        for attempt in (1, 2):
            try:
                return operation(self._connected())
            except SalesforceExpiredSession as exc:
                if attempt == 2 or not self.auth.renewable:
                    raise translate(exc) from exc
                log.info("salesforce session expired; logging in again (%s auth)", self.auth.mode)
                self._sf = None
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
        if self._sf is None:
            session_id, instance = self.auth.login(self.http)
            self._sf = Salesforce(
                session_id=session_id, instance=instance, session=self.http, version=API_VERSION
            )
        return self._sf

    def _observe(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.budget.observe(response.headers.get("Sforce-Limit-Info"))
