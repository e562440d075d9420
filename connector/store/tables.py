"""The core's tables: the inbox, runs, the action outbox, and the audit trail."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from connector.clock import utcnow
from connector.store.db import Base, IdType, JsonType, UtcDateTime


class Event(Base):
    """One thing a CRM told us, stored before we answer it. Unique per source event id."""

    __tablename__ = "events"
    __table_args__ = (
        UniqueConstraint("source", "account", "event_key", name="uq_events_source_key"),
        Index("ix_events_state_received", "state", "received_at"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    event_key: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(64))
    payload: Mapped[Any] = mapped_column(JsonType)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # pending → running → done | ignored | failed
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    available_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    outcome: Mapped[str | None] = mapped_column(Text, nullable=True)
    processed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class Run(Base):
    """One playbook applied to one deal. The same playbook again only after its run was cancelled."""

    __tablename__ = "runs"
    __table_args__ = (
        UniqueConstraint(
            "crm", "account", "deal_id", "playbook_id", "generation", name="uq_runs_deal_playbook_generation"
        ),
        # One offboarding at a time per deal: whichever trigger comes first wins,
        # and only a cancelled run (the deal re-opened) makes room for another.
        Index(
            "uq_runs_one_open_per_deal",
            "crm",
            "account",
            "deal_id",
            unique=True,
            sqlite_where=text("state != 'cancelled'"),
            postgresql_where=text("state != 'cancelled'"),
        ),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    deal_id: Mapped[str] = mapped_column(String(64))
    playbook_id: Mapped[str] = mapped_column(String(100))
    playbook_version: Mapped[int] = mapped_column(Integer)
    playbook_hash: Mapped[str] = mapped_column(String(64))
    # 1 for a deal's first run of this playbook, one more for each started after the last was cancelled
    # (the deal re-opened, then closed again): its idempotency keys, so its CRM records, are its own.
    generation: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    # The playbook exactly as it was when the run started: edits never reach a run under way.
    playbook: Mapped[Any] = mapped_column(JsonType)
    deal: Mapped[Any] = mapped_column(JsonType)
    trigger: Mapped[str] = mapped_column(String(32))
    anchor_at: Mapped[datetime] = mapped_column(UtcDateTime)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"), nullable=True)
    # active → done | cancelled
    state: Mapped[str] = mapped_column(String(16), default="active")
    note: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The checklist as the deal's ``offboard_status`` shows it (connector/checklist.py), when the
    # last of its task steps was settled, and the projected finish when it falls after the
    # contract end (with the sentence saying why), None while on time.
    status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    at_risk: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)

    actions: Mapped[list[Action]] = relationship(back_populates="run", order_by="Action.id")


class Action(Base):
    """One write to the CRM that a run owes: the outbox row the worker executes."""

    __tablename__ = "actions"
    __table_args__ = (Index("ix_actions_state_due", "state", "due_at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[Any] = mapped_column(JsonType)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # pending → running → done | failed | cancelled | skipped; waiting: held until another action is done
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    idempotency_key: Mapped[str] = mapped_column(String(64), unique=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    claimed_by: Mapped[str | None] = mapped_column(String(100), nullable=True)
    result: Mapped[Any] = mapped_column(JsonType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)

    run: Mapped[Run] = relationship(back_populates="actions")


class AuditEntry(Base):
    """What was written where, and every operator change: append-only."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(100))
    verb: Mapped[str] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(IdType, nullable=True, index=True)
    action_id: Mapped[int | None] = mapped_column(IdType, nullable=True)
    crm: Mapped[str | None] = mapped_column(String(32), nullable=True)
    detail: Mapped[Any] = mapped_column(JsonType, nullable=True)


