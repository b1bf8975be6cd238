"""Teacher-forced scoring for validators, activation fingerprints, and the comparison verdict.

A validator re-runs one forward pass over prompt + claimed output (far cheaper than generating it)
and compares, position by position, with what the node claimed:

* **logprobs**: ``|claimed - rescored| <= logprob_atol``.
* **token choice** (when sampling params are given to ``score``): the claimed token must be the one
  the sampling rule picks from the rescored logits, up to ``selection_margin`` for greedy calls (a
  log-prob gap) and ``sample_margin`` for sampled ones (a distance in CDF mass; see
  ``sampling.selection_margin``). The two are in different units and bounded separately: a CDF
  bound as loose as a log-prob one would let a node pick nearly any sampled token.
* **fingerprints**: for every claimed top-k hidden component, the rescored value at that dimension
  must agree within ``hidden_atol + hidden_rtol * |value|``, and a claimed dimension may only be
  missing from the rescored top-k when its magnitude is within that tolerance of the rescored
  k-th largest (a near-tie at the boundary) and, where the rescoring kept the hidden row
  (``ScoreResult.fingerprint_rows``: it always does), its rescored value agrees too.

Default tolerance (``Tolerance()``), and why: it is the bound of a format checked in itself
(float32 against float32, float16-weights against float16-weights), where decode and re-score
differ only by summation order: per call at most 7.1e-5 in logprobs and 5.0e-6 relative in
fingerprints over 500 honest calls of each format (docs/benchmarks/exact_pairs.md), and 1.3e-4
in logits between two float32 kernel libraries (MKL against oneDNN, docs/benchmarks/formats.md).
The defaults (``logprob_atol=2e-3``, ``hidden_rtol=2.5e-4``, ``hidden_atol=1e-4``, greedy margin
``1e-3``; the sampled margin is explained at ``Tolerance``) sit 28-50x above that, and below what
computing in a cheaper format while claiming the dearer one produces (float16 weights sold as
float32: every call off by at least 1.7e-3 in logprobs and 5.6e-4 in fingerprints), so a node
cannot sell a cheaper computation under a dearer id. A pair with a bf16 side needs looser values
(``Tolerance.bf16()``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from supernet.node.llm.grammar import masked
from supernet.node.llm.kvcache import common_length
from supernet.node.llm.model import Llama
from supernet.node.llm.sampling import SamplingParams, selection_margins
from supernet.node.llm.types import (
    FINGERPRINT_INTERVAL,
    FINGERPRINT_TOP_K,
    Fingerprint,
    GenerationResult,
    ScoreResult,
)
from supernet.sdk.models import WEIGHT_FORMATS
from torch import Tensor


def fingerprints_of(hidden: Tensor, indices: Sequence[int], k: int = FINGERPRINT_TOP_K) -> list[Fingerprint]:
    """Fingerprints of hidden-state rows ``[N, dim]``, row ``r`` labelled with output index ``indices[r]``."""
    if not len(indices):
        return []
    h = hidden.float()
    top = h.abs().topk(k, dim=-1).indices
    vals = h.gather(-1, top)
    return [
        Fingerprint(index=i, indices=tuple(top[r].tolist()), values=tuple(vals[r].tolist()))
        for r, i in enumerate(indices)
    ]


def fingerprint_due(output_index: int) -> bool:
    """Whether the hidden state predicting output token ``output_index`` is fingerprinted."""
    return output_index % FINGERPRINT_INTERVAL == 0


class _PackedAttention:
    """Attention for one or more sequences laid end to end after one shared prefix.

    Every token sees the whole prefix (keys/values ``[n_layers, n_kv_heads, P, head_dim]`` or
    ``None``) and the earlier tokens of its own sequence, nothing of the others. One sequence with
    no prefix is plain causal attention (no mask). Several sequences are attended as a padded batch
    ``[n_seqs, heads, longest, head_dim]`` rather than as one masked ``T x T`` product, which would
    spend most of its work on the blocks the mask throws away (packing 8 calls of ~64 tokens, the
    padded batch does ~5x fewer attention FLOPs). When ``keep > 0`` the first ``keep`` new keys/values
    of every layer are recorded in ``kept`` (for the scoring prefix cache; one sequence only).
    """

    def __init__(
        self,
        prefix: tuple[Tensor, Tensor] | None,
        lengths: Sequence[int],
        device: torch.device,
        keep: int = 0,
    ) -> None:
        if keep and len(lengths) != 1:
            raise ValueError("keys/values are kept for one sequence only")
        self.prefix, self.keep = prefix, keep
        self.kept: list[tuple[Tensor, Tensor]] = []
        self.mask: Tensor | None = None
        self.gather: Tensor | None = None  # packed token index of every padded slot
        self.scatter: Tensor | None = None  # padded slot of every packed token
        self.shape = (1, max(lengths))  # (sequences, longest) of the padded batch
        n_prefix = 0 if prefix is None else prefix[0].shape[2]
        if len(lengths) > 1:
            longest, n = max(lengths), len(lengths)
            starts = torch.tensor([0, *lengths]).cumsum(0)[:-1]
            local = torch.arange(longest)
            valid = local[None, :] < torch.tensor(list(lengths))[:, None]  # [n, longest]
            self.gather = torch.where(valid, starts[:, None] + local[None, :], 0).flatten().to(device)
            self.scatter = torch.nonzero(valid.flatten()).flatten().to(device)
            causal = local[None, :] <= local[:, None]  # [longest, longest]
            # a padding row sees its sequence's first token (never an empty row: no NaN to discard)
            own = causal[None] & valid[:, None, :]
            shared = torch.ones(n, longest, n_prefix, dtype=torch.bool)
            self.mask = torch.cat((shared, own), dim=2)[:, None].to(device)  # [n, 1, longest, P + longest]
            self.shape = (n, longest)
        elif prefix is not None:
            t = lengths[0]
            causal = torch.arange(t)[None, :] <= torch.arange(t)[:, None]
            self.mask = torch.cat((torch.ones(t, n_prefix, dtype=torch.bool), causal), dim=1).to(device)

    def _pad(self, x: Tensor) -> Tensor:
        """``[1, heads, T, D]`` packed to ``[n_seqs, heads, longest, D]`` padded (a view of
        ``[n_seqs, longest, heads, D]``: whole tokens are copied, not one head's slice at a time)."""
        assert self.gather is not None
        n, longest = self.shape
        rows = x[0].transpose(0, 1).index_select(0, self.gather)  # [n * longest, heads, D]
        return rows.view(n, longest, x.shape[1], x.shape[3]).transpose(1, 2)

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        if self.keep:
            self.kept.append((k[0, :, : self.keep].clone(), v[0, :, : self.keep].clone()))
        gqa = q.shape[1] != k.shape[1]
        if self.gather is None:
            if self.prefix is not None:
                k = torch.cat((self.prefix[0][layer][None], k), dim=2)
                v = torch.cat((self.prefix[1][layer][None], v), dim=2)
            if self.mask is None:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
            return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask, enable_gqa=gqa)
        assert self.scatter is not None
        qp, kp, vp = self._pad(q), self._pad(k), self._pad(v)
        if self.prefix is not None:
            n = qp.shape[0]
            kp = torch.cat((self.prefix[0][layer][None].expand(n, -1, -1, -1), kp), dim=2)
            vp = torch.cat((self.prefix[1][layer][None].expand(n, -1, -1, -1), vp), dim=2)
        out = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=self.mask, enable_gqa=gqa)
        heads, dim = out.shape[1], out.shape[3]
        # token-major, as the caller lays it out next (``[1, T, heads, D]``): one copy
        tokens = out.transpose(1, 2).reshape(-1, heads, dim).index_select(0, self.scatter)
        return tokens.transpose(0, 1)[None]


