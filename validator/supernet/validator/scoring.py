"""The validator's model: teacher-forced scoring with the node's own decoder and scoring code.

The validator does not need the continuous-batching engine, only teacher-forced passes over the
recorded calls; it loads the same weights the same way (`supernet.node.llm.loader.load_model`) so
the weights id it computes is the one the receipts' served model ids name (`supernet.sdk.models`).

Why it is fast (scripts/bench_verify.py measures it against generation): the calls of several
receipts are scored together, laid end to end in one forward pass of up to ``MAX_PACKED_TOKENS``
tokens (`supernet.node.llm.scoring.score_packed`). On a CPU, a forward pass over a few dozen tokens
runs at a fraction of the FLOP rate of one over hundreds.

Why its cost follows the node's: every prompt prefix that two calls of a pass share (the chat
template's system turn, a document several questions are asked about, an earlier turn of the same
chat) is computed once, as the node's engine serves it from its prefix cache. The calls are sorted
by prompt and walked as a radix tree (`ModelScorer.score_many`): at each branch the keys/values of
the prefix its calls share are computed from their parent's (or taken from the last
``PREFIX_CACHE_ENTRIES`` prefixes, kept across passes), and the calls that branch off there are
packed over it. A node serving long shared prompts from its cache once made every validator
re-read them in full for every sampled call (~30x the node's own prefill, more with the context).

>>> scorer = ModelScorer.load("smollm2-135m", threads=1)   # doctest: +SKIP
>>> scorer.weights_id                                       # doctest: +SKIP
'0x…'
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from supernet.node.kernel.dispatch import stop_text
from supernet.node.llm.kvcache import common_length
from supernet.node.llm.loader import LoadedModel, default_compute, load_model
from supernet.node.llm.model import Llama
from supernet.node.llm.scoring import ScoreRequest, longest_cached_prefix, prompt_kv, score_packed
from supernet.node.llm.types import ScoreResult
from supernet.sdk.models import COMPUTE_PRECISIONS
from torch import Tensor

MAX_PACKED_TOKENS = 512  # tokens per forward pass: past ~256 the FLOP rate stops rising on 2 cores
MIN_SHARED_PREFIX = 8  # a shorter common prompt prefix is not worth a pass or a cache entry
# a prefix pass must spare the calls sharing it this many tokens: a pass over few rows runs far
# below the FLOP rate of the packed ones, and splits the calls below it into passes of their own
MIN_SAVED_TOKENS = 64
# keys/values the packs waiting to be scored may hold, in prefix tokens (~46 KB each for SmolLM2 in
# float32): a tree of long branching prompts must not keep one prefix alive per branch
HELD_PREFIX_TOKENS = 4096
PREFIX_CACHE_ENTRIES = 8
PREFIX_CACHE_TOKENS = 8192  # ~380 MB of float32 keys/values for SmolLM2 (~46 KB a token)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 matrix products natively (CUDA; a CPU with AVX512-BF16
    or AMX), where bfloat16 re-scoring runs about twice as fast as float32 (docs/benchmarks)."""
    if device.type == "cuda":
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def scoring_compute(device: torch.device, dtype: str = "auto") -> str:
    """The format a validator re-scores in first: ``auto`` is bfloat16 where it is native, else the
    format a node on this device serves by default (`supernet.node.llm.loader.default_compute`).

    A bfloat16 scorer is a *screen*: a validator pairs it with an arbiter
    (`ModelScorer.load_screened`) that re-scores every call the screen does not accept, so the
    cheaper precision never decides an accusation (docs/validator.md, "Screen and arbiter").

    Raises:
        ValueError: not ``auto`` nor a served format.
    """
    if dtype == "auto":
        return "bfloat16" if native_bf16(device) else default_compute(device)
    if dtype not in COMPUTE_PRECISIONS:
        known = ", ".join(COMPUTE_PRECISIONS)
        raise ValueError(f"scoring format must be auto or one of {known}, not {dtype!r}")
    return dtype


