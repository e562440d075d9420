"""The playbook registry: strict at start-up, lenient on request, per-file last good versions,
and reloads that never make a caller wait."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from connector.errors import PlaybookError
from connector.playbooks import registry as registry_module
from connector.playbooks.registry import PlaybookRegistry


def book(playbook_id: str, title: str = "Confirm", priority: int = 0) -> str:
    return (
        f"id: {playbook_id}\nname: {playbook_id}\nversion: 1\npriority: {priority}\n"
        f"steps:\n  - id: a\n    task: {{title: {title!r}}}\n"
    )


BROKEN = "id: broken\nname: Broken\nversion: 1\nsteps:\n  - id: a\n    task: {title: '{{ client.name }}'}\n"


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time() + 5  # a different modification time, even on coarse file systems
    os.utime(path, (stamp, stamp))


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "good.yaml").write_text(book("good"))
    return tmp_path


def test_strict_is_the_default_and_refuses_a_broken_file(folder):
    (folder / "broken.yaml").write_text(BROKEN)
    with pytest.raises(PlaybookError) as refused:
        PlaybookRegistry(folder)
    assert f"{folder / 'broken.yaml'}: steps[0].task.title: template error:" in str(refused.value)


def test_lenient_loads_what_loads_and_names_the_broken_files(folder):
    (folder / "broken.yaml").write_text(BROKEN)
    found = PlaybookRegistry(folder, strict=False)
    assert [p.id for p in found.current()] == ["good"]
    (problem,) = found.problems
    assert problem.startswith(f"{folder / 'broken.yaml'}: steps[0].task.title: template error:")
    assert found.last_error == problem


def test_lenient_with_no_playbook_at_all_still_refuses(tmp_path):
    with pytest.raises(PlaybookError, match="no playbook files"):
        PlaybookRegistry(tmp_path, strict=False)


def test_lenient_keeps_the_first_of_two_files_with_one_id(folder):
    (folder / "zz-copy.yaml").write_text(book("good", priority=5))
    found = PlaybookRegistry(folder, strict=False)
    assert [p.path for p in found.current()] == [str(folder / "good.yaml")]
    assert found.problems == [
        f"{folder / 'zz-copy.yaml'}: id: 'good' is also the id of {folder / 'good.yaml'}"
    ]


def test_a_file_broken_on_reload_keeps_its_last_good_version(folder):
    (folder / "other.yaml").write_text(book("other", priority=1))
    found = PlaybookRegistry(folder)
    touch(
        folder / "good.yaml", book("good", title="Edited").replace("version: 1", "version: 2") + "colour: x\n"
    )
    touch(folder / "other.yaml", book("other", title="New title", priority=1))
    found.reload()
    by_id = {p.id: p for p in found.current()}
    assert by_id["good"].playbook.steps[0].task.title == "Confirm"  # the last good version
    assert by_id["other"].playbook.steps[0].task.title == "New title"  # the good edit is taken
    assert found.problems and found.problems[0].startswith(f"{folder / 'good.yaml'}: colour: unknown key")
    found.reload()  # nothing changed: the problem is still reported
    assert found.problems and found.problems[0].startswith(f"{folder / 'good.yaml'}: colour:")
    touch(folder / "good.yaml", book("good", title="Fixed"))
    found.reload()
    assert {p.id: p.playbook.steps[0].task.title for p in found.current()}["good"] == "Fixed"
    assert found.problems == [] and found.last_error is None


def test_current_answers_while_a_slow_reload_runs(folder, monkeypatch):
    found = PlaybookRegistry(folder, check_every=0)
    release, entered = threading.Event(), threading.Event()
    real = registry_module.load_file

    def slow_load(path):
        entered.set()
        release.wait(30)
        return real(path)

    monkeypatch.setattr(registry_module, "load_file", slow_load)
    touch(folder / "good.yaml", book("good", title="Edited"))
    try:
        assert [p.id for p in found.current()] == ["good"]  # starts the reload in the background
        assert entered.wait(5), "the reload did not start"
        started = time.monotonic()
        for _ in range(20):
            assert found.current()[0].playbook.steps[0].task.title == "Confirm"
            assert (
                found()[0].playbook.steps[0].task.title == "Confirm"
            )  # the worker's path does not wait either
        assert time.monotonic() - started < 1
    finally:
        release.set()
    deadline = time.monotonic() + 5
    while found.current()[0].playbook.steps[0].task.title != "Edited" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert found.current()[0].playbook.steps[0].task.title == "Edited"


def test_the_worker_path_sees_an_edit_at_once(folder):
    found = PlaybookRegistry(folder, check_every=0)
    touch(folder / "good.yaml", book("good", title="Edited"))
    assert found()[0].playbook.steps[0].task.title == "Edited"


def test_readyz_and_webhooks_answer_while_a_reload_is_stuck(client, services, monkeypatch, tmp_path):
    import shutil

    from tests.support.helpers import deal_closed_event, signed

    folder = tmp_path / "books"
    shutil.copytree(services.settings.playbooks, folder)
    services.playbooks.folder = folder
    services.playbooks.reload()
    services.playbooks.check_every = 0
    release, entered = threading.Event(), threading.Event()

    def stuck(path):
        entered.set()
        release.wait(30)
        raise PlaybookError([f"{path}: gave up"])

    monkeypatch.setattr(registry_module, "load_file", stuck)
    touch(folder / "fallback.yaml", (folder / "fallback.yaml").read_text() + "\n")
    try:
        started = time.monotonic()
        assert client.get("/readyz").status_code == 200  # starts the reload in the background
        assert entered.wait(5), "the reload did not start"
        assert client.get("/readyz").get_json()["playbooks"] == 5
        body, headers = signed(deal_closed_event())
        assert client.post("/webhooks/generic", data=body, headers=headers).status_code == 202
        assert time.monotonic() - started < 5
    finally:
        release.set()


def test_playbooks_list_shows_what_loads_and_what_does_not(folder):
    from click.testing import CliRunner

    from connector.cli import main

    (folder / "broken.yaml").write_text(BROKEN)
    result = CliRunner().invoke(main, ["playbooks", "list", "--playbooks", str(folder)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"good v1  'good'  priority 0, 1 steps  {folder / 'good.yaml'}"
    assert lines[1] == "not loaded:"
    assert lines[2].startswith(f"  {folder / 'broken.yaml'}: steps[0].task.title: template error:")
    (folder / "broken.yaml").unlink()
    assert CliRunner().invoke(main, ["playbooks", "list", "--playbooks", str(folder)]).exit_code == 0
