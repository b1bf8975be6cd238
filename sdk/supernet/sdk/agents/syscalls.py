"""The syscalls an agent makes, and their results: the kernel's agent-facing messages.

All are frozen dataclasses. An agent never builds these with its own identity: the kernel
binds every syscall to the task context it created, so a syscall carries only *what* is
asked, never *who* asks. The node's ``supernet.node.kernel.syscalls`` re-exports these classes.

>>> call = LLMChat(messages=(Message("user", "Hi"),), max_new_tokens=8)
>>> call.temperature
0.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from supernet.sdk.agents.errors import KernelError
from supernet.sdk.formats.trace import MAX_STOP_CHARS, MAX_STOP_STRINGS

__all__ = [
    "JSON",
    "MAX_AGENT_CALL_DEPTH",
    "AgentCall",
    "AgentCallError",
    "ChatResult",
    "LLMChat",
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
    "ToolCall",
]

JSON = Any
"""A JSON-compatible value (dict, list, str, int, float, bool, None)."""


# ---------------------------------------------------------------------------------------------
# Syscalls
# ---------------------------------------------------------------------------------------------


def _integer(name: str, value: Any) -> None:
    """Refuse a count that is not an ``int``: a float such as ``len(text) / 2`` passed every check
    before the work and only failed when the trace recorded it (a failure no replay gives: the node
    was flagged), so a syscall's arguments are checked where the agent builds it, alike on the node
    and in a validator's replay (tests/unit/test_review_replay_fidelity.py)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__} {value!r}")


def _number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, not {type(value).__name__} {value!r}")


@dataclass(frozen=True)
class Message:
    """One chat message."""

    role: str
    content: str


@dataclass(frozen=True)
class LLMChat:
    """Generate a reply to chat ``messages`` with the node's model.

    ``response_format`` (OpenAI's shape: ``{"type": "json_schema", "json_schema": {"schema": ...}}``
    or ``{"type": "json_object"}``; ``None`` or ``{"type": "text"}`` for free text; or the kernel's
    ``{"type": "tool_call", "tools": [{"name", "parameters"}], "text": bool}`` for a tool call)
    constrains the reply by the grammar the kernel builds from it (docs/protocol.md "Token
    selection").
    """

    messages: tuple[Message, ...]
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    response_format: Mapping[str, JSON] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        _integer("max_new_tokens", self.max_new_tokens)
        _number("temperature", self.temperature)
        _number("top_p", self.top_p)
        if self.seed is not None:
            _integer("seed", self.seed)
        _stop_strings(self.stop)


def _stop_strings(stop: Any) -> None:
    """At most `MAX_STOP_STRINGS` strings of at most `MAX_STOP_CHARS` characters: the protocol's
    bound (a trace recording more is malformed, so a call beyond it could never be verified)."""
    if not isinstance(stop, tuple) or not all(isinstance(s, str) for s in stop):
        raise TypeError(f"stop must be a tuple of strings, not {stop!r}")
    if len(stop) > MAX_STOP_STRINGS:
        raise ValueError(f"at most {MAX_STOP_STRINGS} stop strings, not {len(stop)}")
    for s in stop:
        if len(s) > MAX_STOP_CHARS:
            raise ValueError(f"a stop string has at most {MAX_STOP_CHARS} characters, not {len(s)}")


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

    def __post_init__(self) -> None:
        _integer("k", self.k)


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


@dataclass(frozen=True)
class AgentCall:
    """Run the agent ``agent_id`` of this node on ``input`` as a sub-task of this task.

    The child runs in its own namespace (``<user>/<agent_id>``), under this task's capabilities
    (never more) and on this task's budgets; its syscalls are recorded in this task's trace.
    """

    agent_id: str
    input: JSON


MAX_AGENT_CALL_DEPTH = 2
"""How deep agent calls nest: a task's agent may call a child, which may call a grandchild."""


class AgentCallError(KernelError):
    """The called agent failed (its ``"Type: message"`` error is in the message)."""


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
    | AgentCall
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

    Everything here is what a validator's replay gives the agent too (the recorded ids, re-scored).
    How often the node's scheduler preempted the call is in the trace as telemetry but not here: no
    check can reproduce the node's scheduling, so an agent branching on it let a node choose the
    branch (review of a rational node, 4).
    """

    text: str
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    finish_reason: str


@dataclass(frozen=True)
class MemoryHit:
    """One memory search result."""

    cid: str
    text: str
    score: float
    metadata: Mapping[str, JSON]
