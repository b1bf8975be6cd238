"""LLM cores: the models one kernel serves, each an engine with its own continuous batch.

A node may serve several model ids (other weights, or the same weights in another precision: the
id names both, `supernet.sdk.models`). Each is an :class:`LLMCore`: its engine and the scheduler
that orders calls into that engine's batch. The kernel keeps one set of cores and one of every
other manager (memory, storage, tools, access), so a user's memory is the same whichever model
their task runs on; the dispatcher sends each LLM syscall to the core of the task's model id.

>>> cores = LLMCores([LLMCore(fp32, sched_a), LLMCore(bf16, sched_b)])  # doctest: +SKIP
>>> cores.get(None).model_id == fp32.model_id.lower()  # no model named: the first  # doctest: +SKIP
True
>>> cores.get("0xunknown")  # ModelNotServedError, naming the served ids  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from supernet.node.kernel.errors import ModelNotServedError


@dataclass(frozen=True)
class LLMCore:
    """One served model: its engine and the scheduler of that engine's batch.

    Attributes:
        engine: The LLM engine (``supernet.node.llm.LLMEngine``, or a tape in a replay).
        scheduler: The scheduler feeding this engine (``supernet.node.kernel.scheduler.Scheduler``).
    """

    engine: Any
    scheduler: Any

    @property
    def model_id(self) -> str:
        """The served model id (``0x`` hex, lower case)."""
        return str(self.engine.model_id).lower()


class LLMCores:
    """The kernel's cores by model id; the first is the default (a task that names no model).

    Raises:
        ValueError: no cores, or two cores with one model id.
    """

    def __init__(self, cores: Sequence[LLMCore]) -> None:
        if not cores:
            raise ValueError("a kernel needs at least one LLM core")
        self._by_id: dict[str, LLMCore] = {}
        for core in cores:
            if core.model_id in self._by_id:
                raise ValueError(f"model {core.model_id} is served twice")
            self._by_id[core.model_id] = core
        self.default = cores[0]

    @property
    def model_ids(self) -> list[str]:
        """Every served model id, the default first."""
        return list(self._by_id)

    def get(self, model_id: str | None) -> LLMCore:
        """The core serving ``model_id`` (``None``: the default core).

        Raises:
            ModelNotServedError: no core serves it (the message lists the served ids).
        """
        if model_id is None:
            return self.default
        core = self._by_id.get(model_id.lower())
        if core is None:
            raise ModelNotServedError(
                f"model {model_id} is not served by this kernel; it serves {', '.join(self._by_id)}"
            )
        return core

    def __iter__(self) -> Iterator[LLMCore]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)
