"""one submission per referral link; counters shared by all processes

A referral link (a run's referral step) accepts one submission: the row holds
whoever was introduced and the testimonial/case-study consent together. Rows
that earlier, unlimited links left behind are kept, under a step id made
unique with their own id, so no introduction is lost.

``metric_counts`` holds the counters every web and worker process adds to
(CRM calls, 429s, rate-limit waits, webhook answers), read by ``GET /metrics``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 18:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        sa.text(
            "UPDATE referrals SET step_id = SUBSTR(step_id, 1, 80) || ':' || CAST(id AS VARCHAR(20)) "
            "WHERE id NOT IN (SELECT MIN(id) FROM referrals GROUP BY run_id, step_id)"
        )
    )
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_constraint("uq_referrals_run_email", type_="unique")
        batch_op.create_unique_constraint("uq_referrals_run_step", ["run_id", "step_id"])
    op.create_table(
        "metric_counts",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("labels", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", "labels"),
    )


def downgrade() -> None:
    op.drop_table("metric_counts")
    with op.batch_alter_table("referrals", schema=None) as batch_op:
        batch_op.drop_constraint("uq_referrals_run_step", type_="unique")
        batch_op.create_unique_constraint("uq_referrals_run_email", ["run_id", "email"])
