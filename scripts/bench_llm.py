#!/usr/bin/env python3
"""LLM engine benchmark: continuous batching vs transformers ``generate``, and the cost of verification.

Measured in one process on the default model (SmolLM2-135M-Instruct, fp32 on CPU), after a warm-up.
Engine runs and baseline requests alternate (``--rounds`` times per concurrency) so both see the same
load on a shared machine; figures are medians.

* **engine_tokens_per_s**: aggregate tokens/s of the engine with 1, 4, 8 and 16 concurrent
  sequences, each generating exactly 64 new tokens (greedy, no stop token), from submission of
  all requests to the last token (prefill included).
* **baseline_tokens_per_s**: transformers' ``LlamaForCausalLM.generate`` on the same weights
  (loaded from the same GGUF), one request at a time, 64 new tokens each, greedy.
* **verify**: the engine generates 128 tokens for one chat prompt alone (``generate_seconds``),
  then scores prompt + those 128 tokens teacher-forced (``score_seconds``, one forward pass);
  ``verify_cost_ratio = score_seconds / generate_seconds``.
* **kv_bytes_per_token**: KV-cache bytes per token of one sequence.

Writes ``docs/benchmarks/llm.json`` and ``docs/benchmarks/llm.md`` (and ``llm.png`` when
matplotlib is installed).

    python scripts/bench_llm.py [--model smollm2-135m] [--baseline-requests 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from supernet.node.llm import LLMEngine, SamplingParams, catalog
from supernet.node.llm.scoring import compare_generation

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
CONCURRENCY = (1, 4, 8, 16)
NEW_TOKENS = 64
VERIFY_TOKENS = 128
# The machine limits for a 135M model on 2 cores: ~150 GFLOP/s fp32 and ~25 GB/s copy.
COMPUTE_LIMIT_TPS = 550
BANDWIDTH_LIMIT_TPS_BATCH1 = 45
GOALS = {"ratio_at_16": 10.0, "verify_cost_ratio": 0.05}
TOPICS = [
    "the ocean",
    "a lighthouse",
    "honey bees",
    "the moon",
    "coffee",
    "a long river",
    "old trains",
    "owls",
    "glaciers",
    "fresh bread",
    "comets",
    "coral reefs",
    "deserts",
    "kites",
    "maple trees",
    "thunderstorms",
]


def _prompts(engine: LLMEngine, n: int) -> list[list[int]]:
    tok = engine.tokenizer
    assert tok is not None
    return [tok.encode(f"Here is a short story about {TOPICS[i % len(TOPICS)]}:") for i in range(n)]


async def _engine_run(engine: LLMEngine, prompts: list[list[int]]) -> tuple[float, int]:
    params = SamplingParams(max_new_tokens=NEW_TOKENS, stop_token_ids=())
    t0 = time.perf_counter()
    handles = [engine.submit(p, params) for p in prompts]
    results = [await h.result() for h in handles]
    return time.perf_counter() - t0, sum(len(r.output_ids) for r in results)


class _Baseline:
    """transformers' ``LlamaForCausalLM`` on the same GGUF; ``generate`` one request at a time."""

    def __init__(self, model_dir: Path) -> None:
        from transformers import AutoModelForCausalLM

        gguf = next(model_dir.glob("*.gguf"))
        self.model = AutoModelForCausalLM.from_pretrained(
            str(model_dir), gguf_file=gguf.name, dtype=torch.float32
        ).eval()
        self.seconds: list[float] = []
        self.outputs: dict[int, list[int]] = {}

    def run(self, index: int, prompt: list[int], new_tokens: int = NEW_TOKENS) -> None:
        kw: dict[str, Any] = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False}
        with torch.inference_mode():
            t0 = time.perf_counter()
            out = self.model.generate(torch.tensor([prompt]), **kw)[0, len(prompt) :].tolist()
            self.seconds.append(time.perf_counter() - t0)
        self.outputs[index] = out

    @property
    def tokens_per_s(self) -> float:
        return NEW_TOKENS / statistics.median(self.seconds)


