"""The execution trace, ``supernet/trace/v1``: one definition for node, validator and client.

A trace is one dag-cbor block per task (docs/protocol.md "Traces"). The node builds it from its
kernel's events (`Trace.to_dag`), a validator reads it (`Trace.from_dag`, strict: every field of
the format, nothing else, each with its type) and replays it, a client renders it. Events are
typed per syscall kind (`LlmEvent`, `ToolEvent`, the memory and storage events, `ErrorEvent`).
New kinds are only ever added (``storage.rollback``, ``storage.delete`` and ``storage.versions``
came after the first ones, then ``agent.call`` and ``agent.return``, which bracket a child agent's
events inline in its caller's trace); an existing kind's fields never change, except that an
optional one may be added that is absent where it does not apply (``llm`` ``params.grammar``, on
constrained calls only), so every earlier trace reads and re-encodes the same.

The ``witness`` carries every content-addressed block a replay reads (`witness_reads`), so a trace
is self-contained; `VerifiedWitness` keys its entries by the CIDs it recomputes.

>>> t = Trace.from_dag(example_dag())
>>> t.events[0].kind, t.to_dag() == example_dag()
('llm', True)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.formats.fields import (
    FormatError,
    boolean,
    cid,
    data,
    hex0x,
    hexbytes,
    integer,
    items,
    link_or_none,
    number,
    optional,
    record,
    string,
)
from supernet.sdk.store.cids import canonical_cid, compute_cid, decode_dag
from supernet.sdk.store.files import file_cid

TRACE_TYPE = "supernet/trace/v1"
MAX_TRACE_EVENTS = 1024
"""Most events one trace holds: a kernel refuses further syscalls (unrecorded) once a trace is
full, so a validator bounds its work on any trace without wronging an honest node."""

MAX_STOP_STRINGS = 4
"""Most stop strings one LLM call takes, each of at most `MAX_STOP_CHARS` characters (OpenAI's limits,
what ``POST /v1/chat/completions`` takes): a protocol bound, not a node's setting. The kernel's
`LLMChat` refuses more and a trace that records more is malformed, so what the node's stop watcher
and a validator's stop check look for is small whatever the node writes
(tests/unit/test_review_validator_bait.py)."""
MAX_STOP_CHARS = 64

MAX_CONTEXT_TOKENS = 2048
"""Positions (prompt + output) one LLM call may use: the protocol's context, not a node's setting.
A kernel caps a call's recorded ``max_new_tokens`` at ``MAX_CONTEXT_TOKENS - len(prompt_ids)``
(and refuses a prompt that leaves no room), so a call that runs out of context ends with finish
``"length"`` after exactly its recorded budget; the replay re-derives that budget with the same
constant. A node cannot claim a smaller context to skip work, and an engine that holds fewer
positions refuses such a call (a recorded ``LLMError``) instead of cutting it short."""

MAX_TRACE_BYTES = 384 * 1024
"""Largest encoded trace (with its witness): what an availability answer can post on chain in one
transaction. `answerAvailability` carries the whole trace as calldata; at EIP-7623's floor of
40 gas per non-zero byte, 393 216 bytes cost 15.73 M gas, and with the 21 000 base, the receipt
and a Merkle proof the answer stays under EIP-7825's cap of 2^24 = 16.78 M gas per transaction
(contracts/test/Adversary2.t.sol, ``test_Holds_LargestTraceIsAnswerableInOneTransaction``). A
larger trace could not be answered, so anyone could get its honest node slashed (the second
contract review's B7). Hence one rule for all: a kernel refuses to save a larger trace (the task
fails, no receipt is signed), and a validator takes a committed one as the node's fault
(`trace_from_block`)."""

STATUSES = ("ok", "error", "timeout")


@dataclass(frozen=True)
class Message:
    """One chat message of an LLM call."""

    role: str
    content: str

    def to_dag(self) -> dict[str, Any]:
        return {"role": self.role, "content": self.content}

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> Message:
        r = record(obj, path, ("role", "content"))
        return cls(string(r["role"], f"{path}.role"), string(r["content"], f"{path}.content"))


@dataclass(frozen=True)
class Sampling:
    """The sampling parameters an LLM call ran with.

    ``grammar`` (present only on a constrained call) is the llguidance grammar the token mask
    came from (`supernet.node.llm.grammar.grammar_of` of the call's ``response_format``).
    """

    max_new_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop_token_ids: tuple[int, ...] | None
    stop: tuple[str, ...]
    grammar: str | None = None

    def to_dag(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
            "stop_token_ids": None if self.stop_token_ids is None else list(self.stop_token_ids),
            "stop": list(self.stop),
        }
        if self.grammar is not None:  # absent on unconstrained calls: their traces are unchanged
            out["grammar"] = self.grammar
        return out

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> Sampling:
        r = record(
            obj,
            path,
            ("max_new_tokens", "temperature", "top_p", "seed", "stop_token_ids", "stop"),
            ("grammar",),
        )
        stops = r["stop_token_ids"]
        return cls(
            max_new_tokens=integer(r["max_new_tokens"], f"{path}.max_new_tokens", 0),
            temperature=number(r["temperature"], f"{path}.temperature"),
            top_p=number(r["top_p"], f"{path}.top_p"),
            seed=integer(r["seed"], f"{path}.seed", 0),
            stop_token_ids=None if stops is None else items(stops, f"{path}.stop_token_ids", _token),
            stop=items(r["stop"], f"{path}.stop", _stop_string, MAX_STOP_STRINGS),
            grammar=string(r["grammar"], f"{path}.grammar") if "grammar" in r else None,
        )


def _stop_string(value: Any, path: str) -> str:
    text = string(value, path)
    if len(text) > MAX_STOP_CHARS:
        raise FormatError(f"{path} has {len(text)} characters, more than {MAX_STOP_CHARS}")
    return text


def _token(value: Any, path: str) -> int:
    return integer(value, path, 0, 2**31 - 1)


def _logprob(value: Any, path: str) -> float | None:
    return None if value is None else number(value, path)  # a NaN is recorded as null


@dataclass(frozen=True)
class LlmEvent:
    """One LLM call: what the agent asked, the prompt the node templated, what the model produced."""

    index: int
    model_id: str
    messages: tuple[Message, ...]
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    params: Sampling
    finish_reason: str
    logprobs: tuple[float | None, ...]
    fingerprints: Any
    text: str
    preemptions: int
    kind: ClassVar[str] = "llm"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "index": self.index,
            "model_id": self.model_id,
            "messages": [m.to_dag() for m in self.messages],
            "prompt_ids": list(self.prompt_ids),
            "output_ids": list(self.output_ids),
            "params": self.params.to_dag(),
            "finish_reason": self.finish_reason,
            "logprobs": list(self.logprobs),
            "fingerprints": self.fingerprints,
            "text": self.text,
            "preemptions": self.preemptions,
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> LlmEvent:
        return cls(
            index=integer(r["index"], f"{path}.index", 0),
            model_id=string(r["model_id"], f"{path}.model_id"),
            messages=items(r["messages"], f"{path}.messages", Message.from_dag),
            prompt_ids=items(r["prompt_ids"], f"{path}.prompt_ids", _token),
            output_ids=items(r["output_ids"], f"{path}.output_ids", _token),
            params=Sampling.from_dag(r["params"], f"{path}.params"),
            finish_reason=string(r["finish_reason"], f"{path}.finish_reason"),
            logprobs=items(r["logprobs"], f"{path}.logprobs", _logprob),
            fingerprints=data(r["fingerprints"], f"{path}.fingerprints"),
            text=string(r["text"], f"{path}.text"),
            preemptions=integer(r["preemptions"], f"{path}.preemptions", 0),
        )


@dataclass(frozen=True)
class ToolEvent:
    """One tool call and its result or error (``"Type: message"``). A call of an irreversible
    tool carries the task user's EIP-712 ``Confirmation`` signature that allowed it
    (``confirmation``, 65 bytes; absent otherwise, so older traces encode unchanged)."""

    name: str
    args: Mapping[str, Any]
    deterministic: bool
    result: Any
    error: str | None
    confirmation: bytes | None = None
    kind: ClassVar[str] = "tool"
    OPTIONAL: ClassVar[tuple[str, ...]] = ("confirmation",)

    def to_dag(self) -> dict[str, Any]:
        out = {
            "kind": self.kind,
            "name": self.name,
            "args": dict(self.args),
            "deterministic": self.deterministic,
            "result": self.result,
            "error": self.error,
        }
        if self.confirmation is not None:
            out["confirmation"] = hex0x(self.confirmation)
        return out

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> ToolEvent:
        args = data(r["args"], f"{path}.args")
        if not isinstance(args, dict):
            raise FormatError(f"{path}.args must be an object")
        confirmation = r.get("confirmation")
        return cls(
            name=string(r["name"], f"{path}.name"),
            args=args,
            deterministic=boolean(r["deterministic"], f"{path}.deterministic"),
            result=data(r["result"], f"{path}.result"),
            error=optional(string)(r["error"], f"{path}.error"),
            confirmation=None if confirmation is None else hexbytes(confirmation, f"{path}.confirmation", 65),
        )


@dataclass(frozen=True)
class MemoryAddEvent:
    """An entry written to the agent's memory, and the namespace's roots around it."""

    namespace: str
    entry: str
    root: str
    prev_root: str | None
    kind: ClassVar[str] = "memory.add"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "entry": link_or_none(self.entry),
            "root": link_or_none(self.root),
            "prev_root": link_or_none(self.prev_root),
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> MemoryAddEvent:
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            entry=cid(r["entry"], f"{path}.entry"),
            root=cid(r["root"], f"{path}.root"),
            prev_root=optional(cid)(r["prev_root"], f"{path}.prev_root"),
        )


@dataclass(frozen=True)
class MemorySearchEvent:
    """A memory search: the root searched, the hits (entries of that root) and their scores."""

    namespace: str
    query: str
    k: int
    root: str | None
    hits: tuple[str, ...]
    scores: tuple[float, ...]
    kind: ClassVar[str] = "memory.search"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "query": self.query,
            "k": self.k,
            "root": link_or_none(self.root),
            "hits": [link_or_none(h) for h in self.hits],
            "scores": list(self.scores),
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> MemorySearchEvent:
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            query=string(r["query"], f"{path}.query"),
            k=integer(r["k"], f"{path}.k"),
            root=optional(cid)(r["root"], f"{path}.root"),
            hits=items(r["hits"], f"{path}.hits", cid),
            scores=items(r["scores"], f"{path}.scores", number),
        )


@dataclass(frozen=True)
class StoragePutEvent:
    """A file version written, and the namespace's roots around it."""

    namespace: str
    path: str
    cid: str
    root: str
    prev_root: str | None
    version: int
    kind: ClassVar[str] = "storage.put"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "path": self.path,
            "cid": link_or_none(self.cid),
            "root": link_or_none(self.root),
            "prev_root": link_or_none(self.prev_root),
            "version": self.version,
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> StoragePutEvent:
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            path=string(r["path"], f"{path}.path"),
            cid=cid(r["cid"], f"{path}.cid"),
            root=cid(r["root"], f"{path}.root"),
            prev_root=optional(cid)(r["prev_root"], f"{path}.prev_root"),
            version=integer(r["version"], f"{path}.version", 1),
        )


