"""A stop callback that fires on a token the engine made between a slice's end and the preemption:
the call keeps the tokens up to that one, as a stop inside a slice does, never the later ones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from kernel_fixtures import FakeParams
from supernet.node.kernel.policies import FifoPolicy
from supernet.node.kernel.scheduler import LLMJob, Scheduler

pytestmark = pytest.mark.timeout(20)


@dataclass
class _Event:
    token_id: int
    logprob: float = -0.5


class _LateHandle:
    """Yields ``first`` before a preempt, ``late`` after it (then ends)."""

    def __init__(self, first: tuple[int, ...], late: tuple[int, ...]) -> None:
        self.late = late
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        for t in first:
            self.queue.put_nowait(_Event(t))

    async def __aiter__(self) -> AsyncIterator[_Event]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            yield item

    async def preempt(self) -> Any:
        for t in self.late:
            self.queue.put_nowait(_Event(t))
        self.queue.put_nowait(None)
        return object()  # a snapshot without fingerprints

    async def result(self) -> Any:
        raise AssertionError("a stopped call reads no result")

    def cancel(self) -> None:
        return None


class _LateEngine:
    def __init__(self, first: tuple[int, ...], late: tuple[int, ...]) -> None:
        self.first, self.late = first, late

    def submit(self, prompt_ids: Any, params: Any, *, request_id: str, resume: Any = None) -> _LateHandle:
        return _LateHandle(self.first, self.late)


class _AlwaysPreempt(FifoPolicy):
    def should_preempt(self, running: Any) -> bool:
        return True


async def test_late_tokens_after_a_stop_are_not_kept() -> None:
    sched = Scheduler(_LateEngine((1, 2, 3), (10, 11, 12, 13)), _AlwaysPreempt(), time_slice_tokens=3)
    seen: list[int] = []

    def on_token(index: int, token_id: int) -> bool:
        seen.append(token_id)
        return token_id == 11  # e.g. the token that completes a stop string

    out = await sched.generate(LLMJob("r", "task-r", "alice", 1, (1, 2), FakeParams(50)), on_token)
    assert out.finish_reason == "stopped"
    assert out.output_ids == (1, 2, 3, 10, 11) == tuple(seen)
    assert len(out.logprobs) == len(out.output_ids)
