"""A sampled token at a low temperature is judged in logits, whatever the temperature.

Below temperature 1 a sampled margin outside the token's CDF interval is the lesser of the CDF
distance and ``T * |logit(u) - logit(edge)| / 4`` (`sampling._interval_margin`): the logit change
that would move the interval's edge onto the draw. The edges' log-odds used to come from float64
sums of probabilities, which cannot tell a share within ``ODDS_FLOOR`` (1e-9) of 0 or 1, so such an
edge fell back to its CDF distance. At a low temperature an honest bfloat16 node's rounding (logits
rounded to 8 bits) flips a near-tie by far more than that in log-odds (``2d / T``), and a user who
signs a low temperature on a prompt with a near-tie got the honest token flagged (the documented
known limit "bf16 nodes at very low temperatures"). Now the edges' masses are summed in log space
(`sampling._edge_logits`, `_least_margins(log_vals=)`): the margin of an honest flip is about
``d / 4`` at every temperature. What a cheat can reach stays bounded in logits: a token whose own
share is below ``DRAW_FLOOR`` pays for it (`test_defence_a_token_beyond_the_reach...`), so a
bf16 node reaches a token only within ``T * ln 2^53 + 4 x 0.1`` logits of the best (0.77 at
T = 0.01), and only where a real near-tie puts an edge next to the draw: the order of the bf16
pair's greedy bound (0.6 nat), which a user who signs a bf16 id accepts.

The rounding here is real: the node's logits come out of a bfloat16 matrix product on this CPU,
the validator's out of the float32 one (the bf16-node / float32-validator pair).
"""

from __future__ import annotations

import math

import pytest
import torch
from supernet.node.llm import sampling
from supernet.node.llm.sampling import SamplingParams, select, selection_margin, selection_margins, uniform
from supernet.node.llm.scoring import SAMPLE_MARGIN_BF16, Tolerance

TEMPERATURES = (1e-4, 1e-3, 1e-2, 0.03)


