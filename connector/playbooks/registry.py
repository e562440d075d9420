"""The playbooks a running connector uses, reloaded when their files change.

A reload that fails keeps the last good set and logs every problem, so a
half-saved file never stops offboarding that is already configured.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from connector.errors import PlaybookError
from connector.playbooks.loader import LoadedPlaybook, load_all, playbook_files

log = logging.getLogger("offboard.playbooks")


class PlaybookRegistry:
    def __init__(self, folder: Path, *, check_every: float = 2.0) -> None:
        self.folder = folder
        self.check_every = check_every
        self._lock = threading.Lock()
        self._loaded: list[LoadedPlaybook] = load_all([folder])
        self._signature = self._stat()
        self._checked = time.monotonic()
        self.last_error: str | None = None

    def __call__(self) -> list[LoadedPlaybook]:
        return self.current()

    def current(self) -> list[LoadedPlaybook]:
        if time.monotonic() - self._checked >= self.check_every:
            self._maybe_reload()
        return self._loaded

    def _maybe_reload(self) -> None:
        with self._lock:
            self._checked = time.monotonic()
            signature = self._stat()
            if signature == self._signature:
                return
            self._signature = signature
            try:
                self._loaded = load_all([self.folder])
                self.last_error = None
                log.info("playbooks reloaded: %s", ", ".join(p.id for p in self._loaded))
            except PlaybookError as exc:
                self.last_error = str(exc)
                log.error("playbooks not reloaded, keeping the last good set:\n%s", exc)

    def _stat(self) -> tuple[tuple[str, float, int], ...]:
        files = playbook_files([self.folder]) if self.folder.is_dir() else []
        return tuple((str(p), p.stat().st_mtime, p.stat().st_size) for p in files if p.exists())
