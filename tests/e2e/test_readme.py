"""Every command in the README works, run in order on a fresh database against the real server.

The README's ``sh`` blocks are read as a newcomer would follow them: ``make run`` starts the
server (the command its Makefile recipe runs, on a free port, with a SQLite database in a
temporary folder), and every other line runs for real in the repository, with the README's
port replaced by the server's. Test suites are not run from inside the suite (``make test``,
``make test-*``, ``pytest``); the test checks instead that they are what the README says, as
it does for the slow or file-writing targets ``make bench`` and ``make screenshots``. ``make``
is told not to redo the install (``-o .venv/.installed``); everything else is the README's text.

Between blocks the test waits until the server's worker has handled what it was sent, as a
person reading the next paragraph would.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from connector.clock import utcnow
from connector.store import Action, Event, Run, Store
from tests.support.helpers import ROOT
from tests.support.server import ServerProcess

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"
README_PORT = "127.0.0.1:8080"
STAMP = ".venv/.installed"


def sh_blocks(text: str) -> list[list[str]]:
    """The README's ``sh`` blocks, each as its commands (continuation lines joined)."""
    blocks = re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    return [re.sub(r"\\\n\s*", "", block).strip().splitlines() for block in blocks]


def make_recipe(target: str) -> tuple[str, list[str]]:
    """A Makefile target's prerequisites and its recipe lines."""
    text = MAKEFILE.read_text()
    match = re.search(rf"^{target}:(.*)\n((?:\t.*\n)+)", text, flags=re.MULTILINE)
    assert match, f"the Makefile has no {target!r} target"
    return match.group(1).strip(), [line.strip() for line in match.group(2).splitlines()]


def makefile_variable(name: str) -> str:
    match = re.search(rf"^(?:export )?{name}\s*\??=\s*(.+)$", MAKEFILE.read_text(), flags=re.MULTILINE)
    assert match, f"the Makefile does not set {name}"
    return match.group(1).strip()


def make_targets(line: str) -> list[str]:
    """The targets of a ``make`` command line (after any VAR=value prefixes), or []."""
    words = [w for w in line.split("#")[0].split() if "=" not in w]
    return words[1:] if words[:1] == ["make"] else []


def is_make(line: str, target: str) -> bool:
    return target in make_targets(line)


def not_run(line: str) -> bool:
    """A suite, a benchmark or a screenshot run: checked, not run from inside the suite."""
    targets = make_targets(line)
    skipped = [t for t in targets if t == "test" or t.startswith("test-") or t in ("bench", "screenshots")]
    return bool(skipped) or "pytest" in line.split("#")[0]


def check_not_run(line: str) -> None:
    """What the README says of it holds: its targets exist, ``make test`` runs the whole suite."""
    for target in make_targets(line):
        make_recipe(target)
    if is_make(line, "test"):
        check_make_test()
    for path in re.findall(r"\b(tests/[\w/.]+)", line):
        assert (ROOT / path).exists(), f"the README names {path}, which does not exist"
    suite = "\n".join(path.read_text() for path in (ROOT / "tests").rglob("*.py"))
    for name in re.findall(r"\b([A-Z][A-Z0-9_]+)=", line):
        assert name in suite, f"the README sets {name}, which the suite does not read"


def check_make_test() -> None:
    """``make test`` installs first, then runs ruff, mypy and the whole suite."""
    prerequisites, recipe = make_recipe("test")
    assert "$(STAMP)" in prerequisites, "make test must create or update .venv first"
    suite = [step for step in recipe if "pytest" in step]
    assert suite and not re.search(r"pytest\S*\s+(-q\s+)?tests/", suite[0]), "make test runs the whole suite"
    assert any("mypy" in step for step in recipe) and any("ruff check" in step for step in recipe)


