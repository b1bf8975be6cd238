"""Errors the kernel raises into agents and callers.

Every manager failure reaches the agent that made the syscall as one of these, rebuilt from its
trace record (`as_raised`), never as a silent hang. They root at the SDK's
:class:`~supernet.sdk.errors.SupernetError` and mix in the matching builtin. They are defined in
the agent ABI (:mod:`supernet.sdk.agents.errors`) and re-exported here, so agents need no node.
"""

from __future__ import annotations

import builtins
from functools import cache

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


def as_raised(error: str) -> Exception:
    """A syscall's failure as the agent sees it, from its trace record ``"Type: message"``: the
    kernel's error of that name (else the builtin, else a `KernelError` subclass of that name),
    with that message and nothing else. The node raises this, not the live exception, so an agent
    sees on the node what a validator's replay (which has only the record) raises: a live error's
    chained cause, context or extra attributes were the node's alone, and an honest agent that
    looked at them was flagged (tests/unit/test_review_replay_fidelity.py)."""
    name, _, message = error.partition(": ")
    cls = _raised_classes().get(name) or getattr(builtins, name, None)
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = type(name, (KernelError,), {})
    try:
        return cls(message)
    except Exception:  # a builtin whose constructor wants other arguments
        return type(name, (KernelError,), {})(message)


@cache
def _raised_classes() -> dict[str, type[Exception]]:
    """The errors a syscall can fail with, by name: the agent ABI's (these and `AgentCallError`)
    and the node's own (each keeps its builtin base, e.g. a `GrammarError` is a `ValueError`), so
    an agent catches a rebuilt failure as it would the live one. Imported here, on first use: the
    modules that define them import this one."""
    from supernet.node.kernel.access import ConfirmationRejectedError, UnknownActionError
    from supernet.node.kernel.calculator import CalculatorError
    from supernet.node.kernel.trace import TraceTooLargeError
    from supernet.node.llm import errors as llm_errors
    from supernet.node.llm.grammar import GrammarError
    from supernet.node.llm.tokenizer import TokenizerError
    from supernet.sdk.agents.syscalls import AgentCallError

    node: list[type[Exception]] = [
        ConfirmationRejectedError, UnknownActionError, CalculatorError, TraceTooLargeError,
        GrammarError, TokenizerError, llm_errors.ContextOverflowError, llm_errors.EngineStoppedError,
        llm_errors.SequenceFinishedError, llm_errors.WeightsFormatError, llm_errors.ModelNotFoundError,
    ]  # fmt: skip
    abi = [AgentCallError, *(v for v in map(globals().get, __all__) if isinstance(v, type))]
    return {c.__name__: c for c in [*node, *abi] if issubclass(c, Exception)}  # the ABI's names win


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
    "as_raised",
]
