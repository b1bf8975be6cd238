#!/usr/bin/env python3
"""Where one decode step's time goes (issue 15): the engine at batch 1, broken into parts.

Loads the engine as the node does (``LLMEngine.load("smollm2-135m")``), then, for one chat prompt
at batch 1 (and 16 distinct prompts at batch 16, for comparison), generates 64 tokens greedy
(no stop token) through the real engine loop:

* **speed**: ``--rounds`` plain runs; tokens/s from submission to the last token (prefill
  included) and the decode step's wall time (the interval between two decode steps' starts, so
  the event loop's share is in it), medians. Only ``run_step`` is wrapped, to time-stamp steps.
* **breakdown**: one run with wall-clock timers wrapped around the parts of a step (projections,
  attention, rope, norms, the vocabulary head, selection, logprobs, fingerprints, the model's own
  glue, ``run_step``'s own Python, the event loop between steps); each part's time excludes the
  parts nested in it, so the parts add up to the step. The timers cost ~1 us per wrapped call
  (the ``instrumentation`` line estimates it).
* **ops**: one run under ``torch.profiler``: the aten ops of a decode step, self time and calls
  per step (the KV cache writes are ``index_copy_``).

Writes ``docs/benchmarks/decode_profile.json`` (runs kept per ``--label``: the json accumulates runs,
so runs of two code versions can be interleaved) and a "Decode step profile (batch 1)" section
in ``docs/benchmarks/llm.md`` below the marker line after bench_llm.py's generated tables.

    .venv/bin/python scripts/profile_decode.py --label after
    # the code before issue 15's cuts, e.g. from a worktree of commit 6322f5f:
    PYTHONPATH=/tmp/before/node .venv/bin/python scripts/profile_decode.py --label before
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm import engine as engine_mod
from supernet.node.llm import kvcache as kvcache_mod
from supernet.node.llm import model as model_mod
from supernet.node.llm import step as step_mod
from supernet.node.llm.handle import Sequence
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "benchmarks"
MARK = "<!-- end of generated tables: the text below is kept when the script rewrites this file -->"
TITLE = "## Decode step profile (batch 1)"
PROMPT = "Write a long story about a lighthouse."
TOPICS = ["the sea", "a city", "a forest", "winter", "a robot", "a garden", "trains", "a market"]
NEW_TOKENS = 64
CODE = str(Path(step_mod.__file__).resolve().parent)  # which tree's engine runs (``PYTHONPATH``)
# The parts, in the order of the table. Each is timed exclusive of the parts nested in it.
PARTS = {
    "projections": "q/k/v, o, gate/up, down matmuls (30 blocks x 4)",
    "attention": "decode attention: KV cache writes, scores, softmax, values",
    "attention_setup": "per-step attention indices and masks (`DecodeAttention.__init__`)",
    "rope": "rotary embedding of q and k",
    "norms": "RMSNorms (61)",
    "model_glue": "rest of the forward: embedding, rope-table gather, residual adds, SwiGLU, views",
    "vocab_head": "vocabulary head (576 x 49,152 matmul)",
    "selection": "token selection (`select`)",
    "logprobs": "logprob of the chosen token",
    "fingerprints": "hidden-state fingerprints (every 32nd token)",
    "step_python": "`run_step`'s own Python: lists, tensor creation, `.tolist()`, outputs",
    "engine_loop": "event loop between steps: thread hop, `_apply`, events, `_admit`",
}


class Timers:
    """Nested wall-clock timers: each part's time excludes the time of parts nested in it."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls = 0
        self._stack: list[list[float]] = []  # per open timer: [start, time of nested timers]

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        frame = [time.perf_counter(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            took = time.perf_counter() - frame[0]
            self._stack.pop()
            self.totals[name] += took - frame[1]
            if self._stack:
                self._stack[-1][1] += took
            self.calls += 1

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(name):
                return fn(*args, **kwargs)

        return timed


class _Patches:
    """Attribute swaps, undone together."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any, bool]] = []

    def set(self, obj: Any, name: str, value: Any) -> None:
        had = name in vars(obj)
        self._undo.append((obj, name, vars(obj).get(name), had))
        setattr(obj, name, value)

    def undo(self) -> None:
        for obj, name, old, had in reversed(self._undo):
            if had:
                setattr(obj, name, old)
            else:
                delattr(obj, name)
        self._undo.clear()


class _TimedTorch:
    """``torch`` as step.py sees it, with ``log_softmax`` timed (the code before issue 15 computed
    the chosen tokens' logprobs inline in ``run_step``)."""

    def __init__(self, timers: Timers) -> None:
        self._log_softmax = timers.wrap("logprobs", torch.log_softmax)

    def __getattr__(self, name: str) -> Any:
        return self._log_softmax if name == "log_softmax" else getattr(torch, name)


class StepClock:
    """Wraps the engine's ``run_step``: start and end of every step, and whether it only decoded."""

    def __init__(self, timers: Timers | None = None) -> None:
        self.steps: list[tuple[float, float, bool, dict[str, float]]] = []
        self.timers = timers
        self._run_step = engine_mod.run_step

    def __call__(self, model: Any, pool: Any, batch: list[Any]) -> Any:
        decode_only = all(s.output for s in batch)
        before = dict(self.timers.totals) if self.timers else {}
        t0 = time.perf_counter()
        if self.timers is not None:
            with self.timers.part("step_python"):
                out = self._run_step(model, pool, batch)
        else:
            out = self._run_step(model, pool, batch)
        t1 = time.perf_counter()
        parts = {k: v - before.get(k, 0.0) for k, v in self.timers.totals.items()} if self.timers else {}
        self.steps.append((t0, t1, decode_only, parts))
        return out

    def decode_intervals(self) -> list[tuple[float, float, dict[str, float]]]:
        """(interval to the next step's start, the step's own time, its parts) of every decode step
        followed by another decode step of the same generation."""
        return [
            (b[0] - a[0], a[1] - a[0], a[3])
            for a, b in zip(self.steps, self.steps[1:], strict=False)
            if a[2] and b[2] and b[0] - a[1] < 0.5  # not across two generations
        ]


def _instrument(engine: LLMEngine, timers: Timers, patches: _Patches) -> None:
    """Wrap the parts of a step in ``timers`` (module instances, functions the step code looks up)."""
    model = engine.model
    for block in model.blocks:
        for lin in (block.attention.wqkv, block.attention.wo, block.feed_forward.w13, block.feed_forward.w2):
            patches.set(lin, "forward", timers.wrap("projections", lin.forward))
        for norm in (block.attention_norm, block.ffn_norm):
            patches.set(norm, "forward", timers.wrap("norms", norm.forward))
    patches.set(model.norm, "forward", timers.wrap("norms", model.norm.forward))
    patches.set(model, "forward", timers.wrap("model_glue", model.forward))
    patches.set(model, "logits", timers.wrap("vocab_head", model.logits))
    patches.set(model_mod, "apply_rope", timers.wrap("rope", model_mod.apply_rope))
    dec = kvcache_mod.DecodeAttention
    patches.set(dec, "attend", timers.wrap("attention", dec.attend))
    patches.set(dec, "__init__", timers.wrap("attention_setup", dec.__init__))
    patches.set(step_mod, "select", timers.wrap("selection", step_mod.select))
    patches.set(step_mod, "fingerprints_of", timers.wrap("fingerprints", step_mod.fingerprints_of))
    if hasattr(step_mod, "chosen_logprobs"):  # after issue 15: one function
        patches.set(step_mod, "chosen_logprobs", timers.wrap("logprobs", step_mod.chosen_logprobs))
    else:
        patches.set(step_mod, "torch", _TimedTorch(timers))


def _wrapper_cost(n: int = 20000) -> float:
    """Seconds one timed call adds (a wrapped no-op against the bare one)."""
    timers = Timers()
    nop = nn.Identity()
    x = torch.zeros(1)
    timed = timers.wrap("x", nop.forward)
    t0 = time.perf_counter()
    for _ in range(n):
        nop.forward(x)
    t1 = time.perf_counter()
    for _ in range(n):
        timed(x)
    return max(0.0, (time.perf_counter() - t1 - (t1 - t0)) / n)


async def _generate(engine: LLMEngine, prompts: list[list[int]]) -> float:
    params = SamplingParams(max_new_tokens=NEW_TOKENS, stop_token_ids=())
    t0 = time.perf_counter()
    handles = [engine.submit(p, params) for p in prompts]
    results = [await h.result() for h in handles]
    assert all(len(r.output_ids) == NEW_TOKENS for r in results)
    return time.perf_counter() - t0


async def _speed(engine: LLMEngine, prompts: list[list[int]], rounds: int) -> dict[str, Any]:
    """Plain runs: tokens/s (prefill included) and the decode step's wall time, medians."""
    clock = StepClock()
    patches = _Patches()
    patches.set(engine_mod, "run_step", clock)
    try:
        seconds = [await _generate(engine, prompts) for _ in range(rounds)]
    finally:
        patches.undo()
    intervals = clock.decode_intervals()
    step_ms = statistics.median(i[0] for i in intervals) * 1e3
    return {
        "batch": len(prompts),
        "rounds": rounds,
        "tokens_per_s": len(prompts) * NEW_TOKENS / statistics.median(seconds),
        "tokens_per_s_all": [round(len(prompts) * NEW_TOKENS / s, 2) for s in seconds],
        "decode_step_ms": step_ms,
        "decode_tokens_per_s": len(prompts) * 1e3 / step_ms,
        "run_step_ms": statistics.median(i[1] for i in intervals) * 1e3,
    }


async def _breakdown(engine: LLMEngine, prompt: list[int], rounds: int) -> dict[str, Any]:
    """Instrumented runs at batch 1: mean ms per decode step of every part."""
    timers = Timers()
    clock = StepClock(timers)
    patches = _Patches()
    patches.set(engine_mod, "run_step", clock)
    _instrument(engine, timers, patches)
    try:
        for _ in range(rounds):
            await _generate(engine, [prompt])
    finally:
        patches.undo()
    intervals = clock.decode_intervals()
    n = len(intervals)
    parts = {name: sum(i[2].get(name, 0.0) for i in intervals) / n * 1e3 for name in PARTS}
    parts["engine_loop"] = sum(i[0] - i[1] for i in intervals) / n * 1e3
    wrapped_calls = timers.calls / max(len(clock.steps), 1)
    return {
        "steps": n,
        "step_ms": sum(i[0] for i in intervals) / n * 1e3,
        "parts_ms": parts,
        "timed_calls_per_step": wrapped_calls,
        "instrumentation_ms": wrapped_calls * _wrapper_cost() * 1e3,
    }


class _InlineExecutor:
    """An executor that runs the step in the event loop's thread."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        fut.set_result(fn(*args))
        return fut


async def _ops(engine: LLMEngine, prompt: list[int]) -> dict[str, Any]:
    """One run under ``torch.profiler``: aten ops of the decode steps, per step."""
    run_step = engine_mod.run_step

    def marked(model: Any, pool: Any, batch: list[Any]) -> Any:
        name = "decode_step" if all(s.output for s in batch) else "other_step"
        with torch.profiler.record_function(name):
            return run_step(model, pool, batch)

    patches = _Patches()
    patches.set(engine_mod, "run_step", marked)
    patches.set(engine, "_executor", _InlineExecutor())  # the profiler sees the thread it starts in
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            await _generate(engine, [prompt])
    finally:
        patches.undo()
    events = list(prof.events())
    steps = [e for e in events if e.name == "decode_step"]
    self_us: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    top_level_us, top_calls = 0.0, 0
    for e in events:
        root = e
        while root.cpu_parent is not None:
            root = root.cpu_parent
        if root.name != "decode_step" or e is root:
            continue
        self_us[e.name] += e.self_cpu_time_total
        calls[e.name] += 1
        if e.cpu_parent is root:
            top_level_us += e.cpu_time_total
            top_calls += 1
    n = max(len(steps), 1)
    table = sorted(self_us, key=lambda k: -self_us[k])
    return {
        "steps": len(steps),
        "step_ms_profiled": sum(e.cpu_time_total for e in steps) / n / 1e3,
        "ops_per_step": sum(calls.values()) / n,
        "top_level_ops_ms": top_level_us / n / 1e3,
        "top_level_ops_per_step": top_calls / n,
        "ops": [{"op": k, "self_ms": self_us[k] / n / 1e3, "calls": calls[k] / n} for k in table[:16]],
    }


def _modules_at(rev: str) -> tuple[ModuleType, ModuleType]:
    """``kvcache`` and ``step`` (with its ``sampling``) as of git revision ``rev``, importable next to
    today's: module objects of their own, the rest of the package shared (read with ``git show``)."""
    mods: dict[str, ModuleType] = {}
    for name in ("kvcache", "sampling", "step"):
        src = subprocess.run(
            ["git", "show", f"{rev}:node/supernet/node/llm/{name}.py"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for dep in mods:  # the revision's own kvcache and sampling, not today's
            src = src.replace(f"from supernet.node.llm.{dep} import", f"from _at_rev_{dep} import")
        module = ModuleType(f"_at_rev_{name}")
        sys.modules[module.__name__] = module
        exec(compile(src, f"{rev}:{name}.py", "exec"), module.__dict__)
        mods[name] = module
    return mods["kvcache"], mods["step"]


async def _paired(
    engine: LLMEngine, prompt: list[int], rev: str, params: SamplingParams, threads: int
) -> dict[str, Any]:
    """``run_step`` of revision ``rev`` and today's, decode step by decode step, alternating, in this
    process (no engine loop) on ``threads`` threads: wall and thread-CPU ms per step of each, and
    whether their tokens and logprobs agree. One thread's CPU time hardly moves with other load on
    a shared machine (no worker threads to wait for), so it compares the two where wall time can't."""
    old_kv, old_step = _modules_at(rev)
    engine_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    paths = {"before": (old_kv.KVPool, old_step.run_step), "after": (kvcache_mod.KVPool, step_mod.run_step)}
    model, stop = engine.model, frozenset[int]()
    state = {}
    for label, (pool_cls, run) in paths.items():
        pool = pool_cls(model.cfg, 1, engine.max_seq_len, engine.device, engine.dtype)
        state[label] = (pool, run, Sequence(label, tuple(prompt), params, stop))
    wall: dict[str, list[float]] = {k: [] for k in paths}
    cpu: dict[str, list[float]] = {k: [] for k in paths}
    same = True
    for i in range(NEW_TOKENS):
        outs = {}
        for label in paths if i % 2 else reversed(paths):  # alternate who goes first
            pool, run, seq = state[label]
            t0, c0 = time.perf_counter(), time.thread_time()
            (out,) = run(model, pool, [seq])
            if seq.output:  # decode steps only (the first step is the prefill)
                wall[label].append(time.perf_counter() - t0)
                cpu[label].append(time.thread_time() - c0)
            seq.output.append(out.token)
            seq.cached = out.cached
            outs[label] = (out.token, out.logprob)
        same = same and outs["before"] == outs["after"]
    ratio = [b / a for b, a in zip(wall["before"], wall["after"], strict=True)]
    torch.set_num_threads(engine_threads)
    result: dict[str, Any] = {
        "rev": rev,
        "threads": threads,
        "greedy": params.greedy,
        "identical_outputs": same,
    }
    for label in paths:
        result[f"{label}_step_ms"] = statistics.median(wall[label]) * 1e3
        result[f"{label}_cpu_ms"] = statistics.median(cpu[label]) * 1e3
        result[f"{label}_tokens_per_s"] = 1e3 / result[f"{label}_step_ms"]
    result["speedup"] = statistics.median(ratio)
    return result


def _prompts(engine: LLMEngine, n: int) -> list[list[int]]:
    tok = engine.tokenizer
    assert tok is not None
    first = [{"role": "user", "content": PROMPT}]
    rest = [[{"role": "user", "content": f"Write a long story about {t}."}] for t in TOPICS]
    chats = [first, *(rest * 2)][:n]
    return [tok.apply_chat_template(c) for c in chats]


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    engine = LLMEngine.load(args.model)
    prompts = _prompts(engine, 16)
    await engine.start()
    try:
        await _generate(engine, prompts[:1])  # warm-up
        result: dict[str, Any] = {
            "label": args.label,
            "code": CODE,
            "model": engine.model_id,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu": platform.machine(),
            "load_avg_start": os.getloadavg(),
            "prompt_tokens": len(prompts[0]),
            "new_tokens": NEW_TOKENS,
        }
        result["batch1"] = await _speed(engine, prompts[:1], args.rounds)
        print(f"batch 1: {json.dumps(result['batch1'])}", flush=True)
        result["breakdown"] = await _breakdown(engine, prompts[0], args.rounds)
        print(f"breakdown: {json.dumps(result['breakdown'])}", flush=True)
        result["profiler"] = await _ops(engine, prompts[0])
        if args.paired_with:
            sampled = SamplingParams(max_new_tokens=NEW_TOKENS, temperature=0.7, top_p=0.9, seed=1)
            greedy = SamplingParams(max_new_tokens=NEW_TOKENS)
            runs = ((greedy, 1), (sampled, 1), (greedy, args.threads))
            result["paired"] = [await _paired(engine, prompts[0], args.paired_with, p, t) for p, t in runs]
            print(f"paired: {json.dumps(result['paired'])}", flush=True)
        if args.batch16:
            await _generate(engine, prompts)
            result["batch16"] = await _speed(engine, prompts, max(1, args.rounds // 2))
            print(f"batch 16: {json.dumps(result['batch16'])}", flush=True)
        result["load_avg_end"] = os.getloadavg()
    finally:
        await engine.stop()
    return result


# ---------------------------------------------------------------- report


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    ranked = sorted(runs, key=lambda r: r["batch1"]["tokens_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def _median(runs: list[dict[str, Any]], key: str, field: str) -> float | None:
    vals = [r[key][field] for r in runs if key in r]
    return statistics.median(vals) if vals else None


MEDIAN_ROWS = (  # the wall-clock rows of the section: (row, run's batch, figure, digits)
    ("batch 1: tokens/s (prefill included)", "batch1", "tokens_per_s", 1),
    ("batch 1: decode step ms (wall, loop included)", "batch1", "decode_step_ms", 2),
    ("batch 1: decode tokens/s", "batch1", "decode_tokens_per_s", 1),
    ("batch 16: tokens/s (prefill included)", "batch16", "tokens_per_s", 1),
    ("batch 16: decode step ms", "batch16", "decode_step_ms", 2),
)


def _fmt(x: float | None, digits: int = 1) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def render_section(data: dict[str, Any]) -> str:
    """The markdown section from the accumulated runs (one column per label)."""
    labels = [lb for lb in ("before", "after") if lb in data["runs"]]
    labels += [lb for lb in data["runs"] if lb not in labels]
    runs = {lb: data["runs"][lb] for lb in labels}
    med = {lb: _median_run(runs[lb]) for lb in labels}
    head = "| | " + " | ".join(labels) + " |"
    rule = "|---|" + "---:|" * len(labels)
    out = [
        TITLE,
        "",
        "`.venv/bin/python scripts/profile_decode.py --label after` (runs of the code before "
        "issue 15's cuts: `--label before` with that tree first on `PYTHONPATH`; see the script). "
        f'{NEW_TOKENS} greedy tokens of the engine (`LLMEngine.load("smollm2-135m")`, fp32 packed, '
        f"{med[labels[0]]['threads']} threads, torch {med[labels[0]]['torch']}) for one "
        f"{med[labels[0]]['prompt_tokens']}-token chat prompt through the real engine loop; runs of "
        "the labels interleaved in separate processes, figures are medians over runs (runs: "
        + ", ".join(f"{lb} {len(runs[lb])}" for lb in labels)
        + "). Wall-clock figures move with the other work on the machine (the load average row: these "
        "runs shared 2 cores with builds, tests and benchmarks), far more than with the code; the "
        "same-process paired table below is the comparison.",
        "",
        head,
        rule,
        *(
            f"| {name} | " + " | ".join(_fmt(_median(runs[lb], batch, key), digits) for lb in labels) + " |"
            for name, batch, key, digits in MEDIAN_ROWS
        ),
        "| load average at start (2 cores; other work on the machine) | "
        + " | ".join(", ".join(f"{r['load_avg_start'][0]:.1f}" for r in runs[lb]) for lb in labels)
        + " |",
        "| aten calls per decode step, top level (profiler) | "
        + " | ".join(_fmt(med[lb]["profiler"].get("top_level_ops_per_step"), 0) for lb in labels)
        + " |",
        "| aten calls per decode step, nested ones included | "
        + " | ".join(f"{med[lb]['profiler']['ops_per_step']:.0f}" for lb in labels)
        + " |",
        "",
        "Where a batch-1 decode step's time goes (wall-clock timers around each part, exclusive of the "
        "parts nested in it; mean over the decode steps of the median run; ms per step and share of "
        "the instrumented step):",
        "",
        "| part | what | " + " | ".join(f"{lb} ms | {lb} %" for lb in labels) + " |",
        "|---|---|" + "---:|---:|" * len(labels),
    ]
    for name, what in PARTS.items():
        cells = []
        for lb in labels:
            b = med[lb]["breakdown"]
            ms = b["parts_ms"].get(name, 0.0)
            cells.append(f"{ms:.2f} | {100 * ms / b['step_ms']:.1f}")
        out.append(f"| {name} | {what} | " + " | ".join(cells) + " |")
    out.append(
        "| **step** | instrumented decode step | "
        + " | ".join(f"**{med[lb]['breakdown']['step_ms']:.2f}** | 100" for lb in labels)
        + " |"
    )
    out.append(
        "| (instrumentation) | timers' own cost, included above | "
        + " | ".join(
            f"{med[lb]['breakdown']['instrumentation_ms']:.2f} | "
            f"{100 * med[lb]['breakdown']['instrumentation_ms'] / med[lb]['breakdown']['step_ms']:.1f}"
            for lb in labels
        )
        + " |"
    )
    out += [
        "",
        "Heaviest aten ops of a decode step (torch.profiler, self time per step, calls per step):",
        "",
    ]
    for lb in labels:
        ops = med[lb]["profiler"]["ops"][:10]
        out.append(
            f"- {lb}: " + ", ".join(f"`{o['op']}` {o['self_ms']:.2f} ms ×{o['calls']:.0f}" for o in ops)
        )
    out += _paired_lines(data)
    out += ["", *_findings(med[labels[-1]]["breakdown"])]
    return "\n".join(out)


OVERHEADS = ("selection", "logprobs", "fingerprints", "step_python", "engine_loop", "attention_setup")
NOTES = """\
What was cut (issue 15), all with the same tokens and logprobs (greedy and seeded sampled calls;
checked step by step above and by the engine tests):

- Greedy selection was already an argmax (no softmax, no sort); the recorded logprob still needs one
  log-softmax over the row (`sampling.chosen_logprobs`), kept as it was because validators re-score it.
- Sampled calls: the inverse CDF runs over the nucleus' tokens only (`sampling._draw`), not over a
  49,152-wide zeroed copy of the row; the running sum adds the same values in the same order, so the
  draws are the same (67,200 draws over random, tied and peaked rows checked against the old rule).
- `DecodeAttention`: the cache write rows come from Python ints (one tensor per step instead of a
  dozen index ops), no mask at all when no row is shorter than the span (always at batch 1: adding
  zeros changes no score), and scale and mask go in place on the scores (two temporaries per layer).
- `apply_rope` updates the halves with `sub_`/`add_` on their views: `out[..., :h] -= ...` also copied
  each half back onto itself (60 copies per step).
- Steps without a fingerprint due no longer index the hidden states with an empty list.
- The KV cache is written in place (`index_copy_` into the pool, 2 per layer) and read as views: a
  decode step copies no cache; the pool only copies when it doubles its capacity (once per doubling).

What is left is the model itself: the projections and the vocabulary head read all 540 MB of fp32
weights every step (memory-bound at batch 1), and the per-layer elementwise work (norms, rope,
SwiGLU, residuals, attention softmax) is ~60 aten calls per block (views included) on tensors of a
few hundred floats, whose cost is mostly dispatch (and, on a busy machine, waiting for the second
thread); cutting those further means fusing them (a compiled or hand-written kernel), which changes
rounding and so the recorded logprobs. Outside the model there was little to cut: the cuts above
are within the noise of a batch-1 step (the paired table), a few tenths of a millisecond."""


def _findings(b: dict[str, Any]) -> list[str]:
    """Shares of the step: the weights' matmuls, the model's small ops, everything outside the model."""
    parts, step = b["parts_ms"], b["step_ms"]
    matmuls = parts["projections"] + parts["vocab_head"]
    outside = sum(parts[k] for k in OVERHEADS)
    small = step - matmuls - outside
    return [
        f"In the latest profile the weights' matmuls (projections and vocabulary head) take "
        f"{100 * matmuls / step:.0f}% of a batch-1 decode step, the model's small ops (attention, norms, "
        f"rope, glue) {100 * small / step:.0f}%, and everything outside the model (selection, logprobs, "
        f"fingerprints, the step's Python, the event loop) {100 * outside / step:.1f}% "
        f"({outside:.2f} ms).",
        "",
        NOTES,
        "",
    ]


def _paired_lines(data: dict[str, Any]) -> list[str]:
    """The same-process comparison (``--paired-with``) of the latest run that has one."""
    withs = [r for rs in data["runs"].values() for r in rs if r.get("paired")]
    if not withs:
        return []
    latest = withs[-1]["paired"]
    out = [
        "",
        f"Same process, step by step (`--paired-with {latest[0]['rev']}`: that revision's `run_step`, "
        "kvcache and sampling against today's, alternating at every decode step on one model, no "
        "engine loop; medians over the 63 decode steps; thread CPU time is the figure other load on "
        "the machine moves least at 1 thread):",
        "",
        "| calls | threads | before ms (wall) | after ms (wall) | speedup (median of pairs) "
        "| before CPU ms | after CPU ms | tokens and logprobs identical |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p in latest:
        kind = "greedy" if p["greedy"] else "sampled (T 0.7, top-p 0.9)"
        out.append(
            f"| {kind} | {p['threads']} | {p['before_step_ms']:.2f} | {p['after_step_ms']:.2f} "
            f"| {p['speedup']:.3f}× | {p['before_cpu_ms']:.2f} | {p['after_cpu_ms']:.2f} "
            f"| {'yes' if p['identical_outputs'] else 'NO'} |"
        )
    return out


def write_markdown(path: Path, section: str) -> None:
    """Put ``section`` below the marker of ``path`` (added after the generated part if missing),
    replacing an earlier version of it and keeping any other text there."""
    text = path.read_text() if path.exists() else ""
    if MARK not in text:
        text = text.rstrip("\n") + "\n\n" + MARK + "\n"
    head, tail = text.split(MARK, 1)
    pattern = re.compile(rf"^{re.escape(TITLE)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(tail):
        tail = pattern.sub(lambda _: section + "\n", tail, count=1)
    else:
        tail = tail.rstrip("\n") + "\n\n" + section
    path.write_text(head + MARK + "\n\n" + tail.strip("\n") + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--label", default="after", help="Which code version the run measures.")
    parser.add_argument("--rounds", type=int, default=3, help="Generations per measurement.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-batch16", dest="batch16", action="store_false")
    parser.add_argument(
        "--paired-with",
        metavar="REV",
        help="Also time revision REV's run_step against today's, step by step in this process.",
    )
    parser.add_argument("--reset", action="store_true", help="Forget earlier runs of this label.")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = asyncio.run(_main(args))
    json_path = args.out / "decode_profile.json"
    data = json.loads(json_path.read_text()) if json_path.exists() else {"runs": {}}
    if args.reset:
        data["runs"].pop(args.label, None)
    data["runs"].setdefault(args.label, []).append(result)
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(data, indent=1) + "\n")
    write_markdown(args.out / "llm.md", render_section(data))
    print(render_section(data))


if __name__ == "__main__":
    main()
