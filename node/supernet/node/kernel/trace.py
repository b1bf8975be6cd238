"""Recording the execution trace: the node's side of ``supernet/trace/v1``.

The format itself (fields, types, events, witness) is defined once in
`supernet.sdk.formats.trace`, which node, validator and client share; docs/protocol.md "Traces"
describes it. Here the kernel's dispatcher records events (`TraceRecorder.record`, each event
canonicalised through the format as it is recorded, so a replay that records the same syscalls
records the same dicts), the kernel collects the witness (`collect_witness`) and builds the
document (`TraceRecorder.build`, checked against the format), and `save_trace` stores it as one
pinned dag-cbor block whose sha256 is the receipt's ``traceHash``.

A trace is *self-contained*: its ``witness`` carries every content-addressed block the replay
reads (memory entries and roots, file roots and contents), as stateless Ethereum clients carry the
state a block touches, so a node cannot make its replay unverifiable by withholding a linked block.
The whole trace is one block of at most `MAX_TRACE_BYTES` (384 KiB, what one availability answer can
post on chain; `TraceTooLargeError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from multiformats import CID
from supernet.sdk.chain.receipts import trace_hash
from supernet.sdk.formats.trace import (
    MAX_TRACE_BYTES,
    MAX_TRACE_EVENTS,
    TRACE_TYPE,
    Event,
    Trace,
    Witness,
    event_from_dag,
    witness_reads,
)
from supernet.sdk.store import InvalidBlockError
from supernet.sdk.store.cids import MAX_DAG_DEPTH, codec_of, compute_cid, decode_dag, encode_dag, link

__all__ = [
    "MAX_TRACE_EVENTS",
    "TRACE_TYPE",
    "TraceRecorder",
    "as_recorded",
    "collect_witness",
    "save_trace",
    "to_dag",
]


class TraceTooLargeError(ValueError):
    """The trace (with its witness) is over `MAX_TRACE_BYTES`: no availability answer could post it,
    so the kernel does not save it and the task fails without a receipt."""


MAX_RECORDED_DEPTH = MAX_DAG_DEPTH - 8
"""Deepest nesting of lists and maps a recorded value (`as_recorded`: a tool's result, a task's or
a child agent's input, an agent's output) may have: a trace holds it under a few levels of its own
(the trace, ``events``, the event), and the whole block must stay within dag-cbor's
`MAX_DAG_DEPTH`, so that a value the kernel accepts does not make its trace unencodable."""


def check_encodable(value: Any) -> None:
    """Raise ``ValueError`` unless ``to_dag(value)`` encodes as dag-cbor (64-bit integers, UTF-8
    strings without lone surrogates, finite floats after ``to_dag``, `MAX_RECORDED_DEPTH` levels)."""
    try:
        encode_dag(to_dag(value), max_depth=MAX_RECORDED_DEPTH)
    except Exception as exc:
        raise ValueError(f"not recordable in a trace: {exc}") from None


def as_recorded(value: Any) -> Any:
    """``value`` exactly as a trace holds it and a replay reads it back: the dag-cbor round trip of
    ``to_dag(value)`` (tuples become lists, NaN and infinities ``None``, maps in dag-cbor's key
    order). The kernel hands an agent this, never the live value, so the agent sees on the node what
    it sees in a validator's replay (which answers from the record).

    Raises:
        ValueError: the value is not recordable (see `check_encodable`).
    """
    try:
        return decode_dag(encode_dag(to_dag(value), max_depth=MAX_RECORDED_DEPTH))
    except Exception as exc:  # RecursionError, TypeError, InvalidBlockError (64-bit ints, surrogates)
        raise ValueError(f"not recordable in a trace: {exc}") from None


def to_dag(value: Any) -> Any:
    """Make ``value`` dag-cbor encodable: tuples to lists, tensors and arrays to lists, no NaN."""
    if isinstance(value, CID | str | bytes | bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): to_dag(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dag(v) for v in value]
    if hasattr(value, "tolist"):  # torch tensors, numpy arrays
        return to_dag(value.tolist())
    if hasattr(value, "__dataclass_fields__"):
        return {name: to_dag(getattr(value, name)) for name in value.__dataclass_fields__}
    raise TypeError(f"cannot put a {type(value).__name__} into a trace")


def to_json(value: Any) -> Any:
    """A trace (or part) as plain JSON: links become ``{"/": cid}`` as in dag-json, bytes hex."""
    if isinstance(value, CID):
        return {"/": str(value)}
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, Mapping):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    return value


def cid_link(cid: str | None) -> CID | None:
    """A CID string as a dag-cbor link (``None`` stays ``None``)."""
    return None if cid is None else link(cid)


class TraceRecorder:
    """Collects one task's events, then builds the trace document.

    Args:
        task_id: The task's id.
        user: The task owner.
        fee: The task's fee in wei.
        agent_id: The agent that runs.
        code_hash: sha256 of the agent's source bundle (0x hex).
        model_id: The engine's model id.
        task_input: The task input.
    """

    def __init__(
        self,
        task_id: str,
        user: str,
        fee: int,
        agent_id: str,
        code_hash: str,
        model_id: str,
        task_input: Any,
        context: Mapping[str, Any] | None = None,
    ) -> None:
        self._head: dict[str, Any] = {
            "type": TRACE_TYPE,
            "task_id": task_id,
            "user": user,
            "fee": fee,
            "agent": {"id": agent_id, "code_hash": code_hash},
            "model_id": model_id,
            "input": to_dag(task_input),
            **{k: to_dag(v) for k, v in (context or {}).items()},
        }
        self.typed: list[Event] = []
        self.events: list[dict[str, Any]] = []
        # what the witness holds, by (form, CID) as `witness_reads` names it: content-addressed, so
        # read from the store once per task however often the size gate and the end collect it
        self.witness_cache: dict[tuple[str, str], tuple[str, bytes]] = {}

    @property
    def llm_calls(self) -> int:
        """LLM calls recorded so far."""
        return sum(1 for e in self.events if e["kind"] == "llm")

    def record(self, kind: str, **fields: Any) -> None:
        """Append one event, canonicalised through the format (``FormatError`` if it is not one)."""
        event = event_from_dag({"kind": kind, **{k: to_dag(v) for k, v in fields.items()}}, "event")
        self.typed.append(event)
        self.events.append(event.to_dag())

    def build(
        self, output: str, status: str, error: str | None, witness: Witness | None = None
    ) -> dict[str, Any]:
        """The finished trace document, checked against the format (``FormatError`` if not)."""
        doc = {
            **self._head,
            "output": output,
            "status": status,
            "error": error,
            "events": list(self.events),
            "witness": (witness or Witness()).to_dag(),
        }
        return Trace.from_dag(doc).to_dag()


LLM_RECORD_BYTES_PER_TOKEN = 32
"""An upper bound on what one output token adds to a trace besides its text: its id and
log-probability, and its share of the fingerprints (one every `FINGERPRINT_INTERVAL` tokens)."""

TOKEN_BYTES_DEFAULT = 32
"""The longest token's text assumed for an engine that does not say (`Tokenizer.max_token_bytes`)."""


