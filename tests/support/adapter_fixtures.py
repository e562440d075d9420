"""Fixtures the HubSpot and Salesforce adapter tests share: a strict fake, served, and an adapter on it.

A test module takes them by name: ``fake = adapter_fixtures.fake`` and so on.
"""

from __future__ import annotations

from typing import Any

import pytest
import responses

from adapters.salesforce.adapter import SalesforceAdapter
from connector.settings import load_settings
from tests.support.helpers import make_settings
from tests.support.hubspot import (
    FakeHubSpot,
    fake_time_adapter,
    offboard_properties,
    serve,
    settings_overrides,
    standard_portal,
)
from tests.support.salesforce import FakeSalesforce, session_settings


@pytest.fixture
def fake(clock):
    return offboard_properties(standard_portal(FakeHubSpot(clock=clock)))


@pytest.fixture
def url(fake, httpserver):
    return serve(fake, httpserver)


@pytest.fixture
def adapter(url, clock):
    return fake_time_adapter(load_settings(**settings_overrides(url)), clock)


@pytest.fixture
def org(request: pytest.FixtureRequest) -> FakeSalesforce:
    return FakeSalesforce(**getattr(request, "param", {}))


@pytest.fixture
def http(org):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield mock


def adapter_for(org: FakeSalesforce, tmp_path: Any, **overrides: Any) -> SalesforceAdapter:
    """A new adapter: a new process, which knows nothing of earlier attempts."""
    values = {**session_settings(org), "OFFBOARD_TIMEZONE": "Europe/Paris", **overrides}
    return SalesforceAdapter.from_settings(make_settings(f"sqlite:///{tmp_path}/unused.db", **values))


@pytest.fixture
def sf(org, http, tmp_path) -> SalesforceAdapter:
    return adapter_for(org, tmp_path)
