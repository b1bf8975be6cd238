"""The kernel's messages: tasks in and out, syscalls an agent makes, and their results.

All are frozen dataclasses. An agent never builds these with its own identity: the kernel
binds every syscall to the task context it created, so a syscall carries only *what* is
asked, never *who* asks.

>>> call = LLMChat(messages=(Message("user", "Hi"),), max_new_tokens=8)
>>> call.temperature
0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

JSON = Any
"""A JSON-compatible value (dict, list, str, int, float, bool, None)."""


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """One admitted task, as the node service hands it to the kernel.

    Attributes:
        task_id: The task's id (the EIP-712 ``requestHash`` hex for paid tasks).
        agent_id: Which registered agent runs it.
        input: The task input (a string or a JSON object).
        user: The task owner's address; the memory and file namespaces derive from it.
        fee: Fee in wei; the fee-priority scheduler weighs users by it.
        agent_hash: If set, the agent's code hash must equal it (the signed ``agentHash``).
        tools: Tools the signed task asks for (``None``: all the node's policy allows).
        confirmations: ``actionHash`` hex -> 65-byte signature of an EIP-712 ``Confirmation``.
        timeout_s: Wall-clock bound of the whole task.
        request: The signed EIP-712 ``TaskRequest`` fields (paid tasks); recorded in the trace so
            that the trace alone, posted on chain, can be checked against the user's signature.
        request_signature: The user's signature of ``request`` (0x hex).
    """

    task_id: str
    agent_id: str
    input: JSON
    user: str = "0x0000000000000000000000000000000000000000"
    fee: int = 0
    agent_hash: str | None = None
    tools: frozenset[str] | None = None
    confirmations: Mapping[str, bytes] = field(default_factory=dict)
    timeout_s: float = 600.0
    request: Mapping[str, Any] | None = None
    request_signature: str | None = None


TaskStatus = Literal["ok", "error", "timeout", "cancelled"]


@dataclass(frozen=True)
class TaskOutcome:
    """What a finished task leaves: its output and where its trace lives.

    Attributes:
        task_id: The task's id.
        status: ``"ok"``, or how it failed.
        output: The agent's answer (empty on failure).
        error: ``"ErrorType: message"`` on failure.
        trace_cid: CID of the dag-cbor execution trace in the content store.
        trace_hash: ``keccak256`` of the trace CID's UTF-8 string, as the receipt holds it (0x hex).
        trace: The trace document itself (the same object the CID addresses).
        latency_s: Seconds from admission to the end of the agent.
        llm_tokens: Output tokens generated over all LLM calls.
    """

    task_id: str
    status: TaskStatus
    output: str
    error: str | None
    trace_cid: str
    trace_hash: str
    trace: Mapping[str, Any]
    latency_s: float
    llm_tokens: int


@dataclass(frozen=True)
class TokenChunk:
    """One generated token of a task, for the node's event stream."""

    task_id: str
    call_index: int
    token_id: int
    text: str


# ---------------------------------------------------------------------------------------------
# Syscalls
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str


@dataclass(frozen=True)
class LLMChat:
    """Generate a reply to chat ``messages`` with the node's model."""

    messages: tuple[Message, ...]
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class ToolCall:
    """Call the registered tool ``name`` with JSON ``args``."""

    name: str
    args: Mapping[str, JSON]


@dataclass(frozen=True)
class MemoryAdd:
    """Add a text to the agent's memory."""

    text: str
    metadata: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True)
class MemorySearch:
    """Find the ``k`` memory entries closest in meaning to ``query``."""

    query: str
    k: int = 3


@dataclass(frozen=True)
class StoragePut:
    """Write a file of the agent; each write is a new version (CID)."""

    path: str
    data: bytes


@dataclass(frozen=True)
class StorageGet:
    """Read a file of the agent: its latest version, or the version with CID ``version``."""

    path: str
    version: str | None = None


@dataclass(frozen=True)
class StorageList:
    """List the agent's files (path -> latest CID; deleted files left out)."""


@dataclass(frozen=True)
class StorageRollback:
    """Make the version of ``path`` with CID ``version`` its latest again (a new version number)."""

    path: str
    version: str


@dataclass(frozen=True)
class StorageDelete:
    """Delete ``path`` (a tombstone: its earlier versions stay readable by CID and restorable)."""

    path: str


@dataclass(frozen=True)
class StorageVersions:
    """List every version of ``path``: CIDs oldest first, ``None`` where it was deleted."""

    path: str


Syscall = (
    LLMChat
    | ToolCall
    | MemoryAdd
    | MemorySearch
    | StoragePut
    | StorageGet
    | StorageList
    | StorageRollback
    | StorageDelete
    | StorageVersions
)


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChatResult:
    """A finished LLM call.

    Attributes:
        text: The reply, cut before the first stop string.
        prompt_ids: Token ids of the templated prompt.
        output_ids: Token ids generated (what a validator teacher-forces).
        finish_reason: ``"stop"`` (stop token or string) or ``"length"``.
        preemptions: How often the scheduler preempted and resumed this generation.
    """

    text: str
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    finish_reason: str
    preemptions: int = 0


@dataclass(frozen=True)
class MemoryHit:
    """One memory search result."""

    cid: str
    text: str
    score: float
    metadata: Mapping[str, JSON]


# ---------------------------------------------------------------------------------------------
# Scheduler messages (kernel-internal)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LLMJob:
    """One LLM call to schedule: who pays for it and what to generate."""

    request_id: str
    task_id: str
    user: str
    fee: int
    prompt_ids: tuple[int, ...]
    params: Any


@dataclass(frozen=True)
class GenerationOutcome:
    """A finished LLM call as the scheduler saw it.

    Attributes:
        output_ids: All tokens generated, over every slice.
        logprobs: Log-probability of each output token.
        finish_reason: ``"stop"``, ``"length"``, or ``"stopped"`` (the caller's callback ended it).
        fingerprints: The engine's activation fingerprints (``None`` when the call was stopped early).
        preemptions: How often the call yielded and resumed.
    """

    output_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str
    fingerprints: Any
    preemptions: int
