"""A nucleus cut between near-tied tokens: the margin counts the nuclei rounding makes by swapping them.

The nucleus is a prefix of the probability order, and same-format rounding (~1e-5 in logits) swaps
two tokens that near: the node's nucleus then holds ``b`` where the validator's holds ``a``. Every
prefix of the validator's order that holds ``b`` also holds ``a``, so without the swapped nuclei an
honest ``b`` scored the cut's distance (about half of ``a``'s share) and a user who set ``top_p``
inside ``a``'s share got the node flagged (`tests/unit/test_review_framing4.py`). A swap costs
``min(T, 1) * log(p_a / p_b) / 4`` (`sampling._swap_margin`): the noise's size for an honest swap,
a refusal for tokens a logit apart.
"""

from __future__ import annotations

import math

import pytest
import torch
from supernet.node.llm import sampling
from supernet.node.llm.sampling import SamplingParams, _nucleus, select, selection_margin, selection_margins
from supernet.node.llm.scoring import Tolerance

TIGHT = Tolerance()
VOCAB = 3000


def _row(seed: int, temperature: float = 1.0) -> torch.Tensor:
    """Random logits whose distribution at ``temperature`` is ``softmax(randn * 2)``."""
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)) * 2 * temperature


def _tie_at_the_cut(row: torch.Tensor, rank: int, gap: float) -> tuple[int, int]:
    """Make the tokens at ``rank`` and ``rank + 1`` of ``row`` ``gap`` logits apart: (a, b)."""
    order = row.argsort(descending=True)
    a, b = int(order[rank]), int(order[rank + 1])
    row[b] = row[a] - gap
    return a, b


def _inside_a(row: torch.Tensor, a: int, temperature: float) -> float:
    """A ``top_p`` halfway through ``a``'s share: the validator's nucleus ends with ``a``."""
    probs = torch.softmax(row.double() / temperature, -1)
    ranked = probs[probs.argsort(descending=True, stable=True)]
    k = int((ranked > probs[a]).sum())
    return float(ranked[:k].sum() + probs[a] / 2)


def _without_swaps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sampling, "_swap_margin", lambda *a, **k: math.inf)
    monkeypatch.setattr(sampling, "_band_margin", lambda *a, **k: math.inf)  # which holds one swap too


def _seeds_drawing(node: torch.Tensor, token: int, params: SamplingParams, count: int) -> list[int]:
    """The first ``count`` seeds under which ``node`` draws ``token`` (at position = seed)."""
    found = []
    for s in range(100_000):
        p = SamplingParams(temperature=params.temperature, top_p=params.top_p, seed=s)
        if select(node[None], [p], [s])[0] == token:
            found.append(s)
            if len(found) == count:
                break
    return found


