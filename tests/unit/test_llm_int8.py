"""The int8-weights grid (`supernet.node.llm.int8`): a protocol rule, since every validator must put
a node's weights on the same grid. Each row's values are int8 times one scale, every product a
float16 value (so a validator re-scores with the float16-weights kernels, exactly), the scale
the smallest of its 4-bit-mantissa form that holds the row, and the rule pinned by a golden digest.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
from llm_fixtures import make_tiny_llama
from supernet.node.llm import int8
from supernet.node.llm.errors import WeightsFormatError
from supernet.node.llm.int8 import MIN_EXPONENT, Q_MAX, dequantised, quantise_rows
from supernet.node.llm.scoring import Tolerance
from supernet.sdk.models import COMPUTE_PRECISIONS, compute_of, served_model_id


def _rows() -> torch.Tensor:
    """48 rows from 1,000 down to below float16's smallest subnormal (zero rows at the end), built
    from integers and powers of two only: the same float16 values on any machine."""
    i = torch.arange(48, dtype=torch.float64)[:, None]
    j = torch.arange(40, dtype=torch.float64)[None, :]
    return (((i * 7919 + j * 104729) % 2001 - 1000) * torch.pow(2.0, -i)).half()


def test_the_grid_is_pinned_by_its_digest() -> None:
    """A change to the rule changes every int8-weights model's numbers: validators holding the old
    rule would accuse honest nodes. It must come with a new format name, never silently."""
    q, scale = quantise_rows(_rows())
    digest = hashlib.sha256(q.numpy().tobytes() + scale.numpy().tobytes()).hexdigest()
    assert digest == "7986754a944e8ea8177c8a3f4a49315072396122ba084834e538df481252a84d"


def test_every_grid_value_is_a_float16_and_the_scale_is_the_smallest_that_holds_the_row() -> None:
    gen = torch.Generator().manual_seed(3)
    w = torch.cat([(torch.randn(500, 64, generator=gen) * 0.05).half(), _rows()[:, :40].repeat(1, 2)[:, :64]])
    q, scale = quantise_rows(w)
    assert q.dtype == torch.int8 and scale.dtype == torch.float32 and q.abs().max() <= Q_MAX
    exact = q.double() * scale.double()[:, None]
    assert torch.equal(dequantised(q, scale).double(), exact)  # float16 holds q * s exactly
    mantissa, exponent = torch.frexp(scale.double())
    assert torch.equal(mantissa * 16, torch.round(mantissa * 16))  # 4-bit mantissas (8..15) / 16
    assert (exponent - 4 >= MIN_EXPONENT).all()
    amax = w.double().abs().amax(dim=1)
    assert (amax <= Q_MAX * scale.double()).all()
    m = torch.round(mantissa * 16)
    smaller = torch.where(
        m == 8, torch.ldexp(torch.full_like(m, 15.0), exponent - 5), (m - 1) * 2.0 ** (exponent - 4)
    )
    held = amax > Q_MAX * 2.0**MIN_EXPONENT * 8  # rows above the smallest scale's reach
    assert (amax[held] > Q_MAX * smaller[held]).all(), "a smaller scale of the same form would hold the row"
    assert (q.abs().amax(dim=1)[held] >= 113).all()  # the 4-bit mantissa costs at most 1/8 of the range
    assert ((exact - w.double()).abs() <= scale.double()[:, None] / 2).all()  # round to nearest


def test_zero_and_tiny_rows_take_the_smallest_scale() -> None:
    w = torch.zeros(3, 8, dtype=torch.float16)
    w[1, 0] = 2.0**-24  # float16's smallest subnormal
    q, scale = quantise_rows(w)
    assert scale.tolist() == [2.0 ** (MIN_EXPONENT + 3)] * 3
    assert q.abs().sum() == 0  # 2**-24 rounds to 0 at the smallest scale (2**-21 / 2 = 2**-22 > 2**-24)


def test_what_the_grid_cannot_hold_is_refused() -> None:
    with pytest.raises(WeightsFormatError, match="float16 matrix"):
        quantise_rows(torch.ones(2, 3))
    with pytest.raises(WeightsFormatError, match="float16 matrix"):
        quantise_rows(torch.ones(3, dtype=torch.float16))
    with pytest.raises(WeightsFormatError, match="too large"):
        quantise_rows(torch.full((1, 4), 65504.0, dtype=torch.float16))


def test_int8_weights_is_a_served_format_of_its_own_held_to_the_tight_bound() -> None:
    """Its own id (a node cannot sell int8 work under the float16-weights id: the id names the
    format and each is re-scored in its own), and the same-format pair keeps the exact bound."""
    weights = "0x" + "cd" * 32
    assert "int8-weights" in COMPUTE_PRECISIONS
    ids = {served_model_id(weights, c) for c in COMPUTE_PRECISIONS}
    assert len(ids) == len(COMPUTE_PRECISIONS)
    assert compute_of(served_model_id(weights, "int8-weights"), weights) == "int8-weights"
    assert Tolerance.for_pair("int8-weights", "int8-weights") == Tolerance()
    assert Tolerance.for_pair("int8-weights", "float16-weights") == Tolerance.bf16()
    assert Tolerance.for_pair("float16-weights", "int8-weights") == Tolerance.bf16()


def test_an_int8_model_computes_what_its_float16_grid_weights_compute() -> None:
    """The torch path's int8-weights model is a float16-weights model over the grid's weights: the
    same logits, bit for bit, as one built from those weights directly."""
    model = make_tiny_llama(7).use_fp16_weights(int8=True)
    grid = make_tiny_llama(7)
    with torch.no_grad():
        for module in [grid.output] + [m for b in grid.blocks for m in (b.attention.wqkv, b.attention.wo)]:
            module.weight.copy_(dequantised(*quantise_rows(module.weight.detach().half())).float())
        for block in grid.blocks:
            for m in (block.feed_forward.w13, block.feed_forward.w2):
                m.weight.copy_(dequantised(*quantise_rows(m.weight.detach().half())).float())
    grid = grid.use_fp16_weights()
    tokens = torch.tensor([[5, 9, 2, 7, 1, 3]])
    assert model.compute == "int8-weights" and grid.compute == "float16-weights"
    assert torch.equal(model.logits(model(tokens)), grid.logits(grid(tokens)))


def test_float32_quotients_are_the_exact_quotients_for_every_float16_and_every_scale() -> None:
    """The grid's quotients are computed in float32 (`int8.quotients`); the rule is the exact
    quotient's rounding (half to even). Every finite float16 value against every scale ``m * 2**e``
    the grid can use (m in 8..15, e from -24 until 127 s passes float16's largest) gives the same
    integers in float32 as in float64, where the quotient of a float16 by such a scale is exact."""
    values = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.float16)
    values = values[torch.isfinite(values)]
    exact_values = values.double()
    scales = [
        m * 2.0**e for e in range(MIN_EXPONENT, 16) for m in range(8, 16) if m * 2.0**e * Q_MAX <= 65504
    ]
    assert len(scales) == 8 * 30 + 1  # e from -24 to 5 for every m, then 8 * 2**6 alone
    for s in scales:
        grid = int8.quotients(values[None, :], torch.tensor([s], dtype=torch.float32))
        exact = torch.round(exact_values / s).clamp_(-Q_MAX, Q_MAX)
        assert torch.equal(grid.double()[0], exact), s
