"""Initial schema: events, blocks, operators, batches, receipts, challenges, votes, totals, stake points.

Wei amounts are decimal strings (VARCHAR(80)): see supernet.explorer.db.models.Wei.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("batch_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("commit_block", sa.BigInteger(), nullable=False),
        sa.Column("manifest_cid", sa.Text(), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("gas_used", sa.BigInteger(), nullable=False),
        sa.Column("seed", sa.String(length=66), nullable=True),
        sa.Column("manifest_status", sa.String(length=16), nullable=False),
        sa.Column("manifest_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_batches_manifest_cid"), ["manifest_cid"], unique=False)
        batch_op.create_index(batch_op.f("ix_batches_node"), ["node"], unique=False)

    op.create_table(
        "blocks",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_table(
        "challenges",
        sa.Column("challenge_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.Column("challenger", sa.String(length=42), nullable=False),
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("leaf", sa.String(length=66), nullable=False),
        sa.Column("request_hash", sa.String(length=66), nullable=False),
        sa.Column("vote_deadline", sa.BigInteger(), nullable=False),
        sa.Column("evidence_cid", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("fraud_stake", sa.String(length=80), nullable=False),
        sa.Column("honest_stake", sa.String(length=80), nullable=False),
        sa.Column("slashed", sa.String(length=80), nullable=False),
        sa.Column("refund", sa.String(length=80), nullable=False),
        sa.Column("challenger_reward", sa.String(length=80), nullable=False),
        sa.Column("voter_pool", sa.String(length=80), nullable=False),
        sa.Column("burned", sa.String(length=80), nullable=False),
        sa.Column("resolved_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("challenge_id"),
    )
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_challenges_batch_id"), ["batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_challenges_challenger"), ["challenger"], unique=False)
        batch_op.create_index(batch_op.f("ix_challenges_evidence_cid"), ["evidence_cid"], unique=False)
        batch_op.create_index(batch_op.f("ix_challenges_node"), ["node"], unique=False)
        batch_op.create_index(batch_op.f("ix_challenges_request_hash"), ["request_hash"], unique=False)

    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("contract", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("subject", sa.String(length=42), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_block"), ["block"], unique=False)
        batch_op.create_index("ix_events_block_log", ["block", "log_index"], unique=True)
        batch_op.create_index(batch_op.f("ix_events_name"), ["name"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_subject"), ["subject"], unique=False)

    op.create_table(
        "meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "operators",
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("model_ids", sa.JSON(), nullable=False),
        sa.Column("price_per_token", sa.String(length=80), nullable=False),
        sa.Column("stake", sa.String(length=80), nullable=False),
        sa.Column("unbonding", sa.String(length=80), nullable=False),
        sa.Column("frozen_count", sa.Integer(), nullable=False),
        sa.Column("slash_count", sa.Integer(), nullable=False),
        sa.Column("slashed", sa.String(length=80), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("fees", sa.String(length=80), nullable=False),
        sa.Column("votes", sa.Integer(), nullable=False),
        sa.Column("challenges_won", sa.Integer(), nullable=False),
        sa.Column("challenges_lost", sa.Integer(), nullable=False),
        sa.Column("registered_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("address"),
    )
    op.create_table(
        "receipts",
        sa.Column("batch_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("request_hash", sa.String(length=66), nullable=False),
        sa.Column("node", sa.String(length=42), nullable=False),
        sa.Column("user", sa.String(length=42), nullable=False),
        sa.Column("model_id", sa.String(length=66), nullable=False),
        sa.Column("input_hash", sa.String(length=66), nullable=False),
        sa.Column("output_hash", sa.String(length=66), nullable=False),
        sa.Column("trace_hash", sa.String(length=66), nullable=False),
        sa.Column("trace_cid", sa.Text(), nullable=False),
        sa.Column("fee", sa.String(length=80), nullable=False),
        sa.Column("leaf", sa.String(length=66), nullable=False),
        sa.Column("signature", sa.String(length=140), nullable=True),
        sa.Column("agent", sa.String(length=128), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("request_signature", sa.String(length=140), nullable=True),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("batch_id", "idx"),
    )
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_receipts_leaf"), ["leaf"], unique=False)
        batch_op.create_index("ix_receipts_node_batch", ["node", "batch_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_receipts_request_hash"), ["request_hash"], unique=False)
        batch_op.create_index(batch_op.f("ix_receipts_trace_cid"), ["trace_cid"], unique=False)
        batch_op.create_index("ix_receipts_user_batch", ["user", "batch_id"], unique=False)

    op.create_table(
        "stake_points",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("total_stake", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("stake_points", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stake_points_block"), ["block"], unique=False)

    op.create_table(
        "totals",
        sa.Column("key", sa.String(length=32), nullable=False),
        sa.Column("value", sa.String(length=80), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "votes",
        sa.Column("challenge_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("validator", sa.String(length=42), nullable=False),
        sa.Column("fraud", sa.Boolean(), nullable=False),
        sa.Column("weight", sa.String(length=80), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("challenge_id", "validator"),
    )


def downgrade() -> None:
    op.drop_table("votes")
    op.drop_table("totals")
    with op.batch_alter_table("stake_points", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stake_points_block"))

    op.drop_table("stake_points")
    with op.batch_alter_table("receipts", schema=None) as batch_op:
        batch_op.drop_index("ix_receipts_user_batch")
        batch_op.drop_index(batch_op.f("ix_receipts_trace_cid"))
        batch_op.drop_index(batch_op.f("ix_receipts_request_hash"))
        batch_op.drop_index("ix_receipts_node_batch")
        batch_op.drop_index(batch_op.f("ix_receipts_leaf"))

    op.drop_table("receipts")
    op.drop_table("operators")
    op.drop_table("meta")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_subject"))
        batch_op.drop_index(batch_op.f("ix_events_name"))
        batch_op.drop_index("ix_events_block_log")
        batch_op.drop_index(batch_op.f("ix_events_block"))

    op.drop_table("events")
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_challenges_request_hash"))
        batch_op.drop_index(batch_op.f("ix_challenges_node"))
        batch_op.drop_index(batch_op.f("ix_challenges_evidence_cid"))
        batch_op.drop_index(batch_op.f("ix_challenges_challenger"))
        batch_op.drop_index(batch_op.f("ix_challenges_batch_id"))

    op.drop_table("challenges")
    op.drop_table("blocks")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_batches_node"))
        batch_op.drop_index(batch_op.f("ix_batches_manifest_cid"))

    op.drop_table("batches")
