"""The validator's model: teacher-forced scoring with the node's own decoder and scoring code.

The validator does not need the continuous-batching engine, only teacher-forced passes over the
recorded calls; it loads the same weights the same way (`supernet.node.llm.loader.load_model`) so
the weights id it computes is the one the receipts' served model ids name (`supernet.sdk.models`).

Why it is fast (scripts/bench_verify.py measures it against generation): the calls of several
receipts are scored together, laid end to end in one forward pass of up to ``MAX_PACKED_TOKENS``
tokens (`supernet.node.llm.scoring.score_packed`), and the prompt prefix they all share (the chat
template's system turn) is computed once and kept (``PREFIX_CACHE_ENTRIES`` entries). On a CPU, a
forward pass over a few dozen tokens runs at a fraction of the FLOP rate of one over hundreds.

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
from supernet.node.llm.loader import LoadedModel, default_compute, load_model
from supernet.node.llm.model import Llama
from supernet.node.llm.scoring import ScoreRequest, longest_cached_prefix, prompt_kv, score_packed
from supernet.node.llm.types import ScoreResult
from supernet.sdk.models import COMPUTE_PRECISIONS
from torch import Tensor

MAX_PACKED_TOKENS = 512  # tokens per forward pass: past ~256 the FLOP rate stops rising on 2 cores
MIN_SHARED_PREFIX = 8  # a shorter common prompt prefix is not worth a cache entry
PREFIX_CACHE_ENTRIES = 8


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

        A float32 or float16-weights node is re-scored in its own format, where decode and re-score
        agree to ~1e-5 (no batch dependence) and the tight float32 tolerance holds: this scorer if
        it computes in that format, else a copy of the same weights loaded in it on first use and
        kept. A bfloat16 node is re-scored here, with the bfloat16 pair's calibrated bounds
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
        """Teacher-forced scores of every request, in order, in as few forward passes as fit.

        Raises:
            ValueError: a prompt is empty.
        """
        if any(not r.prompt_ids for r in requests):
            raise ValueError("the prompt must hold at least one token")
        if self.threads:  # torch's thread count is per OS thread: set it in the one that scores
            torch.set_num_threads(self.threads)
        prefix = self._shared_prefix(requests)
        start = 0 if prefix is None else prefix[0].shape[2]
        results: list[ScoreResult] = []
        for chunk in _chunks(requests, start, MAX_PACKED_TOKENS):
            results += score_packed(self.model, chunk, prefix)
            live = [r for r in chunk if r.output_ids]
            self.stats.passes += bool(live)
            self.stats.tokens += sum(len(r.prompt_ids) - start + len(r.output_ids) - 1 for r in live)
            self.stats.rows += sum(len(r.output_ids) for r in live)
        return results

    def _shared_prefix(self, requests: Sequence[ScoreRequest]) -> tuple[Tensor, Tensor] | None:
        """Keys/values of the longest prompt prefix all scored requests share (each keeps one token)."""
        prompts = [tuple(r.prompt_ids) for r in requests if r.output_ids]
        if not prompts:
            return None
        n = min(len(p) for p in prompts) - 1
        first = prompts[0]
        for p in prompts[1:]:
            i = 0
            while i < n and p[i] == first[i]:
                i += 1
            n = i
        if n < MIN_SHARED_PREFIX:
            return None
        shared = first[:n]
        found, key, cached = longest_cached_prefix(self._prefixes.items(), shared, n)
        if key is not None and cached is not None and found == n:
            self._prefixes.move_to_end(key)
            return cached[0][:, :, :n], cached[1][:, :, :n]
        kv = prompt_kv(self.model, shared)
        self.stats.passes += 1
        self.stats.tokens += n
        self.stats.rows += 1
        self._prefixes[shared] = kv
        while len(self._prefixes) > PREFIX_CACHE_ENTRIES:
            self._prefixes.popitem(last=False)
        return kv

    def decode(self, ids: Sequence[int]) -> str:
        """Token ids to text as the kernel looks for stop strings in it (special tokens skipped:
        `supernet.node.kernel.dispatch.stop_text`, the protocol's one decode rule)."""
        tok = self.loaded.tokenizer
        return stop_text(tok, ids) if tok is not None else ""


def eos_ids_of(loaded: LoadedModel) -> tuple[int, ...]:
    """The model's end-of-sequence tokens (what ``stop_token_ids=None`` means to the engine)."""
    return tuple(int(t) for t in loaded.model.cfg.eos_token_ids)


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
