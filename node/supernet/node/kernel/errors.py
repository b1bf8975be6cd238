"""Errors the kernel raises into agents and callers.

Every manager failure reaches the agent that made the syscall as one of these (or as the
original exception, chained), never as a silent hang. They root at the SDK's
:class:`~supernet.sdk.errors.SupernetError` and mix in the matching builtin. They are defined in
the agent ABI (:mod:`supernet.sdk.agents.errors`) and re-exported here, so agents need no node.
"""

from __future__ import annotations

from supernet.sdk.agents.errors import (
    AccessDeniedError,
    AgentNotAllowedError,
    BudgetExceededError,
    ConfirmationRequiredError,
    KernelError,
    KernelStoppedError,
    LLMError,
    MemoryStoreError,
    ModelNotServedError,
    ToolArgumentsError,
    ToolError,
    ToolTimeoutError,
    ToolUnavailableError,
)

__all__ = [
    "AccessDeniedError",
    "AgentNotAllowedError",
    "BudgetExceededError",
    "ConfirmationRequiredError",
    "KernelError",
    "KernelStoppedError",
    "LLMError",
    "MemoryStoreError",
    "ModelNotServedError",
    "ToolArgumentsError",
    "ToolError",
    "ToolTimeoutError",
    "ToolUnavailableError",
]
