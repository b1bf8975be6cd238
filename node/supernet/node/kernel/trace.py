"""The execution trace: everything a validator needs to re-check one task.

A trace records the task input, the agent (id and code hash), every LLM call (model id,
prompt and output token ids, sampling parameters and seed, logprobs, activation
fingerprints), every tool call (arguments, result, ``deterministic`` flag), and every
memory and storage access by CID. It is stored as one dag-cbor object whose CIDs are links
(so pinning the trace keeps the memory and file blocks it names); its CID goes into the
receipt as ``traceHash = keccak256(cid)``.

Trace format ``supernet/trace/v1``::

    {"type", "task_id", "user", "fee", "agent": {"id", "code_hash"}, "model_id", "input",
     "seed", "limits": {...}, "tools": [{tool spec}, ...], "engine": {"device", "dtype"},
     "output", "status", "error", "events": [{"kind": "llm" | "tool" | "memory.add" |
     "memory.search" | "storage.put" | "storage.get" | "storage.list" | "error", ...}],
     "witness": {"blocks": [dag-cbor bytes, ...], "files": [file bytes, ...]}}

``seed``, ``limits`` (the task's capabilities) and ``tools`` (the specs the agent saw) are what a
validator needs to *replay* the agent against the events (`supernet.node.kernel.replay`); the
seed is a function of the task id (`task_seed`), so a node cannot choose it.

The ``witness`` carries every content-addressed block the replay reads (memory entries and roots,
file roots and file contents, as `witness_reads` lists them from the events), as stateless
Ethereum clients carry the state a block touches. A trace is therefore *self-contained*: a node
cannot make its replay unverifiable by withholding a linked block, because serving the trace
(which the availability challenge enforces) serves everything the replay needs. Witness entries
are self-certifying: a validator keys each one by the CID it recomputes, never by one the node
states. The whole trace is one block of at most `MAX_BLOCK_SIZE` bytes (`TraceTooLargeError`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from multiformats import CID
from supernet.sdk.chain.receipts import trace_hash
from supernet.sdk.store.cids import MAX_BLOCK_SIZE, canonical_cid, compute_cid, decode_dag, encode_dag, link
from supernet.sdk.store.errors import InvalidBlockError
from supernet.sdk.store.files import file_cid

TRACE_TYPE = "supernet/trace/v1"
MAX_TRACE_EVENTS = 1024
"""Most events one trace holds: the kernel refuses further syscalls (unrecorded) once a task's
trace is full, so a validator can bound its work on any trace without wronging an honest node."""


class TraceTooLargeError(ValueError):
    """The trace (with its witness) does not fit in one block: the task's reads are too large."""


def check_encodable(value: Any) -> None:
    """Raise ``ValueError`` unless ``to_dag(value)`` encodes as dag-cbor (64-bit integers, UTF-8
    strings without lone surrogates, finite floats after ``to_dag``)."""
    try:
        encode_dag(to_dag(value))
    except Exception as exc:
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
        self.events: list[dict[str, Any]] = []

    @property
    def llm_calls(self) -> int:
        """LLM calls recorded so far."""
        return sum(1 for e in self.events if e["kind"] == "llm")

    def record(self, kind: str, **fields: Any) -> None:
        """Append one event (fields are converted to dag-cbor values)."""
        self.events.append({"kind": kind, **{k: to_dag(v) for k, v in fields.items()}})

    def build(self, output: str, status: str, error: str | None) -> dict[str, Any]:
        """The finished trace document."""
        return {**self._head, "output": output, "status": status, "error": error, "events": list(self.events)}


