"""SQLAlchemy over SQLite (default) or Postgres: the inbox, runs, outbox and audit."""

from connector.store.db import Base, Store
from connector.store.tables import Action, AuditEntry, Event, Run

__all__ = ["Action", "AuditEntry", "Base", "Event", "Run", "Store"]
