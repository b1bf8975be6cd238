"""What an agent sees: ``ctx.llm``, ``ctx.tools``, ``ctx.memory``, ``ctx.storage``.

The agent ABI lives in the SDK (:mod:`supernet.sdk.agents.context`, no torch needed); this
module re-exports it so the node's agents and kernel use the very same classes.
"""

from supernet.sdk.agents.context import (
    AgentContext,
    FileVersions,
    LLMClient,
    MemoryClient,
    MessageLike,
    StorageClient,
    SyscallFn,
    ToolsClient,
)

__all__ = [
    "AgentContext",
    "FileVersions",
    "LLMClient",
    "MemoryClient",
    "MessageLike",
    "StorageClient",
    "SyscallFn",
    "ToolsClient",
]
