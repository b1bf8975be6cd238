"""What a trace must agree with in the receipt that commits it: one definition for every checker.

The receipt commits hashes (input, output, trace) and a few fields (task, user, model, fee); the
trace carries the values. A trace whose values do not hash to the receipt's, or that names another
task, user, model or fee, shows work that is not the work the receipt was paid for. The validator
(`supernet.validator.consistency.check_trace`) and the user's client
(`supernet.sdk.client.verify.check_receipt`) both judge a trace with `trace_receipt_mismatches`, so
neither can drift into checking less than the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supernet.sdk.chain.receipts import Receipt, input_hash, is_normal_input, output_hash
from supernet.sdk.formats.trace import LlmEvent, Trace


@dataclass(frozen=True)
class Mismatch:
    """One trace field that disagrees with the receipt (``call``: the LLM call's event index)."""

    field: str
    expected: str
    claimed: str
    call: int | None = None


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def input_hash_or_reason(value: Any) -> str:
    """The ``0x`` input hash of ``value``, or why it has none (a reason never equals a hash, so
    comparing the two reports the mismatch instead of raising). A trace's input must be in its
    normal form (`normal_input`): ``8.0`` hashes like ``8``, so a node could otherwise run an
    agent on another value than the one the user signed under the same hash."""
    try:
        normal = is_normal_input(value)
    except (TypeError, ValueError) as exc:  # InputEncodingError: no canonical form
        return f"no canonical form: {exc}"
    if not normal:
        return "not in its normal form (the value its canonical JSON reads back as, e.g. 8 for 8.0)"
    return signed_input_hash_or_reason(value)


def signed_input_hash_or_reason(value: Any) -> str:
    """The ``0x`` hash a request signs for ``value`` (RFC 8785: ``8.0`` and ``8`` alike), or why it
    has none: what a user's own value is checked by, where a trace's is held to `input_hash_or_reason`."""
    try:
        return _hex(input_hash(value))
    except (TypeError, ValueError) as exc:  # InputEncodingError: no canonical form
        return f"no canonical form: {exc}"


def trace_receipt_mismatches(trace: Trace, receipt: Receipt) -> list[Mismatch]:
    """Every field of ``trace`` that disagrees with ``receipt`` (empty: the trace is the receipt's).

    Fields: ``task id``, ``input hash``, ``output hash``, ``model id``, ``user``, ``fee``, and
    ``LLM call model`` for every recorded call that ran another model than the receipt names."""
    pairs = (
        ("task id", _hex(receipt.request_hash), trace.task_id.lower()),
        ("input hash", _hex(receipt.input_hash), input_hash_or_reason(trace.input)),
        ("output hash", _hex(receipt.output_hash), _hex(output_hash(trace.output))),
        ("model id", _hex(receipt.model_id), trace.model_id.lower()),
        ("user", receipt.user.lower(), trace.user.lower()),
        ("fee", str(receipt.fee), str(trace.fee)),
    )
    out = [Mismatch(name, expected, claimed) for name, expected, claimed in pairs if expected != claimed]
    out += [
        Mismatch("LLM call model", _hex(receipt.model_id), ev.model_id, i)
        for i, ev in enumerate(trace.events)
        if isinstance(ev, LlmEvent) and ev.model_id.lower() != _hex(receipt.model_id)
    ]
    return out
