"""A strict in-memory Salesforce org, for the adapter's tests.

The core is ``FakeSalesforce.handle(method, url, headers, body) -> (status,
headers, body)``: the REST API (SOQL, describe, sObject Collections, composite,
single records, ``emailSimple``, limits) and the logins Offboard performs
(SOAP password login; the OAuth token endpoint's JWT, client-credentials and
refresh-token grants). It is strict like a real
org: required fields, field lengths, restricted picklists checked against the
describe, references that must exist, at most 200 records per collections call,
error bodies as lists of ``{message, errorCode, fields}``, collections that create, update
(PATCH) and delete (DELETE ``?ids=``) with per-record results under ``allOrNone: false``,
``Sforce-Limit-Info`` on every answer, 401 ``INVALID_SESSION_ID`` for a wrong token, a Task about a
Lead refused when it also has a WhatId, a guest survey invitation refused
without its Experience Cloud site (CommunityId), and a SOQL parser that refuses
what Salesforce refuses (an unescaped quote, a quoted date, a filter on a long
text area).

Two transports serve the same core: ``install(responses_mock)`` for unit and
integration tests (simple-salesforce speaks requests), and ``TlsServer`` for the
end-to-end tests (simple-salesforce always builds https:// URLs).

Switches: ``inject(fault, match, times)`` plays a fault of ``tests.support.faults`` on the
next matching calls: ``transient``, ``rate_limited`` (403 REQUEST_LIMIT_EXCEEDED) and
``permanent`` answer an error before any work, ``lost_reply`` does the work and then loses
the answer (a timeout after Salesforce received the request), ``session_expired`` ends every
session right after answering. ``fail`` answers an exact error (status, code, message)
before any work; ``set_usage``, ``expire_sessions`` (now), ``issue_refresh_token`` and
``revoke_refresh_tokens``. Over ``TlsServer``: ``latency`` (seconds, 0 by default) delays every
answer, as a network does, outside the org's lock. ``log`` keeps (time, "METHOD path", status)
of every request either transport carried (status 0: the answer was lost).

Installs by OAuth (``SalesforceOAuth``): the org is the login host's first org; ``add_org(org_id,
instance)`` adds another on its own instance, with its own records and budget, and a session
works only on its own org's instance. ``authorize(code_challenge, org_id=…) -> code`` stands for
a user approving the app (``consent(authorize_url)`` follows an install link and answers the
callback URL); the token endpoint's ``authorization_code`` grant checks the code (single use,
expiring), its redirect_uri and the PKCE verifier, and answers a refresh token and a session
that ends after SESSION_LIFETIME on ``clock``. ``expire(access_token)``,
``revoke(refresh_token=… | org_id=…)`` and ``refresh_calls`` are the test's switches and counter.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import re
import secrets
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit
from xml.sax.saxutils import escape

import requests

from tests.support.faults import Fault

API_VERSION = "59.0"
INSTANCE = "acme.my.salesforce.com"
USERNAME = "integration@acme.example"
PASSWORD = "correct horse"
SECURITY_TOKEN = "tok3n"
CONSUMER_KEY = "3MVG9-fake-consumer-key"
CONSUMER_SECRET = "fake-consumer-secret"
# The key in the outbound-message URL that tests configure (SALESFORCE_OUTBOUND_KEY).
OUTBOUND_KEY = "test-outbound-key-0123456789abcdefghijklmnop"
OUTBOUND_PATH = f"/webhooks/salesforce?key={OUTBOUND_KEY}"
REFRESH_REFUSED = {"error": "invalid_grant", "error_description": "expired access/refresh token"}
GRANTS = (
    "urn:ietf:params:oauth:grant-type:jwt-bearer",
    "client_credentials",
    "refresh_token",
    "authorization_code",
)
# The install (web-server flow with PKCE): Offboard's callback, and how long codes and sessions last.
REDIRECT_URI = "http://127.0.0.1:8080/oauth/salesforce/callback"
CODE_LIFETIME = timedelta(minutes=15)  # unconfirmed: Salesforce documents codes as short-lived
SESSION_LIFETIME = timedelta(hours=2)  # the org's session timeout (Salesforce's default: 2 hours)

Reply = tuple[int, dict[str, str], bytes]

# What a listener must answer, written out from Salesforce's outbound-messaging docs (not from our code).
EXPECTED_ACK = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>'
    b'<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>'
    b"</notificationsResponse></soapenv:Body></soapenv:Envelope>"
)

# --- ids ----------------------------------------------------------------------

PREFIXES = {
    "Organization": "00D",
    "User": "005",
    "Account": "001",
    "Contact": "003",
    "Contract": "800",
    "Opportunity": "006",
    "OpportunityContactRole": "00K",
    "Task": "00T",
    "ContentDocument": "069",
    "ContentDocumentLink": "06A",
    "ContentVersion": "068",
    "Survey": "0Kd",
    "Lead": "00Q",
    "SurveyInvitation": "0Ki",
    "Network": "0DB",
}
_ID = re.compile(r"^[a-zA-Z0-9]{15}(?:[a-zA-Z0-9]{3})?$")


def _long(short: str) -> str:
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, c in enumerate(short[start : start + 5]) if c.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return short + suffix


def _is_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_ID.match(value))


ORG_ID = _long("00D5g00000Fake1")


# --- schema -------------------------------------------------------------------


@dataclass(frozen=True)
class F:
    """One field as the describe tells it."""

    type: str  # id string textarea email url boolean date currency int picklist reference base64
    length: int = 0
    required: bool = False
    createable: bool = True
    updateable: bool = True
    filterable: bool = True
    default: Any = None
    values: tuple[str, ...] = ()
    restricted: bool = False
    refs: tuple[str, ...] = ()
    relationship: str | None = None
    external_id: bool = False


def _ref(*refs: str, relationship: str | None = None, required: bool = False, **kw: Any) -> F:
    return F("reference", 18, required=required, refs=refs, relationship=relationship, **kw)


def _pick(*values: str, default: str | None = None, restricted: bool = True, required: bool = False) -> F:
    return F("picklist", 255, required=required, values=values, restricted=restricted, default=default)


ID = F("id", 18, createable=False, updateable=False)
OWNER = _ref("User", relationship="Owner", default="<current user>")
READ_ONLY_FLAG = F("boolean", createable=False, updateable=False, default=False)
CREATED = F("datetime", createable=False, updateable=False)

# The Task statuses whose TaskStatus record is marked closed in a new org: a Task saved with
# one is IsClosed, with CompletedDateTime set (Task object reference, developer.salesforce.com).
CLOSED_TASK_STATUSES = frozenset({"Completed"})
# Offboard_Status__c, a restricted picklist (docs/salesforce.md, Fields to create).
OFFBOARD_STATUSES = ("not_started", "in_progress", "overdue", "needs_evidence", "complete", "cancelled")
# The longest URI (path and query) a REST call may have: longer is 414 URI Too Long
# (help.salesforce.com article 000386264); a SOQL statement is at most 100,000 characters
# (SOQL and SOSL limits, salesforce_app_limits_cheatsheet).
URI_MAX = 16_384
SOQL_MAX = 100_000

# StageName carries IsClosed / IsWon, as OpportunityStage does in a real org.
STAGES = {
    "Prospecting": (False, False),
    "Qualification": (False, False),
    "Negotiation/Review": (False, False),
    "Closed Won": (True, True),
    "Closed Lost": (True, False),
}


def _schema() -> dict[str, dict[str, F]]:
    return {
        "Organization": {"Id": ID, "Name": F("string", 80)},
        "User": {"Id": ID, "Name": F("string", 121), "Email": F("email", 128), "IsActive": READ_ONLY_FLAG},
        "Account": {
            "Id": ID,
            "Name": F("string", 255, required=True),
            "Website": F("url", 255),
            "OwnerId": OWNER,
        },
        "Contact": {
            "Id": ID,
            "FirstName": F("string", 40),
            "LastName": F("string", 80, required=True),
            "Email": F("email", 80),
            "AccountId": _ref("Account", relationship="Account"),
            "OwnerId": OWNER,
            "CreatedDate": CREATED,
            # The fields Offboard writes survey answers to (manifest.json lists them).
            "Offboard_Last_Survey_Kind__c": _pick("nps", "csat", "ces"),
            "Offboard_Last_Exit_Score__c": F("int"),
            "Offboard_Exit_Category__c": _pick("promoter", "passive", "detractor"),
        },
        "Lead": {
            "Id": ID,
            "FirstName": F("string", 40),
            "LastName": F("string", 80, required=True),
            "Email": F("email", 80),
            "Company": F("string", 255, required=True),
            "LeadSource": _pick(
                "Web", "Phone Inquiry", "Partner Referral", "Purchased List", "Other", restricted=False
            ),
            "Description": F("textarea", 32000, filterable=False),
            "OwnerId": OWNER,
            "CreatedDate": CREATED,
        },
        "Contract": {
            "Id": ID,
            "AccountId": _ref("Account", relationship="Account", required=True),
            "StartDate": F("date"),
            "ContractTerm": F("int"),
            "EndDate": F("date", createable=False, updateable=False),  # computed by Salesforce
            "Status": _pick("Draft", "Activated", default="Draft"),
            "SystemModstamp": CREATED,  # moved on every save
        },
        "Opportunity": {
            "Id": ID,
            "Name": F("string", 120, required=True),
            "StageName": _pick(*STAGES, required=True),
            "CloseDate": F("date", required=True),
            "Amount": F("currency"),
            "Type": _pick("New Customer", "Existing Customer - Upgrade", restricted=False),
            "IsClosed": READ_ONLY_FLAG,
            "IsWon": READ_ONLY_FLAG,
            "AccountId": _ref("Account", relationship="Account"),
            "OwnerId": OWNER,
            "ContractId": _ref("Contract", relationship="Contract"),
            "Description": F("textarea", 32000, filterable=False),
            "Offboarding_Status__c": F("string", 255),
            # Where Offboard shows a checklist's progress (manifest.json lists them).
            "Offboard_Status__c": _pick(*OFFBOARD_STATUSES),
            "Offboard_Progress__c": F("string", 20),
            "Offboard_Next_Due__c": F("date"),
            "Offboard_Playbook__c": F("string", 255),
            "SystemModstamp": CREATED,  # moved on every save
        },
        "OpportunityContactRole": {
            "Id": ID,
            "OpportunityId": _ref("Opportunity", relationship="Opportunity", required=True),
            "ContactId": _ref("Contact", relationship="Contact", required=True),
            "IsPrimary": F("boolean", default=False),
            "Role": _pick("Decision Maker", "Business User", restricted=False),
        },
        "Task": {
            "Id": ID,
            "Subject": F("string", 255),
            "Description": F("textarea", 32000, filterable=False),
            "ActivityDate": F("date"),
            "Status": _pick(
                "Not Started",
                "In Progress",
                "Completed",
                "Waiting on someone else",
                "Deferred",
                default="Not Started",
                required=True,
            ),
            "Priority": _pick("High", "Normal", "Low", default="Normal", required=True),
            "Type": _pick("Call", "Email", "Meeting", "Other"),
            "TaskSubtype": _pick("Task", "Email", "Call", default="Task", restricted=True),
            "WhatId": _ref("Opportunity", "Account", "Contract"),
            "WhoId": _ref("Contact", "Lead"),
            "OwnerId": OWNER,
            # Computed on save: IsClosed from the status, CompletedDateTime when it closes.
            "IsClosed": READ_ONLY_FLAG,
            "CompletedDateTime": CREATED,
            "LastModifiedDate": CREATED,
            "LastModifiedById": _ref(
                "User", relationship="LastModifiedBy", createable=False, updateable=False
            ),
        },
        "ContentNote": {
            "Id": ID,
            "Title": F("string", 255, required=True),
            "Content": F("base64", required=True),
        },
        "ContentDocument": {"Id": ID, "Title": F("string", 255, createable=False)},
        "ContentDocumentLink": {
            "Id": ID,
            "ContentDocumentId": _ref("ContentDocument", relationship="ContentDocument", required=True),
            "LinkedEntityId": _ref("Opportunity", "Account", "Contact", "User", "Task", required=True),
            "ShareType": _pick("V", "C", "I", required=True),
            "Visibility": _pick("AllUsers", "InternalUsers", "SharedUsers", default="AllUsers"),
            "SystemModstamp": CREATED,
        },
        # A file: inserting a version without ContentDocumentId makes a new ContentDocument, linked
        # to FirstPublishLocationId (ContentVersion object reference). PathOnClient and VersionData
        # (base64) are required for a new file.
        "ContentVersion": {
            "Id": ID,
            "Title": F("string", 255),
            "PathOnClient": F("string", 500, required=True, updateable=False),
            "VersionData": F("base64", required=True, updateable=False),
            "FirstPublishLocationId": _ref(
                "Opportunity", "Account", "Contact", "User", "Task", updateable=False
            ),
            "ContentDocumentId": _ref(
                "ContentDocument", relationship="ContentDocument", createable=False, updateable=False
            ),
            "Description": F("textarea", 1000),
        },
        "Survey": {"Id": ID, "Name": F("string", 80, required=True)},
        "Network": {"Id": ID, "Name": F("string", 80, required=True)},
        "SurveyInvitation": {
            "Id": ID,
            "Name": F("string", 80, required=True),
            "SurveyId": _ref("Survey", relationship="Survey", required=True),
            "ParticipantId": _ref("Contact", "User"),
            "CommunityId": _ref("Network", relationship="Community"),
            "OptionsAllowGuestUserResponse": F("boolean", default=False),
            "OptionsAllowParticipantAccessTheirResponse": F("boolean", default=False),
            "OptionsCollectAnonymousResponse": F("boolean", default=False),
            "InvitationLink": F("url", 1000, createable=False, updateable=False),
        },
    }


CHILDREN = {"Opportunity": {"OpportunityContactRoles": ("OpportunityContactRole", "OpportunityId")}}


@dataclass
class SfError(Exception):
    """A Salesforce error: request-level (``errorCode``) or record-level (``statusCode``)."""

    code: str
    message: str
    fields: list[str] = field(default_factory=list)
    status: int = 400

    def as_request_error(self) -> dict[str, Any]:
        return {"message": self.message, "errorCode": self.code, "fields": self.fields}

    def as_record_error(self) -> dict[str, Any]:
        return {"statusCode": self.code, "message": self.message, "fields": self.fields}


def _malformed(message: str) -> SfError:
    return SfError("MALFORMED_QUERY", message)


# --- SOQL ---------------------------------------------------------------------

_TOKEN = re.compile(
    r"""(?P<ws>\s+)
    |(?P<string>'(?:[^'\\]|\\.)*')
    |(?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    |(?P<date>\d{4}-\d{2}-\d{2})
    |(?P<number>-?\d+(?:\.\d+)?)
    |(?P<dateliteral>[A-Za-z_]+:\d+)
    |(?P<name>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    |(?P<op>!=|<>|<=|>=|=|<|>)
    |(?P<punct>[(),])""",
    re.X,
)
_ESCAPES = {
    "\\": "\\",
    "'": "'",
    '"': '"',
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "b": "\b",
    "f": "\f",
    "%": "%",
    "_": "_",
}
_KEYWORDS = {
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "LIMIT",
    "NULLS",
    "FIRST",
    "LAST",
    "TRUE",
    "FALSE",
    "NULL",
    "TODAY",
    "YESTERDAY",
    "TOMORROW",
}


@dataclass(frozen=True)
class Tok:
    kind: str
    text: str
    value: Any = None


def tokenize(text: str) -> list[Tok]:
    tokens, pos = [], 0
    while pos < len(text):
        found = _TOKEN.match(text, pos)
        if not found:
            raise _malformed(f"unexpected token: '{text[pos : pos + 20]}'")
        pos = found.end()
        kind = str(found.lastgroup)
        if kind == "ws":
            continue
        raw = found.group()
        if kind == "string":
            tokens.append(Tok("string", raw, _unescape(raw[1:-1])))
        elif kind == "name" and raw.upper() in _KEYWORDS:
            tokens.append(Tok("kw", raw.upper()))
        else:
            tokens.append(Tok(kind, raw))
    return tokens


def _unescape(body: str) -> str:
    out, chars = [], iter(body)
    for char in chars:
        if char == "\\":
            nxt = next(chars, "")
            if nxt not in _ESCAPES:
                raise _malformed(f"Invalid string literal '{body}'. Illegal character sequence '\\{nxt}'")
            out.append(_ESCAPES[nxt])
        else:
            out.append(char)
    return "".join(out)


@dataclass
class Query:
    fields: list[str]
    subqueries: list[Query]
    sobject: str
    where: Any = None
    order: list[tuple[str, bool]] = field(default_factory=list)
    limit: int | None = None


class _Parser:
    def __init__(self, tokens: list[Tok]) -> None:
        self.tokens, self.pos = tokens, 0

    def peek(self) -> Tok | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Tok:
        tok = self.peek()
        if tok is None:
            raise _malformed("unexpected end of query")
        self.pos += 1
        return tok

    def keyword(self, word: str) -> bool:
        tok = self.peek()
        if tok is not None and tok.kind == "kw" and tok.text == word:
            self.pos += 1
            return True
        return False

    def expect(self, kind: str, text: str | None = None) -> Tok:
        tok = self.take()
        if tok.kind != kind or (text is not None and tok.text != text):
            raise _malformed(f"unexpected token: '{tok.text}'")
        return tok

    def query(self) -> Query:
        self.expect("kw", "SELECT")
        fields, subqueries = [], []
        while True:
            if self.peek() is not None and self.peek().text == "(":  # type: ignore[union-attr]
                self.take()
                subqueries.append(self.query())
                self.expect("punct", ")")
            else:
                fields.append(self.expect("name").text)
            if not (self.peek() is not None and self.peek().text == ","):  # type: ignore[union-attr]
                break
            self.take()
        self.expect("kw", "FROM")
        q = Query(fields, subqueries, self.expect("name").text)
        if self.keyword("WHERE"):
            q.where = self.condition()
        if self.keyword("ORDER"):
            self.expect("kw", "BY")
            q.order = self.order()
        if self.keyword("LIMIT"):
            q.limit = int(self.expect("number").text)
        return q

    def order(self) -> list[tuple[str, bool]]:
        items = []
        while True:
            name = self.expect("name").text
            descending = self.keyword("DESC")
            if not descending:
                self.keyword("ASC")
            if self.keyword("NULLS") and not (self.keyword("FIRST") or self.keyword("LAST")):
                raise _malformed("expected FIRST or LAST after NULLS")
            items.append((name, descending))
            if not (self.peek() is not None and self.peek().text == ","):  # type: ignore[union-attr]
                return items
            self.take()

    def condition(self) -> Any:
        left = self.conjunction()
        while self.keyword("OR"):
            left = ("or", left, self.conjunction())
        return left

    def conjunction(self) -> Any:
        left = self.negation()
        while self.keyword("AND"):
            left = ("and", left, self.negation())
        return left

    def negation(self) -> Any:
        if self.keyword("NOT"):
            return ("not", self.negation())
        tok = self.peek()
        if tok is not None and tok.text == "(":
            self.take()
            inner = self.condition()
            self.expect("punct", ")")
            return inner
        return self.comparison()

    def comparison(self) -> Any:
        path = self.expect("name").text
        negate = self.keyword("NOT")
        if self.keyword("IN"):
            self.expect("punct", "(")
            values = [self.value()]
            while self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                self.take()
                values.append(self.value())
            self.expect("punct", ")")
            return ("in", path, values, negate)
        if negate:
            raise _malformed("expected IN after NOT")
        if self.keyword("LIKE"):
            return ("like", path, self.value())
        op = self.expect("op").text
        return ("cmp", path, "!=" if op == "<>" else op, self.value())

    def value(self) -> tuple[str, Any]:
        tok = self.take()
        if tok.kind == "string":
            return ("string", tok.value)
        if tok.kind == "number":
            return ("number", float(tok.text))
        if tok.kind in ("date", "datetime"):
            return (tok.kind, tok.text)
        if tok.kind == "dateliteral":
            return ("dateliteral", tok.text.upper())
        if tok.kind == "kw" and tok.text in ("TRUE", "FALSE"):
            return ("boolean", tok.text == "TRUE")
        if tok.kind == "kw" and tok.text == "NULL":
            return ("null", None)
        if tok.kind == "kw" and tok.text in ("TODAY", "YESTERDAY", "TOMORROW"):
            return ("dateliteral", tok.text)
        raise _malformed(f"unexpected token: '{tok.text}'")


def parse_soql(text: str) -> Query:
    parser = _Parser(tokenize(text))
    query = parser.query()
    if parser.peek() is not None:
        raise _malformed(f"unexpected token: '{parser.peek().text}'")  # type: ignore[union-attr]
    return query


# --- the org --------------------------------------------------------------------


# What the org answers for the faults it plays before doing any work: status, errorCode, message.
ANSWERS = {
    Fault.TRANSIENT: (503, "SERVER_UNAVAILABLE", "Service temporarily unavailable (injected)"),
    Fault.RATE_LIMITED: (403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    Fault.PERMANENT: (400, "FIELD_CUSTOM_VALIDATION_EXCEPTION", "Offboard may not write this (injected)"),
}


@dataclass
class Injected:
    fault: Fault
    match: str
    times: int
    status: int = 503
    code: str = "SERVER_UNAVAILABLE"
    message: str = "Service temporarily unavailable (injected)"


@dataclass(frozen=True)
class Seeded:
    """What ``add_opportunity`` created, by id."""

    opportunity: str
    account: str
    owner: str
    contacts: tuple[str, ...]
    contract: str | None


@dataclass
class Code:
    """An authorization code: single use, expiring, bound to its redirect_uri and PKCE challenge."""

    org_id: str
    user_id: str
    scopes: tuple[str, ...]
    redirect_uri: str
    challenge: str
    expires_at: datetime


@dataclass
class Install:
    """What an OAuth refresh token stands for: one user's grant to the app in one org."""

    org_id: str
    user_id: str
    scopes: tuple[str, ...]
    revoked: bool = False


class SalesforceOAuth:
    """The login host's side of the web-server flow with PKCE, shared by every org behind it:
    codes (single use, expiring, bound to redirect_uri and code_challenge), refresh tokens per
    install, and sessions (access tokens) per org that end after SESSION_LIFETIME or on demand.
    Errors are Salesforce's: ``{"error", "error_description"}``, 400."""

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self.codes: dict[str, Code] = {}
        self.installs: dict[str, Install] = {}  # by refresh token
        self.sessions: dict[str, tuple[str, datetime]] = {}  # access token → (org id, ends at)
        self.refresh_calls = 0

    def authorize(
        self, org_id: str, user_id: str, scopes: tuple[str, ...], redirect_uri: str, challenge: str
    ) -> str:
        code = f"aPrx{secrets.token_urlsafe(40)}=="
        self.codes[code] = Code(
            org_id, user_id, scopes, redirect_uri, challenge, self.clock() + CODE_LIFETIME
        )
        return code

    def org_of(self, access_token: str) -> str | None:
        """The org a live session belongs to (None for anything else)."""
        found = self.sessions.get(access_token)
        if found is None or self.clock() >= found[1]:
            return None
        return found[0]

    def end_sessions(self, org_id: str) -> None:
        self.sessions = {k: v for k, v in self.sessions.items() if v[0] != org_id}

    def expire(self, access_token: str) -> None:
        org_id, _ends = self.sessions[access_token]
        self.sessions[access_token] = (org_id, self.clock() - timedelta(seconds=1))

    def revoke(self, refresh_token: str | None, org_id: str | None) -> None:
        """Revoking a refresh token revokes the sessions it issued too (Salesforce's revoke)."""
        for token, install in self.installs.items():
            if token == refresh_token or install.org_id == org_id:
                install.revoked = True
                self.end_sessions(install.org_id)

    def redeem(self, form: dict[str, str]) -> tuple[str, Install] | dict[str, str]:
        """A code and its verifier become an install: (refresh token, install), or Salesforce's error."""
        code = self.codes.get(form.get("code", ""))
        if code is None:
            return {"error": "invalid_grant", "error_description": "invalid authorization code"}
        if self.clock() >= code.expires_at:
            return {"error": "invalid_grant", "error_description": "expired authorization code"}
        if form.get("redirect_uri") != code.redirect_uri:
            return {
                "error": "redirect_uri_mismatch",
                "error_description": "redirect_uri must match configuration",
            }
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not hmac.compare_digest(digest, code.challenge):
            return {"error": "invalid_grant", "error_description": "invalid code verifier"}
        del self.codes[form["code"]]
        refresh_token = f"5Aep861{secrets.token_urlsafe(32)}"
        self.installs[refresh_token] = Install(code.org_id, code.user_id, code.scopes)
        return refresh_token, self.installs[refresh_token]

    def open_session(self, org_id: str, access_token: str) -> None:
        self.sessions[access_token] = (org_id, self.clock() + SESSION_LIFETIME)


def _signature(identity_url: str, issued_at: str) -> str:
    """Salesforce's ``signature``: base64(HMAC-SHA256(consumer secret, id + issued_at))."""
    digest = hmac.new(CONSUMER_SECRET.encode(), (identity_url + issued_at).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


class FakeSalesforce:
    FAULTS = frozenset({*ANSWERS, Fault.LOST_REPLY, Fault.SESSION_EXPIRED})

    def __init__(
        self,
        *,
        instance: str = INSTANCE,
        org_id: str = ORG_ID,
        page_size: int = 2000,
        task_marker_field: str | None = None,
        api_max: int = 100_000,
        today: date = date(2026, 11, 20),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.instance, self.org_id, self.page_size, self.today = instance, org_id, page_size, today
        self.schema = _schema()
        if task_marker_field:
            self.schema["Task"][task_marker_field] = F("string", 40, external_id=True)
        self.db: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in self.schema}
        self.api_used, self.api_max = 0, api_max
        self.calls: list[str] = []
        self.queries: list[str] = []  # every SOQL text received, parsed or not
        self.emails: list[dict[str, Any]] = []
        self.logins = 0
        self.faults: list[Injected] = []
        self._cursors: dict[str, list[dict[str, Any]]] = {}
        self._counter = itertools.count(1)
        self._lock = threading.RLock()
        self._actor: str | None = None  # the user a test acts as (complete_task …); else the API user
        self._moment: datetime | None = None  # when a test's edit happens (edit_task at=…); else now
        self.db["Organization"][org_id] = {"Id": org_id, "Name": "Acme"}
        self.api_user = self.add_user("Integration User", "integration@acme.example")
        self.access_token = self._new_token()
        self.jwt_public_key: bytes | None = None  # set it to accept JWT logins signed by its private key
        self.refresh_tokens: set[str] = set()  # issue_refresh_token adds one
        self.rotate_refresh_tokens = False  # True: each refresh answers a new token, the used one ends
        self.latency = 0.0  # seconds each answer over TlsServer waits before it leaves
        self.log: list[tuple[datetime, str, int]] = []  # (time, "METHOD path", status) per request
        # Installs by OAuth: every org behind this login host, this one first, and the host's OAuth.
        self.clock = clock
        self.orgs: dict[str, FakeSalesforce] = {org_id: self}
        self.oauth = SalesforceOAuth(clock)

    # --- seeding (bypasses validation, as data loaded through the UI would) ---

    def add_user(self, name: str, email: str | None = None) -> str:
        return self._seed("User", Name=name, Email=email, IsActive=True)

    def add_account(self, name: str, website: str | None = None) -> str:
        return self._seed("Account", Name=name, Website=website, OwnerId=self.api_user)

    def add_contact(
        self, first: str | None, last: str, email: str | None, account_id: str | None = None
    ) -> str:
        return self._seed("Contact", FirstName=first, LastName=last, Email=email, AccountId=account_id)

    def add_lead(self, first: str | None, last: str, email: str | None, company: str = "Somewhere") -> str:
        return self._seed(
            "Lead", FirstName=first, LastName=last, Email=email, Company=company, OwnerId=self.api_user
        )

    def add_survey(self, name: str = "Exit NPS") -> str:
        return self._seed("Survey", Name=name)

    def add_community(self, name: str = "Client feedback") -> str:
        """An Experience Cloud site (a Network): where guests answer survey invitations."""
        return self._seed("Network", Name=name)

    def issue_refresh_token(self) -> str:
        """A refresh token the token endpoint accepts, as an OAuth install leaves behind."""
        token = f"5Aep861{secrets.token_urlsafe(32)}"
        self.refresh_tokens.add(token)
        return token

    def revoke_refresh_tokens(self) -> None:
        """Every refresh token stops working, as when an admin revokes the app's access."""
        self.refresh_tokens.clear()

    # --- installs by OAuth, several orgs behind one login host ------------------------------

    def add_org(self, org_id: str, instance: str, name: str = "Globex") -> FakeSalesforce:
        """Another org behind the same login host, on its own instance, with its own records,
        users and API budget (a 15-character ``org_id`` is given its 18-character form)."""
        with self._lock:
            org_id = _long(org_id) if len(org_id) == 15 else org_id
            org = FakeSalesforce(instance=instance, org_id=org_id, today=self.today, clock=self.clock)
            org.db["Organization"][org_id]["Name"] = name
            # Its ids never collide with another org's: its integration user is made again with them.
            org._counter = itertools.count(1_000_000 * len(self.orgs))
            del org.db["User"][org.api_user]
            org.api_user = org.add_user("Integration User", f"integration@{name.lower()}.example")
            org._lock, org.orgs, org.oauth = self._lock, self.orgs, self.oauth
            self.orgs[org_id] = org
            return org

    def org(self, org_id: str) -> FakeSalesforce:
        """An org behind this login host, by its 15- or 18-character id."""
        return self.orgs[_long(org_id) if len(org_id) == 15 else org_id]

    def authorize(
        self,
        code_challenge: str,
        *,
        org_id: str | None = None,
        user_id: str | None = None,
        scopes: Iterable[str] = ("api", "refresh_token"),
        redirect_uri: str = REDIRECT_URI,
    ) -> str:
        """A user of ``org_id`` (this org by default) approves the app: the code Salesforce puts
        on the redirect, bound to ``redirect_uri`` and the PKCE ``code_challenge`` (S256)."""
        org = self.org(org_id or self.org_id)
        user = user_id or org.api_user
        return self.oauth.authorize(org.org_id, user, tuple(scopes), redirect_uri, code_challenge)

    def consent(self, authorize_url: str, *, org_id: str | None = None, user_id: str | None = None) -> str:
        """Follows an install link as the user's browser would and approves it: the callback URL
        (``code``, ``state``). ValueError for a link Salesforce shows an error page for."""
        parts = urlsplit(authorize_url)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path != "/services/oauth2/authorize" or query.get("client_id") != CONSUMER_KEY:
            raise ValueError("Salesforce shows an error page: not this app's authorize link")
        if query.get("response_type") != "code" or not query.get("redirect_uri"):
            raise ValueError(
                "Salesforce shows an error page: response_type=code and redirect_uri are required"
            )
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            raise ValueError("Salesforce shows an error page: PKCE (code_challenge, S256) is required")
        code = self.authorize(
            query["code_challenge"],
            org_id=org_id,
            user_id=user_id,
            scopes=query.get("scope", "api refresh_token").split(),
            redirect_uri=query["redirect_uri"],
        )
        answer = {"code": code} | ({"state": query["state"]} if "state" in query else {})
        return f"{query['redirect_uri']}?{urlencode(answer)}"

    def expire(self, access_token: str) -> None:
        """This OAuth session ends now, as the org's session timeout would end it."""
        self.oauth.expire(access_token)

    def revoke(self, refresh_token: str | None = None, *, org_id: str | None = None) -> None:
        """An install's refresh token (or every install in ``org_id``) stops working, with its sessions."""
        self.oauth.revoke(refresh_token, self.org(org_id).org_id if org_id else None)

    @property
    def refresh_calls(self) -> int:
        """How many refresh-token grants reached the token endpoint (granted or refused)."""
        return self.oauth.refresh_calls

    def add_opportunity(
        self,
        name: str = "Acme website",
        *,
        account: str = "Acme Corp",
        website: str | None = "https://www.acme.example",
        owner: str = "Sam Rivera",
        owner_email: str | None = "sam@ours.example",
        contacts: tuple[tuple[str | None, str, str | None], ...] = (("Pat", "Lee", "pat@acme.example"),),
        stage: str = "Closed Won",
        amount: float | None = 24000,
        close_date: str = "2026-11-20",
        type: str | None = "project",
        contract_end: str | None = "2026-12-31",
        **fields: Any,
    ) -> Seeded:
        """An Opportunity with its Account, Owner, Contract and contact roles (the first is primary).

        Defaults mirror tests.support.helpers.deal_closed_event, so the same deal exists in both CRMs.
        Related records are found by name, or created.
        """
        account_id = self._named("Account", account) or self.add_account(account, website)
        owner_id = self._named("User", owner) or self.add_user(owner, owner_email)
        contract_id = None
        if contract_end:
            contract_id = self._seed(
                "Contract", AccountId=account_id, EndDate=contract_end, Status="Activated"
            )
        closed, won = STAGES[stage]
        opportunity = self._seed(
            "Opportunity",
            Name=name,
            StageName=stage,
            CloseDate=close_date,
            Amount=amount,
            Type=type,
            IsClosed=closed,
            IsWon=won,
            AccountId=account_id,
            OwnerId=owner_id,
            ContractId=contract_id,
            **fields,
        )
        contact_ids = []
        for n, (first, last, email) in enumerate(contacts):
            contact = self._named("Contact", " ".join(p for p in (first, last) if p)) or self.add_contact(
                first, last, email, account_id
            )
            self._seed(
                "OpportunityContactRole", OpportunityId=opportunity, ContactId=contact, IsPrimary=n == 0
            )
            contact_ids.append(contact)
        return Seeded(opportunity, account_id, owner_id, tuple(contact_ids), contract_id)

    def set_stage(self, opportunity_id: str, stage: str) -> None:
        record = self.db["Opportunity"][opportunity_id]
        record["StageName"] = stage
        record["IsClosed"], record["IsWon"] = STAGES[stage]
        record["SystemModstamp"] = _now()

    def edit(self, sobject: str, record_id: str, **values: Any) -> None:
        """As if a user changed the record in Salesforce: computed fields follow, SystemModstamp moves."""
        record = self.db[sobject][record_id]
        record.update(values)
        self._derive(sobject, record)

    def add_task(self, what_id: str, subject: str = "Checklist step", **values: Any) -> str:
        """A Task on the record, saved as the API would save it (computed fields included)."""
        with self._lock:
            fields = {"Subject": subject, "WhatId": what_id, **values}
            return self._insert("Task", self._check("Task", fields, creating=True))

    def edit_task(
        self, task_id: str, *, by: str | None = None, at: datetime | None = None, **values: Any
    ) -> None:
        """A user (``by``, else the integration user) saves the Task in Salesforce (at ``at``, else
        now): the values are checked as a save checks them, and IsClosed, CompletedDateTime,
        LastModified* and SystemModstamp follow."""
        with self._lock:
            record = self.db["Task"][task_id]
            record.update(self._check("Task", values, creating=False))
            self._actor, self._moment = by, at
            try:
                self._derive("Task", record)
            finally:
                self._actor, self._moment = None, None

    def complete_task(
        self, task_id: str, *, by: str | None = None, status: str = "Completed", at: datetime | None = None
    ) -> None:
        self.edit_task(task_id, by=by, at=at, Status=status)

    def reopen_task(
        self, task_id: str, *, by: str | None = None, status: str = "In Progress", at: datetime | None = None
    ) -> None:
        self.edit_task(task_id, by=by, at=at, Status=status)

    def attach_file(
        self, record_id: str, filename: str, content: bytes = b"evidence", *, at: datetime | None = None
    ) -> str:
        """A user uploads a file on the record (its Files related list), at ``at`` (else now): the
        ContentDocument id."""
        with self._lock:
            values = {
                "PathOnClient": filename,
                "VersionData": base64.b64encode(content).decode(),
                "FirstPublishLocationId": record_id,
            }
            self._moment = at
            try:
                checked = self._check("ContentVersion", values, creating=True)
                version_id = self._insert("ContentVersion", checked)
            finally:
                self._moment = None
            return str(self.db["ContentVersion"][version_id]["ContentDocumentId"])

    def delete(self, sobject: str, record_id: str) -> None:
        """A user deletes the record (it goes to the recycle bin: queries no longer return it)."""
        with self._lock:
            del self.db[sobject][record_id]

    def set_picklist(self, sobject: str, name: str, values: list[str], default: str | None = None) -> None:
        old = self.schema[sobject][name]
        self.schema[sobject][name] = F(
            "picklist", 255, required=old.required, values=tuple(values), restricted=True, default=default
        )

    # --- inspection -----------------------------------------------------------

    def records(self, sobject: str, **where: Any) -> list[dict[str, Any]]:
        return [r for r in self.db[sobject].values() if all(r.get(k) == v for k, v in where.items())]

    def count(self, method: str, path: str) -> int:
        """How many calls were ``METHOD path`` (path after /services/data/vXX.X/, no query string)."""
        return self.calls.count(f"{method} {path}")

    # --- switches -------------------------------------------------------------

    def set_usage(self, used: int, total: int | None = None) -> None:
        self.api_used = used
        if total is not None:
            self.api_max = total

    def inject(self, fault: Fault, *, match: str = "", times: int = 1) -> None:
        """Play ``fault`` on the next ``times`` calls whose "METHOD path" contains ``match``."""
        if fault not in self.FAULTS:
            raise ValueError(f"the Salesforce fake cannot play {fault}")
        if fault in ANSWERS:
            status, code, message = ANSWERS[fault]
            self.faults.append(Injected(fault, match, times, status, code, message))
        else:
            self.faults.append(Injected(fault, match, times))

    def fail(
        self, status: int, *, match: str = "", times: int = 1, code: str, message: str = "(injected)"
    ) -> None:
        """Answer the next matching calls with exactly this error, before any work."""
        fault = Fault.TRANSIENT if status >= 500 else Fault.PERMANENT
        self.faults.append(Injected(fault, match, times, status, code, message))

    def expire_sessions(self) -> None:
        """Every session ends, as when an admin revokes them or they time out."""
        self.access_token = "expired-" + secrets.token_hex(4)
        self.oauth.end_sessions(self.org_id)

    # --- the core ---------------------------------------------------------------

    def transport(self, method: str, url: str, headers: dict[str, str], body: Any) -> Reply | None:
        """``handle``, then the drop switch: None means the answer is lost after the work was done."""
        with self._lock:
            at = datetime.now(UTC)
            reply = self.handle(method, url, headers, body)
            drop = self._take_fault({Fault.LOST_REPLY}, f"{method} {_api_path(url)}")
            self.log.append((at, f"{method} {_api_path(url)}", 0 if drop else reply[0]))
            return None if drop else reply

    def handle(self, method: str, url: str, headers: dict[str, str], body: Any) -> Reply:
        parts = urlsplit(url)
        text = body.decode() if isinstance(body, bytes) else (body or "")
        if parts.path == "/services/oauth2/token":
            return self._oauth(text, headers)
        if parts.path.startswith("/services/Soap/u/"):
            return self._soap_login(text)
        found = re.match(r"^/services/data/v(\d+\.\d)/(.*)$", parts.path)
        if not found:
            return self._json(
                404, [SfError("NOT_FOUND", "The requested resource does not exist").as_request_error()]
            )
        path = found.group(2).rstrip("/")
        if len(parts.path) + len(parts.query) + 1 > URI_MAX:
            return 414, {"Content-Type": "text/html"}, b"<h1>414 URI Too Long</h1>"
        with self._lock:
            org = self._org_for(parts.netloc)
            return org._api(method, path, parse_qs(parts.query), headers, text)

    def _org_for(self, host: str) -> FakeSalesforce:
        """The org whose instance the call reached (this org when none is on that host): a
        session is good only on its own org's instance, as in Salesforce."""
        return next((org for org in self.orgs.values() if org.instance == host), self)

    def _signed_in(self, auth: str) -> bool:
        """The org's own session (``access_token``), or a live OAuth session of this org."""
        if auth == f"Bearer {self.access_token}":
            return True
        return auth.startswith("Bearer ") and self.oauth.org_of(auth.removeprefix("Bearer ")) == self.org_id

    def _api(
        self, method: str, path: str, params: dict[str, list[str]], headers: dict[str, str], text: str
    ) -> Reply:
        auth = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        if not self._signed_in(auth):
            error = SfError("INVALID_SESSION_ID", "Session expired or invalid", status=401)
            return self._json(401, [error.as_request_error()])
        self.calls.append(f"{method} {path}")
        self.api_used += 1
        fault = self._take_fault(ANSWERS.keys(), f"{method} {path}")
        if fault is not None:
            return self._json(fault.status, [SfError(fault.code, fault.message).as_request_error()])
        if self.api_used > self.api_max:
            limit = SfError("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
            return self._json(403, [limit.as_request_error()])
        try:
            status, answer = self._route(method, path, params, json.loads(text) if text else None)
        except SfError as exc:
            return self._json(exc.status, [exc.as_request_error()])
        except json.JSONDecodeError as exc:
            return self._json(400, [SfError("JSON_PARSER_ERROR", str(exc)).as_request_error()])
        reply = self._json(status, answer)
        if self._take_fault({Fault.SESSION_EXPIRED}, f"{method} {path}"):
            self.expire_sessions()
        return reply

    def _route(self, method: str, path: str, params: dict[str, list[str]], body: Any) -> tuple[int, Any]:
        segments = path.split("/")
        if method == "GET" and segments[0] == "query":
            return 200, self._query(params["q"][0]) if len(segments) == 1 else self._more(segments[1])
        if method == "GET" and path == "limits":
            return 200, {"DailyApiRequests": {"Max": self.api_max, "Remaining": self.api_max - self.api_used}}
        if method == "GET" and len(segments) == 3 and segments[0] == "sobjects" and segments[2] == "describe":
            return 200, self._describe(self._sobject(segments[1]))
        if method == "POST" and len(segments) == 2 and segments[0] == "sobjects":
            return 201, self._create_one(self._sobject(segments[1]), body)
        if method == "PATCH" and len(segments) == 3 and segments[0] == "sobjects":
            self._update(self._sobject(segments[1]), segments[2], body)
            return 204, None
        if method == "POST" and path == "composite/sobjects":
            return 200, self._collections(body)
        if method == "PATCH" and len(segments) == 4 and path.startswith("composite/sobjects/"):
            return 200, self._upsert(self._sobject(segments[2]), segments[3], body)
        if method == "PATCH" and path == "composite/sobjects":
            return 200, self._update_collection(body)
        if method == "DELETE" and path == "composite/sobjects":
            return 200, self._delete_collection(params)
        if method == "POST" and path == "composite":
            return 200, self._composite(body)
        if method == "POST" and path == "actions/standard/emailSimple":
            return self._email(body)
        raise SfError("NOT_FOUND", f"The requested resource does not exist: {method} {path}", status=404)

    # --- records ----------------------------------------------------------------

    def _sobject(self, name: str) -> str:
        if name not in self.schema:
            raise SfError(
                "NOT_FOUND", f"The requested resource does not exist: sObject type '{name}'", status=404
            )
        return name

    def _check(self, sobject: str, values: dict[str, Any], *, creating: bool) -> dict[str, Any]:
        """The record to store, or SfError as Salesforce would refuse it."""
        fields = self.schema[sobject]
        values = {k: v for k, v in values.items() if k != "attributes"}
        for name, value in values.items():
            if name not in fields:
                raise SfError(
                    "INVALID_FIELD", f"No such column '{name}' on sobject of type {sobject}", [name]
                )
            spec = fields[name]
            if not (spec.createable if creating else spec.updateable):
                raise SfError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {name}. Please check the security settings of this "
                    "field and verify that it is read/write for your profile or permission set.",
                    [name],
                )
            self._check_value(name, spec, value)
        if sobject == "Task" and str(values.get("WhoId") or "").startswith("00Q") and values.get("WhatId"):
            # A Task about a Lead cannot also be related to another record.
            raise SfError(
                "FIELD_INTEGRITY_EXCEPTION",
                "Related To ID: a task for a lead cannot have a Related To record",
                ["WhatId"],
            )
        if (
            sobject == "SurveyInvitation"
            and creating
            and values.get("OptionsAllowGuestUserResponse")
            and not values.get("CommunityId")
        ):
            raise SfError(
                "FIELD_INTEGRITY_EXCEPTION",
                "Community: an invitation allowing guest responses needs a community (Experience Cloud site)",
                ["CommunityId"],
            )
        if creating:
            missing = [
                n
                for n, f in fields.items()
                if f.required and f.default is None and values.get(n) in (None, "")
            ]
            if missing:
                raise SfError(
                    "REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing
                )
        return values

    def _check_value(self, name: str, spec: F, value: Any) -> None:
        if value is None:
            if spec.required:
                raise SfError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{name}]", [name])
            return
        if spec.type in ("string", "textarea", "email", "url", "picklist") and not isinstance(value, str):
            raise SfError(
                "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}", [name]
            )
        if spec.length and isinstance(value, str) and len(value) > spec.length:
            raise SfError(
                "STRING_TOO_LONG",
                f"{name}: data value too large: {value[:40]} (max length={spec.length})",
                [name],
            )
        if spec.type == "picklist" and spec.restricted and value not in spec.values:
            raise SfError(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{name}: bad value for restricted picklist field: {value}",
                [name],
            )
        if spec.type in ("int", "currency") and (
            isinstance(value, bool) or not isinstance(value, int | float)
        ):
            raise SfError(
                "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}", [name]
            )
        if spec.type == "boolean" and not isinstance(value, bool):
            raise SfError(
                "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}", [name]
            )
        if spec.type == "base64" and not _base64(value):
            # The REST API takes blob fields as base64 text (sObject Basic Information, "Insert or
            # Update Blob Data"); the error code is this fake's choice.
            raise SfError("INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value is not valid base64", [name])
        if spec.type == "date" and not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
            raise SfError(
                "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{name}: value not of required type: {value}", [name]
            )
        if spec.type == "reference":
            self._check_reference(name, spec, value)

    def _check_reference(self, name: str, spec: F, value: Any) -> None:
        if not _is_id(value):
            raise SfError("MALFORMED_ID", f"{name}: id value of incorrect type: {value}", [name])
        if self._find(value, spec.refs) is None:
            raise SfError("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {value}", [name])

    def _find(self, record_id: str, sobjects: tuple[str, ...]) -> tuple[str, dict[str, Any]] | None:
        for sobject in sobjects:
            for stored_id, record in self.db[sobject].items():
                if stored_id[:15] == record_id[:15]:
                    return sobject, record
        return None

    def _insert(self, sobject: str, values: dict[str, Any]) -> str:
        record = {"Id": self._new_id(sobject)}
        for name, spec in self.schema[sobject].items():
            if name != "Id":
                default = self.api_user if spec.default == "<current user>" else spec.default
                record[name] = values.get(name, default)
        if "CreatedDate" in self.schema[sobject]:
            record["CreatedDate"] = _now()
        self._derive(sobject, record)
        self.db[sobject][record["Id"]] = record
        return str(record["Id"])

    def _derive(self, sobject: str, record: dict[str, Any]) -> None:
        """What Salesforce computes on save."""
        if "SystemModstamp" in self.schema[sobject]:
            record["SystemModstamp"] = self._stamp()
        if sobject == "Opportunity":
            record["IsClosed"], record["IsWon"] = STAGES[record["StageName"]]
        if sobject == "ContentNote":
            # A ContentNote is a ContentDocument: same id, queried through links.
            self.db["ContentDocument"][record["Id"]] = {"Id": record["Id"], "Title": record["Title"]}
        if sobject == "Task":
            self._derive_task(record)
        if sobject == "ContentVersion" and not record.get("ContentDocumentId"):
            self._publish(record)
        if sobject == "SurveyInvitation":
            record["InvitationLink"] = (
                f"https://{self.instance}/survey/runtimeApp.app?invitationId={record['Id']}"
            )

    def _derive_task(self, record: dict[str, Any]) -> None:
        """IsClosed follows the status; CompletedDateTime is when it closed; who saved it last."""
        closed = record.get("Status") in CLOSED_TASK_STATUSES
        if closed and not record.get("IsClosed"):
            record["CompletedDateTime"] = self._stamp()
        elif not closed:
            record["CompletedDateTime"] = None
        record["IsClosed"] = closed
        record["LastModifiedDate"] = self._stamp()
        record["LastModifiedById"] = self._actor or self.api_user

    def _stamp(self) -> str:
        """The time a save records: the test's moment for its edit (``edit_task`` at=…), else now."""
        return _now() if self._moment is None else _format(self._moment)

    def _publish(self, version: dict[str, Any]) -> None:
        """A new file: its ContentDocument, and its link to the record it was published on."""
        if not version.get("Title"):
            version["Title"] = Path(str(version["PathOnClient"])).stem
        document_id = self._new_id("ContentDocument")
        self.db["ContentDocument"][document_id] = {"Id": document_id, "Title": version["Title"]}
        version["ContentDocumentId"] = document_id
        if version.get("FirstPublishLocationId"):
            link = {"ContentDocumentId": document_id, "LinkedEntityId": version["FirstPublishLocationId"]}
            self._insert("ContentDocumentLink", link | {"ShareType": "V"})

    def _seed(self, sobject: str, **values: Any) -> str:
        record_id = self._new_id(sobject)
        self.db[sobject][record_id] = {"Id": record_id, **{n: None for n in self.schema[sobject]}, **values}
        self.db[sobject][record_id]["Id"] = record_id
        if "CreatedDate" in self.schema[sobject]:
            self.db[sobject][record_id]["CreatedDate"] = _now()
        if "SystemModstamp" in self.schema[sobject]:
            self.db[sobject][record_id]["SystemModstamp"] = _now()
        return record_id

    def _named(self, sobject: str, name: str) -> str | None:
        for record in self.db[sobject].values():
            full = record.get("Name") or " ".join(
                p for p in (record.get("FirstName"), record.get("LastName")) if p
            )
            if full == name:
                return str(record["Id"])
        return None

    def _new_id(self, sobject: str) -> str:
        prefix = PREFIXES["ContentDocument" if sobject == "ContentNote" else sobject]
        return _long(f"{prefix}5g{next(self._counter):010d}")

    def _create_one(self, sobject: str, body: Any) -> dict[str, Any]:
        self._unique(sobject, [body or {}])
        values = self._check(sobject, body or {}, creating=True)
        return {"id": self._insert(sobject, values), "success": True, "errors": []}

    def _update(self, sobject: str, record_id: str, body: Any) -> None:
        if not _is_id(record_id):
            raise SfError("MALFORMED_ID", f"{sobject} ID: id value of incorrect type: {record_id}")
        found = self._find(record_id, (sobject,))
        if found is None:
            raise SfError("NOT_FOUND", "The requested resource does not exist", status=404)
        values = self._check(sobject, body or {}, creating=False)
        found[1].update(values)
        self._derive(sobject, found[1])

    def _unique(self, sobject: str, records: list[dict[str, Any]]) -> None:
        for name, spec in self.schema[sobject].items():
            if not spec.external_id:
                continue
            for record in records:
                value = record.get(name)
                clash = next((r for r in self.db[sobject].values() if value and r.get(name) == value), None)
                if clash is not None:
                    raise SfError(
                        "DUPLICATE_VALUE",
                        f"duplicate value found: {name} duplicates value on record with id: {clash['Id']}",
                        [name],
                    )

    # --- collections and composite -------------------------------------------------

    def _collection_records(self, body: Any) -> list[dict[str, Any]]:
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise SfError("JSON_PARSER_ERROR", "expected {allOrNone, records: [...]}")
        records = body["records"]
        if len(records) > 200:
            raise SfError(
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more than 200 records into this call",
            )
        for record in records:
            if not (record.get("attributes") or {}).get("type"):
                raise SfError("INVALID_TYPE", "Must send a concrete entity type.")
        return list(records)

    def _collections(self, body: Any) -> list[dict[str, Any]]:
        records = self._collection_records(body)
        outcomes: list[SfError | dict[str, Any]] = []
        for record in records:
            sobject = self._sobject(record["attributes"]["type"])
            try:
                self._unique(sobject, [record])
                outcomes.append(self._check(sobject, record, creating=True))
            except SfError as exc:
                outcomes.append(exc)
        if body.get("allOrNone") and any(isinstance(o, SfError) for o in outcomes):
            return _rolled_back(outcomes)
        return [
            {"success": False, "errors": [o.as_record_error()]}
            if isinstance(o, SfError)
            else {"id": self._insert(r["attributes"]["type"], o), "success": True, "errors": []}
            for r, o in zip(records, outcomes, strict=True)
        ]

    def _update_collection(self, body: Any) -> list[dict[str, Any]]:
        """PATCH composite/sobjects: records with their Id, each updated or refused on its own
        (``allOrNone: false``), or all rolled back."""
        records = self._collection_records(body)
        saved = copy.deepcopy(self.db)
        outcomes: list[SfError | dict[str, Any]] = []
        for record in records:
            values = {k: v for k, v in record.items() if k != "Id"}
            try:
                if not record.get("Id"):
                    raise SfError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
                self._update(self._sobject(record["attributes"]["type"]), str(record["Id"]), values)
                outcomes.append({"id": record["Id"], "success": True, "errors": []})
            except SfError as exc:
                outcomes.append(exc)
        if any(isinstance(o, SfError) for o in outcomes) and body.get("allOrNone"):
            self.db = saved
            return _rolled_back(outcomes)
        return [
            {"success": False, "errors": [o.as_record_error()]} if isinstance(o, SfError) else o
            for o in outcomes
        ]

    def _delete_collection(self, params: dict[str, list[str]]) -> list[dict[str, Any]]:
        """DELETE composite/sobjects?ids=…: each record deleted (a note with its links), or refused."""
        record_ids = [i for i in (params.get("ids") or [""])[0].split(",") if i]
        if not record_ids or len(record_ids) > 200:
            raise SfError("EXCEEDED_ID_LIMIT", "between 1 and 200 ids may be deleted in one call")
        answers = []
        for record_id in record_ids:
            found = self._find(record_id, tuple(self.db)) if _is_id(record_id) else None
            if found is None:
                error = SfError("ENTITY_IS_DELETED", "entity is deleted")
                answers.append({"id": record_id, "success": False, "errors": [error.as_record_error()]})
                continue
            sobject, record = found
            del self.db[sobject][record["Id"]]
            if sobject in ("ContentDocument", "ContentNote"):
                self.db["ContentDocument"].pop(record["Id"], None)
                self.db["ContentNote"].pop(record["Id"], None)
                for link in self.records("ContentDocumentLink", ContentDocumentId=record["Id"]):
                    del self.db["ContentDocumentLink"][link["Id"]]
                for version in self.records("ContentVersion", ContentDocumentId=record["Id"]):
                    del self.db["ContentVersion"][version["Id"]]
            answers.append({"id": record["Id"], "success": True, "errors": []})
        return answers

    def _upsert(self, sobject: str, key_field: str, body: Any) -> list[dict[str, Any]]:
        spec = self.schema[sobject].get(key_field)
        if spec is None or not spec.external_id:
            raise SfError(
                "INVALID_FIELD", f"Field {key_field} is not an external ID field on {sobject}", [key_field]
            )
        records = self._collection_records(body)
        saved = copy.deepcopy(self.db)
        outcomes: list[SfError | dict[str, Any]] = []
        for record in records:
            try:
                outcomes.append(self._upsert_one(sobject, key_field, record))
            except SfError as exc:
                outcomes.append(exc)
        if any(isinstance(o, SfError) for o in outcomes) and body.get("allOrNone"):
            self.db = saved
            return _rolled_back(outcomes)
        return [
            {"success": False, "errors": [o.as_record_error()]} if isinstance(o, SfError) else o
            for o in outcomes
        ]

    def _upsert_one(self, sobject: str, key_field: str, record: dict[str, Any]) -> dict[str, Any]:
        value = record.get(key_field)
        if not value:
            raise SfError("MISSING_ARGUMENT", f"{key_field} not specified", [key_field])
        existing = next((r for r in self.db[sobject].values() if r.get(key_field) == value), None)
        if existing is None:
            values = self._check(sobject, record, creating=True)
            return {"id": self._insert(sobject, values), "success": True, "errors": [], "created": True}
        existing.update(self._check(sobject, record, creating=False))
        self._derive(sobject, existing)
        return {"id": existing["Id"], "success": True, "errors": [], "created": False}

    def _composite(self, body: Any) -> dict[str, Any]:
        requests_ = (body or {}).get("compositeRequest") or []
        if len(requests_) > 25:
            raise SfError("INVALID_BATCH_REQUEST", "composite requests are limited to 25 subrequests")
        saved = copy.deepcopy(self.db)
        refs: dict[str, str] = {}
        answers, failed = [], False
        for sub in requests_:
            if failed:
                halted = SfError(
                    "PROCESSING_HALTED",
                    "The transaction was rolled back since another operation in the same transaction failed.",
                )
                answers.append(_sub(sub, 400, [halted.as_request_error()]))
                continue
            try:
                answers.append(_sub(sub, 201, self._subrequest(sub, refs)))
            except SfError as exc:
                failed = True
                answers.append(_sub(sub, exc.status, [exc.as_request_error()]))
        if failed and body.get("allOrNone"):
            self.db = saved
        return {"compositeResponse": answers}

    def _subrequest(self, sub: dict[str, Any], refs: dict[str, str]) -> dict[str, Any]:
        found = re.match(r"^/services/data/v\d+\.\d/sobjects/(\w+)$", sub.get("url", ""))
        if sub.get("method") != "POST" or not found:
            raise SfError("NOT_FOUND", "this fake serves only POST sobjects/<Type> in composite", status=404)
        values = {k: _resolve_ref(v, refs) for k, v in (sub.get("body") or {}).items()}
        answer = self._create_one(self._sobject(found.group(1)), values)
        refs[sub["referenceId"]] = answer["id"]
        return answer

    def _email(self, body: Any) -> tuple[int, Any]:
        inputs = (body or {}).get("inputs") or []
        answers, ok = [], True
        for item in inputs:
            missing = [k for k in ("emailAddresses", "emailSubject", "emailBody") if not item.get(k)]
            errors = [
                SfError("REQUIRED_FIELD_MISSING", f"Missing required input parameter: {k}").as_record_error()
                for k in missing
            ]
            addresses = [a.strip() for a in str(item.get("emailAddresses") or "").split(",") if a.strip()]
            errors += [
                SfError("INVALID_EMAIL_ADDRESS", f"Email address is invalid: {a}").as_record_error()
                for a in addresses
                if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a)
            ]
            ok = ok and not errors
            answers.append(
                {
                    "actionName": "emailSimple",
                    "errors": errors or None,
                    "isSuccess": not errors,
                    "outputValues": None,
                }
            )
        if ok:
            self.emails.extend(inputs)
        return (200 if ok else 400), answers

    # --- describe and SOQL ----------------------------------------------------------

    def _describe(self, sobject: str) -> dict[str, Any]:
        return {"name": sobject, "fields": [_describe_field(n, f) for n, f in self.schema[sobject].items()]}

    def _query(self, text: str) -> dict[str, Any]:
        self.queries.append(text)
        if len(text) > SOQL_MAX:
            raise _malformed(f"SOQL statements cannot exceed {SOQL_MAX} characters")
        query = parse_soql(text)
        self._validate(query, None)
        if query.sobject == "ContentDocumentLink" and not _filters_id(
            query.where, ("LinkedEntityId", "ContentDocumentId")
        ):
            raise SfError(
                "MALFORMED_QUERY",
                "Implementation restriction: ContentDocumentLink requires a filter by a single Id on "
                "ContentDocumentId or LinkedEntityId using the equals operator or multiple Id's using the IN "
                "operator.",
            )
        rows = [self._shape(query, r) for r in self._select(query, list(self.db[query.sobject].values()))]
        return self._page(rows, secrets.token_hex(6))

    def _more(self, locator: str) -> dict[str, Any]:
        cursor, _, offset = locator.rpartition("-")
        rows = self._cursors.get(cursor)
        if rows is None:
            raise SfError("INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(rows, cursor, int(offset))

    def _page(self, rows: list[dict[str, Any]], cursor: str, offset: int = 0) -> dict[str, Any]:
        page, end = rows[offset : offset + self.page_size], offset + self.page_size
        answer: dict[str, Any] = {"totalSize": len(rows), "done": end >= len(rows), "records": page}
        if end < len(rows):
            self._cursors[cursor] = rows
            answer["nextRecordsUrl"] = f"/services/data/v{API_VERSION}/query/{cursor}-{end}"
        return answer

    def _validate(self, query: Query, parent: str | None) -> None:
        if parent is not None:
            child = CHILDREN.get(parent, {}).get(query.sobject)
            if child is None:
                raise SfError(
                    "INVALID_TYPE",
                    f"Didn't understand relationship '{query.sobject}' in FROM part of query call.",
                )
            sobject = child[0]
        else:
            if query.sobject not in self.schema:
                raise SfError("INVALID_TYPE", f"sObject type '{query.sobject}' is not supported.")
            sobject = query.sobject
        for path in query.fields + [p for p, _ in query.order]:
            self._field_at(sobject, path)
        for path, literals in _where_literals(query.where):
            spec = self._field_at(sobject, path)
            if not spec.filterable:
                raise SfError("INVALID_FIELD", f"field '{path}' can not be filtered in a query call")
            for kind, value in literals:
                if kind != "null":
                    _literal_for(spec, path, kind, value, self.today)  # refuses a literal of the wrong type
        for sub in query.subqueries:
            self._validate(sub, sobject)

    def _field_at(self, sobject: str, path: str) -> F:
        *hops, last = path.split(".")
        for hop in hops:
            ref = next((f for f in self.schema[sobject].values() if f.relationship == hop), None)
            if ref is None:
                raise SfError("INVALID_FIELD", f"Didn't understand relationship '{hop}' in field path.")
            sobject = ref.refs[0]
        if last not in self.schema[sobject]:
            raise SfError("INVALID_FIELD", f"No such column '{last}' on entity '{sobject}'.")
        return self.schema[sobject][last]

    def _select(self, query: Query, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        sobject = self._target(query)
        chosen = [r for r in rows if query.where is None or self._holds(sobject, r, query.where)]
        for path, descending in reversed(query.order):
            chosen.sort(key=lambda r, p=path: _order_key(self._value_at(sobject, r, p)), reverse=descending)
        return chosen[: query.limit] if query.limit is not None else chosen

    def _target(self, query: Query) -> str:
        for children in CHILDREN.values():
            if query.sobject in children:
                return children[query.sobject][0]
        return query.sobject

    def _value_at(self, sobject: str, record: dict[str, Any] | None, path: str) -> Any:
        *hops, last = path.split(".")
        for hop in hops:
            if record is None:
                return None
            ref_name, ref = next((n, f) for n, f in self.schema[sobject].items() if f.relationship == hop)
            target = record.get(ref_name)
            found = self._find(target, ref.refs) if target else None
            sobject, record = found if found else (ref.refs[0], None)
        return None if record is None else record.get(last)

    def _holds(self, sobject: str, record: dict[str, Any], cond: Any) -> bool:
        op = cond[0]
        if op == "and":
            return self._holds(sobject, record, cond[1]) and self._holds(sobject, record, cond[2])
        if op == "or":
            return self._holds(sobject, record, cond[1]) or self._holds(sobject, record, cond[2])
        if op == "not":
            return not self._holds(sobject, record, cond[1])
        spec = self._field_at(sobject, cond[1])
        actual = self._value_at(sobject, record, cond[1])
        if op == "in":
            hit = any(_compare(spec, cond[1], actual, "=", v, self.today) for v in cond[2])
            return hit != cond[3]
        if op == "like":
            return _like(actual, cond[2])
        return _compare(spec, cond[1], actual, cond[2], cond[3], self.today)

    def _shape(self, query: Query, record: dict[str, Any]) -> dict[str, Any]:
        sobject = self._target(query)
        out: dict[str, Any] = {"attributes": self._attributes(sobject, record["Id"])}
        for path in query.fields:
            self._put(out, sobject, record, path.split("."))
        for sub in query.subqueries:
            child, key = CHILDREN[sobject][sub.sobject]
            rows = [r for r in self.db[child].values() if r.get(key) and r[key][:15] == record["Id"][:15]]
            shaped = [self._shape(sub, r) for r in self._select(sub, rows)]
            out[sub.sobject] = {"totalSize": len(shaped), "done": True, "records": shaped} if shaped else None
        return out

    def _put(self, out: dict[str, Any], sobject: str, record: dict[str, Any], path: list[str]) -> None:
        if len(path) == 1:
            out[path[0]] = record.get(path[0])
            return
        ref_name, ref = next((n, f) for n, f in self.schema[sobject].items() if f.relationship == path[0])
        found = self._find(record[ref_name], ref.refs) if record.get(ref_name) else None
        if found is None:
            out[path[0]] = None
            return
        target, related = found
        nested = out.get(path[0]) or {"attributes": self._attributes(target, related["Id"])}
        self._put(nested, target, related, path[1:])
        out[path[0]] = nested

    def _attributes(self, sobject: str, record_id: str) -> dict[str, str]:
        return {"type": sobject, "url": f"/services/data/v{API_VERSION}/sobjects/{sobject}/{record_id}"}

    # --- logins -----------------------------------------------------------------------

    def _new_token(self) -> str:
        return f"{self.org_id[:15]}!{secrets.token_urlsafe(24)}"

    def _login(self) -> str:
        self.logins += 1
        self.access_token = self._new_token()
        return self.access_token

    def _oauth(self, text: str, headers: dict[str, str]) -> Reply:
        content_type = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        form = {k: v[0] for k, v in parse_qs(text).items()}
        grant = form.get("grant_type")
        if "application/x-www-form-urlencoded" not in content_type or grant not in GRANTS:
            # The token endpoint reads a form body only: anything else has no grant type for it.
            return self._json(
                400, {"error": "unsupported_grant_type", "error_description": "grant type not supported"}
            )
        if grant == "refresh_token":
            self.oauth.refresh_calls += 1
        if grant == "authorization_code" or form.get("refresh_token") in self.oauth.installs:
            return self._installed_grant(grant, form)
        rotated: dict[str, str] = {}
        if grant == "refresh_token":
            refused = self._refresh_refused(form)
            if refused is not None:
                return self._json(400, refused)
            if self.rotate_refresh_tokens:
                self.refresh_tokens.discard(form["refresh_token"])
                rotated["refresh_token"] = self.issue_refresh_token()
        elif not (
            (grant == GRANTS[0] and self._jwt_ok(form.get("assertion", "")))
            or (grant == "client_credentials" and self._basic_ok(headers))
        ):
            return self._json(400, {"error": "invalid_grant", "error_description": "authentication failure"})
        token = self._login()
        return self._json(
            200,
            {
                "access_token": token,
                "instance_url": f"https://{self.instance}",
                "token_type": "Bearer",
                "id": f"https://login.salesforce.com/id/{self.org_id}/{self.api_user}",
                "issued_at": str(int(datetime.now(UTC).timestamp() * 1000)),
                "signature": secrets.token_urlsafe(32),
                **rotated,
            },
        )

    def _installed_grant(self, grant: str | None, form: dict[str, str]) -> Reply:
        """The web-server flow's grants: a code (with its PKCE verifier) or an install's refresh
        token buys a session in the org the user installed into, on that org's instance."""
        if form.get("client_id") != CONSUMER_KEY:
            return self._json(
                400, {"error": "invalid_client_id", "error_description": "client identifier invalid"}
            )
        if form.get("client_secret") not in (None, CONSUMER_SECRET):
            return self._json(
                400, {"error": "invalid_client", "error_description": "invalid client credentials"}
            )
        extra: dict[str, str] = {}
        if grant == "authorization_code":
            redeemed = self.oauth.redeem(form)
            if isinstance(redeemed, dict):
                return self._json(400, redeemed)
            extra["refresh_token"], install = redeemed
        else:
            install = self.oauth.installs[form["refresh_token"]]
            if install.revoked:
                return self._json(400, dict(REFRESH_REFUSED))
            if self.rotate_refresh_tokens:  # the used token ends; the answer carries its successor
                extra["refresh_token"] = f"5Aep861{secrets.token_urlsafe(32)}"
                self.oauth.installs[extra["refresh_token"]] = self.oauth.installs.pop(form["refresh_token"])
        org = self.orgs[install.org_id]
        token = org._new_token()
        self.oauth.open_session(org.org_id, token)
        identity = f"https://login.salesforce.com/id/{org.org_id}/{install.user_id}"
        issued = str(int(self.clock().timestamp() * 1000))
        answer = {
            "access_token": token,
            "signature": _signature(identity, issued),
            "scope": " ".join(install.scopes),
            "instance_url": f"https://{org.instance}",
            "id": identity,
            "token_type": "Bearer",
            "issued_at": issued,
        }
        return self._json(200, answer | extra)

    def _refresh_refused(self, form: dict[str, str]) -> dict[str, str] | None:
        """Salesforce's error body for a refresh it will not grant, or None to grant it."""
        secret = form.get("client_secret")
        if form.get("client_id") != CONSUMER_KEY or secret not in (None, CONSUMER_SECRET):
            return {"error": "invalid_client", "error_description": "invalid client credentials"}
        if form.get("refresh_token") not in self.refresh_tokens:
            return dict(REFRESH_REFUSED)
        return None

    def _jwt_ok(self, assertion: str) -> bool:
        import jwt

        if self.jwt_public_key is None:
            return False
        try:
            claims = jwt.decode(
                assertion,
                self.jwt_public_key,
                algorithms=["RS256"],
                audience=None,
                options={"verify_aud": False},
            )
        except jwt.PyJWTError:
            return False
        return bool(claims.get("iss") == CONSUMER_KEY and claims.get("sub") == USERNAME)

    def _basic_ok(self, headers: dict[str, str]) -> bool:
        import base64

        given = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        expected = base64.b64encode(f"{CONSUMER_KEY}:{CONSUMER_SECRET}".encode()).decode()
        return given == f"Basic {expected}"

    def _soap_login(self, text: str) -> Reply:
        user = re.search(r"<n1:username>(.*?)</n1:username>", text)
        password = re.search(r"<n1:password>(.*?)</n1:password>", text)
        if not (
            user
            and password
            and user.group(1) == escape(USERNAME)
            and password.group(1) == escape(PASSWORD + SECURITY_TOKEN)
        ):
            why = "Invalid username, password, security token; or user locked out."
            fault = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
                f"<faultcode>INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: {why}</faultstring>"
                "<detail><sf:LoginFault><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>"
                f"<sf:exceptionMessage>{why}</sf:exceptionMessage></sf:LoginFault></detail>"
                "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
            )
            return 500, {"Content-Type": "text/xml"}, fault.encode()
        token = self._login()
        answer = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/'
            'envelope/" xmlns="urn:partner.soap.sforce.com"><soapenv:Body><loginResponse><result>'
            f"<serverUrl>https://{self.instance}/services/Soap/u/{API_VERSION}/{self.org_id[:15]}</serverUrl>"
            f"<sessionId>{token}</sessionId><userId>{self.api_user}</userId></result></loginResponse>"
            "</soapenv:Body></soapenv:Envelope>"
        )
        return 200, {"Content-Type": "text/xml"}, answer.encode()

    # --- plumbing ------------------------------------------------------------------------

    def _json(self, status: int, answer: Any) -> Reply:
        headers = {
            "Content-Type": "application/json;charset=UTF-8",
            "Sforce-Limit-Info": f"api-usage={self.api_used}/{self.api_max}",
        }
        return status, headers, b"" if answer is None else json.dumps(answer).encode()

    def _take_fault(self, kinds: Iterable[Fault], call: str) -> Injected | None:
        kinds = set(kinds)
        for injected in self.faults:
            if injected.fault in kinds and injected.times > 0 and injected.match in call:
                injected.times -= 1
                return injected
        return None

    # --- transports ----------------------------------------------------------------------

    def install(self, mock: Any) -> None:
        """Answer every https://…/services/… request made through ``mock`` (a responses.RequestsMock)."""
        pattern = re.compile(r"^https://[^/]+/services/")
        for method in ("GET", "POST", "PATCH", "PUT", "DELETE"):
            mock.add_callback(method, pattern, callback=self._on_request)

    def _on_request(self, request: Any) -> Reply | Exception:
        reply = self.transport(request.method, request.url, dict(request.headers), request.body)
        if reply is None:
            return requests.ReadTimeout("the fake org did the work, then the reply was lost (injected)")
        return reply


def _base64(value: Any) -> bool:
    try:
        base64.b64decode(str(value), validate=True)
    except ValueError:
        return False
    return isinstance(value, str)


def _now() -> str:
    return _format(datetime.now(UTC))


def _format(moment: datetime) -> str:
    """A datetime as Salesforce writes it: UTC, milliseconds, ``+0000``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _api_path(url: str) -> str:
    path = urlsplit(url).path
    found = re.match(r"^/services/data/v\d+\.\d/(.*)$", path)
    return found.group(1).rstrip("/") if found else path


def _rolled_back(outcomes: list[Any]) -> list[dict[str, Any]]:
    rolled = SfError(
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "Record rolled back because not all records were valid and the request was using AllOrNone header",
    )
    return [
        {"success": False, "errors": [(o if isinstance(o, SfError) else rolled).as_record_error()]}
        for o in outcomes
    ]


def _sub(sub: dict[str, Any], status: int, body: Any) -> dict[str, Any]:
    return {"body": body, "httpHeaders": {}, "httpStatusCode": status, "referenceId": sub.get("referenceId")}


def _resolve_ref(value: Any, refs: dict[str, str]) -> Any:
    found = re.fullmatch(r"@\{(\w+)\.id\}", value) if isinstance(value, str) else None
    if found is None:
        return value
    if found.group(1) not in refs:
        raise SfError(
            "INVALID_REFERENCE", f"Invalid reference specified. No value for {found.group(1)}.id found"
        )
    return refs[found.group(1)]


def _describe_field(name: str, spec: F) -> dict[str, Any]:
    values = [
        {"active": True, "defaultValue": v == spec.default, "label": v, "value": v, "validFor": None}
        for v in spec.values
    ]
    return {
        "name": name,
        "type": spec.type,
        "length": spec.length,
        "nillable": not spec.required,
        "createable": spec.createable,
        "updateable": spec.updateable,
        "filterable": spec.filterable,
        "defaultedOnCreate": spec.default is not None,
        "externalId": spec.external_id,
        "unique": spec.external_id,
        "restrictedPicklist": spec.restricted,
        "picklistValues": values,
        "referenceTo": list(spec.refs),
        "relationshipName": spec.relationship,
    }


def _where_paths(cond: Any) -> Iterator[str]:
    if cond is None:
        return
    if cond[0] in ("and", "or"):
        yield from _where_paths(cond[1])
        yield from _where_paths(cond[2])
    elif cond[0] == "not":
        yield from _where_paths(cond[1])
    else:
        yield cond[1]


def _where_literals(cond: Any) -> Iterator[tuple[str, list[tuple[str, Any]]]]:
    """Each compared field path with the literals it is compared to."""
    if cond is None:
        return
    if cond[0] in ("and", "or"):
        yield from _where_literals(cond[1])
        yield from _where_literals(cond[2])
    elif cond[0] == "not":
        yield from _where_literals(cond[1])
    elif cond[0] == "in":
        yield cond[1], list(cond[2])
    elif cond[0] == "like":
        yield cond[1], [cond[2]]
    else:
        yield cond[1], [cond[3]]


def _filters_id(cond: Any, names: tuple[str, ...]) -> bool:
    return any(path in names for path in _where_paths(cond))


def _order_key(value: Any) -> tuple[int, Any]:
    return (0, "") if value is None else (1, value.lower() if isinstance(value, str) else value)


def _date_range(literal: str, today: date) -> tuple[date, date]:
    name, _, n = literal.partition(":")
    days = int(n or 0)
    ranges = {
        "TODAY": (today, today),
        "YESTERDAY": (today - timedelta(days=1),) * 2,
        "TOMORROW": (today + timedelta(days=1),) * 2,
        "NEXT_N_DAYS": (today + timedelta(days=1), today + timedelta(days=days)),
        "LAST_N_DAYS": (today - timedelta(days=days), today),
    }
    if name not in ranges:
        raise _malformed(f"unexpected token: '{literal}'")
    return ranges[name]


def _compare(spec: F, path: str, actual: Any, op: str, literal: tuple[str, Any], today: date) -> bool:
    kind, value = literal
    if kind == "null":
        if op not in ("=", "!="):
            raise SfError("INVALID_QUERY_FILTER_OPERATOR", f"invalid operator on null for field '{path}'")
        return (actual is None) == (op == "=")
    expected = _literal_for(spec, path, kind, value, today)
    if isinstance(expected, tuple):  # a date range literal
        low, high = (d.isoformat() for d in expected)
        checks = {
            "=": lambda a: low <= a <= high,
            "!=": lambda a: not low <= a <= high,
            "<": lambda a: a < low,
            "<=": lambda a: a <= high,
            ">": lambda a: a > high,
            ">=": lambda a: a >= low,
        }
        return actual is not None and checks[op](actual)
    if spec.type in ("id", "reference"):
        actual, expected = (actual or "")[:15], expected[:15]
    elif isinstance(actual, str) and isinstance(expected, str) and spec.type != "date":
        actual, expected = actual.lower(), expected.lower()  # SOQL compares text without case
    if actual is None:
        return op == "!="
    if spec.type == "datetime":  # 2026-11-27T17:00:00.000+0000 and 2026-11-27T17:00:00Z are instants
        actual, expected = datetime.fromisoformat(actual), datetime.fromisoformat(expected)
    return {
        "=": actual == expected,
        "!=": actual != expected,
        "<": actual < expected,
        "<=": actual <= expected,
        ">": actual > expected,
        ">=": actual >= expected,
    }[op]


def _literal_for(spec: F, path: str, kind: str, value: Any, today: date) -> Any:
    if spec.type == "date":
        if kind == "date":
            return value
        if kind == "dateliteral":
            return _date_range(value, today)
        raise SfError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"value of filter criterion for field '{path}' must be of "
            "type date and should not be enclosed in quotes",
        )
    if spec.type == "datetime":
        if kind not in ("datetime", "dateliteral"):
            raise SfError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"value of filter criterion for field '{path}' must be "
                "of type dateTime and should not be enclosed in quotes",
            )
        return value if kind == "datetime" else _date_range(value, today)
    if spec.type == "boolean":
        if kind != "boolean":
            raise SfError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"value of filter criterion for field '{path}' must be of "
                "type boolean and should not be enclosed in quotes",
            )
        return value
    if spec.type in ("currency", "int"):
        if kind != "number":
            raise SfError(
                "INVALID_QUERY_FILTER_OPERATOR",
                f"value of filter criterion for field '{path}' must be of "
                "type double and should not be enclosed in quotes",
            )
        return value
    if kind != "string":
        raise SfError(
            "INVALID_QUERY_FILTER_OPERATOR",
            f"value of filter criterion for field '{path}' must be of "
            "type string and should be enclosed in quotes",
        )
    if spec.type in ("id", "reference") and not _is_id(value):
        raise SfError("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
    return value


def _like(actual: Any, literal: tuple[str, Any]) -> bool:
    if literal[0] != "string" or actual is None:
        return False
    pattern = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in literal[1])
    return re.fullmatch(pattern, str(actual), re.I | re.S) is not None


# --- local TLS, for the end-to-end tests -----------------------------------------------


class TlsServer:
    """The same fake over https://127.0.0.1:<port>, with a self-signed certificate in ``ca_file``."""

    def __init__(self, org: FakeSalesforce, folder: Path | None = None) -> None:
        self.org = org
        self.folder = folder or Path(tempfile.mkdtemp(prefix="fake-salesforce-"))
        self.ca_file, key_file = _self_signed(self.folder)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(org))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.ca_file, key_file)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = int(self.httpd.server_address[1])
        self.url = f"https://127.0.0.1:{self.port}"
        org.instance = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> TlsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(org: FakeSalesforce) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            reply = org.transport(
                self.command, f"https://{org.instance}{self.path}", dict(self.headers), body
            )
            if org.latency:
                time.sleep(org.latency)  # after the work, outside the org's lock
            if reply is None:  # the work is done; the answer is lost
                self.close_connection = True
                return
            status, headers, payload = reply
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


