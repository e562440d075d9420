"""One write run on the database driver itself: SQLAlchemy compiles it, the driver runs it.

Why. The webhook path stores one or a few events per request, and SQLAlchemy's work around
each execution (a connection from the pool, the begin and commit events, the execution
context, binding every parameter through its type) cost several times what the database
itself does for the INSERT: on a burst it was most of the time a delivery took. So the
inbox's write is compiled by SQLAlchemy once per dialect and statement (with positional
placeholders on both databases, so that one statement can carry many rows), its parameters
are bound with the columns' own bind processors (the very values SQLAlchemy would send: a
datetime as SQLite's text, a payload as JSON), and the driver runs it: many rows per
statement, one statement for a whole group on Postgres.

One statement is one transaction. A write that fits one statement runs on its own, so on
Postgres it costs one round trip (no ``BEGIN``, no ``COMMIT``: on Postgres those were two
round trips of the three a group took); a write that takes more statements is wrapped in a
transaction (``BEGIN IMMEDIATE`` on SQLite), committed when the block ends and rolled back
if it raises. Either way it runs in the store's write turn (``WriterTurn`` on SQLite). A
driver error leaves as SQLAlchemy's own exception class (``OperationalError`` for a
database that is away or locked), so callers handle both alike.
"""

from __future__ import annotations