def llm_record_bound(
    messages: Any,
    prompt_ids: Sequence[int],
    max_new_tokens: int,
    token_bytes: int = TOKEN_BYTES_DEFAULT,
    grammar: str | None = None,
    stops: Sequence[str] = (),
) -> int:
    """An upper bound on the bytes an LLM call of ``max_new_tokens`` adds to the trace: what its
    parameters hold beyond numbers (its ``grammar`` and ``stops``, as UTF-8), and each new token's
    text twice (in the call and in the task's output) at ``token_bytes``, the longest token of the
    served vocabulary. A fixed 32 bytes a token and an uncounted grammar let a record outgrow its
    gate by ~3x (tests/unit/test_review_hostile_parties2.py): the call ran, and its trace failed
    the task unbilled."""
    # UTF-8: at most 4 bytes a character, the role's too (up to 64 characters, as much as a short text)
    text = sum((len(str(m.get("role", ""))) + len(str(m.get("content", "")))) * 4 + 32 for m in messages)
    params_bytes = len((grammar or "").encode()) + sum(4 * len(s) + 8 for s in stops)
    per_token = LLM_RECORD_BYTES_PER_TOKEN + 2 * token_bytes
    return 1024 + text + params_bytes + 5 * len(prompt_ids) + per_token * max_new_tokens


