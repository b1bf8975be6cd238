"""Same-format checks, and a node that sells one format while computing a cheaper one.

A float32 node and a float16-weights node are each re-scored by a validator in their own format,
where decode and re-score should agree to ~1e-5: the per-call deviations are measured over
``--tasks`` probe tasks (2 LLM calls each) and must stay far inside the same-format tolerance
(`Tolerance.for_pair(f, f)`): 0 false positives.

The substitution: a node computes in float16-weights (half the bytes read per token) but serves
the float32 id and writes ``float32`` into its traces. Its logprobs then differ from float32 by the
weights' rounding (up to ~0.01) and its fingerprints by ~1e-3 relative, both inside the former
float32 bounds (0.02 / 1 %): it was caught only where a near-tie flipped a greedy token. The
benchmark counts how many of its calls each tolerance flags.

Writes docs/benchmarks/exact_pairs.json and docs/benchmarks/exact_pairs.md.
Reproduce: ``.venv/bin/python scripts/bench_exact_pairs.py`` (about 10 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_verify as bv
from supernet.node.agents.registry import AgentRegistry
from supernet.node.faults import FaultInjector
from supernet.node.kernel.kernel import Kernel
from supernet.node.llm import LLMEngine
from supernet.node.llm.loader import load_model
from supernet.node.llm.scoring import Tolerance
from supernet.sdk.models import served_model_id
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import serve_in_thread
from supernet.validator.scoring import ModelScorer
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.trace_view import parse_trace
from supernet.validator.verifier import Verifier, score_calls

FP16W = "float16-weights"
# (what the node computes, what it claims and the validator scores in)
RUNS = [("float32", "float32"), (FP16W, FP16W), (FP16W, "float32")]
FORMER = Tolerance(
    logprob_atol=0.02, hidden_rtol=0.01, hidden_atol=0.01, selection_margin=0.01, sample_margin=0.01
)


def per_call(scorer: ModelScorer, traces: list[dict[str, Any]]) -> list[dict[str, float]]:
    """For every LLM call: the largest and mean |claimed - rescored| logprob, and the largest
    relative fingerprint deviation over the dimensions both sides report."""
    calls = [c for t in traces for c in parse_trace(t).llm_calls if c.output_ids]
    out = []
    for call, s in zip(calls, score_calls(scorer, calls), strict=True):
        d = [abs(a - b) for a, b in zip(call.logprobs, s.logprobs, strict=False)]
        refs = {f.index: dict(zip(f.indices, f.values, strict=True)) for f in s.fingerprints}
        rel = [0.0]
        for fp in call.fingerprints or ():
            ref = refs.get(fp["index"], {})
            rel += [
                abs(ref[k] - v) / (abs(v) + 1e-6)
                for k, v in zip(fp["indices"], fp["values"], strict=True)
                if k in ref
            ]
        out.append(
            {
                "logprob_max": max(d, default=0.0),
                "logprob_mean": statistics.fmean(d) if d else 0.0,
                "fingerprint_max": max(rel),
            }
        )
    return out


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    def q(key: str, p: float) -> float:
        vals = sorted(r[key] for r in rows)
        return vals[min(len(vals) - 1, int(p * len(vals)))]

    return {
        f"{k}_{name}": float(f"{q(k, p):.3g}")
        for k in ("logprob_max", "logprob_mean", "fingerprint_max")
        for name, p in (("min", 0.0), ("median", 0.5), ("max", 1.0))
    }


async def run(args: argparse.Namespace, store: StoreClient, computes: str, claims: str) -> dict[str, Any]:
    # the node as its engine loads it (the fused kernels where they build), the validator as its
    # scorer does (fbgemm): the pair that meets in the network
    node = load_model(args.model, compute=computes, max_positions=1024, fused=True)
    agents = AgentRegistry()
    agents.register(bv.ProbeAgent)
    injector = FaultInjector({}, seed=11)
    engine = LLMEngine(node.model, node.tokenizer, node.model_id, max_batch=8, max_seq_len=1024)
    if claims != computes:  # the cheat: the dearer format's id and trace record, the cheaper work
        engine.compute = claims
        engine.model_id = served_model_id(node.model_id, claims)
    kernel = Kernel(engine, store, agents=agents, faults=injector)
    val = load_model(args.model, compute=claims, max_positions=1024)
    scorer = ModelScorer.from_loaded(val)
    out: dict[str, Any] = {"computes": computes, "claims": claims, "flagged": {}}
    await kernel.setup()
    try:
        start = time.perf_counter()
        entries, receipts, _ = await bv.run_tasks(
            kernel, injector, kernel.model_id, args.tasks, args.tokens, 0
        )
        traces = [await store.get_dag(e.trace_cid) for e in entries]
        assert all(t["engine"]["dtype"] == claims for t in traces)
        rows = per_call(scorer, traces)
        out["calls"] = len(rows)
        out["deviation"] = summary(rows)
        for name, tol in (("former", FORMER), ("current", Tolerance.for_pair(claims, claims))):
            verifier = Verifier(
                store, scorer, RegistryRunner(store), bv.DOMAIN, "0xbench", agents=agents, tolerance=tol
            )
            verdicts, _ = await bv.verify_all(verifier, entries, receipts)
            out["flagged"][name] = {
                "tolerance": tol.__dict__,
                "receipts_flagged": sum(not v.ok for v in verdicts),
                "receipts": len(verdicts),
                "calls_flagged": sum(len({f.call for f in v.findings}) for v in verdicts),
            }
        out["seconds"] = round(time.perf_counter() - start, 1)
    finally:
        await kernel.stop()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(2)
    tmp = Path(tempfile.mkdtemp(prefix="bench-exact-"))
    url, stop_store = serve_in_thread(tmp / "store")
    store = StoreClient(url)
    result: dict[str, Any] = {"runs": []}
    try:
        for computes, claims in RUNS:
            r = await run(args, store, computes, claims)
            print(json.dumps(r), flush=True)
            result["runs"].append(r)
    finally:
        await store.aclose()
        stop_store()
    result["setup"] = {
        "model": args.model,
        "tasks": args.tasks,
        "max_new_tokens": args.tokens,
        "torch": torch.__version__,
    }
    return result


def _tolerance_cell(t: dict[str, float]) -> str:
    rule = (t["logprob_atol"], t["hidden_rtol"], t["hidden_atol"], t["selection_margin"], t["sample_margin"])
    return "{:g} / {:g} + {:g} / {:g} / {:g}".format(*rule)


def _substitution_text(result: dict[str, Any], r: dict[str, Any]) -> str:
    honest = [h["deviation"] for h in result["runs"] if h["computes"] == h["claims"]]
    d = r["deviation"]
    lp = d["logprob_max_min"] / max(h["logprob_max_max"] for h in honest)
    fp = d["fingerprint_max_min"] / max(h["fingerprint_max_max"] for h in honest)
    now, before = r["flagged"]["current"]["calls_flagged"], r["flagged"]["former"]["calls_flagged"]
    return (
        f"The `{r['computes']}` node claiming `{r['claims']}`: {now} of its {r['calls']} calls are flagged "
        f"under the current bounds, {before} under the former. Its smallest per-call deviations sit above "
        f"the honest runs' largest by {lp:.0f}x in logprobs and {fp:.0f}x in fingerprints; the bounds sit "
        "between the two."
    )


def write(result: dict[str, Any]) -> None:
    bv.OUT.mkdir(parents=True, exist_ok=True)
    (bv.OUT / "exact_pairs.json").write_text(json.dumps(result, indent=2) + "\n")
    setup = result["setup"]
    lines = [
        "# Same-format checks, and one format sold as another",
        "",
        "`.venv/bin/python scripts/bench_exact_pairs.py` — SmolLM2-135M on this CPU, torch "
        f"{setup['torch']}, {setup['tasks']} probe tasks per run (2 LLM calls each, one greedy and one "
        f"sampled, up to {setup['max_new_tokens']} new tokens), re-scored by a validator in the format the "
        "node claims. Deviations are per call: the largest |claimed − re-scored| logprob over the call's "
        "tokens, and the largest relative fingerprint difference over the dimensions both sides report; "
        "min / median / max over the calls.",
        "",
        "| node computes | node claims (id and trace) | calls "
        "| max \\|Δlogprob\\| per call (min / median / max) "
        "| max fingerprint rel. dev. per call (min / median / max) "
        "| receipts flagged, former bounds | receipts flagged, current bounds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        d, f = r["deviation"], r["flagged"]
        lines.append(
            f"| `{r['computes']}` | `{r['claims']}` | {r['calls']} | {d['logprob_max_min']:.3g} / "
            f"{d['logprob_max_median']:.3g} / {d['logprob_max_max']:.3g} | {d['fingerprint_max_min']:.3g} / "
            f"{d['fingerprint_max_median']:.3g} / {d['fingerprint_max_max']:.3g} | "
            f"{f['former']['receipts_flagged']} / {f['former']['receipts']} | "
            f"{f['current']['receipts_flagged']} / {f['current']['receipts']} |"
        )
    former, current = result["runs"][0]["flagged"]["former"], result["runs"][0]["flagged"]["current"]
    lines += [
        "",
        "Bounds (logprob / fingerprint rtol + atol / greedy margin / sampled margin): former "
        f"{_tolerance_cell(former['tolerance'])}; current (`Tolerance()`, what `Tolerance.for_pair` "
        f"gives a format against itself) {_tolerance_cell(current['tolerance'])}.",
        "",
    ]
    lines += [
        x for r in result["runs"] if r["computes"] != r["claims"] for x in (_substitution_text(result, r), "")
    ]
    (bv.OUT / "exact_pairs.md").write_text("\n".join(lines))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--tasks", type=int, default=250, help="2 LLM calls each, per run")
    p.add_argument("--tokens", type=int, default=32)
    write(asyncio.run(main(p.parse_args())))
