"""``OFFBOARD_ENV=production`` refuses to serve what is unsafe: a non-zero exit, a message
naming each variable, and nothing migrated or bound first."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest

from tests.support.helpers import BUNDLED_PLAYBOOKS
from tests.support.server import OFFBOARD, free_port

pytestmark = pytest.mark.e2e

SAFE = {
    "OFFBOARD_ENV": "production",
    "OFFBOARD_SECRET_KEY": "s" * 40,
    "OFFBOARD_SANDBOX": "false",
    "OFFBOARD_PUBLIC_URL": "https://offboard.example.com",
    "OFFBOARD_PLAYBOOKS": str(BUNDLED_PLAYBOOKS),
}


def _serve(tmp_path, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], int]:
    port = free_port()
    database = tmp_path / "offboard.db"
    result = subprocess.run(
        [OFFBOARD, "serve", "--port", str(port), *args],
        env={**os.environ, "OFFBOARD_DATABASE_URL": f"sqlite:///{database}", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert not database.exists(), "the database was touched before the refusal"
    return result, port


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_serve_refuses_unsafe_production_settings_before_binding(tmp_path):
    env = {**SAFE, "OFFBOARD_SECRET_KEY": "too-short", "OFFBOARD_SANDBOX": "true"}
    env["OFFBOARD_PUBLIC_URL"] = "http://localhost:8080"
    result, port = _serve(tmp_path, env)
    assert result.returncode != 0
    for variable in ("OFFBOARD_SECRET_KEY", "OFFBOARD_SANDBOX", "OFFBOARD_PUBLIC_URL"):
        assert f"{variable}:" in result.stderr, result.stderr
    assert "too-short" not in result.stderr
    assert "Listening at" not in result.stderr + result.stdout
    assert _port_is_free(port)


def test_serve_refuses_several_web_processes_on_sqlite_in_production(tmp_path):
    result, port = _serve(tmp_path, SAFE, "--workers", "2")
    assert result.returncode != 0
    assert "OFFBOARD_DATABASE_URL: SQLite serves one web process, not 2" in result.stderr, result.stderr
    assert "Listening at" not in result.stderr + result.stdout
    assert _port_is_free(port)
