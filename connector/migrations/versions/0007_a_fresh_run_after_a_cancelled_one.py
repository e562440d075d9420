"""a deal closed again after it re-opened gets a fresh run

A run was unique per deal and playbook, so a deal that closed, re-opened (its
run cancelled) and closed again got nothing the second time. Runs now carry a
``generation`` per deal and playbook: 1 for the first, and one more for each run
started after the deal's earlier ones were cancelled. Its idempotency keys differ
from the earlier generations', so its writes are new CRM records, and the
cancelled runs keep their history. "One open run per deal" is still the partial
index ``uq_runs_one_open_per_deal``: a deal with an active or done run gets no
other.

On SQLite, dropping a table's constraint means rebuilding ``runs``, which actions,
answers and referrals point at. SQLite's own recipe for that rebuild turns foreign
keys off around it (which can only be done between transactions) and checks
them before committing; that is what ``_foreign_keys_off`` does.

A downgrade fails while a deal has more than one run of the same playbook.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 19:00:00
"""

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEAL_PLAYBOOK = ["crm", "account", "deal_id", "playbook_id"]


def upgrade() -> None:
    with _foreign_keys_off(), op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("generation", sa.Integer(), server_default="1", nullable=False))
        batch_op.drop_constraint("uq_runs_deal_playbook", type_="unique")
        batch_op.create_unique_constraint("uq_runs_deal_playbook_generation", [*DEAL_PLAYBOOK, "generation"])


def downgrade() -> None:
    with _foreign_keys_off(), op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_runs_deal_playbook_generation", type_="unique")
        batch_op.drop_column("generation")
        batch_op.create_unique_constraint("uq_runs_deal_playbook", DEAL_PLAYBOOK)


@contextmanager
def _foreign_keys_off() -> Iterator[None]:
    """On SQLite: commit what came before, rebuild with foreign keys off, check them, commit.

    ``PRAGMA foreign_keys`` is ignored inside a transaction, and with it on,
    dropping the old ``runs`` (which a rebuild does) fails on the rows that point at
    it. Elsewhere a plain ALTER TABLE does the work, in the migration's transaction.
    """
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        yield
        return
    bind.exec_driver_sql("COMMIT")
    bind.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        bind.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield
            broken = bind.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"rows point at rows that are gone: {broken[:5]}")
        except BaseException:
            bind.exec_driver_sql("ROLLBACK")
            raise
        bind.exec_driver_sql("COMMIT")
    finally:
        bind.exec_driver_sql("PRAGMA foreign_keys=ON")
        bind.exec_driver_sql("BEGIN IMMEDIATE")  # the migration's own transaction goes on
