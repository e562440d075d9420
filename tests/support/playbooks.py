"""Playbooks the tests write for themselves, where the bundled ones would wait calendar days."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

EXIT_NPS_REFERRAL = "exit-nps-referral"

_HEADER = f"""\
id: {EXIT_NPS_REFERRAL}
name: Exit NPS and referral
version: 1
tone: celebratory
match: {{}}
anchor: run_start
steps:
  - id: exit-nps
    survey: {{kind: nps}}
"""

_DETRACTOR_CALL = """\
  - id: detractor-call
    task: {title: "Call {{ contact.first_name }} about their score", after: exit-nps,
           when: {score: {lte: 6}}, due: +1bd, type: call, priority: high}
"""


def exit_nps_referral(
    folder: Path,
    *,
    ask: Sequence[str] = ("referral", "testimonial"),
    more_surveys: Sequence[str] = (),
    detractor_call: bool = False,
) -> Path:
    """Write the exit-NPS + referral playbook into ``folder`` and return the folder.

    Every step is due when the run starts, so a test need not move the clock: the exit NPS
    goes out at once, and a promoter (9 or 10) is asked at once for what ``ask`` names.
    ``more_surveys`` (csat, ces) are sent alongside the NPS; ``detractor_call`` adds a call
    task for the owner when the score is 6 or less. Any deal matches it.
    """
    text = _HEADER + "".join(f"  - id: exit-{kind}\n    survey: {{kind: {kind}}}\n" for kind in more_surveys)
    text += "  - id: referral-ask\n"
    text += f"    referral: {{after: exit-nps, when: {{score: {{gte: 9}}}}, ask: [{', '.join(ask)}]}}\n"
    if detractor_call:
        text += _DETRACTOR_CALL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{EXIT_NPS_REFERRAL}.yaml").write_text(text)
    return folder


# The live checklist's test playbook: a transfer and an invoice at the start, the revocation after
# the transfer (both need evidence), the thank-you after the revocation and the invoice, and the
# invoice escalated when two business days overdue.
LIVE_CHECKLIST = """\
id: live-checklist
name: Live checklist
version: 1
match: {}
anchor: close_date
steps:
  - id: transfer-data
    task: {title: "Transfer {{ company.name }}'s data", due: +1bd, evidence: required}
  - id: final-invoice
    task: {title: "Send the final invoice", due: +1bd, owner: "role:finance",
           escalate: {overdue: 2bd, to: "role:manager"}}
  - id: revoke-access
    task: {title: "Revoke access", after: transfer-data, due: +1bd, owner: "role:it",
           evidence: required}
  - id: thank-you
    task: {title: "Thank Pat", after: [revoke-access, final-invoice], due: +1bd}
"""
ROLES = {"finance": "finance-1", "manager": "manager-1", "it": "it-1"}  # LIVE_CHECKLIST's owners
