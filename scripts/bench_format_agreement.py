"""How far each served weight format agrees with float32, on the real model and loader.

For every format a node can serve on a CPU (``float16-weights``, ``int8-weights``) against
``float32``:

* teacher-forced: the logits at the positions of float32's greedy continuations of the benchmark's
  chat prompts and of 512 tokens of prose (the README), as a validator scores them: top-1
  agreement, |Δlogprob| of the forced token (max, p99), max |Δlogit|;
* free-running: each format's own greedy continuations (the engine's decode path, fused where it
  builds) against float32's: identical outputs, the first token, the median common prefix.

Writes docs/benchmarks/format_agreement.{json,md}::

    .venv/bin/python scripts/bench_format_agreement.py [--steps 48]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm.loader import load_model
from supernet.node.llm.model import Llama
from supernet.sdk.models import WEIGHT_FORMATS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from probe_weight_formats import QUESTIONS, compare, long_text

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "benchmarks"
MODEL = "smollm2-135m"
FORMATS = WEIGHT_FORMATS


def _logits(model: Llama, tokens: list[int], start: int) -> torch.Tensor:
    """Teacher-forced logits predicting ``tokens[start + 1:]`` (one causal pass)."""
    with torch.inference_mode():
        hidden = model(torch.tensor([tokens]))[0, start:-1]
        return model.logits(hidden)


def _generate(fmt: str, prompts: list[list[int]], steps: int) -> list[list[int]]:
    """Greedy continuations from the node's engine in ``fmt`` (its decode path, all prompts in one batch)."""

    async def run() -> list[list[int]]:
        engine = LLMEngine.load(MODEL, compute=fmt, max_batch=len(prompts), max_seq_len=1024)
        await engine.start()
        try:
            params = SamplingParams(max_new_tokens=steps, stop_token_ids=())  # no stop: same lengths
            done = await asyncio.gather(*(engine.submit(p, params).result() for p in prompts))
        finally:
            await engine.stop()
        return [list(r.output_ids) for r in done]

    return asyncio.run(run())


def _prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def measure(steps: int) -> dict[str, Any]:
    loaded = load_model(MODEL, compute="float32")
    ref, tok = loaded.model, loaded.tokenizer
    assert tok is not None
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    outputs = {"float32": _generate("float32", prompts, steps)}
    sequences = [(p, p + o) for p, o in zip(prompts, outputs["float32"], strict=True)]
    prose = long_text(tok, 512)
    sequences.append((prose[:1], prose))
    ref_logits = [_logits(ref, full, len(p) - 1) for p, full in sequences]
    forced = torch.cat([torch.tensor(full[len(p) :]) for p, full in sequences])
    ref_all = torch.cat(ref_logits)
    del ref
    result: dict[str, Any] = {"model": MODEL, "steps": steps, "prompts": len(prompts), "formats": {}}
    for fmt in FORMATS:
        model = load_model(MODEL, compute=fmt).model
        ours = torch.cat([_logits(model, full, len(p) - 1) for p, full in sequences])
        del model
        outputs[fmt] = _generate(fmt, prompts, steps)
        pairs = list(zip(outputs[fmt], outputs["float32"], strict=True))
        result["formats"][fmt] = {
            "teacher_forced": {k: round(v, 6) for k, v in compare(ours, ref_all, forced).items()},
            "greedy": {
                "identical": sum(a == b for a, b in pairs),
                "first_token_same": sum(a[0] == b[0] for a, b in pairs),
                "median_common_prefix": statistics.median(_prefix(a, b) for a, b in pairs),
                "of": len(pairs),
            },
        }
        print(fmt, json.dumps(result["formats"][fmt]), flush=True)
    return result


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Weight formats against float32",
        "",
        "`.venv/bin/python scripts/bench_format_agreement.py` (the real model and loader; "
        f"{r['model']}, {r['prompts']} chat prompts, {r['steps']} greedy tokens each, plus 512 tokens "
        "of prose). Teacher-forced: each format's logits at float32's greedy positions (how a "
        "validator scores), against float32's. Greedy: each format's own continuations (the "
        "node's engine, fused kernels where they build) against float32's.",
        "",
        "| format | positions | top-1 agree | max \\|Δlogprob\\| | p99 \\|Δlogprob\\| | max \\|Δlogit\\| "
        "| greedy identical | first token same | median common prefix |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for fmt, v in r["formats"].items():
        t, g = v["teacher_forced"], v["greedy"]
        lines.append(
            f"| `{fmt}` | {t['positions']} | {t['top1_agree']:.4f} | {t['max_dlogprob']:.3g} "
            f"| {t['p99_dlogprob']:.3g} | {t['max_dlogit']:.3g} | {g['identical']}/{g['of']} "
            f"| {g['first_token_same']}/{g['of']} | {g['median_common_prefix']} of {r['steps']} |"
        )
    lines += [
        "",
        "A format's verification does not depend on these numbers: each is re-scored in its own "
        "format (docs/validator.md), where decode and re-score agree to ~1e-4. They say how much "
        "of float32's answer a user gets.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=48, help="greedy tokens per prompt")
    args = ap.parse_args()
    r = measure(args.steps)
    (OUT / "format_agreement.json").write_text(json.dumps(r, indent=2) + "\n")
    (OUT / "format_agreement.md").write_text(render(r))
    print(render(r))


if __name__ == "__main__":
    main()