async def trace_size(store: Any, recorder: TraceRecorder) -> int:
    """The encoded size of the trace recorded so far, with its witness (each item read from the
    store once per task: `TraceRecorder.witness_cache`)."""
    witness = await collect_witness(store, recorder.typed, recorder.witness_cache)
    return len(encode_dag(recorder.build("", "ok", None, witness)))


async def save_trace(store: Any, trace: Mapping[str, Any], *, publish: bool = True) -> tuple[str, str]:
    """Put ``trace`` into the store as pinned dag-cbor; returns (CID, ``0x`` sha256 trace hash).

    ``publish=False`` only computes the CID (the ``withhold`` fault: a node that keeps its traces
    to itself).

    Raises:
        TraceTooLargeError: the encoded trace is over `MAX_TRACE_BYTES` bytes.
    """
    block = encode_dag(dict(trace))
    if len(block) > MAX_TRACE_BYTES:
        raise TraceTooLargeError(
            f"the trace is {len(block)} bytes with its witness, over the protocol's {MAX_TRACE_BYTES}-byte "
            "trace limit (what one availability answer can post on chain): the task read or wrote too "
            "much memory or file data"
        )
    if publish:
        # a direct pin: the blocks the trace links (its roots and entries) are pinned by their
        # namespaces, and a recursive pin walked every root and entry of their histories
        cid = await store.put_block(block, "dag-cbor")
        await store.pin_direct(cid)
    else:
        cid = compute_cid(block, "dag-cbor")
    return cid, "0x" + trace_hash(cid).hex()


# -- the witness ---------------------------------------------------------------------------------


async def collect_witness(
    store: Any, events: list[Event], cache: dict[tuple[str, str], tuple[str, bytes]] | None = None
) -> Witness:
    """The witness of a trace with ``events``: the node's own blocks and files its replay reads, and
    what each successful ``store_read`` read (a raw block, a file, or a dag-cbor block that is no
    file, as the tool read it). ``cache`` keeps each item read, by (form, CID), for the next call."""
    found: dict[str, list[bytes]] = {"block": [], "file": [], "raw": []}
    memo = {} if cache is None else cache
    for form, cid in witness_reads(events):
        if (form, cid) not in memo:
            memo[form, cid] = await _witness_item(store, form, cid)
        kind, data = memo[form, cid]
        found[kind].append(data)
    blocks, files, raw = found["block"], found["file"], found["raw"]
    # a block or file both replayed and read by store_read (or read under two spellings) goes in once
    return Witness(tuple(dict.fromkeys(blocks)), tuple(dict.fromkeys(files)), tuple(dict.fromkeys(raw)))


async def _witness_item(store: Any, form: str, cid: str) -> tuple[str, bytes]:
    """One witness item: which list it goes in (``block``, ``file``, ``raw``) and its bytes."""
    if form == "block":
        return "block", await store.get_block(cid)
    if form == "file":
        return "file", await store.cat(cid)
    if codec_of(cid) == "raw":
        return "raw", await store.get_block(cid)
    try:
        return "file", await store.cat(cid)
    except InvalidBlockError:  # a dag-cbor object that is not a file: the block itself
        return "block", await store.get_block(cid)
