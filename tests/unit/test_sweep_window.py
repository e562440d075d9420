"""What a sweep asks a CRM for once one has run: what changed, and the days new to its window."""

from __future__ import annotations

from datetime import UTC, date, datetime

from adapters.base import Ending, SweepWindow
from adapters.salesforce import soql

SINCE = datetime(2026, 11, 20, 14, 45, tzinfo=UTC)


def test_a_first_sweep_asks_for_the_whole_window():
    window = SweepWindow(date(2026, 11, 20), date(2026, 12, 20))
    assert window.changed_since is None and window.new_from is None


def test_the_days_after_the_last_horizon_are_new():
    window = SweepWindow(date(2026, 11, 21), date(2026, 12, 21), SINCE, new_after=date(2026, 12, 20))
    assert window.new_from == date(2026, 12, 21)


def test_a_window_the_last_sweep_covered_has_no_new_days():
    window = SweepWindow(date(2026, 11, 20), date(2026, 12, 20), SINCE, new_after=date(2026, 12, 20))
    assert window.new_from is None
    shorter = SweepWindow(date(2026, 11, 20), date(2026, 12, 10), SINCE, new_after=date(2026, 12, 20))
    assert shorter.new_from is None  # a playbook's lead got shorter


def test_after_a_long_pause_the_whole_window_is_new():
    window = SweepWindow(date(2027, 3, 1), date(2027, 3, 31), SINCE, new_after=date(2026, 12, 20))
    assert window.new_from == date(2027, 3, 1)


def test_the_inbox_key_is_per_deal_and_end_date():
    assert Ending("hubspot", "123", "1001", date(2026, 12, 5)).event_key == "hubspot:1001:2026-12-05"


def test_salesforce_asks_for_changes_to_the_opportunity_and_to_the_record_holding_the_end_date():
    window = SweepWindow(date(2026, 11, 21), date(2026, 12, 21), SINCE, new_after=date(2026, 12, 20))
    query = soql.contracts_ending("Contract.EndDate", window)
    assert query.startswith("SELECT Id, Contract.EndDate FROM Opportunity WHERE ")
    assert (
        "AND (SystemModstamp >= 2026-11-20T14:45:00+00:00 OR Contract.SystemModstamp >= "
        "2026-11-20T14:45:00+00:00 OR Contract.EndDate >= 2026-12-21)"
    ) in query
    on_the_opportunity = soql.contracts_ending("Contract_End__c", window)
    assert "Contract.SystemModstamp" not in on_the_opportunity
