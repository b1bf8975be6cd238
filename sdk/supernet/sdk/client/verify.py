"""Proof that a receipt is genuine and committed: every check a user can make on its own.

Checks: the receipt names this task and user; input and output hashes match what was sent and
received; the node signed the receipt's leaf; the leaf's Merkle proof leads to the root the node
committed on chain (in a batch by that node); the trace CID hashes to ``traceHash`` and the
trace is in the content store (the store re-hashes what it returns).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from eth_utils import to_checksum_address
from supernet.sdk.chain.eip712 import (
    Domain,
    ReceiptPromise,
    TaskRequest,
    hash_task_request,
    recover_receipt_promise,
    recover_task_request,
)
from supernet.sdk.chain.merkle import verify as merkle_verify
from supernet.sdk.chain.receipts import (
    Receipt,
    output_hash,
    recover_receipt_signer,
    trace_hash,
)
from supernet.sdk.errors import SupernetError
from supernet.sdk.formats.binding import signed_input_hash_or_reason, trace_receipt_mismatches
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.profile import AgentProfile, profile_hash_or_reason
from supernet.sdk.formats.trace import TRACE_TYPE, Trace, trace_from_block
from supernet.sdk.store.cids import encode_dag
from supernet.sdk.store.errors import InvalidBlockError, InvalidCIDError


class VerificationError(SupernetError, ValueError):
    """A receipt failed a check (``report`` says which)."""

    def __init__(self, message: str, report: VerificationReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class Check:
    """One named check and its outcome."""

    name: str
    ok: bool
    detail: str = ""


@dataclass
class VerificationReport:
    """All checks of one receipt."""

    task_id: str
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True iff every check passed."""
        return all(c.ok for c in self.checks)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        """Record one check."""
        self.checks.append(Check(name, bool(ok), detail))

    def failed(self) -> list[Check]:
        """The checks that did not pass."""
        return [c for c in self.checks if not c.ok]

    @property
    def pending(self) -> bool:
        """Every check passed except that the receipt is not committed on chain yet: not a failure,
        the node commits batches as they fill or age (verify again later)."""
        return [c.name for c in self.failed()] == [PENDING_CHECK]


