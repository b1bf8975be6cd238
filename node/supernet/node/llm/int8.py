"""The ``int8-weights`` format: every weight row as int8 values times one float32 scale.

Row ``n`` of a matrix ``W`` (float16, as the float16-weights format rounds it) becomes
``q[n, :] * s[n]`` with ``q`` int8 in [-127, 127] and ``s[n]`` the smallest value of the form
``m * 2**e`` (``m`` in 8..15, ``e >= -24``) with ``max |W[n, :]| <= 127 * s[n]``, and
``q = round(W / s)`` (half to even). A scale of a 4-bit mantissa makes every ``q * s`` a
float16 value (at most 7 + 4 significant bits, exponent >= -24), so an int8-weights model *is*
a float16-weights model whose weights sit on this grid: a validator re-scores it with the
float16-weights kernels, holding ``q * s`` in float16 exactly, and the tolerance is float16-weights'
own (fp32 sums over the same weights). The node reads half the bytes per decode step (int8 plus a
scale a row): what bounds a CPU's decode step at one sequence. The 4-bit mantissa costs at most
1/8 of the int8 range (max |q| >= 113); docs/benchmarks/formats.md has the agreement with float32.

The rule is part of the protocol (a served id names the format, and any validator must derive the
same ``q`` and ``s``): it is computed in float64 from float16 inputs, where every step is exact or
correctly rounded, so it does not depend on the machine.

>>> import torch
>>> q, s = quantise_rows(torch.tensor([[0.5, -0.25, 0.125]], dtype=torch.float16))
>>> q.tolist(), s.tolist()
([[114, -57, 28]], [0.00439453125])
>>> dequantised(q, s).tolist()
[[0.5009765625, -0.25048828125, 0.123046875]]
"""

from __future__ import annotations

import torch
from supernet.node.llm.errors import WeightsFormatError
from torch import Tensor

INT8_WEIGHTS = "int8-weights"
Q_MAX = 127
MIN_EXPONENT = -24
"""The scale's smallest power of two: float16's subnormal step, so ``q * s`` stays a float16 value."""


def quantise_rows(weight: Tensor) -> tuple[Tensor, Tensor]:
    """``(q, s)``: the int8 rows and float32 row scales of a float16 matrix ``[n, k]`` (see the module).

    The rule runs on the CPU whatever the weight's device (one definition, no device-dependent
    float64 arithmetic); the grid goes back to the weight's device.

    Raises:
        WeightsFormatError: not a float16 matrix, a weight that is not finite, or a value the grid
            cannot hold in float16.
    """
    if weight.dtype != torch.float16 or weight.dim() != 2:
        raise WeightsFormatError(
            f"int8 rows are made from a float16 matrix, not {weight.dtype} {tuple(weight.shape)}"
        )
    source = weight.detach().cpu()
    q = torch.empty(source.shape, dtype=torch.int8, device="cpu")
    scales = torch.empty(source.shape[0], dtype=torch.float32, device="cpu")
    for start in range(0, source.shape[0], ROWS_AT_ONCE):  # the temporaries of a block only
        block = source[start : start + ROWS_AT_ONCE]
        if not torch.isfinite(block).all():
            raise WeightsFormatError("a weight that is not finite (NaN or inf) has no place on the int8 grid")
        q[start : start + len(block)], scales[start : start + len(block)] = _quantised_block(block.double())
    return q.to(weight.device), scales.to(weight.device)


ROWS_AT_ONCE = 2048
"""Rows quantised (and checked finite) together: the float64 temporaries of a 49,152-row head at
once would peak at ~1 GB beside the model, more than the int8 model itself, and even the finiteness
check of the whole float16 table made ~140 MB of temporaries (the load's peak)."""


def _quantised_block(w: Tensor) -> tuple[Tensor, Tensor]:
    mantissa, exponent = torch.frexp(w.abs().amax(dim=1) / Q_MAX)  # amax / 127 = mantissa * 2**exponent
    m = torch.ceil(mantissa * 16)  # the scale m * 2**(exponent - 4), m in 8..16
    e = exponent - 4 + (m == 16).long()
    m = torch.where(m == 16, 8.0, m)
    floor = (m == 0) | (e < MIN_EXPONENT)  # an all-zero or tiny row: the smallest scale
    m, e = torch.where(floor, 8.0, m), torch.where(floor, MIN_EXPONENT, e)
    scale = torch.ldexp(m, e)
    if (scale * Q_MAX).max() > 65504:  # float16's largest value
        raise WeightsFormatError("a weight too large for float16 on the int8 grid")
    q = torch.round(w / scale[:, None]).clamp_(-Q_MAX, Q_MAX)
    return q.to(torch.int8), scale.float()


def dequantised(q: Tensor, scale: Tensor) -> Tensor:
    """The float16 matrix ``q * s`` (exact: every product is a float16 value)."""
    return (q.float() * scale[:, None]).to(torch.float16)
