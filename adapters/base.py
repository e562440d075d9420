"""The CRM port: the few operations the core needs from any CRM.

Every write takes an idempotency ``key``. The same key twice must not write
twice: an action retried after an unknown outcome (a timeout after the CRM
received the request) passes the same key again. CRMs have no idempotency
header, so each adapter keeps its own marker (see each adapter's notes).

Errors are the ``CrmError`` branch of ``connector.errors``, re-exported here so
adapters import one module.

A CRM is a plugin: its package under ``adapters/`` exposes a ``PLUGIN`` (``Plugin``
below) with its settings model, how its adapter is built for a ``Connection``, its
inbound sources (``InboundSource``: verify and parse what the CRM sends), its CLI
commands and its tables. ``adapters.registry`` finds them; the core sees only this
module and the registry, never a CRM's package.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable
from zoneinfo import ZoneInfo

from pydantic import SecretStr

from connector.errors import CrmError, CrmPermanent, CrmRateLimited, CrmTransient
from connector.models import (
    AnswerSpec,
    Deal,
    DealChange,
    Invite,
    NoteSpec,
    PropertyUpdate,
    RecordSpec,
    ReferralSpec,
    TaskChange,
    TaskSpec,
    TaskState,
)
from connector.settings import CrmSettings, Settings

W = TypeVar("W")
R = TypeVar("R")

if TYPE_CHECKING:
    import click

    from connector.inbox import Accepted
    from connector.store import Store

__all__ = [
    "BudgetAware",
    "Connection",
    "CrmAdapter",
    "CrmError",
    "CrmPermanent",
    "CrmRateLimited",
    "CrmSettings",
    "CrmTransient",
    "DealKeeper",
    "Delivery",
    "Ending",
    "InboundAdapter",
    "InboundEvent",
    "InboundRequest",
    "InboundSource",
    "OutcomeAware",
    "Plugin",
    "RecordWriter",
    "Refusal",
    "Reply",
    "SweepWindow",
    "TaskReader",
]


@dataclass(frozen=True)
class SweepWindow:
    """The contracts a sweep asks about: ending between ``start`` and ``end`` inclusive.

    A sweep that ran before narrows the question to what it has not seen: deals
    modified at or after ``changed_since``, or whose contract ends after ``new_after``
    (the days that have come into the window since). Both None: every deal in the window.
    """

    start: date
    end: date
    changed_since: datetime | None = None
    new_after: date | None = None

    @property
    def new_from(self) -> date | None:
        """The first day of the window the last sweep did not cover, or None if it covered it all."""
        if self.new_after is None or self.new_after >= self.end:
            return None
        return max(self.start, self.new_after + timedelta(days=1))


@dataclass(frozen=True)
class Ending:
    """A deal in a sweep's listing: enough to tell whether it is already queued."""

    crm: str
    account: str
    id: str
    contract_end: date

    @property
    def event_key(self) -> str:
        """The inbox key of its contract-end event: one per deal and end date."""
        return f"{self.crm}:{self.id}:{self.contract_end.isoformat()}"


@runtime_checkable
class CrmAdapter(Protocol):
    """What the core asks of a CRM. ``name`` is the adapter's key (``sandbox``, ``hubspot``…)."""

    name: str

    @property
    def account(self) -> str:
        """The CRM account this adapter writes to (portal id, org id…)."""
        ...

    def fetch_deal(self, deal_id: str) -> Deal:
        """The deal with its owner, company and contacts. CrmPermanent if it does not exist."""
        ...

    def create_tasks(self, tasks: Sequence[TaskSpec], key: str) -> list[str]:
        """Create the tasks (as few calls as the CRM allows); return their CRM ids in order."""
        ...

    def add_note(self, note: NoteSpec, key: str) -> str:
        """Log a note on the deal (and its company and contact); return its id."""
        ...

    def update_properties(self, update: PropertyUpdate, key: str) -> None:
        """Set properties on a deal, company or contact."""
        ...

    def send_invite(self, invite: Invite, key: str) -> str:
        """Put a survey or referral link in front of the contact; return an id for the send."""
        ...

    def deals_ending(self, window: SweepWindow) -> Iterable[Ending]:
        """The deals in ``window``: ids and contract ends only, listed page by page.

        A cheap listing (one search or query per page, through the adapter's rate
        limits), never the full deals: the sweep fetches those it has not queued yet.
        """
        ...

    def record_answer(self, answer: AnswerSpec, key: str) -> str:
        """Put a survey answer where the CSM sees it (contact fields/properties and a note); return an id."""
        ...

    def create_referral(self, referral: ReferralSpec, key: str) -> str:
        """Create the referred person (contact or lead) attributed to the referrer and deal; return its id.

        The same email twice is the same person: return the existing id.
        """
        ...


