"""Kernel benchmark: N agents at once through the kernel vs. one after another on transformers.

Each agent makes three LLM calls and two tool calls (a plan-calculate-summarise chain). The
kernel runs all N concurrently: their LLM calls share the engine's continuous batch under the
fair-share scheduler. The baseline runs the *same agent code* one task after another, each
LLM call a plain ``transformers`` ``generate`` (greedy, same prompts and token budget) and each
tool call a direct call: the setting AIOS compares against. Both run in this one process on
the same machine, one after the other, after a warm-up.

Fee priority, in the same process: the same agents again through a kernel that runs at most
``--fee-slots`` LLM calls at a time (so they queue), half of them paying ``HIGH_FEE`` and half
``LOW_FEE`` (alternating), under the fair-share policy, which weighs each user's share of the
model by its task's fee; ``high_fee_p95_s`` and ``low_fee_p95_s`` are the two halves' p95
latencies.

Writes ``docs/benchmarks/kernel.json`` (keys ``agents``, ``kernel_tasks_per_min``,
``baseline_tasks_per_min``, ``ratio``, ``p50_latency_s``, ``p95_latency_s``, ``high_fee_p95_s``,
``low_fee_p95_s`` and details) and ``docs/benchmarks/kernel.md``.

    python scripts/bench_kernel.py [--agents 16] [--max-new-tokens 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import torch
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext, LLMClient, MemoryClient, StorageClient, ToolsClient
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.builtin_tools import builtin_tools
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.syscalls import ChatResult, LLMChat, TaskSpec, ToolCall
from supernet.node.kernel.tools import ToolRegistry
from supernet.node.llm import LLMEngine, catalog
from supernet.node.llm.loader import default_compute
from supernet.sdk.store import StoreClient
from supernet.sdk.store.embedded import EmbeddedStore, create_app

ENGINE_COMPUTE = default_compute(torch.device("cpu"))  # the kernel's engine, as a CPU node loads it

OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
HIGH_FEE, LOW_FEE = 4, 1  # relative fees of the fee-priority run (only their ratio matters)
TOPICS = [
    "rain",
    "volcanoes",
    "bees",
    "the moon",
    "coffee",
    "rivers",
    "trains",
    "owls",
    "glaciers",
    "bread",
    "comets",
    "coral",
    "deserts",
    "kites",
    "maple trees",
    "lighthouses",
]


class BenchAgent(Agent):
    """Three LLM calls and two tool calls: fact, arithmetic, summary, word count, title."""

    agent_id = "bench"
    max_new_tokens = 24

    async def run(self, ctx: AgentContext, input: Any) -> str:
        topic, n = input["topic"], int(input["n"])
        budget = {"max_new_tokens": int(input.get("max_new_tokens", self.max_new_tokens))}
        fact = await ctx.llm.chat([{"role": "user", "content": f"Tell me one fact about {topic}."}], **budget)
        product = await ctx.tools.call("calculator", {"expression": f"{n} * {n + 7} + 3"})
        summary = await ctx.llm.chat(
            [{"role": "user", "content": f"Summarise in one sentence: {fact.text} Also mention {product}."}],
            **budget,
        )
        words = await ctx.tools.call("text", {"text": summary.text, "op": "words"})
        title = await ctx.llm.chat(
            [{"role": "user", "content": f"Write a short title for this {words}-word note: {summary.text}"}],
            **budget,
        )
        return title.text


class TransformersBaseline:
    """The agent's syscalls served without a kernel: ``generate`` per LLM call, direct tool calls."""

    def __init__(self, model_dir: Path, tools: ToolRegistry) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        self.tools = tools
        self.tokens = 0

    async def syscall(self, call: Any) -> Any:
        if isinstance(call, ToolCall):
            return await self.tools.call(call.name, call.args)
        assert isinstance(call, LLMChat)
        messages = [{"role": m.role, "content": m.content} for m in call.messages]
        enc = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            out = self.model.generate(
                **enc,
                max_new_tokens=call.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.eos_token_id,
            )
        new = out[0, enc["input_ids"].shape[1] :].tolist()
        self.tokens += len(new)
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        return ChatResult(text, tuple(enc["input_ids"][0].tolist()), tuple(new), "stop")

    async def run(self, agent: Agent, task_input: Mapping[str, Any]) -> tuple[str, float]:
        ctx = AgentContext(
            "baseline",
            LLMClient(self.syscall),
            ToolsClient(self.syscall, []),
            MemoryClient(self.syscall),
            StorageClient(self.syscall),
        )
        start = time.perf_counter()
        output = await agent.run(ctx, task_input)
        return output, time.perf_counter() - start