@dataclass(frozen=True)
class StorageGetEvent:
    """A file version read, from the namespace root it was read under."""

    namespace: str
    path: str
    cid: str
    root: str | None
    kind: ClassVar[str] = "storage.get"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "path": self.path,
            "cid": link_or_none(self.cid),
            "root": link_or_none(self.root),
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> StorageGetEvent:
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            path=string(r["path"], f"{path}.path"),
            cid=cid(r["cid"], f"{path}.cid"),
            root=optional(cid)(r["root"], f"{path}.root"),
        )


@dataclass(frozen=True)
class StorageListEvent:
    """The namespace's files listed, from its root."""

    namespace: str
    root: str | None
    kind: ClassVar[str] = "storage.list"

    def to_dag(self) -> dict[str, Any]:
        return {"kind": self.kind, "namespace": self.namespace, "root": link_or_none(self.root)}

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> StorageListEvent:
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            root=optional(cid)(r["root"], f"{path}.root"),
        )


@dataclass(frozen=True)
class StorageRollbackEvent:
    """A file rolled back: version ``cid`` appended again to its history (number ``version``)."""

    namespace: str
    path: str
    cid: str
    root: str
    prev_root: str
    version: int
    kind: ClassVar[str] = "storage.rollback"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "path": self.path,
            "cid": link_or_none(self.cid),
            "root": link_or_none(self.root),
            "prev_root": link_or_none(self.prev_root),
            "version": self.version,
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> StorageRollbackEvent:
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            path=string(r["path"], f"{path}.path"),
            cid=cid(r["cid"], f"{path}.cid"),
            root=cid(r["root"], f"{path}.root"),
            prev_root=cid(r["prev_root"], f"{path}.prev_root"),
            version=integer(r["version"], f"{path}.version", 1),
        )


