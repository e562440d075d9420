"""What the bundled playbooks promise about the offboarding checklist (connector/playbooks/coverage.py)."""

from __future__ import annotations

from connector.playbooks.coverage import CHECKLIST, coverage_table

__all__ = ["CHECKLIST", "CLIENT_FACING", "FULL_PLAYBOOKS", "coverage_table"]

# Lines whose steps the client sees before the goodbye; 15 comes after it on purpose.
CLIENT_FACING = {1, 3, 4, 5, 8, 9, 10, 11, 12}
FULL_PLAYBOOKS = ("completed-project", "terminated-contract", "churned-subscription", "contract-ending")
