"""The continuous-batching engine.

One asyncio task owns the batch. Each iteration it applies preempts and cancels, admits waiting
requests into free KV slots, then runs one step in a dedicated worker thread (``run_in_executor``, so the
event loop stays responsive): a decode of every active sequence together, plus a batched prefill
of the newly admitted ones in the same forward pass, which join the decode once their prompt is
in. A step prefills at most ``prefill_chunk`` prompt tokens (`PREFILL_CHUNK_TOKENS`): a longer
prompt goes in over several steps (`supernet.node.llm.step`), so one user's long prompt holds the
others' next token for one chunk's time, not its whole prefill.
Sampled tokens go out as events; finished sequences retire and free their slot, and the loop lets
their callers' follow-up requests (an agent's next call) arrive before it admits the next batch.
The loop sleeps on an ``asyncio.Event`` when idle — no polling — and after ``KV_RELEASE_AFTER_S``
of idleness gives the KV cache's memory back to the OS.

>>> engine = LLMEngine.load("smollm2-135m")  # doctest: +SKIP
>>> await engine.start()  # doctest: +SKIP
>>> ids = engine.tokenizer.encode("The capital of France is")  # doctest: +SKIP
>>> h = engine.submit(ids, SamplingParams(max_new_tokens=8))  # doctest: +SKIP
>>> async for ev in h: print(ev.token_id)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence as Seq
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import torch
from supernet.node.llm import scoring
from supernet.node.llm.errors import ContextOverflowError, EngineStoppedError, LLMError, SequenceFinishedError
from supernet.node.llm.grammar import GrammarConstraint, prepare_tokenizer
from supernet.node.llm.handle import GenerationHandle, Sequence
from supernet.node.llm.kvcache import KVPool, PrefixCache
from supernet.node.llm.loader import load_model
from supernet.node.llm.manifest import build_manifest, model_id
from supernet.node.llm.model import Llama
from supernet.node.llm.sampling import SamplingParams
from supernet.node.llm.step import StepOutput, run_step
from supernet.node.llm.tokenizer import Tokenizer
from supernet.node.llm.types import (
    FinishReason,
    ScoreResult,
    SequenceSnapshot,
    TokenEvent,
    finish_reason_of,
)
from supernet.sdk.models import served_model_id
from torch import Tensor

log = logging.getLogger(__name__)
SCORE_CACHE_ENTRIES = 4  # scored prompts whose keys/values ``LLMEngine.score`` keeps
SCORE_CACHE_TOKENS = 1024  # longest prompt prefix kept per entry
# Event-loop turns the loop gives away after a step that finished sequences, before the next step:
# an agent often answers a finished call with its next one (a tool call, then another LLM call,
# a few dozen callbacks and one tool-thread hop later). Admitted now, that call prefills inside
# the next step; missed, it waits a whole step (~0.1 s on CPU) and its task ends a step later.
FOLLOW_UP_TURNS = 64
# Seconds without a sequence after which the engine gives its KV cache's memory back (`KVPool.release`)
# and empties its prefix cache (`PrefixCache.clear`).
KV_RELEASE_AFTER_S = 10.0
# Most prompt tokens one step computes, all new sequences together (`LLMEngine`'s ``prefill_chunk``):
# what a running sequence waits for between two tokens while others' prompts go in (~0.6 s for
# SmolLM2 on a 2-core CPU; a 2,000-token prompt used to hold every decoder ~10 s), while a
# 256-token pass still reads each weight once for many tokens.
PREFILL_CHUNK_TOKENS = 256
_ids = itertools.count()


class LLMEngine:
    """Serve one model to many concurrent generations; score claimed outputs for validators.

    Args:
        model: The decoder, already on its device and dtype.
        tokenizer: Its tokenizer (``None`` for token-only use, e.g. tests with random weights).
        weights_id: The id of its weights manifest; the engine serves ``model_id``, the served
            id of those weights in its compute dtype (`supernet.sdk.models.served_model_id`).
        max_batch: Most sequences decoded together (KV slots).
        max_seq_len: Longest prompt + output of one sequence.
        pack_weights: On CPU in fp32, reorder the projection weights for oneDNN's small-batch
            kernels (``Llama.pack_linears``); faster decoding, same results up to rounding.
        prefix_cache: Keep the keys/values of prompt prefixes that recent prompts share (at least
            ``PrefixCache.min_tokens`` tokens, e.g. a chat template's system turn) and prefill only
            the rest of later prompts that start with them; same results up to rounding. At most
            `PREFIX_CACHE_BYTES` of them, emptied with the idle release of the KV cache.
        prefill_chunk: Most prompt tokens one step computes (`PREFILL_CHUNK_TOKENS`); a longer
            prompt is prefilled over several steps, the same results up to rounding.
    """

    def __init__(
        self,
        model: Llama,
        tokenizer: Tokenizer | None,
        weights_id: str,
        *,
        max_batch: int = 16,
        max_seq_len: int = 2048,
        pack_weights: bool = True,
        prefix_cache: bool = True,
        prefill_chunk: int = PREFILL_CHUNK_TOKENS,
    ) -> None:
        if prefill_chunk < 1:
            raise ValueError("prefill_chunk must be at least 1")
        if pack_weights and not model.packed:
            model.pack_linears(batch_hint=max_batch)
        self.model, self.tokenizer, self.weights_id = model, tokenizer, weights_id
        self.device, self.dtype = model.device, model.dtype
        # The id users sign names the compute format too (`supernet.sdk.models`): a validator then
        # judges the node by what it signed up to compute, not by what its trace claims.
        self.compute = model.compute
        self.model_id = served_model_id(weights_id, self.compute)
        self.eos_token_ids: tuple[int, ...] = tuple(model.cfg.eos_token_ids)
        """The model's end-of-sequence tokens: a call's stop tokens unless it names others."""
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.max_seq_len = min(max_seq_len, model.rope_cos.shape[0])
        self.pool = KVPool(model.cfg, max_batch, self.max_seq_len, self.device, self.dtype)
        self.prefixes = PrefixCache() if prefix_cache else None
        self._score_prefixes: OrderedDict[tuple[int, ...], tuple[Tensor, Tensor]] = OrderedDict()
        self._score_lock = threading.Lock()
        self.steps = 0
        self.stepped_sequences = 0
        self.kv_release_after_s = KV_RELEASE_AFTER_S
        self.kv_releases = 0  # times the idle engine gave the KV cache's memory back
        self._pending: deque[Sequence] = deque()
        self._active: list[Sequence] = []
        self._control: list[Sequence] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = False

    # ------------------------------------------------------------------ construction

    @classmethod
    def load(
        cls,
        name_or_path: str | Path = "smollm2-135m",
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        compute: str | None = None,
        fused: bool = True,
        **kwargs: Any,
    ) -> LLMEngine:
        """Load a catalog model (pulled beforehand) or a local model directory / GGUF file.

        ``compute`` names a served format (``float32``, ``bfloat16``, ``float16-weights``,
        ``int8-weights``; `supernet.node.llm.loader.load_model`); without it or ``dtype``, float32
        on CPU. ``fused``: float16-weights and int8-weights on a CPU run the C kernels where they build
        (`supernet.node.llm.fused`; False keeps the torch path).
        """
        max_seq_len = kwargs.get("max_seq_len", 2048)
        loaded = load_model(
            name_or_path, device=device, dtype=dtype, max_positions=max_seq_len, compute=compute, fused=fused
        )
        engine = cls(loaded.model, loaded.tokenizer, loaded.model_id, **kwargs)
        log.info(
            "loaded %s on %s in %s: serves model %s",
            loaded.path,
            engine.device,
            engine.compute,
            engine.model_id,
        )
        return engine

    @classmethod
    def from_model(cls, model: Llama, tokenizer: Tokenizer | None = None, **kwargs: Any) -> LLMEngine:
        """Wrap an in-memory model (tests, experiments); the id is computed from its weights."""
        digest = None if tokenizer is None else tokenizer.digest()
        manifest = build_manifest(model.to_hf_state_dict(), model.cfg.to_dict(), digest)
        return cls(model.eval(), tokenizer, model_id(manifest), **kwargs)

    # ------------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """Whether the batching loop is running."""
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        """Start the batching loop (idempotent)."""
        if self.running:
            return
        self._stopping = False
        self._wake = asyncio.Event()
        # one dedicated thread runs the steps: never two at once, never queued behind other to_thread work
        threads = torch.get_num_threads()
        self._executor = ThreadPoolExecutor(
            1, "llm-step", initializer=torch.set_num_threads, initargs=(threads,)
        )
        self._task = asyncio.create_task(self._run(), name="llm-engine")

    async def stop(self) -> None:
        """Finish the current step, fail every outstanding request with ``EngineStoppedError``, stop."""
        if self._task is None:
            return
        self._stopping = True
        self._wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def __aenter__(self) -> LLMEngine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ requests

    def submit(
        self,
        prompt_ids: Seq[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        resume: SequenceSnapshot | None = None,
    ) -> GenerationHandle:
        """Queue a generation; it joins the batch between two steps.

        Args:
            prompt_ids: Prompt tokens (at least one).
            params: Sampling parameters (greedy, 64 tokens by default).
            request_id: Caller's id, echoed in the result.
            resume: A snapshot from ``GenerationHandle.preempt`` of the same prompt on this model;
                the generation continues exactly where it stopped.

        Raises:
            EngineStoppedError: The loop is not running.
            ContextOverflowError: The prompt does not fit ``max_seq_len``.
            ValueError: Empty prompt, or a snapshot of another prompt or model.
            GrammarError: ``params.grammar`` does not compile (a ``ValueError``).
        """
        if not self.running or self._stopping:
            raise EngineStoppedError("the engine is not running: await engine.start() first")
        params = params or SamplingParams()
        prompt = tuple(int(t) for t in prompt_ids)
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        if len(prompt) + (len(resume.output_ids) if resume else 0) >= self.max_seq_len:
            raise ContextOverflowError(f"{len(prompt)} tokens do not fit max_seq_len {self.max_seq_len}")
        if max(prompt) >= self.model.cfg.vocab_size or min(prompt) < 0:
            raise ValueError("prompt holds token ids outside the vocabulary")
        stop = params.stop_token_ids if params.stop_token_ids is not None else self.model.cfg.eos_token_ids
        seq = Sequence(request_id or f"req-{next(_ids)}", prompt, params, frozenset(stop))
        if resume is not None:
            self._check_snapshot(resume, prompt)
            seq.output, seq.logprobs = list(resume.output_ids), list(resume.logprobs)
            seq.fingerprints = list(resume.fingerprints)
            seq.resume = resume if resume.output_ids else None
        if params.grammar is not None:
            seq.constraint = self._constraint(params.grammar, sorted(stop), seq.output)
        self._pending.append(seq)
        self._wake.set()
        return GenerationHandle(self, seq)

    async def prepare_grammar(self, params: SamplingParams) -> None:
        """Build what a constrained call's grammar needs (llguidance's view of the tokenizer, about
        a second the first time) in a worker thread, so that `submit`, which runs on the event
        loop, finds it ready; a no-op for an unconstrained call or once built."""
        if params.grammar is None or self.tokenizer is None:
            return
        stop = params.stop_token_ids if params.stop_token_ids is not None else self.model.cfg.eos_token_ids
        await asyncio.to_thread(prepare_tokenizer, self.tokenizer, self.model.cfg.vocab_size, stop)

    def _constraint(self, grammar: str, stop: list[int], output: list[int]) -> GrammarConstraint:
        """The grammar state of a constrained generation, advanced over ``output`` (a resume)."""
        if self.tokenizer is None:
            raise ValueError("a constrained generation needs the model's tokenizer")
        constraint = GrammarConstraint(self.tokenizer, grammar, self.model.cfg.vocab_size, stop)
        for token in output:
            if not constraint.advance(token):
                raise ValueError(f"the resumed output leaves the grammar at token {token}")
        return constraint

    def _check_snapshot(self, snap: SequenceSnapshot, prompt: tuple[int, ...]) -> None:
        if snap.model_id != self.model_id:
            raise ValueError(f"snapshot of model {snap.model_id}, engine serves {self.model_id}")
        if snap.prompt_ids != prompt:
            raise ValueError("snapshot of a different prompt")
        if snap.output_ids and snap.n_cached != len(prompt) + len(snap.output_ids) - 1:
            raise ValueError("snapshot cache does not match its tokens")

    def score(
        self, prompt_ids: Seq[int], output_ids: Seq[int], params: SamplingParams | None = None
    ) -> ScoreResult:
        """Teacher-forced scores of a claimed output (one forward pass); see ``scoring.score``.

        With the prefix cache on, the pass skips the longest prompt prefix (at least
        ``PrefixCache.min_tokens`` tokens) whose keys/values are at hand: from the generation
        prefix cache (e.g. the chat template's system turn) or from the last few scored prompts
        (validators score many outputs of one prompt). Same results up to rounding.
        """
        prompt = tuple(prompt_ids)
        if self.prefixes is None or not output_ids:
            return scoring.score(self.model, prompt, output_ids, params)
        prefix = self._score_prefix(prompt)
        keep = min(len(prompt), SCORE_CACHE_TOKENS)
        result, kv = scoring.score_with_prompt_kv(
            self.model, prompt, output_ids, params, prefix=prefix, keep_prompt=keep
        )
        if kv is not None and kv[0].shape[2] >= self.prefixes.min_tokens:
            with self._score_lock:
                self._score_prefixes[prompt[: kv[0].shape[2]]] = kv
                self._score_prefixes.move_to_end(prompt[: kv[0].shape[2]])
                while len(self._score_prefixes) > SCORE_CACHE_ENTRIES:
                    self._score_prefixes.popitem(last=False)
        return result

    def _score_prefix(self, prompt: tuple[int, ...]) -> tuple[Tensor, Tensor] | None:
        """Keys/values of the longest known prefix of ``prompt`` that leaves one token (or ``None``)."""
        assert self.prefixes is not None
        with self._score_lock:
            candidates = list(self._score_prefixes.items())
        with contextlib.suppress(RuntimeError):  # the engine thread may be adding an entry
            candidates += list(self.prefixes.entries.items())
        best_n, _, best = scoring.longest_cached_prefix(candidates, prompt, len(prompt) - 1)
        if best is None or best_n < self.prefixes.min_tokens:
            return None
        return best[0][:, :, :best_n], best[1][:, :, :best_n]

    async def ascore(
        self, prompt_ids: Seq[int], output_ids: Seq[int], params: SamplingParams | None = None
    ) -> ScoreResult:
        """``score`` in a worker thread, for use inside the event loop."""
        return await asyncio.to_thread(self.score, prompt_ids, output_ids, params)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes per token of one sequence."""
        return self.pool.bytes_per_token

    @property
    def load_stats(self) -> dict[str, int]:
        """Active and waiting sequences, steps run, sequence-steps run (tokens), KV-cache bytes reserved,
        idle releases of the KV cache."""
        return {
            "active": len(self._active),
            "waiting": len(self._pending),
            "steps": self.steps,
            "sequence_steps": self.stepped_sequences,
            "kv_cache_bytes": self.pool.capacity * self.pool.slots * self.pool.bytes_per_token,
            "kv_releases": self.kv_releases,
        }

    async def _request_preempt(self, seq: Sequence) -> SequenceSnapshot:
        if seq.finished:
            raise SequenceFinishedError(f"{seq.request_id} already finished")
        fut: asyncio.Future[SequenceSnapshot] = asyncio.get_running_loop().create_future()
        seq.preempt_waiters.append(fut)
        self._control.append(seq)
        self._wake.set()
        return await fut

    def _request_cancel(self, seq: Sequence) -> None:
        if not seq.finished:
            seq.cancel_requested = True
            self._control.append(seq)
            self._wake.set()

    # ------------------------------------------------------------------ the loop

    async def _run(self) -> None:
        try:
            while not self._stopping:
                self._apply_control()
                self._admit()
                if not self._active:
                    self._wake.clear()
                    if not (self._pending or self._control or self._stopping):
                        await self._idle()
                    continue
                batch = self._plan()
                active = len(self._active)
                try:
                    loop = asyncio.get_running_loop()
                    step = partial(run_step, self.model, self.pool, batch)
                    outputs = await loop.run_in_executor(self._executor, step)
                except Exception as exc:  # a failed step fails its sequences, not the engine
                    log.exception("engine step failed")
                    self._fail(batch, LLMError(f"engine step failed: {exc}"))
                    self._retire(batch)
                    continue
                self.steps += 1
                self.stepped_sequences += len(batch)  # one token, or a chunk of its prompt, per sequence
                self._apply(batch, outputs)
                if len(self._active) < active:  # some finished: let their callers follow up
                    for _ in range(FOLLOW_UP_TURNS):
                        await asyncio.sleep(0)
        except BaseException as exc:
            self._fail(self._active + list(self._pending), EngineStoppedError(f"engine loop died: {exc!r}"))
            raise
        finally:
            self._fail(self._active + list(self._pending), EngineStoppedError("the engine stopped"))
            self._active.clear()
            self._pending.clear()

    async def _idle(self) -> None:
        """Sleep until woken; once idle for ``kv_release_after_s``, give the KV cache's memory back,
        the prefix cache's included (not at every gap: an agent's next call often follows within
        a step)."""
        try:
            await asyncio.wait_for(self._wake.wait(), self.kv_release_after_s)
        except TimeoutError:
            self.pool.release()
            if self.prefixes is not None:
                self.prefixes.clear()
            self.kv_releases += 1
            await self._wake.wait()

    def _admit(self) -> None:
        while self._pending and len(self._active) < self.max_batch:
            seq = self._pending.popleft()
            if seq.finished:
                continue
            if self._finish_if_done(seq):
                continue
            seq.slot = self.max_batch + len(self._active)  # past every slot: `_arrange` places it
            self._active.append(seq)
            if self.prefixes is not None and not seq.output:
                prefix = self.prefixes.match(seq.prompt)
                seq.prefix = None if prefix is None else self.prefixes.get(prefix)
                seq.share = self.prefixes.propose(seq.prompt, 0 if prefix is None else len(prefix))
        self._arrange()

    def _arrange(self) -> None:
        """Lay the active sequences out as a step needs them: the decoding ones (resumed ones
        included) in slots ``0..D-1``, then the ones whose prompt is not all in yet, in the order they
        were admitted (the step's prompt budget goes first come first served). A decoding sequence
        already among the first ``D`` slots stays; a sequence whose keys/values are in the pool and
        whose slot changes takes them along."""
        decoding = [s for s in self._active if s.output]
        prefilling = sorted((s for s in self._active if not s.output), key=lambda s: s.slot)
        d = len(decoding)
        kept = {s.slot for s in decoding if s.slot < d}
        holes = iter(i for i in range(d) if i not in kept)
        target = {id(s): s.slot if s.slot < d else next(holes) for s in decoding}
        target |= {id(s): d + i for i, s in enumerate(prefilling)}
        moves = {s.slot: (s, target[id(s)]) for s in self._active if target[id(s)] != s.slot}
        with torch.inference_mode():
            parked: list[tuple[int, tuple[Tensor, Tensor]]] = []
            while moves:
                # a move whose destination no other pending move still has to read from goes
                # straight; a cycle parks one sequence's keys/values aside
                src = next((a for a, (_, b) in moves.items() if b not in moves), None)
                if src is None:
                    src = next(iter(moves))
                    seq, dst = moves.pop(src)
                    if self._in_pool(seq):
                        parked.append((dst, self.pool.export(src, seq.cached)))
                    continue
                seq, dst = moves.pop(src)
                if self._in_pool(seq) and src < self.pool.slots:
                    self.pool.move(src, dst, seq.cached)
            for dst, (keys, values) in parked:
                self.pool.load(dst, keys, values)
        self._active = sorted(self._active, key=lambda s: target[id(s)])
        for i, s in enumerate(self._active):
            s.slot = i

    def _plan(self) -> list[Sequence]:
        """The sequences the next step advances, a leading run of the active ones: every decoding
        one, and the ones whose prompt is not all in yet while the step's ``prefill_chunk`` prompt
        tokens last, first come first served (each one's share in ``Sequence.chunk``; a prompt
        longer than what is left goes on in the next steps). The others wait, holding nothing in
        the pool: a prompt part-way in (at most one) is the first served."""
        left = self.prefill_chunk
        batch: list[Sequence] = []
        for seq in self._active:
            if not seq.output:
                if not left:
                    break
                seq.chunk = min(len(seq.prompt) - seq.prompt_ready, left)
                left -= seq.chunk
            batch.append(seq)
        stray = [s for s in self._active[len(batch) :] if s.cached]
        if stray:  # never by construction; a step that grew the pool would lose their keys/values
            log.error("%d sequences left out of a step hold keys/values in the pool", len(stray))
            self._fail(stray, LLMError("the engine lost track of a prompt part-way in"))
            self._retire(stray)
            return self._plan()
        return batch

    @staticmethod
    def _in_pool(seq: Sequence) -> bool:
        """Whether the pool holds keys/values of ``seq`` (a resumed one's load at its first step)."""
        return seq.cached > 0 and seq.resume is None

    def _apply(self, batch: list[Sequence], outputs: list[StepOutput]) -> None:
        done: list[Sequence] = []
        refused = [s for s in batch if s.grammar_refused]
        for seq, out in zip(batch, outputs, strict=True):
            seq.resume = None
            seq.cached = out.cached
            seq.prefilled += out.prefilled
            if seq.share and seq.cached >= seq.share:  # its slot now holds the proposed prefix
                if self.prefixes is not None and self.prefixes.fits(seq.share * self.pool.bytes_per_token):
                    keys = self.pool.k[:, seq.slot, :, : seq.share].clone()
                    values = self.pool.v[:, seq.slot, :, : seq.share].clone()
                    self.prefixes.add(seq.prompt[: seq.share], keys, values)
                seq.share = 0
            if seq.cached:  # a prefix-cache hit is loaded with the first chunk
                seq.prefix = None
            if out.token is None:  # its prompt is not all in yet: no token this step
                continue
            if seq.grammar_refused:  # never streamed: the call fails and its task gets no receipt
                continue
            position = len(seq.prompt) + len(seq.output)
            seq.output.append(out.token)
            seq.logprobs.append(out.logprob)
            if out.fingerprint is not None:
                seq.fingerprints.append(out.fingerprint)
            seq.events.put_nowait(TokenEvent(out.token, position, out.logprob, seq.prefilled))
            seq.prefilled = 0
            if self._finish_if_done(seq):
                done.append(seq)
        if refused:
            self._fail(refused, LLMError("the grammar engine refused a token its own mask allowed"))
        self._retire(done + refused)

    def _finish_if_done(self, seq: Sequence) -> bool:
        budget = min(seq.params.max_new_tokens, self.max_seq_len - len(seq.prompt))
        reason = finish_reason_of(seq.output, budget, seq.stop_ids)  # stop token first, then budget
        if reason is not None:
            self._finish(seq, reason)
        return reason is not None

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        if seq.finished:
            return
        seq.done.set_result(seq.result_with(reason))
        seq.events.put_nowait(None)
        for fut in seq.preempt_waiters:
            if not fut.done():
                fut.set_exception(SequenceFinishedError(f"{seq.request_id} finished ({reason})"))

    def _fail(self, seqs: list[Sequence], exc: Exception) -> None:
        for seq in seqs:
            if seq.finished:
                continue
            seq.done.set_exception(exc)
            seq.done.exception()  # mark retrieved: callers see it through result() / iteration
            seq.events.put_nowait(None)
            for fut in seq.preempt_waiters:
                if not fut.done():
                    fut.set_exception(exc)

    def _apply_control(self) -> None:
        control, self._control = self._control, []
        leaving: list[Sequence] = []
        for seq in dict.fromkeys(control):
            if seq.finished:
                continue
            if seq.cancel_requested:
                self._finish(seq, "cancelled")
            elif seq.preempt_waiters:
                snap = self._snapshot(seq)
                for fut in seq.preempt_waiters:
                    if not fut.done():
                        fut.set_result(snap)
                self._finish(seq, "preempted")
            if seq.slot >= 0:
                leaving.append(seq)
            else:
                with contextlib.suppress(ValueError):
                    self._pending.remove(seq)
        self._retire(leaving)

    def _snapshot(self, seq: Sequence) -> SequenceSnapshot:
        keys = values = None
        if seq.resume is not None:
            keys, values = seq.resume.keys, seq.resume.values
        elif seq.slot >= 0 and seq.cached and seq.output:  # a prompt part-way in is prefilled again
            keys, values = self.pool.export(seq.slot, seq.cached)
        return SequenceSnapshot(
            prompt_ids=seq.prompt,
            output_ids=tuple(seq.output),
            logprobs=tuple(seq.logprobs),
            fingerprints=tuple(seq.fingerprints),
            params=seq.params,
            model_id=self.model_id,
            keys=keys,
            values=values,
        )

    def _retire(self, seqs: list[Sequence]) -> None:
        """Free the slots of ``seqs``; the others close the gaps (`_arrange`)."""
        leaving = {id(s) for s in seqs if s.slot >= 0}
        if not leaving:
            return
        for seq in seqs:
            seq.slot = -1
        self._active = [s for s in self._active if id(s) not in leaving]
        self._arrange()
