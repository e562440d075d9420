"""The feedback loop's dates and links, as the bundled playbooks and the sandbox CRM make them."""

from __future__ import annotations

from datetime import UTC, datetime

SURVEY_DAY = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)  # exit-nps: +1d from the 2026-12-31 end


def path_of(link: str) -> str:
    """The path of a personal link, for the test client (which has no host)."""
    return "/" + link.split("/", 3)[3]