async def save_trace(store: Any, trace: Mapping[str, Any], *, publish: bool = True) -> tuple[str, str]:
    """Put ``trace`` into the store as pinned dag-cbor; returns (CID, ``0x`` sha256 trace hash).

    ``publish=False`` only computes the CID (the ``withhold`` fault: a node that keeps its traces
    to itself).

    Raises:
        TraceTooLargeError: the encoded trace is over `MAX_BLOCK_SIZE` bytes.
    """
    block = encode_dag(dict(trace))
    if len(block) > MAX_BLOCK_SIZE:
        raise TraceTooLargeError(
            f"the trace is {len(block)} bytes with its witness, over the {MAX_BLOCK_SIZE}-byte block "
            "limit: the task read or wrote too much memory or file data"
        )
    if publish:
        cid = await store.put_block(block, "dag-cbor", pin=True)
    else:
        cid = compute_cid(block, "dag-cbor")
    return cid, "0x" + trace_hash(cid).hex()


# -- the witness ---------------------------------------------------------------------------------

_READS: dict[str, tuple[tuple[str, str], ...]] = {
    # event kind -> (field, "block" | "file") the replay reads, in the order it reads them
    "memory.add": (("entry", "block"),),
    "memory.search": (("root", "block"), ("hits", "block")),
    "storage.put": (("cid", "file"),),
    "storage.get": (("root", "block"), ("cid", "file")),
    "storage.list": (("root", "block"),),
}


def witness_reads(events: Any) -> list[tuple[str, str]]:
    """The ``("block" | "file", cid)`` pairs a replay of ``events`` reads, first read first, once each.

    Malformed events name nothing (the replay reports them); a link that is not a CID is skipped.
    """
    seen: dict[tuple[str, str], None] = {}
    for ev in events if isinstance(events, list) else ():
        if not isinstance(ev, Mapping):
            continue
        for key, form in _READS.get(str(ev.get("kind")), ()):
            value = ev.get(key)
            for cid in value if isinstance(value, list) else [value]:
                if cid is None:
                    continue
                try:
                    seen.setdefault((form, canonical_cid(cid)), None)
                except Exception:
                    continue
    return list(seen)


async def collect_witness(store: Any, events: Any) -> dict[str, list[bytes]]:
    """The ``witness`` of a trace with ``events``: the node's own blocks and files its replay reads."""
    blocks: list[bytes] = []
    files: list[bytes] = []
    for form, cid in witness_reads(events):
        if form == "block":
            blocks.append(await store.get_block(cid))
        else:
            files.append(await store.cat(cid))
    return {"blocks": blocks, "files": files}


class MalformedWitness(ValueError):
    """The trace's ``witness`` is not ``{"blocks": [bytes], "files": [bytes]}`` of decodable blocks."""


class Witness:
    """A trace's witness keyed by recomputed CIDs: what the node states is never trusted.

    Args:
        doc: the decoded trace.

    Raises:
        MalformedWitness: the witness is missing or mistyped, or a block is not dag-cbor.
    """

    def __init__(self, doc: Mapping[str, Any]) -> None:
        raw = doc.get("witness")
        if not isinstance(raw, Mapping):
            raise MalformedWitness("the trace has no witness object")
        blocks, files = raw.get("blocks"), raw.get("files")
        if not (isinstance(blocks, list) and isinstance(files, list)):
            raise MalformedWitness("witness.blocks and witness.files must be lists")
        if not all(isinstance(b, bytes) for b in [*blocks, *files]):
            raise MalformedWitness("witness entries must be byte strings")
        self.blocks: dict[str, Any] = {}
        for data in blocks:
            try:
                self.blocks[compute_cid(data, "dag-cbor")] = decode_dag(data)
            except Exception as exc:
                raise MalformedWitness(f"a witness block is not dag-cbor: {exc}") from None
        self.files: dict[str, bytes] = {file_cid(data): data for data in files}

    def block(self, cid: Any) -> Any:
        """The decoded block ``cid``.

        Raises:
            KeyError: the witness does not carry it.
            InvalidBlockError: ``cid`` is not a CID.
        """
        return self.blocks[self._key(cid)]

    def file(self, cid: Any) -> bytes:
        """The file ``cid``'s bytes (`KeyError` if the witness does not carry it)."""
        return self.files[self._key(cid)]

    @staticmethod
    def _key(cid: Any) -> str:
        try:
            return canonical_cid(cid)
        except Exception as exc:
            raise InvalidBlockError(f"{cid!r} is not a CID: {exc}") from None
