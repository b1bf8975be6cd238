"""Nucleus cuts among several near-tied tokens: the margin takes every reorder of the band at a cut.

Same-format rounding (~1e-5 in logits) reorders tokens that near, so where ``top_p`` falls among
three or more of them the node's nucleus may hold any of them: two or more swaps from every prefix
of the validator's order. One swap per cut (the margin before the band) flagged an honest node's
draws there (34 of 150 in `test_review_swap_routing.py`'s case). `sampling._band_margin` takes,
for each likeliest excluded rank ``c`` and least likely member ``j``, every nucleus holding any of
the ranks between (the band) at the price of the reorder, and scores them by a lower bound (the
cut over the masses the band allows, the token's interval over the hull of its intervals,
bisected on ``j``), so:

* an honest node's reorder of 3 to 5 near-tied tokens at the cut is never flagged, on the per-row
  and the batched path;
* the margin never exceeds the definition over every nucleus (every subset of the vocabulary
  whose reorder costs less than ``SWAP_REACH``, with any member of its band last), checked by
  brute force on small rows;
* where no tokens are near-tied it equals that definition (the band changes nothing), and a
  token far from every such nucleus is still refused.
"""

from __future__ import annotations

import math
import random
from itertools import combinations

import torch
from supernet.node.llm.sampling import (
    DRAW_FLOOR,
    ODDS_FLOOR,
    SWAP_REACH,
    SamplingParams,
    _nucleus,
    select,
    selection_margin,
    selection_margins,
    uniform,
)
from supernet.node.llm.scoring import Tolerance

TIGHT = Tolerance()


def _cluster(row: torch.Tensor, rank: int, size: int, spread: float) -> list[int]:
    """Move the tokens at ranks ``rank .. rank + size - 1`` of ``row`` within ``spread`` logits of
    the first of them (ids kept); return their ids, likeliest first."""
    order = row.argsort(descending=True)
    ids = [int(i) for i in order[rank : rank + size]]
    for n, i in enumerate(ids[1:], start=1):
        row[i] = row[ids[0]] - spread * n / size
    return ids


def _honest_node(row: torch.Tensor, ids: list[int], noise: float, rnd: random.Random) -> torch.Tensor:
    """The node's logits: the validator's with the cluster's tokens moved by at most ``noise``
    each, in a random order (what another summation order does to a near-tie)."""
    node = row.clone()
    for i in ids:
        node[i] = row[i] + rnd.uniform(-noise, noise)
    return node


def _top_p_inside(probs: torch.Tensor, ids: list[int], rnd: random.Random) -> float:
    """A ``top_p`` past the tokens above the cluster and inside its mass."""
    first = ids[0]
    above = float(probs[probs > probs[first]].sum())
    share = float(probs[ids].sum())
    return above + share * rnd.uniform(0.05, 0.95)


def _steps_from_a_prefix(node_members: set[int], probs: torch.Tensor) -> int:
    """How many tokens the node's nucleus holds past the validator's likeliest excluded one: 0 for a
    prefix of the validator's order, 1 for one swap, 2 or more for a band reorder."""
    order = probs.argsort(descending=True, stable=True).tolist()
    first_out = next((k for k, i in enumerate(order) if i not in node_members), len(order))
    return sum(1 for i in order[first_out:] if i in node_members)


