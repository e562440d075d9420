"""Values placed into SOQL are always escaped; names spliced into it are always checked first.

Every query builder in ``adapters/salesforce/soql.py`` gets hostile values (quotes,
backslashes, ``' OR Name LIKE '%``…). The text it builds must parse (with the
strict fake org's SOQL parser, which refuses an unescaped quote) to the same
query shape, with the hostile value back as one string literal. Through the
adapter, a hostile Opportunity id is refused before any query; a hostile email
reaches the org only as the escaped literal.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
import responses
from hypothesis import given
from hypothesis import strategies as st

from adapters.base import SweepWindow
from adapters.salesforce import soql
from adapters.salesforce.adapter import SalesforceAdapter
from connector.errors import ConnectorError, SettingsInvalid
from connector.models import ReferralSpec
from tests.support.helpers import make_settings
from tests.support.hostile import HOSTILE
from tests.support.salesforce import FakeSalesforce, parse_soql, session_settings

HOSTILE_VALUES = [
    "'",
    "\\",
    "\\'",
    "''",
    "' OR Name LIKE '%",
    "x' OR Id != '",
    "006' OR IsWon = true OR Id = '",
    "%",
    "_",
    '"',
    "\n",
    "\r\n\t",
    "\\\\'",
    "') OR (Id != '",
    "'; DELETE FROM Opportunity --",
    "Ω 💥",
]
EXTRA = ["Type", "Contract.EndDate"]


def literals(condition: Any) -> list[tuple[str, str, Any]]:
    """(operator, field, value) of every comparison in a parsed WHERE."""
    if condition is None:
        return []
    kind = condition[0]
    if kind in ("and", "or"):
        return literals(condition[1]) + literals(condition[2])
    if kind == "not":
        return literals(condition[1])
    if kind == "cmp":
        return [(condition[2], condition[1], condition[3])]
    if kind == "in":
        return [("in", condition[1], condition[2])]
    return [(kind, condition[1], condition[2])]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_every_value_builder_escapes(value):
    built = {
        "opportunity": soql.opportunity(value, EXTRA),
        "tasks_on": soql.tasks_on(value),
        "notes_on": soql.notes_on(value),
        "survey_invitation": soql.survey_invitation(value),
        "person_by_email": soql.person_by_email("Contact", value),
        "tasks_marked": soql.tasks_marked("Offboard_Key__c", [value, "safe"]),
    }
    field = {
        "opportunity": "Id",
        "tasks_on": "WhatId",
        "notes_on": "LinkedEntityId",
        "survey_invitation": "Name",
        "person_by_email": "Email",
    }
    for name, text in built.items():
        query = parse_soql(text)  # the fake refuses what Salesforce would: an unescaped quote, a stray token
        found = literals(query.where)
        if name == "tasks_marked":
            assert found == [("in", "Offboard_Key__c", [("string", value), ("string", "safe")])], text
        else:
            assert found == [("=", field[name], ("string", value))], (name, text)


@HOSTILE
@given(value=st.text(max_size=40))
def test_any_text_comes_back_as_one_literal(value):
    for text, column in (
        (soql.opportunity(value, EXTRA), "Id"),
        (soql.person_by_email("Lead", value), "Email"),
        (soql.survey_invitation(value), "Name"),
    ):
        assert literals(parse_soql(text).where) == [("=", column, ("string", value))], text


def test_dates_are_date_literals_and_never_quoted():
    text = soql.contracts_ending("Contract.EndDate", SweepWindow(date(2026, 12, 1), date(2026, 12, 31)))
    assert literals(parse_soql(text).where) == [
        (">=", "Contract.EndDate", ("date", "2026-12-01")),
        ("<=", "Contract.EndDate", ("date", "2026-12-31")),
        ("=", "IsWon", ("boolean", True)),
    ]
    assert "'" not in text
    sneaky = "2026-01-01 OR Id != '"  # a string where a date belongs: quoted and escaped, never spliced
    text = soql.contracts_ending("Contract.EndDate", SweepWindow(sneaky, date(2026, 12, 31)))  # type: ignore[arg-type]
    assert literals(parse_soql(text).where)[0] == (">=", "Contract.EndDate", ("string", sneaky))


@pytest.mark.parametrize(
    "name",
    [
        "Type FROM Opportunity WHERE Name LIKE '%",
        "Id, (SELECT Id FROM Users)",
        "Contract.EndDate'",
        "End Date",
        "a.b.c.d.e.f",  # six levels: deeper than SOQL allows
        "Type--",
        "",
        "1Type",
        "Type\n",
    ],
)
def test_names_spliced_into_soql_are_checked_first(name):
    """Field names cannot be quoted: ``field_path`` refuses anything but a field or relationship path."""
    with pytest.raises(SettingsInvalid):
        soql.field_path(name, "SALESFORCE_CONTRACT_END_FIELD")


@pytest.mark.parametrize("variable", ["SALESFORCE_CONTRACT_TYPE_FIELD", "SALESFORCE_CONTRACT_END_FIELD"])
def test_a_hostile_field_setting_is_refused_before_any_query(variable, tmp_path):
    org = FakeSalesforce()
    settings = make_settings(
        f"sqlite:///{tmp_path}/x.db",
        **session_settings(org),
        **{variable: "Type FROM User WHERE Name LIKE '%"},
    )
    with pytest.raises(SettingsInvalid, match=variable):
        SalesforceAdapter.from_settings(settings)


# --- through the adapter, against the fake org -------------------------------------------------------


@pytest.fixture
def org() -> FakeSalesforce:
    return FakeSalesforce()


@pytest.fixture
def adapter(org, tmp_path):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        org.install(mock)
        yield SalesforceAdapter.from_settings(
            make_settings(f"sqlite:///{tmp_path}/x.db", **session_settings(org))
        )


@pytest.mark.parametrize("deal_id", [*HOSTILE_VALUES, "006' OR Name LIKE '%", "0065g00000AbCdE' OR '1'='1"])
def test_fetch_deal_with_a_hostile_id_is_refused_before_any_query(adapter, org, deal_id):
    with pytest.raises(ConnectorError):
        adapter.fetch_deal(deal_id)
    assert org.queries == []  # nothing reached the org


def test_a_well_formed_id_is_quoted_and_found(adapter, org):
    seed = org.add_opportunity()
    deal = adapter.fetch_deal(seed.opportunity)
    assert deal.id == seed.opportunity
    (query,) = [q for q in org.queries if "FROM Opportunity" in q]
    assert literals(parse_soql(query).where) == [("=", "Id", ("string", seed.opportunity))]


@pytest.mark.parametrize(
    "email", ["o'brien@acme.example", "x' OR Name LIKE '%@acme.example", "back\\slash@acme.example"]
)
def test_a_hostile_email_reaches_the_org_only_as_an_escaped_literal(adapter, org, email):
    seed = org.add_opportunity()
    referral = ReferralSpec(
        step_id="referral-ask",
        deal_id=seed.opportunity,
        referrer_contact_id=seed.contacts[0],
        referrer_company="Acme Corp",
        first_name="Jo",
        last_name="Park",
        email=email,
        company="Globex",
        note="",
    )
    adapter.create_referral(referral, "k" * 64)
    lookups = [q for q in org.queries if "WHERE Email" in q]
    assert lookups, org.queries
    for query in lookups:
        assert "'" not in email or "\\'" in query  # a quote goes over escaped
        assert literals(parse_soql(query).where) == [("=", "Email", ("string", email.lower()))]
    (lead,) = org.records("Lead")
    assert lead["Email"] == email.lower()  # stored as given, not interpreted


def test_the_check_would_catch_string_formatting():
    """The checks above mean something: a value formatted in unescaped changes the query's shape."""
    value = "x' OR Name LIKE '%"
    naive = f"SELECT Id FROM Opportunity WHERE Id = '{value}'"
    assert literals(parse_soql(naive).where) == [
        ("=", "Id", ("string", "x")),
        ("like", "Name", ("string", "%")),
    ]
    assert literals(parse_soql(soql.opportunity(value, EXTRA)).where) == [("=", "Id", ("string", value))]
    with pytest.raises(Exception, match=r"(?i)malformed|unexpected|invalid"):
        parse_soql("SELECT Id FROM Opportunity WHERE Id = 'o'brien'")  # an unescaped quote: refused