import contextlib
import copy
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
        compiled = statement.compile(dialect=_positional(dialect), column_keys=list(columns))
        self.sql = compiled.string
        self.names: list[str] = list(compiled.positiontup or ())  # type: ignore[attr-defined]  # in placeholder order
        self._many: dict[int, str] = {}
        self.processors = {
            name: processor
            for name in columns
            if (processor := table.c[name].type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def rows_sql(self, rows: int) -> str:
        """The statement for ``rows`` rows at once."""
        if rows == 1:
            return self.sql
        found = self._many.get(rows)
        if found is None:
            head, values, tail = _values_clause(self.sql)
            found = self._many[rows] = f"{head}{', '.join([values] * rows)}{tail}"
        return found

    def bind(self, values: dict[str, Any]) -> Row:
        processors = self.processors
        return tuple(
            processors[name](values[name]) if name in processors else values[name] for name in self.names
        )


def _positional(dialect: Any) -> Any:
    """The dialect, with positional placeholders (``?`` or psycopg's ``%s``): a statement of many
    rows can then repeat its row of placeholders, which named ones (``%(source)s``) cannot."""
    if dialect.positional:
        return dialect
    found = copy.copy(dialect)
    found.paramstyle, found.positional = "format", True
    return found


def _values_clause(sql: str) -> tuple[str, str, str]:
    """``INSERT … VALUES (?, …) <rest>`` as the text before the row, the row, and the rest."""
    start = sql.index(" VALUES (") + len(" VALUES ")
    end = sql.index(")", start) + 1  # placeholders only: no parenthesis inside
    return sql[:start], sql[start:end], sql[end:]


class Transaction:
    """A driver cursor in the store's write turn (see the module docstring). Bind the parameters
    (``Compiled.bind``) before: the less Python runs in the turn, the sooner the next writer has it."""

    # Rows per statement: SQLite takes 32,766 parameters (999 before 3.32), Postgres 65,535.
    ROWS_PER_STATEMENT = {"sqlite": 100, "postgresql": 1000}

    def __init__(self, cursor: Any, dialect: str) -> None:
        self.cursor = cursor
        self.dialect = dialect
        self.began = False  # whether a transaction wraps several statements

    def returned(self, compiled: Compiled, params: Sequence[Row]) -> list[Row]:
        """What ``compiled`` (an INSERT … RETURNING of one row) returns for all these rows, in no
        particular order (``_run``)."""
        found: list[Row] = []
        for _ in self._run(compiled, params):
            found += self.cursor.fetchall()
        return found

    def inserted(self, compiled: Compiled, params: Sequence[Row]) -> list[tuple[int, range]]:
        """SQLite: ``compiled`` (an INSERT that may skip rows and returns none) for all these rows,
        one statement for every ``ROWS_PER_STATEMENT`` rows, in one transaction; for each
        statement in order, how many rows it carried and the ids of those it inserted.

        Why not RETURNING. Each returned row is a step of the statement of its own, and the
        driver lets go of the interpreter's lock for every step: inside the write turn, which
        other processes wait for, each step then waited for the lock behind this process's
        other threads (most of a turn under a burst of webhooks). Without it the statement is
        one step. SQLite gives a new row the largest id in the table plus one
        (sqlite.org/autoinc.html; only past id 2**63-1 would it pick at random), and the rows of
        one statement go in in order, in the write turn, so the ids a statement gave are the
        ``rowcount`` ids up to ``lastrowid``: row i's own when none was skipped.
        """
        found: list[tuple[int, range]] = []
        for carried in self._run(compiled, params):
            last, count = self.cursor.lastrowid, self.cursor.rowcount
            found.append((carried, range(last - count + 1, last + 1) if count > 0 else range(0)))
        return found

    def _run(self, compiled: Compiled, params: Sequence[Row]) -> Iterator[int]:
        """``compiled`` for all these rows: one statement for every ``ROWS_PER_STATEMENT`` rows, in
        one transaction; after each statement has run, how many rows it carried."""
        step = self.ROWS_PER_STATEMENT[self.dialect]
        if len(params) > step:
            self.begin()
        for start in range(0, len(params), step):
            chunk = params[start : start + step]
            self.cursor.execute(compiled.rows_sql(len(chunk)), [value for one in chunk for value in one])
            yield len(chunk)

    def first_rows(self, compiled: Compiled, params: Sequence[Row]) -> list[Row | None]:
        """``compiled`` run once per parameter set: for each, its first row (None when it gave none);
        pipelined on Postgres, one round trip for all."""
        if self.dialect == "postgresql" and params:
            self.cursor.executemany(compiled.sql, params, returning=True)
            found = [self.cursor.fetchone()]
            while self.cursor.nextset():
                found.append(self.cursor.fetchone())
            return found
        found = []
        for one in params:
            self.cursor.execute(compiled.sql, one)
            found.append(self.cursor.fetchone())
        return found

    def begin(self) -> None:
        """Several statements from here on: one transaction, committed when the block ends."""
        if not self.began:
            self.cursor.execute("BEGIN IMMEDIATE" if self.dialect == "sqlite" else "BEGIN")
            self.began = True


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
            pooled: Any = self.store.engine.raw_connection()
            if self.store.engine.dialect.name == "postgresql":
                # Each statement commits on its own unless the write begins a transaction (the
                # SQLite connections leave transactions to us already). Never back in the pool
                # like this: a held connection is invalidated when it is let go.
                pooled.driver_connection.autocommit = True
            self._pooled, self._pid = pooled, os.getpid()
        self._used = time.monotonic()
        return self._pooled

    def drop(self) -> None:
        """Forget the connection (the pool closes it): it failed, or the store is closing."""
        pooled, self._pooled = self._pooled, None
        if pooled is not None:
            with contextlib.suppress(Exception):
                pooled.invalidate()


@contextmanager
def transaction(store: Store, held: Held) -> Iterator[Transaction]:
    """A write on the ``held`` connection: each statement its own transaction, or all in one
    after ``Transaction.begin`` (see the module docstring)."""
    dialect = store.engine.dialect
    with store.write_turn():
        try:
            driver: Any = held.take().driver_connection
        except dialect.loaded_dbapi.Error as exc:  # the database is away: SQLAlchemy's error for it
            raise _as_sqlalchemy(exc, dialect) from exc
        cursor = driver.cursor()
        transaction = Transaction(cursor, dialect.name)
        try:
            yield transaction
            if transaction.began:
                cursor.execute("COMMIT")
        except dialect.loaded_dbapi.Error as exc:
            _rollback(transaction)
            lost = dialect.is_disconnect(exc, driver, cursor)
            if lost:  # the next write takes a new connection
                held.drop()
            raise _as_sqlalchemy(exc, dialect, lost=lost) from exc
        except BaseException:
            _rollback(transaction)
            raise
        finally:
            cursor.close()


def _rollback(transaction: Transaction) -> None:
    # A statement that failed on its own left nothing to roll back; nor does a connection
    # that is gone (it is dropped).
    if transaction.began:
        with contextlib.suppress(Exception):
            transaction.cursor.execute("ROLLBACK")


def _as_sqlalchemy(exc: BaseException, dialect: Any, *, lost: bool = False) -> BaseException:
    """The driver's error as SQLAlchemy's class for it (OperationalError, IntegrityError…);
    ``connection_invalidated`` when the connection was lost with it."""
    error = DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect)
    if isinstance(error, DBAPIError):
        error.connection_invalidated = lost
    return error
