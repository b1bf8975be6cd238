"""Reproducible token selection: a sampled token is a pure function of (logits, seed, position).

Randomness comes from a counter-based generator (splitmix64 of the seed and the absolute position
of the token being sampled), never from a stateful RNG, so the same logits give the same token
whatever else shares the batch, and a validator can recompute the choice from the scored logits.

Selection rule for one row of logits:
  * ``temperature < MIN_TEMPERATURE`` (0 included): greedy, the lowest token id among the maxima.
  * otherwise ``p = softmax(logits / temperature)`` in float64, and the *support* is
      - ``top_p >= 1``: the whole vocabulary;
      - ``top_p < 1``: the nucleus, the shortest prefix of the tokens sorted by probability
        (stable: ties keep id order) whose mass reaches ``top_p``.
    The inverse CDF runs over the support **in token-id order**: the token is the first one whose
    cumulative mass exceeds ``u * mass``, ``u = uniform(seed, position)``.

Why id order inside the nucleus (protocol v2; v1 ran the CDF in probability order): a validator
that computes in another precision sees slightly different probabilities. In id order every
token's CDF interval then moves by at most the total-variation distance between the two
distributions (a few 1e-3 between float32 and bfloat16), so the sampled-token check can be tight;
in probability order two near-tied likely tokens that swap places move each other's interval by
the other's whole mass, which forced a loose bound (0.6 of CDF mass) on every mixed pair.

>>> uniform(7, 3) == uniform(7, 3)
True
>>> select(torch.tensor([[0.0, 2.0, 1.0]]), [SamplingParams(temperature=0.0)], [5])
[1]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

_MASK64 = (1 << 64) - 1
_FIRST_CANDIDATES = 512  # most nuclei at a usual temperature hold fewer tokens
_REFINE_WIDTH = 1024
_CHUNK = 8
EXACT_ABOVE = 0.0
"""Batched margins above this are refined (see ``selection_margins``): every one that is not 0. It
was 1e-3, above the same-format bound (2e-4, and ``2e-4 / T`` above T = 1), so a margin between
them was reported at the rule's own nucleus where another gave a smaller one, and an honest token
was flagged (`tests/unit/test_review_framing4.py`)."""
MIN_TEMPERATURE = 1e-4
"""Temperatures below this are greedy, on the node and on every validator (`is_greedy`).

