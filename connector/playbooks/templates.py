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
starts with ``_``, no method that changes a value. Every render has hard limits on
the size of what it builds, its loop iterations and its time (limits.py). A
template that breaks any of this is a validation error; at run time it fails the
text being rendered instead of hanging the worker.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from jinja2 import TemplateError

from connector.models import Deal
from connector.playbooks import limits, sandbox
from connector.playbooks.sandbox import NAMES, Fields

__all__ = ["NAMES", "check", "deal_context", "render", "sample_context"]


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


FILTERS = {"date": _date, "money": _money}


def render(source: str, context: dict[str, Any]) -> str:
    """``source`` rendered for ``context``, within the hard limits of limits.py.

    TemplateError (TemplateLimit when a limit is broken) or the TypeError, ValueError
    or ArithmeticError a filter raised; never more than ``MAX_TEXT`` characters.
    """
    with limits.budget():
        text = "".join(sandbox.compiled(source).generate(context)).strip()
    if len(text) > limits.MAX_TEXT:
        raise limits.TemplateLimit(f"the rendered text is over {limits.MAX_TEXT:,} characters")
    return text


def check(source: str) -> str | None:
    """None when ``source`` renders against the documented names; otherwise why not."""
    try:
        render(source, sample_context())
    except TemplateError as exc:
        return f"template error: {exc.message or exc}"
    except (TypeError, ValueError, ArithmeticError) as exc:
        return f"template error: {exc}"
    except RecursionError:
        return "template error: it calls itself without end (a macro that recurses)"
    return None


def deal_context(deal: Deal, playbook: dict[str, Any], anchor: date, today: date) -> dict[str, Any]:
    """The names a template sees for this deal."""
    company = deal.company
    contact = deal.primary_contact
    owner = deal.owner
    names: dict[str, dict[str, Any]] = {
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
            "properties": Fields("deal.properties", dict(deal.properties)),
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
    return {name: Fields(name, values) for name, values in names.items()}


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
