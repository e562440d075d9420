"""The offboarding checklist, and the table in docs/playbooks.md that maps it to playbook steps.

Each step says which checklist lines it covers (``covers: [5, 6]``). The table is
generated from those, never edited by hand: ``offboard playbooks coverage --write``
rewrites it between its two markers.
"""

from __future__ import annotations

from connector.playbooks.loader import LoadedPlaybook

# The seeds' fifteen lines: what a complete offboarding contains.
CHECKLIST = {
    1: "Notify everyone involved; confirm the end date",
    2: "Review contractual obligations; close out deliverables",
    3: "Offboarding meeting",
    4: "Final invoice; outstanding payments; disputes",
    5: "Data and asset transfer, backed up first",
    6: "Access revocation, right after transfer",
    7: "Data deletion or archival",
    8: "Knowledge transfer and training",
    9: "Project summary",
    10: "Feedback survey; address final concerns",
    11: "Testimonial, case study, referral ask (happy clients)",
    12: "Offer future work; make referring easy",
    13: "Lessons learned, internally",
    14: "Personal thank-you / goodbye (last client-facing step)",
    15: "Follow-up check-in weeks later",
}

START_MARKER = "<!-- coverage table"
END_MARKER = "<!-- end coverage table -->"
COMMAND = "offboard playbooks coverage --write"


def coverage_table(playbooks: list[LoadedPlaybook]) -> str:
    """A Markdown table: one row per checklist line, one column per playbook (the fallback last)."""
    books = sorted(playbooks, key=lambda p: (p.id == "fallback", p.id))
    header = "| # | checklist line | " + " | ".join(f"`{p.id}`" for p in books) + " |"
    rule = "|---|---|" + "---|" * len(books)
    rows = [header, rule]
    for number, text in CHECKLIST.items():
        cells = []
        for book in books:
            steps = [s.id for s in book.playbook.steps if number in s.covers]
            cells.append(", ".join(f"`{s}`" for s in steps) or "—")
        rows.append(f"| {number} | {text} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _span(document: str) -> tuple[int, int]:
    """Where the table sits in ``document``: after the start marker's line, before the end marker."""
    try:
        opening = document.index(START_MARKER)
        start = document.index("-->\n", opening) + len("-->\n")
        end = document.index(END_MARKER, start)
    except ValueError:
        raise ValueError(f"no '{START_MARKER} … -->' and '{END_MARKER}' markers around the table") from None
    return start, end


def table_in(document: str) -> str:
    """The table currently between the markers."""
    start, end = _span(document)
    return document[start:end].strip()


def with_table(document: str, table: str) -> str:
    """``document`` with the text between the markers replaced by ``table``."""
    start, end = _span(document)
    return document[:start] + table + "\n" + document[end:]
