#!/usr/bin/env python3
"""Decode attention: PyTorch's fused kernel against the explicit matmuls and softmax (issue 15).

`DecodeAttention.attend` computes float32 attention with ``scaled_dot_product_attention``
(grouped-query heads, the rows' length mask). The baseline is the explicit form it replaced (and
that other dtypes keep): the query heads of each kv head as one small matmul against the cached
keys, scale, mask, softmax in float32, a second matmul. Both run in this process, on the same
model, KV pool and tokens, **alternating at every step** (the machine's load moves both alike);
a figure is a whole decode step of the model (all 30 blocks, the vocabulary head), the ratio the
median of the per-pair ratios. The largest |logit difference| between the two is reported too:
the same products summed in another order.

    .venv/bin/python scripts/bench_decode_attention.py   # docs/benchmarks/decode_attention.{md,json}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from supernet.node.llm.kvcache import DecodeAttention, KVPool, PrefillAttention, grouped_attention
from supernet.node.llm.loader import load_model
from torch import Tensor

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks"


def explicit_attend(self: DecodeAttention, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The baseline: `DecodeAttention.attend` with the explicit form for float32 too."""
    d = q.shape[-1]
    keys, values = self.pool.k[layer], self.pool.v[layer]
    keys.view(-1, d).index_copy_(0, self.write_rows, k.reshape(-1, d))
    values.view(-1, d).index_copy_(0, self.write_rows, v.reshape(-1, d))
    b = q.shape[0]
    return grouped_attention(q, keys[:b, :, : self.span], values[:b, :, : self.span], self.bias)


def measure(model: Any, batch: int, steps: int) -> dict[str, Any]:
    """Paired decode steps of ``batch`` rows of unequal lengths (a mask, as a real batch has)."""
    lengths = [40 + 3 * i for i in range(batch)]
    pool = KVPool(model.cfg, batch, 2048, torch.device("cpu"), torch.float32)
    fused = DecodeAttention.attend
    times: dict[str, list[float]] = {"explicit": [], "fused": []}
    logits: dict[str, Tensor] = {}
    with torch.inference_mode():
        gen = torch.Generator().manual_seed(batch)
        for slot, n in enumerate(lengths):
            model(torch.randint(100, 1000, (1, n), generator=gen), None, PrefillAttention(pool, slot))
        pos, tokens = torch.tensor(lengths), torch.randint(100, 1000, (batch, 1), generator=gen)
        try:
            for step in range(steps):
                order = [("explicit", explicit_attend), ("fused", fused)]
                for name, attend in order if step % 2 == 0 else order[::-1]:
                    DecodeAttention.attend = attend  # type: ignore[method-assign]
                    start = time.perf_counter()
                    hidden = model(tokens, pos[:, None], DecodeAttention(pool, pos))
                    logits[name] = model.logits(hidden[:, -1])
                    times[name].append(time.perf_counter() - start)
        finally:
            DecodeAttention.attend = fused  # type: ignore[method-assign]
    ratios = [a / b for a, b in zip(times["explicit"], times["fused"], strict=True)]
    return {
        "batch": batch,
        "explicit_ms": round(1000 * statistics.median(times["explicit"]), 2),
        "fused_ms": round(1000 * statistics.median(times["fused"]), 2),
        "speedup": round(statistics.median(ratios), 3),
        "max_abs_logit_diff": float((logits["explicit"] - logits["fused"]).abs().max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--compute", default="float16-weights", help="served format (float32 activations)")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--steps", type=int, default=30, help="decode steps per variant and batch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model, compute=args.compute).model
    load = os.getloadavg()[0]
    rows = [measure(model, int(b), args.steps) for b in args.batches.split(",")]
    setup = {
        "model": args.model,
        "compute": args.compute,
        "threads": args.threads,
        "steps": args.steps,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
        "command": "scripts/bench_decode_attention.py "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    doc = {"setup": setup, "rows": rows}
    (args.out / "decode_attention.json").write_text(json.dumps(doc, indent=1) + "\n")
    lines = [
        "# Decode attention: fused kernel against explicit matmuls",
        "",
        f"`.venv/bin/python scripts/bench_decode_attention.py` — {args.model} ({args.compute}, float32"
        f" activations), {args.threads} torch threads, torch {torch.__version__}. A row is a whole decode"
        " step of the model (30 blocks and the vocabulary head) for `batch` sequences of unequal lengths"
        f" (40, 43, ... tokens: a length mask), the two attention forms alternating at every step over"
        f" {args.steps} steps each, in one process; speedup = median of the per-pair ratios (baseline /"
        " fused). Load average (1 min) at the start and end:"
        f" {setup['load_average'][0]} and {setup['load_average'][1]} on 2 cores.",
        "",
        "| batch | explicit matmuls + softmax (baseline), ms | fused `scaled_dot_product_attention`, ms |"
        " speedup | max \\|Δlogit\\| |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['explicit_ms']} | {r['fused_ms']} | {r['speedup']}x |"
            f" {r['max_abs_logit_diff']:.1e} |"
        )
    lines += [
        "",
        "The logit differences are summation order (the same products): the order of the packed"
        " against plain float32 matmuls (docs/benchmarks/formats.md), far inside the float32"
        " same-format tolerance validators apply (0.02 nat on a logprob). Other dtypes keep the"
        " explicit form, whose rounding the bf16 tolerances were measured on.",
        "",
    ]
    (args.out / "decode_attention.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
