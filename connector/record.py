"""The offboarding record: every step of a finished run, who did it and when, planned against
actual, the evidence and the survey answers — written to the deal as a note and as a file an
auditor can download from the CRM (GDPR Art. 28(3)(g), SOC 2, ISO 27001 ask for this proof).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from connector.models import Deal, RecordSpec
from connector.playbooks.model import Playbook

RECORD_STEP = "record"


@dataclass(frozen=True)
class Line:
    """One step of the run as the record lists it."""

    step_id: str
    kind: str
    title: str
    state: str  # completed, skipped, cancelled, done, failed, not started…
    owner: str | None = None
    planned: datetime | None = None
    done_at: datetime | None = None
    done_by: str | None = None
    evidence: str | None = None
    note: str | None = None  # why it was skipped, a survey's answer…


def record_for(
    deal: Deal,
    playbook: Playbook,
    lines: Sequence[Line],
    *,
    started: datetime,
    finished: datetime,
    zone: ZoneInfo,
) -> RecordSpec:
    """The record of a finished run: a short note body and the full Markdown file."""
    company = deal.company.name if deal.company else deal.name
    title = f"Offboarding record: {company}"
    day = _day(zone)
    head = [
        f"# {title}",
        "",
        f"- Deal: {deal.name} ({deal.crm} {deal.id})",
        f"- Playbook: {playbook.name} ({playbook.id}@{playbook.version})",
        f"- Started: {day(started)}; finished: {day(finished)}",
        f"- Contract end: {deal.contract_end.isoformat() if deal.contract_end else 'not set'}",
        "",
        "| step | what | state | owner | planned | done | by | evidence / note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = [
        f"| {ln.step_id} | {_cell(ln.title)} | {ln.state} | {ln.owner or ''} | {day(ln.planned)} | "
        f"{day(ln.done_at)} | {ln.done_by or ''} | {_cell(ln.evidence or ln.note or '')} |"
        for ln in lines
    ]
    content = "\n".join(head + rows) + "\n"
    summary = [title, f"Playbook {playbook.id}@{playbook.version}, finished {day(finished)}.", ""]
    summary += [
        f"- {ln.step_id}: {ln.state}"
        + (f" by {ln.done_by}" if ln.done_by else "")
        + (f" on {day(ln.done_at)}" if ln.done_at else "")
        + (f" (planned {day(ln.planned)})" if ln.planned and ln.kind == "task" else "")
        + (f"; evidence: {ln.evidence}" if ln.evidence else "")
        + (f"; {ln.note}" if ln.note and not ln.evidence else "")
        for ln in lines
    ]
    filename = f"offboarding-record-{deal.crm}-{deal.id}.md"
    summary += ["", f"The full record is attached: {filename}"]
    return RecordSpec(
        step_id=RECORD_STEP,
        deal_id=deal.id,
        title=title,
        body="\n".join(summary),
        filename=filename,
        content=content,
    )


def _day(zone: ZoneInfo):  # type: ignore[no-untyped-def]
    def day(moment: datetime | None) -> str:
        return moment.astimezone(zone).date().isoformat() if moment else ""

    return day


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell: one line, no column breaks."""
    return " ".join(text.replace("|", "/").split())[:300]
