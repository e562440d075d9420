"""Opportunity records (as SOQL returns them) into the core's Deal."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from connector.models import Company, Contact, Deal, Outcome, Owner

CRM = "salesforce"
# Salesforce has no deal pipelines; a playbook's `pipeline: [default]` matches every Opportunity.
PIPELINE = "default"


def resolve(record: dict[str, Any] | None, path: str) -> Any:
    """The value at a field path (``Contract.EndDate``); None when a lookup on the way is empty."""
    value: Any = record
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def to_deal(record: dict[str, Any], *, account: str, type_field: str, end_field: str) -> Deal:
    closed = bool(record.get("IsClosed"))
    return Deal(
        crm=CRM,
        account=account,
        id=record["Id"],
        name=record.get("Name") or record["Id"],
        outcome=_outcome(record) if closed else None,
        closed=closed,
        amount=_decimal(record.get("Amount")),
        pipeline=PIPELINE,
        stage=record.get("StageName"),
        close_date=_date(record.get("CloseDate")),
        contract_type=_text(resolve(record, type_field)),
        contract_end=_date(resolve(record, end_field)),
        owner=_owner(record.get("Owner"), record.get("OwnerId")),
        company=_company(record.get("Account"), record.get("AccountId")),
        contacts=_contacts(record.get("OpportunityContactRoles")),
        properties=_scalars(record),
    )


def _outcome(record: dict[str, Any]) -> Outcome:
    return "won" if record.get("IsWon") else "lost"


def _decimal(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _date(value: Any) -> date | None:
    return date.fromisoformat(str(value)[:10]) if value else None


def _text(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _owner(user: dict[str, Any] | None, owner_id: str | None) -> Owner | None:
    if not owner_id:
        return None
    user = user or {}
    return Owner(id=owner_id, name=user.get("Name"), email=user.get("Email"))


def _company(account: dict[str, Any] | None, account_id: str | None) -> Company | None:
    if not account_id:
        return None
    account = account or {}
    return Company(
        id=account_id, name=account.get("Name") or account_id, domain=_domain(account.get("Website"))
    )


def _domain(website: str | None) -> str | None:
    if not website:
        return None
    host = urlsplit(website if "//" in website else f"//{website}").hostname
    return host.removeprefix("www.") if host else None


def _contacts(roles: dict[str, Any] | None) -> tuple[Contact, ...]:
    """Contacts from the contact roles, the primary one first, each person once."""
    records = (roles or {}).get("records") or []
    ordered = sorted(records, key=lambda role: not role.get("IsPrimary"))
    contacts: dict[str, Contact] = {}
    for role in ordered:
        person = role.get("Contact") or {}
        contact_id = role.get("ContactId")
        if contact_id and contact_id not in contacts:
            contacts[contact_id] = Contact(
                id=contact_id,
                email=person.get("Email"),
                first_name=person.get("FirstName"),
                last_name=person.get("LastName"),
                primary=bool(role.get("IsPrimary")),
            )
    return tuple(contacts.values())


def _scalars(record: dict[str, Any]) -> dict[str, Any]:
    """The Opportunity's own fields, for playbooks' ``match.fields``."""
    return {k: v for k, v in record.items() if k != "attributes" and not isinstance(v, dict | list)}
