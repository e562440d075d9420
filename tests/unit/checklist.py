"""The seeds' fifteen-line checklist, and the table in docs/playbooks.md that maps it to playbook steps."""

from __future__ import annotations

from connector.playbooks.loader import LoadedPlaybook

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

# Lines whose steps the client sees before the goodbye; 15 comes after it on purpose.
CLIENT_FACING = {1, 3, 4, 5, 8, 9, 10, 11, 12}
FULL_PLAYBOOKS = ("completed-project", "terminated-contract", "churned-subscription", "contract-ending")


def coverage_table(playbooks: list[LoadedPlaybook]) -> str:
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
