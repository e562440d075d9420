"""sweep cursors

Where each CRM account's contract-end sweep left off, so the next sweep asks the
CRM only for deals modified since, or new to its window.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 18:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import connector.store.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sweep_cursors",
        sa.Column("crm", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("changed_since", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("horizon", sa.Date(), nullable=False),
        sa.Column("swept_at", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("crm", "account"),
    )


def downgrade() -> None:
    op.drop_table("sweep_cursors")
