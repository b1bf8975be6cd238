#!/usr/bin/env python3
"""Where a batch-1 token's time goes in the node's engine today (issue 15): the fused decode step.

Loads the engine as the node does (``LLMEngine.load(model, compute=<CPU default>)``: the fused C
kernels), generates 64 greedy tokens for one chat prompt through the real engine loop (a worker
thread steps, the event loop applies), ``--rounds`` times, and times the parts with wall-clock
wrappers: the whole step (`run_step`, the prefill step included), the fused decode step
(`FusedDecoder.step`), token selection and the chosen token's logprob; the rest of a token's time
is the engine loop (thread hop, events) and the prefill. Writes docs/benchmarks/fused_step_profile.json
and prints the table docs/benchmarks/llm.md quotes.

    .venv/bin/python scripts/profile_fused_step.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm import engine as engine_module
from supernet.node.llm import step as step_module
from supernet.node.llm.loader import default_compute

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "fused_step_profile.json"
NEW_TOKENS = 64


def _timed(fn: Callable[..., Any], into: list[float]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            into.append(time.perf_counter() - t0)

    return wrapper


async def _rounds(
    engine: LLMEngine, prompt: list[int], rounds: int, parts: dict[str, list[float]]
) -> list[dict]:
    await engine.start()
    out = []
    try:
        for _ in range(rounds):
            for v in parts.values():
                v.clear()
            t0 = time.perf_counter()
            params = SamplingParams(max_new_tokens=NEW_TOKENS, stop_token_ids=())
            result = await engine.submit(prompt, params).result()
            wall = time.perf_counter() - t0
            n = len(result.output_ids)
            row = {"tokens_per_s": n / wall, "token_ms": wall * 1e3 / n}
            row |= {f"{k}_ms": sum(v) * 1e3 / n for k, v in parts.items()}
            row["outside_step_ms"] = row["token_ms"] - row["run_step_ms"]
            out.append(row)
    finally:
        await engine.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    compute = default_compute(torch.device("cpu"))
    engine = LLMEngine.load(args.model, compute=compute, max_batch=16)
    if engine.model.fused_decoder is None:
        raise SystemExit("the fused kernels do not build here: nothing to profile")
    assert engine.tokenizer is not None
    chat = [{"role": "user", "content": "Write a short story about the ocean, in a few lines."}]
    prompt = engine.tokenizer.apply_chat_template(chat, add_generation_prompt=True)
    parts: dict[str, list[float]] = {"run_step": [], "fused_step": [], "select": [], "logprob": []}
    engine_module.run_step = _timed(engine_module.run_step, parts["run_step"])  # type: ignore[attr-defined]
    step_module.select = _timed(step_module.select, parts["select"])
    step_module.chosen_logprobs = _timed(step_module.chosen_logprobs, parts["logprob"])
    decoder = engine.model.fused_decoder
    decoder.step = _timed(decoder.step, parts["fused_step"])  # type: ignore[method-assign]
    start_load = os.getloadavg()[0]
    rows = asyncio.run(_rounds(engine, prompt, args.rounds, parts))
    summary = {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}
    result = {
        "model": args.model,
        "compute": compute,
        "threads": args.threads,
        "prompt_tokens": len(prompt),
        "new_tokens": NEW_TOKENS,
        "rounds": rows,
        "median": summary,
        "load_average": f"{start_load:.2f} and {os.getloadavg()[0]:.2f}",
    }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary))
    print("| part | ms per token |\n|---|---:|")
    for key in ("token_ms", "run_step_ms", "fused_step_ms", "select_ms", "logprob_ms", "outside_step_ms"):
        print(f"| {key.removesuffix('_ms')} | {summary[key]:.2f} |")


if __name__ == "__main__":
    main()
