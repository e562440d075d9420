"""Choose the playbook for a deal, and lay its steps out in time.

Pure functions of (deal, playbooks, settings, now): ``offboard plan`` shows
exactly what the worker will write, because both call this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from jinja2 import TemplateError

from connector.errors import PlaybookError
from connector.models import Deal
from connector.playbooks import graph, templates
from connector.playbooks.loader import LoadedPlaybook
from connector.playbooks.model import Match, Playbook, Range, Step, ToneText
from connector.playbooks.offsets import Offset, add_business_days
from connector.settings import Settings

if TYPE_CHECKING:
    from connector.connections import AccountSettings

# Tasks and sends land at this local time of day on their due date.
WORKDAY_START = time(9, 0)
# Steps whose time has passed go out now, this far apart, so they keep their order.
LATE_SPACING = timedelta(minutes=1)


@dataclass(frozen=True)
class Verdict:
    playbook: LoadedPlaybook
    matches: bool
    reasons: list[str]


def choose(
    deal: Deal, playbooks: list[LoadedPlaybook], *, trigger: str = "deal_closed", today: date | None = None
) -> tuple[LoadedPlaybook | None, list[Verdict]]:
    """The matching playbook with the highest priority (ties: the more specific, then id)."""
    verdicts = [judge(deal, item, trigger=trigger, today=today) for item in playbooks]
    candidates = [v.playbook for v in verdicts if v.matches]
    if not candidates:
        return None, verdicts
    best = max(candidates, key=lambda p: (p.playbook.priority, _specificity(p.playbook.match), _neg(p.id)))
    return best, verdicts


def _neg(text: str) -> tuple[int, ...]:
    return tuple(-ord(c) for c in text)


def _specificity(match: Match) -> int:
    return sum(1 for value in match.model_dump(exclude_none=True).values() if value)


def judge(
    deal: Deal, item: LoadedPlaybook, *, trigger: str = "deal_closed", today: date | None = None
) -> Verdict:
    """Whether ``item`` matches ``deal``, and every reason it does not."""
    playbook = item.playbook
    reasons = mismatches(deal, playbook.match)
    if trigger == "deal_closed" and not playbook.trigger.deal_closed:
        reasons.append("trigger: starts only on contract end, not on deal close")
    if trigger == "contract_end":
        reasons.extend(_contract_end_reasons(deal, playbook, today))
    return Verdict(item, not reasons, reasons)


def _contract_end_reasons(deal: Deal, playbook: Playbook, today: date | None) -> list[str]:
    rule = playbook.trigger.contract_end
    if rule is None:
        return ["trigger: has no contract_end trigger"]
    if deal.contract_end is None:
        return ["trigger: the deal has no contract end date"]
    if today is not None:
        horizon = rule.lead.apply(today)
        if deal.contract_end > horizon:
            return [
                f"trigger: contract ends {deal.contract_end}, after the lead time ({rule.lead}: {horizon})"
            ]
        if deal.contract_end < today:
            return [f"trigger: contract already ended on {deal.contract_end}"]
    return []


def sweep_horizon(playbooks: list[LoadedPlaybook], today: date) -> date | None:
    """The furthest contract end any contract-end trigger looks at, or None if none has one."""
    leads = [p.playbook.trigger.contract_end.lead for p in playbooks if p.playbook.trigger.contract_end]
    return max((lead.apply(today) for lead in leads), default=None)


def mismatches(deal: Deal, match: Match) -> list[str]:
    reasons = []
    checks: list[tuple[str, list[str] | None, Any]] = [
        ("outcome", list(match.outcome) if match.outcome else None, deal.outcome),
        ("contract_type", match.contract_type, deal.contract_type),
        ("pipeline", match.pipeline, deal.pipeline),
        ("stage", match.stage, deal.stage),
        ("crm", list(match.crm) if match.crm else None, deal.crm),
    ]
    for name, allowed, value in checks:
        if allowed is not None and not _in(value, allowed):
            reasons.append(f"{name}: {value!r} is not one of {allowed}")
    if match.amount is not None and not match.amount.holds(deal.amount):
        reasons.append(f"amount: {deal.amount} does not satisfy {_range(match.amount)}")
    for key, condition in match.fields.items():
        value = deal.properties.get(key)
        if isinstance(condition, Range):
            ok = _number(value) is not None and condition.holds(_number(value))
            wanted = _range(condition)
        else:
            ok = _in(value, condition)
            wanted = f"one of {condition}"
        if not ok:
            reasons.append(f"fields.{key}: {value!r} is not {wanted}")
    return reasons


def _in(value: Any, allowed: list[str]) -> bool:
    return value is not None and str(value).casefold() in {a.casefold() for a in allowed}


def _number(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except ArithmeticError:
        return None


def _range(condition: Range) -> str:
    symbols = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
    parts = [f"{symbols[k]} {v}" for k, v in condition.model_dump(exclude_none=True).items()]
    return " and ".join(parts)


@dataclass(frozen=True)
class PlannedStep:
    """One step laid out for one deal: what it writes, when, for whom."""

    step_id: str
    kind: str
    due_at: datetime | None
    owner_id: str | None
    title: str
    body: str
    detail: dict[str, Any] = field(default_factory=dict)
    condition: str | None = None
    # When the step's time had already passed: when it was due (it goes out now instead).
    was_due: datetime | None = None
    # How the owner was found, when that is not what the playbook says (a role with no mapping).
    owner_note: str | None = None

    @property
    def late_note(self) -> str | None:
        return f"was due {self.was_due:%a %d %b}, goes out now" if self.was_due else None

    @property
    def conditional(self) -> bool:
        return self.condition is not None


@dataclass(frozen=True)
class Plan:
    playbook: Playbook
    anchor: date
    anchor_kind: str
    anchor_note: str | None
    steps: list[PlannedStep]


@dataclass(frozen=True)
class PlanContext:
    """What laying out a plan needs besides the deal and the playbook."""

    zone: ZoneInfo
    roles: dict[str, str | dict[str, str]]
    fallback_owner: str | None
    now: datetime

    @property
    def today(self) -> date:
        return self.now.astimezone(self.zone).date()

    @classmethod
    def from_settings(
        cls, settings: Settings, now: datetime, account: AccountSettings | None = None
    ) -> PlanContext:
        """The deployment's roles, fallback owner and time zone, or an installed account's own
        (``account``: already over the deployment's where it sets nothing)."""
        if account is not None:
            return cls(
                zone=ZoneInfo(account.time_zone),
                roles=dict(account.roles),
                fallback_owner=account.fallback_owner,
                now=now,
            )
        return cls(
            zone=settings.zone, roles=dict(settings.roles), fallback_owner=settings.fallback_owner, now=now
        )


def anchor_for(deal: Deal, playbook: Playbook, today: date) -> tuple[date, str, str | None]:
    """The anchor date, which anchor it really is, and a note when it fell back."""
    wanted = playbook.anchor
    if wanted == "contract_end" and deal.contract_end:
        return deal.contract_end, "contract_end", None
    if wanted in ("contract_end", "close_date") and deal.close_date:
        note = (
            "deal has no contract end date; counted from the close date" if wanted == "contract_end" else None
        )
        return deal.close_date, "close_date", note
    note = None if wanted == "run_start" else f"deal has no {wanted.replace('_', ' ')}; counted from today"
    return today, "run_start", note


def plan(deal: Deal, playbook: Playbook, ctx: PlanContext) -> Plan:
    anchor, kind, note = anchor_for(deal, playbook, ctx.today)
    context = templates.deal_context(deal, playbook.model_dump(mode="json"), anchor, ctx.today)
    steps = []
    for step in playbook.steps:
        with _rendering(step, playbook):
            steps.append(_plan_step(step, deal, playbook, anchor, context, ctx))
    return Plan(playbook, anchor, kind, note, goes_out_now(steps, playbook, ctx))


def plan_follow_ups(
    deal: Deal, playbook: Playbook, ctx: PlanContext, steps: list[Step], *, since: datetime | None = None
) -> list[PlannedStep]:
    """Steps whose condition just came true, laid out from the moment it did.

    ``since``: when the last step they wait for was done (a task completed in the CRM); their
    offsets count from that moment's local date, at the start of the working day, and a time
    already past goes out now. Without it (an answer came, a deadline passed): from today.
    """
    anchor = since.astimezone(ctx.zone).date() if since is not None else ctx.today
    context = templates.deal_context(deal, playbook.model_dump(mode="json"), anchor, ctx.today)
    planned = []
    for step in steps:
        with _rendering(step, playbook):
            planned.append(_plan_step(step, deal, playbook, anchor, context, ctx, follow_up=True))
    return goes_out_now(planned, playbook, ctx)


def goes_out_now(steps: list[PlannedStep], playbook: Playbook, ctx: PlanContext) -> list[PlannedStep]:
    """Steps whose time has passed (a backdated deal) go out now, keeping the timeline's order.

    Late steps are re-dated to now, one ``LATE_SPACING`` apart in the order they
    were due (playbook order on ties), and no step is due before one that came
    before it: the thank-you never lands before the survey it follows. A survey's
    answer window then counts from its new send time.
    """
    models = {step.id: step for step in playbook.steps}
    order = sorted(
        (i for i, s in enumerate(steps) if s.due_at is not None),
        key=lambda i: (steps[i].due_at, i),
    )
    laid_out = list(steps)
    cursor = ctx.now
    for index in order:
        step = steps[index]
        assert step.due_at is not None
        if step.due_at >= cursor:
            cursor = step.due_at
            continue
        detail = dict(step.detail)
        if "deadline_at" in detail:
            detail["deadline_at"] = _deadline(models[step.step_id], cursor, playbook, ctx).isoformat()
        was_due = step.due_at if step.due_at < ctx.now else None
        if was_due is not None:
            detail["was_due"] = was_due.isoformat()
        laid_out[index] = replace(step, due_at=cursor, detail=detail, was_due=was_due)
        cursor += LATE_SPACING
    return laid_out


def _plan_step(
    step: Step,
    deal: Deal,
    playbook: Playbook,
    anchor: date,
    context: dict[str, Any],
    ctx: PlanContext,
    *,
    follow_up: bool = False,
) -> PlannedStep:
    condition = None if follow_up else condition_of(step, playbook)
    when = _offset_of(step)
    due_at = None if condition else _due_at(when, playbook, anchor, ctx)
    contact = deal.primary_contact
    detail: dict[str, Any] = {"offset": str(when) if when else "at run start"}
    if step.task is not None:
        task = step.task
        owner, owner_note = owner_for(task.owner, deal, ctx)
        return PlannedStep(
            step.id,
            "task",
            due_at,
            owner,
            _text(task.title, playbook, context),
            _text(task.body, playbook, context),
            {**detail, "priority": task.priority, "type": task.type},
            condition,
            owner_note=owner_note,
        )
    if step.note is not None:
        text = _text(step.note.body, playbook, context)
        return PlannedStep(step.id, "note", due_at, None, _first_line(text), text, detail, condition)
    if step.survey is not None:
        kind = step.survey.kind
        # A reminder's link answers the survey it follows.
        answers = step.survey.reminds or step.id
        detail |= {"survey": kind, "answers": answers, "contact_id": contact.id if contact else None}
        if not follow_up and due_at is not None:
            detail["deadline_at"] = _deadline(step, due_at, playbook, ctx).isoformat()
        name = context["contact"]["name"]
        title = (
            f"Remind {name} about the {kind.upper()} survey"
            if step.survey.reminds
            else f"Send the {kind.upper()} survey to {name}"
        )
        return PlannedStep(step.id, "survey", due_at, None, title, "", detail, condition)
    if step.referral is not None:
        detail |= {"ask": list(step.referral.ask), "contact_id": contact.id if contact else None}
        title = f"Ask {context['contact']['name']} for a {' / '.join(step.referral.ask).replace('_', ' ')}"
        return PlannedStep(step.id, "referral", due_at, None, title, "", detail, condition)
    assert step.property is not None
    values = {name: templates.render(value, context) for name, value in step.property.set.items()}
    detail |= {"object": step.property.object, "set": values}
    title = f"Set {', '.join(f'{k}={v}' for k, v in values.items())} on the {step.property.object}"
    return PlannedStep(step.id, "property", due_at, None, title, "", detail, condition)


def _due_at(when: Offset | None, playbook: Playbook, anchor: date, ctx: PlanContext) -> datetime:
    """``when`` from the anchor, at the start of that working day; now for steps without an offset."""
    if when is None:
        return ctx.now
    day = when.apply(anchor)
    if playbook.weekends == "next_weekday":
        day = add_business_days(day, 0)
    return at_workday_start(day, ctx.zone)


def _deadline(step: Step, sent_at: datetime, playbook: Playbook, ctx: PlanContext) -> datetime:
    assert step.survey is not None
    day = step.survey.deadline.apply(sent_at.astimezone(ctx.zone).date())
    if playbook.weekends == "next_weekday":
        day = add_business_days(day, 0)
    return max(at_workday_start(day, ctx.zone), sent_at)


def _offset_of(step: Step) -> Offset | None:
    """The step's offset from the anchor; None for steps that happen when the run starts."""
    return graph.offset_of(step)


def condition_of(step: Step, playbook: Playbook) -> str | None:
    """What a step waits for, said for ``plan``; None for a step that waits for nothing.

    ``after exit-nps is answered, when score >= 9``; ``after transfer-data is done (+1bd)``;
    ``after a, b are done (+1bd)``; ``after transfer-data is done and exit-nps is answered (+1bd)``.
    """
    body = step.body
    if not step.after_ids:
        return None
    tasks = playbook.tasks_before(step)
    survey = playbook.survey_before(step)
    if not tasks and survey is not None:  # waits for an answer only: said as it always was
        if body.when and body.when.answered is False:
            return f"after {survey}, {body.when.describe()}"
        return f"after {survey} is answered" + (f", {body.when.describe()}" if body.when else "")
    parts = [f"{', '.join(tasks)} {'is' if len(tasks) == 1 else 'are'} done"] if tasks else []
    if survey is not None:
        missed = body.when is not None and body.when.answered is False
        parts.append(f"{survey} got no answer by its deadline" if missed else f"{survey} is answered")
    others = [i for i in step.after_ids if i not in tasks and i != survey]
    parts += [f"{other} has run" for other in others]  # not a valid playbook: validate says why
    text = f"after {' and '.join(parts)}"
    if body.when is not None and body.when.score is not None:
        text += f", {body.when.describe()}"
    offset = _offset_of(step)
    return f"{text} ({offset if offset else 'at once'})"


def _text(value: str | ToneText, playbook: Playbook, context: dict[str, Any]) -> str:
    source = value.pick(playbook.tone) if isinstance(value, ToneText) else value
    return templates.render(source or "", context)


def _rendering(step: Step, playbook: Playbook) -> AbstractContextManager[None]:
    """Say which playbook and step a template failed in, for this deal's data (limits included)."""
    return _named_failure(f"playbook {playbook.id} v{playbook.version}: step {step.id} ({step.kind})")


@contextmanager
def _named_failure(where: str) -> Iterator[None]:
    try:
        yield
    except TemplateError as exc:
        raise PlaybookError([f"{where}: template error: {exc.message or exc}"]) from None
    except (TypeError, ValueError, ArithmeticError, RecursionError) as exc:
        raise PlaybookError([f"{where}: template error: {exc}"]) from None


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:120] if text.strip() else ""