@dataclass(frozen=True)
class StorageDeleteEvent:
    """A file deleted: a tombstone appended to its history (number ``version``)."""

    namespace: str
    path: str
    root: str
    prev_root: str
    version: int
    kind: ClassVar[str] = "storage.delete"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "path": self.path,
            "root": link_or_none(self.root),
            "prev_root": link_or_none(self.prev_root),
            "version": self.version,
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> StorageDeleteEvent:
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            path=string(r["path"], f"{path}.path"),
            root=cid(r["root"], f"{path}.root"),
            prev_root=cid(r["prev_root"], f"{path}.prev_root"),
            version=integer(r["version"], f"{path}.version", 1),
        )


@dataclass(frozen=True)
class StorageVersionsEvent:
    """A file's versions listed from the namespace root: CIDs oldest first, null for a delete."""

    namespace: str
    path: str
    root: str | None
    versions: tuple[str | None, ...]
    kind: ClassVar[str] = "storage.versions"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "path": self.path,
            "root": link_or_none(self.root),
            "versions": [link_or_none(v) for v in self.versions],
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> StorageVersionsEvent:
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            path=string(r["path"], f"{path}.path"),
            root=optional(cid)(r["root"], f"{path}.root"),
            versions=items(r["versions"], f"{path}.versions", optional(cid)),
        )


