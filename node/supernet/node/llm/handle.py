"""A request inside the engine (``Sequence``) and the caller's view of it (``GenerationHandle``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from supernet.node.llm.sampling import SamplingParams
from supernet.node.llm.types import Fingerprint, FinishReason, GenerationResult, SequenceSnapshot, TokenEvent

if TYPE_CHECKING:
    from supernet.node.llm.engine import LLMEngine
    from supernet.node.llm.grammar import GrammarConstraint
    from torch import Tensor


@dataclass(eq=False)
class Sequence:
    """Mutable state of one generation; touched only by the engine's event-loop task.

    Attributes:
        request_id: Caller's id.
        prompt: Prompt tokens.
        params: Sampling parameters.
        stop_ids: Tokens that end it.
        output: Output so far (the last one not yet in the cache).
        logprobs: Per output token.
        fingerprints: Recorded so far.
        resume: Snapshot whose cache is loaded on admission.
        slot: KV-pool slot while active, else -1.
        cached: Tokens whose keys/values are in the slot (a prompt part-way in: its chunks so far).
        prefix: Keys and values of a cached prompt prefix (``PrefixCache``), loaded into the slot
            so that the prefill computes only the rest of the prompt.
        share: Length of a prompt prefix to copy into the prefix cache once prefilled (0: none).
        chunk: Prompt tokens the next step computes for it while its prompt is not all in its slot
            (the engine's share of the step's budget, `LLMEngine.prefill_chunk`; ``None``: all).
        prefilled: Prompt tokens computed for it and not yet reported (`TokenEvent.prefilled`).
        constraint: The grammar state of a constrained generation (``params.grammar``), built by
            the engine at submission and advanced over the tokens so far.
    """

    request_id: str
    prompt: tuple[int, ...]
    params: SamplingParams
    stop_ids: frozenset[int]
    output: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    fingerprints: list[Fingerprint] = field(default_factory=list)
    resume: SequenceSnapshot | None = None
    slot: int = -1
    cached: int = 0
    prefix: tuple[Tensor, Tensor] | None = None
    share: int = 0
    chunk: int | None = None
    prefilled: int = 0
    constraint: GrammarConstraint | None = None
    events: asyncio.Queue[TokenEvent | None] = field(default_factory=asyncio.Queue)
    done: asyncio.Future[GenerationResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    preempt_waiters: list[asyncio.Future[SequenceSnapshot]] = field(default_factory=list)
    cancel_requested: bool = False
    grammar_refused: bool = False  # the grammar refused the token its own mask let through

    @property
    def prompt_ready(self) -> int:
        """Prompt tokens that need no computing: those in its slot (the chunks so far), else those
        of its prefix-cache hit (loaded with its first chunk)."""
        if self.cached:
            return self.cached
        return 0 if self.prefix is None else int(self.prefix[0].shape[2])

    @property
    def finished(self) -> bool:
        """Whether a result (or an error) has been delivered."""
        return self.done.done()

    def result_with(self, reason: FinishReason) -> GenerationResult:
        """The result as of now."""
        return GenerationResult(
            prompt_ids=self.prompt,
            output_ids=tuple(self.output),
            finish_reason=reason,
            logprobs=tuple(self.logprobs),
            fingerprints=tuple(self.fingerprints),
            request_id=self.request_id,
        )


class GenerationHandle:
    """The caller's side of a submitted generation: stream tokens, await the result, preempt, cancel.

    ``async for event in handle`` yields ``TokenEvent`` as tokens are produced (only the new ones
    after a resume) and ends when the generation finishes; it raises the engine's error if it failed.
    """

    def __init__(self, engine: LLMEngine, seq: Sequence) -> None:
        self._engine, self._seq = engine, seq

    @property
    def request_id(self) -> str:
        """The request id given to ``submit``."""
        return self._seq.request_id

    async def __aiter__(self) -> AsyncIterator[TokenEvent]:
        while (event := await self._seq.events.get()) is not None:
            yield event
        if self._seq.done.done() and self._seq.done.exception() is not None:
            raise self._seq.done.exception()  # type: ignore[misc]

    async def result(self) -> GenerationResult:
        """The finished generation (``finish_reason == "preempted"`` after a preempt)."""
        return await asyncio.shield(self._seq.done)

    async def preempt(self) -> SequenceSnapshot:
        """Take the sequence out of the batch between two steps and return its state.

        Raises:
            SequenceFinishedError: It finished before it could be preempted; read ``result()``.
        """
        return await self._engine._request_preempt(self._seq)

    def cancel(self) -> None:
        """Stop generating; the result gets ``finish_reason == "cancelled"``."""
        self._engine._request_cancel(self._seq)