def score(
    model: Llama,
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    params: SamplingParams | None = None,
    top_k: int = 5,
    prefix: tuple[Tensor, Tensor] | None = None,
) -> ScoreResult:
    """Teacher-forced pass over ``prompt_ids + output_ids``.

    Args:
        model: The decoder.
        prompt_ids: The prompt (at least one token).
        output_ids: The claimed output.
        params: Sampling parameters of the claimed generation; when given, ``margins`` are filled.
        top_k: Candidates kept per position.
        prefix: Keys and values ``[n_layers, n_kv_heads, P, head_dim]`` of ``prompt_ids[:P]``
            (``P < len(prompt_ids)``), e.g. from a prefix cache: the pass runs only over the rest.
            Same results up to rounding (attention's summation order).
    """
    return score_with_prompt_kv(model, prompt_ids, output_ids, params, top_k, prefix)[0]


def score_with_prompt_kv(
    model: Llama,
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    params: SamplingParams | None = None,
    top_k: int = 5,
    prefix: tuple[Tensor, Tensor] | None = None,
    keep_prompt: int = 0,
) -> tuple[ScoreResult, tuple[Tensor, Tensor] | None]:
    """``score``, also returning the keys/values of the first ``keep_prompt`` prompt tokens.

    The second item is ``None`` when ``keep_prompt`` is 0 or the output is empty; otherwise it
    covers ``min(keep_prompt, len(prompt_ids))`` tokens (at least the prefix's), on the model's device.
    """
    if not prompt_ids:
        raise ValueError("the prompt must hold at least one token")
    n, p = len(output_ids), len(prompt_ids)
    if n == 0:
        return _empty(params), None
    device = model.device
    start = 0 if prefix is None else prefix[0].shape[2]
    if not 0 <= start < p:
        raise ValueError(f"a prefix of {start} tokens must leave at least one of the {p} prompt tokens")
    keep = max(0, min(keep_prompt, p) - start)
    if prefix is not None:
        dtype = model.dtype
        prefix = (prefix[0].to(device, dtype), prefix[1].to(device, dtype))
    tokens = torch.tensor([[*prompt_ids[start:], *output_ids[:-1]]], device=device)
    with torch.inference_mode():
        width = tokens.shape[1]
        cache = _PackedAttention(prefix, [width], device, keep)
        if prefix is None and not keep:
            hidden = model(tokens)
        else:
            positions = torch.arange(start, start + width, device=device)[None, :]
            hidden = model(tokens, positions, cache)
        rows = hidden[0, p - 1 - start :]
        logits = model.logits(rows)
        result = _result(rows, logits, torch.logsumexp(logits, dim=-1), output_ids, params, p, top_k)
        kv = None
        if keep_prompt > 0:
            keys = torch.stack([k for k, _ in cache.kept]) if keep else None
            values = torch.stack([v for _, v in cache.kept]) if keep else None
            if prefix is not None:
                pk, pv = prefix
                keys = pk if keys is None else torch.cat((pk, keys), dim=2)
                values = pv if values is None else torch.cat((pv, values), dim=2)
            if keys is not None and values is not None:
                kv = (keys, values)
    return result, kv


