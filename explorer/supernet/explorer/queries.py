"""The read side: what each page and API answer shows, as plain dicts, from the index alone.

Page handlers and JSON routes both call these, so a page and its API answer can never disagree.
Each returns None for an unknown id (the caller answers 404). Lists are bounded (``LIMIT``) so a
page costs the same with ten receipts indexed or ten million.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from eth_utils import to_checksum_address
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session
from supernet.explorer.db.models import (
    Batch,
    Challenge,
    Event,
    Meta,
    Operator,
    Receipt,
    StakePoint,
    Total,
    Vote,
)
from supernet.sdk.chain.receipts import trace_hash

LIMIT = 50
"""Most rows of one list on a page."""


def row(obj: Any) -> dict[str, Any]:
    """A model instance as a dict of its columns."""
    return {c.key: getattr(obj, c.key) for c in obj.__table__.columns}


def operator_status(op: Operator) -> str:
    """A one-word status for people: slashed, frozen, unbonding, left or active."""
    if op.slash_count:
        return "slashed"
    if op.frozen_count:
        return "frozen"
    if not op.registered:
        return "left"
    if op.unbonding:
        return "unbonding"
    return "active"


def _operator(op: Operator) -> dict[str, Any]:
    return {**row(op), "status": operator_status(op)}


def totals(s: Session) -> dict[str, int]:
    """Network-wide running totals (absent keys are 0)."""
    out = {
        k: 0
        for k in (
            "tasks",
            "fees",
            "batches",
            "committed",
            "commit_gas",
            "slashed",
            "burned",
            "refunded",
            "refunds_held",
            "challenges",
            "frauds",
            "rejected",
            "redeemed",
            "challenger_rewards",
            "decoys",
            "decoy_bounties",
            "claims",
        )
    }
    out.update({t.key: t.value for t in s.scalars(select(Total))})
    out["gas_per_task"] = out["commit_gas"] // out["committed"] if out["committed"] else 0
    return out


def indexed_block(s: Session) -> int:
    """The last block the index has scanned."""
    row_ = s.get(Meta, "cursor")
    return int(row_.value) - 1 if row_ is not None else 0


def charts(s: Session, points: int = 60) -> dict[str, list[tuple[int, float]]]:
    """Time series for the network page: tasks per minute, total stake, gas per task (of batches
    whose manifest proved their count: a commit's count alone is the node's word)."""
    recent = s.execute(
        select(Batch.timestamp, Batch.count, Batch.gas_used)
        .where(Batch.manifest_status == "ok")
        .order_by(Batch.batch_id.desc())
        .limit(500)
    ).all()
    per_minute: Counter[int] = Counter()
    for ts, count, _gas in recent:
        per_minute[ts // 60 * 60] += count
    tasks = sorted(per_minute.items())[-points:]
    gas = [(ts, gas_ / count) for ts, count, gas_ in reversed(recent) if count][-points:]
    stake_rows = s.execute(
        select(StakePoint.timestamp, StakePoint.total_stake).order_by(StakePoint.id.desc()).limit(points)
    ).all()
    stake = [(ts, v / 10**18) for ts, v in reversed(stake_rows)]
    return {"tasks_per_minute": [(t, float(n)) for t, n in tasks], "stake_eth": stake, "gas_per_task": gas}


def network(s: Session) -> dict[str, Any]:
    """The network page: operators, totals, charts, latest batches, challenges and events."""
    ops = list(s.scalars(select(Operator).order_by(Operator.registered_at, Operator.address)))
    return {
        "nodes": [_operator(o) for o in ops if o.role == "node"],
        "validators": [_operator(o) for o in ops if o.role == "validator"],
        "totals": totals(s),
        "charts": charts(s),
        "batches": [row(b) for b in s.scalars(select(Batch).order_by(Batch.batch_id.desc()).limit(10))],
        "challenges": [
            row(c) for c in s.scalars(select(Challenge).order_by(Challenge.challenge_id.desc()).limit(10))
        ],
        "events": latest_events(s, limit=20),
        "indexed_block": indexed_block(s),
    }


def latest_events(s: Session, after: int = 0, limit: int = LIMIT) -> list[dict[str, Any]]:
    """Events newer than id ``after``, newest first (the live feed)."""
    q = select(Event).where(Event.id > after).order_by(Event.id.desc()).limit(limit)
    return [row(e) for e in s.scalars(q)]


def events_after(s: Session, after: int, limit: int = LIMIT) -> list[dict[str, Any]]:
    """The ``limit`` oldest events after id ``after``, oldest first: what a follower (the live
    feed) reads next, in order, without skipping any when more than ``limit`` arrived."""
    q = select(Event).where(Event.id > after).order_by(Event.id).limit(limit)
    return [row(e) for e in s.scalars(q)]


def last_event_id(s: Session) -> int:
    """The id of the newest event (0: none)."""
    return int(s.scalar(select(func.max(Event.id))) or 0)


def batch(s: Session, batch_id: int) -> dict[str, Any] | None:
    """A batch with its receipts and the challenges on it."""
    b = s.get(Batch, batch_id)
    if b is None:
        return None
    receipts = s.scalars(select(Receipt).where(Receipt.batch_id == batch_id).order_by(Receipt.idx))
    challenges = s.scalars(select(Challenge).where(Challenge.batch_id == batch_id))
    return {
        "batch": row(b),
        "receipts": [row(r) for r in receipts],
        "challenges": [row(c) for c in challenges],
    }


def receipts_of_task(s: Session, task_id: str, limit: int = LIMIT) -> tuple[list[Receipt], int]:
    """A task id's committed receipts (requestHash), bounded: the one whose user signed the request
    for its node first (there is at most one such node), then at most ``limit`` others (other
    nodes' claims, copies), oldest first; and how many receipts the task id has in all. Any node
    can commit copies of anyone's task id, 512 a commit: the list is the first ``limit`` of them."""
    task_id = task_id.lower()
    q = (
        select(Receipt)
        .where(Receipt.request_hash == task_id)
        .order_by(Receipt.signed.desc(), Receipt.batch_id, Receipt.idx)
        .limit(1 + limit)
    )
    listed = list(s.scalars(q))
    if len(listed) <= limit:
        return listed, len(listed)
    total = s.scalar(select(func.count()).select_from(Receipt).where(Receipt.request_hash == task_id))
    return listed, int(total or 0)


def batch_leaves(s: Session, batch_id: int) -> list[bytes]:
    """The batch's leaves in tree order (to build a Merkle proof)."""
    q = select(Receipt.leaf).where(Receipt.batch_id == batch_id).order_by(Receipt.idx)
    return [bytes.fromhex(leaf[2:]) for leaf in s.scalars(q)]


def challenge(s: Session, challenge_id: int) -> dict[str, Any] | None:
    """A challenge with its votes (heaviest first) and the receipt it accuses."""
    c = s.get(Challenge, challenge_id)
    if c is None:
        return None
    votes = s.scalars(select(Vote).where(Vote.challenge_id == challenge_id))
    receipt = s.scalar(select(Receipt).where(Receipt.batch_id == c.batch_id, Receipt.leaf == c.leaf))
    return {
        "challenge": row(c),
        "votes": sorted((row(v) for v in votes), key=lambda v: -v["weight"]),
        "receipt": None if receipt is None else row(receipt),
    }


def address(s: Session, addr: str) -> dict[str, Any]:
    """Everything about one address: its role and stake, batches, tasks, challenges, votes, events."""
    a = to_checksum_address(addr)
    op = s.get(Operator, a)
    # Two indexed queries, not one with OR (which scans the table): a user's tasks (those the user
    # signed: a node can write receipts in anyone's name), a node's receipts (its claims included).
    mine = (Receipt.user == a, Receipt.signed.is_(True)), (Receipt.node == a,)
    receipts = sorted(
        {
            (r.batch_id, r.idx): r
            for where in mine
            for r in s.scalars(
                select(Receipt).where(*where).order_by(Receipt.batch_id.desc(), Receipt.idx).limit(LIMIT)
            )
        }.values(),
        key=lambda r: (-r.batch_id, r.idx),
    )[:LIMIT]
    challenges = s.scalars(
        select(Challenge)
        .where(or_(Challenge.node == a, Challenge.challenger == a))
        .order_by(Challenge.challenge_id.desc())
        .limit(LIMIT)
    )
    votes = s.scalars(select(Vote).where(Vote.validator == a).order_by(Vote.challenge_id.desc()).limit(LIMIT))
    batches = s.scalars(select(Batch).where(Batch.node == a).order_by(Batch.batch_id.desc()).limit(LIMIT))
    events = s.scalars(select(Event).where(Event.subject == a).order_by(Event.id.desc()).limit(LIMIT))
    return {
        "address": a,
        "operator": None if op is None else _operator(op),
        "batches": [row(b) for b in batches],
        "receipts": [row(r) for r in receipts],
        "challenges": [row(c) for c in challenges],
        "votes": [row(v) for v in votes],
        "events": [row(e) for e in events],
    }


def find_cid(s: Session, cid: str) -> tuple[str, str] | None:
    """What a CID is in the index: ``("batch", id)``, ``("task", id)`` or ``("challenge", id)``.

    A trace CID names the task whose receipt commits to it (``traceHash`` = the CID's digest; a
    manifest entry's CID is the node's word, and any node can copy another's), the user-signed one
    first, then the oldest."""
    b = s.scalar(select(Batch.batch_id).where(Batch.manifest_cid == cid).limit(1))
    if b is not None:
        return "batch", str(b)
    try:
        digest = "0x" + trace_hash(cid).hex()
    except ValueError:  # not a dag-cbor sha2-256 CID: no receipt's trace
        digest = None
    if digest is not None:
        t = s.scalar(
            select(Receipt.request_hash)
            .where(Receipt.trace_cid == cid, Receipt.trace_hash == digest)
            .order_by(Receipt.signed.desc(), Receipt.batch_id, Receipt.idx)
            .limit(1)
        )
        if t is not None:
            return "task", t
    c = s.scalar(select(Challenge.challenge_id).where(Challenge.evidence_cid == cid).limit(1))
    if c is not None:
        return "challenge", str(c)
    return None


def find_hash(s: Session, h: str) -> tuple[str, str] | None:
    """What a 32-byte hex value is: a task id, a receipt leaf, or a transaction."""
    h = h.lower()
    if s.scalar(select(Receipt.request_hash).where(Receipt.request_hash == h).limit(1)):
        return "task", h
    t = s.scalar(select(Receipt.request_hash).where(Receipt.leaf == h).limit(1))
    if t is not None:
        return "task", t
    ev = s.scalar(select(Event).where(Event.tx_hash == h).limit(1))
    if ev is not None and ev.name == "BatchCommitted":
        return "batch", str(ev.args["batchId"])
    if ev is not None and ev.subject:
        return "address", ev.subject
    return None