@runtime_checkable
class InboundAdapter(Protocol):
    """An adapter whose CRM sends us events (webhooks, outbound messages)."""

    def interpret(self, kind: str, payload: dict[str, Any]) -> DealChange | TaskChange | None:
        """What a stored inbound event means: a deal closed or re-opened, a checklist task's status
        changed, or None (ignore it).

        Called by the worker, never by the web layer, so it may call the CRM
        (to fetch the deal, or to learn whether a stage id is closed).
        """
        ...


@runtime_checkable
class BudgetAware(Protocol):
    """An adapter whose CRM account has a budget shared with other integrations."""

    def deferral_reason(self) -> str | None:
        """Why non-urgent writes should wait now (a sentence for operators), or None to go ahead."""
        ...


@runtime_checkable
class DealKeeper(Protocol):
    """A CRM that holds only the deals it is told about (the built-in sandbox).

    The worker hands it every deal a generic event names, so that ``offboard plan
    --crm`` and the contract-end sweep find the deal later. A real CRM already holds
    its deals and does not implement this.
    """

    def put_deal(self, deal: Deal) -> None:
        """Create or replace the deal."""
        ...


@runtime_checkable
class OutcomeAware(Protocol):
    """An adapter that looks for what an earlier attempt wrote only when told to.

    Its idempotency rests on finding what an earlier attempt wrote, and a first write does
    not look, so it must be told when an earlier attempt's outcome is unknown: the worker
    that made it died mid-way and the action was claimed again, or the attempt timed out.
    A CRM whose reads lag behind its writes (HubSpot's search index) also waits for them.
    """

    def outcome_unknown(self, key: str, since: datetime) -> None:
        """An earlier attempt of ``key`` may have written until ``since``: before the next write
        with this key, wait until reads show what it wrote."""
        ...


@runtime_checkable
class TaskReader(Protocol):
    """A CRM whose checklist tasks Offboard reads back: completion, who and when, evidence."""

    def read_tasks(self, task_ids: Sequence[str], changed_since: datetime | None = None) -> list[TaskState]:
        """The tasks as the CRM holds them now, in as few calls as the CRM allows (batch reads,
        SOQL ``IN``), within the account's budget. With ``changed_since``, the CRM may leave out
        tasks not modified since then. A task deleted in the CRM is left out."""
        ...

    def task_url(self, task_id: str) -> str | None:
        """Where a person opens the task in the CRM (an escalation task links it), or None."""
        ...


@runtime_checkable
class RecordWriter(Protocol):
    """A CRM that takes the offboarding record: a note on the deal with the file attached."""

    def write_record(self, record: RecordSpec, key: str) -> str:
        """Upload ``record.content`` as a file on the deal and log a note with ``record.body``
        that carries it (once for ``key``); return the file's id."""
        ...


# --- many actions at once ----------------------------------------------------------------------


@dataclass(frozen=True)
class Write(Generic[W]):
    """One action's write inside a batch: what to write, and that action's idempotency key.

    ``unsure_since`` is set when an earlier attempt of this key may have written until then
    (its outcome is unknown: a timeout, a lost reply, a worker that died): only then does the
    adapter look for what it wrote, after waiting for reads that lag to show it. A write whose
    earlier attempts all failed before reaching the CRM, or a first attempt, writes without
    looking.
    """

    key: str
    item: W
    unsure_since: datetime | None = None