def test_an_honest_reorder_of_a_near_tied_band_at_the_cut_is_never_flagged() -> None:
    """Attack (user): search prompts for 3 to 5 tokens tied within the noise at a likely rank, set
    ``top_p`` inside their mass and pick seeds; the honest node's rounding (every logit within
    1.2e-5) orders them otherwise, and its nucleus is two or more swaps from any prefix of the
    validator's order. Its draws must score within the bound, per row and batched (with a
    batch-mate), at temperatures below, at and above 1."""
    rnd = random.Random(11)
    flagged, band_reorders, draws = [], 0, 0
    for trial in range(36):
        temperature = (0.7, 1.0, 2.5)[trial % 3]
        size = 3 + trial % 3
        vocab = 3000
        gen = torch.Generator().manual_seed(100 + trial)
        row = torch.randn(vocab, generator=gen) * 2 * max(temperature, 1.0)
        ids = _cluster(row, rnd.randrange(1, 8), size, 6e-6)
        node = _honest_node(row, ids, 6e-6, rnd)
        assert float((node - row).abs().max()) <= 1.2e-5
        probs = torch.softmax(row.double() / temperature, -1)
        top_p = _top_p_inside(probs, ids, rnd)
        node_members = set(_nucleus(torch.softmax(node.double() / temperature, -1), top_p).tolist())
        band_reorders += _steps_from_a_prefix(node_members, probs) >= 2
        mate = torch.randn(vocab, generator=gen) * 3
        bound = TIGHT.sample_bound(temperature)
        for seed in range(0, 60, 4):
            params = SamplingParams(temperature=temperature, top_p=top_p, seed=rnd.randrange(2**32))
            token = select(node[None], [params], [seed])[0]
            exact = selection_margin(row, token, params, seed)
            batched = selection_margins(torch.stack([row, mate]), [token, 0], params, seed)[0]
            draws += 1
            if max(exact, batched) > bound:
                flagged.append((trial, temperature, size, token, exact, batched))
            assert batched == exact or abs(batched - exact) <= 1e-9 * exact
    assert band_reorders >= 5, band_reorders  # the case one swap per cut missed is exercised
    assert draws == 36 * 15
    assert not flagged, f"honest draws flagged: {flagged[:5]}"


def _definition(probs: list[float], token: int, u: float, top_p: float, temperature: float) -> float:
    """The margin over every nucleus by brute force (small rows): every subset ``S`` holding the
    token whose reorder into a prefix costs ``min(T, 1) * (max excluded - min included) / 4`` in
    log-probability below ``SWAP_REACH``, with any member of its band (ranks after its likeliest
    excluded one; a prefix: its last) last, scored the greater of the cost, the cut's distance and
    the token's distance from its interval in id order (docs/protocol.md, `_interval_margin`); a
    nucleus that is not a prefix of the rule's order counts where it scores below ``SWAP_REACH``."""
    vocab = len(probs)
    scale = min(temperature, 1.0) / 4
    logs = [math.log(p) for p in probs]
    order = sorted(range(vocab), key=lambda i: (-probs[i], i))
    rank = {t: k for k, t in enumerate(order)}

    def odds(x: float, share: float) -> float:
        if not ODDS_FLOOR <= share <= 1 - ODDS_FLOOR:
            return math.inf
        return temperature * abs(math.log(x / (1 - x)) - math.log(share / (1 - share))) / 4

    best = math.inf
    others = [i for i in range(vocab) if i != token]
    for size in range(len(others) + 1):
        for chosen in combinations(others, size):
            members = {token, *chosen}
            excluded = [i for i in range(vocab) if i not in members]
            cost = 0.0
            if excluded:
                cost = max(0.0, scale * (max(logs[i] for i in excluded) - min(logs[i] for i in members)))
            if cost >= SWAP_REACH:
                continue
            first_out = min((rank[i] for i in excluded), default=vocab)
            lasts = [i for i in members if rank[i] > first_out] or [max(members, key=lambda i: rank[i])]
            mass = sum(probs[i] for i in sorted(members))
            lo = sum(probs[i] for i in sorted(members) if i < token)
            hi = lo + probs[token]
            if lo <= u * mass < hi:
                inner = 0.0
            else:
                below, above = lo / mass - u, u - hi / mass
                inner = max(below, above, 0.0)
                if temperature < 1.0:
                    inner = min(inner, odds(u, lo / mass if below > 0 else hi / mass))
                own = temperature * max(0.0, math.log(DRAW_FLOOR) - (logs[token] - math.log(mass))) / 4
                inner = max(inner, own)
            prefix = {order[k] for k in range(len(members))} == members
            for last in lasts:
                before = mass - probs[last]
                cut = max(top_p - mass, before - top_p, 0.0)
                if cut > 0 and temperature < 1.0:
                    cut = min(cut, odds(top_p, mass if top_p > mass else before))
                value = max(cost, cut, inner)
                if prefix or value < SWAP_REACH:  # a reorder's margin is looked for below it
                    best = min(best, value)
    return best