PENDING_CHECK = "committed on chain"


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def check_receipt(
    doc: dict[str, Any],
    *,
    task_id: str,
    user: str,
    node: str,
    task_input: Any | None,
    output: str | None,
    onchain_batch: Callable[[int], tuple[str, bytes, int]],
    trace_loaded: bool | None,
    trace_doc: Any = None,
    model_id: str | None = None,
    max_fee: int | None = None,
    fee: int | None = None,
    domain: Domain | None = None,
    now: float | None = None,
    request: TaskRequest | None = None,
    promise_horizon: int | None = None,
    promise_window: Callable[[int], tuple[int, int]] | None = None,
) -> VerificationReport:
    """Run every check on a ``GET /v1/tasks/{id}/receipt`` document.

    Args:
        doc: the node's receipt document.
        task_id: the id the user computed when signing (requestHash).
        user: the user's address.
        node: the node's address.
        task_input: the input sent (None: skip the input check): the receipt must carry its signed
            hash (RFC 8785, so ``1.0`` and ``1`` are one input, as for the node; a trace's input
            must also be in its normal form, checked with the trace's fields).
        output: the output received (None: skip the output check).
        onchain_batch: ``batch_id -> (node, root, count)`` read from the TaskManager.
        trace_loaded: whether the trace CID was fetched from the store (None: not tried).
        trace_doc: the decoded trace, if fetched: it must be a well-formed ``supernet/trace/v1``
            (`supernet.sdk.formats.trace`) of this task, with this output, within
            ``MAX_TRACE_BYTES`` (a larger one could not be posted in an availability answer).
        model_id: the ``0x`` model id the user signed (``modelId``): the receipt must name it
            (a node must not answer with another model). None: skip the check.
        max_fee: the ``maxFee`` the user signed: the receipt's fee must not be above it.
        fee: the fee the user agreed to pay (known to the client that signed): the receipt's fee
            must equal it.
        domain: the protocol's EIP-712 domain: the node's `ReceiptPromise` to commit the receipt
            (``doc["promise"]``) must be there and signed by the node (None: skip the check).
        now: the chain's time: a receipt still not committed after its promised ``commitBy`` fails
            ("commit promise kept"; the user can claim the omission, `Client.claim_omission`).
        request: the request the user signed (from its own state, or from the trace once its
            signature was checked, `request_in_trace`): the receipt and the trace must be for it
            (its digest is the task id, its node signed the receipt, its model, input, maxFee and
            agent profile are the ones served). None: those checks are skipped.
        promise_horizon: the latest ``commitBy`` a claim could still slash
            (`supernet.sdk.chain.promises.promise_horizon`): an uncommitted receipt whose promise
            is due later fails "commit promise backed" (None: not judged, e.g. a promise already
            kept).
        promise_window: ``commitBy -> (opens, closes)``, when the chain accepts the omission
            claim (`supernet.sdk.chain.promises.claim_window`: the signed request's deadline and a
            leaving node's exit bound it); None: from ``commitBy``, closing unknown.

    Signatures (the receipt's, the promise's) must be in the form the contracts accept
    (`supernet.sdk.chain.signatures.require_canonical`): a promise the chain would refuse is no
    promise. Whenever the trace is loaded, every field it shares with the receipt is compared
    (`supernet.sdk.formats.binding`), whether or not the user holds the output itself.
    """
    rep = VerificationReport(task_id)
    try:
        receipt = Receipt.from_json(doc["receipt"])
        receipt.leaf()  # every field encodable
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # the node's malformed answer
        rep.add("receipt format", False, f"{type(exc).__name__}: {exc}")
        return rep
    rep.add("request hash", _hex(receipt.request_hash) == task_id.lower(), _hex(receipt.request_hash))
    rep.add("user", to_checksum_address(receipt.user) == to_checksum_address(user), receipt.user)
    if task_input is not None:
        ih = _hex(receipt.input_hash)
        rep.add("input hash", ih == signed_input_hash_or_reason(task_input), ih)
    if output is not None:
        rep.add("output hash", receipt.output_hash == output_hash(output), _hex(receipt.output_hash))
    if model_id is not None:
        rep.add("model id", _hex(receipt.model_id) == model_id.lower(), _hex(receipt.model_id))
    if max_fee is not None:
        rep.add("fee within maxFee", receipt.fee <= max_fee, f"{receipt.fee} (maxFee {max_fee})")
    if fee is not None:
        rep.add("fee", receipt.fee == fee, f"{receipt.fee} (agreed {fee})")
    if request is not None:
        _check_request(rep, request, receipt, task_id, node, domain)
    leaf = receipt.leaf()
    rep.add("leaf", _hex(leaf) == doc["leaf"].lower(), _hex(leaf))
    try:
        signer = recover_receipt_signer(receipt, bytes.fromhex(str(doc["signature"])[2:]))
    except Exception as exc:  # garbage bytes: eth-keys raises several types; a failed check, not a crash
        rep.add("node signature", False, f"malformed: {type(exc).__name__}: {exc}")
    else:
        rep.add("node signature", signer == to_checksum_address(node), signer)
    promise = doc.get("promise")
    if domain is not None:
        if promise is None:
            rep.add("commit promise", False, "the node signed no promise to commit this receipt")
        else:
            signed = ReceiptPromise(receipt.request_hash, leaf, int(promise["commitBy"]))
            try:
                by = recover_receipt_promise(signed, domain, bytes.fromhex(str(promise["signature"])[2:]))
            except Exception as exc:  # garbage bytes, as above
                rep.add("commit promise", False, f"malformed: {type(exc).__name__}: {exc}")
            else:
                rep.add("commit promise", by == to_checksum_address(node), f"by {promise['commitBy']}, {by}")
    try:
        trace_ok = trace_hash(doc["traceCid"]) == receipt.trace_hash
    except InvalidCIDError:
        trace_ok = False
    rep.add("trace hash", trace_ok, doc["traceCid"])
    if trace_loaded is not None:
        rep.add("trace in store", trace_loaded, doc["traceCid"])
    if trace_doc is not None:
        try:
            # re-encoded as committed (dag-cbor is canonical): over MAX_TRACE_BYTES is the node's fault
            trace = trace_from_block(encode_dag(trace_doc))
        except (FormatError, InvalidBlockError) as exc:
            rep.add("trace format", False, str(exc))
        else:
            rep.add("trace format", True, TRACE_TYPE)
            _check_trace(rep, trace, receipt, output, request)
    batch = doc.get("batch") or {}
    if batch.get("chainBatchId") is None or batch.get("proof") is None:
        window: tuple[int, int | None] | None = None
        if promise is not None:
            commit_by = int(promise["commitBy"])
            window = (commit_by, None) if promise_window is None else promise_window(commit_by)
        if window is not None and promise_horizon is not None and window[0] > promise_horizon:
            rep.add(
                "commit promise backed",
                False,
                f"due at {window[0]}, after {promise_horizon}, the last time a claim still finds the "
                "node's stake (supernet.sdk.chain.promises): the promise cannot be enforced",
            )
            return rep
        if window is not None and now is not None and now >= window[0]:
            opens, closes = window
            if closes is not None and now >= closes:
                detail = f"not committed; its claim window ({opens} to {closes}) has closed: no claim"
            else:
                detail = f"not committed by {opens}: claim the omission (supernet task omission)"
            rep.add("commit promise kept", False, detail)
            return rep
        rep.add(PENDING_CHECK, False, "receipt not committed yet")
        return rep
    batch_node, root, count = onchain_batch(int(batch["chainBatchId"]))
    rep.add("batch node", to_checksum_address(batch_node) == to_checksum_address(node), batch_node)
    proof = [bytes.fromhex(p[2:]) for p in batch["proof"]]
    rep.add(
        "merkle inclusion",
        merkle_verify(proof, root, leaf, int(batch.get("index", -1)), count),
        f"batch {batch['chainBatchId']} #{batch.get('index')} root {_hex(root)}",
    )
    return rep


