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

# The syscalls and their results are the agent ABI's (supernet.sdk.agents, no torch): re-exported.
from supernet.sdk.agents.syscalls import (
    MAX_AGENT_CALL_DEPTH,
    AgentCall,
    AgentCallError,
    ChatResult,
    LLMChat,
    MemoryAdd,
    MemoryHit,
    MemorySearch,
    Message,
    StorageDelete,
    StorageGet,
    StorageList,
    StoragePut,
    StorageRollback,
    StorageVersions,
    Syscall,
    ToolCall,
)

JSON = Any
"""A JSON-compatible value (dict, list, str, int, float, bool, None)."""

__all__ = [
    "JSON",
    "MAX_AGENT_CALL_DEPTH",
    "TASK_TIMEOUT_S",
    "AgentCall",
    "AgentCallError",
    "ChatResult",
    "GenerationOutcome",
    "LLMChat",
    "LLMJob",
    "MemoryAdd",
    "MemoryHit",
    "MemorySearch",
    "Message",
    "StorageDelete",
    "StorageGet",
    "StorageList",
    "StoragePut",
    "StorageRollback",
    "StorageVersions",
    "Syscall",
    "TaskOutcome",
    "TaskSpec",
    "TaskStatus",
    "TokenChunk",
    "ToolCall",
]


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------

TASK_TIMEOUT_S = 600.0
"""Wall-clock bound of one task on the node (its agent's run, LLM calls and tool calls included)."""


@dataclass(frozen=True)
class TaskSpec:
    """One admitted task, as the node service hands it to the kernel.

    Attributes:
        task_id: The task's id (the EIP-712 ``requestHash`` hex for paid tasks).
        agent_id: Which registered agent runs it.
        input: The task input (a string or a JSON object).
        user: The task owner's address; the memory and file namespaces derive from it.
        fee: Fee in wei; the fee-priority scheduler weighs users by it.
        agent_hash: If set, the hash of the agent's profile here (code, limits, tools) must equal it
            (the signed ``agentHash``, `supernet.sdk.formats.profile`).
        tools: Tools the signed task asks for (``None``: all the node's policy allows).
        confirmations: ``actionHash`` hex -> 65-byte signature of an EIP-712 ``Confirmation``.
        timeout_s: Wall-clock bound of the whole task.
        request: The signed EIP-712 ``TaskRequest`` fields (paid tasks); recorded in the trace so
            that the trace alone, posted on chain, can be checked against the user's signature.
        request_signature: The user's signature of ``request`` (0x hex).
        model_id: The served model id whose LLM core runs the task's LLM calls (the signed
            ``modelId``); ``None``: the kernel's first model.
    """

    task_id: str
    agent_id: str
    input: JSON
    user: str = "0x0000000000000000000000000000000000000000"
    fee: int = 0
    agent_hash: str | None = None
    tools: frozenset[str] | None = None
    confirmations: Mapping[str, bytes] = field(default_factory=dict)
    timeout_s: float = TASK_TIMEOUT_S
    request: Mapping[str, Any] | None = None
    request_signature: str | None = None
    model_id: str | None = None


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