async def _verify(engine: LLMEngine) -> dict[str, Any]:
    tok = engine.tokenizer
    assert tok is not None
    prompt = tok.apply_chat_template([{"role": "user", "content": "Write a long story about a lighthouse."}])
    params = SamplingParams(
        max_new_tokens=VERIFY_TOKENS, temperature=0.7, top_p=0.9, seed=1, stop_token_ids=()
    )
    t0 = time.perf_counter()
    claimed = await engine.submit(prompt, params).result()
    generate_s = time.perf_counter() - t0
    scores = []
    for _ in range(3):
        t0 = time.perf_counter()
        rescored = engine.score(prompt, claimed.output_ids)
        scores.append(time.perf_counter() - t0)
    verdict = compare_generation(claimed, engine.score(prompt, claimed.output_ids, params))
    return {
        "prompt_tokens": len(prompt),
        "generated_tokens": len(claimed.output_ids),
        "generate_seconds": generate_s,
        "score_seconds": statistics.median(scores),
        "verdict_ok": verdict.ok,
        "max_logprob_error": verdict.max_logprob_error,
        "fingerprints": len(rescored.fingerprints),
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    model_dir = catalog.pull(args.model)
    engine = LLMEngine.load(model_dir, max_batch=max(CONCURRENCY), max_seq_len=1024)
    baseline = _Baseline(model_dir)
    prompts = _prompts(engine, max(CONCURRENCY))
    await engine.start()
    try:
        await _engine_run(engine, prompts[:2])  # warm-ups
        baseline.run(-1, prompts[0], new_tokens=4)
        baseline.seconds.clear()
        # Engine runs and baseline requests alternate, so both see the same (shared) machine.
        runs: dict[str, list[float]] = {str(c): [] for c in CONCURRENCY}
        for r in range(args.rounds):
            for c in CONCURRENCY:
                seconds, tokens = await _engine_run(engine, prompts[:c])
                runs[str(c)].append(tokens / seconds)
                print(
                    f"round {r}: engine c={c:>2}: {tokens / seconds:7.1f} tok/s ({seconds:.1f} s)", flush=True
                )
                i = len(baseline.seconds) % args.baseline_requests
                baseline.run(i, prompts[i])
                print(f"round {r}: baseline: {NEW_TOKENS / baseline.seconds[-1]:.1f} tok/s", flush=True)
        baseline_tps = baseline.tokens_per_s
        verify = await _verify(engine)
        print(f"verify: score {verify['score_seconds']:.2f} s vs generate {verify['generate_seconds']:.2f} s")
        greedy = SamplingParams(max_new_tokens=NEW_TOKENS, stop_token_ids=())
        ours = {
            i: (await engine.submit(prompts[i], greedy).result()).output_ids
            for i in baseline.outputs
            if i >= 0
        }
    finally:
        await engine.stop()
    verify["ratio_vs_baseline_generate"] = verify["score_seconds"] / (VERIFY_TOKENS / baseline_tps)
    per_c = {c: {"runs_tokens_per_s": v, "tokens_per_s": statistics.median(v)} for c, v in runs.items()}
    ref_outs = [baseline.outputs[i] for i in ours]
    same = sum(list(a) == b for a, b in zip(ours.values(), ref_outs, strict=True))
    engine_tps = {c: round(v["tokens_per_s"], 2) for c, v in per_c.items()}
    return {
        "model": args.model,
        "model_id": engine.model_id,
        "device": str(engine.device),
        "dtype": str(engine.dtype).removeprefix("torch."),
        "engine_tokens_per_s": engine_tps,
        "baseline_tokens_per_s": round(baseline_tps, 2),
        "ratio_at_16": round(per_c["16"]["tokens_per_s"] / baseline_tps, 2),
        "score_seconds": round(verify["score_seconds"], 4),
        "generate_seconds": round(verify["generate_seconds"], 3),
        "verify_cost_ratio": round(verify["score_seconds"] / verify["generate_seconds"], 4),
        "kv_bytes_per_token": engine.kv_bytes_per_token,
        "limits": {
            "compute_tokens_per_s": COMPUTE_LIMIT_TPS,
            "bandwidth_tokens_per_s_batch1": BANDWIDTH_LIMIT_TPS_BATCH1,
        },
        "goals": GOALS,
        "details": {
            "new_tokens_per_sequence": NEW_TOKENS,
            "engine_runs": per_c,
            "verify": verify,
            "rounds": args.rounds,
            "baseline_requests": len(baseline.seconds),
            "baseline_seconds": baseline.seconds,
            "baseline_greedy_outputs_identical": f"{same}/{len(ours)}",
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}",
        },
    }