def _small_rows(rnd: random.Random, tied: bool) -> tuple[torch.Tensor, float]:
    """A 7-token row and a temperature: with a band of 3 or 4 near-tied tokens (``tied``), or with
    every two neighbours in the probability order within a swap's reach and no three (each gap
    55-95 % of the reach, in random id order: one swap per cut is then every reorder there is)."""
    temperature = rnd.choice([0.7, 1.0, 3.0])
    if tied:
        row = torch.tensor([rnd.gauss(0.0, 1.5) for _ in range(7)]) * max(temperature, 1.0)
        _cluster(row, rnd.randrange(0, 4), rnd.choice([3, 4]), rnd.choice([0.0, 2e-6, 1e-4, 0.05]))
        return row, temperature
    reach = SWAP_REACH / (min(temperature, 1.0) / 4) * temperature  # in logits
    gaps = [rnd.uniform(0.55, 0.95) * reach for _ in range(6)]
    values = [-sum(gaps[:k]) for k in range(7)]
    rnd.shuffle(values)
    return torch.tensor(values), temperature


def test_the_margin_never_exceeds_the_definition_over_every_nucleus() -> None:
    """Brute force on 7-token rows with a band of 3 or 4 near-tied tokens (0 to 0.05 logits apart),
    every token, ``top_p`` inside the band or anywhere: the per-row and the batched margin are at
    most the least over every subset within ``SWAP_REACH`` (the band's scoring is a lower bound, so
    no reorder the noise can make is scored above it)."""
    rnd = random.Random(5)
    checked = 0
    for _ in range(70):
        row, temperature = _small_rows(rnd, tied=True)
        probs = torch.softmax(row.double() / temperature, -1)
        plain = probs.tolist()
        ranked = sorted(plain, reverse=True)
        cut = rnd.randrange(1, 6)
        top_p = sum(ranked[:cut]) - ranked[cut - 1] * rnd.uniform(0.0, 1.0)
        params = SamplingParams(
            temperature=temperature, top_p=min(max(top_p, 1e-6), 0.999), seed=rnd.randrange(2**32)
        )
        position = rnd.randrange(1000)
        u = uniform(params.seed, position)
        batched = selection_margins(row[None].expand(7, -1), list(range(7)), params, position)
        for token in range(7):
            reference = _definition(plain, token, u, params.top_p, temperature)
            ours = selection_margin(row, token, params, position)
            assert ours <= reference + 1e-12, (row.tolist(), token, params, ours, reference)
            if math.isfinite(reference):
                checked += 1
        assert all(
            b <= _definition(plain, t, uniform(params.seed, position + t), params.top_p, temperature) + 1e-12
            for t, b in enumerate(batched)
        )
    assert checked > 300


def test_without_near_ties_the_margin_is_the_definition_and_far_tokens_stay_refused() -> None:
    """Where no three tokens are within a reorder's reach, the band changes nothing: the margin
    equals the brute-force definition. With a band of near-ties at the cut, a token whose every
    nucleus within the bound's cost leaves it far from the draw is still refused: of the tokens the
    definition scores above 10x the bound, the code refuses at least 9 in 10 (the hull's slack is
    at most the band's free mass)."""
    rnd = random.Random(9)
    equal = 0
    for _ in range(60):
        row, temperature = _small_rows(rnd, tied=False)
        params = SamplingParams(
            temperature=temperature, top_p=rnd.uniform(0.2, 0.95), seed=rnd.randrange(2**32)
        )
        probs = torch.softmax(row.double() / temperature, -1).tolist()
        u = uniform(params.seed, 3)
        for token in range(7):
            reference = _definition(probs, token, u, params.top_p, temperature)
            ours = selection_margin(row, token, params, 3)
            assert ours <= reference + 1e-12
            if math.isfinite(reference):
                assert abs(ours - reference) <= 1e-9 * max(reference, 1e-300) or ours == reference
                equal += 1
    assert equal > 200
    far, refused = 0, 0
    for _ in range(80):
        row, temperature = _small_rows(rnd, tied=True)
        probs = torch.softmax(row.double() / temperature, -1).tolist()
        ranked = sorted(probs, reverse=True)
        params = SamplingParams(
            temperature=temperature,
            top_p=min(sum(ranked[:3]) - ranked[2] / 2, 0.999),
            seed=rnd.randrange(2**32),
        )
        u = uniform(params.seed, 4)
        bound = TIGHT.sample_bound(temperature)
        for token in range(7):
            if _definition(probs, token, u, params.top_p, temperature) > 10 * bound:
                far += 1
                refused += selection_margin(row, token, params, 4) > bound
    assert far > 100 and refused >= 0.9 * far, (far, refused)
