"""Response models of the JSON API: what ``/api/openapi.json`` documents.

Wei amounts are decimal strings (`Wei`): they exceed both 64-bit integers and the 2**53 a
JavaScript number holds exactly. The page handlers render the same data as plain dicts.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, PlainSerializer, WithJsonSchema
from supernet.explorer.queries import LIMIT

Wei = Annotated[
    int,
    PlainSerializer(str, return_type=str),
    WithJsonSchema({"type": "string", "pattern": "^[0-9]+$", "description": "an amount in wei (decimal)"}),
]


class OperatorOut(BaseModel):
    """A node or validator."""

    address: str
    role: str
    status: str
    registered: bool
    endpoint: str | None
    model_ids: list[str]
    price_per_token: Wei
    stake: Wei
    unbonding: Wei
    frozen_count: int
    slash_count: int
    slashed: Wei
    tasks: int
    batches: int
    fees: Wei
    votes: int
    challenges_won: int
    challenges_lost: int
    registered_at: int


class BatchOut(BaseModel):
    """A committed batch."""

    batch_id: int
    node: str
    root: str
    count: int
    commit_block: int
    manifest_cid: str
    block: int
    timestamp: int
    tx_hash: str
    gas_used: int
    seed: str | None
    manifest_status: str
    manifest_error: str | None


class ReceiptOut(BaseModel):
    """One committed receipt: a task where `signed`, else the node's unsigned claim."""

    batch_id: int
    idx: int
    request_hash: str
    node: str
    user: str
    model_id: str
    input_hash: str
    output_hash: str
    trace_hash: str
    trace_cid: str
    fee: Wei
    leaf: str
    signature: str | None
    agent: str
    request: dict[str, str]
    request_signature: str | None
    signed: bool = Field(
        description="whether the user signed this request for this node (its digest the task id): "
        "only such a receipt is a task; any other is the node's own claim, in whatever user's name"
    )
    timestamp: int


class ChallengeOut(BaseModel):
    """A challenge and, once resolved, its split."""

    challenge_id: int
    batch_id: int
    challenger: str
    node: str
    leaf: str
    request_hash: str
    vote_deadline: int
    evidence_cid: str
    opened_at: int
    status: str
    fraud_stake: Wei
    honest_stake: Wei
    slashed: Wei
    refund: Wei = Field(
        description="a fraud verdict's refund: held for whoever shows the signed request until "
        "claimed (`refund_claimed_at` null), then the amount credited to the request's user"
    )
    refund_claimed_at: int | None = Field(description="when the refund was claimed (RefundClaimed)")
    challenger_reward: Wei
    voter_pool: Wei
    burned: Wei
    resolved_at: int | None


class VoteOut(BaseModel):
    """One stake-weighted vote: ``fraud`` is None while it is sealed (or if it was never opened)."""

    challenge_id: int
    validator: str
    fraud: bool | None
    weight: Wei
    timestamp: int
    sealed_at: int | None


class EventOut(BaseModel):
    """One indexed protocol event (``args`` as decoded from the log)."""

    id: int
    block: int
    log_index: int
    tx_hash: str
    timestamp: int
    contract: str
    name: str
    args: dict[str, Any]
    subject: str | None


class TotalsOut(BaseModel):
    """Network-wide totals."""

    tasks: int
    batches: int
    committed: int
    commit_gas: int
    gas_per_task: int
    challenges: int
    frauds: int
    rejected: int
    fees: Wei
    slashed: Wei
    burned: Wei
    refunded: Wei = Field(description="credited to users by claimed fraud refunds (RefundClaimed)")
    refunds_held: Wei = Field(description="fraud verdicts' refunds held for their users, not claimed yet")
    redeemed: Wei
    challenger_rewards: Wei
    decoys: int  # challenges that found a node's decoy (the validator was paid a bounty)
    decoy_bounties: Wei
    indexed_block: int | None = None


class NetworkOut(BaseModel):
    """The network page's data."""

    nodes: list[OperatorOut]
    validators: list[OperatorOut]
    totals: TotalsOut
    charts: dict[str, list[tuple[int, float]]]
    batches: list[BatchOut]
    challenges: list[ChallengeOut]
    events: list[EventOut]
    indexed_block: int


class Sampling(BaseModel):
    """Which receipts each validator must check (the contract's ``isSampled``)."""

    seed: str | None
    sampled: dict[str, list[int]]
    note: str


class BatchDetailOut(BaseModel):
    """A batch with its receipts, the challenges on it and its sampling."""

    batch: BatchOut
    receipts: list[ReceiptOut]
    challenges: list[ChallengeOut]
    sampling: Sampling


class CheckOut(BaseModel):
    """One check of the receipt verification."""

    name: str
    ok: bool
    detail: str


class VerificationOut(BaseModel):
    """The result of `supernet.sdk.client.verify.check_receipt` on this receipt."""

    ok: bool
    checks: list[CheckOut]


class TaskOut(BaseModel):
    """A task: receipt, batch, Merkle proof, trace (readable) and verification."""

    receipt: ReceiptOut
    batch: BatchOut
    others: list[ReceiptOut] = Field(description=f"other receipts with this task id (at most {LIMIT})")
    others_not_listed: int = Field(description="receipts with this task id beyond those listed")
    proof: list[str]
    trace: dict[str, Any] | None
    trace_error: str | None
    verification: VerificationOut | None
    verification_note: str
    challenges: list[ChallengeOut]


class FindingOut(BaseModel):
    """One finding of a validator's evidence."""

    check: str
    message: str
    call: int | None
    position: int | None
    expected: str
    claimed: str


class EvidenceOut(BaseModel):
    """A validator's published evidence."""

    validator: str
    fraud: bool
    unverifiable: str | None
    llm_calls: int
    tool_calls: int
    findings: list[FindingOut]


class ChallengeDetailOut(BaseModel):
    """A challenge with its votes, the accused receipt and the evidence."""

    challenge: ChallengeOut
    votes: list[VoteOut]
    receipt: ReceiptOut | None
    evidence: EvidenceOut | None
    evidence_error: str | None


class AddressOut(BaseModel):
    """Everything about one address."""

    address: str
    operator: OperatorOut | None
    batches: list[BatchOut]
    receipts: list[ReceiptOut]
    challenges: list[ChallengeOut]
    votes: list[VoteOut]
    events: list[EventOut]


class SearchOut(BaseModel):
    """What a query names and the page showing it."""

    kind: str
    id: str
    url: str
