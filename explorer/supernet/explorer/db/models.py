"""The index's tables (SQLAlchemy 2 declarative), one schema for SQLite and PostgreSQL.

Everything below ``events`` is derived from the raw events table by `supernet.explorer.apply`,
so a reorg is undone by deleting the orphaned events and replaying the rest. Wei amounts exceed
64-bit integers (10,000 ETH is 1e22 wei), so they are stored as decimal strings (`Wei`) and summed
in Python into the ``totals`` table as events arrive, never with SQL ``SUM``.

Every column holding a value from the chain or a manifest is as wide as the format allows (a
uint32 is a BigInteger, a string of unbounded length a Text, a wei sum an unbounded decimal): a
value a node may write that a column cannot hold would stop the indexer for everyone (on
PostgreSQL, which enforces widths), so no column is narrower than its source.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Dialect, Index, Integer, String, Text, TypeDecorator, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Wei(TypeDecorator[int]):
    """An unbounded non-negative integer (wei) stored as its decimal string (a running total of
    uint256 amounts can outgrow 78 digits)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: int | None, dialect: Dialect) -> str | None:
        return None if value is None else str(int(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


class Base(DeclarativeBase):
    """Declarative base of the explorer's schema."""


class Meta(Base):
    """Key/value state: the follower's cursor."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Block(Base):
    """Hashes of scanned blocks (those with events and each range's last block), to detect reorgs."""

    __tablename__ = "blocks"
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[str] = mapped_column(String(66))
    timestamp: Mapped[int] = mapped_column(BigInteger)


class Event(Base):
    """One decoded protocol event, as logged (the source of every other table)."""

    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    block: Mapped[int] = mapped_column(BigInteger, index=True)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(String(66), index=True)  # the search box looks it up
    timestamp: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(64), index=True)
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    subject: Mapped[str | None] = mapped_column(String(42), index=True)  # the address it is about
    # ids never go back (a reorg deletes the newest rows; a client's ``after=`` cursor must not
    # see their ids again): AUTOINCREMENT on SQLite, a sequence elsewhere
    __table_args__ = (
        Index("ix_events_block_log", "block", "log_index", unique=True),
        {"sqlite_autoincrement": True},
    )


class Operator(Base):
    """A node or validator, its stake bookkeeping replayed from ServiceManager's events."""

    __tablename__ = "operators"
    address: Mapped[str] = mapped_column(String(42), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # node | validator
    registered: Mapped[bool] = mapped_column(Boolean, default=True)
    endpoint: Mapped[str | None] = mapped_column(Text)
    model_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    price_per_token: Mapped[int] = mapped_column(Wei, default=0)
    stake: Mapped[int] = mapped_column(Wei, default=0)
    unbonding: Mapped[int] = mapped_column(Wei, default=0)
    frozen_count: Mapped[int] = mapped_column(Integer, default=0)
    slash_count: Mapped[int] = mapped_column(Integer, default=0)
    slashed: Mapped[int] = mapped_column(Wei, default=0)
    tasks: Mapped[int] = mapped_column(BigInteger, default=0)  # receipts its users signed
    batches: Mapped[int] = mapped_column(Integer, default=0)
    fees: Mapped[int] = mapped_column(Wei, default=0)
    votes: Mapped[int] = mapped_column(Integer, default=0)
    challenges_won: Mapped[int] = mapped_column(Integer, default=0)
    challenges_lost: Mapped[int] = mapped_column(Integer, default=0)
    registered_at: Mapped[int] = mapped_column(BigInteger)


class Batch(Base):
    """A committed batch, with its manifest's state in the content store."""

    __tablename__ = "batches"
    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    node: Mapped[str] = mapped_column(String(42), index=True)
    root: Mapped[str] = mapped_column(String(66))
    count: Mapped[int] = mapped_column(BigInteger)  # a uint32, any value the node wrote
    commit_block: Mapped[int] = mapped_column(BigInteger)
    manifest_cid: Mapped[str] = mapped_column(Text, index=True)
    block: Mapped[int] = mapped_column(BigInteger)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))
    gas_used: Mapped[int] = mapped_column(BigInteger, default=0)
    seed: Mapped[str | None] = mapped_column(String(66))
    manifest_status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|ok|invalid
    manifest_error: Mapped[str | None] = mapped_column(Text)


class Receipt(Base):
    """One receipt of a batch, from the batch's manifest (the task it records, or claims to)."""

    __tablename__ = "receipts"
    batch_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    request_hash: Mapped[str] = mapped_column(String(66), index=True)
    node: Mapped[str] = mapped_column(String(42))
    user: Mapped[str] = mapped_column(String(42))
    model_id: Mapped[str] = mapped_column(String(66))
    input_hash: Mapped[str] = mapped_column(String(66))
    output_hash: Mapped[str] = mapped_column(String(66))
    trace_hash: Mapped[str] = mapped_column(String(66))
    trace_cid: Mapped[str] = mapped_column(Text, index=True)
    fee: Mapped[int] = mapped_column(Wei)
    leaf: Mapped[str] = mapped_column(String(66), index=True)
    signature: Mapped[str | None] = mapped_column(Text)
    agent: Mapped[str] = mapped_column(Text)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    request_signature: Mapped[str | None] = mapped_column(Text)
    # The user signed this request for the committing node and its digest is the task id
    # (`supernet.sdk.formats.manifest.ManifestEntry.signed_by_user`). Anything else is the node's
    # own claim: it counts in no total, is on no user's page and never reads as verified.
    signed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    timestamp: Mapped[int] = mapped_column(BigInteger)
    # An address page lists the newest tasks of a user or a node: (address, batch) serves it in order
    # (a user's: the signed ones, however many claims nodes wrote in the user's name).
    __table_args__ = (
        Index("ix_receipts_user_signed_batch", "user", "signed", "batch_id"),
        Index("ix_receipts_node_batch", "node", "batch_id"),
    )


class Challenge(Base):
    """A fraud challenge on one receipt, its votes' totals and its resolution (the split)."""

    __tablename__ = "challenges"
    challenge_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    batch_id: Mapped[int] = mapped_column(BigInteger, index=True)
    challenger: Mapped[str] = mapped_column(String(42), index=True)
    node: Mapped[str] = mapped_column(String(42), index=True)
    leaf: Mapped[str] = mapped_column(String(66))
    request_hash: Mapped[str] = mapped_column(String(66), index=True)
    vote_deadline: Mapped[int] = mapped_column(BigInteger)
    evidence_cid: Mapped[str] = mapped_column(Text, index=True)
    opened_at: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | fraud | not_fraud | decoy
    fraud_stake: Mapped[int] = mapped_column(Wei, default=0)
    honest_stake: Mapped[int] = mapped_column(Wei, default=0)
    slashed: Mapped[int] = mapped_column(Wei, default=0)
    # a fraud verdict's refund: held for whoever shows the signed request until RefundClaimed, then
    # what the request's user was credited (its maxFee, at most what was held; the rest burned)
    refund: Mapped[int] = mapped_column(Wei, default=0)
    refund_claimed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    challenger_reward: Mapped[int] = mapped_column(Wei, default=0)
    voter_pool: Mapped[int] = mapped_column(Wei, default=0)
    burned: Mapped[int] = mapped_column(Wei, default=0)
    resolved_at: Mapped[int | None] = mapped_column(BigInteger)


class Vote(Base):
    """One validator's stake-weighted vote on a challenge.

    Votes are sealed first (``VoteCommitted``: the side is secret, ``fraud`` is None) and opened in
    the vote's last window (``Voted``: side and the weight that counts). A row whose ``fraud`` is
    still None after the challenge resolved was never opened: its bond burned.
    """

    __tablename__ = "votes"
    challenge_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    validator: Mapped[str] = mapped_column(String(42), primary_key=True)
    fraud: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    weight: Mapped[int] = mapped_column(Wei)
    timestamp: Mapped[int] = mapped_column(BigInteger)  # of the latest of its events
    sealed_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Total(Base):
    """Network-wide running totals (tasks, fees, gas, slashed, burned, refunded, refunds held ...)."""

    __tablename__ = "totals"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(Wei, default=0)


class StakePoint(Base):
    """Total active stake after each stake-changing event (the stake chart)."""

    __tablename__ = "stake_points"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    block: Mapped[int] = mapped_column(BigInteger, index=True)
    timestamp: Mapped[int] = mapped_column(BigInteger)
    total_stake: Mapped[int] = mapped_column(Wei)
