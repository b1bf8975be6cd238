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
same ``q`` and ``s``), so it is computed where every step is exact or correctly rounded and does
not depend on the machine: the scales in float64 from each row's float16 maximum (a value per row),
the quotients ``W / s`` in float32 (IEEE division, correctly rounded), which rounds them to the
same integers as the exact quotients: with ``W = A * 2**a`` (``|A| < 2**11``) and ``s = m * 2**e``,
``W / s = (A / m) * 2**(a - e)`` is a half-integer exactly (float32 then holds it) or lies at least
``min(2**(a - e), 1/2) / 15`` from every half-integer, more than float32's error, which is below
``|W / s| * 2**-24`` (quotients beyond 128 clamp to 127 either way). tests/unit/test_llm_int8.py
checks every float16 value against every scale, exhaustively. (In float64 the grid took most of a
node's start-up: ~7 s of loading the catalog model, ~2 s now.)

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
        q[start : start + len(block)], scales[start : start + len(block)] = _quantised_block(block)
    return q.to(weight.device), scales.to(weight.device)


ROWS_AT_ONCE = 2048
"""Rows quantised (and checked finite) together: the temporaries of a 49,152-row head at once would
peak at hundreds of MB beside the model, and even the finiteness check of the whole float16 table
made ~140 MB of temporaries (the load's peak)."""


def row_scales(w: Tensor) -> Tensor:
    """The float64 scale of each float16 row of ``w`` (exact values ``m * 2**e``).

    Raises:
        WeightsFormatError: a row whose largest value the grid cannot hold in float16.
    """
    amax = w.abs().amax(dim=1).double()  # a float16 value: exact
    mantissa, exponent = torch.frexp(amax / Q_MAX)  # amax / 127 = mantissa * 2**exponent
    m = torch.ceil(mantissa * 16)  # the scale m * 2**(exponent - 4), m in 8..16
    e = exponent - 4 + (m == 16).long()
    m = torch.where(m == 16, 8.0, m)
    floor = (m == 0) | (e < MIN_EXPONENT)  # an all-zero or tiny row: the smallest scale
    m, e = torch.where(floor, 8.0, m), torch.where(floor, MIN_EXPONENT, e)
    scale = torch.ldexp(m, e)
    if (scale * Q_MAX).max() > 65504:  # float16's largest value
        raise WeightsFormatError("a weight too large for float16 on the int8 grid")
    return scale


def quotients(w: Tensor, scale: Tensor) -> Tensor:
    """``round(w / s)`` (half to even) of float16 rows ``w`` and their float32 scales, clamped to
    [-127, 127]: computed in float32, the same integers as the exact quotients' (see the module)."""
    return torch.round(w.float() / scale[:, None]).clamp_(-Q_MAX, Q_MAX)


def _quantised_block(w: Tensor) -> tuple[Tensor, Tensor]:
    scale = row_scales(w).float()  # exact: a 4-bit mantissa, an exponent float32 holds
    return quotients(w, scale).to(torch.int8), scale


def dequantised(q: Tensor, scale: Tensor) -> Tensor:
    """The float16 matrix ``q * s`` (exact: every product is a float16 value)."""
    return (q.float() * scale[:, None]).to(torch.float16)
