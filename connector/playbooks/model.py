"""The playbook language: one YAML file per contract type (docs/playbooks.md).

Strict: an unknown key is an error, so a typo never silently does nothing.
"""

from __future__ import annotations

import builtins
import re
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from connector.models import SurveyKind, TaskPriority, TaskType
from connector.playbooks import templates
from connector.playbooks.offsets import Offset

Tone = Literal["celebratory", "neutral", "formal"]
Anchor = Literal["close_date", "contract_end", "run_start"]


def _offset(value: Any) -> Offset:
    if isinstance(value, Offset):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value}d"
    if not isinstance(value, str):
        raise ValueError("expected an offset such as -30d, +1bd or 2w")
    return Offset.parse(value)


OffsetField = Annotated[Offset, BeforeValidator(_offset), PlainSerializer(str, return_type=str)]


# Validation context under which a run's pinned copy is rebuilt: its templates were checked
# when it was pinned, and are rendered within the limits whenever they are used.
PINNED = {"pinned": True}


def _template(value: Any, info: ValidationInfo) -> str:
    if not isinstance(value, str):
        raise ValueError("expected text (a Jinja2 template)")
    if isinstance(info.context, dict) and info.context.get("pinned"):
        return value
    problem = templates.check(value)
    if problem:
        raise ValueError(problem)
    return value


Template = Annotated[str, BeforeValidator(_template)]


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str | int | float) and not isinstance(value, bool) else value


