"""The lowest versions pyproject.toml allows, as pip pins; and a check that they are what is installed.

``make test-lowest`` runs the adapter tests again in a second virtual environment with the CRM
SDKs at their lower bounds, so a bound that admits a broken release fails CI:

    python -m tests.lowest hubspot-api-client simple-salesforce          # prints the pins
    python -m tests.lowest --check hubspot-api-client simple-salesforce  # exit 1 unless installed

The pins come from pyproject.toml itself, so the run cannot drift from the bounds it checks.
"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
# Plain re, not the packaging library: this runs on a bare interpreter, before any install.
REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*([^;]*)")


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def lower_bounds(names: list[str], pyproject: Path = PYPROJECT) -> dict[str, str]:
    """Each named dependency's ``>=`` bound; ValueError when one is missing or unbounded."""
    wanted = {canonical(name): name for name in names}
    found: dict[str, str] = {}
    for line in tomllib.loads(pyproject.read_text())["project"]["dependencies"]:
        parsed = REQUIREMENT.match(line)
        if parsed is None or canonical(parsed.group(1)) not in wanted:
            continue
        bounds = [spec.strip()[2:].strip() for spec in parsed.group(2).split(",") if spec.strip()[:2] == ">="]
        if bounds:
            found[wanted[canonical(parsed.group(1))]] = bounds[0]
    missing = [name for name in names if name not in found]
    if missing:
        raise ValueError(f"no lower bound for {', '.join(missing)} in {pyproject.name}")
    return found


def installed_mismatches(bounds: dict[str, str]) -> list[str]:
    """What is installed at another version than its lower bound, as readable lines."""
    problems = []
    for name, lowest in bounds.items():
        try:
            have = version(name)
        except PackageNotFoundError:
            have = "not installed"
        if have != lowest:
            problems.append(f"{name}: {have}, expected the lower bound {lowest}")
    return problems


def main(argv: list[str]) -> int:
    check = "--check" in argv
    try:
        bounds = lower_bounds([arg for arg in argv if arg != "--check"])
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not check:
        print(" ".join(f"{name}=={lowest}" for name, lowest in bounds.items()))
        return 0
    problems = installed_mismatches(bounds)
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print("lowest versions installed: " + ", ".join(f"{n} {v}" for n, v in bounds.items()))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