def resolve_owner(rule: str, deal: Deal, ctx: PlanContext) -> str | None:
    """The CRM user a task goes to; the fallback owner when the rule finds nobody."""
    return owner_for(rule, deal, ctx)[0]


def owner_for(rule: str, deal: Deal, ctx: PlanContext) -> tuple[str | None, str | None]:
    """The CRM user a task goes to, and a note when a role had to fall back (for ``plan``)."""
    deal_owner = deal.owner.id if deal.owner else None
    if rule == "deal_owner":
        owner = deal_owner
    elif rule.startswith("role:"):
        mapped = ctx.roles.get(rule.removeprefix("role:"))
        # A role maps to one user id, or to one per CRM: {"hubspot": "123", "salesforce": "005…"}.
        owner = mapped.get(deal.crm) if isinstance(mapped, dict) else mapped
        if not owner:
            to = "fallback owner" if ctx.fallback_owner else "deal owner"
            missing = f"no mapping for {deal.crm}" if isinstance(mapped, dict) else "no mapping"
            return ctx.fallback_owner or deal_owner, f"{rule} → {to} ({missing})"
    else:
        owner = rule.removeprefix("user:")
    return owner or ctx.fallback_owner or deal_owner, None


def at_workday_start(day: date, zone: ZoneInfo) -> datetime:
    """``day`` at the start of the working day in the account's zone, as aware UTC."""
    from datetime import UTC

    return datetime.combine(day, WORKDAY_START, tzinfo=zone).astimezone(UTC)
