"""Hostile input: every endpoint and parser on, a fixed hypothesis budget, and a view of every table.

The budget is small and fixed so ``make test`` stays fast and deterministic
(``derandomize``: the same examples on every run, no example database).
``OFFBOARD_TEST_HOSTILE_EXAMPLES=2000 pytest tests/hostile`` digs deeper.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as budget
from sqlalchemy import delete, select, tuple_

import adapters.sandbox.tables  # noqa: F401  (the sandbox's tables are part of every dump)
from connector import links
from connector.settings import Settings
from connector.store import Base, Run, Store
from tests.conftest import deal_closed_event, make_settings, signed
from tests.fakes.hubspot import settings_overrides
from tests.fakes.salesforce import ORG_ID, OUTBOUND_KEY

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


@pytest.fixture
def settings(db_url: str) -> Settings:
    """Every inbound endpoint on: generic, HubSpot, Salesforce outbound messages and Flow callouts."""
    return make_settings(
        db_url,
        **settings_overrides("http://127.0.0.1:9"),  # the HubSpot adapter is built, never called
        SALESFORCE_ORG_ID=ORG_ID,
        SALESFORCE_OUTBOUND_KEY=OUTBOUND_KEY,
        SALESFORCE_WEBHOOK_SECRET=FLOW_SECRET,
        OFFBOARD_SWEEP_INTERVAL_SECONDS=0,  # no contract-end sweep: it would ask the (absent) HubSpot
    )


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


@pytest.fixture
def tables(store: Store) -> Iterator[Tables]:
    yield Tables(store)


@pytest.fixture
def pages(client: Any, services: Any, tables: Tables) -> dict[str, str]:
    """A run for a completed project, and its survey and referral paths (minted as the worker does)."""
    body, headers = signed(deal_closed_event())
    assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
    services.worker().run_until_idle()
    with services.store.session() as session:
        run_id = session.scalars(select(Run.id)).one()
    key, public = services.settings.secret_key.get_secret_value(), services.settings.public_url
    survey = {"run": run_id, "step": "exit-nps", "contact": "contact-1", "kind": "nps"}
    referral = {"run": run_id, "step": "referral-ask", "contact": "contact-1", "kind": "referral"}
    paths = {
        "survey": links.make_link(public, key, "survey", survey).removeprefix(public),
        "referral": links.make_link(public, key, "referral", referral).removeprefix(public),
    }
    for path in paths.values():
        assert client.get(path).status_code == 200
    tables.rebase()
    return paths
