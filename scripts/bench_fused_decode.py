#!/usr/bin/env python3
"""The fused decode step against the torch path, in one process (issue 15), per weight format.

For each of ``--formats`` (float16-weights and int8-weights), loads the default model twice in
that format: on the torch path (fbgemm projections over the float16 weights,
`DecodeAttention`, ~1,800 ops a step) and fused (`supernet.node.llm.fused`: the step in one C
call). For 1, 4 and 16 sequences (distinct chat prompts prefilled into slots), both decode the
same greedy continuation in blocks of 8 steps (the torch path's, then the fused one's on the
same inputs), so the machine's drifting speed weighs on both sides of each ratio alike: per step
``torch ms / fused ms``, the median over the steps and its interquartile range. Numerics on the
way: the largest |logit difference| between the two, and whether every greedy pick agreed.

Writes docs/benchmarks/fused_decode.json and fused_decode.md.

    .venv/bin/python scripts/bench_fused_decode.py            # --steps 48 --threads 2
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
from supernet.node.llm import catalog, fused
from supernet.node.llm.kvcache import DecodeAttention, KVPool, PrefillAttention
from supernet.node.llm.loader import load_model
from supernet.node.llm.model import Llama

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
TOPICS = (
    "the sea,a cat,mountains,rain,a city,the moon,a robot,bread,winter,a river,music,a garden,fire,a ship,"
    "snow,a forest"
)


def _prompts(tokenizer: Any, n: int) -> list[list[int]]:
    topics = TOPICS.split(",")
    chats = [
        [{"role": "user", "content": f"Write a short story about {topics[i % len(topics)]}."}]
        for i in range(n)
    ]
    return [list(tokenizer.apply_chat_template(c, add_generation_prompt=True)) for c in chats]


def _pool(model: Llama, prompts: list[list[int]], capacity: int) -> KVPool:
    pool = KVPool(model.cfg, len(prompts), capacity, torch.device("cpu"), torch.float32)
    pool.ensure_capacity(capacity)
    for slot, prompt in enumerate(prompts):
        model(torch.tensor([prompt]), None, PrefillAttention(pool, slot))
    return pool


BLOCK = 8
"""Steps one side runs before the other takes over: step-by-step alternation would time each side
right after the other's threads went idle (torch's OpenMP threads spin for a while after each op,
on the same 2 cores), which is not how either runs in a node; blocks keep that to their edges."""


@torch.inference_mode()
def _lockstep(plain: Llama, fast: Llama, prompts: list[list[int]], steps: int) -> dict[str, Any]:
    capacity = max(map(len, prompts)) + steps + 1
    pools = _pool(plain, prompts, capacity), _pool(fast, prompts, capacity)
    decoder = fast.fused_decoder
    assert decoder is not None
    tokens, lengths = [p[-1] for p in prompts], [len(p) - 1 for p in prompts]
    # the prompts' last tokens are decoded first: their keys go in again at the same positions
    torch_ms: list[float] = []
    fused_ms: list[float] = []
    worst, agree = 0.0, True
    for block in range(0, steps, BLOCK):
        inputs = [(tokens, lengths)]
        torch_logits, fused_logits = [], []
        for _ in range(min(BLOCK, steps - block)):  # the torch path's block
            toks, lens = inputs[-1]
            pos = torch.tensor(lens)
            t0 = time.perf_counter()
            hidden = plain(torch.tensor(toks)[:, None], pos[:, None], DecodeAttention(pools[0], pos))[:, 0]
            logits = plain.logits(hidden)
            torch_ms.append((time.perf_counter() - t0) * 1e3)
            torch_logits.append(logits)
            inputs.append((logits.argmax(-1).tolist(), [x + 1 for x in lens]))
        for toks, lens in inputs[:-1]:  # the fused block on the same inputs
            t0 = time.perf_counter()
            _, f_logits = decoder.step(pools[1], toks, lens)
            fused_ms.append((time.perf_counter() - t0) * 1e3)
            fused_logits.append(f_logits)
        for a, b in zip(torch_logits, fused_logits, strict=True):
            worst = max(worst, (a - b).abs().max().item())
            agree &= a.argmax(-1).tolist() == b.argmax(-1).tolist()
        tokens, lengths = inputs[-1]
    warm = BLOCK // 4  # the first steps of the run out (caches, scratch)
    t_ms, f_ms = torch_ms[warm:], fused_ms[warm:]
    ratios = sorted(t / f for t, f in zip(t_ms, f_ms, strict=True))
    q = statistics.quantiles(ratios, n=4)
    return {
        "sequences": len(prompts),
        "torch_ms": round(statistics.median(t_ms), 2),
        "fused_ms": round(statistics.median(f_ms), 2),
        "ratio": round(statistics.median(ratios), 2),
        "ratio_iqr": [round(q[0], 2), round(q[2], 2)],
        "max_abs_dlogit": float(f"{worst:.3g}"),
        "greedy_agree": agree,
    }


def _markdown(result: dict[str, Any], command: str) -> str:
    rows = [
        f"| `{r['format']}` | {r['sequences']} | {r['torch_ms']:.1f} | {r['fused_ms']:.1f} "
        f"| **{r['ratio']:.2f}×** "
        f"[{r['ratio_iqr'][0]:.2f}–{r['ratio_iqr'][1]:.2f}] | {r['max_abs_dlogit']:.1e} | "
        f"{'yes' if r['greedy_agree'] else 'NO'} |"
        for r in result["runs"]
    ]
    return "\n".join(
        [
            "# Fused decode step",
            "",
            f"`{command}` — {result['model']}, torch {result['torch']}, "
            f"{result['threads']} threads, {result['machine']}; {result['steps']} greedy decode steps after "
            "the prefill of distinct ~40-token chat prompts, one per sequence.",
            "",
            "Torch path (fbgemm projections, `DecodeAttention`, ~1,800 ops a step) against the fused C step "
            "(`supernet.node.llm.fused`), the same continuation decoded by both in one process, in "
            "blocks of 8 steps (the torch path's block, then the fused one on the same inputs: each "
            "side runs as in a node, not right after the other's threads); `ratio` = torch ms / fused "
            "ms per step, median over the steps "
            "(interquartile range in brackets). |Δlogit|: the largest difference between the two sides' "
            "logits over all steps (float32 rounding of another summation order).",
            "",
            "| format | sequences | torch ms/step | fused ms/step | ratio | max \\|Δlogit\\| "
            "| greedy picks equal |",
            "|---|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
            f"Load average (1 min) at the start and end: {result['load_average']}.",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=catalog.DEFAULT_MODEL)
    parser.add_argument("--steps", type=int, default=48)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequences", default="1,4,16")
    parser.add_argument("--formats", default="int8-weights,float16-weights")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if not fused.available():
        raise SystemExit(
            "the fused kernels do not build here (no cc, or no AVX2/FMA/F16C): nothing to compare"
        )
    torch.set_num_threads(args.threads)
    start_load = os.getloadavg()[0]
    runs = []
    for fmt in args.formats.split(","):
        plain = load_model(args.model, compute=fmt).model
        loaded = load_model(args.model, compute=fmt, fused=True)
        prompts = _prompts(loaded.tokenizer, 16)
        for n in (int(x) for x in args.sequences.split(",")):
            run = {"format": fmt, **_lockstep(plain, loaded.model, prompts[:n], args.steps)}
            print(json.dumps(run), flush=True)
            runs.append(run)
        del plain, loaded
    result = {
        "model": args.model,
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "steps": args.steps,
        "runs": runs,
        "load_average": f"{start_load:.2f} and {os.getloadavg()[0]:.2f}",
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fused_decode.json").write_text(json.dumps(result, indent=2) + "\n")
    command = ".venv/bin/python scripts/bench_fused_decode.py"
    (args.out / "fused_decode.md").write_text(_markdown(result, command))


if __name__ == "__main__":
    main()
