"""Errors the kernel raises into agents (and, on the node, into its callers).

Every manager failure reaches the agent that made the syscall as one of these (or as a builtin
error of the same name), rebuilt from the trace's record of it, never as a silent hang: type name
and message only, as a validator's replay raises it. They root at the SDK's
:class:`~supernet.sdk.errors.SupernetError` and mix in the matching builtin. The node's
``supernet.node.kernel.errors`` re-exports these very classes, so an agent catches them by
importing this module alone.
"""

from __future__ import annotations

from supernet.sdk.errors import SupernetError

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


class KernelError(SupernetError):
    """Root of the kernel's errors."""


class AccessDeniedError(KernelError, PermissionError):
    """The task's capabilities do not allow this action."""


class ConfirmationRequiredError(AccessDeniedError):
    """An irreversible action lacks the task owner's signed EIP-712 confirmation."""


class AgentNotAllowedError(KernelError, LookupError):
    """The node's operator does not run this agent (unknown id or code hash)."""


class ModelNotServedError(KernelError, LookupError):
    """The kernel serves no LLM core of the task's model id (the message lists the ones it serves)."""


class BudgetExceededError(KernelError):
    """The task used up its LLM-call or token budget."""


class ToolError(KernelError):
    """A tool failed, got bad arguments, or does not exist."""


class ToolArgumentsError(ToolError, ValueError):
    """Tool arguments do not match the tool's JSON schema."""


class ToolTimeoutError(ToolError, TimeoutError):
    """A tool ran past its timeout."""


class ToolUnavailableError(ToolError):
    """A tool could not reach data it needs (a block the content store does not serve): an outcome of
    the moment, not of the arguments, so validators never hold it against a node."""


class LLMError(KernelError):
    """The LLM engine failed a generation."""


class MemoryStoreError(KernelError):
    """A memory or storage block could not be read or written."""


class KernelStoppedError(KernelError, RuntimeError):
    """The kernel is not running (not set up yet, or stopped)."""
