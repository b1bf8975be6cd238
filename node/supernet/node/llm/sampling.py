"""Reproducible token selection: a sampled token is a pure function of (logits, seed, position).

Randomness comes from a counter-based generator (splitmix64 of the seed and the absolute position
of the token being sampled), never from a stateful RNG, so the same logits give the same token
whatever else shares the batch, and a validator can recompute the choice from the scored logits.

Selection rule for one row of logits:
  * ``temperature == 0``: greedy, the lowest token id among the maxima.
  * otherwise ``p = softmax(logits / temperature)`` in float64, and
      - ``top_p >= 1``: inverse CDF over the vocabulary in token-id order;
      - ``top_p < 1``: tokens sorted by probability (stable: ties keep id order), the nucleus is the
        shortest prefix whose mass reaches ``top_p``, and the inverse CDF runs over that prefix.
    The token is the first one whose cumulative mass exceeds ``u * mass``, ``u = uniform(seed, position)``.

>>> uniform(7, 3) == uniform(7, 3)
True
>>> select(torch.tensor([[0.0, 2.0, 1.0]]), [SamplingParams(temperature=0.0)], [5])
[1]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
_NUCLEUS_CANDIDATES = 1024
_CHUNK = 8


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens and when to stop.

    Attributes:
        max_new_tokens: Most output tokens (the stop token counts).
        temperature: 0 for greedy; otherwise the softmax temperature.
        top_p: Nucleus mass in (0, 1]; 1 disables nucleus filtering.
        seed: Key of the counter-based RNG (with the token's position).
        stop_token_ids: Tokens that end the generation (kept in the output); ``None`` means the
            model's end-of-sequence tokens, ``()`` means none.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.seed <= _MASK64:
            raise ValueError("seed must fit in 64 bits unsigned")

    @property
    def greedy(self) -> bool:
        """Whether tokens are chosen by argmax."""
        return self.temperature == 0.0


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def uniform(seed: int, position: int) -> float:
    """The uniform draw in [0, 1) for (seed, position): 53 bits of splitmix64(splitmix64(seed) ^ position)."""
    return (_splitmix64(_splitmix64(seed & _MASK64) ^ (position & _MASK64)) >> 11) * 2.0**-53


def _order_and_cdf(probs: Tensor, top_p: float) -> tuple[Tensor, Tensor]:
    """Token ids in sampling order and their cumulative mass (float64), nucleus-truncated."""
    if top_p >= 1.0:
        return torch.arange(probs.shape[0]), probs.cumsum(0)
    k = min(_NUCLEUS_CANDIDATES, probs.shape[0])
    threshold = probs.topk(k).values[-1]
    ids = torch.nonzero(probs >= threshold).flatten()  # id order, a superset of the top k
    cand = probs[ids]
    if cand.sum() < top_p:  # the nucleus reaches past the candidates: sort everything
        ids, cand = torch.arange(probs.shape[0]), probs
    order = torch.sort(cand, descending=True, stable=True).indices
    ids, cdf = ids[order], cand[order].cumsum(0)
    n = int(torch.searchsorted(cdf, torch.tensor([top_p], dtype=cdf.dtype)).item()) + 1
    return ids[:n], cdf[:n]


def _draw(row: Tensor, temperature: float, top_p: float, u: float) -> int:
    probs = torch.softmax(row.double() / temperature, dim=-1)
    ids, cdf = _order_and_cdf(probs, top_p)
    target = torch.tensor([u], dtype=cdf.dtype) * cdf[-1]
    i = min(int(torch.searchsorted(cdf, target, right=True).item()), ids.shape[0] - 1)
    return int(ids[i])


def select(logits: Tensor, params: Sequence[SamplingParams], positions: Sequence[int]) -> list[int]:
    """Pick one token per row of ``logits`` ``[N, V]``.

    Args:
        logits: Raw (fp32) logits, one row per sequence.
        params: Sampling parameters per row.
        positions: Absolute position of the token being chosen, per row.

    Returns:
        The chosen token ids.
    """
    tokens = logits.argmax(dim=-1).tolist()
    for r, (p, pos) in enumerate(zip(params, positions, strict=True)):
        if not p.greedy:
            tokens[r] = _draw(logits[r].cpu(), p.temperature, p.top_p, uniform(p.seed, pos))
    return tokens


def selection_margin(logits: Tensor, token: int, params: SamplingParams, position: int) -> float:
    """How far ``token`` is from being the token ``select`` would pick (0 when it is).

    Greedy: the log-probability gap to the best token. Sampling: how far the draw ``u`` lies outside
    the claimed token's CDF interval (in probability mass). A token outside the nucleus (another
    precision can move the top-p cut past it) scores how far ``top_p`` is from taking it in (the
    mass before it minus ``top_p``: tiny when rounding moved the cut), plus how far ``u`` lies from
    its interval in the nucleus grown to it. A validator accepts small margins caused by
    floating-point differences.
    """
    row = logits.detach().double().cpu()
    if params.greedy:
        lp = torch.log_softmax(row, dim=-1)
        return float(lp.max() - lp[token])
    probs = torch.softmax(row / params.temperature, dim=-1)
    ids, cdf = _order_and_cdf(probs, params.top_p)
    where = torch.nonzero(ids == token).flatten()
    if where.numel() == 0:
        return _outside_margin(probs, token, params.top_p, uniform(params.seed, position))
    i = int(where[0])
    mass = float(cdf[-1])
    lo = float(cdf[i - 1]) / mass if i > 0 else 0.0
    hi = float(cdf[i]) / mass
    u = uniform(params.seed, position)
    return max(0.0, lo - u, u - hi)


def _outside_margin(probs: Tensor, token: int, top_p: float, u: float) -> float:
    """``selection_margin`` of a token outside the nucleus (see there)."""
    vals, ids = probs.topk(min(_NUCLEUS_CANDIDATES, probs.shape[0]))
    where = torch.nonzero(ids == token).flatten()
    if where.numel() == 0:  # past the candidates (a wide nucleus): the full order
        vals, ids = torch.sort(probs, descending=True, stable=True)
        where = torch.nonzero(ids == token).flatten()
    i = int(where[0])
    cdf = vals.cumsum(0)
    before = float(cdf[i - 1]) if i > 0 else 0.0
    grown = float(cdf[i])
    return max(0.0, before - top_p) + max(0.0, before / grown - u, u - 1.0)


def selection_margins(
    logits: Tensor, tokens: Sequence[int], params: SamplingParams, start: int
) -> list[float]:
    """``selection_margin`` for every row of ``logits`` ``[n, V]`` at once (row ``i``: ``tokens[i]`` at
    position ``start + i``), with batched tensor ops instead of one sort per row.

    Equal to the per-row function up to float64 rounding: a token's CDF interval in the stable
    descending order only depends on the sorted probability *values* (ties included) and on its rank
    there, so the rank is counted and the cumulative mass read from a batched top-k (or, for rows
    whose nucleus is wider than the top-k, a batched sort). Rows where the per-row rule's candidate
    shortcut could cut the nucleus differently (mass within rounding of ``top_p``) use the per-row
    function.
    """
    n = len(tokens)
    if n > _CHUNK:  # chunks of rows keep the float64 work in cache
        return [
            x
            for c in range(0, n, _CHUNK)
            for x in selection_margins(logits[c : c + _CHUNK], tokens[c : c + _CHUNK], params, start + c)
        ]
    if n == 0:
        return []
    rows = logits.detach().double().cpu()
    target = torch.tensor(list(tokens), dtype=torch.long)[:, None]
    if params.greedy:
        # log_softmax shifts a row by one constant: the gap is the logit gap (0 exactly at the max)
        return (rows.max(dim=-1).values - rows.gather(-1, target)[:, 0]).tolist()
    probs = torch.softmax(rows / params.temperature, dim=-1)
    u = torch.tensor([uniform(params.seed, start + i) for i in range(n)], dtype=torch.float64)
    ar = torch.arange(n)
    if params.top_p >= 1.0:
        cdf = probs.cumsum(-1)
        mass = cdf[:, -1]
        t = target[:, 0]
        hi = cdf[ar, t] / mass
        lo = torch.where(t > 0, cdf[ar, (t - 1).clamp(min=0)], torch.zeros_like(mass)) / mass
        return torch.clamp(torch.maximum(lo - u, u - hi), min=0.0).tolist()
    vocab = probs.shape[1]
    q = probs.gather(-1, target)
    rank = (probs > q).sum(-1) + ((probs == q) & (torch.arange(vocab)[None, :] < target)).sum(-1)
    top_p = torch.tensor(params.top_p, dtype=torch.float64)
    lo, hi, mass = (torch.zeros(n, dtype=torch.float64) for _ in range(3))
    inside = torch.zeros(n, dtype=torch.bool)
    fallback = torch.zeros(n, dtype=torch.bool)
    pending = torch.arange(n)
    width = min(_NUCLEUS_CANDIDATES, vocab)
    # sorted values (ties need no order: the CDF values only depend on the values) of the top `width`
    cdf = probs.topk(width, dim=-1).values
    m = (probs >= cdf[:, -1:]).sum(-1)  # the per-row rule's candidate count
    cdf = cdf.cumsum(-1)
    while True:
        reached = cdf >= top_p
        done = reached[:, -1] | (width == vocab)
        idx, c, r = pending[done], cdf[done], rank[pending[done]]
        if idx.numel():
            hit = reached[done]
            cut = torch.where(hit.any(-1), hit.int().argmax(-1), width - 1)  # first index reaching top_p
            sel = torch.arange(idx.numel())
            ri = r.clamp(max=width - 1)
            mass[idx], inside[idx] = c[sel, cut], r <= cut
            hi[idx] = c[sel, ri]
            lo[idx] = torch.where(ri > 0, c[sel, (ri - 1).clamp(min=0)], torch.zeros_like(hi[idx]))
            if width > _NUCLEUS_CANDIDATES or width == vocab:
                # the per-row rule sorts only its candidates when their (pairwise) sum reaches top_p; its
                # cut can then differ from this one only when their cumulative mass is within rounding
                mr = m[idx]
                edge = c[sel, (mr.clamp(max=width) - 1)]
                fallback[idx] = (mr > width) | ((edge < top_p) & (edge >= top_p - 1e-9))
        pending = pending[~done]
        if not pending.numel():
            break
        width = vocab if width * 8 >= vocab else width * 8
        sub = probs[pending]
        vals = (
            torch.sort(sub, dim=-1, descending=True).values
            if width == vocab
            else sub.topk(width, dim=-1).values
        )
        cdf = vals.cumsum(-1)
    out = torch.clamp(torch.maximum(lo / mass - u, u - hi / mass), min=0.0).tolist()
    for i in torch.nonzero(fallback | ~inside).flatten().tolist():  # the rare cases: row by row
        out[i] = selection_margin(logits[i], tokens[i], params, start + i)
    return out
