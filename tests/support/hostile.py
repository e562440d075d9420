"""The hostile-input budget, the Flow secret the hostile settings use, and a view of every table."""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck
from hypothesis import settings as budget
from sqlalchemy import delete, select, tuple_

import adapters.sandbox.tables  # noqa: F401  (the sandbox's tables are part of every dump)
from connector.store import Base, Store

EXAMPLES = int(os.environ.get("OFFBOARD_TEST_HOSTILE_EXAMPLES", "100"))
FLOW_SECRET = "flow-shared-secret-for-hostile-tests"

HOSTILE = budget(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=False,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,  # the store is shared on purpose; each example resets it
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
        HealthCheck.filter_too_much,
    ],
)


def strict_json(value: Any) -> None:
    """What a stored payload must survive: standard JSON, no NaN/Infinity, no NUL, no unpaired surrogates."""
    json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")  # a lone surrogate fails here
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
        elif isinstance(item, str):
            assert "\x00" not in item, "a NUL in a stored payload"


Snapshot = dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]


def _hashable(value: Any) -> Any:
    return json.dumps(value, sort_keys=True, default=str) if isinstance(value, dict | list) else value


class Tables:
    """Every table's rows: what a request added, and a way back to the baseline between examples."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.baseline = self.snapshot()

    def rebase(self) -> None:
        """What is there now is the baseline that ``reset`` returns to."""
        self.baseline = self.snapshot()

    def snapshot(self) -> Snapshot:
        with self.store.session() as session:
            return {
                table.name: {
                    tuple(_hashable(v) for v in row): tuple(row) for row in session.execute(select(table))
                }
                for table in Base.metadata.sorted_tables
            }

    def added(self, before: Snapshot, table: str) -> list[dict[str, Any]]:
        """Rows of ``table`` that were not there in ``before``, as dicts, in id order."""
        columns = [c.name for c in Base.metadata.tables[table].columns]
        now = self.snapshot()[table]
        rows = [dict(zip(columns, row, strict=True)) for key, row in now.items() if key not in before[table]]
        return sorted(rows, key=lambda row: row.get("id") or 0)

    def changed(self, before: Snapshot) -> list[str]:
        after = self.snapshot()
        return [name for name in after if after[name] != before[name]]

    def reset(self) -> None:
        """Delete every row the baseline did not have (children first)."""
        with self.store.session() as session:
            for table in reversed(Base.metadata.sorted_tables):
                keys = list(table.primary_key.columns)
                index = [list(table.columns).index(column) for column in keys]
                kept = {tuple(row[i] for i in index) for row in self.baseline[table.name].values()}
                present = {tuple(row) for row in session.execute(select(*keys))}
                gone = present - kept
                if gone:
                    session.execute(delete(table).where(tuple_(*keys).in_(list(gone))))
