"""Sample deals for ``offboard sandbox seed``: contracts that end in the coming weeks.

They are won retainer, support and subscription deals, the kind the bundled
contract-end playbook matches, with end dates inside its 30-day lead time, so
``offboard sweep`` starts their runs and ``offboard plan --crm sandbox --deal ID
--trigger contract_end`` shows their timelines. Dates count from ``today``, so
seeding again later moves them along.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

from connector.models import Company, Contact, Deal, Owner

SAMPLES = (
    # id, deal name, contract type, company, contact (first, last), days until the contract ends
    ("D-101", "Northwind — support retainer", "retainer", "Northwind Traders", ("Ana", "Trujillo"), 12),
    ("D-102", "Globex — analytics subscription", "subscription", "Globex", ("Hank", "Scorpio"), 19),
    ("D-103", "Initech — managed services", "services", "Initech", ("Bill", "Lumbergh"), 26),
)


def sample_deals(today: date) -> list[Deal]:
    return [_deal(today, *sample) for sample in SAMPLES]


def _deal(
    today: date, deal_id: str, name: str, kind: str, company: str, person: tuple[str, str], days: int
) -> Deal:
    slug = company.split()[0].lower()
    return Deal(
        crm="sandbox",
        account="sandbox",
        id=deal_id,
        name=name,
        outcome="won",
        closed=True,
        amount=Decimal(18000),
        currency="USD",
        pipeline="default",
        stage="closedwon",
        close_date=today - timedelta(days=365 - days),
        contract_type=kind,
        contract_end=today + timedelta(days=days),
        owner=Owner(id="owner-1", name="Sam Rivera", email="sam@offboard.example"),
        company=Company(id=f"company-{slug}", name=company, domain=f"{slug}.example"),
        contacts=(
            Contact(
                id=f"contact-{slug}",
                email=f"{person[0].lower()}@{slug}.example",
                first_name=person[0],
                last_name=person[1],
                primary=True,
            ),
        ),
    )
