"""The ingest path: one decoded event in, the index's tables updated (in the caller's transaction).

`ingest` writes the raw event and folds it into the derived tables (operators, batches,
challenges, votes, totals, stake points); `attach_manifest` adds a batch's receipts once its
manifest was read from the content store (a receipt is a task only where its user signed the
request: everything else a manifest says is the node's word). Both are pure functions of their
input and the current tables, so replaying the events table rebuilds the same index (how a reorg
is undone) and the benchmark can feed synthesised events through exactly this code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from eth_utils import to_checksum_address
from sqlalchemy import select
from sqlalchemy.orm import Session
from supernet.explorer.chain import ChainLog
from supernet.explorer.db.models import Batch, Challenge, Event, Operator, Receipt, StakePoint, Total, Vote
from supernet.sdk.chain.eip712 import Domain
from supernet.sdk.formats.manifest import BatchManifest

T = TypeVar("T")

SUBJECT_FIELDS = ("operator", "node", "validator", "challenger", "user", "account", "publisher")
"""Argument names that say which address an event is about, in order of preference."""

_STAKE_EVENTS = {"NodeRegistered", "ValidatorRegistered", "StakeAdded", "UnbondRequested", "Slashed"}


def _checksum(value: str) -> str:
    return to_checksum_address(value)


def _subject(args: Mapping[str, Any]) -> str | None:
    for f in SUBJECT_FIELDS:
        if isinstance(args.get(f), str):
            return _checksum(args[f])
    return None


def _slim(name: str, args: Mapping[str, Any]) -> dict[str, Any]:
    """Arguments as stored: an availability answer's trace bytes (up to 1 MiB) become their size."""
    out = dict(args)
    if name == "AvailabilityAnswered" and isinstance(out.get("trace"), str):
        out["traceBytes"] = (len(out.pop("trace")) - 2) // 2
    return out


def _get(session: Session, model: type[T], key: Any) -> T | None:
    """``session.get`` that also sees rows added in this session but not flushed yet.

    Ingest runs without autoflush (one flush per event made indexing ~3x slower), so rows this
    transaction created are looked up in ``session.info`` first.
    """
    new = session.info.setdefault("explorer_new", {})
    found = new.get((model, key))
    return found if found is not None else session.get(model, key)


def _add(session: Session, obj: T, key: Any) -> T:
    session.add(obj)
    session.info.setdefault("explorer_new", {})[(type(obj), key)] = obj
    return obj


def add_total(session: Session, key: str, amount: int) -> None:
    """Add ``amount`` to a running total."""
    row = _get(session, Total, key)
    if row is None:
        _add(session, Total(key=key, value=amount), key)
    else:
        row.value = row.value + amount


def _operator(session: Session, address: str, role: str, timestamp: int) -> Operator:
    op = _get(session, Operator, address)
    if op is None:
        op = Operator(
            address=address,
            role=role,
            registered=True,
            model_ids=[],
            price_per_token=0,
            stake=0,
            unbonding=0,
            frozen_count=0,
            slash_count=0,
            slashed=0,
            tasks=0,
            batches=0,
            fees=0,
            votes=0,
            challenges_won=0,
            challenges_lost=0,
            registered_at=timestamp,
        )
        _add(session, op, address)
    return op


def ingest(session: Session, log: ChainLog, timestamp: int, gas_used: int = 0) -> Event:
    """Record one event and apply it to the derived tables.

    Args:
        session: the open transaction (the caller commits it together with the cursor).
        log: the decoded event.
        timestamp: its block's timestamp.
        gas_used: the transaction's gas, kept with a ``BatchCommitted`` (gas per task).
    """
    args = _slim(log.name, log.args)
    if log.name == "BatchCommitted":
        args["gasUsed"] = gas_used  # not an event argument: the commit transaction's receipt
    ev = Event(
        block=log.block,
        log_index=log.log_index,
        tx_hash=log.tx_hash,
        timestamp=timestamp,
        contract=log.contract,
        name=log.name,
        args=args,
        subject=_subject(args),
    )
    session.add(ev)
    project(session, ev)
    return ev


