"""worker heartbeats

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 17:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import connector.store.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("beat_at", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("workers")
