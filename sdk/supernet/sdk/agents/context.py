"""What an agent sees: ``ctx.llm``, ``ctx.tools``, ``ctx.memory``, ``ctx.storage``, ``ctx.agents``.

The node builds one :class:`AgentContext` per task (``supernet.node.agents.context`` re-exports
this module); an agent package needs only ``supernet-sdk`` to be written and type-checked.

Every method is one syscall into the kernel. The kernel binds the syscall function to the
task it created, so nothing an agent passes can change *whose* memory, files or budget it
uses: there is no user or agent argument anywhere here.

>>> async def run(self, ctx: AgentContext, input: str) -> str:  # doctest: +SKIP
...     reply = await ctx.llm.chat([{"role": "user", "content": input}], max_new_tokens=32)
...     await ctx.memory.add(reply.text)
...     return reply.text
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from supernet.sdk.agents.errors import KernelError
from supernet.sdk.agents.syscalls import (
    AgentCall,
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
from supernet.sdk.agents.tools import ToolSpec

SyscallFn = Callable[[Syscall], Awaitable[Any]]
"""The kernel's syscall entry, already bound to one task."""

MessageLike = Message | Mapping[str, str]
FileVersions = list[str | None]
"""A file's version CIDs, oldest first, ``None`` where it was deleted."""


def _message(m: MessageLike) -> Message:
    return m if isinstance(m, Message) else Message(str(m["role"]), str(m["content"]))


class LLMClient:
    """The node's language model."""

    def __init__(self, syscall: SyscallFn) -> None:
        self._syscall = syscall

    async def chat(
        self,
        messages: Sequence[MessageLike],
        *,
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        stop: Sequence[str] = (),
        response_format: Mapping[str, Any] | None = None,
    ) -> ChatResult:
        """Reply to chat ``messages`` (dicts with ``role`` and ``content``, or :class:`Message`).

        Args:
            messages: The conversation so far.
            max_new_tokens: Most tokens to generate (the node's policy may cap it lower).
            temperature: 0 for greedy decoding.
            top_p: Nucleus sampling mass.
            seed: Sampling seed; by default derived from the task's seed and the call's index.
            stop: Strings that end the reply (cut from the text).
            response_format: Constrain the reply: ``{"type": "json_schema", "json_schema":
                {"schema": ...}}`` or ``{"type": "json_object"}`` (`LLMChat`).
        """
        call = LLMChat(
            tuple(_message(m) for m in messages),
            max_new_tokens,
            temperature,
            top_p,
            seed,
            tuple(stop),
            response_format,
        )
        result: ChatResult = await self._syscall(call)
        return result


class ToolsClient:
    """The tools this task may call."""

    def __init__(self, syscall: SyscallFn, available: Sequence[ToolSpec]) -> None:
        self._syscall = syscall
        self.available: tuple[ToolSpec, ...] = tuple(available)

    def names(self) -> list[str]:
        """Names of the tools this task may call."""
        return [t.name for t in self.available]

    async def call(self, name: str, args: Mapping[str, Any]) -> Any:
        """Call tool ``name`` with JSON ``args``; returns its JSON result."""
        return await self._syscall(ToolCall(name, dict(args)))


class MemoryClient:
    """This agent's memory (for this user), searched by meaning."""

    def __init__(self, syscall: SyscallFn) -> None:
        self._syscall = syscall

    async def add(self, text: str, metadata: Mapping[str, Any] | None = None) -> str:
        """Remember ``text``; returns the entry's CID."""
        cid: str = await self._syscall(MemoryAdd(text, dict(metadata or {})))
        return cid

    async def search(self, query: str, k: int = 3) -> list[MemoryHit]:
        """The ``k`` remembered texts closest in meaning to ``query``, best first."""
        hits: list[MemoryHit] = await self._syscall(MemorySearch(query, k))
        return hits


class StorageClient:
    """This agent's files (for this user), versioned by CID."""

    def __init__(self, syscall: SyscallFn) -> None:
        self._syscall = syscall

    async def put(self, path: str, data: bytes | str) -> str:
        """Write a new version of ``path``; returns its CID."""
        raw = data.encode() if isinstance(data, str) else bytes(data)
        cid: str = await self._syscall(StoragePut(path, raw))
        return cid

    async def get(self, path: str, version: str | None = None) -> bytes:
        """Read the latest version of ``path`` (or the version with CID ``version``)."""
        data: bytes = await self._syscall(StorageGet(path, version))
        return data

    async def list(self) -> dict[str, str]:
        """Every file with its latest CID (deleted files left out)."""
        files: dict[str, str] = await self._syscall(StorageList())
        return files

    async def versions(self, path: str) -> FileVersions:
        """Every version of ``path``: CIDs oldest first (version 1 first), ``None`` where it was
        deleted; ``[]`` if there never was such a file."""
        versions: FileVersions = await self._syscall(StorageVersions(path))
        return versions

    async def rollback(self, path: str, version: str) -> int:
        """Make the version of ``path`` with CID ``version`` the latest again (a deleted file too);
        returns its new version number. ``FileNotFoundError`` if it is not a version of ``path``."""
        number: int = await self._syscall(StorageRollback(path, version))
        return number

    async def delete(self, path: str) -> None:
        """Delete ``path``: gone from :meth:`get` and :meth:`list`, its versions kept (a tombstone),
        so :meth:`rollback` restores it. ``FileNotFoundError`` if there is no such file."""
        await self._syscall(StorageDelete(path))


class AgentsClient:
    """The other agents of this node, run as sub-tasks of this task (docs/agents.md)."""

    def __init__(self, syscall: SyscallFn) -> None:
        self._syscall = syscall

    async def call(self, agent_id: str, input: Any) -> str:
        """Run agent ``agent_id`` on ``input`` (a string or JSON) and return its output.

        The child runs on this task's budgets, under this task's tools (never more), in its own
        memory and files for this user; its calls are in this task's trace. Raises
        ``AgentCallError`` if the child fails, ``AccessDeniedError`` past the nesting depth or for a
        cycle, ``AgentNotAllowedError`` for an agent the node does not run.
        """
        output: str = await self._syscall(AgentCall(agent_id, input))
        return output


async def _no_agent_calls(call: Syscall) -> Any:
    raise KernelError("this context was built without agent calls")


@dataclass(frozen=True)
class AgentContext:
    """One task's view of the kernel."""

    task_id: str
    llm: LLMClient
    tools: ToolsClient
    memory: MemoryClient
    storage: StorageClient
    agents: AgentsClient = field(default_factory=lambda: AgentsClient(_no_agent_calls))

    @classmethod
    def bind(cls, task_id: str, syscall: SyscallFn, tools: Sequence[ToolSpec]) -> AgentContext:
        """Build the context of one task around the kernel's bound syscall function."""
        return cls(
            task_id,
            LLMClient(syscall),
            ToolsClient(syscall, tools),
            MemoryClient(syscall),
            StorageClient(syscall),
            AgentsClient(syscall),
        )
