"""checklist actions are of kind "task", like the playbook step that makes them

Actions that write checklist tasks were of kind ``tasks``; every other kind is named
like the playbook step kind it writes, and now this one is too. Their step ids (and
so their idempotency keys) are unchanged, so nothing already written is written again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 21:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE actions SET kind = 'task' WHERE kind = 'tasks'")


def downgrade() -> None:
    op.execute("UPDATE actions SET kind = 'tasks' WHERE kind = 'task'")
