"""Fixtures of the fault suite: a fake HubSpot served from the test process, and the processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from tests.support.harness import Cluster, RecordingHubSpot, process_env
from tests.support.hubspot import FakeHubSpot, offboard_properties, serve, standard_portal


@pytest.fixture
def fake() -> Iterator[FakeHubSpot]:
    """HubSpot, as the processes see it, with a budget wide enough not to be the subject here.

    A threaded server: a stalled call must not hold up the others. It lives in this process,
    so it survives every kill.
    """
    server = HTTPServer(threaded=True)
    server.start()
    fake = offboard_properties(standard_portal(RecordingHubSpot(limit_per_10s=5000, search_per_s=200)))
    fake.url = serve(fake, server)  # type: ignore[attr-defined]
    yield fake
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def cluster(db_url: str, store, fake: FakeHubSpot, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Make (not start) the server and ``workers`` worker processes; whatever is left is killed."""
    made: list[Cluster] = []

    def make(workers: int, **env: str) -> Cluster:
        logs = tmp_path / f"cluster-{len(made)}"
        logs.mkdir()
        made.append(Cluster(process_env(db_url, fake.url, **env), logs, workers))  # type: ignore[attr-defined]
        return made[-1]

    yield make
    for built in made:
        built.kill_all()
