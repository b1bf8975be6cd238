"""Sampling: a chosen token is a pure function of (logits, seed, position)."""

from __future__ import annotations

import math

import pytest
import torch
from supernet.node.llm import sampling
from supernet.node.llm.sampling import (
    EXACT_ABOVE,
    SamplingParams,
    select,
    selection_margin,
    selection_margins,
    uniform,
)
from supernet.node.llm.scoring import Tolerance


def test_uniform_is_deterministic_in_range_and_keyed_by_both_inputs() -> None:
    draws = [uniform(seed, pos) for seed in range(20) for pos in range(50)]
    assert draws == [uniform(seed, pos) for seed in range(20) for pos in range(50)]
    assert all(0.0 <= u < 1.0 for u in draws)
    assert len(set(draws)) == len(draws)
    assert abs(sum(draws) / len(draws) - 0.5) < 0.03


def test_greedy_picks_lowest_index_among_maxima() -> None:
    logits = torch.tensor([[0.0, 3.0, 3.0, 1.0], [5.0, 0.0, 0.0, 0.0]])
    assert select(logits, [SamplingParams()] * 2, [0, 0]) == [1, 0]


def test_choice_is_independent_of_the_rest_of_the_batch() -> None:
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(6, 300, generator=gen) * 3
    params = [
        SamplingParams(temperature=0.8, top_p=tp, seed=s) for s, tp in enumerate((1, 0.9, 0.5, 1, 0.95, 0.7))
    ]
    batched = select(logits, params, list(range(10, 16)))
    alone = [select(logits[r : r + 1], [params[r]], [10 + r])[0] for r in range(6)]
    assert batched == alone
    shuffled = select(logits.flip(0), params[::-1], list(range(15, 9, -1)))
    assert shuffled[::-1] == batched


def test_seed_and_position_change_the_draw() -> None:
    logits = torch.zeros(1, 1000)
    p = SamplingParams(temperature=1.0)
    by_pos = {select(logits, [p], [pos])[0] for pos in range(30)}
    by_seed = {select(logits, [SamplingParams(temperature=1.0, seed=s)], [0])[0] for s in range(30)}
    assert len(by_pos) > 20 and len(by_seed) > 20


def test_top_p_never_picks_outside_the_nucleus() -> None:
    probs = torch.tensor([0.5, 0.3, 0.1, 0.05, 0.05])
    logits = probs.log()[None]
    p = SamplingParams(temperature=1.0, top_p=0.75)
    picks = {
        select(logits, [SamplingParams(temperature=1.0, top_p=0.75, seed=s)], [3])[0] for s in range(300)
    }
    assert picks == {0, 1}
    # outside the nucleus: at least the mass before it past top_p (0.8 - 0.75), never 0
    assert 0.05 - 1e-9 <= selection_margin(logits[0], 2, p, 3) < math.inf
    # token 4 ties token 3 exactly: rounding may put either one fourth (`sampling._swap_margin`)
    assert selection_margin(logits[0], 4, p, 3) >= 0.9 - 0.75 - 1e-9
    # token 1 is outside only because token 2 is 2e-7 likelier and reaches top_p first: rounding
    # decides its place, and its margin says so (0 whenever the draw falls in its grown interval)
    edge = torch.tensor([0.5, 0.2499999, 0.2500001]).log()[None]
    edge_p = SamplingParams(temperature=1.0, top_p=0.75)
    near = [selection_margin(edge[0], 1, edge_p, pos) for pos in range(50)]
    assert min(near) < 1e-6 and max(near) <= 0.75 + 1e-6


@pytest.mark.parametrize("top_p", [1.0, 0.99])
def test_frequencies_follow_the_distribution(top_p: float) -> None:
    probs = torch.tensor([0.4, 0.3, 0.2, 0.1])
    logits = probs.log()[None]
    n = 4000
    counts = [0] * 4
    for pos in range(n):
        counts[select(logits, [SamplingParams(temperature=1.0, top_p=top_p, seed=7)], [pos])[0]] += 1
    for c, p in zip(counts, probs.tolist(), strict=True):
        assert abs(c / n - p) < 0.03


def test_temperature_sharpens() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    cold = [select(logits, [SamplingParams(temperature=0.05, seed=s)], [0])[0] for s in range(200)]
    assert cold.count(0) == 200


