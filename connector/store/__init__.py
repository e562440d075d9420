"""SQLAlchemy over SQLite (default) or Postgres: the inbox, runs, outbox and audit."""

from connector.store.db import Base, Store
from connector.store.tables import (
    Action,
    Answer,
    AuditEntry,
    ChecklistTask,
    ContactTouch,
    Event,
    MetricCount,
    Referral,
    Run,
    Schedule,
    SweepCursor,
    WorkerBeat,
)

__all__ = [
    "Action",
    "Answer",
    "AuditEntry",
    "Base",
    "ChecklistTask",
    "ContactTouch",
    "Event",
    "MetricCount",
    "Referral",
    "Run",
    "Schedule",
    "Store",
    "SweepCursor",
    "WorkerBeat",
]
