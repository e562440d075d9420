"""live checklist

The checklist's tasks as the CRM holds them (``checklist_tasks``), each account's tracking
cursor, a run's checklist status, finish and risk; the sandbox CRM's task completion and files.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-28 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import connector.store.db

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _when() -> connector.store.db.UtcDateTime:
    return connector.store.db.UtcDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "checklist_tasks",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("crm", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=255), nullable=False),
        sa.Column("owner_id", sa.String(length=64), nullable=True),
        sa.Column("due_at", _when(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("evidence_required", sa.Boolean(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.Column("completed_at", _when(), nullable=True),
        sa.Column("completed_by", sa.String(length=64), nullable=True),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("updated_at", _when(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("run_id", "step_id", name="uq_checklist_tasks_run_step"),
    )
    op.create_index("ix_checklist_tasks_run_id", "checklist_tasks", ["run_id"])
    op.create_index("ix_checklist_tasks_crm_task", "checklist_tasks", ["crm", "account", "task_id"])
    op.create_index("ix_checklist_tasks_status", "checklist_tasks", ["status"])
    op.create_table(
        "track_cursors",
        sa.Column("crm", sa.String(length=32), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("checked_at", _when(), nullable=False),
        sa.Column("every_at", _when(), nullable=True),
        sa.PrimaryKeyConstraint("crm", "account"),
    )
    with op.batch_alter_table("runs") as runs:
        runs.add_column(sa.Column("status", sa.String(length=16), nullable=True))
        runs.add_column(sa.Column("finished_at", _when(), nullable=True))
        runs.add_column(sa.Column("at_risk", sa.Text(), nullable=True))
    with op.batch_alter_table("sandbox_tasks") as tasks:
        tasks.add_column(sa.Column("completed_at", _when(), nullable=True))
        tasks.add_column(sa.Column("completed_by", sa.String(length=64), nullable=True))
        tasks.add_column(
            sa.Column("attachments", sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=True)
        )
        tasks.add_column(sa.Column("modified_at", _when(), nullable=True))
    op.create_table(
        "sandbox_files",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("marker", sa.String(length=80), nullable=False),
        sa.Column("deal_id", sa.String(length=64), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=100), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("note_id", sa.Integer(), nullable=True),
        sa.Column("created_at", _when(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("marker"),
    )
    op.create_index("ix_sandbox_files_deal_id", "sandbox_files", ["deal_id"])


def downgrade() -> None:
    op.drop_index("ix_sandbox_files_deal_id", table_name="sandbox_files")
    op.drop_table("sandbox_files")
    with op.batch_alter_table("sandbox_tasks") as tasks:
        for column in ("modified_at", "attachments", "completed_by", "completed_at"):
            tasks.drop_column(column)
    with op.batch_alter_table("runs") as runs:
        for column in ("at_risk", "finished_at", "status"):
            runs.drop_column(column)
    op.drop_table("track_cursors")
    op.drop_index("ix_checklist_tasks_status", table_name="checklist_tasks")
    op.drop_index("ix_checklist_tasks_crm_task", table_name="checklist_tasks")
    op.drop_index("ix_checklist_tasks_run_id", table_name="checklist_tasks")
    op.drop_table("checklist_tasks")