StrList = Annotated[list[str], BeforeValidator(_as_list)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    """A numeric condition: every bound given must hold."""

    gte: Decimal | None = None
    gt: Decimal | None = None
    lte: Decimal | None = None
    lt: Decimal | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> Range:
        if all(bound is None for bound in (self.gte, self.gt, self.lte, self.lt)):
            raise ValueError("give at least one of gte, gt, lte, lt")
        return self

    def describe(self) -> str:
        symbols = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
        bounds = self.model_dump(exclude_none=True).items()
        return " and ".join(f"{symbols[k]} {v}" for k, v in bounds)

    def holds(self, value: Decimal | float | int | None) -> bool:
        if value is None:
            return False
        number = Decimal(str(value))
        return (
            (self.gte is None or number >= self.gte)
            and (self.gt is None or number > self.gt)
            and (self.lte is None or number <= self.lte)
            and (self.lt is None or number < self.lt)
        )


class Match(_Strict):
    """Which deals a playbook is for. Every listed key must hold; an omitted key matches any."""

    outcome: list[Literal["won", "lost"]] | None = None
    contract_type: StrList | None = None
    pipeline: StrList | None = None
    stage: StrList | None = None
    crm: list[Literal["sandbox", "hubspot", "salesforce"]] | None = None
    amount: Range | None = None
    fields: dict[str, StrList | Range] = Field(default_factory=dict)

    @field_validator("outcome", "crm", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return _as_list(value)


class When(_Strict):
    """A structured condition on the answer to the survey named in ``after``.

    ``score`` holds when the answer's score is in range; ``answered: false`` holds
    when the survey's deadline passed without an answer.
    """

    score: Range | None = None
    answered: bool | None = None

    @model_validator(mode="after")
    def _one_condition(self) -> When:
        if self.score is not None and self.answered is False:
            raise ValueError("`score` and `answered: false` cannot both hold; use one")
        if self.score is None and self.answered is None:
            raise ValueError("give `score: {gte|gt|lte|lt: …}` or `answered: false`")
        return self

    def describe(self) -> str:
        if self.answered is False:
            return "when no answer came by the deadline"
        assert self.score is not None
        return f"when score {self.score.describe()}"

    def holds_for(self, score: int) -> tuple[bool, str]:
        """Whether an answer with ``score`` satisfies this; and if not, why (for the record)."""
        if self.answered is False:
            return False, "the survey was answered"
        assert self.score is not None
        if self.score.holds(score):
            return True, ""
        return False, f"score {score} is not {self.score.describe()}"


class ToneText(_Strict):
    """Text that differs by the playbook's tone; ``default`` serves any tone not given."""

    default: Template | None = None
    celebratory: Template | None = None
    neutral: Template | None = None
    formal: Template | None = None

    def pick(self, tone: Tone) -> str | None:
        return getattr(self, tone) or self.default


Text = Annotated[
    Annotated[str, BeforeValidator(_template), Tag("text")] | Annotated[ToneText, Tag("by_tone")],
    Discriminator(lambda value: "by_tone" if isinstance(value, dict | ToneText) else "text"),
]


def _pattern(regex: str, expected: str) -> BeforeValidator:
    compiled = re.compile(regex)

    def check(value: Any) -> Any:
        if not isinstance(value, str) or not compiled.fullmatch(value):
            raise ValueError(f"{value!r} is not valid: expected {expected}")
        return value

    return BeforeValidator(check)


Owner = Annotated[
    str,
    _pattern(r"deal_owner|role:[\w.-]+|user:[\w.@-]+", "deal_owner, role:<name> or user:<crm user id>"),
]
Ident = Annotated[
    str,
    _pattern(r"[a-z0-9][a-z0-9_-]{0,79}", "lowercase letters, digits, - and _ (e.g. confirm-end-date)"),
]


def _step_ids(value: Any) -> Any:
    """``after: exit-nps`` is ``after: [exit-nps]``: one step id or a list of them."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple) and not value:
        raise ValueError("name at least one step id, or leave `after` out")
    return value


def _dump_step_ids(value: list[str]) -> str | list[str]:
    # One id dumps as it was always written, so the content hash of a playbook (and of the
    # copy a run pinned) does not change for the files that name one step.
    return value[0] if len(value) == 1 else list(value)


StepIds = Annotated[
    list[str],
    BeforeValidator(_step_ids),
    PlainSerializer(_dump_step_ids, return_type=str | list[str]),
]


class _Conditional(_Strict):
    # The steps this one waits for, all of them: a task completed in the CRM, a survey answered.
    after: StepIds | None = None
    when: When | None = None

    @model_validator(mode="after")
    def _when_needs_after(self) -> _Conditional:
        if self.when is not None and self.after is None:
            raise ValueError("`when` needs `after: <survey step id>` to say whose answer it tests")
        return self

    @builtins.property
    def after_ids(self) -> tuple[str, ...]:
        """The steps this one waits for; empty when it waits for none."""
        return tuple(self.after or ())


def _positive(value: Offset) -> Offset:
    if value.days <= 0:
        raise ValueError(f"{value} is not after the due time: give a positive offset, e.g. 2bd")
    return value


class Escalation(_Strict):
    """Who hears about a task still open ``overdue`` after its due time."""

    overdue: Annotated[OffsetField, AfterValidator(_positive)]
    to: Owner


# Keys only a task step takes: nobody completes a note, survey, referral ask or property update.
TASK_ONLY = ("evidence", "escalate", "deadline")


class TaskStep(_Conditional):
    title: Text
    body: Text = ""
    due: OffsetField = Offset(0, "d")
    owner: Owner = "deal_owner"
    priority: TaskPriority = "normal"
    type: TaskType = "todo"
    # Its completion needs evidence: an "Evidence:" line in the task, or a file attached to it.
    evidence: Literal["required"] | None = None
    escalate: Escalation | None = None
    # It must be done by the deal's contract end; a projection past it puts the run at risk.
    deadline: Literal["contract_end"] | None = None


class NoteStep(_Conditional):
    body: Text
    at: OffsetField | None = None  # None: as soon as the run starts


class SurveyStep(_Conditional):
    """A survey send. With ``after: <survey>`` and ``when: {answered: false}`` it is a reminder:
    its link answers the survey it follows."""

    kind: SurveyKind
    to: Literal["primary_contact"] = "primary_contact"
    send: OffsetField | None = None  # None: as soon as the run starts (or the answer arrives)
    # How long after the send an answer is waited for before `when: {answered: false}` steps run.
    deadline: OffsetField = Offset(7, "d")

    @model_validator(mode="after")
    def _reminders_wait_for_no_answer(self) -> SurveyStep:
        if self.after is not None and (self.when is None or self.when.answered is not False):
            raise ValueError("a survey with `after` is a reminder: give it `when: {answered: false}`")
        if self.after is not None and len(self.after) != 1:
            raise ValueError(
                f"a reminder follows exactly one survey; `after` names {len(self.after)}: "
                + ", ".join(self.after)
            )
        return self

    @builtins.property
    def reminds(self) -> str | None:
        """The survey a reminder repeats (its link answers that one); None for a survey that asks."""
        return self.after[0] if self.after else None


AskKind = Literal["referral", "testimonial", "case_study"]


def _default_ask() -> list[AskKind]:
    return ["referral", "testimonial"]


class ReferralStep(_Conditional):
    to: Literal["primary_contact"] = "primary_contact"
    send: OffsetField | None = None  # None: as soon as the run starts (or the answer arrives)
    ask: list[AskKind] = Field(default_factory=_default_ask)


class PropertyStep(_Conditional):
    object: Literal["deal", "company"] = "deal"
    set: dict[str, Template]
    at: OffsetField | None = None  # None: as soon as the run starts

    @field_validator("set")
    @classmethod
    def _not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("name at least one property to set")
        return value


STEP_KINDS = ("task", "note", "survey", "referral", "property")


class Step(_Strict):
    id: Ident
    task: TaskStep | None = None
    note: NoteStep | None = None
    survey: SurveyStep | None = None
    referral: ReferralStep | None = None
    property: PropertyStep | None = None
    covers: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Step:
        given = [kind for kind in STEP_KINDS if getattr(self, kind) is not None]
        if len(given) != 1:
            raise ValueError(
                f"a step has exactly one of {', '.join(STEP_KINDS)}; this one has "
                + (", ".join(given) if given else "none")
            )
        return self

    @builtins.property  # plain `property` is the step kind of that name here
    def kind(self) -> str:
        return next(kind for kind in STEP_KINDS if getattr(self, kind) is not None)

    @builtins.property
    def body(self) -> TaskStep | NoteStep | SurveyStep | ReferralStep | PropertyStep:
        return getattr(self, self.kind)  # type: ignore[no-any-return]

    @builtins.property
    def after_ids(self) -> tuple[str, ...]:
        """The steps this one waits for (all of them); empty when it waits for none."""
        return self.body.after_ids

    def waits_on(self, step_id: str) -> bool:
        return step_id in self.after_ids


class ContractEndTrigger(_Strict):
    lead: OffsetField


class Trigger(_Strict):
    deal_closed: bool = True
    contract_end: ContractEndTrigger | None = None


class Playbook(_Strict):
    id: Ident
    name: str
    version: int = Field(ge=1)
    tone: Tone = "neutral"
    match: Match = Field(default_factory=Match)
    priority: int = 0
    anchor: Anchor = "close_date"
    # Calendar-day offsets that land on a Saturday or Sunday move to the Monday.
    weekends: Literal["next_weekday", "keep"] = "next_weekday"
    trigger: Trigger = Field(default_factory=Trigger)
    steps: list[Step] = Field(min_length=1)

    def step(self, step_id: str) -> Step:
        """The step with id ``step_id`` (KeyError when there is none)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    def dependants(self, step_id: str) -> list[Step]:
        """The steps that wait on ``step_id`` (among others, maybe), in playbook order."""
        return [step for step in self.steps if step.waits_on(step_id)]

    def tasks_before(self, step: Step) -> tuple[str, ...]:
        """The task steps ``step`` waits for: each must be completed in the CRM."""
        return tuple(i for i in step.after_ids if self._kind_of(i) == "task")

    def survey_before(self, step: Step) -> str | None:
        """The survey ``step`` waits for (its answer, or the lack of one: ``when`` tests it)."""
        return next((i for i in step.after_ids if self._kind_of(i) == "survey"), None)

    def _kind_of(self, step_id: str) -> str | None:
        return next((s.kind for s in self.steps if s.id == step_id), None)