def _check_trace(
    rep: VerificationReport, trace: Trace, receipt: Receipt, output: str | None, request: TaskRequest | None
) -> None:
    """The trace against the receipt (every field they share) and against what the user holds."""
    wrong = trace_receipt_mismatches(trace, receipt)
    by_field = {m.field: m for m in wrong if m.call is None}
    for name in TRACE_FIELDS:
        m = by_field.get(name)
        rep.add(f"trace {name}", m is None, "" if m is None else f"{m.claimed} (receipt: {m.expected})")
    calls = [m for m in wrong if m.call is not None]
    rep.add("trace LLM models", not calls, ", ".join(f"call {m.call}: {m.claimed}" for m in calls))
    if output is not None:
        summary = f"{len(trace.events)} events, status {trace.status}"
        rep.add("trace output", trace.output == output, summary)
    if request is not None:
        profile = profile_hash_or_reason(AgentProfile.of_trace(trace))
        rep.add("trace agent profile", profile == _hex(request.agent_hash), profile)
        if trace.request is not None:
            rep.add("trace request", trace.request.to_json() == request.to_json(), "")


TRACE_FIELDS = ("task id", "input hash", "output hash", "model id", "user", "fee")
"""The trace fields the receipt commits (`trace_receipt_mismatches`), each a check of its own."""


def _check_request(
    rep: VerificationReport,
    request: TaskRequest,
    receipt: Receipt,
    task_id: str,
    node: str,
    domain: Domain | None,
) -> None:
    """The receipt against the request the user signed."""
    if domain is not None:
        digest = hash_task_request(request, domain)
        rep.add("signed request", _hex(digest) == task_id.lower(), _hex(digest))
    rep.add("request node", to_checksum_address(request.node) == to_checksum_address(node), request.node)
    pairs = (
        ("request model", request.model_id, receipt.model_id),
        ("request input", request.input_hash, receipt.input_hash),
    )
    for name, signed, got in pairs:
        rep.add(name, signed == got, f"{_hex(got)} (signed {_hex(signed)})")
    # the fee charged is the signed maxFee, and the receipt must say so (docs/protocol.md)
    rep.add("request maxFee", receipt.fee == request.max_fee, f"{receipt.fee} (maxFee {request.max_fee})")


def request_in_trace(trace_doc: Any, task_id: str, user: str, domain: Domain) -> TaskRequest | str:
    """The request a trace carries, if it is this task's and this user signed it, else why not.

    A task the client did not send itself has no request in its state; the node's trace carries
    the one it ran (with the user's signature). Without it the client could not tell which node
    the user asked, and any node that learnt the task id could answer for it."""
    try:
        trace = trace_from_block(encode_dag(trace_doc))
    except (FormatError, InvalidBlockError) as exc:
        return f"malformed trace: {exc}"
    if trace.request is None or trace.request_signature is None:
        return "the trace carries no signed request"
    if _hex(hash_task_request(trace.request, domain)) != task_id.lower():
        return "the trace's request is not this task's"
    try:
        signer = recover_task_request(trace.request, domain, trace.request_signature)
    except ValueError as exc:  # malformed or non-canonical signature
        return f"the trace's request signature is invalid: {exc}"
    if signer != to_checksum_address(user) or to_checksum_address(trace.request.user) != signer:
        return f"the trace's request was signed by {signer}, not by this user"
    return trace.request
