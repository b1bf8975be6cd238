"""Pages that need more than the index: a task's proof, trace and verification; a challenge's
evidence; a batch's sampling. They read the content store (and the chain, when connected).

The verification is the SDK's own (`supernet.sdk.client.verify.check_receipt`, what
``supernet task verify`` runs): the explorer builds the same receipt document a node serves at
``GET /v1/tasks/{id}/receipt`` from the batch manifest, with the Merkle proof from the batch's
leaves, and takes the committed batch (node, root, count) from its ``BatchCommitted`` event.
The trace supplies the input and output the hashes are checked against.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session
from supernet.explorer import queries
from supernet.explorer.content import ContentReader, ContentUnavailable
from supernet.explorer.db.models import Batch, Challenge, Receipt
from supernet.sdk.chain.beacon import HeaderError
from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.chain.errors import ContractError
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import Receipt as ChainReceipt
from supernet.sdk.chain.sampling import batch_seed, sample
from supernet.sdk.chain.tasks import Batch as BatchRef
from supernet.sdk.chain.tasks import TaskManager
from supernet.sdk.client.verify import VerificationReport, check_receipt
from supernet.sdk.formats.evidence import Evidence
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import LlmEvent, ToolEvent, Trace
from web3.exceptions import Web3Exception


def _b(h: str) -> bytes:
    return bytes.fromhex(h.removeprefix("0x"))


def short_json(value: Any, limit: int = 400) -> str:
    """A value as compact JSON for display, cut at ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def receipt_document(r: Receipt, proof: list[bytes]) -> dict[str, Any]:
    """The node's ``GET /v1/tasks/{id}/receipt`` document, rebuilt from the index."""
    chain_receipt = ChainReceipt(
        _b(r.request_hash),
        r.user,
        _b(r.model_id),
        _b(r.input_hash),
        _b(r.output_hash),
        _b(r.trace_hash),
        r.fee,
    )
    return {
        "receipt": chain_receipt.to_json(),
        "leaf": r.leaf,
        "signature": r.signature,
        "traceCid": r.trace_cid,
        "batch": {"chainBatchId": r.batch_id, "index": r.idx, "proof": ["0x" + p.hex() for p in proof]},
    }


def trace_summary(trace: Trace) -> dict[str, Any]:
    """The trace as people (and the JSON API) read it: agent, input, output, each syscall."""
    events: list[dict[str, Any]] = []
    for ev in trace.events:
        d: dict[str, Any] = {"kind": ev.kind}
        if isinstance(ev, LlmEvent):
            d.update(
                model_id=ev.model_id,
                messages=[{"role": m.role, "content": m.content} for m in ev.messages],
                output=ev.text,
                prompt_tokens=len(ev.prompt_ids),
                output_tokens=len(ev.output_ids),
                finish_reason=ev.finish_reason,
                seed=ev.params.seed,
                temperature=ev.params.temperature,
            )
        elif isinstance(ev, ToolEvent):
            d.update(
                name=ev.name,
                args=short_json(dict(ev.args)),
                result=short_json(ev.result),
                error=ev.error,
                deterministic=ev.deterministic,
            )
        else:
            d["detail"] = short_json({k: v for k, v in vars(ev).items() if k != "kind"})
        events.append(d)
    return {
        "agent": trace.agent.id,
        "agent_code_hash": trace.agent.code_hash,
        "model_id": trace.model_id,
        "input": trace.input if isinstance(trace.input, str) else short_json(trace.input, 2000),
        "output": trace.output,
        "status": trace.status,
        "error": trace.error,
        "engine": f"{trace.engine.device} / {trace.engine.dtype}",
        "events": events,
    }


@dataclass(frozen=True)
class TaskDetail:
    """Everything the task page shows beyond the receipt row."""

    receipt: dict[str, Any]
    batch: dict[str, Any]
    others: list[dict[str, Any]]  # other receipts with this task id: at most `queries.LIMIT`
    others_not_listed: int  # and how many more there are
    proof: list[str]
    trace: dict[str, Any] | None
    trace_error: str | None
    verification: VerificationReport | None
    verification_note: str
    challenges: list[dict[str, Any]]


