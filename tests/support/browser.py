"""Headless Chromium for page tests and screenshots: Debian's chromium, driven by Playwright.

Nothing is downloaded: Playwright's own browser builds are not used. Tests skip
with a clear reason when no Chromium is installed, unless
``OFFBOARD_TEST_REQUIRE_BROWSER=1`` (CI), where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
# Without these, Chromium tries to reach the network at start-up, which this machine refuses.
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str | None:
    found = os.environ.get("OFFBOARD_CHROMIUM") or next((p for p in CANDIDATES if os.path.exists(p)), None)
    return found or shutil.which("chromium")


def require_browser() -> str:
    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        message = "no Chromium (apt-get install chromium) or no playwright package: browser tests skipped"
        if os.environ.get("OFFBOARD_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


@contextmanager
def browser(path: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield instance
        finally:
            instance.close()
