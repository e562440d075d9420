"""The CRM port: the few operations the core needs from any CRM.

Every write takes an idempotency ``key``. The same key twice must not write
twice: an action retried after an unknown outcome (a timeout after the CRM
received the request) passes the same key again. CRMs have no idempotency
header, so each adapter keeps its own marker (see each adapter's notes).

Errors are the ``CrmError`` branch of ``connector.errors``, re-exported here so
adapters import one module.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from connector.errors import CrmError, CrmPermanent, CrmRateLimited, CrmTransient
from connector.models import (
    AnswerSpec,
    Deal,
    DealChange,
    Invite,
    NoteSpec,
    PropertyUpdate,
    ReferralSpec,
    TaskSpec,
)

__all__ = [
    "BudgetAware",
    "CrmAdapter",
    "CrmError",
    "CrmPermanent",
    "CrmRateLimited",
    "CrmTransient",
    "DealKeeper",
    "Ending",
    "InboundAdapter",
    "OutcomeAware",
    "SweepWindow",
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

    def interpret(self, kind: str, payload: dict[str, Any]) -> DealChange | None:
        """What a stored inbound event means: a deal closed or re-opened, or None (ignore it).

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
    """An adapter whose reads may lag behind its writes (HubSpot's search index).

    Its idempotency rests on finding what an earlier attempt wrote, so it must be told
    when an earlier attempt's outcome is unknown: the worker that made it died mid-way
    and the action was claimed again. A CRM whose reads are consistent (Salesforce's
    SOQL) has nothing to do and does not implement this.
    """

    def outcome_unknown(self, key: str, since: datetime) -> None:
        """An earlier attempt of ``key`` may have written until ``since``: before the next write
        with this key, wait until reads show what it wrote."""
        ...
