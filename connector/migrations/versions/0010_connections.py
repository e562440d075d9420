"""connections

One row per installed CRM account, its tokens sealed with OFFBOARD_ENCRYPTION_KEYS, and the
installs under way (the OAuth state, single use, and Salesforce's PKCE code verifier).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 23:50:00
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import connector.store.db

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "connections",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("crm", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("status_reason", sa.Text(), nullable=True),
        sa.Column("installed_by", sa.String(length=255), nullable=True),
        sa.Column("installed_at", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("scopes", _json(), nullable=False),
        sa.Column("access_token", sa.Text(), nullable=True),
        sa.Column("refresh_token", sa.Text(), nullable=True),
        sa.Column("token_expires_at", connector.store.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("instance_url", sa.String(length=255), nullable=True),
        sa.Column("config", _json(), nullable=False),
        sa.Column("refresh_lock_until", connector.store.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("crm", "account", name="uq_connections_crm_account"),
    )
    op.create_table(
        "oauth_states",
        sa.Column("nonce_hash", sa.String(length=64), nullable=False),
        sa.Column("crm", sa.String(length=32), nullable=False),
        sa.Column("created_at", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", connector.store.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("code_verifier", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("nonce_hash"),
    )
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oauth_states_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oauth_states", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oauth_states_expires_at"))
    op.drop_table("oauth_states")
    op.drop_table("connections")
