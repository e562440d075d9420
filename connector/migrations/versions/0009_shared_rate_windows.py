"""shared rate windows

A CRM account's call budget, counted in the database so every web and worker process,
on any machine, keeps to one budget together: a row per window (locked while a process
counts) and a log of the calls in it.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import connector.store.db

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "rate_windows",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("held_until", connector.store.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "rate_calls",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("at", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rate_calls", schema=None) as batch_op:
        batch_op.create_index("ix_rate_calls_key_at", ["key", "at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rate_calls", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_calls_key_at")
    op.drop_table("rate_calls")
    op.drop_table("rate_windows")
