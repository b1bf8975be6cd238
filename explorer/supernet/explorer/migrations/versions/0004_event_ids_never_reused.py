"""Event ids that never go back: ``events`` on SQLite becomes an AUTOINCREMENT table.

A plain SQLite rowid reuses the largest id once its row is deleted, and a reorg deletes the
newest events: the new branch's events then got ids a live client or an ``after=`` poller had
already passed, and it never saw them (tests/unit/test_review_explorer2.py). PostgreSQL's
sequence never goes back already; there this revision changes nothing.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # SQLite cannot alter a table's rowid kind: the table is copied into a new one (indexes kept)
    with op.batch_alter_table("events", recreate="always", table_kwargs={"sqlite_autoincrement": True}):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table("events", recreate="always"):
        pass