def _markdown(r: dict[str, Any]) -> str:
    v, d, base = r["details"]["verify"], r["details"], r["baseline_tokens_per_s"]
    met = {
        "ratio_at_16": r["ratio_at_16"] >= GOALS["ratio_at_16"],
        "verify_cost_ratio": r["verify_cost_ratio"] <= GOALS["verify_cost_ratio"],
    }
    lines = [
        "# LLM engine benchmark",
        "",
        f"`make bench-llm` (`scripts/bench_llm.py`) on {r['model']} (`{r['model_id'][:18]}…`),",
        f"{r['device']}, {r['dtype']}; {d['machine']}.",
        f"Every sequence generates exactly {d['new_tokens_per_sequence']} new tokens (greedy, no stop",
        "token); engine figures are aggregate tokens/s from submitting all requests to the last token,",
        f"prefill included, median of {d['rounds']} rounds; each engine run is followed by one baseline",
        "request, so both see the same load; the baseline figure is the median over those requests.",
        "",
        "| run | tokens/s | vs baseline | of compute limit |",
        "|---|---:|---:|---:|",
        f"| baseline: transformers `generate`, one request at a time | {base:.1f} | 1.0× | "
        f"{base / COMPUTE_LIMIT_TPS:.0%} |",
    ]
    for c, tps in r["engine_tokens_per_s"].items():
        lines.append(
            f"| engine, {c} concurrent | {tps:.1f} | {tps / base:.1f}× | {tps / COMPUTE_LIMIT_TPS:.0%} |"
        )
    lines += [
        "",
        "Machine limits for a 135M model (the issue's figures: ~150 GFLOP/s fp32 on two cores, ~25 GB/s",
        f"memory copy): **compute ≈ {COMPUTE_LIMIT_TPS} tokens/s** at any batch size, **bandwidth ≈",
        f"{BANDWIDTH_LIMIT_TPS_BATCH1} tokens/s at batch 1** (all weights read once per step).",
        "",
        f"- **ratio_at_16 = {r['ratio_at_16']}×** (goal ≥ {GOALS['ratio_at_16']}: "
        f"{'met' if met['ratio_at_16'] else 'not met'}).",
        f"- **verify_cost_ratio = {r['verify_cost_ratio']}** (goal ≤ {GOALS['verify_cost_ratio']}: "
        f"{'met' if met['verify_cost_ratio'] else 'not met'}): one teacher-forced pass over a",
        f"  {v['prompt_tokens']}-token prompt + {v['generated_tokens']} generated tokens took "
        f"{r['score_seconds']:.3f} s; generating those tokens",
        f"  (the engine, alone, batch 1) took {r['generate_seconds']:.2f} s. Against generation at the",
        f"  baseline's speed the ratio is {v['ratio_vs_baseline_generate']:.3f}. Note the tension: scoring",
        "  is compute-bound and batch-1 decoding bandwidth-bound, so with both at the machine limits the",
        "  ratio would be (2 FLOP per weight / 150 GFLOP/s) / (4 bytes per fp32 weight / 25 GB/s) ≈ 0.08;",
        "  a faster batch-1 decoder raises it.",
        f"- The re-check of that sampled generation passed `compare_generation`: {v['verdict_ok']}",
        f"  (largest logprob difference {v['max_logprob_error']:.1e}).",
        f"- **kv_bytes_per_token = {r['kv_bytes_per_token']}** (30 layers × 3 kv heads × 64 × (k, v)",
        "  × 4 bytes).",
        "- Greedy outputs of the engine and the baseline identical for "
        f"{d['baseline_greedy_outputs_identical']} prompts.",
        "",
        "The machine is shared with other work while this runs, so absolute numbers move between runs;",
        "the ratios are measured in one process, one run right after the other.",
        "",
    ]
    return "\n".join(lines)


def _plot(r: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    cs = [int(c) for c in r["engine_tokens_per_s"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(cs, list(r["engine_tokens_per_s"].values()), "o-", label="engine (continuous batching)")
    ax.axhline(r["baseline_tokens_per_s"], color="gray", ls="--", label="transformers generate, 1 at a time")
    ax.axhline(COMPUTE_LIMIT_TPS, color="red", ls=":", label="compute limit")
    ax.set(
        xlabel="concurrent sequences",
        ylabel="aggregate tokens/s",
        xticks=cs,
        title="SmolLM2-135M, 2 CPU cores",
    )
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "llm.png", dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=catalog.DEFAULT_MODEL)
    parser.add_argument("--baseline-requests", type=int, default=4, help="Distinct baseline prompts.")
    parser.add_argument("--rounds", type=int, default=2, help="Engine/baseline alternations per concurrency.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=OUT, help="Where llm.json / llm.md / llm.png go.")
    parser.add_argument("--smoke", action="store_true", help="Tiny run that only checks the script works.")
    args = parser.parse_args()
    if args.smoke:
        global NEW_TOKENS, VERIFY_TOKENS
        NEW_TOKENS, VERIFY_TOKENS, args.baseline_requests, args.rounds = 4, 8, 1, 1
    result = asyncio.run(_main(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "llm.md").write_text(_markdown(result))
    _plot(result, args.out)
    print(
        json.dumps(
            {
                k: result[k]
                for k in ("engine_tokens_per_s", "baseline_tokens_per_s", "ratio_at_16", "verify_cost_ratio")
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