# What each write of a batch came to, in order: its result, or the CrmError it alone met (a
# record refused inside a batch fails only its own action). An error that stops the whole call
# (the CRM is down, a 429) is raised instead, and every write of the batch shares it.
Results = list[R | CrmError]


@runtime_checkable
class TaskBatches(Protocol):
    """Checklist tasks of many actions (many deals) in as few calls as the CRM allows."""

    def create_tasks_many(self, writes: Sequence[Write[Sequence[TaskSpec]]]) -> Results[list[str]]:
        """Each write's task ids, in order, or its error."""
        ...


@runtime_checkable
class NoteBatches(Protocol):
    def add_notes_many(self, writes: Sequence[Write[NoteSpec]]) -> Results[str]:
        """Each note's id, or its error."""
        ...


@runtime_checkable
class PropertyBatches(Protocol):
    def update_properties_many(self, writes: Sequence[Write[PropertyUpdate]]) -> Results[None]:
        """None for each update made, or its error."""
        ...


@runtime_checkable
class InviteBatches(Protocol):
    def send_invites_many(self, writes: Sequence[Write[Invite]]) -> Results[str]:
        """Each send's id, or its error (see ``CrmAdapter.send_invite``)."""
        ...


@runtime_checkable
class DealBatches(Protocol):
    """An inbound adapter that reads the deals of many events together."""

    def interpret_many(
        self, events: Sequence[tuple[str, dict[str, Any]]]
    ) -> Results[DealChange | TaskChange | None]:
        """What each (kind, payload) means, as ``InboundAdapter.interpret``, reading deals in batches."""
        ...


# --- connections and plugins ----------------------------------------------------------------


@dataclass(frozen=True)
class Connection:
    """One CRM account Offboard works in, and what its adapter is built from.

    ``account`` is the CRM's id for it (portal id, org id). It is None for the
    environment's connection (single-account mode): there the credentials name the
    account, and the adapter learns its id on first use. ``settings`` are the
    plugin's settings for this account; ``zone`` the account's time zone (due dates).
    """

    crm: str
    account: str | None
    settings: CrmSettings
    zone: ZoneInfo
    # An installed account's access token, fresh (refreshed ahead of expiry, one refresh at a
    # time across processes); raises Disconnected once the CRM refused the refresh token.
    # None for the environment's connection, whose settings carry its credentials.
    token: Callable[[], str] | None = field(default=None, compare=False)
    instance_url: str | None = None  # where an installed Salesforce org's API answers

    @classmethod
    def from_environment(cls, settings: Settings, crm: str) -> Connection:
        """The environment's connection to ``crm``: its plugin's variables and the deployment's zone."""
        return cls(crm=crm, account=None, settings=settings.crm(crm), zone=settings.zone)


@dataclass(frozen=True)
class Plugin:
    """What a CRM package gives the core (its ``PLUGIN``), found through ``adapters.registry``.

    Everything here imports cheaply: a plugin imports its SDK only inside ``build``
    (and its commands), so reading settings or serving webhooks never loads one.
    """

    name: str  # the CRM's key: in settings.crm(), the inbox's source, runs' crm column
    settings: type[CrmSettings]
    # The adapter for one connection; may raise SettingsInvalid naming what is missing.
    build: Callable[[Connection, Store], CrmAdapter]
    # Its inbound endpoints, given its settings (served by the core's one webhook receiver).
    sources: Callable[[CrmSettings], Sequence[InboundSource]] = lambda _settings: ()
    # Its `offboard` commands (click groups or commands).
    commands: Callable[[], Sequence[click.Command]] = lambda: ()
    # Modules that declare its tables on the core's metadata (imported before migrating).
    tables: tuple[str, ...] = ()
    # Its OAuth app, given its settings: how an account installs Offboard and keeps its tokens.
    oauth: Callable[[CrmSettings], OAuthApp] | None = None