@dataclass(frozen=True)
class StorageMissingEvent:
    """A file read or change that found no such file (or version) in the namespace root it was
    judged under (``storage.get``, ``storage.rollback`` or ``storage.delete``: ``op``; ``version``
    the one asked for). Recording the root makes "not found" checkable even on a task's first
    access to the namespace, and puts that root under the origin check like any other it read."""

    namespace: str
    op: str
    path: str
    version: str | None
    root: str | None
    error: str
    kind: ClassVar[str] = "storage.missing"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "namespace": self.namespace,
            "op": self.op,
            "path": self.path,
            "version": self.version,  # as the agent asked: not necessarily a CID
            "root": link_or_none(self.root),
            "error": self.error,
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> StorageMissingEvent:
        op = string(r["op"], f"{path}.op")
        if op not in MISSING_OPS:
            raise FormatError(f"{path}.op: {op!r} is not one of {sorted(MISSING_OPS)}")
        return cls(
            namespace=string(r["namespace"], f"{path}.namespace"),
            op=op,
            path=string(r["path"], f"{path}.path"),
            version=optional(string)(r["version"], f"{path}.version"),
            root=optional(cid)(r["root"], f"{path}.root"),
            error=string(r["error"], f"{path}.error"),
        )


MISSING_OPS = frozenset({"storage.get", "storage.rollback", "storage.delete"})
"""The file syscalls that can find no such file (`StorageMissingEvent.op`)."""


@dataclass(frozen=True)
class AgentCallEvent:
    """An agent call starts: the child agent (id, code hash), its input, its nesting depth and the
    capabilities it runs under (a subset of the caller's). The child's own events follow in the
    same trace, then its `AgentReturnEvent`."""

    agent: AgentRef
    input: Any
    depth: int
    tools: tuple[str, ...]
    memory: bool
    storage: bool
    kind: ClassVar[str] = "agent.call"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "agent": self.agent.to_dag(),
            "input": self.input,
            "depth": self.depth,
            "tools": list(self.tools),
            "memory": self.memory,
            "storage": self.storage,
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> AgentCallEvent:
        return cls(
            agent=AgentRef.from_dag(r["agent"], f"{path}.agent"),
            input=data(r["input"], f"{path}.input"),
            depth=integer(r["depth"], f"{path}.depth", 1),
            tools=items(r["tools"], f"{path}.tools", string),
            memory=boolean(r["memory"], f"{path}.memory"),
            storage=boolean(r["storage"], f"{path}.storage"),
        )


@dataclass(frozen=True)
class AgentReturnEvent:
    """An agent call ends: the child's output (what the caller received), or how it failed."""

    agent: str
    output: str
    status: str
    error: str | None
    kind: ClassVar[str] = "agent.return"

    def to_dag(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "agent": self.agent,
            "output": self.output,
            "status": self.status,
            "error": self.error,
        }

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> AgentReturnEvent:
        status = string(r["status"], f"{path}.status")
        if status not in STATUSES:
            raise FormatError(f"{path}.status must be one of {STATUSES}")
        return cls(
            agent=string(r["agent"], f"{path}.agent"),
            output=string(r["output"], f"{path}.output"),
            status=status,
            error=optional(string)(r["error"], f"{path}.error"),
        )