A request may sign any temperature >= 0, but below ~1e-4 a validator cannot check a sampled draw:
same-format rounding (up to ~1.3e-4 in logits, docs/benchmarks/formats.md) can flip a near-tie by
more than ``ODDS_FLOOR``'s log-odds (~20.7) times ``T``, so a user could get an honest node
flagged; a subnormal such as 1e-310 would even make ``logits / temperature`` overflow and every
margin NaN. At 1e-4 that rounding moves a share's log-odds by at most ~2.6, and the distribution
is already all but one-hot, so greedy (with its own 1e-3-nat bound) is what such a call means."""
ODDS_FLOOR = 1e-9
"""Shares of a row's mass closer than this to 0 or 1 are not measured in log-odds from their float64
sums (`_odds_distance`): the batched margins leave them at their CDF distance, and such a margin, if
it counts, is taken again row by row with the masses in log space (`selection_margin`)."""
SWAP_REACH = 0.25
"""The most a swap of two tokens across a nucleus cut may cost (`_swap_margin`; above every bound a
validator applies, bf16's 0.1): a dearer swap's margin would be refused anyway, so it is not looked for."""
DRAW_FLOOR = 2.0**-53
"""A token whose share of the support's mass is below this (the draws' grid) is one the sampler
practically never draws: `_interval_margin` measures how far its share is from it, not only its edge."""


def is_greedy(temperature: float) -> bool:
    """Whether a call at ``temperature`` picks tokens by argmax (the protocol's one rule for it)."""
    return temperature < MIN_TEMPERATURE


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
        grammar: A constrained call's grammar (`supernet.node.llm.grammar`): the rule runs on the
            logits with every token the grammar does not allow next at ``-inf``.
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_token_ids: tuple[int, ...] | None = None
    grammar: str | None = None

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
        """Whether tokens are chosen by argmax (``temperature < MIN_TEMPERATURE``, see `is_greedy`)."""
        return is_greedy(self.temperature)


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def uniform(seed: int, position: int) -> float:
    """The uniform draw in [0, 1) for (seed, position): 53 bits of splitmix64(splitmix64(seed) ^ position)."""
    return (_splitmix64(_splitmix64(seed & _MASK64) ^ (position & _MASK64)) >> 11) * 2.0**-53


def _support(probs: Tensor, top_p: float) -> Tensor:
    """``probs`` with every token outside the support zeroed (same shape, float64)."""
    if top_p >= 1.0:
        return probs
    members = _nucleus(probs, top_p)
    out = torch.zeros_like(probs)
    out[members] = probs[members]
    return out


def _nucleus(probs: Tensor, top_p: float) -> Tensor:
    """The token ids of the nucleus of ``probs`` (``top_p < 1``), ascending.

    The nucleus is looked for among the likeliest ``_FIRST_CANDIDATES`` tokens (ties at the last
    one included), then among 8 times as many, and so on, until their cumulative mass reaches
    ``top_p``: those candidates are the top of the rule's order, so the cut is the same whatever
    their number.
    """
    vocab = probs.shape[0]
    width = min(_FIRST_CANDIDATES, vocab)
    while True:
        threshold = probs.topk(width).values[-1] if width < vocab else probs.min()
        ids = torch.nonzero(probs >= threshold).flatten()  # id order
        cand = probs[ids]
        order = torch.sort(cand, descending=True, stable=True).indices  # ties keep id order
        cum = cand[order].cumsum(0)
        if cum[-1] >= top_p or width == vocab:
            break
        width = min(vocab, width * 8)
    n = min(int(torch.searchsorted(cum, torch.tensor([top_p], dtype=cum.dtype)).item()) + 1, cum.shape[0])
    return ids[order[:n]].sort().values


def _draw(row: Tensor, temperature: float, top_p: float, u: float) -> int:
    probs = torch.softmax(row.double() / temperature, dim=-1)
    vocab = probs.shape[0]
    members = None if top_p >= 1.0 else _nucleus(probs, top_p)
    # The CDF over the support in token-id order, at the support's tokens only: a running sum adds
    # the same values in the same order as over the whole row with the others zeroed (zeros add
    # exactly), without a vocabulary-wide zeroed copy and cumulative sum per sampled token.
    cdf = (probs if members is None else probs[members]).cumsum(0)
    target = torch.tensor([u], dtype=cdf.dtype) * cdf[-1]
    k = int(torch.searchsorted(cdf, target, right=True).item())
    if k == cdf.shape[0]:  # no entry above the target: the rule's last id, as over the whole row
        return vocab - 1
    return k if members is None else int(members[k])


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


def chosen_logprobs(logits: Tensor, tokens: Sequence[int]) -> list[float]:
    """The log-probability of ``tokens[r]`` under row ``r`` of ``logits`` ``[N, V]``: what the
    engine records and validators re-score.

    A greedy choice needs no probabilities, but the recorded value is this one: a log-softmax over
    the whole row (one pass, no sort), kept exactly as it was computed before.
    """
    index = torch.tensor(list(tokens), dtype=torch.long, device=logits.device)[:, None]
    return list(torch.log_softmax(logits, dim=-1).gather(-1, index)[:, 0].tolist())


def _interval_margin(
    lo: Tensor,
    hi: Tensor,
    mass: Tensor,
    u: Tensor,
    temperature: float = 1.0,
    log_p: Tensor | None = None,
    edge_logits: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """How far the draw ``u`` lies outside the CDF interval ``[lo, hi) / mass`` (0 inside it).

    "Inside" is decided with the sampler's own arithmetic (``lo <= u * mass < hi``), so the token the
    node drew has a margin of exactly 0 when the validator computes the same ``lo``, ``hi``, ``mass``.

    Outside, the distance is the lesser of the CDF distance ``|u - b|`` to the nearer end ``b`` and
    ``temperature * |logit(u) - logit(b)| / 4``. The boundary ``b`` is the share of the mass on one
    side of it; logits that differ by at most ``d`` move the log-odds of that share by at most
    ``2d / temperature``, so the second term is the logit difference that would put ``b`` at ``u``,
    in the CDF units it has at a central boundary at temperature 1 (``logit' >= 4``: never more than
    ``|u - b|`` at ``temperature >= 1``, where nothing changes). Below temperature 1 the same rounding
    moves a near-tie's boundary ``1 / temperature`` times further: a bound in CDF units alone would
    let a user's low temperature and chosen seed get an honest node flagged, while this one still
    refuses a token no small logit change would reach (a boundary in a distribution's tail is far
    in log-odds).

    Either way the distance is at least ``temperature * log(DRAW_FLOOR / share) / 4`` for a token
    whose own share of ``mass`` is below ``DRAW_FLOOR``: a token the sampler can never draw is not
    reached by sitting next to a boundary the draw is near. The share is taken in log space from
    ``log_p``, the token's log-probability at ``temperature`` (from the logits: it never underflows,
    so an honest token whose share another format computes at 1e-19 scores its true distance, not
    ``inf``: tests/unit/test_review_llm_check2.py); without it, from ``(hi - lo) / mass``.

    ``edge_logits``: the log-odds of the lower and the upper edge, from masses summed in log space
    (`_edge_logits`); without them they come from ``lo / mass`` and ``hi / mass``, which float64
    cannot tell within ``ODDS_FLOOR`` of 0 or 1 (such an edge is then measured in CDF mass only).
    """
    target = u * mass
    inside = (lo <= target) & (target < hi)
    below, above = lo / mass - u, u - hi / mass
    outside = torch.clamp(torch.maximum(below, above), min=0.0)
    if temperature < 1.0:
        if edge_logits is None:
            edge = torch.where(below > 0, lo / mass, hi / mass)
            odds = _odds_distance(u, edge, temperature)
        else:
            odds = _logit_distance(u, torch.where(below > 0, *edge_logits), temperature)
        # fmin: where the log-odds are undefined (rounding past an end), the CDF distance stands
        outside = torch.fmin(outside, odds)
    # Being near an edge is not enough: a token of negligible share (an empty interval, e.g. a
    # tail at a low temperature) must also be within reach in share. Rounding that moves logits by
    # ``d`` changes a share's log by at most ``2d / T``, i.e. this term by at most ``d / 2`` (as the
    # log-odds one), so an honest token misses it only if its own share is below ``DRAW_FLOOR``.
    share = torch.log((hi - lo) / mass) if log_p is None else log_p - torch.log(mass)
    own = temperature * torch.clamp(math.log(DRAW_FLOOR) - share, min=0.0) / 4
    outside = torch.maximum(outside, own)
    return torch.where(inside, torch.zeros_like(outside), outside)


def _odds_distance(x: Tensor | float, share: Tensor, temperature: float) -> Tensor:
    """``temperature * |logit(x) - logit(share)| / 4``: how far a mass ``share`` (of a row's softmax
    at ``temperature``) is from ``x`` in log-odds, in the CDF units of a central share at
    temperature 1 (see `_interval_margin`); ``inf`` for a share within ``ODDS_FLOOR`` of 0 or 1,
    whose log-odds the float64 sums cannot tell (a tail that underflowed to 0 would read as the
    sums' rounding, ~1e-13, i.e. only ~30 nats away, and let a low temperature reach it)."""
    exact = (share >= ODDS_FLOOR) & (share <= 1 - ODDS_FLOOR)
    distance = _logit_distance(x, torch.log(share) - torch.log1p(-share), temperature)
    return torch.where(exact, distance, torch.inf)


def _logit_distance(x: Tensor | float, logit: Tensor, temperature: float) -> Tensor:
    """``temperature * |logit(x) - logit| / 4`` (see `_odds_distance`), ``inf`` where undefined (an
    edge at 0 or 1 exactly, which no rounding moves)."""
    x = torch.as_tensor(x, dtype=logit.dtype)
    distance = temperature * ((torch.log(x) - torch.log1p(-x)) - logit).abs() / 4
    return torch.nan_to_num(distance, nan=torch.inf)


def _edge_logits(log_members: Tensor, token: int) -> tuple[Tensor, Tensor]:
    """The log-odds of the lower and upper edge of ``token``'s CDF interval (token-id order), from
    the log-probabilities of one row's support (``-inf`` for a token outside it): each side's mass
    is a log-sum-exp, so an edge 1e-300 from 0 or 1 is measured as it is (float64 sums of the
    probabilities round it to 0 or 1, `ODDS_FLOOR`)."""
    lse = torch.logsumexp
    before, from_token = lse(log_members[:token], 0), lse(log_members[token:], 0)
    through, after = lse(log_members[: token + 1], 0), lse(log_members[token + 1 :], 0)
    return before - from_token, through - after


def _mass_logs(log_vals: Tensor) -> tuple[Tensor, Tensor]:
    """Per column ``k`` of ``log_vals`` (the rule's order): the log mass of columns ``0..k`` and of
    columns ``k..``."""
    taken = torch.logcumsumexp(log_vals, dim=-1)
    return taken, torch.flip(torch.logcumsumexp(torch.flip(log_vals, (-1,)), dim=-1), (-1,))


def _cut_logits(taken: Tensor, rest: Tensor) -> tuple[Tensor, Tensor]:
    """From `_mass_logs`: per column ``k``, the log-odds of the nucleus of columns ``0..k`` (its
    mass against the rest of the row) and of the one before it (columns ``0..k-1``), as
    `_cut_distance` takes them."""
    neg = torch.full_like(taken[..., :1], -torch.inf)
    return taken - torch.cat((rest[..., 1:], neg), dim=-1), torch.cat((neg, taken[..., :-1]), dim=-1) - rest


def _cut_distance(
    mass: Tensor,
    before: Tensor,
    top_p: float,
    temperature: float,
    logits: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """How far ``top_p`` is from choosing a nucleus of mass ``mass`` whose last member brought it up
    from ``before`` (0 when ``before < top_p <= mass``). Below temperature 1 the cut moves with
    rounding as a CDF boundary does: the lesser of that and the log-odds distance
    (`_interval_margin`), from ``logits`` (the log-odds of ``mass`` and ``before``, summed in log
    space) where given."""
    off_cut = torch.clamp(torch.maximum(top_p - mass, before - top_p), min=0.0)
    if temperature < 1.0:
        if logits is None:
            odds = _odds_distance(top_p, torch.where(top_p > mass, mass, before), temperature)
        else:
            odds = _logit_distance(top_p, torch.where(top_p > mass, *logits), temperature)
        off_cut = torch.where(off_cut > 0, torch.fmin(off_cut, odds), off_cut)
    return off_cut


def _prefix_logits(log_vals: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per nucleus size ``k`` (columns of ``log_vals``, the rule's order): the log mass of the first
    ``k + 1`` entries where ``mask`` holds, and where it does not."""
    neg = torch.full_like(log_vals, -torch.inf)
    inside = torch.logcumsumexp(torch.where(mask, log_vals, neg), dim=-1)
    return inside, torch.logcumsumexp(torch.where(mask, neg, log_vals), dim=-1)


def selection_margin(logits: Tensor, token: int, params: SamplingParams, position: int) -> float:
    """How far ``token`` is from being the token ``select`` would pick (0 when it is).

    Greedy: the log-probability gap to the best token. Sampling: a distance in probability mass,
    the least over every nucleus the token belongs to of how far ``top_p`` is from choosing that
    nucleus (0 for the rule's own) and how far the draw ``u`` lies outside the token's CDF interval
    in it (``top_p >= 1``: the interval over the whole vocabulary). Another precision moves both by
    about the total-variation distance between the two distributions, so a validator accepts small
    margins; a token the rule cannot reach at all scores the mass it would take to reach it. The
    nuclei also include those that rounding makes by swapping two near-tied tokens across a cut, at
    the swap's price (`_swap_margin`): the other side's nucleus may hold the token in place of one
    that every prefix of this side's order holds first.
    """
    row = logits.detach().double().cpu()
    if params.greedy:
        lp = torch.log_softmax(row, dim=-1)
        return float(lp.max() - lp[token])
    probs = torch.softmax(row / params.temperature, dim=-1)
    log_probs = torch.log_softmax(row / params.temperature, dim=-1)
    log_p = log_probs[token]
    u = torch.tensor(uniform(params.seed, position), dtype=torch.float64)
    support = _support(probs, params.top_p)
    cdf = support.cumsum(0)  # over the rule's own support, in the sampler's arithmetic
    lo = cdf[token - 1] if token > 0 else torch.zeros((), dtype=torch.float64)
    # Below temperature 1 the edges' log-odds are measured, so they are summed in log space here
    # (the batched margins send every row that counts to this function)
    members = log_probs if params.top_p >= 1.0 else torch.where(support > 0, log_probs, -torch.inf)
    edges = _edge_logits(members, token) if params.temperature < 1.0 else None
    at_rule = (
        float(_interval_margin(lo, cdf[token], cdf[-1], u, params.temperature, log_p, edges))
        if support[token] > 0
        else math.inf
    )
    if at_rule == 0.0 or params.top_p >= 1.0:
        return at_rule
    # every other nucleus size k (the top k tokens of the whole row, in the rule's order)
    top = _top(probs[None], probs.shape[0])
    log_top = log_probs[top[1]]
    least, _ = _least_margins(
        top,
        torch.tensor([token]),
        probs[token][None],
        u[None],
        params.top_p,
        True,
        params.temperature,
        log_p[None],
        log_top if params.temperature < 1.0 else None,
    )
    margin = min(at_rule, float(least[0]))
    if margin > 0:  # and the nuclei that rounding makes by reordering near-tied tokens at a cut
        margin = min(
            margin,
            _band_margin(
                (top[0][0], top[1][0]),
                token,
                u,
                params.top_p,
                params.temperature,
                log_p,
                min(margin, SWAP_REACH),
            ),
        )
    if margin > 0:
        swapped = _swap_margin(
            (top[0][0], top[1][0]),
            log_top[0],
            token,
            probs[token],
            u,
            params.top_p,
            params.temperature,
            log_p,
            min(margin, SWAP_REACH),
        )
        margin = min(margin, swapped)
    return margin


def _token_log_p(scaled: Tensor, target: Tensor, p_token: Tensor) -> Tensor:
    """Each row's log-probability of its token: ``log`` of the softmax already computed, and from
    the logits (``scaled`` = logits / temperature) only for the rows where it underflowed to 0
    (a second pass over every row would cost as much as the softmax itself)."""
    log_p = torch.log(p_token)
    under = p_token == 0
    if bool(under.any()):
        z = scaled[under]
        log_p[under] = z.gather(-1, target[under])[:, 0] - torch.logsumexp(z, dim=-1)
    return log_p


def selection_margins(
    logits: Tensor, tokens: Sequence[int], params: SamplingParams, start: int
) -> list[float]:
    """``selection_margin`` for every row of ``logits`` ``[n, V]`` at once (row ``i``: ``tokens[i]`` at
    position ``start + i``), with batched tensor ops instead of one sort per row.

    The rule's nucleus of each row is found among the tokens above a probability floor (`_rule_margins`;
    a batched top-k only where no floor holds it) as the tokens at least as likely as its last
    member, and the CDF is the cumulative sum of the members in token-id order, exactly the
    sampler's arithmetic (its sum over the row with the others zeroed). Rows where that is not
    certain to be the rule's nucleus (a tie at its last member, mass within rounding of ``top_p``),
    and rows whose margin there exceeds ``EXACT_ABOVE`` (where another nucleus may give a smaller
    one; below temperature 1, where the edges' log-odds are summed in log space), take the
    refinement over other nuclei or the per-row function: every margin that is not 0 is exact.
    The refinement leaves the swapped nuclei to the per-row function, which takes every row where
    one might do better (`_swaps_in_reach`: a near-tie within the margin's reach at a cut within
    it; rare for an honest token, whose margin is the noise's size).
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
    # x / 1.0 is x exactly: the division is skipped at temperature 1
    scaled = rows if params.temperature == 1.0 else rows / params.temperature
    probs = torch.softmax(scaled, dim=-1)
    p_token = probs.gather(-1, target)[:, 0]
    log_p = _token_log_p(scaled, target, p_token)
    u = torch.tensor([uniform(params.seed, start + i) for i in range(n)], dtype=torch.float64)
    vocab = probs.shape[1]
    t = target[:, 0]
    top: tuple[Tensor, Tensor] | None = None
    if params.top_p < 1.0:
        out, exact, cands = _rule_margins(probs, t, u, params.top_p, params.temperature, log_p)
    else:
        cdf = probs.cumsum(-1)  # the support is the whole row
        lo = torch.where(
            t > 0, cdf.gather(-1, (t - 1).clamp(min=0)[:, None])[:, 0], torch.zeros(n, dtype=cdf.dtype)
        )
        hi, mass = cdf.gather(-1, target)[:, 0], cdf[:, vocab - 1]
        out = _interval_margin(lo, hi, mass, u, params.temperature, log_p)
        out = torch.where(probs.gather(-1, target)[:, 0] == 0, torch.inf, out)  # outside the support
    redo = out > EXACT_ABOVE
    if params.top_p < 1.0:
        # rows off their interval: the least margin over other nuclei, from the top W tokens, W
        # widened for the rows where a wider nucleus might still do better
        rows = torch.nonzero(redo & exact).flatten()
        swaps: list[Tensor] = []
        if rows.numel():
            top = _candidate_top(cands, rows, vocab) or _top(probs[rows], min(_REFINE_WIDTH, vocab))
        while top is not None and rows.numel():
            complete = top[0].shape[1] == vocab
            refined, settled = _least_margins(
                top, t[rows], p_token[rows], u[rows], params.top_p, complete, params.temperature, log_p[rows]
            )
            out[rows[settled]] = torch.minimum(out[rows[settled]], refined[settled])
            if params.temperature >= 1.0:  # where a swap across a cut might do better: row by row
                swap = settled & (out[rows] > 0)
                swap[swap.clone()] = _swaps_in_reach(
                    (top[0][swap], top[1][swap]),
                    t[rows[swap]],
                    u[rows[swap]],
                    out[rows[swap]],
                    params.top_p,
                    params.temperature,
                    complete,
                )
                swaps.append(rows[swap])
            rows = rows[~settled]
            if not rows.numel() or complete:
                break
            width = max(top[0].shape[1], _REFINE_WIDTH // 8)
            top = _top(probs[rows], vocab if width * 8 >= vocab else width * 8)
        redo = ~exact
        redo[rows] = True
        for swap in swaps:
            redo[swap] = True
        if params.temperature < 1.0:  # their edges' log-odds, summed in log space
            redo |= out > EXACT_ABOVE
    margins = out.tolist()
    for i in torch.nonzero(redo).flatten().tolist():  # the rare cases: row by row
        margins[i] = selection_margin(logits[i], tokens[i], params, start + i)
    return margins


_CANDIDATE_FLOORS = (1e-5,)
"""Probabilities at or above which the nucleus is first looked for (then below, see `_rule_margins`)."""


@dataclass(frozen=True)
class _Candidates:
    """The tokens of some rows at least as likely as a floor: a prefix of the rule's order (ties
    whole), laid out per row in token-id order, padded with value 0 and id ``V``."""

    rows: Tensor  # [m]: which rows of the batch
    vals: Tensor  # [m, K]: probabilities, token-id order
    ids: Tensor  # [m, K]: token ids, ascending


def _candidates(probs: Tensor, floor: float) -> _Candidates:
    """Every token of every row of ``probs`` ``[m, V]`` with probability ``>= floor``."""
    m, vocab = probs.shape
    r, c = (probs >= floor).nonzero(as_tuple=True)  # row-major: token-id order within a row
    counts = torch.bincount(r, minlength=m)
    width = max(int(counts.max()), 1) if m else 1
    col = torch.arange(r.numel()) - (counts.cumsum(0) - counts)[r]
    vals = torch.zeros(m, width, dtype=probs.dtype)
    ids = torch.full((m, width), vocab, dtype=torch.long)
    vals[r, col] = probs[r, c]
    ids[r, col] = c
    return _Candidates(torch.arange(m), vals, ids)


def _rule_margins(
    probs: Tensor,
    token: Tensor,
    u: Tensor,
    top_p: float,
    temperature: float = 1.0,
    log_p: Tensor | None = None,
) -> tuple[Tensor, Tensor, _Candidates]:
    """The margin of each row's token at the rule's own nucleus (``inf`` outside it), whether that
    nucleus is certainly the sampler's (else: per row), and the candidates it came from.

    The nucleus is a prefix of the tokens in the rule's order, so it is found among the tokens at
    least as likely as a floor (first ``_CANDIDATE_FLOORS``, then one below which all tokens
    together hold at most ``(1 - top_p) / 2``) as soon as their cumulative mass reaches ``top_p``:
    the same values summed in the same order as over a top-k or the whole sorted row. The CDF in
    token-id order is the cumulative sum of the nucleus members' probabilities in id order, which
    is the sampler's sum over the row with every other token zeroed (zeros add exactly). Rows
    where no floor's candidates reach ``top_p`` take the batched top-k (`_nuclei`).
    """
    n, vocab = probs.shape
    out = torch.empty(n, dtype=probs.dtype)
    exact = torch.ones(n, dtype=torch.bool)
    pending = torch.arange(n)
    first: _Candidates | None = None
    for floor in (*_CANDIDATE_FLOORS, (1.0 - top_p) / (2 * vocab)):
        cands = _candidates(probs[pending] if pending.numel() < n else probs, floor)
        cands = _Candidates(pending[cands.rows], cands.vals, cands.ids)
        desc = torch.sort(cands.vals, dim=-1, descending=True).values  # padding (0) last
        cum = desc.cumsum(-1)
        reached = cum >= top_p
        done = reached[:, -1]
        if first is None:
            first = cands
        if bool(done.any()):
            sel = torch.nonzero(done).flatten()
            c, v, ids, vals = cum[sel], desc[sel], cands.ids[sel], cands.vals[sel]
            at = reached[sel].int().argmax(-1)[:, None]
            thr = v.gather(-1, at)
            prev = torch.where(at > 0, c.gather(-1, (at - 1).clamp(min=0)), torch.zeros_like(thr))
            # within rounding of top_p: a guard (both sides sum the same values in the same order)
            edge = ((c.gather(-1, at) - top_p).abs() < 1e-12) | ((prev - top_p).abs() < 1e-12)
            # members: every token at least as likely as the last one; where more tokens tie with
            # it than the nucleus holds, only the first of them by id (the rule's order)
            tied = vals == thr
            need = at + 1 - (vals > thr).sum(-1, keepdim=True)
            members = (vals > thr) | (tied & (tied.cumsum(-1) <= need))
            cdf = (vals * members).cumsum(-1)
            pos = torch.searchsorted(ids, token[cands.rows[sel], None]).clamp(max=ids.shape[1] - 1)
            inside = (ids.gather(-1, pos) == token[cands.rows[sel], None]) & members.gather(-1, pos)
            lo = torch.where(pos > 0, cdf.gather(-1, (pos - 1).clamp(min=0)), torch.zeros_like(thr))
            rows_log_p = None if log_p is None else log_p[cands.rows[sel], None]
            margin = _interval_margin(
                lo, cdf.gather(-1, pos), cdf[:, -1:], u[cands.rows[sel], None], temperature, rows_log_p
            )
            rows = cands.rows[sel]
            out[rows] = torch.where(inside, margin, torch.inf)[:, 0]
            exact[rows] = ~edge[:, 0]
        pending = cands.rows[~done]
        if not pending.numel():
            break
    if pending.numel():  # no floor's candidates reach top_p (top_p within rounding of 1)
        nuclei = _nuclei(probs[pending], top_p)
        cdf = nuclei.support.cumsum(-1)
        t = token[pending]
        lo = torch.where(
            t > 0, cdf.gather(-1, (t - 1).clamp(min=0)[:, None])[:, 0], torch.zeros(len(t), dtype=cdf.dtype)
        )
        pending_log_p = None if log_p is None else log_p[pending]
        margin = _interval_margin(
            lo, cdf.gather(-1, t[:, None])[:, 0], cdf[:, vocab - 1], u[pending], temperature, pending_log_p
        )
        out[pending] = torch.where(nuclei.support.gather(-1, t[:, None])[:, 0] == 0, torch.inf, margin)
        exact[pending] = nuclei.exact
    assert first is not None
    return out, exact, first


def _candidate_top(cands: _Candidates, rows: Tensor, vocab: int) -> tuple[Tensor, Tensor] | None:
    """`_top` of ``rows`` from their candidates (a prefix of the rule's order, ties whole; the
    padding, value 0, is never usable), or None when they are not all candidates' rows."""
    where = torch.searchsorted(cands.rows, rows)
    if cands.vals.shape[1] >= vocab or bool(
        (where >= cands.rows.numel()).any()
        or (cands.rows[where.clamp(max=cands.rows.numel() - 1)] != rows).any()
    ):
        return None
    vals, ids = cands.vals[where], cands.ids[where]
    order = torch.sort(vals, dim=-1, descending=True, stable=True).indices  # ties keep id order
    return vals.gather(-1, order), ids.gather(-1, order)


@dataclass(frozen=True)
class _Nuclei:
    """The rule's nucleus of every row of a batch."""

    support: Tensor  # [n, V]: the row with every token outside its nucleus zeroed
    exact: Tensor  # [n]: certainly the sampler's nucleus (else: per row)


def _top(probs: Tensor, width: int) -> tuple[Tensor, Tensor]:
    """The ``width`` likeliest probabilities of each row ``[n, V]``, descending with ties in id order
    (the rule's order), and their token ids."""
    if width < probs.shape[1]:
        vals, ids = probs.topk(width, dim=-1)
    else:
        vals, ids = torch.sort(probs, dim=-1, descending=True)
    by_id = ids.sort(dim=-1).indices  # then a stable sort by value: ties in id order
    vals, ids = vals.gather(-1, by_id), ids.gather(-1, by_id)
    order = torch.sort(vals, dim=-1, descending=True, stable=True).indices
    return vals.gather(-1, order), ids.gather(-1, order)


def _least_margins(
    top: tuple[Tensor, Tensor],
    token: Tensor,
    p_token: Tensor,
    u: Tensor,
    top_p: float,
    complete: bool,
    temperature: float = 1.0,
    log_p: Tensor | None = None,
    log_vals: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`selection_margin`'s least margin over the nuclei made of the top ``W`` tokens, per row, and
    whether it is settled (the token is among them, and no wider nucleus can do better: those
    are at least ``cum_W - top_p`` off the cut; ``complete``: the top is the whole vocabulary).

    ``log_vals``: the log-probabilities of ``top`` (a complete top), from which the cuts' and the
    edges' log-odds are summed in log space (see `_edge_logits`)."""
    vals, ids = top
    cum = vals.cumsum(-1)
    before = torch.cat((torch.zeros_like(cum[:, :1]), cum[:, :-1]), dim=-1)
    edges: tuple[Tensor, Tensor] | None = None
    cut_logits: tuple[Tensor, Tensor] | None = None
    if temperature < 1.0 and log_vals is not None:
        # nucleus k's mass against the rest of the row, and k-1's; token-id sides within k
        cut_logits = _cut_logits(*_mass_logs(log_vals))
        below, from_token = _prefix_logits(log_vals, ids < token[:, None])
        through, after = _prefix_logits(log_vals, ids <= token[:, None])
        edges = (below - from_token, through - after)
    off_cut = _cut_distance(cum, before, top_p, temperature, cut_logits)
    lo = (vals * (ids < token[:, None])).cumsum(-1)
    row_log_p = None if log_p is None else log_p[:, None]
    inner = _interval_margin(lo, lo + p_token[:, None], cum, u[:, None], temperature, row_log_p, edges)
    # a top-k may cut a group of tied tokens at its last value anywhere: only the nuclei before that
    # group are the rule's (ties in id order)
    usable = torch.ones_like(ids, dtype=torch.bool) if complete else vals > vals[:, -1:]
    found = (ids == token[:, None]) & usable
    rank = found.int().argmax(-1)
    width = torch.arange(ids.shape[1])
    m = torch.where((width[None, :] >= rank[:, None]) & usable, torch.maximum(off_cut, inner), torch.inf)
    least = m.min(-1).values
    last = usable.sum(-1) - 1
    wider = torch.where(last >= 0, cum.gather(-1, last.clamp(min=0)[:, None])[:, 0], 0.0) - top_p
    return least, found.any(-1) & ((least <= wider) | complete)


_SWAP_PAIRS = 1 << 15  # swaps scored at once (`_swap_margin`)


def _moved_interval_distance(
    lo_before: Tensor, before: Tensor, share: Tensor, p_token: Tensor, u: Tensor | float, temperature: float
) -> Tensor:
    """A lower bound on how far the draw ``u`` lies from a member's interval in any nucleus made of
    the tokens before a column (mass ``before``, ``lo_before`` of it below the member by id) and
    one more token of share at most ``share``, on either side of the member by id: each edge moves
    monotonically with that share, so the interval stays within the hull of the three extremes.
    Below temperature 1 the lesser of that and the edges' log-odds distance, 0 where float64 sums
    cannot tell the log-odds (`ODDS_FLOOR`)."""
    mass = before + share
    lo = torch.minimum(lo_before / before, torch.minimum(lo_before / mass, (lo_before + share) / mass))
    hi = torch.maximum(
        (lo_before + p_token) / before,
        torch.maximum((lo_before + p_token) / mass, (lo_before + share + p_token) / mass),
    )
    below, above = lo - u, u - hi
    outside = torch.clamp(torch.maximum(below, above), min=0.0)
    if temperature < 1.0:
        odds = _odds_distance(u, torch.where(below > 0, lo, hi), temperature)
        outside = torch.fmin(outside, torch.where(torch.isinf(odds), 0.0, odds))
    return outside


def _swap_margin(
    top: tuple[Tensor, Tensor],
    log_vals: Tensor,
    token: int,
    p_token: Tensor,
    u: Tensor,
    top_p: float,
    temperature: float,
    log_p: Tensor,
    reach: float,
) -> float:
    """The least margin of ``token`` below ``reach`` over the nuclei made by swapping two tokens
    across a cut (``inf`` if there is none): one row, ``top`` its whole vocabulary in the rule's order
    and ``log_vals`` their log-probabilities.

    The rule's nuclei are prefixes of the probability order, which same-format rounding (~1e-5 in
    logits) reorders wherever two tokens are that near: the token ``a`` at rank ``k`` and a token ``b``
    below it trade places once ``b`` outranks every token from ``a`` down, a change of
    ``(l_a - l_b) / 2`` in each one's logit, which costs ``min(T, 1) * log(p_a / p_b) / 4`` in margin
    units (a logit change ``d`` costs ``d / 2``, `_interval_margin`; above ``T`` = 1, where margins are
    CDF mass, ``d / 2T``). The nucleus ``S`` = the ranks before ``k``, and ``b``, scores the greatest
    of that cost, the cut's distance (`_cut_distance`: ``S`` less ``b`` against ``S``) and the token's
    distance from its interval in ``S`` in token-id order: the token is ``b`` (one swap per rank
    above it), or a member before ``k`` whose interval moved as ``a`` left and ``b`` came in (every
    ``b`` within reach of ``a``). No ``S`` scores less than its rank's own cut distance, its
    cheapest swap and, for a member, the hull of its moved interval (`_moved_interval_distance`):
    ranks are looked at in the order of that bound while it is below the best margin found.
    """
    vals, ids = top
    scale = min(temperature, 1.0) / 4
    neg = torch.full((1,), -torch.inf, dtype=vals.dtype)
    cum = vals.cumsum(0)
    before = torch.cat((torch.zeros_like(cum[:1]), cum[:-1]))
    low = temperature < 1.0  # the cuts' and the edges' log-odds, summed in log space
    if low:
        taken, rest = _mass_logs(log_vals)
        taken_before = torch.cat((neg, taken[:-1]))
        off = _cut_distance(cum, before, top_p, temperature, _cut_logits(taken, rest))
        edge_sums = []
        for mask in (ids < token, ids <= token):
            inside, outside = _prefix_logits(log_vals, mask)
            edge_sums.append((torch.cat((neg, inside[:-1])), torch.cat((neg, outside[:-1])), mask))
    else:
        off = _cut_distance(cum, before, top_p, temperature)
    below_lo = torch.cat((torch.zeros_like(cum[:1]), (vals * (ids < token)).cumsum(0)[:-1]))

    def margins(c: Tensor, j: Tensor) -> Tensor:
        """The margin over the nucleus of the ranks before ``c`` and ``j``."""
        lj = log_vals[j]
        cost = torch.clamp(scale * (log_vals[c] - lj), min=0.0)
        mass = before[c] + vals[j]
        cut_logits = edges = None
        if low:
            log_rest = rest[c] + torch.log1p(-torch.exp(lj - rest[c]))
            cut_logits = (torch.logaddexp(taken_before[c], lj) - log_rest, taken_before[c] - rest[c])
            sides = []
            for inside, outside, mask in edge_sums:
                member = mask[j]
                sides.append(
                    torch.logaddexp(inside[c], torch.where(member, lj, -torch.inf))
                    - torch.logaddexp(outside[c], torch.where(member, -torch.inf, lj))
                )
            edges = (sides[0], sides[1])
        cut = _cut_distance(mass, before[c], top_p, temperature, cut_logits)
        lo = below_lo[c] + torch.where(ids[j] < token, vals[j], 0.0)
        inner = _interval_margin(lo, lo + p_token, mass, u, temperature, log_p, edges)
        return torch.maximum(cost, torch.maximum(cut, inner))

    rank = int(torch.nonzero(ids == token)[0, 0])
    cols = torch.nonzero(off < reach).flatten()
    best = reach
    up = cols[cols < rank]  # the token itself swapped up to rank c
    up = up[scale * (log_vals[up] - log_vals[rank]) < reach]
    if up.numel():
        best = min(best, float(margins(up, torch.full_like(up, rank)).min()))
    down = cols[(cols > rank) & (cols + 1 < vals.shape[0])]  # a member's interval moved
    bound = torch.maximum(off[down], scale * (log_vals[down] - log_vals[down + 1]))
    bound = torch.maximum(
        bound, _moved_interval_distance(below_lo[down], before[down], vals[down], p_token, u, temperature)
    )
    keep = bound < best
    down, bound = down[keep], bound[keep]
    order = torch.argsort(bound, stable=True)
    down, bound = down[order], bound[order]
    # every b within reach of a (the log-probabilities made monotone against rounding for the
    # search; each pair's cost is then taken as it is)
    desc = (-log_vals).cummax(0).values
    counts = (torch.searchsorted(desc, -log_vals[down] + reach / scale) - down - 1).clamp(min=0)
    total = counts.cumsum(0)
    start = 0
    while start < down.numel() and float(bound[start]) < best:
        stop = max(start + 1, int(torch.searchsorted(total, total[start] - counts[start] + _SWAP_PAIRS)))
        c = down[start:stop].repeat_interleave(counts[start:stop])
        offset = total[start:stop] - counts[start:stop] - (total[start] - counts[start])
        step = torch.arange(c.numel()) - offset.repeat_interleave(counts[start:stop])
        start = stop
        if c.numel():
            best = min(best, float(margins(c, c + 1 + step).min()))
    return best if best < reach else math.inf


def _swaps_in_reach(
    top: tuple[Tensor, Tensor],
    token: Tensor,
    u: Tensor,
    margin: Tensor,
    top_p: float,
    temperature: float,
    complete: bool,
) -> Tensor:
    """Per row (``top`` holds its token): whether a swap across a cut (`_swap_margin`) might give a
    margin below ``margin``, the least over the rule's nuclei: `_swap_margin`'s bound for each rank
    below the token (its cut, the cheapest swap, the member's moved interval) and the margin of the
    token itself swapped up to each rank above it. Where the top stops, at its last value or at the
    last real candidate before `_candidate_top`'s padding (value 0, no token), the row may go on with
    a token as near as it likes: within reach (the padding's ``log(0)`` once made that gap infinite
    and hid the swap across the candidate floor, tests/unit/test_review_swap_routing.py). In CDF
    units, so for temperatures of 1 and above (below 1 such rows go row by row anyway)."""
    vals, ids = top
    cum = vals.cumsum(-1)
    before = torch.cat((torch.zeros_like(cum[:, :1]), cum[:, :-1]), dim=-1)
    reach = margin.clamp(max=SWAP_REACH)[:, None] * (1 + 1e-9)  # generous by the float sums' rounding
    off = _cut_distance(cum, before, top_p, temperature)
    scale = min(temperature, 1.0) / 4
    lv = torch.log(vals)
    last = torch.zeros_like(lv[:, :1]) if not complete else torch.full_like(lv[:, :1], torch.inf)
    gap = torch.cat((scale * (lv[:, :-1] - lv[:, 1:]), last), dim=-1)
    if not complete:
        ends = torch.cat((vals[:, 1:] == 0, torch.ones_like(last, dtype=torch.bool)), dim=-1)
        gap = torch.where((vals == vals[:, -1:]) | ends, 0.0, gap)
    rank = (ids == token[:, None]).int().argmax(-1, keepdim=True)
    p_token = vals.gather(-1, rank)
    lo = torch.cat((torch.zeros_like(cum[:, :1]), (vals * (ids < token[:, None])).cumsum(-1)[:, :-1]), dim=-1)
    u = u[:, None]
    moved = _moved_interval_distance(lo, before, vals, p_token, u, temperature)
    member = torch.maximum(torch.maximum(off, gap), moved)
    mass = before + p_token  # the token swapped up to rank c: the ranks before c and it
    inner = torch.clamp(torch.maximum(lo / mass - u, u - (lo + p_token) / mass), min=0.0)
    inner = torch.where((lo <= u * mass) & (u * mass < lo + p_token), 0.0, inner)
    itself = torch.maximum(
        torch.maximum(scale * (lv - lv.gather(-1, rank)), _cut_distance(mass, before, top_p, temperature)),
        inner,
    )
    col = torch.arange(ids.shape[1])[None, :]
    bound = torch.where(col > rank, member, torch.where(col < rank, itself, torch.inf))
    band = _Band.of(top, rank)
    cols = torch.arange(ids.shape[1])[None, :].expand_as(ids)
    reached = band.reachable(cols, reach.expand_as(lv), u, None, top_p, temperature, complete)
    return ((bound < reach) | reached).any(-1)


def _hull_distance(lo: Tensor, hi: Tensor, u: Tensor, temperature: float, share_log: Tensor | None) -> Tensor:
    """How far the draw ``u`` lies outside ``[lo, hi)``, the hull of a token's CDF intervals (as
    shares of their nuclei's masses) over a band's nuclei, measured as `_interval_margin` measures one
    interval: 0 inside, else the CDF distance, below temperature 1 the lesser of that and the edge's
    log-odds distance (0 where float64 cannot tell it, `ODDS_FLOOR`: a lower bound), and at least
    the own-share term of ``share_log`` (the token's log share of the least mass)."""
    lo, hi = torch.nan_to_num(lo, nan=0.0), torch.nan_to_num(hi, nan=1.0)
    below, above = lo - u, u - hi
    outside = torch.clamp(torch.maximum(below, above), min=0.0)
    if temperature < 1.0:
        odds = _odds_distance(u, torch.where(below > 0, lo, hi), temperature)
        outside = torch.fmin(outside, torch.where(torch.isinf(odds), 0.0, odds))
    if share_log is not None:
        own = temperature * torch.clamp(math.log(DRAW_FLOOR) - share_log, min=0.0) / 4
        outside = torch.maximum(outside, own)
    return torch.where((lo <= u) & (u < hi), torch.zeros_like(outside), outside)


@dataclass(frozen=True)
class _Band:
    """A top's running sums for its band nuclei (`_band_margin`): per row ``[n, W]`` in the rule's
    order, the token at column ``rank`` ``[n, 1]``."""

    vals: Tensor
    desc: Tensor  # -log(vals), made monotone against rounding (for the searches)
    before: Tensor  # the mass of the columns before each one
    cum_lt: Tensor  # running mass of the tokens before the token by id
    cum_gt: Tensor  # ... and after it
    count_lt: Tensor  # running count of the tokens before the token by id
    count_gt: Tensor  # ... and after it
    rank: Tensor
    last: Tensor  # [n, 1]: the last real column (`_candidate_top` pads with value 0)

    @classmethod
    def of(cls, top: tuple[Tensor, Tensor], rank: Tensor) -> _Band:
        vals, ids = top
        token = ids.gather(-1, rank)
        cum = vals.cumsum(-1)
        before = torch.cat((torch.zeros_like(cum[:, :1]), cum[:, :-1]), dim=-1)
        lt, gt = vals * (ids < token), vals * (ids > token)
        desc = (-torch.log(vals)).cummax(-1).values.contiguous()
        last = (vals > 0).sum(-1, keepdim=True) - 1
        counts = ((ids < token).to(vals.dtype).cumsum(-1), (ids > token).to(vals.dtype).cumsum(-1))
        return cls(vals, desc, before, lt.cumsum(-1), gt.cumsum(-1), *counts, rank, last)

    def reachable(
        self,
        c: Tensor,
        m: Tensor,
        u: Tensor,
        log_p: Tensor | None,
        top_p: float,
        temperature: float,
        complete: bool,
    ) -> Tensor:
        """Whether some band nucleus leaving out rank ``c`` may score at most ``m`` (both ``[n, K]``):
        a lower bound's test, never false where one does.

        Its least likely member ``j`` is one whose price (``min(T, 1) * log(p_c / p_j) / 4``) is at
        most ``m``, two ranks or more below ``c`` (one below is the swap, `_swap_margin`) and, for a
        ``c`` above the token, not above the token (the token is in the nucleus); the ranks between
        are free, each in or out whole (counted with shares between the window's least and
        ``c + 1``'s: a lower bound). Its cut is within ``m`` of ``top_p`` only if its mass is within
        the range that allows (its last member's share at most ``c + 1``'s), and the token's
        interval within ``m`` of the draw only if the hull of its intervals over the masses in that
        range reaches it: the lowest lower edge takes the band's tokens after the token by id and as
        few before it as the range allows, the highest upper edge the reverse. Both rise with ``m``,
        so the least ``m`` it holds for is found by bisection. Where an incomplete top stops within
        reach (``complete`` false), tokens beyond it may join."""
        g = torch.gather
        scale = min(temperature, 1.0) / 4
        above = c < self.rank
        end = torch.searchsorted(self.desc, g(self.desc, -1, c) + m / scale, right=True) - 1
        open_end = torch.zeros_like(above) if complete else end >= self.last
        # two ranks or more below c: one is the swap, which `_swap_margin` scores exactly
        low = torch.maximum(torch.where(above, self.rank.expand_as(c), c), c + 2)
        valid = (c != self.rank) & (g(self.vals, -1, c) > 0) & ((end >= low) | open_end)
        end = end.clamp(min=0)
        p_t = g(self.vals, -1, self.rank)
        base = g(self.before, -1, c) + torch.where(above, p_t, 0.0)
        free_lt = torch.clamp(g(self.cum_lt, -1, end) - g(self.cum_lt, -1, c), min=0.0)
        free_gt = torch.clamp(g(self.cum_gt, -1, end) - g(self.cum_gt, -1, c), min=0.0)
        free_lt = torch.where(open_end, torch.inf, free_lt)
        free_gt = torch.where(open_end, torch.inf, free_gt)
        many_lt = torch.where(open_end, torch.inf, g(self.count_lt, -1, end) - g(self.count_lt, -1, c))
        many_gt = torch.where(open_end, torch.inf, g(self.count_gt, -1, end) - g(self.count_gt, -1, c))
        share = g(self.vals, -1, torch.minimum(c + 1, self.last))  # the last member's, at most
        # the band's tokens are whole: each share between the window's least and `share`
        least_share = torch.where(open_end, 0.0, g(self.vals, -1, end))
        # the masses whose cut is within m of top_p (below T = 1 also in log-odds, `_cut_distance`)
        least, most = top_p - m, top_p + share + m
        if temperature < 1.0:
            if ODDS_FLOOR <= top_p <= 1 - ODDS_FLOOR:
                odds = math.log(top_p) - math.log1p(-top_p)
                least = torch.minimum(least, torch.sigmoid(odds - 4 * m / temperature))
                most = torch.maximum(most, share + torch.sigmoid(odds + 4 * m / temperature))
            else:  # float64 cannot tell top_p's log-odds: any mass (a lower bound)
                least, most = torch.zeros_like(m), torch.full_like(m, torch.inf)
        feasible = (base <= most) & (base + free_lt + free_gt >= least)
        below = torch.where(c > 0, g(self.cum_lt, -1, (c - 1).clamp(min=0)), 0.0)  # by id, before c
        room = torch.clamp(most - base, min=0.0)

        def at_most(free: Tensor, many: Tensor) -> Tensor:
            """The most whole band tokens of one side add without passing the room."""
            fit = torch.floor(room / least_share * (1 + 1e-12))  # inf where the least share is 0
            return torch.minimum(torch.minimum(free, room), torch.minimum(many, fit) * share)

        def at_least(need: Tensor, many: Tensor) -> Tensor:
            """The least whole band tokens of one side add to reach ``need`` (where they can)."""
            count = torch.ceil(need / share * (1 - 1e-12))
            whole = torch.where(count <= many, count * least_share, 0.0)
            return torch.maximum(torch.clamp(need, min=0.0), whole)

        after = at_most(free_gt, many_gt)
        before_too = at_least(least - base - after, many_lt)
        lo = (below + before_too) / (base + before_too + after)
        ahead = at_most(free_lt, many_lt)
        after_too = at_least(least - base - ahead, many_gt)
        hi = (below + ahead + p_t) / (base + ahead + after_too)
        floor_mass = base + torch.where(above | open_end, 0.0, g(self.vals, -1, end))
        own = None if log_p is None else log_p - torch.log(floor_mass)
        inner = _hull_distance(lo, hi, u, temperature, own)
        return valid & feasible & (inner <= m)


_BISECTIONS = 44
"""Halvings of `_band_margin`'s search: the margin to 2^-44 of ``SWAP_REACH`` (1.4e-14), below the
least bound a validator applies (`SAMPLE_MARGIN_FLOOR`, 1e-11)."""


def _band_margin(
    top: tuple[Tensor, Tensor],
    token: int,
    u: Tensor,
    top_p: float,
    temperature: float,
    log_p: Tensor,
    reach: float,
) -> float:
    """A lower bound on the least margin of ``token`` below ``reach`` over the *band nuclei* (``inf``
    if none may score below it): one row, ``top`` its whole vocabulary in the rule's order.

    Rounding reorders tokens tied within it, so where three or more of them sit at a cut an honest
    node's nucleus may hold any of them: two swaps or more from every prefix of the validator's
    order, which `_swap_margin` (one swap) does not reach (tests/unit/test_review_swap_routing.py
    flagged 34 of 150 honest draws). A band nucleus leaves out the rank ``c`` (its likeliest
    excluded token), holds a lower rank ``j`` (its least likely member) and any of the ranks between:
    a prefix of an order in which each logit moved by ``(l_c - l_j) / 2``, the price
    ``min(T, 1) * log(p_c / p_j) / 4`` (as a swap's). Per ``c``, the least ``m`` for which
    `_Band.reachable` holds (price, cut and interval all within ``m`` for one range of masses) is
    found by bisection, for every ``c`` at once: a lower bound of the margin over those nuclei (the
    greatest of the price, the cut's distance and the interval's). Taking the cut and the interval
    for the same masses is what keeps a cheat's token out: bounded apart, a band of ties at the
    cut let a node pick among ~10 tokens far from the draw (tests/unit/test_review_band.py)."""
    vals, ids = top
    rank = torch.nonzero(ids == token)[0:1, 0:1]
    band = _Band.of((vals[None], ids[None]), rank)
    u, log_p = u.reshape(1, 1), log_p.reshape(1, 1)
    cols = torch.arange(vals.shape[0])[None, :]
    limit = torch.full(cols.shape, reach, dtype=vals.dtype)
    cols = cols[band.reachable(cols, limit, u, log_p, top_p, temperature, True)][None, :]
    if not cols.numel():
        return math.inf
    lo = torch.zeros(cols.shape, dtype=vals.dtype)  # never reachable below: a lower bound
    hi = torch.full(cols.shape, reach, dtype=vals.dtype)
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2
        ok = band.reachable(cols, mid, u, log_p, top_p, temperature, True)
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    best = float(lo.min())
    return best if best < reach else math.inf


def _nuclei(probs: Tensor, top_p: float) -> _Nuclei:
    """The rule's nucleus of each row of ``probs`` ``[n, V]``, from batched top-k values (the top of
    the rule's order: ties have equal values, so the cumulative sums are the sampler's), widened
    for the rows whose nucleus is wider."""
    n, vocab = probs.shape
    thr = torch.zeros(n, dtype=probs.dtype)
    cut = torch.zeros(n, dtype=torch.long)
    edge = torch.zeros(n, dtype=torch.bool)
    pending = torch.arange(n)
    width = min(_FIRST_CANDIDATES, vocab)
    while pending.numel():
        sub = probs[pending]
        vals = sub.topk(width, dim=-1).values if width < vocab else sub.sort(dim=-1, descending=True).values
        cum = vals.cumsum(-1)
        reached = cum >= top_p
        done = reached[:, -1] | (width == vocab)
        idx, c, v, hit = pending[done], cum[done], vals[done], reached[done]
        sel = torch.arange(idx.numel())
        at = torch.where(hit.any(-1), hit.int().argmax(-1), width - 1)
        prev = torch.where(at > 0, c[sel, (at - 1).clamp(min=0)], torch.zeros_like(v[:, 0]))
        thr[idx], cut[idx] = v[sel, at], at
        # within rounding of top_p: a guard (both sides sum the same values in the same order)
        edge[idx] = ((c[sel, at] - top_p).abs() < 1e-12) | ((prev - top_p).abs() < 1e-12)
        pending = pending[~done]
        width = vocab if width * 8 >= vocab else width * 8
    # members: every token at least as likely as the last one; where more tokens tie with it than
    # the nucleus holds, only the first of them by id (the rule's order)
    members = probs >= thr[:, None]
    over = torch.nonzero(members.sum(-1) != cut + 1).flatten()
    if over.numel():
        sub, t = probs[over], thr[over, None]
        tied = sub == t
        need = (cut[over] + 1 - (sub > t).sum(-1))[:, None]
        members[over] = (sub > t) | (tied & (tied.cumsum(-1) <= need))
    return _Nuclei(probs * members, ~edge)
