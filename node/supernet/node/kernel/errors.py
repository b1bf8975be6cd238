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


class TaskAbort(BaseException):
    """The node cannot serve this task (its engine failed, or holds fewer positions than the
    protocol's context): the task fails, no receipt is signed and nothing is billed.

    A ``BaseException`` on purpose: an agent's ``except Exception`` cannot catch it and go on
    with a fallback, since a receipt whose LLM call "failed" for a reason no replay reproduces
    would let a node skip the model at will (a validator takes such a trace as a divergence)."""


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
    "TaskAbort",
    "ToolArgumentsError",
    "ToolError",
    "ToolTimeoutError",
    "ToolUnavailableError",
]
