"""Fixtures of the kernel tests.

``make_kernel`` builds a kernel on the real parts: the SmolLM2 engine, the all-MiniLM
embedder and an embedded content store (``tests/integration/test_kernel_*.py``).

``FakeLLMEngine`` is a FAKE: a few lines that mimic the engine's submit / stream / preempt
contract with made-up tokens, so the scheduler's *policies* (ordering, fair share,
preemption and resume, error propagation, no hang) can be tested alone and fast. It is used
by ``tests/unit/test_kernel_scheduler.py`` only; everything else runs on the real engine,
the real model and the real store (``tests/integration/test_kernel_*.py``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from supernet.node.kernel.policies import FairSharePolicy, Schedulable
from supernet.node.llm.errors import SequenceFinishedError


@dataclass(frozen=True)
class FakeParams:
    """Sampling parameters of the fake: only a length."""

    max_new_tokens: int


@dataclass(frozen=True)
class FakeTokenEvent:
    token_id: int
    position: int
    logprob: float


@dataclass(frozen=True)
class FakeSnapshot:
    tokens: tuple[int, ...]


@dataclass(frozen=True)
class FakeResult:
    output_ids: tuple[int, ...]
    finish_reason: str
    fingerprints: Any = None


def fake_token(prompt_ids: Sequence[int], index: int) -> int:
    """The fake's deterministic output token ``index`` for a prompt."""
    return (sum(prompt_ids) * 31 + index * 7) % 1000


@dataclass(eq=False)
class FakeHandle:
    request_id: str
    prompt_ids: tuple[int, ...]
    params: FakeParams
    tokens: list[int]
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    preempt_waiter: asyncio.Future[Any] | None = None
    result_value: FakeResult | None = None
    cancelled: bool = False

    async def __aiter__(self) -> AsyncIterator[FakeTokenEvent]:
        while True:
            item = await self.queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    async def result(self) -> FakeResult:
        assert self.result_value is not None, "result() before the end of the stream"
        return self.result_value

    def cancel(self) -> None:
        self.cancelled = True

    async def preempt(self) -> FakeSnapshot:
        if self.result_value is not None:
            raise SequenceFinishedError(f"{self.request_id} already finished")
        self.preempt_waiter = asyncio.get_running_loop().create_future()
        return await self.preempt_waiter


class FakeLLMEngine:
    """FAKE continuous-batching engine: each step gives every active sequence one token.

    Args:
        fail_request_ids: Requests whose stream raises ``RuntimeError`` at the first step.
    """

    def __init__(self, fail_request_ids: frozenset[str] = frozenset()) -> None:
        self.fail_request_ids = fail_request_ids
        self.steps: list[tuple[str, ...]] = []
        self.cancelled: list[str] = []
        self._active: list[FakeHandle] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def submit(
        self, prompt_ids: Sequence[int], params: FakeParams, *, request_id: str, resume: Any = None
    ) -> FakeHandle:
        tokens = list(resume.tokens) if resume is not None else []
        handle = FakeHandle(request_id, tuple(prompt_ids), params, tokens)
        self._active.append(handle)
        self._wake.set()
        return handle

    async def _loop(self) -> None:
        while True:
            if not self._active:
                self._wake.clear()
                await self._wake.wait()
                continue
            self.steps.append(tuple(h.request_id for h in self._active))
            for h in list(self._active):
                if h.cancelled:
                    self._active.remove(h)
                    self.cancelled.append(h.request_id)
                    h.result_value = FakeResult(tuple(h.tokens), "cancelled")
                    h.queue.put_nowait(None)
                elif h.preempt_waiter is not None:
                    self._active.remove(h)
                    h.preempt_waiter.set_result(FakeSnapshot(tuple(h.tokens)))
                    h.queue.put_nowait(None)
                elif h.request_id in self.fail_request_ids:
                    self._active.remove(h)
                    h.queue.put_nowait(RuntimeError(f"fake engine failure in {h.request_id}"))
                else:
                    tok = fake_token(h.prompt_ids, len(h.tokens))
                    h.tokens.append(tok)
                    h.queue.put_nowait(FakeTokenEvent(tok, len(h.prompt_ids) + len(h.tokens) - 1, -0.5))
                    if len(h.tokens) >= h.params.max_new_tokens:
                        self._active.remove(h)
                        h.result_value = FakeResult(tuple(h.tokens), "length")
                        h.queue.put_nowait(None)
            await asyncio.sleep(0)  # one step done: let the consumers run (a yield, not a timed wait)


@pytest_asyncio.fixture
async def fake_llm_engine() -> AsyncIterator[FakeLLMEngine]:
    """A started FAKE engine, for scheduler-policy unit tests only."""
    engine = FakeLLMEngine()
    await engine.start()
    yield engine
    await engine.stop()


# ---------------------------------------------------------------------------------------------
# Real parts: the SmolLM2 engine, the all-MiniLM embedder, an embedded store, a kernel on them
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def kernel_engine(smollm2_dir: Path) -> Any:
    """The real engine on SmolLM2-135M-Instruct, loaded once per session (kernels start/stop it)."""
    from supernet.node.llm import LLMEngine

    return LLMEngine.load(smollm2_dir)


@pytest.fixture(scope="session")
def kernel_embedder() -> Iterator[Any]:
    """The real all-MiniLM-L6-v2 embedder, shared by the session's kernels."""
    from supernet.node.kernel.embeddings import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    yield embedder
    embedder.close()


@pytest_asyncio.fixture
async def make_kernel(
    kernel_engine: Any, kernel_embedder: Any, store_client: Any
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Factory: ``await make_kernel(config, agents=...)`` gives a set-up kernel on the real parts."""
    from supernet.node.kernel.kernel import Kernel

    kernels: list[Any] = []

    async def make(config: Any = None, **kwargs: Any) -> Any:
        kernel = Kernel(kernel_engine, store_client, config, embedder=kernel_embedder, **kwargs)
        await kernel.setup()
        kernels.append(kernel)
        return kernel

    yield make
    for kernel in kernels:
        await kernel.stop()


class RecordingFairShare(FairSharePolicy):
    """The real fair share, recording what it is charged (user, tokens), in order."""

    def __init__(self) -> None:
        super().__init__()
        self.charged: list[tuple[str, int]] = []

    def charge(self, entry: Schedulable, tokens: int) -> None:
        self.charged.append((entry.user, tokens))
        super().charge(entry, tokens)
