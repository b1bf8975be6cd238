"""The LLM scheduler: orders every agent's LLM calls into the engine's continuous batch.

Up to ``max_active`` calls are in the engine at once (the engine runs them together, one
decode step for all); the rest wait in the policy's queue. Everything is event driven: a
call is admitted when it arrives or when a running call ends or yields; nothing polls or
sleeps. With a token time slice (round robin, fair share), a running call that has produced
``time_slice_tokens`` tokens since it was (re)admitted yields if the policy says a waiting
call should go first: the engine's ``handle.preempt()`` returns a snapshot, the context
manager keeps it, and the call is queued again to resume exactly where it stopped.

Any exception of the engine is set on the caller's future, so the agent gets it from its
``await``; a caller that goes away (cancelled) takes its call out of the queue or the batch.

>>> sched = Scheduler(engine, make_policy("rr"), max_active=8, time_slice_tokens=16)  # doctest: +SKIP
>>> job = LLMJob("req-1", "task-1", "0xuser", 0, prompt_ids, params)  # doctest: +SKIP
>>> outcome = await sched.generate(job)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from supernet.node.kernel.context import ContextManager
from supernet.node.kernel.errors import KernelStoppedError, LLMError
from supernet.node.kernel.policies import Policy
from supernet.node.kernel.syscalls import GenerationOutcome, LLMJob
from supernet.node.llm.errors import SequenceFinishedError

__all__ = ["GenerationOutcome", "LLMJob", "Scheduler", "TokenCallback"]

log = logging.getLogger(__name__)

TokenCallback = Callable[[int, int], bool]
"""Called with (output index, token id) for every new token; returns True to stop the call."""


class EngineHandle(Protocol):
    """One generation in the engine (``supernet.node.llm``'s handle)."""

    def __aiter__(self) -> AsyncIterator[Any]: ...
    async def result(self) -> Any: ...
    async def preempt(self) -> Any: ...
    def cancel(self) -> None: ...


class GenerationEngine(Protocol):
    """The part of the LLM engine the scheduler drives."""

    def submit(
        self, prompt_ids: Sequence[int], params: Any, *, request_id: str, resume: Any | None = None
    ) -> EngineHandle: ...


@dataclass(eq=False)
class _Entry:
    """Mutable bookkeeping of one call while it waits or runs (scheduler-private)."""

    job: LLMJob
    seq: int
    future: asyncio.Future[GenerationOutcome]
    on_token: TokenCallback | None
    output_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    preemptions: int = 0
    requeued: bool = False
    runner: asyncio.Task[None] | None = None

    @property
    def user(self) -> str:
        return self.job.user

    @property
    def fee(self) -> int:
        return self.job.fee


class Scheduler:
    """Admits LLM calls into the engine under a policy, with optional time slicing.

    Args:
        engine: The continuous-batching engine.
        policy: The ordering (see :mod:`supernet.node.kernel.policies`).
        max_active: Calls in the engine at once (its batch size).
        time_slice_tokens: Tokens a call may generate before it may be preempted (``None``: never).
        context: Where preempted calls' snapshots wait.
    """

    def __init__(
        self,
        engine: GenerationEngine,
        policy: Policy,
        *,
        max_active: int = 8,
        time_slice_tokens: int | None = None,
        context: ContextManager | None = None,
    ) -> None:
        if max_active < 1:
            raise ValueError("max_active must be at least 1")
        if time_slice_tokens is not None and time_slice_tokens < 1:
            raise ValueError("time_slice_tokens must be at least 1")
        self._engine = engine
        self._policy = policy
        self._max_active = max_active
        self._slice = time_slice_tokens
        self.context = context or ContextManager()
        self._active: set[_Entry] = set()
        self._seq = itertools.count()
        self._closed = False

    @property
    def active(self) -> int:
        """Calls in the engine now."""
        return len(self._active)

    @property
    def waiting(self) -> int:
        """Calls queued (new or preempted)."""
        return len(self._policy)

    async def generate(self, job: LLMJob, on_token: TokenCallback | None = None) -> GenerationOutcome:
        """Queue ``job``, wait for its turn(s) in the engine, and return the finished call.

        Raises:
            KernelStoppedError: The scheduler was closed.
            LLMError: The engine failed the generation (the engine's error is chained).
        """
        if self._closed:
            raise KernelStoppedError("the scheduler is closed")
        loop = asyncio.get_running_loop()
        entry = _Entry(job=job, seq=next(self._seq), future=loop.create_future(), on_token=on_token)
        self._policy.push(entry)
        self._dispatch()
        try:
            return await asyncio.shield(entry.future)
        except asyncio.CancelledError:
            self._abandon(entry)
            raise

    def close(self) -> None:
        """Fail every waiting call and stop the running ones."""
        self._closed = True
        while len(self._policy):
            entry = self._pop()
            self._policy.release(entry)
            self._fail(entry, KernelStoppedError("the kernel stopped before this LLM call ran"))
        for entry in list(self._active):
            self._fail(entry, KernelStoppedError("the kernel stopped during this LLM call"))
            if entry.runner is not None:
                entry.runner.cancel()

    # -- internals ------------------------------------------------------------------------------

    def _pop(self) -> _Entry:
        return cast(_Entry, self._policy.pop())  # the policy holds only what this scheduler pushed

    def _dispatch(self) -> None:
        """Admit waiting calls while the engine has free slots."""
        while not self._closed and len(self._active) < self._max_active and len(self._policy):
            entry = self._pop()
            if entry.future.done():  # its caller went away while it waited
                self._policy.release(entry)
                self.context.discard(entry.job.request_id)
                continue
            self._active.add(entry)
            entry.requeued = False
            entry.runner = asyncio.get_running_loop().create_task(
                self._run(entry), name=f"llm:{entry.job.request_id}"
            )
            entry.runner.add_done_callback(functools.partial(self._retire, entry))

    def _retire(self, entry: _Entry, _runner: object = None) -> None:
        """A runner ended (even one cancelled before it started): free its slot, admit the next."""
        self._active.discard(entry)
        if not entry.requeued:
            self._policy.release(entry)
            self.context.discard(entry.job.request_id)
        self._dispatch()

    def _abandon(self, entry: _Entry) -> None:
        """The caller of ``entry`` was cancelled: drop it from the queue or the batch."""
        if not entry.future.done():
            entry.future.cancel()
        if self._policy.remove(entry):
            self._policy.release(entry)
            self.context.discard(entry.job.request_id)
        elif entry.runner is not None and not entry.runner.done():
            entry.runner.cancel()

    def _fail(self, entry: _Entry, exc: BaseException) -> None:
        if not entry.future.done():
            entry.future.set_exception(exc)
            entry.future.exception()  # mark retrieved: a cancelled caller must not log "never retrieved"

    async def _run(self, entry: _Entry) -> None:
        """Run ``entry`` for one slice or to its end (``_retire`` frees the slot afterwards)."""
        job = entry.job
        handle: EngineHandle | None = None
        try:
            prepare = getattr(self._engine, "prepare_grammar", None)  # engines without grammars: none
            if prepare is not None and job.params.grammar is not None:
                await prepare(job.params)  # off the event loop: `submit` runs on it
            resume = self.context.take(job.request_id)
            handle = self._engine.submit(job.prompt_ids, job.params, request_id=job.request_id, resume=resume)
            in_slice = 0
            finishing = False  # the engine already finished the sequence: just read the rest
            async for event in handle:
                in_slice += 1
                if self._consume(entry, event):
                    snapshot = await _preempt(handle)
                    if snapshot is None:  # the engine had already finished: its result holds the
                        snapshot = await handle.result()  # fingerprints (else the trace lacks them)
                    return self._finish_stopped(entry, snapshot)
                if finishing or self._slice is None or in_slice < self._slice:
                    continue
                if not self._policy.should_preempt(entry):
                    continue
                snapshot = await _preempt(handle)
                if snapshot is None:
                    finishing = True
                    continue
                stop = False
                async for late in handle:  # tokens made between the slice's end and the preemption
                    if not stop:  # none after the one whose callback stopped (as within a slice)
                        stop = self._consume(entry, late)
                if stop:
                    return self._finish_stopped(entry, snapshot)
                self.context.save(job.request_id, snapshot)
                entry.preemptions += 1
                entry.requeued = True
                self._policy.push(entry)
                return None
            result = await handle.result()
            if tuple(result.output_ids) != tuple(entry.output_ids):
                raise LLMError(f"engine result of {job.request_id} disagrees with its token stream")
            fingerprints = getattr(result, "fingerprints", None)
            self._set(entry, self._outcome(entry, str(result.finish_reason), fingerprints))
        except asyncio.CancelledError:
            self._stop_quietly(handle)
            self._fail(entry, KernelStoppedError("the LLM call was cancelled"))
            raise
        except Exception as exc:
            log.warning("LLM call %s failed: %r", job.request_id, exc)
            err = exc if isinstance(exc, LLMError) else LLMError(f"LLM engine failed: {exc!r}")
            if err is not exc:
                err.__cause__ = exc
            self._fail(entry, err)
        return None

    def _consume(self, entry: _Entry, event: Any) -> bool:
        """Take one token event; True when the caller's callback asks to stop.

        The policy is charged the token and the prompt tokens the engine computed before it
        (``event.prefilled``: a fresh prompt's prefill less its prefix-cache hit, on its first
        token): one user's long prompts cost that user's share, as its output does."""
        entry.output_ids.append(int(event.token_id))
        entry.logprobs.append(float(event.logprob))
        self._policy.charge(entry, 1 + int(getattr(event, "prefilled", 0)))
        if entry.on_token is None:
            return False
        return bool(entry.on_token(len(entry.output_ids) - 1, int(event.token_id)))

    def _finish_stopped(self, entry: _Entry, snapshot: Any) -> None:
        """End a call its callback stopped: keep the tokens taken so far and their fingerprints."""
        n = len(entry.output_ids)
        prints = getattr(snapshot, "fingerprints", None)
        fingerprints = None if prints is None else tuple(f for f in prints if f.index < n)
        self._set(entry, self._outcome(entry, "stopped", fingerprints))

    @staticmethod
    def _set(entry: _Entry, outcome: GenerationOutcome) -> None:
        if not entry.future.done():
            entry.future.set_result(outcome)

    def _outcome(self, entry: _Entry, reason: str, fingerprints: Any) -> GenerationOutcome:
        return GenerationOutcome(
            output_ids=tuple(entry.output_ids),
            logprobs=tuple(entry.logprobs),
            finish_reason=reason,
            fingerprints=fingerprints,
            preemptions=entry.preemptions,
        )

    @staticmethod
    def _stop_quietly(handle: EngineHandle | None) -> None:
        """Take a cancelled call's sequence out of the engine (never raises)."""
        if handle is None:
            return
        try:
            handle.cancel()
        except Exception as exc:  # it may have finished meanwhile
            log.debug("cancel of an abandoned call: %r", exc)


async def _preempt(handle: EngineHandle) -> Any | None:
    """Preempt ``handle``; ``None`` if the engine had already finished the sequence."""
    try:
        return await handle.preempt()
    except SequenceFinishedError:
        return None
