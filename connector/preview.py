"""``offboard plan``: which playbook a deal gets, why the others do not, and its timeline.

Nothing here writes: it calls the same ``choose`` and ``plan`` the worker uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from connector.models import Deal
from connector.planner import Plan, PlanContext, PlannedStep, Verdict, choose, plan
from connector.playbooks.loader import LoadedPlaybook


@dataclass(frozen=True)
class Preview:
    deal: Deal
    trigger: str
    chosen: LoadedPlaybook | None
    verdicts: list[Verdict]
    plan: Plan | None

    def as_json(self) -> dict[str, Any]:
        return {
            "deal": self.deal.model_dump(mode="json"),
            "trigger": self.trigger,
            "playbook": _playbook_json(self.chosen) if self.chosen else None,
            "anchor": self._anchor_json(),
            "others": [
                {"id": v.playbook.id, "matches": v.matches, "why_not": self._why_not(v)}
                for v in self.verdicts
                if v.playbook is not self.chosen
            ],
            "timeline": [_step_json(s) for s in self.plan.steps if not s.conditional] if self.plan else [],
            "conditional": [_step_json(s) for s in self.plan.steps if s.conditional] if self.plan else [],
        }

    def _anchor_json(self) -> dict[str, Any] | None:
        if self.plan is None:
            return None
        return {
            "date": self.plan.anchor.isoformat(),
            "kind": self.plan.anchor_kind,
            "note": self.plan.anchor_note,
        }

    def _why_not(self, verdict: Verdict) -> list[str]:
        if verdict.matches and self.chosen is not None:
            return [
                f"matches too, but {self.chosen.id} wins on priority "
                f"({self.chosen.playbook.priority} vs {verdict.playbook.playbook.priority})"
            ]
        return verdict.reasons

    def as_text(self) -> str:
        lines = [_deal_line(self.deal), ""]
        if self.chosen is None or self.plan is None:
            lines.append(f"No playbook matches this deal ({self.trigger.replace('_', ' ')}).")
        else:
            lines += _chosen_lines(self.chosen, self.plan)
        others = [(v, self._why_not(v)) for v in self.verdicts if v.playbook is not self.chosen]
        if others:
            lines += ["", "Not chosen:"]
            lines += [f"  {v.playbook.id}: {'; '.join(why)}" for v, why in others]
        if self.plan is not None:
            lines += ["", "Timeline:", *_timeline(self.plan)]
            waiting = [s for s in self.plan.steps if s.conditional]
            if waiting:
                lines += ["", "Waiting on an answer:"]
                lines += [
                    f"  {s.kind:<9} {s.title}  ({'; '.join(n for n in (s.condition, s.owner_note) if n)})"
                    for s in waiting
                ]
        return "\n".join(lines)


def preview(deal: Deal, playbooks: list[LoadedPlaybook], ctx: PlanContext, *, trigger: str) -> Preview:
    chosen, verdicts = choose(deal, playbooks, trigger=trigger, today=ctx.today)
    laid_out = plan(deal, chosen.playbook, ctx) if chosen else None
    return Preview(deal, trigger, chosen, verdicts, laid_out)


def _deal_line(deal: Deal) -> str:
    facts = [deal.crm, deal.outcome or "open", deal.contract_type or "no contract type"]
    if deal.close_date:
        facts.append(f"closed {deal.close_date}")
    if deal.contract_end:
        facts.append(f"contract ends {deal.contract_end}")
    return f"Deal {deal.id} {deal.name!r} ({', '.join(facts)})"


def _chosen_lines(chosen: LoadedPlaybook, laid_out: Plan) -> list[str]:
    book = chosen.playbook
    anchor = f"anchor: {laid_out.anchor_kind.replace('_', ' ')} {laid_out.anchor}"
    if laid_out.anchor_note:
        anchor += f" ({laid_out.anchor_note})"
    return [
        f"Playbook: {book.id} v{book.version} {book.name!r} "
        f"(priority {book.priority}, tone {book.tone}, {chosen.path})",
        f"  {anchor}",
    ]


def _timeline(laid_out: Plan) -> list[str]:
    steps = sorted((s for s in laid_out.steps if not s.conditional), key=lambda s: (s.due_at, s.step_id))
    return [_timeline_line(s) for s in steps if s.due_at is not None]


def _timeline_line(step: PlannedStep) -> str:
    """One step of the timeline, with why it is not where the playbook put it."""
    line = f"  {step.due_at:%Y-%m-%d %a %H:%M} UTC  {step.kind:<9} {step.owner_id or '-':<12} {step.title}"
    notes = [note for note in (step.late_note, step.owner_note) if note]
    return f"{line}  ({'; '.join(notes)})" if notes else line


def _playbook_json(loaded: LoadedPlaybook) -> dict[str, Any]:
    book = loaded.playbook
    return {
        "id": book.id,
        "version": book.version,
        "name": book.name,
        "path": loaded.path,
        "hash": loaded.hash,
    }


def _step_json(step: Any) -> dict[str, Any]:
    return {
        "step": step.step_id,
        "kind": step.kind,
        "due_at": step.due_at.isoformat() if step.due_at else None,
        "owner": step.owner_id,
        "title": step.title,
        "body": step.body,
        "condition": step.condition,
        "was_due": step.was_due.isoformat() if step.was_due else None,
        "owner_note": step.owner_note,
        "detail": step.detail,
    }