def inputs(n: int, max_new_tokens: int) -> list[dict[str, Any]]:
    return [
        {"topic": TOPICS[i % len(TOPICS)], "n": i + 2, "max_new_tokens": max_new_tokens} for i in range(n)
    ]


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def bench_kernel(
    model_dir: Path,
    tasks: list[dict[str, Any]],
    policy: str,
    max_active: int | None = None,
    mixed_fees: bool = False,
) -> dict[str, Any]:
    engine = LLMEngine.load(model_dir, compute=ENGINE_COMPUTE)  # the format a CPU node serves
    store = StoreClient(
        "http://embedded-store",
        transport=httpx.ASGITransport(
            app=create_app(EmbeddedStore(tempfile.mkdtemp(prefix="bench-kernel-")))
        ),
    )
    agents = AgentRegistry()
    agents.register(BenchAgent)
    slots = max_active or len(tasks)
    config = KernelConfig(policy=policy, max_active=slots, time_slice_tokens=8 if mixed_fees else 32)  # type: ignore[arg-type]
    fees = [(HIGH_FEE if i % 2 == 0 else LOW_FEE) if mixed_fees else 1 for i in range(len(tasks))]
    kernel = Kernel(engine, store, config, agents=agents)
    await kernel.setup()
    try:
        await kernel.run_task(TaskSpec("warmup", "bench", {**tasks[0], "max_new_tokens": 4}))
        steps = engine.steps
        start = time.perf_counter()
        outcomes = await asyncio.gather(
            *(
                kernel.run_task(TaskSpec(f"bench-{i}", "bench", t, user=f"0x{i + 1:040x}", fee=fees[i]))
                for i, t in enumerate(tasks)
            )
        )
        wall = time.perf_counter() - start
        steps = engine.steps - steps
    finally:
        await kernel.stop()
        await store.aclose()
    failed = [o.error for o in outcomes if o.status != "ok"]
    if failed:
        raise SystemExit(f"kernel tasks failed: {failed}")
    return {
        "wall_s": wall,
        "steps": steps,
        "latencies": [o.latency_s for o in outcomes],
        "fees": fees,
        "tokens": sum(o.llm_tokens for o in outcomes),
        "preemptions": sum(
            e.get("preemptions", 0) for o in outcomes for e in o.trace["events"] if e["kind"] == "llm"
        ),
        "sample_output": outcomes[0].output,
    }


async def bench_baseline(model_dir: Path, tasks: list[dict[str, Any]]) -> dict[str, Any]:
    tools = ToolRegistry()
    for tool in builtin_tools(None, None):
        tools.register(tool)
    baseline = TransformersBaseline(model_dir, tools)
    await baseline.run(BenchAgent(), {**tasks[0], "max_new_tokens": 4})  # warm-up
    baseline.tokens = 0
    latencies: list[float] = []
    start = time.perf_counter()
    for t in tasks:  # one after another: each task waits for all before it
        _, _ = await baseline.run(BenchAgent(), t)
        latencies.append(time.perf_counter() - start)
    return {"wall_s": time.perf_counter() - start, "latencies": latencies, "tokens": baseline.tokens}


def _row(label: str, r: Mapping[str, Any], run: str, latency: str) -> str:
    cells = [
        f"{r[run + '_tasks_per_min']:.1f}",
        f"{r[run + '_wall_s']:.1f}",
        str(r[run + "_tokens"]),
        f"{r[latency + 'p50_latency_s']:.1f}",
        f"{r[latency + 'p95_latency_s']:.1f}",
    ]
    return f"| {label} | " + " | ".join(cells) + " |"


GOAL_RATIO = 8.0


