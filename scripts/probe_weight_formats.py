#!/usr/bin/env python3
"""Probe: which weight format should the CPU engine decode with, and can a validator re-check it?

Whole-model measurement on the real SmolLM2-135M weights, loaded by the engine's own loader
(`supernet.node.llm.loader.load_model`). Each candidate format is built by swapping the projection
modules (``wqkv``, ``wo``, ``w13``, ``w2`` of all 30 blocks and the vocabulary head) inside a copy of
the engine's ``Llama`` object; decoding is driven through the engine's real step function
(`supernet.node.llm.step.run_step`: batched prefill, then decode over the ``KVPool`` with
``DecodeAttention``, log-softmax, selection and fingerprints), and teacher-forced scoring through
`supernet.node.llm.scoring.score`, the validator's path. Formats:

* ``fp32-packed``  today's default: fp32 with oneDNN-packed weights (``Llama.pack_linears``); baseline.
* ``fp32``         fp32 ``nn.Linear`` (MKL), the engine with ``pack_weights=False``.
* ``int8-dyn``     int8 per-output-channel weights, fbgemm dynamic activation quantization
                   (``quantized.linear_dynamic``): one activation scale per call, over all its rows.
* ``int8-dyn-row`` the same kernel called once per row: a per-row (per-token) activation scale.
* ``int8-wo``      weight-only int8 per-output-channel, fp32 activations (``aten._weight_int8pack_mm``).
* ``int4-wo-g32``  weight-only int4, asymmetric groups of 32 (``aten._weight_int4pack_mm_for_cpu``).
* ``fp16-wo``      weight-only fp16, fp32 activations (fbgemm ``quantized.linear_dynamic_fp16``).
* ``bf16``         the engine's bfloat16 path (weights, activations and KV cache in bf16).

Measured per format, in one process, against the baseline:

* decode tokens/s at batch 1 and 16 (greedy, ``--steps`` decode steps after the prompt's prefill; the
  median of ``--repeats`` rounds, formats interleaved within a round; ratio to the baseline taken per
  round, then the median) and prefill speed (teacher-forced ``score`` of a ~512-token text);
* agreement with fp32 (teacher-forced logits of 16 chat prompts' fp32 continuations and of the long
  text): top-1 agreement, |logprob difference| of the forced token (max, p99), max |logit difference|;
* batch invariance: the same sequences decoded (teacher-forced) alone vs beside 15 others;
* decode vs score: the node's decode-time logits against the validator's teacher-forced re-score in
  the same format (what a same-format tolerance must cover);
* RSS growth while building the format (the fp32 source stays loaded; its embedding is shared) and
  the bytes of projection weights a decode step reads.

``--torchao PATH`` also runs torchao (installed with ``pip install --target PATH --no-deps torchao``,
never into .venv) on the whole model in a subprocess. Writes docs/benchmarks/formats.{json,md}.

Reproduce: ``.venv/bin/python scripts/probe_weight_formats.py`` (about 15 minutes on 2 busy cores).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import torch
from supernet.node.llm.handle import Sequence
from supernet.node.llm.kvcache import KVPool
from supernet.node.llm.loader import load_model
from supernet.node.llm.model import Llama, weight_of
from supernet.node.llm.sampling import SamplingParams
from supernet.node.llm.scoring import score
from supernet.node.llm.step import run_step
from supernet.node.llm.tokenizer import Tokenizer
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "docs" / "benchmarks"
MODEL = "smollm2-135m"
MAX_POSITIONS = 1024
BASELINE = "fp32-packed"
SLOW_PREFILL = {"int8-dyn-row"}  # a Python loop per row: its score speed is measured in one round only
# reference (unvectorised on AVX2) kernels: ~4 ms per 3072x576 matrix at one row, ~160 ms at 16 rows,
# seconds at 512. Measured on a reduced protocol: SLOW_ROWS prompts, one speed run, no long-text score.
SLOW_KERNEL = {"int8-wo", "int4-wo-g32"}
SLOW_ROWS = 2
INT4_GROUP = 32
QUESTIONS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in two sentences.",
    "List three uses of a paperclip.",
    "How do I reverse a list in Python?",
    "Why is the sky blue?",
    "Give me a recipe idea with lentils.",
    "Summarize the plot of Romeo and Juliet.",
    "What is 17 times 23?",
    "Translate 'good morning' into Spanish.",
    "Suggest a name for a pet turtle.",
    "What causes the seasons on Earth?",
    "Write one sentence about a lighthouse keeper.",
    "What is a prime number?",
    "Describe the smell of rain.",
    "How does a bicycle stay upright?",
]
GREEDY = SamplingParams(max_new_tokens=4096, stop_token_ids=())
_LOOP = asyncio.new_event_loop()  # `Sequence` wants a future; nothing here awaits it


# ---------------------------------------------------------------- the candidate projections


class FbgemmInt8Dynamic(nn.Module):
    """int8 per-output-channel symmetric weights packed by fbgemm, activations quantized at run time.

    ``linear_dynamic`` picks one (asymmetric uint8) scale for everything it is given. Called on the
    whole ``[rows, K]`` input (``per_row=False``) a row's result depends on the other rows' range; the
    per-row variant calls it once per row. ``reduce_range``: 7-bit activations, as ``quantize_dynamic``
    does on x86 (without it AVX2's ``vpmaddubsw`` saturates: 7x the error measured on random data).
    """

    def __init__(self, weight: Tensor, per_row: bool) -> None:
        super().__init__()
        w = weight.detach().float()
        self.out_features, self.per_row = w.shape[0], per_row
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()
        zero = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized tensor creation is deprecated, still the API
            q = torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
        self.packed = torch.ops.quantized.linear_prepack(q, None)

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        if self.per_row and x2.shape[0] > 1:
            y = torch.cat([torch.ops.quantized.linear_dynamic(r, self.packed, True) for r in x2.split(1)])
        else:
            y = torch.ops.quantized.linear_dynamic(x2, self.packed, True)
        return y.view(*x.shape[:-1], self.out_features)


class WeightOnlyInt8(nn.Module):
    """int8 per-output-channel symmetric weights, fp32 activations (``aten._weight_int8pack_mm``)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        w = weight.detach().float()
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("q", torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scale", scale)
        self.out_features = w.shape[0]

    def forward(self, x: Tensor) -> Tensor:
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(-1, x.shape[-1]), self.q, self.scale)
        return y.view(*x.shape[:-1], self.out_features)


class WeightOnlyInt4(nn.Module):
    """int4 weights in asymmetric groups of ``group`` along K (min/max), fp32 scale and offset per group;
    ``aten._weight_int4pack_mm_for_cpu`` computes ``x @ ((q - 8) * scale + offset).T``."""

    def __init__(self, weight: Tensor, group: int = INT4_GROUP) -> None:
        super().__init__()
        w = weight.detach().float()
        n, k = w.shape
        g = w.reshape(n, k // group, group)
        lo, hi = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
        scale = ((hi - lo) / 15).clamp(min=1e-12)
        q = torch.round((g - lo) / scale).clamp(0, 15).to(torch.int32).reshape(n, k)
        offset = lo + 8 * scale
        sz = torch.stack((scale.reshape(n, -1).t(), offset.reshape(n, -1).t()), dim=-1).contiguous()
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        self.register_buffer("scale_offset", sz)
        self.group, self.out_features = group, n

    def forward(self, x: Tensor) -> Tensor:
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.reshape(-1, x.shape[-1]), self.packed, self.group, self.scale_offset
        )
        return y.view(*x.shape[:-1], self.out_features)


class WeightOnlyFp16(nn.Module):
    """fp16 weights packed by fbgemm, fp32 activations and accumulation (``linear_dynamic_fp16``)."""

    def __init__(self, weight: Tensor) -> None:
        super().__init__()
        self.out_features = weight.shape[0]
        self.packed = torch.ops.quantized.linear_prepack_fp16(weight.detach().float().contiguous(), None)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.ops.quantized.linear_dynamic_fp16(x.reshape(-1, x.shape[-1]), self.packed)
        return y.view(*x.shape[:-1], self.out_features)


# ---------------------------------------------------------------- building a format


def _projections(model: Llama) -> list[tuple[nn.Module, str]]:
    """(owner, attribute) of every projection: 4 per block and the vocabulary head."""
    out: list[tuple[nn.Module, str]] = []
    for blk in model.blocks:
        out += [(blk.attention, "wqkv"), (blk.attention, "wo"), (blk.feed_forward, "w13")]
        out += [(blk.feed_forward, "w2")]
    return [*out, (model, "output")]


def _sharing_copy(src: Llama) -> Llama:
    """A copy of the module tree whose tensors are ``src``'s own (swapping a module leaves ``src`` as is)."""
    memo: dict[int, Any] = {id(t): t for t in [*src.parameters(), *src.buffers()]}
    return copy.deepcopy(src, memo)


def _swapped(src: Llama, make: Callable[[Tensor], nn.Module]) -> Llama:
    model = _sharing_copy(src)
    for owner, name in _projections(model):
        setattr(owner, name, make(weight_of(getattr(owner, name))))
    model.packed = True  # the projections are not nn.Linear any more (no ``to_hf_state_dict``)
    return model


def _bf16(src: Llama) -> Llama:
    model = copy.deepcopy(src).to(torch.bfloat16)
    model.rope_cos, model.rope_sin = model.rope_cos.float(), model.rope_sin.float()  # as the loader does
    return model


BUILDERS: dict[str, Callable[[Llama], Llama]] = {
    BASELINE: lambda src: _sharing_copy(src).pack_linears(batch_hint=16),
    "fp32": lambda src: src,
    "int8-dyn": lambda src: _swapped(src, lambda w: FbgemmInt8Dynamic(w, per_row=False)),
    "int8-dyn-row": lambda src: _swapped(src, lambda w: FbgemmInt8Dynamic(w, per_row=True)),
    "int8-wo": lambda src: _swapped(src, WeightOnlyInt8),
    "int4-wo-g32": lambda src: _swapped(src, WeightOnlyInt4),
    "fp16-wo": lambda src: _swapped(src, WeightOnlyFp16),
    "bf16": _bf16,
}
BYTES_PER_WEIGHT = {  # projection weights read per decode step, scales and offsets included
    BASELINE: 4.0,
    "fp32": 4.0,
    "int8-dyn": 1.0,
    "int8-dyn-row": 1.0,
    "int8-wo": 1.0,
    "int4-wo-g32": 0.5 + 8 / INT4_GROUP,
    "fp16-wo": 2.0,
    "bf16": 2.0,
}
DESCRIPTION = {
    BASELINE: "fp32, oneDNN-packed (today's default)",
    "fp32": "fp32 nn.Linear (MKL)",
    "int8-dyn": "int8/channel weights + fbgemm dynamic int8 activations, one scale per call",
    "int8-dyn-row": "same kernel, called once per row (per-token activation scale)",
    "int8-wo": "weight-only int8/channel, fp32 activations (_weight_int8pack_mm)",
    "int4-wo-g32": "weight-only int4, groups of 32 (_weight_int4pack_mm_for_cpu)",
    "fp16-wo": "weight-only fp16, fp32 activations (fbgemm linear_dynamic_fp16)",
    "bf16": "engine bf16 path (weights, activations, KV cache)",
}


def _dtype(model: Llama) -> torch.dtype:
    return next(model.parameters()).dtype


def _rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


# ---------------------------------------------------------------- driving the engine's step


def decode(
    model: Llama,
    prompts: list[list[int]],
    steps: int,
    forced: list[list[int]] | None = None,
    keep_logits: bool = False,
) -> tuple[list[list[int]], Tensor | None, float]:
    """Prefill ``prompts`` together, then ``steps`` decode steps, through ``run_step``.

    Returns each row's ``steps + 1`` tokens (``forced`` ones when given: teacher-forced decoding),
    the logits ``[rows, steps + 1, vocab]`` when ``keep_logits``, and the seconds of the decode steps.
    """
    pool = KVPool(model.cfg, len(prompts), MAX_POSITIONS, torch.device("cpu"), _dtype(model))
    seqs = [
        Sequence(f"r{i}", tuple(p), GREEDY, frozenset(), slot=i, done=_LOOP.create_future())
        for i, p in enumerate(prompts)
    ]
    captured: list[Tensor] = []
    if keep_logits:
        plain = model.logits

        def logits(hidden: Tensor) -> Tensor:
            out = plain(hidden)
            captured.append(out.clone())
            return out

        model.__dict__["logits"] = logits
    try:
        seconds = 0.0
        for step in range(steps + 1):
            t0 = time.perf_counter()
            outs = run_step(model, pool, seqs)
            if step:
                seconds += time.perf_counter() - t0
            for r, (seq, out) in enumerate(zip(seqs, outs, strict=True)):
                seq.output.append(out.token if forced is None else forced[r][step])
    finally:
        model.__dict__.pop("logits", None)
    kept = torch.stack(captured, dim=1) if keep_logits else None
    return [s.output for s in seqs], kept, seconds


def scored_logits(model: Llama, prompt: list[int], output: list[int]) -> tuple[Tensor, float]:
    """The validator's teacher-forced pass (``scoring.score``): logits of ``output``'s positions, seconds."""
    captured: list[Tensor] = []
    plain = model.logits

    def logits(hidden: Tensor) -> Tensor:
        out = plain(hidden)
        captured.append(out)
        return out

    model.__dict__["logits"] = logits
    try:
        t0 = time.perf_counter()
        score(model, prompt, output)
        seconds = time.perf_counter() - t0
    finally:
        model.__dict__.pop("logits", None)
    return captured[0], seconds


# ---------------------------------------------------------------- numerics


def compare(a: Tensor, b: Tensor, tokens: Tensor) -> dict[str, float]:
    """Logits ``a`` against ``b`` ``[n, vocab]`` at positions whose chosen token is ``tokens`` ``[n]``."""
    a, b = a.float(), b.float()
    la = torch.log_softmax(a, dim=-1).gather(-1, tokens[:, None])[:, 0]
    lb = torch.log_softmax(b, dim=-1).gather(-1, tokens[:, None])[:, 0]
    d = (la - lb).abs()
    return {
        "positions": a.shape[0],
        "top1_agree": float((a.argmax(-1) == b.argmax(-1)).float().mean()),
        "max_dlogprob": float(d.max()),
        "p99_dlogprob": float(d.quantile(0.99)),
        "max_dlogit": float((a - b).abs().max()),
    }


def numerics(
    model: Llama,
    ref: dict[str, Any],
    prompts: list[list[int]],
    conts: list[list[int]],
    long: list[int] | None,
    split: int,
    alone: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Agreement with fp32, batch invariance and decode-vs-score of one format; also its raw logits.
    Without ``long`` the agreement covers the chat prompts only (for kernels too slow to score it)."""
    steps = len(conts[0]) - 1
    forced_tokens = torch.tensor(conts)  # [rows, steps + 1]
    _, batch_logits, _ = decode(model, prompts, steps, forced=conts, keep_logits=True)
    assert batch_logits is not None
    single = []
    for r in range(alone):
        _, lg, _ = decode(model, [prompts[r]], steps, forced=[conts[r]], keep_logits=True)
        assert lg is not None
        single.append(lg[0])
    scored = torch.stack([scored_logits(model, p, c)[0] for p, c in zip(prompts, conts, strict=True)])
    flat = forced_tokens.reshape(-1)
    out: dict[str, Any] = {
        "batch_invariance": compare(
            torch.cat(single),
            batch_logits[:alone].reshape(-1, batch_logits.shape[-1]),
            forced_tokens[:alone].reshape(-1),
        ),
        "decode_vs_score": compare(
            batch_logits.reshape(-1, batch_logits.shape[-1]), scored.reshape(-1, scored.shape[-1]), flat
        ),
    }
    chat = scored.reshape(-1, scored.shape[-1])
    if ref:
        ref_chat = ref["scored"][: len(prompts)].reshape(-1, scored.shape[-1])
        out["vs_fp32_chat"] = out["vs_fp32"] = compare(chat, ref_chat, flat)
    if long is None:
        return out, {"scored": scored}
    long_logits, _ = scored_logits(model, long[:split], long[split:])
    long_tokens = torch.tensor(long[split:])
    if ref:
        out["vs_fp32_long"] = compare(long_logits, ref["long"], long_tokens)
        out["vs_fp32"] = compare(
            torch.cat((chat, long_logits)), torch.cat((ref_chat, ref["long"])), torch.cat((flat, long_tokens))
        )
    return out, {"scored": scored, "long": long_logits}


# ---------------------------------------------------------------- speed


def speed_round(
    model: Llama,
    prompts: list[list[int]],
    steps: int,
    long: list[int],
    split: int,
    prefill: float | None = None,
) -> dict[str, float]:
    """One measurement of decode tokens/s at batch 1 and 16, and of the teacher-forced score's tokens/s
    (``prefill`` given: that figure is reused instead, for formats too slow to score in every round)."""
    _, _, s1 = decode(model, prompts[:1], steps)
    _, _, s16 = decode(model, prompts[:16], steps)
    if prefill is None:
        _, sp = scored_logits(model, long[:split], long[split:])
        prefill = len(long) / sp
    return {"tok_s_1": steps / s1, "tok_s_16": 16 * steps / s16, "prefill_tok_s": prefill}


def slow_speed(base: Llama, model: Llama, prompts: list[list[int]]) -> dict[str, Any]:
    """One short decode run at batch 1 (8 steps) and 16 (2 steps), the baseline's alongside; no score."""
    out: dict[str, Any] = {"speed_runs": "1 run: 8 steps at batch 1, 2 at batch 16; score not run"}
    for b, steps in ((1, 8), (16, 2)):
        decode(model, prompts[:b], 1)  # warm-up
        _, _, s = decode(model, prompts[:b], steps)
        _, _, s0 = decode(base, prompts[:b], steps)
        key = f"tok_s_{b}"
        out[key], out[key + "_ratio"] = round(b * steps / s, 2), round(s0 / s, 4)
        out[key + "_range"], out[key + "_ratio_range"] = [out[key]] * 2, [out[key + "_ratio"]] * 2
    out["prefill_tok_s"] = out["prefill_tok_s_ratio"] = None
    print(f"speed (reduced): {out}", flush=True)
    return out


def summarize(rounds: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Median, spread and per-round ratio to the baseline of every metric."""
    out: dict[str, dict[str, Any]] = {}
    for name, rs in rounds.items():
        row: dict[str, Any] = {}
        for key in rs[0]:
            vals = [r[key] for r in rs]
            ratios = [r[key] / b[key] for r, b in zip(rs, rounds[BASELINE], strict=True)]
            row[key] = round(statistics.median(vals), 2)
            row[key + "_range"] = [round(min(vals), 2), round(max(vals), 2)]
            row[key + "_ratio"] = round(statistics.median(ratios), 3)
            row[key + "_ratio_range"] = [round(min(ratios), 3), round(max(ratios), 3)]
        out[name] = row
    return out


# ---------------------------------------------------------------- inputs


def chat_prompts(tok: Tokenizer) -> list[list[int]]:
    return [tok.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]


def long_text(tok: Tokenizer, n: int) -> list[int]:
    """``n`` tokens of real prose: the repository's README (read only)."""
    ids = tok.encode((ROOT / "README.md").read_text())
    return ids[:n]


# ---------------------------------------------------------------- torchao (optional, subprocess)


def torchao_probe(steps: int) -> dict[str, Any]:
    """Whole-model decode with torchao's CPU configs swapped into the engine's model (run with torchao on
    ``sys.path``). Only speed and agreement of the decode-time logits: these configs run ~100x slower."""
    from torchao.quantization import (  # type: ignore[import-not-found]
        Int4WeightOnlyConfig,
        Int8DynamicActivationInt8WeightConfig,
        Int8WeightOnlyConfig,
        quantize_,
    )

    loaded = load_model(MODEL, device="cpu", dtype=torch.float32, max_positions=MAX_POSITIONS)
    assert loaded.tokenizer is not None
    prompts = chat_prompts(loaded.tokenizer)
    src = loaded.model
    base = BUILDERS[BASELINE](src)
    conts, _, _ = decode(base, prompts[:2], steps)
    _, ref_logits, _ = decode(base, prompts[:2], steps, forced=conts, keep_logits=True)
    _, _, b1 = decode(base, prompts[:1], steps)
    result: dict[str, Any] = {"version": __import__("torchao").__version__}
    configs: dict[str, Callable[[], Any]] = {
        "Int8WeightOnlyConfig": Int8WeightOnlyConfig,
        "Int8DynamicActivationInt8WeightConfig": Int8DynamicActivationInt8WeightConfig,
        "Int4WeightOnlyConfig(group_size=32)": lambda: Int4WeightOnlyConfig(group_size=32),
    }
    for name, make in configs.items():
        try:
            model = copy.deepcopy(src)
            model.output = nn.Linear(model.cfg.dim, model.cfg.vocab_size, bias=False)
            model.output.weight = nn.Parameter(src.output.weight.detach().clone())  # untie before quantizing
            quantize_(model, make(), filter_fn=lambda m, _fqn: isinstance(m, nn.Linear))
            _, lg, s = decode(model, prompts[:2], steps, forced=conts, keep_logits=True)
            _, _, s1 = decode(model, prompts[:1], steps)
            assert lg is not None and ref_logits is not None
            v = ref_logits.shape[-1]
            result[name] = {
                "tok_s_1": round(steps / s1, 2),
                "tok_s_2": round(2 * steps / s, 2),
                "ratio_1_vs_fp32_packed": round(b1 / s1, 4),
                "vs_fp32_decode": compare(
                    lg.reshape(-1, v), ref_logits.reshape(-1, v), torch.tensor(conts).reshape(-1)
                ),
            }
        except Exception as exc:  # a config the CPU build does not serve
            result[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, result[name], flush=True)
    return result


def run_torchao(path: str, steps: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": path}
    proc = subprocess.run(
        [sys.executable, __file__, "--torchao-child", "--steps", str(steps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        return {"error": (proc.stderr or proc.stdout)[-600:]}
    return dict(json.loads(lines[-1]))


# ---------------------------------------------------------------- report

MARK = "<!-- end of generated tables: the text below is kept when the script rewrites this file -->"


def _f(x: float, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if abs(x) < 1e-2 else f"{x:.{digits}f}".rstrip("0").rstrip(".")


def render_md(r: dict[str, Any]) -> str:
    """The tables of formats.md from the result of one run."""
    st = r["settings"]
    out = [
        "# Weight formats for the CPU engine",
        "",
        f"`.venv/bin/python scripts/probe_weight_formats.py` — {r['model']} (real weights, the engine's "
        f"loader and model object, its `run_step` and `scoring.score`), torch {r['torch']}, "
        f"{r['threads']} threads, {r['cpu']}. {r['projection_weights'] / 1e6:.1f}M projection weights "
        "(30 blocks + tied vocabulary head).",
        "",
        f"Speed: median of {st['repeats']} rounds, formats interleaved within each round; `ratio` is the "
        f"median of the per-round ratios to `{BASELINE}` (range in brackets: the noise). Decode: greedy, "
        f"{st['steps']} steps after the prefill of ~40-token chat prompts (batch 1: one prompt; batch 16: "
        f"16 prompts). Score: one teacher-forced `scoring.score` pass over {st['long_tokens']} tokens of "
        f"text (the validator's path). Load average at the end: {st['load_avg_end'][0]:.1f} on 2 cores.",
        "",
        "| format | what | weights read/step MB | RSS growth MB | decode tok/s b=1 | ratio b=1 "
        "| decode tok/s b=16 | ratio b=16 | score tok/s | ratio score |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, f in r["formats"].items():
        note = " (1 run)" if name in SLOW_PREFILL else ""
        if "tok_s_1" not in f:
            out.append(
                f"| `{name}` | {f['description']} | {f['weights_read_mb']} | {f['rss_growth_mb']} "
                "| not run | | not run | | not run | |"
            )
            continue
        if f["prefill_tok_s"] is None:
            out.append(
                f"| `{name}` | {f['description']} | {f['weights_read_mb']} | {f['rss_growth_mb']} "
                f"| {f['tok_s_1']:.2f} | {f['tok_s_1_ratio']:.3f} (1 run) | {f['tok_s_16']:.2f} "
                f"| {f['tok_s_16_ratio']:.3f} (1 run) | too slow to run | — |"
            )
            continue
        out.append(
            f"| `{name}` | {f['description']} | {f['weights_read_mb']} | {f['rss_growth_mb']} "
            f"| {f['tok_s_1']:.1f} | {f['tok_s_1_ratio']:.2f} [{f['tok_s_1_ratio_range'][0]:.2f}-"
            f"{f['tok_s_1_ratio_range'][1]:.2f}] | {f['tok_s_16']:.1f} | {f['tok_s_16_ratio']:.2f} "
            f"[{f['tok_s_16_ratio_range'][0]:.2f}-{f['tok_s_16_ratio_range'][1]:.2f}] "
            f"| {f['prefill_tok_s']:.0f}{note} | {f['prefill_tok_s_ratio']:.2f} |"
        )
    out += [
        "",
        "## Agreement with fp32",
        "",
        f"Teacher-forced logits (`scoring.score`) of each format against `{BASELINE}` at the positions of "
        f"{st['prompts_numerics']} chat prompts' fp32 greedy continuations and of the long text: top-1 "
        "agreement, |logprob difference| of the forced token, largest |logit difference|.",
        "",
        "| format | positions | top-1 agree | max \\|Δlogprob\\| | p99 \\|Δlogprob\\| | max \\|Δlogit\\| |",
        "|---|---|---|---|---|---|",
    ]
    for name, f in r["formats"].items():
        if "vs_fp32" in f:
            a = f["vs_fp32"]
            star = " (chat only)" if "reduced" in f else ""
            out.append(
                f"| `{name}` | {a['positions']}{star} | {a['top1_agree']:.4f} | {_f(a['max_dlogprob'])} "
                f"| {_f(a['p99_dlogprob'])} | {_f(a['max_dlogit'])} |"
            )
    out += [
        "",
        "## Verifiability: batch invariance and decode vs score",
        "",
        f"*Batch invariance*: {st['alone']} sequences decoded (teacher-forced, through `run_step`) alone and "
        f"beside {st['prompts_numerics'] - 1} others; the same positions compared. *Decode vs score*: the "
        "node's decode-time logits (batch of all) against the validator's teacher-forced re-score in the "
        "same format — what a same-format tolerance has to cover (fp32 today: "
        "`Tolerance().logprob_atol` = 0.02; bf16 pairs: 0.75).",
        "",
        "| format | alone vs batched: max \\|Δlogit\\| | max \\|Δlogprob\\| | top-1 agree "
        "| decode vs score: max \\|Δlogit\\| | max \\|Δlogprob\\| | p99 \\|Δlogprob\\| | top-1 agree |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, f in r["formats"].items():
        b, d = f["batch_invariance"], f["decode_vs_score"]
        out.append(
            f"| `{name}` | {_f(b['max_dlogit'])} | {_f(b['max_dlogprob'])} | {b['top1_agree']:.3f} "
            f"| {_f(d['max_dlogit'])} | {_f(d['max_dlogprob'])} | {_f(d['p99_dlogprob'])} "
            f"| {d['top1_agree']:.3f} |"
        )
    if "torchao" in r:
        out += [
            "",
            "## torchao",
            "",
            "Installed with `pip install --target DIR --no-deps torchao` (not into .venv), "
            "swapped into the engine's model by `quantize_` on every projection, decoded through `run_step` "
            "(few steps: it is slow).",
            "",
            "```json",
            json.dumps(r["torchao"], indent=1),
            "```",
        ]
    return "\n".join(out) + "\n"


def write_md(r: dict[str, Any], path: Path) -> None:
    """Write the tables, keeping any text after ``MARK`` in an existing file."""
    tail = ""
    if path.is_file() and MARK in path.read_text():
        tail = path.read_text().split(MARK, 1)[1]
    path.write_text(render_md(r) + "\n" + MARK + (tail or "\n"))


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="speed rounds (formats interleaved in each)")
    ap.add_argument("--steps", type=int, default=32, help="decode steps per speed run / continuation length")
    ap.add_argument("--long", type=int, default=512, help="tokens of the teacher-forced long text")
    ap.add_argument("--alone", type=int, default=2, help="sequences also decoded alone (batch invariance)")
    ap.add_argument(
        "--num-prompts", type=int, default=8, help="chat prompts of the numerics (decoded together)"
    )
    ap.add_argument("--num-steps", type=int, default=24, help="decode steps of the numerics' continuations")
    ap.add_argument("--formats", default=",".join(BUILDERS), help="comma-separated subset")
    ap.add_argument("--torchao", default="", help="a --target dir holding torchao (optional)")
    ap.add_argument("--out", type=Path, default=OUT_DIR)
    ap.add_argument("--torchao-child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--md-only", action="store_true", help="rewrite formats.md from formats.json")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--numerics-from", type=Path, default=None, help="take the numerics from this run's log (speed only)"
    )
    ap.add_argument(
        "--no-slow-speed", action="store_true", help="skip the speed run of the reference kernels"
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.torchao_child:
        print(json.dumps(torchao_probe(args.steps)), flush=True)
        return
    if args.md_only:
        write_md(json.loads((args.out / "formats.json").read_text()), args.out / "formats.md")
        return

    names = [BASELINE, *(n for n in args.formats.split(",") if n != BASELINE)]
    loaded = load_model(MODEL, device="cpu", dtype=torch.float32, max_positions=MAX_POSITIONS)
    assert loaded.tokenizer is not None
    src, tok = loaded.model, loaded.tokenizer
    prompts, long = chat_prompts(tok), long_text(tok, args.long)
    split = 100
    n_weights = sum(weight_of(getattr(o, a)).numel() for o, a in _projections(src))
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{n_weights / 1e6:.1f}M projection weights; "
        f"prompts {min(map(len, prompts))}-{max(map(len, prompts))} tokens; long text {len(long)}",
        flush=True,
    )

    models: dict[str, Llama] = {}
    build: dict[str, dict[str, float]] = {}
    for name in names:
        before, t0 = _rss_mb(), time.perf_counter()
        models[name] = BUILDERS[name](src)
        build[name] = {
            "build_s": round(time.perf_counter() - t0, 2),
            "rss_growth_mb": round(_rss_mb() - before, 1),
            "weights_read_mb": round(n_weights * BYTES_PER_WEIGHT[name] / 1e6, 1),
        }
        print(f"built {name}: {build[name]}", flush=True)

    # the reference continuations: fp32 (packed) greedy, the numerics' prompts decoded together
    num_prompts = prompts[: args.num_prompts]
    accuracy: dict[str, Any] = {}
    ref: dict[str, Any] = {}
    if args.numerics_from is not None:  # lines "numerics NAME (N s): {json}" of an earlier run
        for line in args.numerics_from.read_text().splitlines():
            if line.startswith("numerics "):
                accuracy[line.split()[1]] = json.loads(line.split(": ", 1)[1])
        accuracy["_source"] = str(args.numerics_from)
    conts, _, _ = decode(models[BASELINE], num_prompts, args.num_steps) if not accuracy else ([], None, 0.0)
    for name in names if not accuracy else []:
        t0 = time.perf_counter()
        if name in SLOW_KERNEL:
            k = SLOW_ROWS
            accuracy[name], _ = numerics(models[name], ref, num_prompts[:k], conts[:k], None, split, 1)
            accuracy[name]["reduced"] = f"{k} prompts decoded together vs the first alone; no long text"
            print(
                f"numerics {name} ({time.perf_counter() - t0:.0f} s): {json.dumps(accuracy[name])}",
                flush=True,
            )
            continue
        accuracy[name], raw = numerics(models[name], ref, num_prompts, conts, long, split, args.alone)
        if name == BASELINE:
            ref = raw
        print(f"numerics {name} ({time.perf_counter() - t0:.0f} s): {json.dumps(accuracy[name])}", flush=True)
    ref.clear()
    gc.collect()

    fast = [n for n in names if n not in SLOW_KERNEL]
    slow = {
        n: slow_speed(models[BASELINE], models[n], prompts)
        for n in names
        if n in SLOW_KERNEL and not args.no_slow_speed
    }
    for name in fast:  # warm-up: oneDNN / fbgemm primitives for every shape
        speed_round(models[name], prompts, 4, long, split, 1.0 if name in SLOW_PREFILL else None)
    rounds: dict[str, list[dict[str, float]]] = {n: [] for n in fast}
    for rep in range(args.repeats):
        for name in fast:
            again = rounds[name][0]["prefill_tok_s"] if rep and name in SLOW_PREFILL else None
            rounds[name].append(speed_round(models[name], prompts, args.steps, long, split, again))
        print(
            f"round {rep + 1}: "
            + ", ".join(
                f"{n} {r[-1]['tok_s_1']:.0f}/{r[-1]['tok_s_16']:.0f}/{r[-1]['prefill_tok_s']:.0f}"
                for n, r in rounds.items()
            ),
            flush=True,
        )
    speed = summarize(rounds) | slow

    result: dict[str, Any] = {
        "model": MODEL,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu": _cpu_name(),
        "settings": {
            "repeats": args.repeats,
            "steps": args.steps,
            "long_tokens": len(long),
            "prompts": len(prompts),
            "prompts_numerics": len(num_prompts),
            "steps_numerics": args.num_steps,
            "alone": args.alone,
            "int4_group": INT4_GROUP,
            "load_avg_end": list(os.getloadavg()),
        },
        "projection_weights": n_weights,
        "formats": {
            n: {"description": DESCRIPTION[n], **build[n], **speed.get(n, {}), **accuracy.get(n, {})}
            for n in names
        },
        "numerics_source": accuracy.get("_source", "this run"),
        "raw_rounds": rounds,
    }
    if args.torchao:
        result["torchao"] = run_torchao(args.torchao, 4)
        print("torchao:", json.dumps(result["torchao"]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "formats.json").write_text(json.dumps(result, indent=1) + "\n")
    write_md(result, args.out / "formats.md")
    print(f"wrote {args.out / 'formats.json'} and formats.md")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                flags = (
                    "avx512_bf16" if "avx512_bf16" in Path("/proc/cpuinfo").read_text() else "no avx512/bf16"
                )
                return f"{line.split(':', 1)[1].strip()} ({flags})"
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