class Schedule(Base):
    """Periodic jobs shared by all workers: whoever moves ``next_at`` forward runs the job."""

    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    next_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WorkerBeat(Base):
    """A live worker process: it moves ``beat_at`` forward while it runs (shown by /metrics)."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    beat_at: Mapped[datetime] = mapped_column(UtcDateTime)


class MetricCount(Base):
    """A counter every process adds to (CRM calls, 429s, webhook answers), read by /metrics."""

    __tablename__ = "metric_counts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    labels: Mapped[str] = mapped_column(String(255), primary_key=True)  # sorted JSON object
    value: Mapped[float] = mapped_column(Float, default=0.0)


class SweepCursor(Base):
    """Where a CRM account's contract-end sweep left off, so the next one lists only what is new."""

    __tablename__ = "sweep_cursors"

    crm: Mapped[str] = mapped_column(String(32), primary_key=True)
    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Deals modified before this were listed by a completed sweep (less a margin for the CRM's index lag).
    changed_since: Mapped[datetime] = mapped_column(UtcDateTime)
    # The last day of that sweep's window: days after it are new to the next one.
    horizon: Mapped[date] = mapped_column(Date)
    swept_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Answer(Base):
    """A survey answer. One per run and survey step: a link can be answered once."""

    __tablename__ = "answers"
    __table_args__ = (UniqueConstraint("run_id", "step_id", name="uq_answers_run_step"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    contact_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    answered_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class Referral(Base):
    """What a client sent on a referral link: someone introduced, consent to a testimonial or
    case study, or both. One per run and referral step: a link accepts one submission."""

    __tablename__ = "referrals"
    __table_args__ = (UniqueConstraint("run_id", "step_id", name="uq_referrals_run_step"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    referrer_contact_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str] = mapped_column(String(255), default="")
    company: Mapped[str] = mapped_column(String(255), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    testimonial: Mapped[bool] = mapped_column(default=False)
    case_study: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ContactTouch(Base):
    """A survey sent to a contact, across runs: the fatigue guard reads these."""

    __tablename__ = "contact_touches"
    __table_args__ = (Index("ix_contact_touches_contact", "crm", "account", "contact_id", "kind"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    run_id: Mapped[int] = mapped_column(IdType)
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RateWindow(Base):
    """A call budget every process shares (one CRM account's window): the row a process locks
    while it counts the window's calls, and until when the CRM told us to send nothing."""

    __tablename__ = "rate_windows"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)  # e.g. "hubspot:<account>:general"
    held_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class RateCall(Base):
    """One call counted in a shared window, stamped by the database's clock; pruned once it has
    left the window."""

    __tablename__ = "rate_calls"
    __table_args__ = (Index("ix_rate_calls_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UtcDateTime)


class AccountConnection(Base):
    """One installed CRM account (a HubSpot portal, a Salesforce org): who installed it, what it
    granted, its tokens (sealed with ``OFFBOARD_ENCRYPTION_KEYS``, never in clear) and its settings.

    ``status``: connected → disconnected (a refresh refused) → connected (installed again);
    removed: an operator took its tokens away (``offboard connections remove``), its rows kept.
    """

    __tablename__ = "connections"
    __table_args__ = (UniqueConstraint("crm", "account", name="uq_connections_crm_account"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="connected")
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    # The installing user as the CRM names them (an email or a user id).
    installed_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    installed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)
    scopes: Mapped[Any] = mapped_column(JsonType, default=list)
    # Fernet tokens (connector/keyring.py), never the CRM's tokens themselves.
    access_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    refresh_token: Mapped[str | None] = mapped_column(Text, nullable=True)
    token_expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    instance_url: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # Per-account settings over the environment's (roles, time zone, brand…): connector/connections.py.
    config: Mapped[Any] = mapped_column(JsonType, default=dict)
    # One token refresh at a time per connection, across processes: whoever moves this forward refreshes.
    refresh_lock_until: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class OAuthState(Base):
    """An install under way: the state sent to the CRM's authorize page, taken once on the way back.

    Only the nonce's SHA-256 is kept, so a copy of the table cannot complete anyone's install; the
    PKCE code verifier (Salesforce) is sealed like a token.
    """

    __tablename__ = "oauth_states"

    nonce_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    crm: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    code_verifier: Mapped[str | None] = mapped_column(Text, nullable=True)


class PlaybookVersion(Base):
    """One published version of an account's own playbook (``offboard playbooks publish``).

    Append-only: a version is never changed or deleted (but by purging its account). An account
    with rows here runs the latest version of each of its playbooks, and none of the folder's.
    """

    __tablename__ = "playbook_versions"
    __table_args__ = (
        UniqueConstraint(
            "crm", "account", "playbook_id", "version", name="uq_playbook_versions_account_id_version"
        ),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    crm: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    playbook_id: Mapped[str] = mapped_column(String(100))
    version: Mapped[int] = mapped_column(Integer)
    # The YAML exactly as published, and its SHA-256 (hex): publishing the same text again is a no-op.
    source: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    published_by: Mapped[str] = mapped_column(String(255))


class ChecklistTask(Base):
    """One task step of a run as written to the CRM, and what became of it there: read back
    from task events and the tracking pass (connector/usecases/checklist.py).

    ``status``: open → completed | needs_evidence (completed without the evidence the step
    requires) → completed; a task re-opened in the CRM is open again; cancelled with its run.
    """

    __tablename__ = "checklist_tasks"
    __table_args__ = (
        UniqueConstraint("run_id", "step_id", name="uq_checklist_tasks_run_step"),
        Index("ix_checklist_tasks_crm_task", "crm", "account", "task_id"),
        Index("ix_checklist_tasks_status", "status"),
    )

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id"), index=True)
    crm: Mapped[str] = mapped_column(String(32))
    account: Mapped[str] = mapped_column(String(64))
    step_id: Mapped[str] = mapped_column(String(100))
    task_id: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(255))
    owner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    status: Mapped[str] = mapped_column(String(16), default="open")
    evidence_required: Mapped[bool] = mapped_column(Boolean, default=False)
    evidence: Mapped[str | None] = mapped_column(Text, nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    completed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class TrackCursor(Base):
    """When a CRM account's tracking pass last read its open tasks: the next reads what changed since."""

    __tablename__ = "track_cursors"

    crm: Mapped[str] = mapped_column(String(32), primary_key=True)
    account: Mapped[str] = mapped_column(String(64), primary_key=True)
    checked_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # When a pass last read every tracked task, changed or not: one missing then was deleted.
    every_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
