#!/usr/bin/env python3
"""Probe: how fast is each weight-only kernel torch offers on this CPU, over a whole model's products?

One decode step of SmolLM2-135M multiplies its activations by 121 weight matrices (per block q/k/v
576->960, o 576->576, gate/up 576->3072, down 1536->576, and the 576->49,152 vocabulary head),
540 MB in float32: too much for any cache, so the kernels are timed over all of them in a row, as
a step reads them (random weights of those shapes; speed does not depend on the values). Formats:
float32 (``F.linear``), float16 weight-only (fbgemm ``linear_dynamic_fp16``, the CPU engine's
default), int8 weight-only per channel (``aten._weight_int8pack_mm``), int4 weight-only in groups
of 32 (``aten._weight_int4pack_mm_for_cpu``) and bfloat16 weights and activations (oneDNN). Prints
the median of 5 passes at 1 and 16 rows, and each format's ratio to float16 weight-only measured in
the same process (docs/benchmarks/formats.md, issue 15).

    .venv/bin/python scripts/probe_weight_kernels.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

SHAPES = [(960, 576), (576, 576), (3072, 576), (576, 1536)] * 30 + [(49152, 576)]
GROUP = 32

Product = Callable[[torch.Tensor], torch.Tensor]


def _int8_mm(x: torch.Tensor, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._weight_int8pack_mm(x, q, scale)


def _int4_mm(x: torch.Tensor, packed: torch.Tensor, scales_zeros: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, GROUP, scales_zeros)


def _bf16_mm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.linear(x.to(torch.bfloat16), w)


def _fp32(weights: list[torch.Tensor]) -> list[Product]:
    return [partial(F.linear, weight=w) for w in weights]


def _fp16_weights(weights: list[torch.Tensor]) -> list[Product]:
    packs = [torch.ops.quantized.linear_prepack_fp16(w, None) for w in weights]
    return [partial(torch.ops.quantized.linear_dynamic_fp16, W_prepack=p) for p in packs]


def _int8_weights(weights: list[torch.Tensor]) -> list[Product]:
    out: list[Product] = []
    for w in weights:
        scale = w.abs().amax(1) / 127
        q = torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8)
        out.append(partial(_int8_mm, q=q, scale=scale))
    return out


def _int4_weights(weights: list[torch.Tensor]) -> list[Product]:
    out: list[Product] = []
    for w in weights:
        rows, cols = w.shape
        groups = w.reshape(rows, cols // GROUP, GROUP)
        low, high = groups.amin(-1), groups.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-6)
        q = torch.round((groups - low[..., None]) / scale[..., None]).clamp(0, 15).to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.reshape(rows, cols), 1)
        scales_zeros = torch.stack([scale, low + 8 * scale], -1).transpose(0, 1).contiguous()
        out.append(partial(_int4_mm, packed=packed, scales_zeros=scales_zeros))
    return out


def _bf16(weights: list[torch.Tensor]) -> list[Product]:
    halves = [w.to(torch.bfloat16) for w in weights]
    return [partial(_bf16_mm, w=w) for w in halves]


FORMATS: dict[str, Callable[[list[torch.Tensor]], list[Product]]] = {
    "float32": _fp32,
    "float16-weights (fbgemm)": _fp16_weights,
    "int8 weight-only (_weight_int8pack_mm)": _int8_weights,
    "int4 weight-only, groups of 32 (_weight_int4pack_mm_for_cpu)": _int4_weights,
    "bfloat16 (oneDNN)": _bf16,
}


def _pass_ms(products: list[Product], rows: int, repeats: int = 5) -> float:
    inputs = {cols: torch.randn(rows, cols) for cols in (576, 1536)}
    for f, (_, cols) in zip(products, SHAPES, strict=True):  # warm-up (packing, first-call set-up)
        f(inputs[cols])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for f, (_, cols) in zip(products, SHAPES, strict=True):
            f(inputs[cols])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    torch.manual_seed(0)
    weights = [torch.randn(o, i) * 0.02 for o, i in SHAPES]
    capability, threads = torch.backends.cpu.get_cpu_capability(), torch.get_num_threads()
    print(f"torch {torch.__version__}, {capability}, {threads} threads")
    results = {
        name: {rows: _pass_ms(build(weights), rows) for rows in (1, 16)} for name, build in FORMATS.items()
    }
    base = results["float16-weights (fbgemm)"]
    print("| format | 1 row, ms | vs fp16-weights | 16 rows, ms | vs fp16-weights |")
    print("|---|---:|---:|---:|---:|")
    for name, ms in results.items():
        print(f"| {name} | {ms[1]:.1f} | {ms[1] / base[1]:.2f}x | {ms[16]:.1f} | {ms[16] / base[16]:.2f}x |")


if __name__ == "__main__":
    main()
