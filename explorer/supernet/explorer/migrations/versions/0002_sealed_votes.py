"""Sealed votes: a vote row exists from its ``VoteCommitted`` on, its side (``fraud``) unknown until
its ``Voted``; ``sealed_at`` records when it was sealed.

Rows already derived keep their values; the sealed votes of events indexed before this revision
appear once the derived tables are rebuilt from ``events`` (as after a reorg).

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.alter_column("fraud", existing_type=sa.Boolean(), nullable=True)
        batch_op.add_column(sa.Column("sealed_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM votes WHERE fraud IS NULL")  # the old schema has no sealed votes
    with op.batch_alter_table("votes", schema=None) as batch_op:
        batch_op.drop_column("sealed_at")
        batch_op.alter_column("fraud", existing_type=sa.Boolean(), nullable=False)