def test_selection_margin_is_zero_for_the_selected_token() -> None:
    gen = torch.Generator().manual_seed(3)
    for pos in range(50):
        row = torch.randn(200, generator=gen) * 2
        for p in (SamplingParams(), SamplingParams(temperature=0.7, top_p=0.9, seed=pos)):
            tok = select(row[None], [p], [pos])[0]
            assert selection_margin(row, tok, p, pos) == 0.0
    row = torch.tensor([0.0, 1.0, 5.0])
    assert selection_margin(row, 0, SamplingParams(), 0) == pytest.approx(5.0, abs=1e-6)


def test_params_are_validated() -> None:
    with pytest.raises(ValueError):
        SamplingParams(temperature=-1)
    with pytest.raises(ValueError):
        SamplingParams(top_p=0)
    with pytest.raises(ValueError):
        SamplingParams(max_new_tokens=0)


@pytest.mark.parametrize(
    ("temperature", "top_p"),
    [(0.0, 1.0), (0.7, 1.0), (1.0, 1.0), (0.8, 0.9), (1.0, 0.5), (1.5, 0.95), (2.0, 0.999), (0.3, 0.1)],
)
@pytest.mark.parametrize("vocab", [7, 3000])
def test_selection_margins_match_the_per_row_function(temperature: float, top_p: float, vocab: int) -> None:
    gen = torch.Generator().manual_seed(int(temperature * 100 + top_p * 1000) + vocab)
    n = 48
    logits = torch.randn(n, vocab, generator=gen) * 3
    logits[3, :5] = logits[3].max() + 1  # exact ties at the top
    logits[4] = 0.0  # a flat row
    for seed in (0, 12345):
        p = SamplingParams(temperature=temperature, top_p=top_p, seed=seed)
        chosen = select(logits, [p] * n, list(range(40, 40 + n)))
        other = torch.randint(0, vocab, (n,), generator=gen).tolist()
        ranked = logits.argsort(dim=-1, descending=True)[:, min(vocab - 1, 900)].tolist()
        for toks in (chosen, other, ranked):
            got = selection_margins(logits, toks, p, 40)
            ref = [selection_margin(logits[i], toks[i], p, 40 + i) for i in range(n)]
            assert len(got) == n
            for g, r in zip(got, ref, strict=True):
                if math.isinf(r):
                    assert math.isinf(g)
                else:  # the batched margin is exact above EXACT_ABOVE, an upper bound below it
                    assert r - 1e-9 <= g <= max(r + 1e-6, EXACT_ABOVE)
                    assert (g > EXACT_ABOVE) == (r > EXACT_ABOVE)
        assert selection_margins(logits, chosen, p, 40) == [0.0] * n
    assert selection_margins(logits[:0], [], SamplingParams(temperature=1.0), 0) == []


def test_selection_margins_fall_back_per_row_at_the_nucleus_edge() -> None:
    """Rows whose nucleus mass sits within rounding of ``top_p`` (2048 tied candidates) agree with
    the per-row rule."""
    logits = torch.cat((torch.zeros(2048), torch.full((952,), -5.0)))[None].repeat(3, 1)
    logits[1] = torch.randn(3000, generator=torch.Generator().manual_seed(2))  # an ordinary row
    probs = torch.softmax(logits[0].double(), dim=-1)
    top_p = float(probs[:2048].sum()) + 5e-10  # 2048 tied candidates, their mass just under top_p
    p = SamplingParams(temperature=1.0, top_p=top_p, seed=7)
    for toks in ([5, 6, 7], [2100, 2999, 0], select(logits, [p] * 3, [9, 10, 11])):
        got = selection_margins(logits, toks, p, 9)
        ref = [selection_margin(logits[i], toks[i], p, 9 + i) for i in range(3)]
        assert [math.isinf(x) for x in got] == [math.isinf(x) for x in ref]
        assert all(abs(g - r) <= 1e-9 for g, r in zip(got, ref, strict=True) if not math.isinf(r))