@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.0, 2.0, 5.0])
def test_an_honest_swap_at_the_cut_is_accepted(temperature: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's rounding (1e-5 either way) ranks ``b`` above ``a``; ``top_p`` inside ``a``'s share
    puts ``b`` in the node's nucleus and ``a`` out. Every token the node draws, ``b`` and the members
    whose intervals moved with it, passes the same-format bound, batched and row by row; without
    the swapped nuclei ``b`` scored the cut's distance, far past it."""
    bound = TIGHT.sample_bound(temperature)
    cases = []
    for seed in range(8):
        validator = _row(seed, temperature)
        a, b = _tie_at_the_cut(validator, 2 + seed % 3, 1e-5)
        node = validator.clone()
        node[b] = validator[a] + 1e-5
        top_p = _inside_a(validator, a, temperature)
        members = set(_nucleus(torch.softmax(node.double() / temperature, -1), top_p).tolist())
        assert b in members and a not in members  # the two nuclei differ by the swap
        params = SamplingParams(temperature=temperature, top_p=top_p)
        for s in [*_seeds_drawing(node, b, params, 3), *range(12)]:
            at = SamplingParams(temperature=temperature, top_p=top_p, seed=s)
            cases.append((validator, select(node[None], [at], [s])[0], at, s, b))
    margins = [selection_margin(v, t, p, s) for v, t, p, s, _ in cases]
    assert max(margins) <= bound
    for (v, t, p, s, _), m in zip(cases, margins, strict=True):
        assert selection_margins(v[None], [t], p, s)[0] == pytest.approx(m, abs=1e-12)
    swapped = [m for (_, t, _, _, b), m in zip(cases, margins, strict=True) if t == b]
    assert len(swapped) >= 24 and min(swapped) > 0  # b drawn, at the swap's price (~2.5e-6)
    _without_swaps(monkeypatch)
    before = [selection_margin(v, t, p, s) for v, t, p, s, b in cases if t == b]
    assert min(before) > 5 * bound  # the former rule: every one an accusation


@pytest.mark.parametrize("temperature", [0.7, 1.0, 2.0])
def test_a_swap_of_tokens_a_logit_apart_is_refused(temperature: float) -> None:
    """``top_p`` inside the share of the best token ``a``: the nucleus is ``{a}``. A node that draws
    ``b``, 1.0 logit below, would need ``{b}``: that swap costs ``1 / (4 max(T, 1))``, 0.25
    (`SWAP_REACH`, not looked for) up to ``T`` = 1, and the nucleus ``{a, b}`` is the cut's distance
    away; either way past even the bf16 pair's bound. Tokens 0.2 logits apart swap for ``0.05 /
    max(T, 1)``, whatever the draw (``b``'s interval in ``{b}`` is all of it): the swap's price."""
    loose = Tolerance.bf16().sample_bound(temperature)
    for gap in (1.0, 0.2):
        row = torch.randn(200, generator=torch.Generator().manual_seed(3)) * 0.5 - 10
        a, b = 10, 40
        row[a], row[b] = 2.0, 2.0 - gap
        top_p = _inside_a(row, a, temperature)
        margins = [
            selection_margin(row, b, SamplingParams(temperature=temperature, top_p=top_p, seed=s), s)
            for s in range(20)
        ]
        batched = selection_margins(
            row[None].repeat(20, 1), [b] * 20, SamplingParams(temperature=temperature, top_p=top_p), 0
        )
        assert batched == pytest.approx(
            [
                selection_margin(row, b, SamplingParams(temperature=temperature, top_p=top_p), s)
                for s in range(20)
            ],
            abs=1e-12,
        )
        price = gap / (4 * max(temperature, 1.0))
        if gap == 1.0:
            assert min(margins) > loose and min(margins) >= min(price, sampling.SWAP_REACH) - 1e-6
        else:
            assert margins == pytest.approx([price] * 20, rel=1e-5)


@pytest.mark.parametrize(("temperature", "top_p"), [(0.7, 0.9), (1.0, 0.95), (1.5, 0.5), (2.0, 0.99)])
def test_without_a_near_tie_the_margins_are_unchanged(
    temperature: float, top_p: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows without near-ties (neighbours 0.3-1.0 logits apart): wherever the cheapest swap costs at
    least the margin over the rule's nuclei, the margin is the former one exactly (the draws of a
    copy rounded by 1e-3, and random tokens whose margin is small enough); elsewhere it can only be
    smaller; batched and row by row agree."""
    gen = torch.Generator().manual_seed(int(temperature * 10 + top_p * 100))
    n, vocab = 24, 200
    steps = 0.3 + 0.7 * torch.rand(n, vocab, generator=gen)
    logits = torch.stack([(-steps[i].cumsum(0))[torch.randperm(vocab, generator=gen)] for i in range(n)])
    near = logits + torch.randn(n, vocab, generator=gen) * 1e-3
    params = SamplingParams(temperature=temperature, top_p=top_p, seed=5)
    tokens = (select(near, [params] * n, list(range(n))), torch.randint(0, 12, (n,), generator=gen).tolist())
    now = [[selection_margin(logits[i], toks[i], params, i) for i in range(n)] for toks in tokens]
    batched = [selection_margins(logits, toks, params, 0) for toks in tokens]
    with monkeypatch.context() as patch:
        _without_swaps(patch)
        before = [[selection_margin(logits[i], toks[i], params, i) for i in range(n)] for toks in tokens]
    unchanged = 0
    for i in range(n):
        lp = torch.log_softmax(logits[i].double() / temperature, -1).sort(descending=True).values
        cheapest = float((lp[:-1] - lp[1:]).min()) * min(temperature, 1.0) / 4
        for k in range(2):
            assert now[k][i] <= before[k][i]  # swaps only add nuclei
            assert batched[k][i] == pytest.approx(now[k][i], abs=1e-12)
            if cheapest >= min(before[k][i], sampling.SWAP_REACH):
                assert now[k][i] == before[k][i]
                unchanged += 1
    assert unchanged >= n
