"""Hostile input: every endpoint and parser on, a fixed hypothesis budget, and a view of every table.

The budget and the table view live in ``tests.support.hostile``. The budget is small and
fixed so ``make test`` stays fast and deterministic
(``derandomize``: the same examples on every run, no example database).
``OFFBOARD_TEST_HOSTILE_EXAMPLES=2000 pytest tests/hostile`` digs deeper.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from connector import links
from connector.settings import Settings
from connector.store import Run, Store
from tests.support.helpers import deal_closed_event, make_settings, signed
from tests.support.hostile import FLOW_SECRET, Tables
from tests.support.hubspot import settings_overrides
from tests.support.salesforce import ORG_ID, OUTBOUND_KEY


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
