"""One write run on the database driver itself: SQLAlchemy compiles it, the driver runs it.

Why. The webhook path stores one or a few events per request, and SQLAlchemy's work around
each execution (a connection from the pool, the begin and commit events, the execution
context, binding every parameter through its type) cost several times what the database
itself does for the INSERT: on a burst it was most of the time a delivery took. So the
inbox's write is compiled by SQLAlchemy once per dialect and statement, its parameters are
bound with the columns' own bind processors (the very values SQLAlchemy would send: a
datetime as SQLite's text, a payload as JSON), and the driver runs it: row after row on
SQLite, where a prepared statement costs microseconds; pipelined on Postgres
(psycopg's ``executemany(returning=True)``), one round trip for the whole group.

The transaction is the store's write transaction all the same: the writer's turn on
SQLite (``BEGIN IMMEDIATE`` after ``WriterTurn``), committed when the block ends, rolled
back if it raises. A driver error leaves as SQLAlchemy's own exception class
(``OperationalError`` for a database that is away or locked), so callers handle both alike.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import FromClause
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

from connector.store.db import Store

Row = tuple[Any, ...]


class Compiled:
    """A statement as the driver takes it, and how to bind one row of values to it."""

    def __init__(
        self, store: Store, statement: ClauseElement, table: FromClause, columns: Sequence[str]
    ) -> None:
        dialect = store.engine.dialect
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        self.sql = compiled.string
        # The order the driver's placeholders take the values in: positional (SQLite's ?) or
        # by name (psycopg's %(name)s).
        self.names = list(compiled.positiontup or ()) if dialect.positional else None  # type: ignore[attr-defined]
        self._many: dict[int, str] = {}
        self.processors = {
            name: processor
            for name in columns
            if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def rows_sql(self, rows: int) -> str:
        """The statement for ``rows`` rows at once (positional placeholders: SQLite's)."""
        if rows == 1:
            return self.sql
        found = self._many.get(rows)
        if found is None:
            head, values, tail = _values_clause(self.sql)
            found = self._many[rows] = f"{head}{', '.join([values] * rows)}{tail}"
        return found

    def bind(self, values: dict[str, Any]) -> Any:
        bound = {
            name: self.processors[name](v) if name in self.processors else v for name, v in values.items()
        }
        return bound if self.names is None else tuple(bound[name] for name in self.names)


def _values_clause(sql: str) -> tuple[str, str, str]:
    """``INSERT … VALUES (?, …) <rest>`` as the text before the row, the row, and the rest."""
    start = sql.index(" VALUES (") + len(" VALUES ")
    end = sql.index(")", start) + 1  # placeholders only: no parenthesis inside
    return sql[:start], sql[start:end], sql[end:]


class Transaction:
    """A driver cursor in the store's write transaction (see the module docstring). Bind the
    parameters (``Compiled.bind``) before the transaction: the less Python runs while the write
    lock is held, the sooner the next writer gets it."""

    ROWS_PER_STATEMENT = 100  # SQLite: rows per multi-row statement (900 parameters for the events)

    def __init__(self, cursor: Any, pipelined: bool) -> None:
        self.cursor = cursor
        self.pipelined = pipelined

    def returned(self, compiled: Compiled, params: Sequence[Any]) -> list[Row]:
        """What ``compiled`` (an INSERT … RETURNING of one row) returns for all these rows, in no
        particular order: on SQLite in statements of ``ROWS_PER_STATEMENT`` rows, one round trip
        on Postgres."""
        if not params:
            return []
        if self.pipelined:
            return [row for row in self._pipelined(compiled, params) if row is not None]
        found: list[Row] = []
        step = self.ROWS_PER_STATEMENT
        for start in range(0, len(params), step):
            chunk = params[start : start + step]
            self.cursor.execute(compiled.rows_sql(len(chunk)), [value for one in chunk for value in one])
            found += self.cursor.fetchall()
        return found

    def first_rows(self, compiled: Compiled, params: Sequence[Any]) -> list[Row | None]:
        """``compiled`` run once per parameter set: for each, its first row (None when it gave none)."""
        if self.pipelined:
            return self._pipelined(compiled, params) if params else []
        found = []
        for one in params:
            self.cursor.execute(compiled.sql, one)
            found.append(self.cursor.fetchone())
        return found

    def _pipelined(self, compiled: Compiled, params: Sequence[Any]) -> list[Row | None]:
        self.cursor.executemany(compiled.sql, params, returning=True)
        found = [self.cursor.fetchone()]
        while self.cursor.nextset():
            found.append(self.cursor.fetchone())
        return found


class Held:
    """A driver connection kept out of the pool for one writer at a time (the inbox's).

    Taking a connection from the pool for each transaction cost, on Postgres, a ping and a
    reset: two round trips more than the write itself. A held connection is checked with a
    ping only after ``IDLE_SECONDS`` unused (a database restarted meanwhile); one that fails
    is dropped, and the next transaction takes a new one from the pool.
    """

    IDLE_SECONDS = 30.0

    def __init__(self, store: Store) -> None:
        self.store = store
        self._pooled: Any = None
        self._pid: int | None = None
        self._used = 0.0
        store.on_dispose(self.drop)

    def take(self) -> Any:
        """The held connection, after a ping if it sat idle; a new one from the pool if none."""
        if self._pooled is not None and self._pid != os.getpid():
            self._pooled = None  # the parent's, across a fork: never used here
        if self._pooled is not None and time.monotonic() - self._used > self.IDLE_SECONDS:
            try:
                alive = self.store.engine.dialect.do_ping(self._pooled.driver_connection)
            except Exception:
                alive = False
            if not alive:
                self.drop()
        if self._pooled is None:
            self._pooled, self._pid = self.store.engine.raw_connection(), os.getpid()
        self._used = time.monotonic()
        return self._pooled

    def drop(self) -> None:
        """Forget the connection (the pool closes it): it failed, or the store is closing."""
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            with contextlib.suppress(Exception):
                pooled.invalidate()


@contextmanager
def transaction(store: Store, held: Held | None = None) -> Iterator[Transaction]:
    """One write transaction on the ``held`` connection, or on one from the store's pool."""
    dialect = store.engine.dialect
    with store.write_turn():
        try:
            pooled: Any = held.take() if held is not None else store.engine.raw_connection()
        except dialect.loaded_dbapi.Error as exc:  # the database is away: SQLAlchemy's error for it
            raise _as_sqlalchemy(exc, dialect) from exc
        try:
            driver: Any = pooled.driver_connection
            cursor = driver.cursor()
            sqlite = dialect.name == "sqlite"
            try:
                if sqlite:
                    cursor.execute("BEGIN IMMEDIATE")  # the connection leaves transactions to us
                yield Transaction(cursor, pipelined=not sqlite)
                driver.commit()
            except dialect.loaded_dbapi.Error as exc:
                _rollback(driver)
                lost = dialect.is_disconnect(exc, driver, cursor)
                if lost:  # the pool opens a new one rather than hand this out again
                    held.drop() if held is not None else pooled.invalidate()
                raise _as_sqlalchemy(exc, dialect, lost=lost) from exc
            except BaseException:
                _rollback(driver)
                raise
            finally:
                cursor.close()
        finally:
            if held is None:
                pooled.close()  # back to the pool (which resets it)


def _rollback(driver: Any) -> None:
    # A connection that is gone has nothing to roll back; the pool drops it.
    with contextlib.suppress(Exception):
        driver.rollback()


def _as_sqlalchemy(exc: BaseException, dialect: Any, *, lost: bool = False) -> BaseException:
    """The driver's error as SQLAlchemy's class for it (OperationalError, IntegrityError…);
    ``connection_invalidated`` when the connection was lost with it."""
    error = DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect)
    if isinstance(error, DBAPIError):
        error.connection_invalidated = lost
    return error
