"""The AIOS-style kernel of a node: scheduler, context, memory, storage, tool and access managers.

>>> from supernet.node.kernel import Kernel, KernelConfig, TaskSpec  # doctest: +SKIP
>>> kernel = Kernel(engine, store, KernelConfig(policy="fair"))  # doctest: +SKIP
>>> await kernel.setup()  # doctest: +SKIP
>>> outcome = await kernel.run_task(TaskSpec(task_id, "chat", "Hi", user=user, fee=fee))  # doctest: +SKIP

Names are imported on first use, so ``supernet.node.agents`` and the kernel's modules can
import each other's small modules without a cycle through this package.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "Kernel": "kernel",
    "KernelConfig": "kernel",
    "TaskRun": "kernel",
    "TaskSpec": "syscalls",
    "TaskOutcome": "syscalls",
    "TokenChunk": "syscalls",
    "ChatResult": "syscalls",
    "MemoryHit": "syscalls",
    "NodePolicy": "access",
    "AuditEntry": "access",
    "KernelError": "errors",
    "AccessDeniedError": "errors",
    "AgentNotAllowedError": "errors",
    "KernelStoppedError": "errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
