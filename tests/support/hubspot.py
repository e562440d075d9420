"""A strict, in-memory HubSpot, served over HTTP so the real ``hubspot-api-client`` talks to it.

``FakeHubSpot.handle(method, path, query, headers, body) -> (status, headers, body)`` is the
whole API; ``serve(fake, httpserver)`` puts it behind pytest-httpserver and returns the base
URL for HUBSPOT_API_BASE_URL. It is strict the way HubSpot is:

- 401 (HubSpot's body) without ``Authorization: Bearer <token>`` or with a wrong token;
  403 MISSING_SCOPES for routes listed in ``denied``
- only defined properties may be written, enumerations take their options only (owners,
  stages…), dates and datetimes must parse; tasks and notes require ``hs_timestamp``; a note
  body longer than 65,536 characters is refused (400 VALIDATION_ERROR naming ``hs_note_body``)
- inline associations: HUBSPOT_DEFINED, a valid type id for the pair, an existing target
- batch calls take at most 100 inputs; a batch answer lists results in reverse input order
  (HubSpot does not promise the input order)
- one bad input refuses a whole batch/create or batch/update (400, the message names the
  problem, not the input); a batch/update with an id twice is refused naming the ids
  (``context.ids``); ids that do not exist are left out of a batch read or update and named in
  a 207 answer's ``errors`` (OBJECT_NOT_FOUND, ``context.ids``); the v4 associations batch read
  (``/crm/v4/associations/{from}/{to}/batch/read``) names a record without associations the
  same way (``context.fromObjectId``)
- a contact created through the API needs an email (``contacts_need_email``; HubSpot itself
  does not insist) in HubSpot's format, else 400 INVALID_EMAIL; contacts are unique by email,
  case aside: 409 CONFLICT "Contact already exists. Existing ID: N", HubSpot's body
- a rolling 10-second budget (``limit_per_10s``) and a search budget per second; past them,
  429 with HubSpot's body; X-HubSpot-RateLimit-* headers on every answer
- ``search_lag``: records younger than this do not show in search yet, as in HubSpot
- files (``POST /files/v3/files``, multipart): a ``file`` part, an ``options`` JSON part whose
  ``access`` is required, and exactly one of ``folderId`` / ``folderPath``; uploaded files are
  found by ``GET /files/v3/files/search?name=`` (after ``search_lag``) and are what a note's or
  task's ``hs_attachment_ids`` may name (ids separated by ";")

Tasks as a CSM works them: ``complete_task``, ``reopen_task`` and ``edit_task`` set the status,
completion date, body, attachments and "updated by" as HubSpot's UI does; ``task_event`` builds
the ``object.propertyChange`` webhook event such a change sends (sign it with ``signed``).

Switches: ``inject(fault, times, route)`` plays a fault of ``tests.support.faults`` on the next
matching calls (``Fault.LOST_REPLY`` does the work and then drops the connection before
answering; ``Fault.TIMEOUT`` hangs ``stall_seconds``, then answers 504 as HubSpot's edge does),
or answers them with an exact HTTP status without doing anything. ``calls`` counts every call
per route (e.g. "POST /crm/v3/objects/tasks/batch/create"); ``log`` keeps (time, route,
status). For outages: ``outage(faults, seed)`` fails every call with one of ``faults`` (faults
or statuses) drawn at random until ``recover()``; ``calls_between(start, end)`` counts the calls
made in a stretch; ``latency`` (seconds, 0 by default) delays every answer, as a network
does, and ``slow_routes`` (route → seconds) the answers of some routes more. Serve the fake
from a threaded server (pytest-httpserver's ``HTTPServer(threaded=True)``) when stalling or
slowing it, or one slow call holds up every other.

OAuth and many portals behind one host (``HubSpotOAuth``, HubSpot's v3 endpoints): the fake
is the host's first portal, reached with the private-app ``token`` as before;
``add_portal(portal_id)`` adds another, with its own records, owners, pipelines, properties and
rate budget. ``authorize(portal_id, …) -> code`` stands for an admin clicking "Connect app" (or
``consent(install_url, portal_id=…)`` follows an install link and answers the callback URL with
``code`` and ``state``); ``POST /oauth/v3/token`` (form body only) trades a code (single use,
expiring, bound to its redirect_uri) or a refresh token for an access token that lives 30
minutes on the fake's clock, and ``POST /oauth/v3/token/introspect`` describes a token. An
access token reaches only its own portal's records. ``expire(access_token)``,
``revoke(refresh_token=… | portal_id=…)`` (an uninstall) and ``refresh_calls`` are the test's
switches and counter.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mimetypes
import random
import re
import secrets
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from werkzeug import Request, Response

from tests.support.faults import Fault

TOKEN = "pat-na1-test-token"
PORTAL_ID = 62515
# The app's OAuth identity (HUBSPOT_CLIENT_ID; CLIENT_SECRET below is HUBSPOT_CLIENT_SECRET).
CLIENT_ID = "5f0c1e2a-0b7d-4c39-9d0e-offboard-tests"
APP_ID = 1160452
REDIRECT_URI = "http://127.0.0.1:8080/oauth/hubspot/callback"
INSTALLER = "admin@agency.example"
OWNER_USER = "9101"  # the HubSpot user id (hs_updated_by_user_id) of the CSM who works the tasks
ACCESS_LIFETIME = timedelta(minutes=30)  # HubSpot: access tokens live 30 minutes
CODE_LIFETIME = timedelta(minutes=10)  # HubSpot: "a short window" (its length is unconfirmed)

# handle()'s status is the HTTP status, or the fault (lost_reply, reset, timeout) that the
# transport plays instead of answering.
Reply = tuple[int | Fault, dict[str, str], Any]
Injectable = Fault | int  # a fault, or an exact HTTP status answered without doing anything

# (from, type id) → to; the HubSpot-defined association types Offboard may write.
ASSOCIATION_TYPES = {
    ("tasks", 204): "contacts",
    ("tasks", 192): "companies",
    ("tasks", 216): "deals",
    ("notes", 202): "contacts",
    ("notes", 190): "companies",
    ("notes", 214): "deals",
    ("contacts", 4): "deals",
}
# Names of the deal associations a v3 read reports, by type id.
LINK_NAMES = {3: "deal_to_contact", 5: "deal_to_company", 341: "deal_to_company_unlabeled"}
GROUPS = {
    "deals": "dealinformation",
    "contacts": "contactinformation",
    "companies": "companyinformation",
    "tasks": "taskinformation",
    "notes": "engagement",
}
REQUIRED = {"tasks": ("hs_timestamp",), "notes": ("hs_timestamp",)}
# Longest values HubSpot takes, counted as Java counts (UTF-16 units; the unit is unconfirmed).
MAX_LENGTH = {("notes", "hs_note_body"): 65_536}
SEARCH_OPERATORS = {"EQ", "NEQ", "LT", "LTE", "GT", "GTE", "BETWEEN", "IN", "HAS_PROPERTY"}
# Files API (developers.hubspot.com/docs/api/files/files; changelog "updates for the CMS files
# API": uploads without options.access are refused). The option names beyond access and ttl are
# the SDK's FileUploadOptions; that HubSpot refuses other names is unconfirmed.
FILE_ACCESS = {"PUBLIC_INDEXABLE", "PUBLIC_NOT_INDEXABLE", "PRIVATE"}
FILE_OPTIONS = {"access", "ttl", "overwrite", "duplicateValidationStrategy", "duplicateValidationScope"}
SEARCH_OPERATORS |= {"NOT_HAS_PROPERTY", "CONTAINS_TOKEN"}


class HubSpotError(Exception):
    def __init__(self, status: int, message: str, category: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.category, self.extra = status, message, category, extra


@dataclass
class Record:
    id: str
    properties: dict[str, str]
    created_at: datetime
    updated_at: datetime
    history: dict[str, list[tuple[str, datetime]]] = field(default_factory=dict)  # oldest first
    links: list[tuple[str, str, int]] = field(default_factory=list)  # (object type, id, type id)


@dataclass
class StoredFile:
    """A file in the portal's file manager."""

    id: str
    name: str  # without its extension, as HubSpot shows it
    extension: str
    folder_path: str
    folder_id: str
    access: str
    content: bytes
    content_type: str
    created_at: datetime


@dataclass
class Form:
    """A multipart/form-data body: its text fields, and its file parts (filename, bytes, type)."""

    fields: dict[str, str]
    files: dict[str, tuple[str, bytes, str]]


@dataclass
class Injected:
    fault: Injectable
    times: int
    route: str | None


