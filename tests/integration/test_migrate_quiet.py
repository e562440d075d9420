"""Opening the store says nothing unless a migration is applied, and then one line per migration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.helpers import ROOT

# A fresh process with logging at INFO on stderr, as `offboard serve` and `offboard worker` have.
UPGRADE = (
    "import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stderr); "
    "from connector.store.db import engine_for; from connector.store.migrate import upgrade; "
    "upgrade(engine_for(sys.argv[1]))"
)


def upgrade_in_a_new_process(url: str) -> list[str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")}
    done = subprocess.run(
        [sys.executable, "-c", UPGRADE, url], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stderr.splitlines()


def migration_count() -> int:
    return len(list((ROOT / "connector" / "migrations" / "versions").glob("[0-9]*.py")))


def test_only_applied_migrations_are_printed(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'offboard.db'}"
    first = upgrade_in_a_new_process(url)
    assert first, "a fresh database gets its migrations, and says so"
    assert all(line.startswith("INFO:offboard.store:database migrated: ") for line in first), first
    assert len(first) == migration_count()
    assert "INFO:offboard.store:database migrated: 0001: the inbox" in first[0]
    assert upgrade_in_a_new_process(url) == []  # up to date: not a word