def _self_signed(folder: Path) -> tuple[str, str]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake salesforce")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "fake-salesforce.pem", folder / "fake-salesforce.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_file), str(key_file)


# --- what Salesforce sends ---------------------------------------------------------------


# Hostile XML: an entity bomb and an external entity, which the outbound parser must refuse.
BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>&lol4;</OrganizationId>
</notifications></soapenv:Body></soapenv:Envelope>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound"><OrganizationId>&xxe;</OrganizationId>
</notifications></soapenv:Body></soapenv:Envelope>"""


def outbound_message(
    notifications: list[tuple[str, dict[str, Any]]],
    *,
    org_id: str = ORG_ID,
    action_id: str = "04k5g000000Fake1AAA",
    sobject_type: str = "Opportunity",
) -> bytes:
    """An outbound message as Salesforce sends it: (notification id, sObject fields) per notification.

    Field values are written as Salesforce writes them (booleans as true/false);
    None becomes ``xsi:nil="true"``. SessionId is nil, as when the message is
    configured not to send one.
    """
    items = "".join(
        f"<Notification><Id>{notification_id}</Id>"
        f'<sObject xsi:type="sf:{sobject_type}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        + "".join(_sf_field(name, value) for name, value in fields.items())
        + "</sObject></Notification>"
        for notification_id, fields in notifications
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        "<soapenv:Body>"
        '<notifications xmlns="http://soap.sforce.com/2005/09/outbound">'
        f"<OrganizationId>{org_id}</OrganizationId>"
        f"<ActionId>{action_id}</ActionId>"
        '<SessionId xsi:nil="true"/>'
        f"<EnterpriseUrl>https://{INSTANCE}/services/Soap/c/{API_VERSION}/{org_id[:15]}</EnterpriseUrl>"
        f"<PartnerUrl>https://{INSTANCE}/services/Soap/u/{API_VERSION}/{org_id[:15]}</PartnerUrl>"
        f"{items}"
        "</notifications>"
        "</soapenv:Body>"
        "</soapenv:Envelope>"
    ).encode()


def opportunity_fields(org: FakeSalesforce, opportunity_id: str) -> dict[str, Any]:
    """The fields an outbound message on Opportunity would carry for this record (manifest.json's list)."""
    record = org.db["Opportunity"][opportunity_id]
    names = (
        "Id",
        "StageName",
        "IsClosed",
        "IsWon",
        "CloseDate",
        "Type",
        "Amount",
        "AccountId",
        "OwnerId",
        "ContractId",
    )
    return {name: record.get(name) for name in names}


def _sf_field(name: str, value: Any) -> str:
    if value is None:
        return f'<sf:{name} xsi:nil="true"/>'
    text = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return f"<sf:{name}>{escape(text)}</sf:{name}>"


def session_settings(org: FakeSalesforce) -> dict[str, str]:
    """The SALESFORCE_* settings that point Offboard at this org with session auth.

    The outbound-message key is set too: post outbound messages to OUTBOUND_PATH.
    """
    return {
        "SALESFORCE_INSTANCE_URL": f"https://{org.instance}",
        "SALESFORCE_ACCESS_TOKEN": org.access_token,
        "SALESFORCE_ORG_ID": org.org_id,
        "SALESFORCE_OUTBOUND_KEY": OUTBOUND_KEY,
    }


def refresh_settings(org: FakeSalesforce, login_url: str = "https://login.salesforce.com") -> dict[str, str]:
    """The SALESFORCE_* settings for the OAuth refresh-token flow against this org (a token is issued)."""
    return {
        "SALESFORCE_REFRESH_TOKEN": org.issue_refresh_token(),
        "SALESFORCE_CONSUMER_KEY": CONSUMER_KEY,
        "SALESFORCE_CONSUMER_SECRET": CONSUMER_SECRET,
        "SALESFORCE_LOGIN_URL": login_url,
        "SALESFORCE_ORG_ID": org.org_id,
        "SALESFORCE_OUTBOUND_KEY": OUTBOUND_KEY,
    }
