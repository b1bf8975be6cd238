"""Time and profile the validator's verification alone, on honest receipts generated once.

``make bench-verify`` pays minutes of generation per measurement; this script generates the probe
tasks of scripts/bench_verify.py once (``gen``: store directory, manifest entries and the node's
wall time under ``--dir``), then re-verifies them as often as wanted (``time``, ``profile``), so a
change to the validator can be measured in seconds. Ratios are against the saved generation time,
so only compare figures measured in one process (``time`` runs every validator asked for, in
alternating order, in the same process).

    .venv/bin/python scripts/profile_verify.py gen --tasks 48
    .venv/bin/python scripts/profile_verify.py time --repeat 3
    .venv/bin/python scripts/profile_verify.py profile --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import pickle
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from supernet.node.agents.registry import AgentRegistry
from supernet.node.faults import FaultInjector, FaultKind
from supernet.node.kernel.kernel import Kernel
from supernet.node.llm import LLMEngine
from supernet.node.llm.loader import default_compute, load_model
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import serve_in_thread
from supernet.validator import verifier as verifier_module
from supernet.validator.scoring import ModelScorer
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Verifier

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_verify import DOMAIN, ProbeAgent, run_tasks, verify_all

DEFAULT_DIR = Path(tempfile.gettempdir()) / "supernet-profile-verify"


def _agents() -> AgentRegistry:
    agents = AgentRegistry()
    agents.register(ProbeAgent)
    return agents


async def gen(args: argparse.Namespace, out: Path) -> tuple[Any, Any, float]:
    """Generate ``--tasks`` honest probe tasks into the store under ``out`` (as bench_verify's
    honest phase): their manifest entries, receipts and the node's wall seconds."""
    torch.set_num_threads(2)
    # in the format a node on this device serves by default, as bench_verify generates
    loaded = load_model(
        args.model, max_positions=1024, compute=args.compute or default_compute(torch.device("cpu"))
    )
    url, stop_store = serve_in_thread(out / "store")
    store = StoreClient(url)
    specs: dict[FaultKind, float] = {}
    injector = FaultInjector(specs, seed=3)
    engine = LLMEngine(loaded.model, loaded.tokenizer, loaded.model_id, max_batch=8, max_seq_len=1024)
    kernel = Kernel(engine, store, agents=_agents(), faults=injector)
    await kernel.setup()
    try:
        entries, receipts, seconds = await run_tasks(
            kernel, injector, kernel.model_id, args.tasks, args.tokens, args.offset
        )
    finally:
        await kernel.stop()
    await store.aclose()
    stop_store()
    return entries, receipts, seconds


def save(args: argparse.Namespace) -> None:
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    entries, receipts, seconds = asyncio.run(gen(args, out))
    (out / "tasks.pkl").write_bytes(pickle.dumps((entries, receipts)))
    meta = {
        "tasks": args.tasks,
        "tokens": args.tokens,
        "generation_s": seconds,
        "model": args.model,
        "compute": args.compute or default_compute(torch.device("cpu")),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))


def _verifiers(store: StoreClient, model: str, which: list[str]) -> dict[str, Verifier]:
    out = {}
    for name in which:
        if name == "default":
            scorer, arbiter = ModelScorer.load_screened(model)
        else:
            scorer, arbiter = ModelScorer.load(model), None
        out[name] = Verifier(
            store, scorer, RegistryRunner(store), DOMAIN, "0xprof", agents=_agents(), arbiter=arbiter
        )
    return out


async def verify(
    args: argparse.Namespace, src: Path, meta: dict[str, Any], entries: Any, receipts: Any
) -> None:
    """Verify the saved tasks (``time``: ``--repeat`` times per validator; ``profile``: once, under
    cProfile, after a warm-up run)."""
    torch.set_num_threads(2)
    url, stop_store = serve_in_thread(src / "store")
    store = StoreClient(url)
    verifiers = _verifiers(store, meta["model"], args.validator)
    totals: dict[str, list[float]] = {name: [] for name in verifiers}
    result: dict[str, Any] = {}
    try:
        for v in verifiers.values():  # warm-up (oneDNN primitives, prefix cache, imports)
            await verify_all(v, entries[:8], receipts[:8], threads=2)
        if args.command == "profile":
            name, v = next(iter(verifiers.items()))
            prof, scoring, spent = cProfile.Profile(), cProfile.Profile(), [0.0]
            plain = verifier_module.score_calls

            def profiled(scorer: Any, calls: Any) -> Any:  # the worker thread's scoring, profiled apart
                t = time.perf_counter()
                scoring.enable()
                try:
                    return plain(scorer, calls)
                finally:
                    scoring.disable()
                    spent[0] += time.perf_counter() - t

            verifier_module.score_calls = profiled
            prof.enable()
            verdicts, seconds = await verify_all(v, entries, receipts, threads=2)
            prof.disable()
            verifier_module.score_calls = plain
            totals[name].append(seconds)
            result["scoring_s"] = round(spent[0], 3)
            for what, pr in (("event loop", prof), ("scoring thread", scoring)):
                print(f"==== {what}")
                if args.out:
                    pr.dump_stats(f"{args.out}.{what.split()[0]}")
                pstats.Stats(pr).sort_stats(args.sort).print_stats(args.top)
            result["flagged"] = sum(not x.ok for x in verdicts)
        else:
            for r in range(args.repeat):
                names = list(verifiers) if r % 2 == 0 else list(reversed(verifiers))
                for name in names:
                    verdicts, seconds = await verify_all(verifiers[name], entries, receipts, threads=2)
                    totals[name].append(seconds)
                    # honest receipts: any flag is a false positive (or tasks older than the code)
                    result.setdefault("flagged_" + name, sum(not x.ok for x in verdicts))
                    result.setdefault("rechecked_" + name, sum(x.rechecked for x in verdicts))
        for name, ts in totals.items():
            result[name] = {
                "seconds": [round(t, 3) for t in ts],
                "ratio_min": round(min(ts) / meta["generation_s"], 4),
                "ratio_mean": round(sum(ts) / len(ts) / meta["generation_s"], 4),
            }
    finally:
        await store.aclose()
        stop_store()
    print(json.dumps({"generation_s": round(meta["generation_s"], 2), **result}))


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gen", help="generate honest tasks once")
    g.add_argument("--tasks", type=int, default=48, help="probe tasks (2 LLM calls each)")
    g.add_argument("--tokens", type=int, default=48, help="max new tokens per LLM call")
    g.add_argument("--offset", type=int, default=0, help="first request nonce")
    g.add_argument("--model", default="smollm2-135m")
    g.add_argument("--compute", help="the node's served format (default: this device's default)")
    for name in ("time", "profile"):
        s = sub.add_parser(name, help=f"{name} verification of the saved tasks")
        s.add_argument(
            "--validator",
            nargs="+",
            default=["default", "float32"],
            choices=("default", "float32"),
            help="validators to run (profile: the first)",
        )
        s.add_argument("--repeat", type=int, default=2)
        s.add_argument("--top", type=int, default=40)
        s.add_argument("--sort", default="cumulative")
        s.add_argument("--out", help="write the cProfile stats here")
    for s in sub.choices.values():
        s.add_argument("--dir", default=str(DEFAULT_DIR))
    a = p.parse_args()
    if a.command == "gen":
        save(a)
    else:
        d = Path(a.dir)
        tasks = pickle.loads((d / "tasks.pkl").read_bytes())
        asyncio.run(verify(a, d, json.loads((d / "meta.json").read_text()), *tasks))