# --- installs (OAuth) ------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """What an install (a code exchanged) or a refresh gave: the account and its tokens."""

    account: str  # the portal id, the org id
    access_token: SecretStr
    refresh_token: SecretStr | None
    expires_at: datetime | None
    scopes: tuple[str, ...] = ()
    installed_by: str | None = None  # the installing user, as the CRM names them
    instance_url: str | None = None


class OAuthApp(Protocol):
    """A CRM's OAuth app, as the install routes and the token keeper use it."""

    def missing(self) -> str | None:
        """What keeps installs off (a setting not set), or None when they can start."""

    def verifier(self) -> str | None:
        """A new PKCE code verifier to keep server-side until the callback, or None (no PKCE)."""

    def authorize_url(self, redirect_uri: str, state: str, verifier: str | None) -> str:
        """Where the installing admin's browser is sent."""

    def exchange(self, code: str, redirect_uri: str, verifier: str | None) -> Grant:
        """The code traded for tokens; GrantRefused when the CRM refuses it."""

    def refresh(self, account: str, refresh_token: SecretStr, instance_url: str | None) -> Grant:
        """A new access token; GrantRefused when the refresh token is no longer valid."""

    def after_install(self, adapter: CrmAdapter) -> list[str]:
        """Set the account up (properties, checks); what the admin should still do, if anything."""


# --- inbound sources ----------------------------------------------------------------------


@dataclass(frozen=True)
class InboundRequest:
    """A webhook request as a source sees it: no web framework, the body read only when asked."""

    method: str
    path: str  # the path and query exactly as requested (signatures cover the raw bytes)
    args: Mapping[str, str]
    headers: Mapping[str, str]
    read_body: Callable[[], bytes]
    now: datetime
    public_url: str  # the deployment's public base URL (what a proxy's caller signed)
    configured: Collection[str] = ()  # the CRMs with a connection on this connector
    # The key an installed account's inbound URL carries, by (crm, account): derived from the
    # deployment's secret key, so it is stored nowhere. None where no account is installed.
    account_key: Callable[[str, str], str] | None = None


@dataclass(frozen=True)
class InboundEvent:
    """One thing a CRM told us, as the inbox stores it (under its source's name)."""

    account: str
    event_key: str  # unique per source and account: a redelivery is stored once
    kind: str
    payload: Any


@dataclass(frozen=True)
class Delivery:
    """What one request carried, verified and parsed; ``reference`` names it in logs (or None)."""

    events: list[InboundEvent]
    reference: str | None = None


@dataclass(frozen=True)
class Reply:
    """What the sender gets: a JSON object (a dict) or bytes of ``content_type``."""

    status: int
    body: bytes | dict[str, object] = b""
    content_type: str | None = None


@dataclass(frozen=True)
class Refusal:
    """A refused request: ``error`` is the WebhookRejected class name, None for an HTTP-level
    refusal (a body over the limit, a body cut short)."""

    status: int
    reason: str
    path: str
    error: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)


@runtime_checkable
class InboundSource(Protocol):
    """One endpoint a CRM sends to: where, how it is verified and parsed, how it is answered.

    The core's receiver routes ``POST path`` here, stores the delivery's events under
    ``source`` (one transaction, duplicates recognised) and only then answers.
    """

    path: str  # "/webhooks/hubspot"
    source: str  # the inbox's source: the CRM whose adapter interprets the events

    def receive(self, request: InboundRequest) -> Delivery:
        """Verify the sender, then parse; raise a WebhookRejected (4xx/503) saying why not."""
        ...

    def reply(self, delivery: Delivery, stored: Sequence[Accepted]) -> Reply:
        """The answer once every event is stored."""
        ...

    def refused(self, refusal: Refusal) -> Reply | None:
        """The answer to a refusal, or None for the core's JSON error."""
        ...


def accepted_json(stored: Sequence[Accepted]) -> Reply:
    """The JSON answer of a one-event endpoint: 202 when stored now, 200 for a redelivery."""
    (accepted,) = stored
    status = "duplicate" if accepted.duplicate else "accepted"
    return Reply(200 if accepted.duplicate else 202, {"status": status, "event_id": accepted.event_id})