def _load_sentence(r: dict[str, Any]) -> str:
    before, after = r["load_average_1min"]
    return (
        f"The 1-minute load average was {before:.1f} before the kernel run and {after:.1f} after "
        f"the baseline (the bench's own {r['torch_threads']} threads count in the second) on "
        f"{r['cpu_cores']} cores. Absolute numbers move between runs on a shared machine; the ratio "
        "is the figure to compare, but heavy outside load slows the baseline's many small batch-1 "
        "steps more than the kernel's batched ones and so inflates it."
    )


def _tokens_sentence(r: dict[str, Any]) -> str:
    if r["kernel_tokens"] == r["baseline_tokens"]:
        return "Both runs generated the same tokens."
    return (
        f"The kernel computes in `{r['engine_compute']}` and transformers in float32, so a few "
        "greedy continuations differ and so do the token counts "
        f"({r['kernel_tokens']} against {r['baseline_tokens']}); per token the ratio is "
        f"{r['tokens_per_s_ratio']:.2f}×."
    )


def _goal_paragraph(r: dict[str, Any]) -> str:
    if r["ratio"] >= GOAL_RATIO:
        return (
            f"The goal of {GOAL_RATIO:g}× is met. What got it there: every engine step decodes "
            "every running call and prefills every newly admitted prompt in one forward pass, and "
            "the default CPU format reads half the weight bytes per step of float32 (the last "
            "float32 run measured 5.24× under load 1.1-1.8)."
        )
    return (
        f"Why the goal of {GOAL_RATIO:g}× is not met: each agent's 3 LLM calls depend on each "
        f"other, so the kernel's wall time is a chain of about {r['kernel_engine_steps']} engine "
        "steps whatever the batching (every step already decodes every running call and prefills "
        "every newly admitted prompt in one forward pass), each bound by reading the weights once; "
        "going further needs fewer steps per chain (e.g. speculative decoding checked in the same "
        "packed pass, exact for greedy calls up to rounding)."
    )


