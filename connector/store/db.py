"""The database: an engine for SQLite (default) or Postgres, and the session scope.

SQLite is one writer at a time: every write transaction (``Store.session``)
waits for its turn (``WriterTurn``), then starts with ``BEGIN IMMEDIATE`` so two
threads never both read-then-write the same rows, and WAL lets readers go on
while one writes. Reports and listings
use ``Store.read``: a deferred ``BEGIN`` that never takes the write lock, so an
operator reading 100k rows never makes a webhook wait. On Postgres a read is a
``READ ONLY`` transaction. Postgres uses row locks (``FOR UPDATE SKIP LOCKED``)
so many workers on many machines share the outbox.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Connection, DateTime, Engine, Integer, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

# Execution option marking a connection's transactions as read-only (see ``Store.read``).
READ_ONLY = "offboard_read_only"
CONNECT_SECONDS = 10  # Postgres: how long a new connection may take (a URL's connect_timeout wins)
WRITER_WAIT_SECONDS = 30  # as long as SQLite's busy timeout: then the write fails instead of waiting on

JsonType = JSON().with_variant(JSONB(), "postgresql")
IdType = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out, on SQLite (which stores naive text) and Postgres."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use aware UTC datetimes")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def insert(session: Session, table: Any) -> Any:
    """The dialect's INSERT, which has ``on_conflict_do_nothing`` on both SQLite and Postgres."""
    return dialect_insert(session.get_bind().dialect.name, table)


def dialect_insert(dialect: str, table: Any) -> Any:
    """``insert`` for a dialect named ``postgresql`` or ``sqlite``."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def engine_for(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``; SQLite files get their folder created and WAL turned on."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(url, **kwargs)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if "connect_timeout" not in parsed.query:
        # libpq waits for a connection without end by default (a host that drops packets: minutes
        # of TCP retries). Web deliveries are stored by the server's front (connector.serve), whose
        # process the process manager replaces after 60 s without a heartbeat; a database that
        # cannot be reached in this long is answered 503 instead.
        kwargs["connect_args"] = {"connect_timeout": CONNECT_SECONDS, **kwargs.get("connect_args", {})}
    engine = create_engine(parsed, pool_pre_ping=True, pool_size=10, max_overflow=10, **kwargs)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # The driver has opened the transaction implicitly; this is its first statement.
        if connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")

    return engine


def _sqlite_engine(url: str, **kwargs: Any) -> Engine:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so BEGIN IMMEDIATE is ours to emit.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        # In WAL mode NORMAL writes each commit to the log before the commit returns and syncs
        # the log to disk at checkpoints, not at every commit: a transaction committed before
        # a webhook's 2xx survives the process being killed at once (the promise the inbox
        # makes), though not a power cut or an OS crash, which may take the last commits.
        # FULL (a sync per commit, held under the one write lock) cost a quarter of the
        # webhook throughput on a burst; a deployment needing the power-cut promise runs
        # Postgres.
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # A read takes a snapshot and no lock that writers wait on; a write takes the lock up front.
        read_only = connection.get_execution_options().get(READ_ONLY)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


class WriterTurn:
    """Whose turn it is to write a SQLite database, queued for in the operating system.

    SQLite lets one connection write at a time; a connection that finds the lock taken sleeps
    in SQLite's busy handler, 1, 2, 5, 10… up to 100 ms between tries, so under a burst of
    webhooks a writer slept long after the lock was free (a p99 of a second). Here the threads
    of a process queue on a lock, and processes on ``flock`` of a file beside the database;
    both wake a waiter the moment the lock is released. Every Offboard write transaction takes
    its turn first, so SQLite's own lock is then free; the busy handler stays for any other
    writer (the sqlite3 shell, a migration). A thread waits for its process's turn at most
    ``WRITER_WAIT_SECONDS``; the one thread per process then waiting on ``flock`` needs no bound,
    as a turn lasts one transaction and the kernel hands back the turn of a process that dies.
    """

    def __init__(self, database: str | None) -> None:
        self.path = None if database in (None, "", ":memory:") else Path(f"{database}-writer")
        self._pid: int | None = None
        self._threads = threading.Lock()
        self._file: Any = None

    @contextmanager
    def taken(self) -> Iterator[None]:
        self._after_fork()
        if not self._threads.acquire(timeout=WRITER_WAIT_SECONDS):
            # The error SQLite's own busy timeout gives, so callers handle both alike.
            waited = f"database is locked (no turn to write in {WRITER_WAIT_SECONDS} s)"
            raise OperationalError("BEGIN IMMEDIATE", None, sqlite3.OperationalError(waited))
        try:
            if self._file is not None:
                fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                if self._file is not None:
                    fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def _after_fork(self) -> None:
        """A forked process gets its own lock and its own open file (a lock on an inherited
        one would be shared with the parent)."""
        if self._pid == os.getpid():
            return
        with _FIRST_USE:  # two threads may both come first
            if self._pid != os.getpid():
                self._threads = threading.Lock()
                self._file = None if self.path is None else self.path.open("a+b")
                self._pid = os.getpid()


_FIRST_USE = threading.Lock()


def _new_first_use_lock() -> None:
    global _FIRST_USE  # a lock held by another thread at the fork would stay held in the child
    _FIRST_USE = threading.Lock()


os.register_at_fork(after_in_child=_new_first_use_lock)


class Store:
    """The engine and a session factory; one per process, built from settings."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._reads = sessionmaker(engine.execution_options(**{READ_ONLY: True}), expire_on_commit=False)
        self._turn = WriterTurn(engine.url.database) if self.is_sqlite else None
        self._on_dispose: list[Callable[[], None]] = []

    @classmethod
    def from_url(cls, url: str) -> Store:
        return cls(engine_for(url))

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back if it raises."""
        if self._turn is None:
            with self._sessions() as session, session.begin():
                yield session
            return
        with self._turn.taken(), self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def connection(self) -> Iterator[Connection]:
        """One transaction on a plain connection (no ORM): committed when the block ends, rolled
        back if it raises. For the hottest writes, where the ORM's unit of work is pure cost."""
        if self._turn is None:
            with self.engine.begin() as connection:
                yield connection
            return
        with self._turn.taken(), self.engine.begin() as connection:
            yield connection

    @contextmanager
    def write_turn(self) -> Iterator[None]:
        """This process's turn to write (SQLite; see ``WriterTurn``), held for the block. Every
        write transaction takes it first; on Postgres there is nothing to wait for here."""
        if self._turn is None:
            yield
            return
        with self._turn.taken():
            yield

    @contextmanager
    def read(self) -> Iterator[Session]:
        """One read transaction: a consistent view that never holds up a writer.

        On SQLite it takes no write lock (webhooks and workers write meanwhile); on
        Postgres it is ``READ ONLY``, so a write in it fails. Keep it for reads.
        """
        with self._reads() as session, session.begin():
            yield session

    def ping(self) -> bool:
        try:
            with self.engine.execution_options(**{READ_ONLY: True}).connect() as connection:
                connection.exec_driver_sql("SELECT 1")  # a read: a probe never waits for the write lock
            return True
        except Exception:
            return False

    def on_dispose(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the store is disposed (to give back a connection held out of the pool)."""
        self._on_dispose.append(callback)

    def dispose(self) -> None:
        for callback in self._on_dispose:
            callback()
        self.engine.dispose()