def project(session: Session, ev: Event) -> None:
    """Fold one recorded event into the derived tables (also used to rebuild them after a reorg)."""
    handler = _HANDLERS.get(ev.name)
    if handler is not None:
        with session.no_autoflush:
            handler(session, dict(ev.args), ev, ev.timestamp)
    if ev.name in _STAKE_EVENTS:
        session.flush()
        total = sum(session.scalars(select(Operator.stake).where(Operator.registered.is_(True))))
        session.add(StakePoint(block=ev.block, timestamp=ev.timestamp, total_stake=total))


# -- handlers, one per event that changes derived state ------------------------------------------


def _node_registered(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    op = _operator(s, _checksum(a["node"]), "node", ts)
    op.registered, op.endpoint, op.model_ids = True, a["endpoint"], list(a["modelIds"])
    op.price_per_token, op.stake = int(a["pricePerToken"]), int(a["stake"])


def _validator_registered(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    op = _operator(s, _checksum(a["validator"]), "validator", ts)
    op.registered, op.stake = True, int(a["stake"])


def _stake_added(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    op = _get(s, Operator, _checksum(a["operator"]))
    if op is not None:
        op.stake = int(a["newStake"])


def _unbond_requested(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    op = _get(s, Operator, _checksum(a["operator"]))
    if op is not None:
        op.stake = max(0, op.stake - int(a["amount"]))
        op.unbonding = int(a["totalUnbonding"])


def _deregistered(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    op = _get(s, Operator, _checksum(a["operator"]))
    if op is not None:
        op.registered = False


def _unbonded_withdrawn(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    op = _get(s, Operator, _checksum(a["operator"]))
    if op is not None:
        op.unbonding = 0  # withdrawUnbonded pays out the whole unbonding amount


def _slashed(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    op = _get(s, Operator, _checksum(a["operator"]))
    if op is not None:
        op.stake = max(0, op.stake - int(a["fromStake"]))
        op.unbonding = max(0, op.unbonding - int(a["fromUnbonding"]))
        op.slash_count += 1
        op.slashed = op.slashed + int(a["amount"])
    add_total(s, "slashed", int(a["amount"]))


def _frozen(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    op = _get(s, Operator, _checksum(a["operator"]))
    if op is not None:
        op.frozen_count = int(a["frozenCount"])


def _node_field(field: str, arg: str) -> Any:
    def handler(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
        op = _get(s, Operator, _checksum(a["node"]))
        if op is not None:
            value = a[arg]
            setattr(op, field, int(value) if field == "price_per_token" else value)

    return handler


def _batch_committed(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    node = _checksum(a["node"])
    _add(
        s,
        Batch(
            batch_id=int(a["batchId"]),
            node=node,
            root=a["root"],
            count=int(a["count"]),
            commit_block=int(a["commitBlock"]),
            manifest_cid=a["manifestCid"],
            block=log.block,
            timestamp=ts,
            tx_hash=log.tx_hash,
            gas_used=int(a.get("gasUsed", 0)),
            manifest_status="pending",
        ),
        int(a["batchId"]),
    )
    op = _get(s, Operator, node)
    if op is not None:
        op.batches += 1
    # the count is the node's word until its manifest proves it: "committed" and the gas per task
    # are counted when the manifest is attached (`attach_manifest`), so one commit of count 2**32-1
    # and no manifest cannot fake the network's activity
    add_total(s, "batches", 1)


def _challenge_opened(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    _add(
        s,
        Challenge(
            challenge_id=int(a["challengeId"]),
            batch_id=int(a["batchId"]),
            challenger=_checksum(a["challenger"]),
            node=_checksum(a["node"]),
            leaf=a["leaf"],
            request_hash=a["requestHash"],
            vote_deadline=int(a["voteDeadline"]),
            evidence_cid=a["evidenceCid"],
            opened_at=ts,
            status="open",
            fraud_stake=0,
            honest_stake=0,
            slashed=0,
            refund=0,
            refund_claimed_at=None,
            challenger_reward=0,
            voter_pool=0,
            burned=0,
        ),
        int(a["challengeId"]),
    )
    add_total(s, "challenges", 1)


def _vote_extended(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    """An availability claim on the challenged entry moved the vote's end (`TaskManager._extendVote`)."""
    ch = _get(s, Challenge, int(a["challengeId"]))
    if ch is not None:
        ch.vote_deadline = max(ch.vote_deadline, int(a["voteDeadline"]))


def _vote(s: Session, a: dict[str, Any], ts: int) -> Vote:
    """The vote row of ``a``'s (challenge, validator), made (and counted for its voter) if new."""
    key = (int(a["challengeId"]), _checksum(a["validator"]))
    vote = _get(s, Vote, key)
    if vote is None:
        vote = _add(s, Vote(challenge_id=key[0], validator=key[1], fraud=None, weight=0, timestamp=ts), key)
        op = _get(s, Operator, key[1])
        if op is not None:
            op.votes += 1
    return vote


def _vote_committed(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    """A sealed vote: its weight and bond are on chain, its side is not (`TaskManager.commitVote`)."""
    vote = _vote(s, a, ts)
    vote.weight, vote.sealed_at, vote.timestamp = int(a["weight"]), ts, ts


def _voted(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    """A vote opened: its side, and the weight that counts (`TaskManager.revealVote`)."""
    vote = _vote(s, a, ts)
    vote.fraud, vote.weight, vote.timestamp = bool(a["fraud"]), int(a["weight"]), ts


def _challenge_resolved(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    ch = _get(s, Challenge, int(a["challengeId"]))
    fraud = bool(a["fraud"])
    amounts = {k: int(a[k]) for k in ("slashed", "refund", "challengerReward", "voterPool", "burned")}
    if ch is not None:
        ch.status = "fraud" if fraud else "not_fraud"
        ch.fraud_stake, ch.honest_stake = int(a["fraudStake"]), int(a["honestStake"])
        ch.slashed, ch.refund, ch.burned = amounts["slashed"], amounts["refund"], amounts["burned"]
        ch.challenger_reward, ch.voter_pool = amounts["challengerReward"], amounts["voterPool"]
        ch.resolved_at = ts
        challenger = _get(s, Operator, ch.challenger)
        if challenger is not None:
            if fraud:
                challenger.challenges_won += 1
            else:
                challenger.challenges_lost += 1
    add_total(s, "frauds" if fraud else "rejected", 1)
    # held for whoever shows the signed request (`TaskManager.claimRefund`): nobody is refunded
    # until then, and a fabricated receipt's refund (no such request) is held for ever
    add_total(s, "refunds_held", amounts["refund"])
    add_total(s, "burned", amounts["burned"])
    add_total(s, "challenger_rewards", amounts["challengerReward"])


def _refund_claimed(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    """A fraud verdict's refund reached the request's signer (`TaskManager.claimRefund`): its signed
    maxFee out of what the verdict held (the challenge's ``refund`` until then), the rest burned.
    Only this is "refunded"; the verdict's hold (``amount + burned``) is released."""
    amount, burned = int(a["amount"]), int(a["burned"])
    ch = _get(s, Challenge, int(a["challengeId"]))
    if ch is not None:
        ch.refund, ch.burned, ch.refund_claimed_at = amount, ch.burned + burned, ts
    add_total(s, "refunded", amount)
    add_total(s, "refunds_held", -(amount + burned))
    add_total(s, "burned", burned)


def _decoy_revealed(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    """A challenged receipt was one of its node's decoys: the challenger was paid for checking."""
    ch = _get(s, Challenge, int(a["challengeId"]))
    bounty = int(a["bounty"])
    if ch is not None:
        ch.status = "decoy"
        ch.challenger_reward = bounty
        ch.resolved_at = ts
    add_total(s, "decoys", 1)
    add_total(s, "decoy_bounties", bounty)


def _availability_resolved(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    add_total(s, "burned", int(a["burned"]))
    add_total(s, "challenger_rewards", int(a["challengerReward"]))


def _availability_settled(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    """An availability claim was answered: the claim's bond paid the answer, and its fee share
    (`TaskManager._splitAnswerBond`) burned, counted in ``TaskManager.totalBurned``."""
    add_total(s, "burned", int(a["burned"]))


def _redeemed(s: Session, a: dict[str, Any], log: Event, ts: int) -> None:
    add_total(s, "redeemed", int(a["total"]))


_HANDLERS = {
    "NodeRegistered": _node_registered,
    "ValidatorRegistered": _validator_registered,
    "StakeAdded": _stake_added,
    "UnbondRequested": _unbond_requested,
    "Deregistered": _deregistered,
    "UnbondedWithdrawn": _unbonded_withdrawn,
    "Slashed": _slashed,
    "Frozen": _frozen,
    "Unfrozen": _frozen,
    "EndpointUpdated": _node_field("endpoint", "endpoint"),
    "ModelsUpdated": _node_field("model_ids", "modelIds"),
    "PriceUpdated": _node_field("price_per_token", "pricePerToken"),
    "BatchCommitted": _batch_committed,
    "ChallengeOpened": _challenge_opened,
    "VoteExtended": _vote_extended,
    "VoteCommitted": _vote_committed,
    "Voted": _voted,
    "ChallengeResolved": _challenge_resolved,
    "RefundClaimed": _refund_claimed,
    "DecoyRevealed": _decoy_revealed,
    "AvailabilityResolved": _availability_resolved,
    "AvailabilitySettled": _availability_settled,
    "Redeemed": _redeemed,
}


def manifest_problem(batch: Batch, manifest: BatchManifest) -> str | None:
    """Why a manifest does not describe the committed batch (None: it does)."""
    if manifest.node != _checksum(batch.node):
        return f"manifest names node {manifest.node}, the batch was committed by {batch.node}"
    if "0x" + manifest.root.hex() != batch.root.lower():
        return "the manifest's leaves do not build the committed root"
    if len(manifest.entries) != batch.count:
        return f"the manifest lists {len(manifest.entries)} receipts, the commit says {batch.count}"
    return None


def attach_manifest(
    session: Session, batch: Batch, manifest: BatchManifest | None, error: str = "", *, domain: Domain
) -> None:
    """Record a batch's receipts from its manifest, or why the manifest is unusable.

    A receipt counts as a task (the node's and the network's task and fee totals, its user's page)
    only if its user signed its request for this node (``domain``: the deployment's EIP-712
    domain); any other entry is recorded as the node's unsigned claim."""
    problem = error if manifest is None else manifest_problem(batch, manifest)
    if problem or manifest is None:
        batch.manifest_status, batch.manifest_error = "invalid", problem or "no manifest"
        return
    counted: list[tuple[bool, int]] = []
    seen: set[str] = set()
    for i, e in enumerate(manifest.entries):
        r, req = e.receipt, e.request
        task_id = "0x" + r.request_hash.hex()
        # one request is one task: a copy of a signed entry (in this batch or an earlier one)
        # is a claim, or a node could count its real customers' tasks as often as it liked
        signed = (
            e.signed_by_user(batch.node, domain) and task_id not in seen and not _counted(session, task_id)
        )
        seen.add(task_id)
        session.add(
            Receipt(
                batch_id=batch.batch_id,
                idx=i,
                request_hash="0x" + r.request_hash.hex(),
                node=batch.node,
                user=_checksum(r.user),
                model_id="0x" + r.model_id.hex(),
                input_hash="0x" + r.input_hash.hex(),
                output_hash="0x" + r.output_hash.hex(),
                trace_hash="0x" + r.trace_hash.hex(),
                trace_cid=e.trace_cid,
                fee=r.fee,
                leaf="0x" + e.leaf.hex(),
                signature=None if e.signature is None else "0x" + e.signature.hex(),
                agent=e.agent,
                request=req.to_json(),
                request_signature=None if e.request_signature is None else "0x" + e.request_signature.hex(),
                signed=signed,
                timestamp=batch.timestamp,
            )
        )
        counted.append((signed, r.fee))
    batch.manifest_status, batch.manifest_error = "ok", None
    count_receipts(session, batch, counted)


def _counted(session: Session, task_id: str) -> bool:
    """Whether an earlier batch already holds a counted (signed) receipt of ``task_id``."""
    q = select(Receipt.batch_id).where(Receipt.request_hash == task_id, Receipt.signed.is_(True)).limit(1)
    return session.scalar(q) is not None


def count_receipts(session: Session, batch: Batch, receipts: list[tuple[bool, int]]) -> None:
    """Add a proven batch's receipts, ``(signed, fee)`` each, to its node's and the network's
    totals: tasks and fees of the signed ones, the unsigned ones as claims, and all of them as
    committed (with the commit's gas: the gas per task)."""
    tasks = sum(1 for signed, _ in receipts if signed)
    fees = sum(fee for signed, fee in receipts if signed)
    op = _get(session, Operator, batch.node)
    if op is not None:
        op.tasks += tasks
        op.fees = op.fees + fees
    add_total(session, "tasks", tasks)
    add_total(session, "fees", fees)
    add_total(session, "claims", len(receipts) - tasks)
    add_total(session, "committed", len(receipts))
    add_total(session, "commit_gas", batch.gas_used)
