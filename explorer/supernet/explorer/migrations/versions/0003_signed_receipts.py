"""Signed receipts and columns as wide as their sources.

``receipts.signed``: whether the user signed the entry's request for the committing node (only
those count in totals and on users' pages; the flag of receipts indexed before this revision is
false until the derived tables are rebuilt). Columns that hold what a node writes become as wide as
the format allows: ``batches.count`` (a uint32) and ``operators.tasks`` BigInteger, the manifest's
unbounded strings Text, every wei amount unbounded Text; ``events.tx_hash`` is indexed (search).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

WEI_COLUMNS = {
    "operators": ("price_per_token", "stake", "unbonding", "slashed", "fees"),
    "receipts": ("fee",),
    "challenges": (
        "fraud_stake",
        "honest_stake",
        "slashed",
        "refund",
        "challenger_reward",
        "voter_pool",
        "burned",
    ),
    "votes": ("weight",),
    "totals": ("value",),
    "stake_points": ("total_stake",),
}


def _wei(to: sa.types.TypeEngine[str], old: sa.types.TypeEngine[str]) -> None:
    for table, columns in WEI_COLUMNS.items():
        with op.batch_alter_table(table, schema=None) as batch_op:
            for column in columns:
                batch_op.alter_column(column, existing_type=old, type_=to)


def upgrade() -> None:
    _wei(sa.Text(), sa.String(length=80))
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.alter_column("count", existing_type=sa.Integer(), type_=sa.BigInteger())
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.alter_column("tasks", existing_type=sa.Integer(), type_=sa.BigInteger())
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.alter_column("signature", existing_type=sa.String(length=140), type_=sa.Text())
        batch_op.alter_column("agent", existing_type=sa.String(length=128), type_=sa.Text())
        batch_op.alter_column("request_signature", existing_type=sa.String(length=140), type_=sa.Text())
        batch_op.add_column(sa.Column("signed", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.drop_index("ix_receipts_user_batch")
        batch_op.create_index("ix_receipts_user_signed_batch", ["user", "signed", "batch_id"], unique=False)
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_tx_hash"), ["tx_hash"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_tx_hash"))
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index("ix_receipts_user_signed_batch")
        batch_op.create_index("ix_receipts_user_batch", ["user", "batch_id"], unique=False)
        batch_op.drop_column("signed")
        batch_op.alter_column("request_signature", existing_type=sa.Text(), type_=sa.String(length=140))
        batch_op.alter_column("agent", existing_type=sa.Text(), type_=sa.String(length=128))
        batch_op.alter_column("signature", existing_type=sa.Text(), type_=sa.String(length=140))
    with op.batch_alter_table("operators", schema=None) as batch_op:
        batch_op.alter_column("tasks", existing_type=sa.BigInteger(), type_=sa.Integer())
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.alter_column("count", existing_type=sa.BigInteger(), type_=sa.Integer())
    _wei(sa.String(length=80), sa.Text())
