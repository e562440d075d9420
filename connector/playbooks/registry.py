"""The playbooks a running connector uses, reloaded when their files change.

A reload never runs in the caller's thread: ``current()`` answers at once with
the set in hand and, when the files may have changed, starts a reload in a
background thread. A file that no longer loads keeps its last good version, so
a half-saved file never stops offboarding that is already configured.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from connector.errors import PlaybookError
from connector.playbooks.accounts import AccountPlaybooks
from connector.playbooks.loader import LoadedPlaybook, load_all, load_file, playbook_files, set_problems

log = logging.getLogger("offboard.playbooks")

Signature = tuple[float, int]


class PlaybookRegistry:
    """The deployment's playbooks, from ``folder``.

    ``strict=True`` (the default, for ``offboard validate`` and server start-up):
    the constructor raises ``PlaybookError`` listing every problem when any file
    does not load, so a broken deployment never starts.

    ``strict=False`` (for commands that must work while a file is broken): every
    file that loads is used; ``problems`` holds one line per problem of the files
    that do not (``<file>: <field>: <what is wrong>``), empty when all is well.
    The constructor raises only when the folder has no playbook file at all.

    Either way, later reloads (when a file's time or size changes, checked at
    most every ``check_every`` seconds) keep, per file, the last version that
    loaded; ``problems`` and ``last_error`` then describe what was not taken.
    ``reload()`` reloads at once in the caller's thread (the CLI, tests).

    Reading the set: ``current()`` never waits (request threads: a due check
    runs in a background thread); calling the registry, ``registry()``, is for
    the worker loop: a due check runs in the caller's thread first, so the next
    event sees an edit at once. Neither waits for a reload another thread runs.
    Checking a file's templates is bounded (limits.MAX_FILE_SECONDS), so a
    hostile file costs one bounded check per change, never a pinned worker.

    ``accounts``: the playbooks accounts publish for themselves, which replace the folder's for
    that account's deals (``connector/playbooks/accounts.py``), checked as often.
    """

    def __init__(self, folder: Path, *, strict: bool = True, check_every: float = 2.0) -> None:
        self.folder = folder
        self.check_every = check_every
        self.accounts = AccountPlaybooks(check_every=check_every)
        self.problems: list[str] = []
        self._files: dict[str, LoadedPlaybook] = {}
        self._file_problems: dict[str, list[str]] = {}
        self._signatures: dict[str, Signature] = {}
        self._reloading = threading.Lock()
        self._checked = time.monotonic()
        if strict:
            loaded = load_all([folder])
            self._files = {item.path: item for item in loaded}
            self._signatures = self._stat()
        else:
            if not self._stat():
                raise PlaybookError([f"{folder}: no playbook files (*.yaml) found"])
            self.reload()
        self._loaded = list(self._files.values())

    @property
    def last_error(self) -> str | None:
        """Every current problem, one per line; None when every file loaded."""
        return "\n".join(self.problems) or None

    @property
    def unloaded(self) -> list[str]:
        """The files with no version in use: broken (or clashing) since they appeared.

        A file broken by a later edit keeps its last good version and is not listed. While
        this is not empty no run may start: a deal the missing playbook would have matched
        would get another one, for good.
        """
        files, signatures = self._files, self._signatures
        return [path for path in signatures if path not in files]

    def __call__(self) -> list[LoadedPlaybook]:
        """For the worker loop: a due check for changes runs here first, unless one is running."""
        if self._due() and self._reloading.acquire(blocking=False):
            self._checked = time.monotonic()
            self._reload_in_background()
        return self._loaded

    def current(self) -> list[LoadedPlaybook]:
        """The playbooks in use, at once; a due check for changes runs in a background thread.

        For request threads (health checks, pages): never waits on a reload.
        """
        if self._due() and self._reloading.acquire(blocking=False):
            self._checked = time.monotonic()
            threading.Thread(target=self._reload_in_background, name="playbook-reload", daemon=True).start()
        return self._loaded

    def _due(self) -> bool:
        return time.monotonic() - self._checked >= self.check_every

    def _reload_in_background(self) -> None:
        """Reload with the lock already held; release it when done, whatever happens."""
        try:
            self._reload()
        except Exception:  # a reload must never take the process down; the last set stays
            log.exception("playbooks not reloaded")
        finally:
            self._reloading.release()

    def reload(self) -> None:
        """Load what changed now, in this thread."""
        with self._reloading:
            self._reload()

    def _reload(self) -> None:
        signatures = self._stat()
        if signatures == self._signatures and (self._files or self._file_problems):
            return
        files = self._load_changed(signatures)
        clashes = set_problems(list(files.values()))
        for line in clashes:  # the later of two clashing files is not taken (its last good version is)
            path = next((p for p in files if line.startswith(f"{p}: ")), None)
            if path is not None and path in self._files and self._files[path] is not files[path]:
                files[path] = self._files[path]
            elif path is not None:
                del files[path]
        problems = [line for path in signatures for line in self._file_problems.get(path, [])] + clashes
        self._files, self._signatures, self.problems = files, signatures, problems
        self._loaded = list(files.values())
        if problems:
            log.error("playbooks not loaded, keeping their last good version:\n%s", "\n".join(problems))
        else:
            log.info("playbooks loaded: %s", ", ".join(item.id for item in self._loaded))

    def _load_changed(self, signatures: dict[str, Signature]) -> dict[str, LoadedPlaybook]:
        """Each file: its new version, its last good one when it no longer loads, or none."""
        files: dict[str, LoadedPlaybook] = {}
        for path, signature in signatures.items():
            unchanged = self._signatures.get(path) == signature
            if unchanged and (path in self._files or path in self._file_problems):
                if path in self._files:
                    files[path] = self._files[path]
                continue
            self._file_problems.pop(path, None)
            try:
                files[path] = load_file(Path(path))
            except PlaybookError as exc:
                self._file_problems[path] = exc.problems
                if path in self._files:
                    files[path] = self._files[path]
        return files

    def _stat(self) -> dict[str, Signature]:
        found = {}
        for path in playbook_files([self.folder]) if self.folder.is_dir() else []:
            try:
                stat = path.stat()
            except OSError:
                continue  # removed while we looked
            found[str(path)] = (stat.st_mtime, stat.st_size)
        return found