class FakeHubSpot:
    FAULTS = frozenset(Fault) - {Fault.SESSION_EXPIRED}  # a private-app token does not expire

    def __init__(
        self,
        *,
        token: str | None = TOKEN,
        portal_id: int = PORTAL_ID,
        limit_per_10s: int = 100,
        search_per_s: int = 5,
        search_lag: timedelta = timedelta(0),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        contacts_need_email: bool = True,
    ) -> None:
        self.token, self.portal_id, self.clock = token, portal_id, clock
        # HubSpot accepts a contact without an email; Offboard never creates one, so by default
        # the fake refuses it, to catch a create that lost its email on the way.
        self.contacts_need_email = contacts_need_email
        self.limit_per_10s, self.search_per_s, self.search_lag = limit_per_10s, search_per_s, search_lag
        self.objects: dict[str, dict[str, Record]] = {kind: {} for kind in GROUPS}
        self.schema: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in GROUPS}
        self.owners: dict[str, dict[str, Any]] = {}
        self.files: dict[str, StoredFile] = {}
        self.folders: dict[str, str] = {}  # path → folder id
        self.pipelines: list[dict[str, Any]] = []
        self.denied: dict[str, str] = {}  # route → the scope it needs and the token lacks
        self.faults: deque[Injected] = deque()
        self.calls: Counter[str] = Counter()
        self.log: list[tuple[datetime, str, int | Fault]] = []
        self.natural_429s = 0
        self.stall_seconds = 2.0
        self.latency = 0.0
        self.slow_routes: dict[str, float] = {}
        self._outage: tuple[list[Injectable], random.Random] | None = None
        self._recent: deque[datetime] = deque()
        self._recent_search: deque[datetime] = deque()
        self._ids = itertools.count(1001)
        self._lock = threading.RLock()
        # Every portal behind this host, this one first; OAuth is the host's, shared by them all.
        self.portals: dict[int, FakeHubSpot] = {portal_id: self}
        self.oauth = HubSpotOAuth(clock)
        self._define_standard_properties()

    # --- many portals, installed by OAuth -------------------------------------------

    def add_portal(self, portal_id: int, **options: Any) -> FakeHubSpot:
        """Another portal behind the same host (no private-app token): its own records, owners,
        pipelines, properties and rate budget; its record ids never collide with another's."""
        with self._lock:
            if portal_id in self.portals:
                raise ValueError(f"portal {portal_id} exists already")
            settings = {
                "limit_per_10s": self.limit_per_10s,
                "search_per_s": self.search_per_s,
                "search_lag": self.search_lag,
                "contacts_need_email": self.contacts_need_email,
            }
            portal = FakeHubSpot(token=None, portal_id=portal_id, clock=self.clock, **(settings | options))
            portal._ids = itertools.count(1001 + 1_000_000 * len(self.portals))
            portal._lock, portal.portals, portal.oauth = self._lock, self.portals, self.oauth
            self.portals[portal_id] = portal
            return portal

    def portal(self, portal_id: int) -> FakeHubSpot:
        return self.portals[portal_id]

    def authorize(
        self,
        portal_id: int,
        *,
        user: str = INSTALLER,
        user_id: int = 2_001,
        scopes: Iterable[str] = ("oauth",),
        redirect_uri: str = REDIRECT_URI,
    ) -> str:
        """An admin of ``portal_id`` approves the app: the code HubSpot puts on the redirect."""
        if portal_id not in self.portals:
            raise ValueError(f"no portal {portal_id} behind this host")
        return self.oauth.authorize(portal_id, user, user_id, tuple(scopes), redirect_uri)

    def consent(
        self, install_url: str, *, portal_id: int, user: str = INSTALLER, user_id: int = 2_001
    ) -> str:
        """Follows an install link as the admin's browser would, and approves it: the callback
        URL HubSpot redirects to (``code`` and ``state``). ValueError for a link HubSpot refuses."""
        parts = urlsplit(install_url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path != "/oauth/authorize" or query.get("client_id") != self.oauth.client_id:
            raise ValueError("HubSpot shows an error page: not this app's install link")
        if not query.get("redirect_uri") or not query.get("scope"):
            raise ValueError("HubSpot shows an error page: redirect_uri and scope are required")
        scopes = query["scope"].split() + query.get("optional_scope", "").split()
        code = self.authorize(
            portal_id, user=user, user_id=user_id, scopes=scopes, redirect_uri=query["redirect_uri"]
        )
        answer = {"code": code} | ({"state": query["state"]} if "state" in query else {})
        return f"{query['redirect_uri']}?{urlencode(answer)}"

    def expire(self, access_token: str) -> None:
        """This access token expires now (as 30 minutes passing would)."""
        self.oauth.expire(access_token)

    def revoke(self, refresh_token: str | None = None, *, portal_id: int | None = None) -> None:
        """A refresh token (or every install of a portal: an uninstall) stops working, with the
        access tokens it issued."""
        self.oauth.revoke(refresh_token, portal_id)

    @property
    def refresh_calls(self) -> int:
        """How many refresh-token grants reached the token endpoint (granted or refused)."""
        return self.oauth.refresh_calls

    # --- seeding -------------------------------------------------------------

    def define_property(
        self, object_type: str, name: str, kind: str = "string", options: Iterable[str] = (), **extra: Any
    ) -> None:
        self.schema[object_type][name] = {
            "name": name,
            "label": extra.get("label", name),
            "type": kind,
            "fieldType": extra.get("fieldType", "text"),
            "groupName": extra.get("groupName", GROUPS[object_type]),
            "description": extra.get("description", ""),
            "options": [
                {"label": o, "value": o, "displayOrder": n, "hidden": False} for n, o in enumerate(options)
            ],
            "hubspotDefined": extra.get("hubspotDefined", False),
        }

    def add_owner(
        self, owner_id: str, email: str, first: str, last: str, *, user_id: str | None = None
    ) -> None:
        """An owner; ``user_id`` is the HubSpot user behind it (``hs_updated_by_user_id`` names the
        user, ``hubspot_owner_id`` takes the owner: HubSpot's owners guide says a user id "will
        result in an error if it is used to assign ownership"). By default the same number."""
        user = int(user_id or owner_id)
        self.owners[owner_id] = {
            "id": owner_id,
            "email": email,
            "firstName": first,
            "lastName": last,
            "userId": user,
        }

    def add_pipeline(self, pipeline_id: str, label: str, stages: list[tuple[str, str, bool, str]]) -> None:
        """Stages as (id, label, closed, probability)."""
        self.pipelines.append({"id": pipeline_id, "label": label, "stages": stages})

    def add_record(
        self, object_type: str, properties: dict[str, str], links: Iterable[tuple[str, str, int]] = ()
    ) -> str:
        with self._lock:
            self._check_properties(object_type, properties)
            record = self._new(object_type, properties)
            record.links.extend(links)
            return record.id

    def set_property(self, object_type: str, object_id: str, name: str, value: str) -> None:
        """As if a user changed it in HubSpot (kept in the property's history)."""
        with self._lock:
            self._set(self.objects[object_type][object_id], {name: value})

    # --- tasks as a CSM works them in HubSpot -----------------------------------------

    def complete_task(
        self, task_id: str, *, by: str = OWNER_USER, evidence: str | None = None, attach: Iterable[str] = ()
    ) -> None:
        """The CSM ticks the task off (adding an ``Evidence:`` line or files first, when given)."""
        self.edit_task(task_id, by=by, evidence=evidence, attach=attach)
        with self._lock:
            now = _iso(self.clock())
            done = {"hs_task_status": "COMPLETED", "hs_task_completion_date": now}
            self._set(self.objects["tasks"][task_id], done | {"hs_updated_by_user_id": by})

    def reopen_task(self, task_id: str, *, by: str = OWNER_USER, status: str = "NOT_STARTED") -> None:
        """The CSM marks the task not done again (HubSpot clears its completion date)."""
        with self._lock:
            changes = {"hs_task_status": status, "hs_task_completion_date": "", "hs_updated_by_user_id": by}
            self._set(self.objects["tasks"][task_id], changes)

    def edit_task(
        self, task_id: str, *, by: str = OWNER_USER, evidence: str | None = None, attach: Iterable[str] = ()
    ) -> None:
        """The CSM adds an ``Evidence:`` paragraph to the task's notes and/or attaches files (names
        of files uploaded there and then)."""
        with self._lock:
            record = self.objects["tasks"][task_id]
            changes = {"hs_updated_by_user_id": by}
            if evidence is not None:
                body = record.properties.get("hs_task_body", "")
                changes["hs_task_body"] = f"{body}<p>Evidence: {evidence}</p>"
            names = list(attach)
            if names:
                ids = [i for i in record.properties.get("hs_attachment_ids", "").split(";") if i]
                ids += [self.store_file(name, b"attached in HubSpot").id for name in names]
                changes["hs_attachment_ids"] = ";".join(ids)
            self._set(record, changes)

    def store_file(
        self, filename: str, content: bytes, *, folder: str = "/", access: str = "PRIVATE"
    ) -> StoredFile:
        with self._lock:
            stem, dot, extension = filename.rpartition(".")
            if folder not in self.folders:
                self.folders[folder] = str(next(self._ids))
            stored = StoredFile(
                id=str(next(self._ids)),
                name=stem if dot else filename,
                extension=extension if dot else "",
                folder_path=folder,
                folder_id=self.folders[folder],
                access=access,
                content=content,
                content_type=mimetypes.guess_type(filename)[0] or "application/octet-stream",
                created_at=self.clock(),
            )
            self.files[stored.id] = stored
            return stored

    # --- switches and inspection -----------------------------------------------

    def inject(self, fault: Injectable, times: int = 1, route: str | None = None) -> None:
        """Play ``fault`` (or answer this HTTP status) on the next ``times`` calls of ``route`` (or any)."""
        self.faults.append(Injected(self._playable(fault), times, route))

    def outage(self, faults: Iterable[Injectable], *, seed: int = 0) -> None:
        """Every call fails with one of ``faults`` (faults or statuses) until ``recover()``."""
        with self._lock:
            self._outage = ([self._playable(fault) for fault in faults], random.Random(seed))

    def recover(self) -> None:
        with self._lock:
            self._outage = None

    def delay(self, method: str, path: str) -> float:
        """How long the answer to this request takes to leave (``latency`` and ``slow_routes``)."""
        found = self._route(method, path)
        return self.latency + (self.slow_routes.get(found[0], 0.0) if found else 0.0)

    def calls_between(self, start: datetime, end: datetime | None = None) -> int:
        """How many calls reached the fake from ``start`` (to ``end``, or now)."""
        with self._lock:
            return sum(1 for at, _route, _status in self.log if at >= start and (end is None or at <= end))

    def records(self, object_type: str) -> list[Record]:
        with self._lock:
            return list(self.objects[object_type].values())

    def linked(self, record: Record, object_type: str) -> dict[str, int]:
        """The ids a record is associated to in ``object_type``, with the association type id."""
        return {object_id: type_id for kind, object_id, type_id in record.links if kind == object_type}

    def max_in_window(self, seconds: float = 10.0) -> int:
        """The most calls HubSpot received in any rolling window of ``seconds``."""
        times = sorted(at for at, _route, _status in self.log)
        span, most, start = timedelta(seconds=seconds), 0, 0
        for end, at in enumerate(times):
            while times[start] <= at - span:
                start += 1
            most = max(most, end - start + 1)
        return most

    # --- the API ------------------------------------------------------------------

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Reply:
        with self._lock:
            if path.startswith("/oauth/"):
                return self._oauth_call(method, path, query, headers, body)
            found = self._route(method, path)
            if found is None:
                return self._error(HubSpotError(404, f"No route for {method} {path}", "OBJECT_NOT_FOUND"))
            try:
                portal = self._portal_for(headers)
            except HubSpotError as exc:
                return self._error(exc)
            content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
            return portal._serve(method, path, query, body, content_type)

    def _serve(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, content_type: str = ""
    ) -> Reply:
        """One API call made with a token of this portal (its own handlers, its own records)."""
        now = self.clock()
        found = self._route(method, path)
        assert found is not None  # the host found the route already
        name, handler, params = found
        try:
            self._authorize(name)
        except HubSpotError as exc:
            return self._error(exc)
        self.calls[name] += 1
        status, answer = self._answer(name, handler, params, query, _decode(body, content_type), now)
        self.log.append((now, name, status))
        return status, self._limit_headers(now), answer

    def _portal_for(self, headers: dict[str, str]) -> FakeHubSpot:
        """The portal a request's bearer token belongs to: the private-app token is this portal's,
        an OAuth access token its install's; 401 with HubSpot's body otherwise."""
        given = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if self.token is not None and given == f"Bearer {self.token}":
            return self
        bearer = given[len("Bearer ") :] if given.startswith("Bearer ") else ""
        if not bearer:
            raise _unauthenticated()
        return self.portals[self.oauth.portal_of(bearer, self.clock())]

    def _oauth_call(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Reply:
        name = f"{method} {path}"
        plain = {"Content-Type": "application/json;charset=utf-8"}
        self.calls[name] += 1
        fault = self._fault(name)
        if fault in (Fault.RESET, Fault.TIMEOUT):
            return (
                Fault(fault),
                plain,
                _error_body(HubSpotError(504, "The gateway timed out.", "GATEWAY_TIMEOUT")),
            )
        try:
            if fault is not None and fault != Fault.LOST_REPLY:
                raise _injected(fault)
            status, answer = self.oauth.handle(method, path, query, headers, body, self.clock())
        except HubSpotError as exc:
            return exc.status, plain, _error_body(exc)
        return (Fault.LOST_REPLY if fault == Fault.LOST_REPLY else status), plain, answer

    def _playable(self, fault: Injectable) -> Injectable:
        if isinstance(fault, Fault) and fault not in self.FAULTS:
            raise ValueError(f"the HubSpot fake cannot play {fault}")
        return fault

    def _answer(
        self,
        name: str,
        handler: Any,
        params: dict[str, str],
        query: dict[str, list[str]],
        body: Any,
        now: datetime,
    ) -> tuple[int | Fault, Any]:
        fault = None
        try:
            self._throttle(name, now)
            fault = self._outage_fault()
            if fault is None:
                fault = self._fault(name)
            if fault in (Fault.RESET, Fault.TIMEOUT):
                return Fault(fault), _error_body(
                    HubSpotError(504, "The gateway timed out.", "GATEWAY_TIMEOUT")
                )
            if fault is not None and fault != Fault.LOST_REPLY:
                raise _injected(fault)
            status, answer = handler(params, query, body)
        except HubSpotError as exc:
            return exc.status, _error_body(exc)
        return (Fault.LOST_REPLY, None) if fault == Fault.LOST_REPLY else (status, answer)

    def _authorize(self, name: str) -> None:
        if name in self.denied:
            raise HubSpotError(
                403,
                "This app hasn't been granted all required scopes to make this call. Read more about "
                "required scopes here: https://developers.hubspot.com/scopes.",
                "MISSING_SCOPES",
                errors=[
                    {
                        "message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": [self.denied[name]]},
                    }
                ],
            )

    def _outage_fault(self) -> Injectable | None:
        if self._outage is None:
            return None
        statuses, rng = self._outage
        return rng.choice(statuses)

    def _fault(self, name: str) -> Injectable | None:
        for injected in self.faults:
            if injected.route in (None, name):
                injected.times -= 1
                if injected.times <= 0:
                    self.faults.remove(injected)
                return injected.fault
        return None

    def _throttle(self, name: str, now: datetime) -> None:
        window = self._window(self._recent, now, timedelta(seconds=10))
        search = name.startswith("POST /crm/") and name.endswith("/search")  # CRM search's own limit
        search_window = self._window(self._recent_search, now, timedelta(seconds=1)) if search else 0
        self._recent.append(now)
        if search:
            self._recent_search.append(now)
        if window >= self.limit_per_10s:
            self.natural_429s += 1
            raise _rate_limited("TEN_SECONDLY_ROLLING")
        if search and search_window >= self.search_per_s:
            self.natural_429s += 1
            raise _rate_limited("SECONDLY")

    @staticmethod
    def _window(sent: deque[datetime], now: datetime, span: timedelta) -> int:
        while sent and sent[0] <= now - span:
            sent.popleft()
        return len(sent)

    def _limit_headers(self, now: datetime) -> dict[str, str]:
        used = self._window(self._recent, now, timedelta(seconds=10))
        return {
            "Content-Type": "application/json;charset=utf-8",
            "X-HubSpot-RateLimit-Max": str(self.limit_per_10s),
            "X-HubSpot-RateLimit-Remaining": str(max(self.limit_per_10s - used, 0)),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Daily": "250000",
            "X-HubSpot-RateLimit-Daily-Remaining": str(250000 - len(self.log)),
        }

    def _error(self, exc: HubSpotError) -> Reply:
        return exc.status, self._limit_headers(self.clock()), _error_body(exc)

    # --- routing --------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple[str, Any, dict[str, str]] | None:
        for verb, pattern, template, handler in self._routes():
            found = re.fullmatch(pattern, path)
            if verb == method and found:
                params = found.groupdict()
                if "type" in params and params["type"] not in GROUPS:
                    return None
                return template.format(**params), handler, params
        return None

    def _routes(self) -> list[tuple[str, str, str, Any]]:
        obj = r"/crm/v3/objects/(?P<type>\w+)"
        return [
            ("GET", r"/account-info/v3/details", "GET /account-info/v3/details", self._account),
            ("POST", r"/files/v3/files", "POST /files/v3/files", self._upload_file),
            ("GET", r"/files/v3/files/search", "GET /files/v3/files/search", self._search_files),
            ("GET", r"/crm/v3/pipelines/deals", "GET /crm/v3/pipelines/deals", self._pipelines),
            ("GET", r"/crm/v3/owners/(?P<id>[^/]+)", "GET /crm/v3/owners/{{id}}", self._owner),
            ("POST", obj + r"/batch/create", "POST /crm/v3/objects/{type}/batch/create", self._batch_create),
            ("POST", obj + r"/batch/read", "POST /crm/v3/objects/{type}/batch/read", self._batch_read),
            ("POST", obj + r"/batch/update", "POST /crm/v3/objects/{type}/batch/update", self._batch_update),
            (
                "POST",
                r"/crm/v4/associations/(?P<type>\w+)/(?P<to>\w+)/batch/read",
                "POST /crm/v4/associations/{type}/{to}/batch/read",
                self._associations_read,
            ),
            ("POST", obj + r"/search", "POST /crm/v3/objects/{type}/search", self._search),
            ("GET", obj + r"/(?P<id>\d+)", "GET /crm/v3/objects/{type}/{{id}}", self._get),
            ("PATCH", obj + r"/(?P<id>\d+)", "PATCH /crm/v3/objects/{type}/{{id}}", self._update),
            ("POST", obj, "POST /crm/v3/objects/{type}", self._create),
            (
                "GET",
                r"/crm/v3/properties/(?P<type>\w+)/(?P<name>\w+)",
                "GET /crm/v3/properties/{type}/{{name}}",
                self._get_property,
            ),
            (
                "POST",
                r"/crm/v3/properties/(?P<type>\w+)",
                "POST /crm/v3/properties/{type}",
                self._create_property,
            ),
        ]

    # --- endpoints --------------------------------------------------------------

    def _account(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        return 200, {
            "portalId": self.portal_id,
            "accountType": "STANDARD",
            "timeZone": "US/Eastern",
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": "-05:00",
            "utcOffsetMilliseconds": -18000000,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1",
        }

    def _upload_file(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        """multipart/form-data: ``file`` (required), ``options`` (JSON, ``access`` required), one of
        ``folderId`` / ``folderPath`` (not both); ``fileName`` names it. A missing folder path is
        created, as HubSpot does."""
        if not isinstance(body, Form):
            raise HubSpotError(415, "Content-Type must be multipart/form-data", "VALIDATION_ERROR")
        part = body.files.get("file")
        if part is None or not part[0]:
            raise HubSpotError(400, "file is required", "VALIDATION_ERROR")
        options = _file_options(body.fields.get("options"))
        folder_id, folder_path = body.fields.get("folderId"), body.fields.get("folderPath")
        if bool(folder_id) == bool(folder_path):
            raise HubSpotError(
                400, "Either folderId or folderPath must be provided, not both", "VALIDATION_ERROR"
            )
        if folder_id and folder_id not in self.folders.values():
            raise HubSpotError(404, f"Folder {folder_id} not found", "OBJECT_NOT_FOUND")
        path = folder_path or next(p for p, i in self.folders.items() if i == folder_id)
        if not str(path).startswith("/"):
            raise HubSpotError(400, f"folderPath must start with '/': {path}", "VALIDATION_ERROR")
        stored = self.store_file(
            body.fields.get("fileName") or part[0], part[1], folder=path, access=options["access"]
        )
        return 201, _file_json(stored)

    def _search_files(
        self, params: dict[str, str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        """Files whose name contains ``name`` (HubSpot's files index trails uploads: ``search_lag``)."""
        name = (query.get("name") or [""])[0]
        visible_before = self.clock() - self.search_lag
        found = [
            f
            for f in self.files.values()
            if name.lower() in f.name.lower() and f.created_at <= visible_before
        ]
        return 200, {"results": [_file_json(f) for f in found[:100]]}

    def _pipelines(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        return 200, {"results": [_pipeline(p, self.clock()) for p in self.pipelines]}

    def _owner(self, params: dict[str, str], query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        # ``idProperty``: ``id`` (the default) or ``userId`` (the owners API reference).
        by_user = (query.get("idProperty") or ["id"])[0] == "userId"
        users = {str(o["userId"]): o for o in self.owners.values()}
        owner = (users if by_user else self.owners).get(params["id"])
        if owner is None:
            raise HubSpotError(404, f"No owner with id {params['id']}", "OBJECT_NOT_FOUND")
        stamp = _iso(self.clock())
        extra = {
            "userIdIncludingInactive": owner["userId"],
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
        }
        return 200, {**owner, **extra, "type": "PERSON", "teams": []}

    def _get(self, params: dict[str, str], query: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        record = self._find(params["type"], params["id"])
        answer = self._json(params["type"], record, _listed(query, "properties"))
        if _listed(query, "propertiesWithHistory"):
            answer["propertiesWithHistory"] = {
                name: [
                    {"value": value, "timestamp": _iso(at), "sourceType": "CRM_UI"}
                    for value, at in reversed(record.history.get(name, []))
                ]
                for name in _listed(query, "propertiesWithHistory")
            }
        associations = {}
        for kind in _listed(query, "associations"):
            links = [
                {"id": object_id, "type": LINK_NAMES.get(type_id, f"{params['type'][:-1]}_to_{kind[:-1]}")}
                for linked_kind, object_id, type_id in record.links
                if linked_kind == kind
            ]
            if links:
                associations[kind] = {"results": links}
        if associations:
            answer["associations"] = associations
        return 200, answer

    def _update(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        record = self._find(params["type"], params["id"])
        properties = _object(_object(body, "(body)").get("properties"), "properties")
        self._check_properties(params["type"], properties)
        self._set(record, properties)
        return 200, self._json(params["type"], record, list(properties))

    def _create(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        data = _object(body, "(body)")
        self._check_input(params["type"], data)
        return 201, self._json(params["type"], self._new_from(params["type"], data), None)

    def _batch_create(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        inputs = _batch(body)
        for data in inputs:
            self._check_input(params["type"], data)  # all or nothing, as HubSpot does
        created = [self._new_from(params["type"], data) for data in inputs]
        results = [self._json(params["type"], record, None) for record in reversed(created)]
        return 201, self._batch_answer(results)

    def _batch_read(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        inputs = _batch(body)
        wanted = body.get("properties") or []
        ids = [str(item.get("id")) for item in inputs]
        known = self.objects[params["type"]]
        found = [known[i] for i in ids if i in known]
        answer = self._batch_answer([self._json(params["type"], record, wanted) for record in found])
        missing = [i for i in ids if i not in known]
        if not missing:
            return 200, answer
        kind = params["type"][:-1].upper().replace("COMPANIE", "COMPANY")
        message = (
            f"Could not get some {kind} objects, they may be deleted or not exist. Check that ids are valid."
        )
        return 207, answer | _errors([_batch_error("OBJECT_NOT_FOUND", message, {"ids": missing})])

    def _batch_update(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        """All or nothing for bad values (HubSpot's message names the problem, not the input); ids
        that do not exist are left out and named in a 207 answer."""
        inputs = _batch(body)
        ids = [str(item.get("id", "")) if isinstance(item, dict) else "" for item in inputs]
        twice = sorted({i for i in ids if ids.count(i) > 1})
        if twice:
            message = f"Duplicate IDs found in batch input: [{', '.join(twice)}]. IDs must be unique"
            raise HubSpotError(400, message, "VALIDATION_ERROR", context={"ids": twice})
        known = self.objects[params["type"]]
        changes = [
            (known[i], _object(item.get("properties"), "properties"))
            for i, item in zip(ids, inputs, strict=True)
            if i in known
        ]
        for _record, properties in changes:
            self._check_properties(params["type"], properties)
        for record, properties in changes:
            self._set(record, properties)
        results = [
            self._json(params["type"], record, list(properties)) for record, properties in reversed(changes)
        ]
        missing = [i for i in ids if i not in known]
        if not missing:
            return 200, self._batch_answer(results)
        message = f"Could not update some objects: {', '.join(missing)} were not found"  # wording unconfirmed
        return 207, self._batch_answer(results) | _errors(
            [_batch_error("OBJECT_NOT_FOUND", message, {"ids": missing})]
        )

    def _associations_read(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        """v4: each record's associations to ``to`` with their type ids; a record with none (or
        none that exists) is an error of the 207 answer, as HubSpot reports it."""
        to = params["to"]
        if to not in GROUPS:
            raise HubSpotError(400, f"Unknown object type {to}", "VALIDATION_ERROR")
        results, errors = [], []
        for item in _batch(body):
            record = self.objects[params["type"]].get(str(item.get("id")))
            links: dict[str, list[int]] = {}
            for kind, object_id, type_id in record.links if record else []:
                if kind == to:
                    links.setdefault(object_id, []).append(type_id)
            if not links:
                message = f"No {to} is associated with {params['type'][:-1]} {item.get('id')}."
                errors.append(
                    _batch_error("OBJECT_NOT_FOUND", message, {"fromObjectId": [str(item.get("id"))]})
                )
                continue
            to_list = [
                {
                    "toObjectId": int(object_id),
                    "associationTypes": [
                        {"category": "HUBSPOT_DEFINED", "typeId": t, "label": "Primary" if t == 5 else None}
                        for t in type_ids
                    ],
                }
                for object_id, type_ids in links.items()
            ]
            results.append({"from": {"id": str(item.get("id"))}, "to": to_list})
        answer = self._batch_answer(results)
        return (207, answer | _errors(errors)) if errors else (200, answer)

    def _batch_answer(self, results: list[dict[str, Any]]) -> dict[str, Any]:
        stamp = _iso(self.clock())
        return {"status": "COMPLETE", "results": results, "startedAt": stamp, "completedAt": stamp}

    def _search(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        request = body if isinstance(body, dict) else {}
        groups = request.get("filterGroups") or []
        limit = int(request.get("limit") or 10)
        if limit > 200 or len(groups) > 5 or any(len(g.get("filters") or []) > 6 for g in groups):
            raise HubSpotError(400, "limit is at most 200, 5 filterGroups of 6 filters", "VALIDATION_ERROR")
        visible_before = self.clock() - self.search_lag
        matches = [
            record
            for record in sorted(self.objects[params["type"]].values(), key=lambda r: int(r.id))
            if record.created_at <= visible_before and self._matches(params["type"], record, groups)
        ]
        start = int(request.get("after") or 0)
        page = matches[start : start + limit]
        answer: dict[str, Any] = {
            "total": len(matches),
            "results": [self._json(params["type"], r, request.get("properties") or []) for r in page],
        }
        if start + limit < len(matches):
            answer["paging"] = {"next": {"after": str(start + limit)}}
        return 200, answer

    def _get_property(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        definition = self.schema[params["type"]].get(params["name"])
        if definition is None:
            raise HubSpotError(404, f"Unable to find property {params['name']}", "OBJECT_NOT_FOUND")
        return 200, _property_json(definition, self.clock())

    def _create_property(self, params: dict[str, str], query: Any, body: Any) -> tuple[int, Any]:
        data = _object(body, "(body)")
        missing = [key for key in ("name", "label", "type", "fieldType", "groupName") if not data.get(key)]
        if missing:
            raise HubSpotError(400, f"missing {', '.join(missing)}", "VALIDATION_ERROR")
        if data["groupName"] != GROUPS[params["type"]]:
            raise HubSpotError(400, f"no property group {data['groupName']}", "VALIDATION_ERROR")
        if data["name"] in self.schema[params["type"]]:
            raise HubSpotError(
                409, f"A property named '{data['name']}' already exists.", "OBJECT_ALREADY_EXISTS"
            )
        if data["type"] == "enumeration" and not data.get("options"):
            raise HubSpotError(400, "an enumeration needs options", "VALIDATION_ERROR")
        given = data.get("options") or []
        if any(not isinstance(o, dict) or not o.get("label") or not o.get("value") for o in given):
            raise HubSpotError(400, "each option needs a label and a value", "VALIDATION_ERROR")
        extra = {key: data[key] for key in ("label", "fieldType", "groupName", "description") if key in data}
        self.define_property(params["type"], data["name"], data["type"], [o["value"] for o in given], **extra)
        for option, kept in zip(given, self.schema[params["type"]][data["name"]]["options"], strict=True):
            kept["label"] = option["label"]  # the label a user sees in HubSpot
        return 201, _property_json(self.schema[params["type"]][data["name"]], self.clock())

    # --- records ------------------------------------------------------------

    def _find(self, object_type: str, object_id: str) -> Record:
        record = self.objects[object_type].get(object_id)
        if record is None:
            raise HubSpotError(
                404, f"Object not found.  objectId are usually numeric: {object_id}", "OBJECT_NOT_FOUND"
            )
        return record

    def _check_input(self, object_type: str, data: Any) -> None:
        properties = _object(data.get("properties") if isinstance(data, dict) else None, "properties")
        missing = [name for name in REQUIRED.get(object_type, ()) if not properties.get(name)]
        if missing:
            raise HubSpotError(
                400, f"Property values were not valid: {missing[0]} is required", "VALIDATION_ERROR"
            )
        self._check_properties(object_type, properties)
        for link in data.get("associations") or []:
            self._check_association(object_type, link)
        if object_type == "contacts":
            self._check_contact(properties)

    def _check_contact(self, properties: dict[str, Any]) -> None:
        """A valid email (HubSpot's format rules), and one contact per email, case aside."""
        email = str(properties.get("email") or "").strip()
        if not email:
            if not self.contacts_need_email:
                return
            raise HubSpotError(
                400,
                "Property values were not valid: "
                + json.dumps([_invalid("email", "An email address is required", "REQUIRED_FIELD")]),
                "VALIDATION_ERROR",
            )
        if not _valid_email(email):
            problem = _invalid("email", f"Email address {email} is invalid", "INVALID_EMAIL")
            raise HubSpotError(
                400, f"Property values were not valid: {json.dumps([problem])}", "VALIDATION_ERROR"
            )
        for record in self.objects["contacts"].values():
            if record.properties.get("email", "").lower() == email.lower():
                raise HubSpotError(409, f"Contact already exists. Existing ID: {record.id}", "CONFLICT")

    def _check_association(self, object_type: str, link: Any) -> None:
        target = str((link.get("to") or {}).get("id", ""))
        for spec in link.get("types") or [{}]:
            to = ASSOCIATION_TYPES.get((object_type, spec.get("associationTypeId")))
            if spec.get("associationCategory") != "HUBSPOT_DEFINED" or to is None:
                raise HubSpotError(
                    400, f"invalid association type {spec} from {object_type}", "VALIDATION_ERROR"
                )
            if target not in self.objects[to]:
                raise HubSpotError(
                    400, f"association target {to} {target} does not exist", "VALIDATION_ERROR"
                )

    def _check_properties(self, object_type: str, properties: dict[str, Any]) -> None:
        problems = [
            problem
            for name, value in properties.items()
            if (problem := self._problem(object_type, name, value)) is not None
        ]
        if problems:
            raise HubSpotError(
                400, f"Property values were not valid: {json.dumps(problems)}", "VALIDATION_ERROR"
            )

    def _problem(self, object_type: str, name: str, value: Any) -> dict[str, Any] | None:
        definition = self.schema[object_type].get(name)
        if definition is None:
            return _invalid(name, f'Property "{name}" does not exist', "PROPERTY_DOESNT_EXIST")
        text = "" if value is None else str(value)
        if text == "":
            return None
        longest = MAX_LENGTH.get((object_type, name))
        if longest is not None and len(text.encode("utf-16-le")) // 2 > longest:
            message = f"{name} is longer than the limit of {longest} characters"
            return _invalid(name, message, "INVALID_LENGTH")
        if name == "hs_attachment_ids":  # file ids, ";"-separated; that HubSpot checks them is unconfirmed
            unknown = [i for i in text.split(";") if i not in self.files]
            if unknown:
                return _invalid(name, f"no file with id {', '.join(unknown)}", "INVALID_FILE_ID")
        kind, options = definition["type"], self._options(object_type, name)
        if kind == "enumeration" and text not in options:
            return _invalid(name, f"{text} was not one of the allowed options: {options}", "INVALID_OPTION")
        if kind in ("date", "datetime") and _millis(text) is None:
            return _invalid(name, f"{text} is not a valid date", "INVALID_DATE")
        if kind == "number" and not re.fullmatch(r"-?\d+(\.\d+)?", text):
            return _invalid(name, f"{text} is not a number", "INVALID_FLOAT")
        return None

    def _new_from(self, object_type: str, data: dict[str, Any]) -> Record:
        record = self._new(object_type, data["properties"])
        for link in data.get("associations") or []:
            for spec in link["types"]:
                to = ASSOCIATION_TYPES[(object_type, spec["associationTypeId"])]
                record.links.append((to, str(link["to"]["id"]), spec["associationTypeId"]))
        return record

    def _new(self, object_type: str, properties: dict[str, Any]) -> Record:
        now = self.clock()
        record = Record(id=str(next(self._ids)), properties={}, created_at=now, updated_at=now)
        self._set(record, properties)
        self.objects[object_type][record.id] = record
        return record

    def _set(self, record: Record, properties: dict[str, Any]) -> None:
        now = self.clock()
        for name, value in properties.items():
            text = "" if value is None else str(value)
            if record.properties.get(name) != text:
                record.history.setdefault(name, []).append((text, now))
            record.properties[name] = text
        record.updated_at = now

    def _json(self, object_type: str, record: Record, wanted: list[str] | None) -> dict[str, Any]:
        names = list(record.properties) if wanted is None else wanted
        properties: dict[str, str | None] = {
            name: record.properties.get(name) or None for name in names if name in self.schema[object_type]
        }
        properties |= {
            "hs_object_id": record.id,
            "createdate": _iso(record.created_at),
            "hs_lastmodifieddate": _iso(record.updated_at),
        }
        return {
            "id": record.id,
            "properties": properties,
            "createdAt": _iso(record.created_at),
            "updatedAt": _iso(record.updated_at),
            "archived": False,
        }

    def _matches(self, object_type: str, record: Record, groups: list[dict[str, Any]]) -> bool:
        if not groups:
            return True
        return any(all(self._holds(object_type, record, f) for f in g.get("filters") or []) for g in groups)

    def _holds(self, object_type: str, record: Record, spec: dict[str, Any]) -> bool:
        operator, name = spec.get("operator"), spec.get("propertyName", "")
        if operator not in SEARCH_OPERATORS:
            raise HubSpotError(400, f"unknown operator {operator}", "VALIDATION_ERROR")
        value = record.id if name == "hs_object_id" else record.properties.get(name) or None
        if name == "hs_lastmodifieddate":  # kept by HubSpot itself, searchable like any datetime
            value = _iso(record.updated_at)
        if operator in ("HAS_PROPERTY", "NOT_HAS_PROPERTY"):
            return (value is not None) == (operator == "HAS_PROPERTY")
        if value is None:
            return False
        if operator == "CONTAINS_TOKEN":
            return str(spec.get("value", "")).lower() in re.split(r"[^0-9a-z]+", value.lower())
        kind = self.schema[object_type].get(name, {}).get("type", "string")
        key = _sort_key(kind)
        if operator == "IN":
            return value in (spec.get("values") or [])
        if operator == "BETWEEN":
            return key(spec.get("value")) <= key(value) <= key(spec.get("highValue"))
        compare = {"EQ": "__eq__", "NEQ": "__ne__", "LT": "__lt__", "LTE": "__le__", "GT": "__gt__"}
        return bool(getattr(key(value), compare.get(operator, "__ge__"))(key(spec.get("value"))))

    def _define_standard_properties(self) -> None:
        for name, kind in [
            ("dealname", "string"),
            ("amount", "number"),
            ("deal_currency_code", "string"),
            ("pipeline", "enumeration"),
            ("dealstage", "enumeration"),
            ("closedate", "datetime"),
            ("hubspot_owner_id", "enumeration"),
            ("hs_object_id", "string"),
            ("hs_lastmodifieddate", "datetime"),
        ]:
            self.define_property("deals", name, kind, hubspotDefined=True)
        for name in ("email", "firstname", "lastname", "company", "hs_object_id"):
            self.define_property("contacts", name, hubspotDefined=True)
        for name in ("name", "domain", "hs_object_id"):
            self.define_property("companies", name, hubspotDefined=True)
        for object_type in ("tasks", "notes"):
            self.define_property(object_type, "hs_timestamp", "datetime", hubspotDefined=True)
            self.define_property(object_type, "hubspot_owner_id", "enumeration", hubspotDefined=True)
            self.define_property(object_type, "hs_object_id", hubspotDefined=True)
        self.define_property("tasks", "hs_task_subject")
        self.define_property("tasks", "hs_task_body")
        self.define_property(
            "tasks", "hs_task_status", "enumeration", ["NOT_STARTED", "IN_PROGRESS", "WAITING"]
        )
        self.schema["tasks"]["hs_task_status"]["options"] += [
            {"label": o, "value": o, "displayOrder": 9, "hidden": False} for o in ("COMPLETED", "DEFERRED")
        ]
        self.define_property("tasks", "hs_task_priority", "enumeration", ["NONE", "LOW", "MEDIUM", "HIGH"])
        self.define_property("tasks", "hs_task_type", "enumeration", ["TODO", "CALL", "EMAIL", "LINKED_IN"])
        self.define_property("notes", "hs_note_body")
        self.define_property("tasks", "hs_task_completion_date", "datetime", hubspotDefined=True)
        self.define_property("tasks", "hs_updated_by_user_id", "number", hubspotDefined=True)
        for object_type in ("tasks", "notes"):
            self.define_property(object_type, "hs_attachment_ids", hubspotDefined=True)

    def _options(self, object_type: str, name: str) -> list[str]:
        # Owners, pipelines and stages are the options of the properties that name them.
        if name == "hubspot_owner_id":
            return list(self.owners)
        if (object_type, name) == ("deals", "pipeline"):
            return [p["id"] for p in self.pipelines]
        if (object_type, name) == ("deals", "dealstage"):
            return [stage[0] for p in self.pipelines for stage in p["stages"]]
        return [o["value"] for o in self.schema[object_type][name]["options"]]


# --- OAuth v3: the app's installs ---------------------------------------------------------


@dataclass
class Code:
    """An authorization code: single use, expiring, bound to the redirect_uri it was sent to."""

    portal_id: int
    user: str
    user_id: int
    scopes: tuple[str, ...]
    redirect_uri: str
    expires_at: datetime


@dataclass
class Install:
    """What a refresh token stands for: one admin's grant to one portal."""

    portal_id: int
    user: str
    user_id: int
    scopes: tuple[str, ...]
    revoked: bool = False


@dataclass
class Access:
    refresh_token: str
    expires_at: datetime


class HubSpotOAuth:
    """HubSpot's OAuth v3 for one app (developers.hubspot.com/docs/api-reference/auth-oauth-v3/guide):
    ``POST /oauth/v3/token`` and ``POST /oauth/v3/token/introspect``, form bodies only, the
    client id and secret in every call. Refusals are 400 with HubSpot's ``status``
    (BAD_CLIENT_ID, BAD_AUTH_CODE, BAD_REDIRECT_URI, BAD_REFRESH_TOKEN, BAD_GRANT_TYPE)."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.client_id, self.client_secret = CLIENT_ID, CLIENT_SECRET
        self.codes: dict[str, Code] = {}
        self.installs: dict[str, Install] = {}  # by refresh token
        self.access: dict[str, Access] = {}  # by access token
        self.refresh_calls = 0

    # --- the test's side ---------------------------------------------------------------

    def authorize(
        self, portal_id: int, user: str, user_id: int, scopes: tuple[str, ...], redirect_uri: str
    ) -> str:
        code = f"na1-{secrets.token_hex(4)}-{uuid.uuid4()}"
        expires = self.clock() + CODE_LIFETIME
        self.codes[code] = Code(portal_id, user, user_id, scopes, redirect_uri, expires)
        return code

    def expire(self, access_token: str) -> None:
        self.access[access_token].expires_at = self.clock() - timedelta(seconds=1)

    def revoke(self, refresh_token: str | None, portal_id: int | None) -> None:
        for token, install in self.installs.items():
            if token == refresh_token or install.portal_id == portal_id:
                install.revoked = True
        self.access = {k: v for k, v in self.access.items() if not self.installs[v.refresh_token].revoked}

    def portal_of(self, access_token: str, now: datetime) -> int:
        """The portal an access token reaches, or HubSpot's 401."""
        access = self.access.get(access_token)
        if access is None or self.installs[access.refresh_token].revoked:
            raise _unauthenticated()
        if now >= access.expires_at:
            minutes = int((now - access.expires_at).total_seconds() // 60)
            raise HubSpotError(
                401,
                f"The OAuth token used to make this call expired {minutes} minute(s) ago.",
                "EXPIRED_AUTHENTICATION",
            )
        return self.installs[access.refresh_token].portal_id

    # --- the endpoints -------------------------------------------------------------------

    def handle(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
        now: datetime,
    ) -> tuple[int, Any]:
        routes = {"/oauth/v3/token": self._token, "/oauth/v3/token/introspect": self._introspect}
        if method != "POST" or path not in routes:
            raise HubSpotError(404, f"No route for {method} {path}", "OBJECT_NOT_FOUND")
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        if query or "application/x-www-form-urlencoded" not in content_type:
            raise HubSpotError(
                400, "The v3 OAuth endpoints take their parameters in a form body only", "VALIDATION_ERROR"
            )
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            raise _oauth_error("BAD_CLIENT_ID", "missing or invalid client id or client secret")
        return routes[path](form, now)

    def _token(self, form: dict[str, str], now: datetime) -> tuple[int, Any]:
        grant = form.get("grant_type")
        if grant == "authorization_code":
            refresh_token = self._redeem(form, now)
        elif grant == "refresh_token":
            self.refresh_calls += 1
            refresh_token = form.get("refresh_token", "")
            install = self.installs.get(refresh_token)
            if install is None or install.revoked:
                raise _oauth_error("BAD_REFRESH_TOKEN", "missing or invalid refresh token")
        else:
            raise _oauth_error("BAD_GRANT_TYPE", "grant_type must be authorization_code or refresh_token")
        install = self.installs[refresh_token]
        access_token = f"C{secrets.token_urlsafe(48)}"
        self.access[access_token] = Access(refresh_token, now + ACCESS_LIFETIME)
        return 200, {
            "token_type": "bearer",
            "refresh_token": refresh_token,
            "access_token": access_token,
            "expires_in": int(ACCESS_LIFETIME.total_seconds()),
            "hub_id": install.portal_id,
            "scopes": list(install.scopes),
            "user_id": install.user_id,
        }

    def _redeem(self, form: dict[str, str], now: datetime) -> str:
        """A code becomes an install (a new refresh token); it cannot be used twice."""
        code = self.codes.get(form.get("code", ""))
        if code is None:
            raise _oauth_error("BAD_AUTH_CODE", "missing or unknown auth code")
        if now >= code.expires_at:
            del self.codes[form["code"]]
            raise _oauth_error("BAD_AUTH_CODE", "auth code is expired")
        if form.get("redirect_uri") != code.redirect_uri:
            raise _oauth_error("BAD_REDIRECT_URI", "redirect_uri does not match the one the code was sent to")
        del self.codes[form["code"]]
        refresh_token = f"na1-{uuid.uuid4()}"
        self.installs[refresh_token] = Install(code.portal_id, code.user, code.user_id, code.scopes)
        return refresh_token

    def _introspect(self, form: dict[str, str], now: datetime) -> tuple[int, Any]:
        token = form.get("token", "")
        access = self.access.get(token)
        install = self.installs.get(access.refresh_token if access else token)
        if install is None or install.revoked or (access is not None and now >= access.expires_at):
            return 200, {"active": False}
        answer = {
            "active": True,
            "token_use": "access_token" if access else "refresh_token",
            "token": token,
            "hub_id": install.portal_id,
            "user_id": install.user_id,
            "user": install.user,
            "client_id": self.client_id,
            "app_id": APP_ID,
            "scopes": list(install.scopes),
            "token_type": "access" if access else "refresh",
            "hub_domain": f"portal-{install.portal_id}.hubspot.com",
            "is_private_distribution": False,
        }
        if access is not None:
            answer["expires_in"] = int((access.expires_at - now).total_seconds())
        return 200, answer


def _oauth_error(status: str, message: str) -> HubSpotError:
    """HubSpot's refusal of an OAuth request: 400, its ``status`` naming what was wrong."""
    error = HubSpotError(400, message, "VALIDATION_ERROR")
    error.extra["status"] = status  # replaces the body's generic "error"
    return error


def _unauthenticated() -> HubSpotError:
    return HubSpotError(
        401,
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and you "
        "can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
        "INVALID_AUTHENTICATION",
    )


# --- JSON shapes ---------------------------------------------------------------


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _options(values: Iterable[str]) -> list[dict[str, Any]]:
    return [{"label": v, "value": v, "displayOrder": n, "hidden": False} for n, v in enumerate(values)]


def _pipeline(pipeline: dict[str, Any], now: datetime) -> dict[str, Any]:
    stamp = _iso(now)
    stages = [
        {
            "id": stage_id,
            "label": label,
            "displayOrder": n,
            "metadata": {"isClosed": "true" if closed else "false", "probability": probability},
            "createdAt": stamp,
            "updatedAt": stamp,
            "archived": False,
            "writePermissions": "CRM_PERMISSIONS_ENFORCEMENT",
        }
        for n, (stage_id, label, closed, probability) in enumerate(pipeline["stages"])
    ]
    return {
        "id": pipeline["id"],
        "label": pipeline["label"],
        "displayOrder": 0,
        "stages": stages,
        "createdAt": stamp,
        "updatedAt": stamp,
        "archived": False,
    }


def _property_json(definition: dict[str, Any], now: datetime) -> dict[str, Any]:
    keep = ("name", "label", "type", "fieldType", "groupName", "description", "options", "hubspotDefined")
    return {key: definition[key] for key in keep} | {
        "createdAt": _iso(now),
        "updatedAt": _iso(now),
        "archived": False,
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": False,
        "hidden": False,
        "formField": False,
    }


def _error_body(exc: HubSpotError) -> dict[str, Any]:
    return {
        "status": "error",
        "message": exc.message,
        "correlationId": str(uuid.uuid4()),
        "category": exc.category,
        **exc.extra,
    }


def _batch_error(category: str, message: str, context: dict[str, list[str]]) -> dict[str, Any]:
    """One failed input of a 207 batch answer, in HubSpot's shape."""
    return {"status": "error", "category": category, "message": message, "context": context}


def _errors(errors: list[dict[str, Any]]) -> dict[str, Any]:
    return {"errors": errors, "numErrors": len(errors)}


def _injected(fault: Injectable) -> HubSpotError:
    """What HubSpot answers for a fault it plays before doing anything."""
    if fault in (Fault.RATE_LIMITED, 429):
        return _rate_limited("TEN_SECONDLY_ROLLING")
    if fault == Fault.PERMANENT:
        return HubSpotError(400, "Property values were not valid (injected).", "VALIDATION_ERROR")
    if fault == Fault.TRANSIENT:
        return HubSpotError(503, "The service is temporarily unavailable.", "SERVICE_UNAVAILABLE")
    assert isinstance(fault, int), fault
    return HubSpotError(fault, "An internal error occurred.", "INTERNAL_ERROR")


def _rate_limited(policy: str) -> HubSpotError:
    message = (
        "You have reached your ten_secondly_rolling limit." if policy != "SECONDLY" else "secondly limit"
    )
    return HubSpotError(429, message, "RATE_LIMITS", errorType="RATE_LIMIT", policyName=policy)


def _invalid(name: str, message: str, error: str) -> dict[str, Any]:
    return {"isValid": False, "message": message, "error": error, "name": name}


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise HubSpotError(400, f"Invalid input JSON: {what} must be an object", "VALIDATION_ERROR")
    return value


def _batch(body: Any) -> list[dict[str, Any]]:
    inputs = _object(body, "(body)").get("inputs")
    if not isinstance(inputs, list):
        raise HubSpotError(400, "Invalid input JSON: inputs must be a list", "VALIDATION_ERROR")
    if len(inputs) > 100:
        raise HubSpotError(400, f"Batch size is limited to 100 inputs, got {len(inputs)}", "VALIDATION_ERROR")
    return inputs


def _listed(query: dict[str, list[str]], name: str) -> list[str]:
    """A list parameter, sent repeated (the SDK) or comma-separated (curl): HubSpot takes both."""
    return [item for value in query.get(name, []) for item in value.split(",") if item]


EMAIL = re.compile(r"[^\s@\"(),:;<>\[\\\]]+@(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}", re.IGNORECASE)


def _valid_email(email: str) -> bool:
    """HubSpot's rules: RFC 2822's format, no quoted local part, a domain ending in a real TLD.

    The TLD is only checked to be letters here (HubSpot checks IANA's list).
    """
    local = email.partition("@")[0]
    return (
        bool(EMAIL.fullmatch(email))
        and ".." not in local
        and not local.startswith(".")
        and not local.endswith(".")
    )


def _millis(text: str) -> int | None:
    if text.isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def _sort_key(kind: str) -> Callable[[Any], Any]:
    if kind in ("date", "datetime"):
        return lambda v: _millis(str(v)) or 0
    if kind == "number":
        return lambda v: float(v)
    return lambda v: str(v)


def _decode(body: bytes, content_type: str) -> Any:
    """A request body: JSON, or the parts of a multipart/form-data upload."""
    if content_type.startswith("multipart/form-data"):
        request = Request.from_values(
            input_stream=BytesIO(body), content_length=len(body), content_type=content_type, method="POST"
        )
        files = {k: (f.filename or "", f.read(), f.mimetype) for k, f in request.files.items()}
        return Form(fields=dict(request.form.items()), files=files)
    return json.loads(body) if body else None


def _file_options(raw: str | None) -> dict[str, Any]:
    if not raw:
        raise HubSpotError(400, "options is required: a JSON object with access", "VALIDATION_ERROR")
    try:
        options = json.loads(raw)
    except json.JSONDecodeError:
        raise HubSpotError(400, "options must be a JSON object", "VALIDATION_ERROR") from None
    if not isinstance(options, dict) or options.get("access") not in FILE_ACCESS:
        raise HubSpotError(400, f"options.access must be one of {sorted(FILE_ACCESS)}", "VALIDATION_ERROR")
    unknown = sorted(set(options) - FILE_OPTIONS)
    if unknown:
        raise HubSpotError(400, f"unknown options: {', '.join(unknown)}", "VALIDATION_ERROR")
    return options


def _file_json(stored: StoredFile) -> dict[str, Any]:
    full = f"{stored.name}.{stored.extension}" if stored.extension else stored.name
    stamp = _iso(stored.created_at)
    return {
        "id": stored.id,
        "name": stored.name,
        "extension": stored.extension,
        "path": f"{stored.folder_path.rstrip('/')}/{full}",
        "parentFolderId": stored.folder_id,
        "access": stored.access,
        "size": len(stored.content),
        "type": "DOCUMENT" if stored.extension in ("md", "txt", "pdf") else "OTHER",
        "isUsableInContent": False,
        "createdAt": stamp,
        "updatedAt": stamp,
        "archived": False,
    }


# --- serving it --------------------------------------------------------------------


def serve(fake: FakeHubSpot, httpserver: Any) -> str:
    """Answer every request to ``httpserver`` (pytest-httpserver) from ``fake``; return its base URL."""
    httpserver.expect_request(re.compile(r"/.*")).respond_with_handler(
        lambda request: _respond(fake, request)
    )
    return str(httpserver.url_for("/")).rstrip("/")


def _respond(fake: FakeHubSpot, request: Request) -> Response:
    status, headers, body = fake.handle(
        request.method,
        request.path,
        request.args.to_dict(flat=False),
        dict(request.headers),
        request.get_data(),
    )
    delay = fake.delay(request.method, request.path)
    if delay:
        time.sleep(delay)  # after the work, outside the fake's lock
    if status == Fault.RESET:
        request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        return Response(status=200)
    if status == Fault.TIMEOUT:
        time.sleep(fake.stall_seconds)  # outside the fake's lock: other calls go on meanwhile
        return Response(json.dumps(body), status=504, headers=headers)
    if status == Fault.LOST_REPLY:
        # Applied, then the connection goes away before an answer: the client cannot know.
        request.environ["werkzeug.socket"].shutdown(socket.SHUT_RDWR)
        return Response(status=200)
    return Response(json.dumps(body) if body is not None else b"", status=status, headers=headers)


# --- a portal to test against ----------------------------------------------------------

OWNER, FINANCE, MARKETING = "101", "102", "103"
DEFAULT_STAGES = [
    ("appointmentscheduled", "Appointment scheduled", False, "0.2"),
    ("contractsent", "Contract sent", False, "0.8"),
    ("closedwon", "Closed won", True, "1.0"),
    ("closedlost", "Closed lost", True, "0.0"),
]
RENEWALS = "87654321"
RENEWAL_STAGES = [
    ("1001", "Renewal due", False, "0.5"),
    ("1002", "Renewed", True, "1.0"),
    ("1003", "Not renewed", True, "0.0"),
]


def standard_portal(fake: FakeHubSpot) -> FakeHubSpot:
    """Three owners, the default pipeline and a custom one (numeric stage ids), the contract properties."""
    fake.add_owner(OWNER, "sam@agency.example", "Sam", "Rivera")
    fake.add_owner(FINANCE, "fin@agency.example", "Fin", "Ance")
    fake.add_owner(MARKETING, "mia@agency.example", "Mia", "Marketing")
    fake.add_pipeline("default", "Sales Pipeline", DEFAULT_STAGES)
    fake.add_pipeline(RENEWALS, "Renewals", RENEWAL_STAGES)
    fake.define_property("deals", "contract_type")
    fake.define_property("deals", "contract_end_date", "date")
    return fake


def offboard_properties(fake: FakeHubSpot) -> FakeHubSpot:
    """The properties ``offboard hubspot setup`` creates, as if it had run."""
    from adapters.hubspot.setup import PROPERTIES

    for object_type, definition in PROPERTIES:
        options = [o["value"] for o in definition.get("options", [])]
        fake.define_property(object_type, definition["name"], definition["type"], options)
    return fake


def add_deal(
    fake: FakeHubSpot,
    *,
    name: str = "Acme website",
    stage: str = "closedwon",
    pipeline: str = "default",
    contract_type: str = "project",
    contract_end: str = "2026-12-31",
    close_date: str = "2026-11-20",
    company: str = "Acme Corp",
    contact: tuple[str, str, str] = ("pat@acme.example", "Pat", "Lee"),
    owner: str = OWNER,
) -> dict[str, str]:
    """A deal with its company and contact; returns the three ids."""
    company_id = fake.add_record("companies", {"name": company, "domain": "acme.example"})
    email, first, last = contact
    existing = [r.id for r in fake.records("contacts") if r.properties.get("email") == email]
    contact_id = (
        existing[0]
        if existing
        else fake.add_record("contacts", {"email": email, "firstname": first, "lastname": last})
    )
    deal_id = fake.add_record(
        "deals",
        {
            "dealname": name,
            "amount": "24000",
            "pipeline": pipeline,
            "dealstage": stage,
            "closedate": f"{close_date}T10:00:00.000Z",
            "hubspot_owner_id": owner,
            "contract_type": contract_type,
            "contract_end_date": contract_end,
        },
        links=[("companies", company_id, 5), ("contacts", contact_id, 3)],
    )
    return {"deal": deal_id, "company": company_id, "contact": contact_id}


def stage_event(
    deal_id: str, stage: str, *, event_id: int = 1, portal_id: int = PORTAL_ID, at: datetime | None = None
) -> dict[str, Any]:
    """One webhook event, shaped as HubSpot documents it."""
    return {
        "eventId": event_id,
        "subscriptionId": 2205,
        "portalId": portal_id,
        "appId": 1160452,
        "occurredAt": int((at or datetime.now(UTC)).timestamp() * 1000),
        "subscriptionType": "deal.propertyChange",
        "attemptNumber": 0,
        "objectId": int(deal_id),
        "propertyName": "dealstage",
        "propertyValue": stage,
        "changeSource": "CRM",
        "sourceId": "userId:1234",
    }


def task_event(
    task_id: str,
    status: str,
    *,
    event_id: int = 1,
    portal_id: int = PORTAL_ID,
    at: datetime | None = None,
    user: str = OWNER_USER,
) -> dict[str, Any]:
    """The generic ``object.propertyChange`` event a task's status change sends (objectTypeId 0-27)."""
    return {
        "eventId": event_id,
        "subscriptionId": 2206,
        "portalId": portal_id,
        "appId": APP_ID,
        "occurredAt": int((at or datetime.now(UTC)).timestamp() * 1000),
        "subscriptionType": "object.propertyChange",
        "attemptNumber": 0,
        "objectTypeId": "0-27",
        "objectId": int(task_id),
        "propertyName": "hs_task_status",
        "propertyValue": status,
        "changeSource": "CRM_UI",
        "sourceId": f"userId:{user}",
    }


# --- wiring the adapter to it in tests -------------------------------------------------------

CLIENT_SECRET = "hubspot-app-client-secret-for-tests"


def settings_overrides(url: str, **extra: Any) -> dict[str, Any]:
    """What make_settings needs to turn HubSpot on against the fake at ``url``."""
    return {
        "HUBSPOT_ACCESS_TOKEN": TOKEN,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": url,
        "OFFBOARD_ROLES": {"finance": FINANCE, "marketing": OWNER},
        **extra,
    }


def oauth_overrides(url: str, **extra: Any) -> dict[str, Any]:
    """What make_settings needs for installs by OAuth against the fake at ``url`` (no private-app token)."""
    return {
        "HUBSPOT_CLIENT_ID": CLIENT_ID,
        "HUBSPOT_CLIENT_SECRET": CLIENT_SECRET,
        "HUBSPOT_API_BASE_URL": url,
        "HUBSPOT_AUTHORIZE_URL": f"{url}/oauth/authorize",
        **extra,
    }


def fake_time_limits(clock: Any, per_10s: int = 100, search_per_s: int = 4) -> Any:
    """Limits on the test's clock: waiting moves the clock instead of sleeping."""
    from adapters.hubspot.ratelimit import Limits

    return Limits(
        per_10s, search_per_s, now=lambda: clock().timestamp(), sleep=lambda s: clock.advance(seconds=s)
    )


def fake_time_adapter(settings: Any, clock: Any) -> Any:
    from adapters.hubspot.adapter import HubSpotAdapter
    from adapters.hubspot.api import HubSpotApi

    portal = settings.crm("hubspot")
    limits = fake_time_limits(clock, portal.rate_limit_per_10s, portal.search_rate_limit_per_s)
    api = HubSpotApi.from_settings(portal, limits)
    return HubSpotAdapter(portal, api, clock=clock, sleep=lambda s: clock.advance(seconds=s))


def hubspot_services(settings: Any, store: Any, clock: Any) -> Any:
    """The services a process builds, with the HubSpot adapter on the test's clock."""
    from connector.services import build

    services = build(settings, store=store, clock=clock)
    services.adapters["hubspot"] = fake_time_adapter(settings, clock)
    return services


def signed(
    events: Any, *, url: str, at: datetime, secret: str = CLIENT_SECRET, method: str = "POST"
) -> tuple[bytes, dict[str, str]]:
    """A webhook body and the headers HubSpot sends with it to ``url``: v3, and v1 beside it."""
    from adapters.hubspot.signature import sign_v3

    body = json.dumps(events).encode()
    timestamp = int(at.timestamp() * 1000)
    return body, {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": sign_v3(secret, method, url, body, timestamp),
        "X-HubSpot-Request-Timestamp": str(timestamp),
        "X-HubSpot-Signature": sign_v1(secret, body),
        "X-HubSpot-Signature-Version": "v1",
    }


def sign_v1(secret: str, body: bytes) -> str:
    """The v1 signature HubSpot still sends beside v3: hex(sha256(secret + body)), signing no time."""
    return hashlib.sha256(secret.encode() + body).hexdigest()


def legacy_headers(body: bytes, secret: str = CLIENT_SECRET) -> dict[str, str]:
    """A request signed the old way only, as a replayed or forged one would be."""
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature": sign_v1(secret, body),
        "X-HubSpot-Signature-Version": "v1",
    }
