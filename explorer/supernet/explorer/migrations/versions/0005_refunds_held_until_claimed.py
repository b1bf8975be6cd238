"""Refunds held until claimed; availability answers' burns counted.

A fraud verdict's ``refund`` is held for whoever shows the signed request (``claimRefund``); the
index counted it as refunded at the verdict. Now ``refunded`` counts what ``RefundClaimed``
credited, ``refunds_held`` what verdicts hold unclaimed, and ``challenges.refund_claimed_at`` says
when a challenge's refund was claimed. ``burned`` also counts ``AvailabilitySettled.burned`` (the
share of an answered availability claim's bond that ``TaskManager.totalBurned`` counts).

The totals and claim times of the events already indexed are recomputed here from the events
table, so an upgraded index shows the same as one rebuilt from its events.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

events = sa.table(
    "events",
    sa.column("block", sa.BigInteger()),
    sa.column("log_index", sa.Integer()),
    sa.column("timestamp", sa.BigInteger()),
    sa.column("name", sa.String()),
    sa.column("args", sa.JSON()),
)
totals = sa.table("totals", sa.column("key", sa.String()), sa.column("value", sa.Text()))
challenges = sa.table(
    "challenges",
    sa.column("challenge_id", sa.BigInteger()),
    sa.column("refund_claimed_at", sa.BigInteger()),
)


def _set_total(conn: Any, key: str, value: int) -> None:
    conn.execute(totals.delete().where(totals.c.key == key))
    conn.execute(totals.insert().values(key=key, value=str(value)))


def upgrade() -> None:
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.add_column(sa.Column("refund_claimed_at", sa.BigInteger(), nullable=True))
    conn = op.get_bind()
    names = ("ChallengeResolved", "RefundClaimed", "AvailabilitySettled")
    rows = conn.execute(
        sa.select(events.c.name, events.c.args, events.c.timestamp)
        .where(events.c.name.in_(names))
        .order_by(events.c.block, events.c.log_index)
    ).all()
    if not rows:
        return
    held = refunded = settled_burns = 0
    for name, args, timestamp in rows:
        if name == "ChallengeResolved":
            held += int(args["refund"])
        elif name == "RefundClaimed":
            # an index of a deployment from before `burned` was in the event: nothing burned then
            amount, burned = int(args["amount"]), int(args.get("burned", 0))
            refunded, held = refunded + amount, held - amount - burned
            conn.execute(
                challenges.update()
                .where(challenges.c.challenge_id == int(args["challengeId"]))
                .values(refund_claimed_at=timestamp)
            )
        else:
            settled_burns += int(args["burned"])
    _set_total(conn, "refunded", refunded)
    _set_total(conn, "refunds_held", held)
    if settled_burns:
        old = conn.execute(sa.select(totals.c.value).where(totals.c.key == "burned")).scalar()
        _set_total(conn, "burned", int(old or 0) + settled_burns)


def downgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(
        sa.select(events.c.name, events.c.args)
        .where(events.c.name.in_(("ChallengeResolved", "RefundClaimed", "AvailabilitySettled")))
        .order_by(events.c.block, events.c.log_index)
    ).all()
    # the old folding: a verdict's refund counted at once, less what its claim burned
    refunded = settled_burns = 0
    for name, args in rows:
        if name == "ChallengeResolved":
            refunded += int(args["refund"])
        elif name == "RefundClaimed":
            refunded -= int(args["burned"])
        else:
            settled_burns += int(args["burned"])
    conn.execute(totals.delete().where(totals.c.key == "refunds_held"))
    if rows:
        _set_total(conn, "refunded", refunded)
    if settled_burns:
        old = conn.execute(sa.select(totals.c.value).where(totals.c.key == "burned")).scalar()
        _set_total(conn, "burned", int(old or 0) - settled_burns)
    with op.batch_alter_table("challenges", schema=None) as batch_op:
        batch_op.drop_column("refund_claimed_at")