def test_near_tied_likely_tokens_that_swap_places_move_no_interval() -> None:
    """The reason the CDF runs in token-id order: another precision that swaps two near-tied likely
    tokens moves every interval by about the total-variation distance, not by a token's whole mass
    (in probability order token 7's interval would jump by 0.3 here)."""
    base = torch.full((50,), -6.0)
    base[3], base[7], base[20] = 2.0, 2.0 + 1e-4, 1.0
    other = base.clone()
    other[3] += 2e-4  # now token 3 is the likelier one
    for top_p in (1.0, 0.9):
        p = SamplingParams(temperature=1.0, top_p=top_p, seed=11)
        chosen = select(base[None].repeat(64, 1), [p] * 64, list(range(64)))
        assert {3, 7} <= set(chosen)
        margins = [selection_margin(other, tok, p, pos) for pos, tok in enumerate(chosen)]
        assert max(margins) < 1e-3


def test_a_nucleus_one_token_wider_on_the_validator_costs_only_the_cut_distance() -> None:
    """Rounding may put the last nucleus member in or out on either side: the margin is the least
    over nuclei, so an honest token scores how far top_p is from the other cut, not 0.25."""
    node = torch.tensor([0.7002, 0.05, 0.2498]).log()
    validator = torch.tensor([0.6998, 0.05, 0.2502]).log()  # token 0 alone no longer reaches 0.7
    p = SamplingParams(temperature=1.0, top_p=0.7, seed=5)
    chosen = select(node[None].repeat(40, 1), [p] * 40, list(range(40)))
    assert set(chosen) == {0}  # the node's nucleus is token 0 alone
    assert max(selection_margin(validator, 0, p, pos) for pos in range(40)) < 1e-3
    # while a token the node could never have drawn stays far off
    assert min(selection_margin(validator, 1, p, pos) for pos in range(40)) > 0.2


def _near_tie(gen: torch.Generator, vocab: int = 1000) -> tuple[torch.Tensor, int]:
    """A row whose two best tokens are 1e-5 apart (a user can search prompts for such a tie)."""
    row = torch.randn(vocab, dtype=torch.float64, generator=gen) * 3
    best, second = torch.topk(row, 2).indices.tolist()
    row[second] = row[best] - 1e-5
    return row, int(row.argmin())


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_low_temperature_near_ties_are_not_accusations(top_p: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """An honest node's logits differ from a validator's by rounding (~5e-5 here, the same-format
    noise docs/benchmarks/exact_pairs.md measures). At a low temperature that difference moves a
    near-tie's CDF boundary ~1/T further, so in CDF units alone a user choosing T and the seed could
    get an honest token flagged; the margin in log-odds units (`_interval_margin`) keeps it within
    the bound, and still refuses a token far from the draw."""
    gen = torch.Generator().manual_seed(7)
    bound = Tolerance().sample_margin
    cdf = sampling._interval_margin
    flagged = cdf_flagged = far_accepted = 0
    for trial in range(400):
        temperature = (1e-4, 3e-4, 1e-3, 1e-2)[trial % 4]  # from MIN_TEMPERATURE up
        row, far = _near_tie(gen)
        noise = torch.randn(row.shape, dtype=torch.float64, generator=gen) * 5e-5
        params = SamplingParams(temperature=temperature, top_p=top_p, seed=trial)
        token = select(row[None], [params], [trial])[0]
        margin = selection_margin(row + noise, token, params, trial)
        assert margin == pytest.approx(
            selection_margins((row + noise)[None], [token], params, trial)[0], abs=1e-12
        )
        flagged += margin > bound
        with monkeypatch.context() as patch:  # the former rule: the CDF distance alone, no swaps
            patch.setattr(sampling, "_swap_margin", lambda *a, **k: math.inf)
            patch.setattr(sampling, "_band_margin", lambda *a, **k: math.inf)
            patch.setattr(
                sampling,
                "_interval_margin",
                lambda lo, hi, mass, u, temperature=1.0, log_p=None, edges=None: cdf(lo, hi, mass, u),
            )
            cdf_flagged += selection_margin(row + noise, token, params, trial) > bound
        far_accepted += selection_margin(row + noise, far, params, trial) <= bound
    assert flagged == 0
    assert far_accepted <= 4  # only where the draw lands within the bound of the far token's interval
    assert cdf_flagged > 10  # the former rule flagged these honest tokens (~4 %)