def longest_cached_prefix(
    cached: Iterable[tuple[tuple[int, ...], tuple[Tensor, Tensor]]], tokens: Sequence[int], limit: int
) -> tuple[int, tuple[int, ...] | None, tuple[Tensor, Tensor] | None]:
    """The cached keys/values sharing the longest prefix (at most ``limit`` tokens) with ``tokens``.

    ``cached`` holds ``(token prefix, keys/values of at least those tokens)`` pairs. Returns the
    shared length, that entry's key and its (unsliced) keys/values; ``(0, None, None)`` when none
    shares a token.
    """
    best_n, best_key, best = 0, None, None
    for key, kv in cached:
        n = min(limit, len(key), kv[0].shape[2])
        if n <= best_n:
            continue
        if tuple(key[:n]) != tuple(tokens[:n]):
            n = common_length(key, tokens, n)
        if n > best_n:
            best_n, best_key, best = n, key, kv
    return best_n, best_key, best


def prompt_kv(
    model: Llama, tokens: Sequence[int], prefix: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Keys/values ``[n_layers, n_kv_heads, len(tokens), head_dim]`` of ``tokens``, for ``prefix=``;
    given the keys/values of ``tokens[:P]`` (``P < len(tokens)``), only the rest is computed."""
    kv = score_with_prompt_kv(model, tokens, tokens[-1:], prefix=prefix, keep_prompt=len(tokens))[1]
    assert kv is not None  # one output token and a non-empty prompt always keep keys/values
    return kv


def _empty(params: SamplingParams | None) -> ScoreResult:
    """The scores of an empty output (margins, empty too, only when sampling params were given)."""
    return ScoreResult(logprobs=(), top_tokens=(), fingerprints=(), margins=None if params is None else ())


def _result(
    rows: Tensor,
    logits: Tensor,
    lse: Tensor,
    output_ids: Sequence[int],
    params: SamplingParams | None,
    prompt_len: int,
    top_k: int,
) -> ScoreResult:
    """Scores of one output from its hidden rows ``[n, dim]``, logits ``[n, V]`` and their
    log-sum-exp ``[n]`` (log-probs are ``logits - lse``: no ``[n, V]`` log-prob table is written)."""
    target = torch.tensor(list(output_ids), device=logits.device)
    claimed = (logits.gather(-1, target[:, None])[:, 0] - lse).tolist()
    top = logits.topk(top_k, dim=-1)
    tops = tuple(
        tuple(zip(ids, vals, strict=True))
        for ids, vals in zip(top.indices.tolist(), (top.values - lse[:, None]).tolist(), strict=True)
    )
    due = [i for i in range(len(output_ids)) if fingerprint_due(i)]
    fps = fingerprints_of(rows[due], due)
    margins = None
    if params is not None:
        margins = tuple(selection_margins(logits, output_ids, params, prompt_len))
    return ScoreResult(
        logprobs=tuple(claimed),
        top_tokens=tops,
        fingerprints=tuple(fps),
        margins=margins,
        fingerprint_rows=_kept_rows(rows[due]),
    )


def _kept_rows(rows: Tensor) -> Tensor:
    """The fingerprinted hidden rows as `compare_generation` reads them (float32 on the CPU, as
    `fingerprints_of` takes its values)."""
    return rows.detach().float().cpu()


HEAD_ROWS = 16
"""Rows of logits post-processed at a time by `score_packed` (log-sum-exp, top-k, margins): a
``[rows, V]`` float32 block that stays in cache, instead of several passes over all of them."""


def _row_blocks(n: int, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` blocks of ``size`` rows covering ``n``, none of a single row unless ``n`` is 1
    (a one-row reduction may split across threads, so its rounding would differ from a batch's)."""
    blocks = [(a, min(n, a + size)) for a in range(0, n, size)]
    if len(blocks) > 1 and blocks[-1][1] - blocks[-1][0] == 1:
        blocks[-2:] = [(blocks[-2][0], n)]
    return blocks


def _packed_results(
    model: Llama, rows: Tensor, requests: Sequence[ScoreRequest], top_k: int
) -> list[ScoreResult]:
    """`_result` of every request from their hidden rows ``[sum of outputs, dim]`` laid end to end.

    One vocabulary projection for every row; then, ``HEAD_ROWS`` rows at a time, their float32
    logits, log-sum-exp, top-k, claimed logits and (sampled requests) selection margins. Every one
    is computed row by row, so the values are those of `_result` on the whole ``[rows, V]`` logits
    (the blocks hold at least two rows, like the whole: see `_row_blocks`), without writing them
    (or a log-sum-exp temporary of their size) to memory.
    """
    raw = model.output(rows)  # `Llama.logits` without its float32 copy of every row at once
    n = rows.shape[0]
    target = torch.tensor([t for r in requests for t in r.output_ids], device=rows.device)
    lse = torch.empty(n, device=rows.device)
    claimed = torch.empty(n, device=rows.device)
    top_vals = torch.empty(n, top_k, device=rows.device)
    top_ids = torch.empty(n, top_k, dtype=torch.long, device=rows.device)
    spans, at = [], 0
    for r in requests:
        spans.append((at, at + len(r.output_ids)))
        at += len(r.output_ids)
    margins: list[list[float]] = [[] for _ in requests]
    for a, b in _row_blocks(n, HEAD_ROWS):
        logits = raw[a:b].float()
        lse[a:b] = torch.logsumexp(logits, dim=-1)
        claimed[a:b] = logits.gather(-1, target[a:b, None])[:, 0]
        top = logits.topk(top_k, dim=-1)
        top_vals[a:b], top_ids[a:b] = top.values, top.indices
        for k, (r, (s, e)) in enumerate(zip(requests, spans, strict=True)):
            if r.params is None or e <= a or s >= b:
                continue
            lo, hi = max(s, a), min(e, b)  # rows of this request in this block
            block = logits[lo - a : hi - a]
            if r.allowed is not None:  # a constrained call: the rule ran on its grammar's mask
                block = masked(block, r.allowed[lo - s : hi - s])
            margins[k] += selection_margins(
                block, r.output_ids[lo - s : hi - s], r.params, len(r.prompt_ids) + lo - s
            )
    logprobs = (claimed - lse).tolist()
    top_lps = (top_vals - lse[:, None]).tolist()
    top_tok = top_ids.tolist()
    out = []
    for k, (r, (s, e)) in enumerate(zip(requests, spans, strict=True)):
        tops = tuple(tuple(zip(top_tok[i], top_lps[i], strict=True)) for i in range(s, e))
        due = [i for i in range(e - s) if fingerprint_due(i)]
        fps = fingerprints_of(rows[s:e][due], due)
        out.append(
            ScoreResult(
                logprobs=tuple(logprobs[s:e]),
                top_tokens=tops,
                fingerprints=tuple(fps),
                margins=None if r.params is None else tuple(margins[k]),
                fingerprint_rows=_kept_rows(rows[s:e][due]),
            )
        )
    return out


@dataclass(frozen=True)
class ScoreRequest:
    """One claimed generation to re-score; ``params`` (its sampling rule) asks for selection margins,
    computed over the tokens ``allowed`` at each output position (``[n, V]`` bool, or packed at a
    bit per token: a constrained call's grammar masks, `supernet.node.llm.grammar.pack_masks`)
    when given."""

    prompt_ids: Sequence[int]
    output_ids: Sequence[int]
    params: SamplingParams | None = None
    allowed: Tensor | None = field(default=None, compare=False)


def score_packed(
    model: Llama,
    requests: Sequence[ScoreRequest],
    prefix: tuple[Tensor, Tensor] | None = None,
    top_k: int = 5,
) -> list[ScoreResult]:
    """``score`` for several requests in one forward pass (what a validator does with a batch).

    The requests' tokens are laid end to end and a block-diagonal causal mask keeps each one to
    itself, so one large matrix product replaces many small ones (on a CPU the small ones run far
    below the machine's FLOP rate). Same results as one ``score`` per request up to rounding.

    Args:
        model: The decoder.
        requests: What to score, in order; an empty output gives empty scores.
        prefix: Keys/values of ``P`` tokens every prompt starts with (the caller's guarantee, as
            for ``score``), e.g. a shared system turn: computed once instead of once per request.
        top_k: Candidates kept per position.

    Raises:
        ValueError: a prompt is empty or not longer than the prefix.
    """
    start = 0 if prefix is None else prefix[0].shape[2]
    for r in requests:
        if len(r.prompt_ids) <= start:
            raise ValueError(f"every prompt must be longer than the {start}-token prefix (and not empty)")
    live = [r for r in requests if r.output_ids]
    if not live:
        return [_empty(r.params) for r in requests]
    device = model.device
    if prefix is not None:
        dtype = model.dtype
        prefix = (prefix[0].to(device, dtype), prefix[1].to(device, dtype))
    seqs = [[*r.prompt_ids[start:], *r.output_ids[:-1]] for r in live]
    lengths = [len(s) for s in seqs]
    tokens = torch.tensor([[t for s in seqs for t in s]], device=device)
    positions = torch.cat([torch.arange(start, start + n) for n in lengths])[None].to(device)
    ends = torch.tensor(lengths).cumsum(0).tolist()
    with torch.inference_mode():
        hidden = model(tokens, positions, _PackedAttention(prefix, lengths, device))[0]
        picks = torch.cat([torch.arange(e - len(r.output_ids), e) for e, r in zip(ends, live, strict=True)])
        rows = hidden[picks.to(device)]
        scored = _packed_results(model, rows, live, top_k)
    it = iter(scored)
    return [next(it) if r.output_ids else _empty(r.params) for r in requests]


SAMPLE_MARGIN_BF16 = 0.1
"""CDF distance allowed for a sampled token when one side computed in bfloat16. The sampler runs its
CDF in token-id order (`supernet.node.llm.sampling`), so another precision moves a token's interval
by about the total-variation distance between the two distributions: at most 0.051 over 500 honest
calls per mixed pair (docs/benchmarks/precision.md), where the probability-ordered CDF of protocol
v1 moved it by up to 0.6."""

SCREEN_SAMPLE_MARGIN = 0.05
"""A bfloat16 screen re-checks in float32 every sampled call with a margin above this
(`Tolerance.screening`): the freedom a cheater keeps in a sampled token under a screen."""


SAMPLE_MARGIN_CAP = 1e-3
"""The most CDF mass a same-format pair lets a sampled token be off, at any temperature."""

SAMPLE_MARGIN_FLOOR = 1e-11
"""The least CDF distance a bound allows at a high temperature: float64 sums over a vocabulary
(~5e-12 of rounding over 49,152 terms), which both sides compute from slightly different logits."""


@dataclass(frozen=True)
class Tolerance:
    """Numeric tolerance of ``compare_generation`` (see the module docstring for the defaults' basis).

    ``sample_margin`` is a distance in CDF mass at temperature 1. Where ``sample_scales`` (the
    same-format pairs), `sample_bound` widens it as ``1 / T`` below 1, up to `SAMPLE_MARGIN_CAP`:
    logit noise ``e`` moves ``softmax(l / T)``'s CDF by at most about ``e / T``. Above 1 every pair's
    narrows as ``1 / T`` (down to `SAMPLE_MARGIN_FLOOR`), for the same reason: a flat bound let a
    node choose among ~20 tokens at every position at T = 5 while honest noise moved the CDF 5x
    less than at T = 1 (`tests/unit/test_review_framing4.py`). The honest same-format
    CDF distance (decode against re-score, greatest over every token of the row, 784 positions of
    16 chat prompts per format) was at most 1.0e-5 at T = 1 and 1.7e-5 at T = 0.7 in both float32 and
    float16-weights (docs/benchmarks/exact_pairs.md): the bound sits 17-20x above it. It is a
    window too: in id order every token whose interval lies within it of the draw passes, so it is
    kept as tight as that noise allows (1e-3 flat let a node choose among ~70 tail tokens at T = 1,
    `tests/unit/test_review_cheating_node.py`)."""

    logprob_atol: float = 2e-3
    hidden_rtol: float = 2.5e-4
    hidden_atol: float = 1e-4
    selection_margin: float = 1e-3
    sample_margin: float = 2e-4
    sample_scales: bool = True

    def sample_bound(self, temperature: float) -> float:
        """The CDF distance a sampled token may be off at ``temperature``."""
        if temperature > 1:
            return max(self.sample_margin / temperature, SAMPLE_MARGIN_FLOOR)
        if not self.sample_scales or temperature == 1:
            return self.sample_margin
        cap = max(SAMPLE_MARGIN_CAP, self.sample_margin)  # a bound set above the cap stays flat
        return min(cap, self.sample_margin / max(temperature, 1e-9))

    @classmethod
    def bf16(cls) -> Tolerance:
        """Bounds for a pair with a bfloat16 side, calibrated by scripts/bench_precision.py on 500
        honest calls per mixed pair (docs/benchmarks/precision.md): logprobs moved by up to 0.62
        (a -4.6 logprob token of an fp32 node rescored in bf16), greedy selection margins (near-tie
        flips) by up to 0.43, fingerprint values by up to 7.5 %; sampled tokens' CDF distance by
        up to ``SAMPLE_MARGIN_BF16``."""
        return cls(
            logprob_atol=0.75,
            hidden_rtol=0.15,
            hidden_atol=0.5,
            selection_margin=0.6,
            sample_margin=SAMPLE_MARGIN_BF16,
            sample_scales=False,  # calibrated flat, over the temperatures bench-precision runs
        )

    @classmethod
    def screening(cls, node_dtype: str, screen_dtype: str) -> Tolerance:
        """What a re-scoring in ``screen_dtype`` accepts without the exact re-check: the pair's
        bounds on logprobs and fingerprints, the float32 bound on greedy tokens and
        ``SCREEN_SAMPLE_MARGIN`` on sampled ones. A call outside them is re-scored by the float32
        arbiter and judged by ``for_pair(node_dtype, "float32")`` alone (`supernet.validator`)."""
        pair = cls.for_pair(node_dtype, screen_dtype)
        return replace(
            pair,
            selection_margin=cls().selection_margin,
            sample_margin=min(pair.sample_margin, SCREEN_SAMPLE_MARGIN),
            sample_scales=False,
        )

    @classmethod
    def for_pair(cls, node_dtype: str, validator_dtype: str) -> Tolerance:
        """The tolerance for checking a node that computed in ``node_dtype`` with a validator in
        ``validator_dtype`` (compute formats, as served ids name them): fp32 against fp32, and
        float16-weights against itself (fp32 sums over the same rounded weights: decode and
        re-score agree to ~7e-5, docs/benchmarks/exact_pairs.md), keep the tight default, which
        also tells the two formats apart (a float16-weights node cannot pass as float32), and so does
        int8-weights against itself (float16-weights arithmetic on its grid); any other
        pair gets the bf16 bounds, calibrated on both bf16/fp32 pairs by scripts/bench_precision.py
        (docs/benchmarks/precision.md), which cover fp16 weights' ≤ 0.01 shift too."""
        full = {"float32", "float64"}
        if node_dtype in full and validator_dtype in full:
            return cls()
        if node_dtype == validator_dtype and node_dtype in WEIGHT_FORMATS:
            return cls()
        return cls.bf16()


@dataclass(frozen=True)
class Mismatch:
    """One disagreement between claim and re-check.

    Attributes:
        index: Output-token index.
        kind: ``length``, ``logprob``, ``selection`` or ``fingerprint``.
        detail: Human-readable numbers.
    """

    index: int
    kind: str
    detail: str


@dataclass(frozen=True)
class Verdict:
    """Outcome of ``compare_generation``.

    Attributes:
        ok: No mismatch.
        mismatches: Every disagreement found.
        max_logprob_error: Largest logprob difference seen (for calibration).
    """

    ok: bool
    mismatches: tuple[Mismatch, ...]
    max_logprob_error: float

    @property
    def positions(self) -> tuple[int, ...]:
        """Sorted output indices with at least one mismatch."""
        return tuple(sorted({m.index for m in self.mismatches}))


def _compare_fingerprint(
    claim: Fingerprint, ref: Fingerprint, tol: Tolerance, row: Tensor | None = None
) -> str | None:
    # every dimension is compared below: fewer (or repeated) claimed dims would check less, an
    # empty claim nothing at all, so a claim must list as many distinct dims as the rescored top-k
    if len(set(claim.indices)) != len(claim.indices) or len(claim.indices) != len(ref.indices):
        distinct = len(set(claim.indices))
        return f"claimed {distinct} distinct dims of {len(claim.indices)}, expected {len(ref.indices)}"
    ref_vals = dict(zip(ref.indices, ref.values, strict=True))
    floor = min(abs(v) for v in ref.values)
    for dim, val in zip(claim.indices, claim.values, strict=True):
        if not math.isfinite(val):  # NaN compares false with every bound below
            return f"dim {dim}: claimed {val}"
        bound = tol.hidden_atol + tol.hidden_rtol * abs(val)
        if dim in ref_vals:
            if abs(ref_vals[dim] - val) > bound:
                return f"dim {dim}: claimed {val:.5g}, rescored {ref_vals[dim]:.5g}"
        elif abs(val) < floor - bound or abs(val) > floor + bound:
            return f"dim {dim} ({val:.5g}) not in rescored top-{len(ref.indices)} (floor {floor:.5g})"
        elif row is not None:
            # a near-tie at the boundary must also hold its claimed value in the rescored row:
            # without this, 8 made-up dims all claiming the floor's value would pass
            if not 0 <= dim < row.shape[0]:
                return f"dim {dim} outside the hidden state's {row.shape[0]} dims"
            if abs(float(row[dim]) - val) > bound:
                return f"dim {dim}: claimed {val:.5g}, rescored {float(row[dim]):.5g} (outside the top-k)"
    return None


def compare_generation(
    claimed: GenerationResult,
    rescored: ScoreResult,
    tolerance: Tolerance | None = None,
    *,
    sampled: bool = False,
    temperature: float = 1.0,
) -> Verdict:
    """Compare a node's claimed generation with a validator's teacher-forced re-scoring of it
    (``sampled``: the call drew its tokens at ``temperature``, so margins are CDF distances, bounded
    by `Tolerance.sample_bound`; otherwise log-prob gaps, bounded by ``selection_margin``)."""
    tol = tolerance or Tolerance()
    margin_bound = tol.sample_bound(temperature) if sampled else tol.selection_margin
    out: list[Mismatch] = []
    n = len(claimed.output_ids)
    if len(rescored.logprobs) != n or len(claimed.logprobs) != n:
        out.append(
            Mismatch(
                0,
                "length",
                f"claimed {n} tokens / {len(claimed.logprobs)} logprobs, rescored {len(rescored.logprobs)}",
            )
        )
        return Verdict(False, tuple(out), float("inf"))
    worst = 0.0
    for i, (a, b) in enumerate(zip(claimed.logprobs, rescored.logprobs, strict=True)):
        err = abs(a - b)
        if math.isfinite(err):
            worst = max(worst, err)
        if not math.isfinite(err) or err > tol.logprob_atol:  # NaN compares false: never let it pass
            out.append(Mismatch(i, "logprob", f"claimed {a:.5f}, rescored {b:.5f}"))
    for i, m in enumerate(rescored.margins or ()):
        if not m <= margin_bound:  # NaN compares false: a NaN margin is no rule, never a pass
            detail = f"token {claimed.output_ids[i]} is {m:.4g} off the sampling rule"
            out.append(Mismatch(i, "selection", detail))
    refs = {f.index: f for f in rescored.fingerprints}
    kept = rescored.fingerprint_rows
    rows = {} if kept is None else {f.index: kept[r] for r, f in enumerate(rescored.fingerprints)}
    claims = {f.index: f for f in claimed.fingerprints}
    for idx in sorted(refs.keys() | claims.keys()):
        if idx not in refs or idx not in claims:
            out.append(Mismatch(idx, "fingerprint", "fingerprint missing on one side"))
            continue
        problem = _compare_fingerprint(claims[idx], refs[idx], tol, rows.get(idx))
        if problem:
            out.append(Mismatch(idx, "fingerprint", problem))
    out.sort(key=lambda m: m.index)
    return Verdict(not out, tuple(out), worst)
