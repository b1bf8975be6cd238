"""Checks that need no model: the receipt against the user's signed request, and the trace against both.

Everything here is a pure function of one manifest entry (`supernet.sdk.formats.manifest`), the
batch's node address, the EIP-712 domain and the parsed trace; each mismatch becomes a `Finding`.

>>> check_trace_hash("bafyx", b"\\x00" * 32)[0].check.value
'trace'
"""

from __future__ import annotations

from supernet.sdk.chain.eip712 import Domain, hash_task_request, recover_task_request
from supernet.sdk.chain.receipts import recover_receipt_signer, trace_hash
from supernet.sdk.formats.binding import trace_receipt_mismatches
from supernet.sdk.formats.manifest import ManifestEntry
from supernet.sdk.store.errors import InvalidCIDError
from supernet.validator.evidence import Check, Finding
from supernet.validator.trace_view import Trace


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def check_receipt(entry: ManifestEntry, node: str, domain: Domain) -> list[Finding]:
    """The receipt against its leaf, the node's signature and the user's signed request."""
    r, q, out = entry.receipt, entry.request, []
    if r.leaf() != entry.leaf:
        out.append(
            Finding(
                Check.RECEIPT,
                "leaf is not the receipt's hash",
                expected=_hex(r.leaf()),
                claimed=_hex(entry.leaf),
            )
        )
    try:
        signer = node if entry.signature is None else recover_receipt_signer(r, entry.signature)
    except Exception:  # malformed signature bytes
        signer = ""
    if signer.lower() != node.lower():
        out.append(
            Finding(Check.RECEIPT, "receipt not signed by the committing node", expected=node, claimed=signer)
        )
    digest = hash_task_request(q, domain)
    if digest != r.request_hash:
        out.append(
            Finding(
                Check.REQUEST,
                "requestHash is not the EIP-712 digest of the request",
                expected=_hex(digest),
                claimed=_hex(r.request_hash),
            )
        )
    if entry.request_signature is not None:
        try:
            user = recover_task_request(q, domain, entry.request_signature)
        except Exception:
            user = ""
        if user.lower() != q.user.lower():
            out.append(
                Finding(Check.REQUEST, "request not signed by its user", expected=q.user, claimed=user)
            )
    pairs = (
        ("user", q.user.lower(), r.user.lower()),
        ("node", node.lower(), q.node.lower()),
        ("modelId", _hex(q.model_id), _hex(r.model_id)),
        ("inputHash", _hex(q.input_hash), _hex(r.input_hash)),
    )
    for name, expected, claimed in pairs:
        if expected != claimed:
            out.append(
                Finding(
                    Check.RECEIPT,
                    f"receipt {name} differs from the signed request",
                    expected=expected,
                    claimed=claimed,
                )
            )
    if r.fee != q.max_fee:
        # the node charges the signed maxFee (docs/protocol.md); a receipt saying otherwise misstates
        # what the user paid (a fee below it once sized a fraud verdict's refund: review 18)
        out.append(Finding(Check.RECEIPT, "fee is not the signed maxFee", expected=q.max_fee, claimed=r.fee))
    return out


def check_trace_hash(trace_cid: str, claimed: bytes) -> list[Finding]:
    """``traceHash`` must be the sha256 digest the trace CID carries (a dag-cbor CIDv1)."""
    try:
        expected = trace_hash(trace_cid)
    except InvalidCIDError as exc:
        return [Finding(Check.TRACE, f"trace CID is not a dag-cbor sha2-256 CID: {exc}", claimed=trace_cid)]
    if expected == claimed:
        return []
    return [
        Finding(
            Check.TRACE,
            "traceHash is not the digest of the trace CID",
            expected=_hex(expected),
            claimed=_hex(claimed),
        )
    ]


def check_trace(trace: Trace, entry: ManifestEntry) -> list[Finding]:
    """The trace's task, input, output, model, agent, user, fee and request against the receipt
    and the signed request.

    Every field of the trace head the replay or the checks read must be bound to what the user
    signed: the replay checks a recorded confirmation against the trace's ``user``, so a node that
    wrote its own address there could confirm an irreversible call itself.
    """
    r, q, out = entry.receipt, entry.request, []
    # the receipt's fields: one definition shared with the user's client (`trace_receipt_mismatches`)
    for m in trace_receipt_mismatches(trace.doc, r):
        if m.call is not None:
            out.append(
                Finding(
                    Check.TRACE,
                    "LLM call ran another model than the receipt's",
                    call=m.call,
                    expected=m.expected,
                    claimed=m.claimed,
                )
            )
        else:
            out.append(
                Finding(
                    Check.TRACE,
                    f"trace {m.field} does not match the receipt / signed request",
                    expected=m.expected,
                    claimed=m.claimed,
                )
            )
    # the profile, not only the code: limits and tool specs are the user's, not the node's word
    if trace.agent_hash.lower() != _hex(q.agent_hash):
        out.append(
            Finding(
                Check.TRACE,
                "trace agent profile hash does not match the receipt / signed request",
                expected=_hex(q.agent_hash),
                claimed=trace.agent_hash.lower(),
            )
        )
    # a trace that carries the request (optional) must carry the one the receipt hashes
    if trace.doc.request is not None and trace.doc.request.to_json() != q.to_json():
        out.append(
            Finding(
                Check.TRACE,
                "trace request is not the signed request",
                expected=q.to_json(),
                claimed=trace.doc.request.to_json(),
            )
        )
    if (
        trace.doc.request_signature is not None
        and entry.request_signature is not None
        and trace.doc.request_signature != entry.request_signature
    ):
        out.append(
            Finding(
                Check.TRACE,
                "trace request signature is not the user's signature of the request",
                expected=_hex(entry.request_signature),
                claimed=_hex(trace.doc.request_signature),
            )
        )
    return out