@dataclass(frozen=True)
class ErrorEvent:
    """A syscall refused or failed before it recorded its own event."""

    syscall: str
    error: str
    call: Any
    kind: ClassVar[str] = "error"

    def to_dag(self) -> dict[str, Any]:
        return {"kind": self.kind, "syscall": self.syscall, "error": self.error, "call": self.call}

    @classmethod
    def from_dag(cls, r: Mapping[str, Any], path: str) -> ErrorEvent:
        return cls(
            syscall=string(r["syscall"], f"{path}.syscall"),
            error=string(r["error"], f"{path}.error"),
            call=data(r["call"], f"{path}.call"),
        )


Event = (
    LlmEvent
    | ToolEvent
    | MemoryAddEvent
    | MemorySearchEvent
    | StoragePutEvent
    | StorageGetEvent
    | StorageListEvent
    | StorageRollbackEvent
    | StorageDeleteEvent
    | StorageVersionsEvent
    | StorageMissingEvent
    | AgentCallEvent
    | AgentReturnEvent
    | ErrorEvent
)

_EVENT_TYPES: dict[str, Any] = {
    t.kind: t
    for t in (
        LlmEvent,
        ToolEvent,
        MemoryAddEvent,
        MemorySearchEvent,
        StoragePutEvent,
        StorageGetEvent,
        StorageListEvent,
        StorageRollbackEvent,
        StorageDeleteEvent,
        StorageVersionsEvent,
        StorageMissingEvent,
        AgentCallEvent,
        AgentReturnEvent,
        ErrorEvent,
    )
}


def trace_from_block(block: bytes) -> Trace:
    """Read a trace block as committed: at most `MAX_TRACE_BYTES`, then `Trace.from_dag`.

    Raises:
        FormatError: the block is over `MAX_TRACE_BYTES`, or not a well-formed trace.
        InvalidBlockError: the bytes are not dag-cbor.
    """
    check_trace_size(len(block))
    return Trace.from_dag(decode_dag(block))


def check_trace_size(size: int) -> None:
    """Raise ``FormatError`` if a trace block of ``size`` bytes is over `MAX_TRACE_BYTES`."""
    if size > MAX_TRACE_BYTES:
        raise FormatError(
            f"the trace is {size} bytes, over the protocol's {MAX_TRACE_BYTES}-byte cap "
            "(the largest an availability answer can post)"
        )


def event_from_dag(obj: Any, path: str = "event") -> Event:
    """One event, typed by its ``kind``.

    Raises:
        FormatError: an unknown kind, or a field missing, extra or mistyped.
    """
    if not isinstance(obj, Mapping):
        raise FormatError(f"{path} must be an object")
    kind = obj.get("kind")
    cls = _EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise FormatError(f"{path}.kind {kind!r} is not one of {sorted(_EVENT_TYPES)}")
    optional_fields: tuple[str, ...] = getattr(cls, "OPTIONAL", ())
    names = (f.name for f in dataclasses.fields(cls))  # ClassVars (kind, OPTIONAL) are not fields
    fields = ("kind", *(n for n in names if n not in optional_fields))
    event: Event = cls.from_dag(record(obj, path, fields, optional_fields), path)
    return event


@dataclass(frozen=True)
class AgentRef:
    """The agent that ran: its id and the code hash the user signed."""

    id: str
    code_hash: str

    def to_dag(self) -> dict[str, Any]:
        return {"id": self.id, "code_hash": self.code_hash}

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> AgentRef:
        r = record(obj, path, ("id", "code_hash"))
        return cls(string(r["id"], f"{path}.id"), string(r["code_hash"], f"{path}.code_hash"))


