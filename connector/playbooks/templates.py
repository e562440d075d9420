"""Playbook text is Jinja2, rendered in a sandbox where undefined names are errors.

Names a template may use (docs/playbooks.md lists them with examples):

- ``deal``: id, name, amount, currency, outcome, pipeline, stage, close_date,
  contract_type, contract_end, properties (the deal's custom fields)
- ``company``: id, name, domain
- ``contact``: id, first_name, last_name, name, email (the primary contact)
- ``owner``: id, name, email (the deal owner)
- ``playbook``: id, name, version, tone
- ``dates``: anchor, today, close_date, contract_end

Filters: ``date`` (``2026-03-31`` → ``31 March 2026``; ``date('%d/%m/%Y')`` for
another format) and ``money`` (``12500`` → ``12,500.00``).

Nothing else: no globals (``range``, ``lipsum``, ``cycler``…), no ``self``, no
``include``/``import``/``extends`` (there is no loader either), no attribute that
starts with ``_``, no method that changes a value, and ``*``/``**`` cannot build
a huge string or number. A template that tries is a validation error.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, nodes
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from connector.models import Deal

NAMES = ("deal", "company", "contact", "owner", "playbook", "dates")
MAX_REPEAT = 100_000  # characters or items ``*`` may build
MAX_EXPONENT = 1_000
_OUTSIDE = (nodes.Include, nodes.Import, nodes.FromImport, nodes.Extends)


def _date(value: Any, fmt: str = "%-d %B %Y") -> str:
    if value is None or value == "":
        return "(date not set)"
    if isinstance(value, str):
        value = date.fromisoformat(value[:10])
    if isinstance(value, datetime):
        value = value.date()
    if not isinstance(value, date):
        raise TypeError(f"the date filter needs a date, not {type(value).__name__}")
    return value.strftime(fmt)


def _money(value: Any) -> str:
    if value is None or value == "":
        return "(amount not set)"
    try:
        return f"{Decimal(str(value)):,.2f}"
    except InvalidOperation:
        raise ValueError(f"the money filter needs a number, not {str(value)[:40]!r}") from None


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with ``*`` and ``**`` bounded (they could exhaust memory or time)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        numeric = isinstance(right, int | float | Decimal)
        if operator == "**" and numeric and not -MAX_EXPONENT <= right <= MAX_EXPONENT:
            raise SecurityError(f"an exponent above {MAX_EXPONENT} is not allowed")
        if operator == "*":
            for sequence, count in ((left, right), (right, left)):
                repeats = isinstance(sequence, str | list | tuple) and isinstance(count, int)
                if repeats and len(sequence) * count > MAX_REPEAT:
                    raise SecurityError(f"repeating text or a list beyond {MAX_REPEAT} is not allowed")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    env = _Sandbox(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)
    env.globals.clear()  # only the documented names: no range, lipsum, cycler, joiner, namespace, dict
    env.filters["date"] = _date
    env.filters["money"] = _money
    return env


def render(source: str, context: dict[str, Any]) -> str:
    return _compiled(source).render(context).strip()


@lru_cache(maxsize=4096)
def _compiled(source: str) -> Template:
    """Each playbook text is compiled once per process, not once per deal.

    TemplateError when the text reaches outside itself: ``include``, ``import``,
    ``extends`` or ``self`` (the template's own object).
    """
    env = environment()
    tree = env.parse(source)
    if any(True for _ in tree.find_all(_OUTSIDE)):
        raise SecurityError("templates cannot include, import or extend other templates")
    if any(name.name == "self" for name in tree.find_all(nodes.Name)):
        raise SecurityError("'self' is not available in playbook templates")
    return env.from_string(tree)


def check(source: str) -> str | None:
    """None when ``source`` renders against the documented names; otherwise why not."""
    try:
        render(source, sample_context())
    except TemplateError as exc:
        return f"template error: {exc.message or exc}" + _hint(exc)
    except (TypeError, ValueError, ArithmeticError) as exc:
        return f"template error: {exc}"
    except RecursionError:
        return "template error: it calls itself without end (a macro that recurses)"
    return None


def _hint(exc: TemplateError) -> str:
    if "is undefined" in str(exc):
        return f" (templates may use: {', '.join(NAMES)}; see docs/playbooks.md)"
    return ""


def deal_context(deal: Deal, playbook: dict[str, Any], anchor: date, today: date) -> dict[str, Any]:
    """The names a template sees for this deal."""
    company = deal.company
    contact = deal.primary_contact
    owner = deal.owner
    return {
        "deal": {
            "id": deal.id,
            "name": deal.name,
            "amount": deal.amount,
            "currency": deal.currency or "",
            "outcome": deal.outcome or "",
            "pipeline": deal.pipeline or "",
            "stage": deal.stage or "",
            "close_date": deal.close_date,
            "contract_type": deal.contract_type or "",
            "contract_end": deal.contract_end,
            "properties": dict(deal.properties),
        },
        "company": {
            "id": company.id if company else "",
            "name": company.name if company else deal.name,
            "domain": (company.domain or "") if company else "",
        },
        "contact": {
            "id": contact.id if contact else "",
            "first_name": (contact.first_name or contact.full_name) if contact else "the client",
            "last_name": (contact.last_name or "") if contact else "",
            "name": contact.full_name if contact else "the client",
            "email": (contact.email or "") if contact else "",
        },
        "owner": {
            "id": owner.id if owner else "",
            "name": (owner.name or owner.id) if owner else "the account owner",
            "email": (owner.email or "") if owner else "",
        },
        "playbook": {key: playbook.get(key) for key in ("id", "name", "version", "tone")},
        "dates": {
            "anchor": anchor,
            "today": today,
            "close_date": deal.close_date,
            "contract_end": deal.contract_end,
        },
    }


@lru_cache(maxsize=1)
def _sample_deal() -> Deal:
    from connector.models import Company, Contact, Owner

    return Deal(
        crm="sandbox",
        account="sample",
        id="1",
        name="Sample deal",
        outcome="won",
        closed=True,
        amount=Decimal("12000"),
        currency="USD",
        pipeline="default",
        stage="closedwon",
        close_date=date(2026, 1, 15),
        contract_type="retainer",
        contract_end=date(2026, 3, 31),
        owner=Owner(id="u1", name="Sam Owner", email="sam@example.com"),
        company=Company(id="c1", name="Acme", domain="acme.example"),
        contacts=(
            Contact(id="p1", email="pat@acme.example", first_name="Pat", last_name="Lee", primary=True),
        ),
    )


def sample_context() -> dict[str, Any]:
    playbook = {"id": "sample", "name": "Sample", "version": 1, "tone": "neutral"}
    return deal_context(_sample_deal(), playbook, date(2026, 3, 31), date(2026, 1, 15))