def steps(block: list[str]) -> list[tuple[str, list[str]]]:
    """A block as its steps in order: ``make run``, a line checked and not run, or shell lines."""
    out: list[tuple[str, list[str]]] = []
    for line in block:
        kind = "serve" if is_make(line, "run") else "check" if not_run(line) else "sh"
        if kind == "sh" and out and out[-1][0] == "sh":
            out[-1][1].append(line)
        else:
            out.append((kind, [line]))
    return out


def start_server(env: dict[str, str], log: Path) -> ServerProcess:
    """``make run``'s own command, on a free port."""
    _, recipe = make_recipe("run")
    assert recipe == ["$(BIN)/offboard serve"], f"make run no longer runs `offboard serve`: {recipe}"
    return ServerProcess(env, log=log).start()


def settle(url: str, timeout: float = 30) -> None:
    """Wait until the server's worker has handled every event and every action due now."""
    store = Store.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            due = utcnow() + timedelta(seconds=1)
            with store.session() as session:
                events = session.scalar(
                    select(func.count()).select_from(Event).where(Event.state.in_(["pending", "running"]))
                )
                actions = session.scalar(
                    select(func.count())
                    .select_from(Action)
                    .where(Action.state.in_(["pending", "running"]), Action.due_at <= due)
                )
            if not events and not actions:
                return
            time.sleep(0.2)
    finally:
        store.dispose()
    raise AssertionError(f"the server's worker did not settle within {timeout}s")


def run_script(lines: list[str], env: dict[str, str], server: ServerProcess) -> str:
    script = "\n".join(lines).replace(README_PORT, f"127.0.0.1:{server.port}")
    script = re.sub(r"^make ", f"make -o {STAMP} ", script, flags=re.MULTILINE)
    result = subprocess.run(
        ["bash", "-e", "-o", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"README commands failed (exit {result.returncode}):\n{script}\n--- stdout\n{result.stdout[-3000:]}"
        f"\n--- stderr\n{result.stderr[-3000:]}\n--- server log\n{server.log.read_text()[-2000:]}"
    )
    return result.stdout


def test_every_command_in_the_readme_works_in_order(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'offboard.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OFFBOARD_")},
        "OFFBOARD_DATABASE_URL": db_url,
        "OFFBOARD_CONFIG": str(tmp_path / "no-such-offboard.toml"),
        "OFFBOARD_WORKER_POLL_SECONDS": "0.2",
    }
    server_env = {**env, "OFFBOARD_WEBHOOK_SECRET": makefile_variable("OFFBOARD_WEBHOOK_SECRET")}
    blocks = sh_blocks(README.read_text())
    assert blocks[0][:2] and is_make(blocks[0][0], "run") and is_make(blocks[0][1], "test"), (
        "the README opens with make run and make test"
    )
    server: ServerProcess | None = None
    outputs: list[str] = []
    try:
        for block in blocks:
            for kind, lines in steps(block):
                if kind == "serve":
                    server = start_server(server_env, tmp_path / "server.log")
                elif kind == "check":
                    check_not_run(lines[0])
                else:
                    assert server is not None, f"a README command comes before `make run`: {lines}"
                    outputs.append(run_script(lines, {**env, "OFFBOARD_PUBLIC_URL": server.url}, server))
                    settle(db_url)
    finally:
        if server is not None:
            server.stop()
    assert_the_readme_story_happened(db_url, "\n".join(outputs))


def assert_the_readme_story_happened(db_url: str, output: str) -> None:
    """What the README promises the commands do, read from the database they used."""
    store = Store.from_url(db_url)
    try:
        with store.session() as session:
            runs = {(r.deal_id, r.playbook_id) for r in session.scalars(select(Run))}
    finally:
        store.dispose()
    assert ("D-42", "completed-project") in runs  # the curl sample
    assert any(deal.startswith("DEMO-") for deal, _ in runs)  # make demo, through the server
    assert {("D-101", "contract-ending"), ("D-102", "contract-ending")} <= runs  # seed, then sweep
    assert "Sent to the connector at http://127.0.0.1:" in output
