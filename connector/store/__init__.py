"""SQLAlchemy over SQLite (default) or Postgres: the inbox, runs, outbox and audit."""

from connector.store.db import Base, Store
from connector.store.tables import Action, AuditEntry, Event, Run, Schedule

__all__ = ["Action", "AuditEntry", "Base", "Event", "Run", "Schedule", "Store"]
