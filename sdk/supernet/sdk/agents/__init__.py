"""The agent ABI: what an agent author needs, with no torch and no node installed.

Write an agent as a class whose ``run`` uses ``ctx.llm``, ``ctx.tools``, ``ctx.memory`` and
``ctx.storage`` (each call one syscall into the node's kernel, recorded in the task's trace),
ship it in a package that declares it in the ``supernet.agents`` entry-point group, and the
operator allows it by id and code hash (docs/agents.md).

>>> from supernet.sdk.agents import Agent, AgentContext
>>> class Shout(Agent):
...     agent_id = "shout"
...     description = "The model's reply, in capitals."
...     input_schema = {"type": "string"}
...     async def run(self, ctx: AgentContext, input: str) -> str:
...         reply = await ctx.llm.chat([{"role": "user", "content": input}], max_new_tokens=32)
...         return reply.text.upper()
"""

from supernet.sdk.agents.base import Agent, bundle_hash, code_hash_of, package_bundle
from supernet.sdk.agents.context import (
    AgentContext,
    AgentsClient,
    FileVersions,
    LLMClient,
    MemoryClient,
    MessageLike,
    StorageClient,
    SyscallFn,
    ToolsClient,
)
from supernet.sdk.agents.errors import (
    AccessDeniedError,
    AgentNotAllowedError,
    BudgetExceededError,
    ConfirmationRequiredError,
    KernelError,
    KernelStoppedError,
    LLMError,
    MemoryStoreError,
    ToolArgumentsError,
    ToolError,
    ToolTimeoutError,
    ToolUnavailableError,
)
from supernet.sdk.agents.syscalls import (
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
from supernet.sdk.agents.tools import ToolSpec

ENTRY_POINT_GROUP = "supernet.agents"
"""The entry-point group a package declares its agents in (``id = "module:Class"``)."""

__all__ = [
    "ENTRY_POINT_GROUP",
    "AccessDeniedError",
    "Agent",
    "AgentCall",
    "AgentCallError",
    "AgentContext",
    "AgentNotAllowedError",
    "AgentsClient",
    "BudgetExceededError",
    "ChatResult",
    "ConfirmationRequiredError",
    "FileVersions",
    "KernelError",
    "KernelStoppedError",
    "LLMChat",
    "LLMClient",
    "LLMError",
    "MemoryAdd",
    "MemoryClient",
    "MemoryHit",
    "MemorySearch",
    "MemoryStoreError",
    "Message",
    "MessageLike",
    "StorageClient",
    "StorageDelete",
    "StorageGet",
    "StorageList",
    "StoragePut",
    "StorageRollback",
    "StorageVersions",
    "Syscall",
    "SyscallFn",
    "ToolArgumentsError",
    "ToolCall",
    "ToolError",
    "ToolSpec",
    "ToolTimeoutError",
    "ToolUnavailableError",
    "ToolsClient",
    "bundle_hash",
    "code_hash_of",
    "package_bundle",
]