def task_detail(s: Session, content: ContentReader | None, task_id: str) -> TaskDetail | None:
    """The task page's data (None: no committed receipt has this task id)."""
    receipts, total = queries.receipts_of_task(s, task_id)
    if not receipts:
        return None
    r = receipts[0]
    b = s.get(Batch, r.batch_id)
    assert b is not None  # receipts are only attached to indexed batches
    proof = ReceiptTree(queries.batch_leaves(s, r.batch_id)).proof_at(r.idx)
    doc = receipt_document(r, proof)
    trace_doc: Any = None
    trace: Trace | None = None
    trace_error: str | None = None
    if content is None:
        trace_error = "no content store configured"
    else:
        try:
            trace_doc = content.dag(r.trace_cid)
            trace = Trace.from_dag(trace_doc)
        except ContentUnavailable as exc:
            trace_error = f"trace not available: {exc}"
        except FormatError as exc:
            trace_error = f"malformed trace: {exc}"

    report: VerificationReport | None = None
    note = "the same checks as `supernet task verify`, on the committed receipt"
    if r.signature is None:
        note = "receipt posted on chain by an availability answer: no node signature to check"
    else:
        try:
            report = check_receipt(
                doc,
                task_id=r.request_hash,
                user=r.user,
                node=r.node,
                task_input=None if trace is None else trace.input,
                output=None if trace is None else trace.output,
                onchain_batch=lambda _id: (b.node, _b(b.root), b.count),
                trace_loaded=None if content is None else trace_doc is not None,
                trace_doc=trace_doc,
                # the manifest's signed request: the node it names, its model, input, maxFee and
                # agent profile (its digest and signature are the validators' checks)
                request=TaskRequest.from_json(r.request) if r.request else None,
            )
        except (ValueError, TypeError) as exc:  # a node can publish any bytes as its "signature"
            report = VerificationReport(r.request_hash)
            report.add("node signature", False, f"unreadable signature: {exc}")
    if report is not None:
        # checked at ingest with the deployment's domain (`ManifestEntry.signed_by_user`): the
        # request's digest is this task id, it names this node and this user signed it. Without it
        # the receipt is the node's own claim, whatever else it gets right.
        report.add(
            "request signed by the user",
            bool(r.signed),
            "for this node, digest = task id" if r.signed else "no valid user signature: the node's claim",
        )

    q = select(Challenge).where(Challenge.request_hash == r.request_hash).order_by(Challenge.challenge_id)
    challenges = [queries.row(c) for c in s.scalars(q)]
    return TaskDetail(
        receipt=queries.row(r),
        batch=queries.row(b),
        others=[queries.row(o) for o in receipts[1:]],
        others_not_listed=total - len(receipts),
        proof=doc["batch"]["proof"],
        trace=None if trace is None else trace_summary(trace),
        trace_error=trace_error,
        verification=report,
        verification_note=note,
        challenges=challenges,
    )


def evidence(content: ContentReader | None, cid: str) -> tuple[dict[str, Any] | None, str | None]:
    """A challenge's evidence document, readable: ``(evidence, None)`` or ``(None, why not)``."""
    if content is None:
        return None, "no content store configured"
    try:
        ev = Evidence.from_dag(content.dag(cid))
    except ContentUnavailable as exc:
        return None, f"evidence not available: {exc}"
    except FormatError as exc:
        return None, f"malformed evidence: {exc}"
    return {
        "validator": ev.validator,
        "fraud": ev.fraud,
        "unverifiable": ev.unverifiable,
        "llm_calls": ev.llm_calls,
        "tool_calls": ev.tool_calls,
        "findings": [
            {
                "check": f.check,
                "message": f.message,
                "call": f.call,
                "position": f.position,
                "expected": short_json(f.expected),
                "claimed": short_json(f.claimed),
            }
            for f in ev.findings
        ],
    }, None


MAX_DRAWS = 16_384
"""(validator, receipt) draws one view of a batch computes (keccak each, locally)."""


def sampling(
    s: Session, tm: TaskManager | None, batch_id: int, count: int, validators: list[str]
) -> dict[str, Any]:
    """Which receipts each validator must check, and the seed: the contract's ``isSampled`` rule
    computed here (`supernet.sdk.chain.sampling`) from the indexed commit and one read of the
    SeedBeacon: at most three reads of the chain a view, whatever the batch's size (it was one
    ``eth_call`` per receipt and validator, and a log scan from block 0, for every anonymous view)."""
    if tm is None:
        return {"seed": None, "sampled": {}, "note": "no chain connection"}
    if count * len(validators) > MAX_DRAWS:
        return {"seed": None, "sampled": {}, "note": "batch too large to list sampling here"}
    try:
        rate = int(tm.call("SAMPLE_RATE_PPM"))
        seed = _seed(s, tm, batch_id)
        sampled = {v: sample(seed, v, count, rate) for v in validators}
    except ContractError as exc:
        return {"seed": None, "sampled": {}, "note": f"seed not available: {exc.error_name}"}
    except (LookupError, HeaderError) as exc:
        return {"seed": None, "sampled": {}, "note": str(exc)}
    except (OSError, Web3Exception) as exc:  # the page still shows what the index knows
        return {"seed": None, "sampled": {}, "note": f"chain not reachable: {type(exc).__name__}"}
    return {"seed": "0x" + seed.hex(), "sampled": sampled, "note": ""}


def _seed(s: Session, tm: TaskManager, batch_id: int) -> bytes:
    """The batch's seed, from the indexed commit's block and the SeedBeacon's value of its seed
    block (readable for good once sealed, also after the batch's slot is reused), or before
    anyone sealed it, the value its header proves (what the validators sample by).

    Raises:
        LookupError: the batch is not indexed, or its seed is not known (yet, or any more).
    """
    batch = s.get(Batch, batch_id)
    if batch is None:
        raise LookupError(f"no batch {batch_id} is indexed")
    ref = BatchRef(batch_id, batch.node, 0, batch.count, batch.commit_block, 0, b"")
    number = tm.seed_block(ref)
    value, known = tm.seed_beacon.randomness(number)
    if not known:
        seed = tm.header_seed(ref)
        if seed is None:
            raise LookupError(f"seed not known yet: seed block {number} is not mined")
        return seed
    if not any(value):
        raise LookupError(f"seed expired: block {number} was not sealed in time, every receipt is sampled")
    return batch_seed(value, batch_id)
