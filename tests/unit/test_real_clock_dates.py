"""Tests that run on the real clock date their deals from today.

The worker ignores a deal that closed more than OFFBOARD_MAX_CLOSE_AGE_DAYS ago. A server
process, the fault harness and the benchmark read the real clock, so a fixed close date in
them passes for a month and then fails for good. Tests on the movable clock keep fixed dates.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.helpers import ROOT, days_from_today, deal_closed_today

TESTS = ROOT / "tests"
# The support modules that drive a server process or the fault harness run on the real clock too.
REAL_CLOCK_SUPPORT = [
    TESTS / "support" / name for name in ("harness.py", "server.py", "slow_clients.py", "browser.py")
]
REAL_CLOCK = sorted(
    [*(TESTS / "e2e").glob("*.py"), *(TESTS / "faults").glob("*.py"), TESTS / "bench.py", *REAL_CLOCK_SUPPORT]
)
SEEDERS = {"add_deal", "add_opportunity"}  # the fake CRMs' deal makers; their close date is a fixed day


def calls(path: Path) -> list[ast.Call]:
    return [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)]


def name_of(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def dated(call: ast.Call) -> bool:
    """The call names its close date, or passes a mapping that may."""
    return any(keyword.arg in ("close_date", None) for keyword in call.keywords)


@pytest.mark.parametrize("path", REAL_CLOCK, ids=lambda path: str(path.relative_to(ROOT)))
def test_real_clock_tests_close_their_deals_today(path):
    fixed = [call.lineno for call in calls(path) if name_of(call) == "deal_closed_event"]
    assert not fixed, f"{path.name}:{fixed} uses a fixed close date on the real clock; use deal_closed_today"
    undated = [call.lineno for call in calls(path) if name_of(call) in SEEDERS and not dated(call)]
    assert not undated, f"{path.name}:{undated} seeds a deal closing on a fixed day; pass close_date"


def test_the_real_clock_support_modules_exist():
    missing = [str(path.relative_to(ROOT)) for path in REAL_CLOCK_SUPPORT if not path.exists()]
    assert not missing, f"moved or renamed, update REAL_CLOCK_SUPPORT: {missing}"


def test_deal_closed_today_closes_today_and_ends_in_the_future():
    deal = deal_closed_today("T-1", name="Globex")["deal"]
    assert (deal["id"], deal["name"]) == ("T-1", "Globex")
    assert deal["close_date"] == days_from_today() < deal["contract_end"] == days_from_today(41)
    overridden = deal_closed_today(close_date="2024-05-02")["deal"]
    assert overridden["close_date"] == "2024-05-02"