@dataclass
class ScoringStats:
    """Work done so far: forward passes, tokens through the decoder, rows through the vocabulary head."""

    passes: int = 0
    tokens: int = 0
    rows: int = 0

    def add(self, tokens: int, rows: int) -> None:
        """Count one forward pass of ``tokens`` through the decoder and ``rows`` through the head."""
        self.passes += 1
        self.tokens += tokens
        self.rows += rows

    def flops(self, model: Llama) -> float:
        """Multiply-adds × 2 of the matrix products behind these counts (attention scores left out)."""
        c = model.cfg
        attention = c.dim * (c.n_heads + 2 * c.n_kv_heads) * c.head_dim + c.n_heads * c.head_dim * c.dim
        body = c.n_layers * (attention + 3 * c.dim * c.hidden_dim)
        head = c.vocab_size * c.dim
        return 2.0 * (body * self.tokens + head * self.rows)


@dataclass
class ModelScorer:
    """A loaded model that re-scores claimed generations (implements `verifier.Scorer`)."""

    model: Llama
    loaded: LoadedModel
    weights_id: str  # the served ids of these weights name the precision (`supernet.sdk.models`)
    eos_ids: tuple[int, ...]
    threads: int | None = None
    stats: ScoringStats = field(default_factory=ScoringStats)
    _siblings: dict[str, ModelScorer] = field(default_factory=dict, repr=False)
    _sibling_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _prefixes: OrderedDict[tuple[int, ...], tuple[Tensor, Tensor]] = field(
        default_factory=OrderedDict, repr=False
    )

    @classmethod
    def load(
        cls, name_or_path: str, threads: int | None = None, device: str | None = None, dtype: str = "float32"
    ) -> ModelScorer:
        """Load weights and tokenizer.

        Args:
            name_or_path: catalog name or local path of the model.
            threads: torch intra-op threads while scoring (None: torch's).
            device: ``cpu`` / ``cuda`` (None: CUDA if available).
            dtype: a served format (``float32``, ``bfloat16``, ``float16-weights``) or ``auto``
                (`scoring_compute`).
        """
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        loaded = load_model(name_or_path, device=dev, compute=scoring_compute(dev, dtype))
        loaded.model.pack_linears(batch_hint=MAX_PACKED_TOKENS)  # a no-op off CPU fp32
        return replace(cls.from_loaded(loaded), threads=threads)

    @classmethod
    def load_screened(
        cls, name_or_path: str, threads: int | None = None, device: str | None = None, dtype: str = "auto"
    ) -> tuple[ModelScorer, ModelScorer | None]:
        """The scorer for ``dtype`` and, when that is bfloat16, the *arbiter* that decides every
        call the cheaper screen does not accept (`supernet.validator.verifier.Verifier`): in the
        format nodes on this device serve by default off CUDA (``float16-weights`` on CPU), float32
        on CUDA (whose nodes default to bfloat16). Either way a node is finally judged in its own
        format (`for_compute`)."""
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        screen = cls.load(name_or_path, threads, str(dev), dtype)
        if screen.dtype != "bfloat16":
            return screen, None
        exact = "float32" if dev.type == "cuda" else default_compute(dev)
        return screen, cls.load(name_or_path, threads, str(dev), exact)

    def for_compute(self, compute: str) -> ModelScorer:
        """The scorer whose verdict decides a node that serves these weights in ``compute``.

        A float32, float16-weights or int8-weights node is re-scored in its own format, where decode
        and re-score agree to ~1e-5 (no batch dependence) and the tight float32 tolerance holds:
        this scorer if it computes in that format, else a copy of the same weights loaded in it on
        first use and kept. A bfloat16 node is re-scored here, with the bfloat16 pair's calibrated bounds
        (`supernet.node.llm.scoring.Tolerance.for_pair`), as bfloat16 is not batch-invariant.
        """
        if compute == self.dtype or compute == "bfloat16":
            return self
        with self._sibling_lock:  # one load per format, however many receipts ask at once
            if compute not in self._siblings:
                path, device = str(self.loaded.path), str(self.model.device)
                self._siblings[compute] = type(self).load(path, self.threads, device, compute)
            return self._siblings[compute]

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> ModelScorer:
        """Wrap an already loaded model (tests share one load with the node)."""
        return cls(loaded.model, loaded, loaded.model_id, eos_ids_of(loaded))

    @property
    def dtype(self) -> str:
        """The format this scorer computes in (``float32``, ``bfloat16``, ``float16-weights``)."""
        return self.model.compute

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer (chat template, decoding): what an agent replay needs."""
        return self.loaded.tokenizer

    @property
    def vocab_size(self) -> int:
        """Token ids this model knows: ``0 .. vocab_size - 1``."""
        return int(self.model.cfg.vocab_size)

    @property
    def max_positions(self) -> int:
        """The longest prompt + output this scorer can re-score (its rotary table's length)."""
        rope: Tensor = self.model.rope_cos
        return int(rope.shape[0])

    def score_many(self, requests: Sequence[ScoreRequest]) -> list[ScoreResult]:
        """Teacher-forced scores of every request, in order, each shared prompt prefix computed once.

        The requests with an output are sorted by prompt and walked as a radix tree over their
        prompts. A branch is a group of calls sharing ``c`` prompt tokens (each keeping one of its
        own). Its prefix's keys/values come from the cache (which holds its parent's, computed just
        before), extended to ``c`` by one pass over the new tokens where that spares the calls
        sharing them at least ``MIN_SAVED_TOKENS`` (so it never costs more than it saves); the
        calls that end or branch off right there are packed over that prefix, with those of every
        branch that reached the same prefix; the others form the branches below. Each branch point
        adds at most one pass, and a tree over ``n`` calls has fewer than ``n`` of them (plus a
        pass for each lone call the cache serves further than its branch).

        Memory stays bounded whatever the tree's shape: the walk holds no keys/values but the
        cache's (``PREFIX_CACHE_ENTRIES``) and those of the packs waiting to be scored, which are
        scored as soon as their prefixes add up to ``HELD_PREFIX_TOKENS``.

        Raises:
            ValueError: a prompt is empty.
        """
        if any(not r.prompt_ids for r in requests):
            raise ValueError("the prompt must hold at least one token")
        if self.threads:  # torch's thread count is per OS thread: set it in the one that scores
            torch.set_num_threads(self.threads)
        results: list[ScoreResult | None] = [None] * len(requests)
        for i, r in enumerate(requests):
            if not r.output_ids:
                results[i] = score_packed(self.model, [r])[0]  # empty scores, no pass
        prompts = {i: tuple(r.prompt_ids) for i, r in enumerate(requests) if r.output_ids}
        branches = [sorted(prompts, key=prompts.__getitem__)] if prompts else []  # sorted by prompt
        packs: dict[tuple[int, ...], tuple[tuple[Tensor, Tensor] | None, list[int]]] = {}  # by prefix
        while branches:
            group = branches.pop()
            first, last = prompts[group[0]], prompts[group[-1]]
            # sorted, so the first and last prompts share what all do; every call keeps one token
            shared = common_length(first, last, min(len(prompts[i]) for i in group) - 1)
            kv, start = self._prefix(first[:shared], len(group))
            here = packs.setdefault(first[:start], (kv, []))[1]
            for run in _runs(group, prompts, shared):
                if len(run) > 1 or self._cached_beyond(prompts[run[0]], start):
                    branches.append(run)
                else:
                    here += run
            if sum(len(prefix) for prefix in packs) >= HELD_PREFIX_TOKENS:
                self._score_packs(requests, packs, results)
        self._score_packs(requests, packs, results)
        assert all(r is not None for r in results)
        return [r for r in results if r is not None]

    def _score_packs(
        self,
        requests: Sequence[ScoreRequest],
        packs: dict[tuple[int, ...], tuple[tuple[Tensor, Tensor] | None, list[int]]],
        results: list[ScoreResult | None],
    ) -> None:
        """Score the calls of every pack over its prefix, ``MAX_PACKED_TOKENS`` at a time, into
        ``results``; the packs are emptied."""
        for prefix, (kv, indices) in packs.items():
            start, done = len(prefix), 0
            for chunk in _chunks([requests[i] for i in indices], start, MAX_PACKED_TOKENS):
                scored = score_packed(self.model, chunk, kv)
                for i, result in zip(indices[done : done + len(chunk)], scored, strict=True):
                    results[i] = result
                done += len(chunk)
                self.stats.add(
                    sum(len(r.prompt_ids) - start + len(r.output_ids) - 1 for r in chunk),
                    sum(len(r.output_ids) for r in chunk),
                )
        packs.clear()

    def _prefix(self, tokens: tuple[int, ...], calls: int) -> tuple[tuple[Tensor, Tensor] | None, int]:
        """Keys/values of the longest prefix of ``tokens`` worth having for ``calls`` calls that
        share all of it: the longest the cache holds (of at least ``MIN_SHARED_PREFIX`` tokens),
        extended to all of ``tokens`` (and kept) where that spares the calls at least
        ``MIN_SAVED_TOKENS``. Returns them and their length."""
        found, key, cached = longest_cached_prefix(self._prefixes.items(), tokens, len(tokens))
        kv, start = None, 0
        if key is not None and cached is not None and found >= MIN_SHARED_PREFIX:
            self._prefixes.move_to_end(key)
            kv, start = (cached[0][:, :, :found], cached[1][:, :, :found]), found
            if found < cached[0].shape[2]:  # a copy: a view would keep the whole entry alive
                kv = (kv[0].clone(), kv[1].clone())
        new = len(tokens) - start
        if new < MIN_SHARED_PREFIX or (calls - 1) * new < MIN_SAVED_TOKENS:
            return kv, start
        kv = prompt_kv(self.model, tokens, kv)
        self.stats.add(new, 1)
        self._keep(tokens, kv)
        return kv, len(tokens)

    def _keep(self, tokens: tuple[int, ...], kv: tuple[Tensor, Tensor]) -> None:
        """Cache ``kv`` under ``tokens``. An entry whose tokens begin these is dropped (this one
        serves it, sliced: a walk down one stem would otherwise keep a full copy per branch), and
        the least recently used go while the cache holds more than ``PREFIX_CACHE_ENTRIES``
        entries or ``PREFIX_CACHE_TOKENS`` tokens (the newest is always kept)."""
        for key in [k for k in self._prefixes if len(k) <= len(tokens) and tokens[: len(k)] == k]:
            del self._prefixes[key]
        self._prefixes[tokens] = kv
        while len(self._prefixes) > 1 and (
            len(self._prefixes) > PREFIX_CACHE_ENTRIES
            or sum(len(k) for k in self._prefixes) > PREFIX_CACHE_TOKENS
        ):
            self._prefixes.popitem(last=False)

    def _cached_beyond(self, prompt: tuple[int, ...], start: int) -> bool:
        """Whether the cache holds keys/values of at least `MIN_SHARED_PREFIX` more of ``prompt``
        than its first ``start`` tokens (a lone call then gets its own pass over them)."""
        found, _, _ = longest_cached_prefix(self._prefixes.items(), prompt, len(prompt) - 1)
        return found >= max(start, MIN_SHARED_PREFIX) + MIN_SHARED_PREFIX

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text as the kernel looks for stop strings in it (special tokens skipped:
        `supernet.node.kernel.dispatch.stop_text`, the protocol's one decode rule)."""
        tok = self.loaded.tokenizer
        return stop_text(tok, ids) if tok is not None else ""


def eos_ids_of(loaded: LoadedModel) -> tuple[int, ...]:
    """The model's end-of-sequence tokens (what ``stop_token_ids=None`` means to the engine)."""
    return tuple(int(t) for t in loaded.model.cfg.eos_token_ids)


def _runs(group: list[int], prompts: dict[int, tuple[int, ...]], at: int) -> list[list[int]]:
    """The calls of ``group`` (sorted by prompt, sharing ``at`` tokens) split where they branch: one
    run per token at position ``at``, and each call whose prompt ends one token after it alone."""
    runs: list[list[int]] = []
    for i in group:
        p = prompts[i]
        if (
            len(p) > at + 1
            and runs
            and len(prompts[runs[-1][0]]) > at + 1
            and prompts[runs[-1][0]][at] == p[at]
        ):
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _chunks(requests: Sequence[ScoreRequest], start: int, budget: int) -> list[list[ScoreRequest]]:
    """Consecutive groups of requests of at most ``budget`` tokens each past the shared prefix
    (a single longer request forms its own group)."""
    out: list[list[ScoreRequest]] = []
    size = 0
    for r in requests:
        n = len(r.prompt_ids) - start + len(r.output_ids)
        if not out or size + n > budget:
            out.append([])
            size = 0
        out[-1].append(r)
        size += n
    return out