@dataclass(frozen=True)
class Limits:
    """The task's capabilities as the agent ran under them (a replay runs under exactly these)."""

    memory: bool
    storage: bool
    max_llm_calls: int
    max_llm_tokens: int
    max_new_tokens: int
    max_tool_calls: int
    max_file_bytes: int

    def to_dag(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> Limits:
        r = record(obj, path, tuple(cls.__dataclass_fields__))
        return cls(
            memory=boolean(r["memory"], f"{path}.memory"),
            storage=boolean(r["storage"], f"{path}.storage"),
            **{
                name: integer(r[name], f"{path}.{name}", 0)
                for name in cls.__dataclass_fields__
                if name.startswith("max_")
            },
        )


@dataclass(frozen=True)
class ToolDescription:
    """A tool as the agent saw it (and whether validators re-run it)."""

    name: str
    description: str
    parameters: Mapping[str, Any]
    deterministic: bool
    irreversible: bool

    def to_dag(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
            "deterministic": self.deterministic,
            "irreversible": self.irreversible,
        }

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> ToolDescription:
        r = record(obj, path, ("name", "description", "parameters", "deterministic", "irreversible"))
        params = data(r["parameters"], f"{path}.parameters")
        if not isinstance(params, dict):
            raise FormatError(f"{path}.parameters must be an object")
        return cls(
            name=string(r["name"], f"{path}.name"),
            description=string(r["description"], f"{path}.description"),
            parameters=params,
            deterministic=boolean(r["deterministic"], f"{path}.deterministic"),
            irreversible=boolean(r["irreversible"], f"{path}.irreversible"),
        )


@dataclass(frozen=True)
class CallableAgent:
    """An agent the task's agent may call, as the node runs it when called: its id and code hash,
    and the tools, memory and files it gets (the operator's privilege groups), of which a child
    keeps what its caller also has. Part of the signed profile: a child's narrowing was the node's
    word per task otherwise."""

    id: str
    code_hash: str
    tools: tuple[str, ...]
    memory: bool
    storage: bool

    def to_dag(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "code_hash": self.code_hash,
            "tools": list(self.tools),
            "memory": self.memory,
            "storage": self.storage,
        }

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> CallableAgent:
        r = record(obj, path, ("id", "code_hash", "tools", "memory", "storage"))
        tools = items(r["tools"], f"{path}.tools", string)
        if list(tools) != sorted(set(tools)):
            raise FormatError(f"{path}.tools must be sorted, each once")
        return cls(
            id=string(r["id"], f"{path}.id"),
            code_hash=string(r["code_hash"], f"{path}.code_hash"),
            tools=tools,
            memory=boolean(r["memory"], f"{path}.memory"),
            storage=boolean(r["storage"], f"{path}.storage"),
        )


def callable_agents(obj: Any, path: str) -> tuple[CallableAgent, ...]:
    """A list of `CallableAgent` sorted by id, each once (`FormatError` otherwise)."""
    agents = items(obj, path, CallableAgent.from_dag)
    if [a.id for a in agents] != sorted({a.id for a in agents}):
        raise FormatError(f"{path} must be sorted by id, each once")
    return agents


@dataclass(frozen=True)
class Engine:
    """Where the node computed (validators choose tolerances by the precision pair)."""

    device: str
    dtype: str

    def to_dag(self) -> dict[str, Any]:
        return {"device": self.device, "dtype": self.dtype}

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> Engine:
        r = record(obj, path, ("device", "dtype"))
        return cls(string(r["device"], f"{path}.device"), string(r["dtype"], f"{path}.dtype"))


@dataclass(frozen=True)
class Witness:
    """The blocks and files a replay of the trace reads, as bytes (see `VerifiedWitness`): dag-cbor
    ``blocks``, ``files`` (their bytes, keyed by the file's root CID), and ``raw`` blocks (read by
    ``store_read`` of a raw CID; absent when empty, so earlier traces encode unchanged)."""

    blocks: tuple[bytes, ...] = ()
    files: tuple[bytes, ...] = ()
    raw: tuple[bytes, ...] = ()

    def to_dag(self) -> dict[str, Any]:
        out: dict[str, Any] = {"blocks": list(self.blocks), "files": list(self.files)}
        if self.raw:
            out["raw"] = list(self.raw)
        return out

    @classmethod
    def from_dag(cls, obj: Any, path: str) -> Witness:
        r = record(obj, path, ("blocks", "files"), ("raw",))
        return cls(
            items(r["blocks"], f"{path}.blocks", _bytes),
            items(r["files"], f"{path}.files", _bytes),
            items(r["raw"], f"{path}.raw", _bytes) if "raw" in r else (),
        )


def _bytes(value: Any, path: str) -> bytes:
    if not isinstance(value, bytes):
        raise FormatError(f"{path} must be a byte string")
    return value


@dataclass(frozen=True)
class Trace:
    """One task's trace (``supernet/trace/v1``): docs/protocol.md "Traces" describes each field."""

    task_id: str
    user: str
    fee: int
    agent: AgentRef
    model_id: str
    input: Any
    seed: int
    limits: Limits
    tools: tuple[ToolDescription, ...]
    engine: Engine
    output: str
    status: str
    error: str | None
    events: tuple[Event, ...]
    witness: Witness = field(default_factory=Witness)
    request: TaskRequest | None = None
    request_signature: bytes | None = None
    # the agents it may call (`CallableAgent`); absent in traces from before they were signed
    agents: tuple[CallableAgent, ...] | None = None

    def to_dag(self) -> dict[str, Any]:
        """The dag-cbor document (CIDs as links)."""
        doc: dict[str, Any] = {
            "type": TRACE_TYPE,
            "task_id": self.task_id,
            "user": self.user,
            "fee": self.fee,
            "agent": self.agent.to_dag(),
            "model_id": self.model_id,
            "input": self.input,
            "seed": self.seed,
            "limits": self.limits.to_dag(),
            "tools": [t.to_dag() for t in self.tools],
            "engine": self.engine.to_dag(),
            "output": self.output,
            "status": self.status,
            "error": self.error,
            "events": [e.to_dag() for e in self.events],
            "witness": self.witness.to_dag(),
        }
        if self.request is not None:
            doc["request"] = self.request.to_json()
        if self.request_signature is not None:
            doc["request_signature"] = hex0x(self.request_signature)
        if self.agents is not None:
            doc["agents"] = [a.to_dag() for a in self.agents]
        return doc

    @classmethod
    def from_dag(cls, obj: Any) -> Trace:
        """Read a decoded trace block.

        Raises:
            FormatError: not a ``supernet/trace/v1`` document, or a field missing, extra or mistyped
                (the message names it); more than `MAX_TRACE_EVENTS` events.
        """
        r = record(
            obj,
            "",
            (
                "type", "task_id", "user", "fee", "agent", "model_id", "input", "seed", "limits",
                "tools", "engine", "output", "status", "error", "events", "witness",
            ),
            ("request", "request_signature", "agents"),
        )  # fmt: skip
        if r["type"] != TRACE_TYPE:
            raise FormatError(f"type must be {TRACE_TYPE!r}, not {r['type']!r}")
        status = string(r["status"], "status")
        if status not in STATUSES:
            raise FormatError(f"status must be one of {STATUSES}")
        request = r.get("request")
        try:
            parsed_request = None if request is None else TaskRequest.from_json(request)
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(f"request: {exc}") from None
        tools = items(r["tools"], "tools", ToolDescription.from_dag)
        if len({t.name for t in tools}) != len(tools):
            raise FormatError("tools lists a tool twice")
        return cls(
            task_id=string(r["task_id"], "task_id"),
            user=string(r["user"], "user"),
            fee=integer(r["fee"], "fee", 0),
            agent=AgentRef.from_dag(r["agent"], "agent"),
            model_id=string(r["model_id"], "model_id"),
            input=data(r["input"], "input"),
            seed=integer(r["seed"], "seed", 0),
            limits=Limits.from_dag(r["limits"], "limits"),
            tools=tools,
            engine=Engine.from_dag(r["engine"], "engine"),
            output=string(r["output"], "output"),
            status=status,
            error=optional(string)(r["error"], "error"),
            events=items(r["events"], "events", event_from_dag, MAX_TRACE_EVENTS),
            witness=Witness.from_dag(r["witness"], "witness"),
            request=parsed_request,
            request_signature=optional(hexbytes)(r.get("request_signature"), "request_signature"),
            agents=optional(callable_agents)(r.get("agents"), "agents"),
        )


# -- the witness -----------------------------------------------------------------------------------


ROOT_WRITES: dict[str, tuple[type, ...]] = {
    "memory": (MemoryAddEvent,),
    "files": (StoragePutEvent, StorageRollbackEvent, StorageDeleteEvent),
}
"""The events that write a namespace root (``prev_root`` -> ``root``), by area: memory, files."""

ROOT_READS: dict[str, tuple[type, ...]] = {
    "memory": (MemorySearchEvent,),
    "files": (StorageGetEvent, StorageListEvent, StorageVersionsEvent, StorageMissingEvent),
}
"""The events that read a namespace root (``root``, ``None`` for an empty namespace), by area."""


def _reads(ev: Event) -> list[tuple[str, str | None]]:
    """The (``"block"`` | ``"file"`` | ``"read"``, CID) a replay (or a re-run of a ``store_read``) of
    one event reads, in the order it reads them."""
    if isinstance(ev, MemoryAddEvent):
        return [("block", ev.entry), ("block", ev.prev_root), ("block", ev.root)]
    if isinstance(ev, MemorySearchEvent):
        return [("block", ev.root), *(("block", h) for h in ev.hits)]
    if isinstance(ev, StoragePutEvent):
        return [("file", ev.cid), ("block", ev.prev_root), ("block", ev.root)]
    if isinstance(ev, StorageGetEvent):
        return [("block", ev.root), ("file", ev.cid)]
    if isinstance(ev, StorageListEvent | StorageVersionsEvent | StorageMissingEvent):
        return [("block", ev.root)]
    if isinstance(ev, StorageRollbackEvent | StorageDeleteEvent):
        return [("block", ev.prev_root), ("block", ev.root)]
    if isinstance(ev, ToolEvent) and ev.name == STORE_READ and ev.error is None:
        return [("read", str(ev.args.get("cid")))]
    return []


STORE_READ = "store_read"
"""The built-in tool that reads the content store by CID. What a successful call read goes into the
witness (a ``"read"``: the raw block, the file, or the dag-cbor block, whichever the tool read), so
a validator re-runs it from the trace alone: a result for a block the node withholds is no longer
unverifiable, it is a call the trace cannot back."""


def witness_reads(events: Sequence[Event]) -> list[tuple[str, str]]:
    """The ``("block" | "file" | "read", cid)`` pairs a replay of ``events`` (and a re-run of its
    ``store_read`` calls) reads, first read first, once each."""
    seen: dict[tuple[str, str], None] = {}
    for ev in events:
        for form, c in _reads(ev):
            if c is not None:
                seen.setdefault((form, c), None)
    return list(seen)


class VerifiedWitness:
    """A witness keyed by recomputed CIDs: what the node states about its entries is never trusted.

    Raises:
        FormatError: a block is not dag-cbor.
    """

    def __init__(self, witness: Witness) -> None:
        self.blocks: dict[str, Any] = {}
        self.encoded: dict[str, bytes] = {}  # the same blocks as stored (what a store's get_block gives)
        for i, block in enumerate(witness.blocks):
            cid = compute_cid(block, "dag-cbor")
            try:
                self.blocks[cid] = decode_dag(block)
            except Exception as exc:
                raise FormatError(f"witness.blocks[{i}] is not dag-cbor: {exc}") from None
            self.encoded[cid] = block
        self.files: dict[str, bytes] = {file_cid(f): f for f in witness.files}
        self.raw: dict[str, bytes] = {compute_cid(b): b for b in witness.raw}

    def block(self, key: str) -> Any:
        """The decoded block ``key`` (`KeyError` if the witness does not carry it)."""
        return self.blocks[canonical_cid(key)]

    def file(self, key: str) -> bytes:
        """The file ``key``'s bytes (`KeyError` if the witness does not carry it)."""
        return self.files[canonical_cid(key)]


def example_dag() -> dict[str, Any]:
    """A small well-formed trace document (for docs and tests)."""
    return {
        "type": TRACE_TYPE,
        "task_id": "0x" + "ab" * 32,
        "user": "0x" + "11" * 20,
        "fee": 10,
        "agent": {"id": "chat", "code_hash": "0x" + "cd" * 32},
        "model_id": "0x" + "07" * 32,
        "input": "hi",
        "seed": 0xABABABABABABABAB,
        "limits": {
            "memory": True,
            "storage": True,
            "max_llm_calls": 32,
            "max_llm_tokens": 8192,
            "max_new_tokens": 512,
            "max_tool_calls": 64,
            "max_file_bytes": 262144,
        },
        "tools": [],
        "engine": {"device": "cpu", "dtype": "float32"},
        "output": "yo",
        "status": "ok",
        "error": None,
        "events": [
            {
                "kind": "llm",
                "index": 0,
                "model_id": "0x" + "07" * 32,
                "messages": [{"role": "user", "content": "hi"}],
                "prompt_ids": [1, 2],
                "output_ids": [3],
                "params": {
                    "max_new_tokens": 4,
                    "temperature": 0.0,
                    "top_p": 1.0,
                    "seed": 5,
                    "stop_token_ids": None,
                    "stop": [],
                },
                "finish_reason": "stop",
                "logprobs": [-0.5],
                "fingerprints": None,
                "text": "yo",
                "preemptions": 0,
            }
        ],
        "witness": {"blocks": [], "files": []},
    }