def write_reports(result: dict[str, Any]) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "kernel.json").write_text(json.dumps(result, indent=2) + "\n")
    r = result
    fm = r["fee_mix"]
    md = f"""# Kernel benchmark

`make bench-kernel` (`scripts/bench_kernel.py`): {r["agents"]} agents, each 3 LLM calls (greedy, at most
{r["max_new_tokens_per_call"]} new tokens) and 2 tool calls (calculator, text), on {r["model"]}; the
kernel's engine in `{r["engine_compute"]}`, the format a CPU node serves by default (docs/node.md).

| run | tasks/min | wall (s) | tokens generated | p50 latency (s) | p95 latency (s) |
|---|---:|---:|---:|---:|---:|
{_row(f"kernel ({r['policy']} scheduler, continuous batching)", r, "kernel", "")}
{_row("baseline (one after another, transformers `generate`)", r, "baseline", "baseline_")}

**ratio (kernel / baseline throughput): {r["ratio"]:.2f}×** (goal at 16 agents: ≥ 8; AIOS reports up to 2.1×).


Latency is from submission to the task's end, all tasks submitted at once (the baseline's
task *k* waits for the *k − 1* before it). The kernel preempted and resumed generations
{r["kernel_preemptions"]} times; its engine ran {r["kernel_engine_steps"]} steps (each decodes every running
call and prefills every newly admitted one in one forward pass). Both runs
share one process and machine, each after a warm-up: {r["device"]}, {r["cpu_cores"]} cores,
{r["torch_threads"]} torch threads, torch {r["torch"]}, Python {r["python"]}.
{_load_sentence(r)}
{_tokens_sentence(r)}
{_goal_paragraph(r)}

## Fee priority

The same {r["agents"]} agents through a kernel that runs at most {fm["slots"]} LLM calls at a time
(the rest queue; time slice 8 tokens), every other task paying {HIGH_FEE}x the fee of the others,
under the fair-share policy (a user's virtual time grows by tokens / fee):

| tasks | p50 latency (s) | p95 latency (s) |
|---|---:|---:|
| high fee ({HIGH_FEE}x), {fm["high"]} tasks | {fm["high_p50_s"]:.1f} | **{r["high_fee_p95_s"]:.1f}** |
| low fee (1x), {fm["low"]} tasks | {fm["low_p50_s"]:.1f} | **{r["low_fee_p95_s"]:.1f}** |

High-fee tasks finish at **{r["low_fee_p95_s"] / r["high_fee_p95_s"]:.2f}x** lower p95 latency than
low-fee ones in the same load ({fm["wall_s"]:.1f} s for all). A user offers a higher fee
by signing it as the request's `maxFee` (`Client.submit_task(offer=...)`, `supernet task submit
--offer`); the node charges exactly that (docs/protocol.md).
"""
    (OUT / "kernel.md").write_text(md)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--policy", default="fair", choices=["fifo", "rr", "fair"])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--fee-slots", type=int, default=4, help="LLM calls at a time in the fee run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    model_dir = catalog.pull(args.model) if args.model in catalog.CATALOG else Path(args.model)
    tasks = inputs(args.agents, args.max_new_tokens)
    load_before = os.getloadavg()[0]  # other work on the machine: it slows the two runs unequally
    print(f"==> kernel: {args.agents} agents at once", flush=True)
    k = await bench_kernel(model_dir, tasks, args.policy)
    print(f"    {k['wall_s']:.1f} s, {k['tokens']} tokens", flush=True)
    print(f"==> baseline: {args.agents} agents one after another on transformers", flush=True)
    b = await bench_baseline(model_dir, tasks)
    print(f"    {b['wall_s']:.1f} s, {b['tokens']} tokens", flush=True)
    load_after = os.getloadavg()[0]
    print(f"==> fee priority: {args.agents} agents, {args.fee_slots} LLM calls at a time", flush=True)
    m = await bench_kernel(model_dir, tasks, "fair", max_active=args.fee_slots, mixed_fees=True)
    high = [lat for lat, fee in zip(m["latencies"], m["fees"], strict=True) if fee == HIGH_FEE]
    low = [lat for lat, fee in zip(m["latencies"], m["fees"], strict=True) if fee == LOW_FEE]
    print(f"    high-fee p95 {percentile(high, 0.95):.1f} s, low-fee p95 {percentile(low, 0.95):.1f} s")
    kernel_tpm = 60 * args.agents / k["wall_s"]
    baseline_tpm = 60 * args.agents / b["wall_s"]
    result = {
        "agents": args.agents,
        "engine_compute": ENGINE_COMPUTE,
        "kernel_tasks_per_min": round(kernel_tpm, 2),
        "baseline_tasks_per_min": round(baseline_tpm, 2),
        "ratio": round(kernel_tpm / baseline_tpm, 2),
        "tokens_per_s_ratio": round((k["tokens"] / k["wall_s"]) / (b["tokens"] / b["wall_s"]), 2),
        "p50_latency_s": round(statistics.median(k["latencies"]), 2),
        "p95_latency_s": round(percentile(k["latencies"], 0.95), 2),
        "baseline_p50_latency_s": round(statistics.median(b["latencies"]), 2),
        "baseline_p95_latency_s": round(percentile(b["latencies"], 0.95), 2),
        "kernel_wall_s": round(k["wall_s"], 2),
        "baseline_wall_s": round(b["wall_s"], 2),
        "kernel_tokens": k["tokens"],
        "baseline_tokens": b["tokens"],
        "kernel_preemptions": k["preemptions"],
        "kernel_engine_steps": k["steps"],
        "high_fee_p95_s": round(percentile(high, 0.95), 2),
        "low_fee_p95_s": round(percentile(low, 0.95), 2),
        "fee_mix": {
            "slots": args.fee_slots,
            "high": len(high),
            "low": len(low),
            "high_p50_s": round(statistics.median(high), 2),
            "low_p50_s": round(statistics.median(low), 2),
            "wall_s": round(m["wall_s"], 2),
            "fee_ratio": HIGH_FEE / LOW_FEE,
        },
        "llm_calls_per_agent": 3,
        "tool_calls_per_agent": 2,
        "max_new_tokens_per_call": args.max_new_tokens,
        "policy": args.policy,
        "model": args.model,
        "device": "cuda"
        if torch.cuda.is_available()
        else f"cpu ({platform.processor() or platform.machine()})",
        "cpu_cores": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(load_after, 2)],
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    write_reports(result)
    print(json.dumps({key: result[key] for key in list(result)[:6]}, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