def _near_tie_logits(trial: int, vocab: int = 3000, dim: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(node's bfloat16 logits, validator's float32 logits) of one hidden state, the two likeliest
    tokens of the float32 product 0.002-0.05 apart: a near-tie a user can search prompts for."""
    gen = torch.Generator().manual_seed(trial)
    weight = torch.randn(vocab, dim, generator=gen) * 0.5
    hidden = torch.randn(dim, generator=gen)
    exact = weight @ hidden
    best = int(exact.argmax())
    second = (best + 1 + trial % 7) % vocab  # the runner-up, on either side of the best by id
    gap = 0.002 + 0.048 * torch.rand((), generator=gen).item()
    # move the runner-up's row along the hidden state so its logit sits `gap` below the best
    weight[second] = weight[best] - gap * hidden / hidden.dot(hidden)
    node = (hidden.to(torch.bfloat16) @ weight.to(torch.bfloat16).T).float()  # real bf16 rounding
    return node, weight @ hidden


def _without_log_space_edges(monkeypatch: pytest.MonkeyPatch) -> None:
    """The former rule: edges' log-odds from the probabilities' float64 sums (with ``ODDS_FLOOR``)."""
    interval, least = sampling._interval_margin, sampling._least_margins
    monkeypatch.setattr(
        sampling, "_interval_margin", lambda *a, **k: interval(*a[:6], **{**k, "edge_logits": None})
    )
    monkeypatch.setattr(sampling, "_least_margins", lambda *a, **k: least(*a[:8], **{**k, "log_vals": None}))
    monkeypatch.setattr(sampling, "_swap_margin", lambda *a, **k: math.inf)  # nor swaps across a cut, then
    monkeypatch.setattr(sampling, "_band_margin", lambda *a, **k: math.inf)  # nor bands


@pytest.mark.parametrize("top_p", [1.0, 0.95])
def test_defence_a_user_cannot_frame_an_honest_bf16_node_with_a_low_temperature(
    top_p: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack (a USER frames an honest node): sign a sampled call at a low temperature on a prompt
    whose two likeliest tokens are a near-tie, with any seed. The honest bf16 node's rounding puts
    the runner-up first and draws it; in the validator's float32 logits the runner-up's share is
    below 1e-9 (at T = 1e-3, a 0.02 logit gap is 20 nats), its edge was measured in CDF mass, ~u
    away, and the call was flagged. Defence: the edge's log-odds summed in log space."""
    flips = flagged = 0
    honest: list[tuple[torch.Tensor, int, SamplingParams, int]] = []
    for trial in range(60):
        node, validator = _near_tie_logits(trial)
        for k, temperature in enumerate(TEMPERATURES):
            params = SamplingParams(temperature=temperature, top_p=top_p, seed=1000 * trial + k)
            token = select(node[None], [params], [5])[0]  # the honest node's own draw
            flips += token != int(validator.argmax())
            margin = selection_margins(validator[None], [token], params, 5)[0]
            assert margin == pytest.approx(selection_margin(validator, token, params, 5), abs=1e-12)
            flagged += margin > SAMPLE_MARGIN_BF16
            honest.append((validator, token, params, 5))
    assert flips >= 40  # bf16 rounding really did flip the near-ties the user chose
    assert flagged == 0
    _without_log_space_edges(monkeypatch)
    before = sum(selection_margins(v[None], [t], p, pos)[0] > SAMPLE_MARGIN_BF16 for v, t, p, pos in honest)
    assert before >= 10  # the former rule flagged these honest draws


@pytest.mark.parametrize("beyond", [0.5, 1.0, 3.0])
@pytest.mark.parametrize("after", [True, False])
def test_defence_a_token_beyond_the_reach_of_rounding_is_refused_at_every_low_temperature(
    beyond: float, after: bool
) -> None:
    """Attack (a cheating NODE): at a low temperature every share but the best's is tiny, so with
    edges measured in log space a node might hope to emit a runner-up next to whose edge the draw
    sits (this row has real near-ties: 0.04 and 0.2 below its best). The reach is bounded in logits
    at every temperature: a token's own share below ``DRAW_FLOOR`` (``T * ln 2^53`` logits below the
    best) costs ``T * log(DRAW_FLOOR / share) / 4``, so a token ``beyond`` >= 0.5 logits past that is
    refused under the bf16 pair's bound (0.1, i.e. 0.4 logits) for every draw in [0.15, 0.85],
    next to the best by id on either side; and under the float32 pair's too."""
    gen = torch.Generator().manual_seed(3)
    row = torch.randn(2000, dtype=torch.float64, generator=gen)
    best = int(row.argmax())
    cheat = best + 1 if after else best - 1
    for temperature in TEMPERATURES:
        gap = temperature * math.log(2.0**53) + beyond
        row[cheat] = row[best] - gap
        for seed in range(40):
            params = SamplingParams(temperature=temperature, top_p=1.0, seed=seed)
            if not 0.15 <= uniform(seed, 0) <= 0.85:
                continue
            margin = selection_margins(row[None], [cheat], params, 0)[0]
            assert margin >= beyond / 4 - 1e-9  # what the token's own share costs
            assert margin > SAMPLE_MARGIN_BF16 > Tolerance().sample_margin


def test_edges_in_log_space_agree_with_the_float64_sums_where_those_can_tell() -> None:
    """Where every share is well inside (ODDS_FLOOR, 1 - ODDS_FLOOR), the log-space edges are the
    probability sums' (to rounding): the change alters nothing a float64 sum could measure."""
    gen = torch.Generator().manual_seed(11)
    for trial in range(50):
        row = torch.randn(500, dtype=torch.float64, generator=gen)
        params = SamplingParams(temperature=0.5, top_p=1.0, seed=trial)
        token = int(torch.randint(0, 500, (), generator=gen))
        probs = torch.softmax(row / 0.5, dim=-1)
        cdf = probs.cumsum(0)
        lo, hi = (cdf[token - 1] if token else torch.zeros((), dtype=torch.float64)), cdf[token]
        log_lo, log_hi = sampling._edge_logits(torch.log_softmax(row / 0.5, dim=-1), token)
        if token:
            assert float(log_lo) == pytest.approx(float(torch.log(lo) - torch.log1p(-lo)), rel=1e-9, abs=1e-9)
        assert float(log_hi) == pytest.approx(float(torch.log(hi) - torch.log1p(-hi)), rel=1e-7, abs=1e-7)
        assert selection_margin(row, token, params, trial) >= 0.0
