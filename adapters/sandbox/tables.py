"""The sandbox CRM's own tables, in the same database as the core's."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from connector.clock import utcnow
from connector.store.db import Base, IdType, JsonType, UtcDateTime


class SandboxDeal(Base):
    __tablename__ = "sandbox_deals"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    data: Mapped[Any] = mapped_column(JsonType)
    contract_end: Mapped[str | None] = mapped_column(String(10), nullable=True, index=True)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class SandboxTask(Base):
    __tablename__ = "sandbox_tasks"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    # The writer's idempotency key and the task's place in its batch: a retried
    # batch finds its tasks by this marker instead of creating them again.
    marker: Mapped[str] = mapped_column(String(80), unique=True)
    deal_id: Mapped[str] = mapped_column(String(64), index=True)
    step_id: Mapped[str] = mapped_column(String(100))
    subject: Mapped[str] = mapped_column(String(255))
    body: Mapped[str] = mapped_column(Text, default="")
    due_at: Mapped[datetime] = mapped_column(UtcDateTime)
    owner_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    priority: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(32), default="not_started")
    company_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    contact_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # What a person does to the task in the sandbox CRM (``offboard sandbox task``).
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    completed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attachments: Mapped[Any] = mapped_column(JsonType, nullable=True, default=list)
    modified_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class SandboxNote(Base):
    __tablename__ = "sandbox_notes"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    marker: Mapped[str] = mapped_column(String(80), unique=True)
    deal_id: Mapped[str] = mapped_column(String(64), index=True)
    body: Mapped[str] = mapped_column(Text)
    company_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    contact_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SandboxFile(Base):
    """A file attached to a deal (the offboarding record), with the note that carries it."""

    __tablename__ = "sandbox_files"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    marker: Mapped[str] = mapped_column(String(80), unique=True)
    deal_id: Mapped[str] = mapped_column(String(64), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    content: Mapped[str] = mapped_column(Text)
    note_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SandboxProperty(Base):
    __tablename__ = "sandbox_properties"
    __table_args__ = (UniqueConstraint("object", "object_id", "name", name="uq_sandbox_property"),)

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    object: Mapped[str] = mapped_column(String(16))
    object_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, onupdate=utcnow)


class SandboxInvite(Base):
    __tablename__ = "sandbox_invites"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    marker: Mapped[str] = mapped_column(String(80), unique=True)
    deal_id: Mapped[str] = mapped_column(String(64), index=True)
    contact_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    link: Mapped[str] = mapped_column(Text)
    sent_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SandboxFault(Base):
    """Failures an operator or a test asked the sandbox to produce, for the next N calls."""

    __tablename__ = "sandbox_faults"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    operation: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))  # transient | rate_limited | permanent
    remaining: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text, default="")


class SandboxContact(Base):
    """Contacts the sandbox CRM created (referrals); a deal's own contacts live in its record."""

    __tablename__ = "sandbox_contacts"

    id: Mapped[int] = mapped_column(IdType, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    first_name: Mapped[str] = mapped_column(String(100))
    last_name: Mapped[str] = mapped_column(String(100), default="")
    company: Mapped[str] = mapped_column(String(255), default="")
    note: Mapped[str] = mapped_column(Text, default="")
    referred_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    referred_on_deal: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
