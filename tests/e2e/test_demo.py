"""``offboard demo`` does what it was asked, or fails clearly, and says which connector it used."""

from __future__ import annotations

import socket
import subprocess
import threading
from pathlib import Path

import pytest

from connector.store import Store
from tests.support.helpers import BUNDLED_PLAYBOOKS, WEBHOOK_SECRET
from tests.support.server import OFFBOARD, free_port

pytestmark = pytest.mark.e2e


def offboard(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    values = {
        "PATH": "/usr/bin:/bin",
        "OFFBOARD_CONFIG": str(tmp_path / "no-such-offboard.toml"),
        "OFFBOARD_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'offboard.db'}",
        "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
        "OFFBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        **env,
    }
    return subprocess.run(
        [OFFBOARD, "demo", *args], env=values, capture_output=True, text=True, timeout=120, cwd=tmp_path
    )


def sandbox_deals_with_tasks(tmp_path: Path) -> set[str]:
    from adapters.sandbox import SandboxAdapter

    store = Store.from_url(f"sqlite:///{tmp_path / 'var' / 'offboard.db'}")
    try:
        return {task.deal_id for task in SandboxAdapter(store).tasks()}
    finally:
        store.dispose()


def test_url_with_nothing_answering_fails_and_writes_nothing_locally(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = offboard(tmp_path, "--url", url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"No connector is answering at {url}" in result.stderr
    assert "POST /webhooks/generic" not in result.stdout
    assert not (tmp_path / "var").exists()  # not even a database file was created


def test_in_process_runs_here_and_says_so(tmp_path):
    result = offboard(tmp_path, "--in-process")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Running the demo in-process" in result.stdout
    assert "No connector is answering" not in result.stdout + result.stderr
    assert "→ 202" in result.stdout
    assert "Confirm the end date with Acme Corp" in result.stdout
    assert len(sandbox_deals_with_tasks(tmp_path)) == 1


def test_without_options_it_falls_back_to_in_process_and_says_where_it_looked(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result = offboard(tmp_path, OFFBOARD_PUBLIC_URL=url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"No connector is answering at {url}: running the demo in-process instead" in result.stdout
    assert "Confirm the end date with Acme Corp" in result.stdout
    assert len(sandbox_deals_with_tasks(tmp_path)) == 1


def test_url_and_in_process_together_are_refused(tmp_path):
    result = offboard(tmp_path, "--url", "http://127.0.0.1:9", "--in-process")
    assert result.returncode == 2
    assert "not both" in result.stderr
    assert not (tmp_path / "var").exists()


def test_a_url_that_is_not_http_is_refused(tmp_path):
    result = offboard(tmp_path, "--url", "127.0.0.1:8080")
    assert result.returncode == 2
    assert "not an http:// or https:// URL" in result.stderr
    assert not (tmp_path / "var").exists()


def test_url_where_something_that_is_not_http_listens_fails_clearly(tmp_path):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()

        def answer_garbage() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"SSH-2.0-not-a-web-server\r\n")

        threading.Thread(target=answer_garbage, daemon=True).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = offboard(tmp_path, "--url", url)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"No connector is answering at {url} (not an HTTP server" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var").exists()
