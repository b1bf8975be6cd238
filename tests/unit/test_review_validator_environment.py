"""Adversarial review: can an HONEST node be found faulty because the validator's environment
differs from the node's (torch thread count, how many receipts' calls share one forward pass,
batch size of the float16-weight kernels, rotary table length), or because a user picks inputs
that make honest re-execution disagree (prompts at the context edge, EOS on the last budgeted
token, one-token calls, seeds aimed at a near-tie between two tokens)?

Every test runs the real SmolLM2 engine as the node (continuous batching, KV cache, oneDNN-packed
float32 or fbgemm float16-weight kernels) and the validator's real `ModelScorer` (its own load of
the model, `score_calls` packing, `check_shape` / `check_scores` with `Tolerance.for_pair`). No
fake is used. Besides "no finding", the tests measure how much of each bound honest rounding uses:

* logprobs: ``max |claimed - rescored| / logprob_atol``;
* fingerprints: ``max |claimed - rescored| / (hidden_atol + hidden_rtol * |v|)``;
* sampled tokens: the *worst-draw* margin. The node's logits of every step are captured (a wrapper
  around ``engine.run_step``, instrumentation only) and the validator's logits of every packed
  pass (a wrapper around ``scoring._packed_results``); for each sampled token the validator's own
  distance function (`sampling._interval_margin`, at its rule's nucleus: an upper bound of the
  margin it reports) is evaluated at the two ends of the node's CDF interval, i.e. at the draws a
  seed-choosing user would aim for. That is what the sampled bound must cover, whatever the seed.

Measured (2-core x86, torch 2.13 CPU; 100 sampled calls per format, T in 0.5..1.5, top_p in
{1, 0.999, 0.98, 0.5, 0.05}): no honest call flagged in any environment. Worst-draw margin at most
~5% of `Tolerance.sample_bound(T)` in float32 and ~8% in float16-weights; logprobs at most ~2.5% of
the 2e-3 bound; fingerprints at most ~2%. The numbers did not change between 1 and 2 threads on
either side, nor between packing all calls in one pass and one call per pass (float16-weights:
fbgemm at M = 1..512 rows). A 2000-token prompt at the node's ``max_seq_len`` packed in the same
`score_many` with short calls, EOS on the last budgeted token, one-token calls and seeds aimed to
within ~1e-7 of the CDF edge between the two likeliest first tokens all verify. No framing hole was
found (no ``test_known_limit_*``); the tests below are regression guards that fail when honest
rounding grows past a stated fraction (FRACTION) of a bound.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supernet.node.llm.engine as engine_module
import supernet.node.llm.scoring as scoring_module
import torch
from supernet.node.llm import sampling
from supernet.node.llm.config import LlamaConfig
from supernet.node.llm.model import rope_tables
from supernet.node.llm.sampling import SamplingParams, uniform
from supernet.node.llm.scoring import Tolerance
from supernet.validator.llm_check import check_scores, check_shape, claimed_fingerprints
from supernet.validator.scoring import ModelScorer
from supernet.validator.trace_view import LLMCall
from supernet.validator.verifier import score_calls

pytestmark = [pytest.mark.model, pytest.mark.timeout(900)]

FRACTION = 0.25  # honest rounding must stay below this share of every bound (measured: <= 0.08)
CALLS = 40  # per format in the suite; the review measured 100 per format (module docstring)
QUESTIONS = (
    "Name a colour.",
    "What is 2+2?",
    "Say hi.",
    "Write a haiku about rain.",
    "Who are you?",
    "List three fruits.",
    "Explain gravity briefly.",
    "Tell me a joke.",
    "Pick a number between 1 and 2.",
    "Yes or no?",
)
TOP_PS = (1.0, 0.999, 0.98, 0.5, 0.05)


# --------------------------------------------------------------------------------------- helpers


class NodeLogits:
    """Instrumentation: the node's float32 logits of every step, by (request id, output index),
    from ``model.logits`` or, on a decode-only step of a fused model, the fused step's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.rows: dict[tuple[str, int], torch.Tensor] = {}
        real_step = engine_module.run_step

        def step(model: Any, pool: Any, batch: list[Any]) -> Any:
            box: dict[str, torch.Tensor] = {}
            real_logits = model.logits

            def logits(hidden: torch.Tensor) -> torch.Tensor:
                out = real_logits(hidden)
                box["l"] = out.detach().float().cpu().clone()
                return out

            model.logits = logits
            fused = model.fused_decoder  # a decode-only step of a fused model: logits from the C step
            if fused is not None:
                real_fused = fused.step

                def fused_step(*args: Any) -> Any:
                    hidden, out = real_fused(*args)
                    box["l"] = out.detach().float().cpu().clone()
                    return hidden, out

                fused.step = fused_step
            try:
                result = real_step(model, pool, batch)
            finally:
                del model.logits
                if fused is not None:
                    del fused.step
            for r, seq in enumerate(batch):
                self.rows[(seq.request_id, len(seq.output))] = box["l"][r]
            return result

        monkeypatch.setattr(engine_module, "run_step", step)


class ValidatorLogits:
    """Instrumentation: the validator's logits of every scored row, in `score_calls` order (the
    prefix passes are not scored rows and are not recorded). The scorer packs calls in its own
    order (a radix walk over their prompts, `ModelScorer.score_many`): each pass's rows are kept
    by request and put back in the order the requests were given."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.given: list[Any] = []  # the requests, as given to `score_many` (kept alive: ids unique)
        self.rows: dict[int, torch.Tensor] = {}  # by id of the request
        self.passes: list[int] = []  # scored rows per packed pass
        real = scoring_module._packed_results
        real_many = ModelScorer.score_many

        def packed(model: Any, rows: torch.Tensor, requests: Any, top_k: int) -> Any:
            logits = model.output(rows).float().cpu().clone()
            at = 0
            for r in requests:
                self.rows[id(r)] = logits[at : at + len(r.output_ids)]
                at += len(r.output_ids)
            self.passes.append(rows.shape[0])
            return real(model, rows, requests, top_k)

        def many(scorer: ModelScorer, requests: Any) -> Any:
            self.given += [r for r in requests if r.output_ids]
            return real_many(scorer, requests)

        monkeypatch.setattr(scoring_module, "_packed_results", packed)
        monkeypatch.setattr(ModelScorer, "score_many", many)

    def take(self) -> torch.Tensor:
        out = torch.cat([self.rows[id(r)] for r in self.given])
        self.given.clear()
        self.rows.clear()
        return out


def generate(engine: Any, jobs: Sequence[tuple[Sequence[int], SamplingParams]], threads: int) -> list[Any]:
    """Run ``jobs`` concurrently through the node's engine, its step thread at ``threads``."""

    async def go() -> list[Any]:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)  # the engine's step thread takes the count at start
        try:
            await engine.start()
        finally:
            torch.set_num_threads(before)
        try:
            handles = [engine.submit(ids, p, request_id=f"job-{i}") for i, (ids, p) in enumerate(jobs)]
            return [await h.result() for h in handles]
        finally:
            await engine.stop()

    return asyncio.run(go())


def as_call(i: int, result: Any, params: SamplingParams) -> LLMCall:
    """The call as a trace records it (fingerprints as dag-cbor maps)."""
    fps = [
        {"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in result.fingerprints
    ]
    return LLMCall(
        call=i,
        model_id="0x",
        prompt_ids=tuple(result.prompt_ids),
        output_ids=tuple(result.output_ids),
        logprobs=tuple(result.logprobs),
        fingerprints=fps,
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        max_new_tokens=params.max_new_tokens,
        stop_token_ids=None,
        finish_reason=result.finish_reason,
        text=None,
    )


def sampled_jobs(tokenizer: Any, n: int, seed: int) -> list[tuple[list[int], SamplingParams]]:
    """``n`` chat calls, a greedy one every 10th, the rest sampled at T in 0.5..1.5 (where the
    sampled bound is tightest) with top_p from near 1 to tiny."""
    rng = random.Random(seed)
    jobs = []
    for k in range(n):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[k % len(QUESTIONS)]}])
        t = 0.0 if k % 10 == 9 else rng.uniform(0.5, 1.5)
        p = SamplingParams(
            max_new_tokens=16, temperature=t, top_p=rng.choice(TOP_PS), seed=rng.randrange(2**63)
        )
        jobs.append((ids, p))
    return jobs


def worst_draw_margin(node: torch.Tensor, val: torch.Tensor, token: int, t: float, top_p: float) -> float:
    """The validator's margin (its rule's nucleus; `sampling._interval_margin`) for ``token`` at the
    worse of the two ends of the node's CDF interval of it: the honest margin a seed placing the
    draw exactly on the node's boundary would produce."""

    def interval(logits: torch.Tensor) -> tuple[Any, Any, Any, torch.Tensor, Any]:
        probs = torch.softmax(logits.double() / t, -1)
        support = probs
        if top_p < 1:
            members = sampling._nucleus(probs, top_p)
            support = torch.zeros_like(probs)
            support[members] = probs[members]
        cdf = support.cumsum(0)
        lo = cdf[token - 1] if token > 0 else torch.tensor(0.0, dtype=torch.float64)
        log_p = torch.log_softmax(logits.double() / t, -1)[token]
        return lo, cdf[token], cdf[-1], support, log_p

    lo_n, hi_n, mass_n, _, _ = interval(node)
    lo_v, hi_v, mass_v, support_v, log_p_v = interval(val)
    if support_v[token] == 0:
        return float("inf")
    ends = (float(lo_n / mass_n), float(hi_n / mass_n) - 1e-16)
    return max(
        float(sampling._interval_margin(lo_v, hi_v, mass_v, torch.tensor(u, dtype=torch.float64), t, log_p_v))
        for u in ends
    )


def usage(
    calls: Sequence[LLMCall],
    results: Sequence[Any],
    scored: Sequence[Any],
    val_rows: torch.Tensor,
    node: NodeLogits,
    tol: Tolerance,
) -> dict[str, float]:
    """Greatest share of each bound the honest calls use (see the module docstring)."""
    worst = {"logprob": 0.0, "fingerprint": 0.0, "reported_margin": 0.0, "worst_draw": 0.0}
    at = 0
    for call, result, s in zip(calls, results, scored, strict=True):
        n = len(call.output_ids)
        rows, at = val_rows[at : at + n], at + n
        greedy = sampling.is_greedy(call.temperature)
        bound = tol.selection_margin if greedy else tol.sample_bound(call.temperature)
        lp = max((abs(a - b) for a, b in zip(call.logprobs, s.logprobs, strict=True)), default=0.0)
        worst["logprob"] = max(worst["logprob"], lp / tol.logprob_atol)
        worst["reported_margin"] = max(worst["reported_margin"], max(s.margins or (0.0,)) / bound)
        refs = {f.index: dict(zip(f.indices, f.values, strict=True)) for f in s.fingerprints}
        for f in claimed_fingerprints(call.fingerprints):
            for d, v in zip(f.indices, f.values, strict=True):
                if d in refs[f.index]:
                    err = abs(refs[f.index][d] - v) / (tol.hidden_atol + tol.hidden_rtol * abs(v))
                    worst["fingerprint"] = max(worst["fingerprint"], err)
        if not greedy:
            for i, token in enumerate(call.output_ids):
                m = worst_draw_margin(
                    node.rows[(result.request_id, i)], rows[i], token, call.temperature, call.top_p
                )
                worst["worst_draw"] = max(worst["worst_draw"], m / bound)
    assert at == val_rows.shape[0], "validator rows and claimed tokens out of step"
    return worst


def findings(
    scorer: ModelScorer, calls: Sequence[LLMCall], scored: Sequence[Any], tol: Tolerance
) -> list[Any]:
    out = []
    for c, s in zip(calls, scored, strict=True):
        out += check_shape(c, scorer.eos_ids) + check_scores(c, s, tol)
    return out


def score_as(
    scorer: ModelScorer, calls: Sequence[LLMCall], per_pass: int | None, capture: ValidatorLogits
) -> tuple[list[Any], torch.Tensor]:
    """Score ``calls`` as a validator whose receipts bring ``per_pass`` calls to a `score_many`
    (``None``: all of them at once, packed up to ``MAX_PACKED_TOKENS`` per pass)."""
    groups = (
        [list(calls)]
        if per_pass is None
        else [calls[i : i + per_pass] for i in range(0, len(calls), per_pass)]
    )
    scored = [s for g in groups for s in score_calls(scorer, g)]
    return scored, capture.take()


# -------------------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    """The scorer sets torch's thread count in the thread that scores: give it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fp32_node(smollm2_dir: Path) -> Any:
    from supernet.node.llm import LLMEngine

    return LLMEngine.load(smollm2_dir, compute="float32")


@pytest.fixture(scope="module")
def fp16_node(smollm2_dir: Path) -> Any:
    from supernet.node.llm import LLMEngine

    return LLMEngine.load(smollm2_dir, compute="float16-weights")


@pytest.fixture(scope="module")
def fp32_validator(smollm2_dir: Path) -> ModelScorer:
    return ModelScorer.load(str(smollm2_dir), threads=2, dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def fp16_validator(smollm2_dir: Path) -> ModelScorer:
    return ModelScorer.load(str(smollm2_dir), threads=1, dtype="float16-weights", device="cpu")


# ------------------------------------------------------------------------------------------ tests


def test_defence_rotary_tables_do_not_depend_on_the_node_max_seq_len(smollm2_dir: Path) -> None:
    """A node built with ``max_seq_len`` 2048 has a 2048-row rotary table; the validator's has
    ``max_position_embeddings`` (8192) rows. Were cos/sin computed differently for a shorter table
    (vectorised body against scalar tail), every position would carry a systematic offset. They
    are bit-identical at every length tried, including tails that do not fill a SIMD vector."""
    import json

    cfg = LlamaConfig.from_hf(json.loads((smollm2_dir / "config.json").read_text()))
    cos_v, sin_v = rope_tables(cfg, cfg.max_position)
    assert cfg.max_position == 8192
    for n in (2048, 2047, 1000, 777, 33, 1):
        cos_n, sin_n = rope_tables(cfg, n)
        assert torch.equal(cos_n, cos_v[:n]) and torch.equal(sin_n, sin_v[:n]), n


def test_defence_float32_sampled_calls_verify_across_thread_counts_and_packings(
    fp32_node: Any, fp32_validator: ModelScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CALLS honest float32 calls (sampled at T in 0.5..1.5 with top_p 1 .. 0.05, a tenth greedy),
    decoded by a node with ONE torch thread in batches of up to 16, re-scored by a validator with
    TWO threads (a) all packed together (up to 512 tokens, ~30 calls, per pass, many short rows of
    different calls side by side), (b) one receipt's calls per pass (3), (c) one call per pass.
    Every packing must give no finding, and honest rounding must stay below FRACTION of every
    bound, the sampled one measured at the worst draw a user could aim for (measured: logprobs
    1.7%, fingerprints 1.7%, worst draw 4.8% of ``sample_bound``)."""
    node, val = NodeLogits(monkeypatch), ValidatorLogits(monkeypatch)
    jobs = sampled_jobs(fp32_node.tokenizer, CALLS, seed=1)
    results = generate(fp32_node, jobs, threads=1)
    calls = [as_call(i, r, p) for i, (r, (_, p)) in enumerate(zip(results, jobs, strict=True))]
    tol = Tolerance.for_pair("float32", fp32_validator.dtype)
    assert tol == Tolerance()
    for per_pass in (None, 3, 1):
        scored, rows = score_as(fp32_validator, calls, per_pass, val)
        assert torch.get_num_threads() == 2  # the validator really scored with two threads
        found = findings(fp32_validator, calls, scored, tol)
        used = usage(calls, results, scored, rows, node, tol)
        print(f"float32 node 1 thread / validator 2 threads, {per_pass or 'all'} per pass: {used}")
        assert found == [], found[:3]
        assert max(used.values()) < FRACTION, used
    assert max(val.passes) > 100  # (a) really packed many calls' rows into one pass (rows, not calls)


def test_defence_float16_weights_calls_verify_across_fbgemm_batch_sizes_and_threads(
    fp16_node: Any, fp16_validator: ModelScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CPU default format. The node decodes with TWO threads at fbgemm batch sizes 1..16 (the
    engine's active sequences); the validator scores with ONE thread at M = one call's tokens
    (one call per pass), two calls, or up to 512 packed tokens. fbgemm's fp16 kernel blocks M
    differently per size; if that changed the K-summation order the differences would show here.
    Measured: no finding; logprobs 2.4%, fingerprints 1.8%, worst draw 8% of ``sample_bound``
    (the largest share of any environment tried, still 12x inside); identical with the thread
    counts swapped."""
    node, val = NodeLogits(monkeypatch), ValidatorLogits(monkeypatch)
    jobs = sampled_jobs(fp16_node.tokenizer, CALLS, seed=2)
    results = generate(fp16_node, jobs, threads=2)
    calls = [as_call(i, r, p) for i, (r, (_, p)) in enumerate(zip(results, jobs, strict=True))]
    tol = Tolerance.for_pair("float16-weights", fp16_validator.dtype)
    assert tol == Tolerance()
    for per_pass in (None, 2, 1):
        scored, rows = score_as(fp16_validator, calls, per_pass, val)
        assert torch.get_num_threads() == 1
        found = findings(fp16_validator, calls, scored, tol)
        used = usage(calls, results, scored, rows, node, tol)
        print(f"float16-weights node 2 threads / validator 1 thread, {per_pass or 'all'} per pass: {used}")
        assert found == [], found[:3]
        assert max(used.values()) < FRACTION, used


def test_defence_a_call_at_the_node_context_edge_packed_with_short_calls_verifies(
    fp16_node: Any, fp16_validator: ModelScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user fills the node's context: a 2032-token prompt with ``max_new_tokens`` 16 ends exactly
    at the node's ``max_seq_len`` (2048), sampled at T = 0.7 (bound 2.9e-4) and T = 1.3 / top_p
    0.95; a 440-token call shares a pass with a one-token call, then short sampled and greedy calls.
    The validator scores them in one `score_many` (its ``max_positions`` is 8192; the two long calls,
    one prompt, share a prefix pass of it, against the node's KV-cache decode). All verify, well inside
    every bound (measured worst draw 1.8%)."""
    node, val = NodeLogits(monkeypatch), ValidatorLogits(monkeypatch)
    tok = fp16_node.tokenizer
    text = " ".join(
        f"Item {i}: the {('red', 'blue', 'green')[i % 3]} box holds {i * 7 % 13} stones." for i in range(400)
    )
    full = tok.apply_chat_template([{"role": "user", "content": text}])
    edge = fp16_node.max_seq_len
    assert edge == 2048 and len(full) > edge
    short = tok.apply_chat_template([{"role": "user", "content": "Say hi."}])
    jobs = [
        (full[-2032:], SamplingParams(max_new_tokens=16, temperature=0.7, seed=5)),
        (full[-2032:], SamplingParams(max_new_tokens=16, temperature=1.3, top_p=0.95, seed=6)),
        (full[-440:], SamplingParams(max_new_tokens=12, temperature=1.0, seed=8)),
        (short, SamplingParams(max_new_tokens=1, temperature=0.9, top_p=0.05, seed=9)),
        (short, SamplingParams(max_new_tokens=8, temperature=1.0, seed=7)),
        (short, SamplingParams(max_new_tokens=8, temperature=0.0)),
    ]
    results = generate(fp16_node, jobs, threads=1)
    calls = [as_call(i, r, p) for i, (r, (_, p)) in enumerate(zip(results, jobs, strict=True))]
    assert len(calls[0].prompt_ids) + len(calls[0].output_ids) == edge  # right at the context edge
    assert all(len(c.prompt_ids) + len(c.output_ids) <= fp16_validator.max_positions for c in calls)
    tol = Tolerance.for_pair("float16-weights", fp16_validator.dtype)
    scored, rows = score_as(fp16_validator, calls, None, val)
    # passes (scored rows): every row once; the two long calls, one prompt, over one prefix pass
    assert sum(val.passes) == sum(len(c.output_ids) for c in calls), val.passes
    assert 2 * 16 in val.passes, val.passes
    found = findings(fp16_validator, calls, scored, tol)
    used = usage(calls, results, scored, rows, node, tol)
    print(f"context edge, float16-weights: {used}")
    assert found == [], found[:3]
    assert max(used.values()) < FRACTION, used


def test_defence_eos_on_the_last_budgeted_token_and_one_token_calls_verify(
    fp32_node: Any, fp32_validator: ModelScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A user who knows where the greedy answer ends sets ``max_new_tokens`` to exactly that length,
    so EOS is the last budgeted token (the node says ``stop``, not ``length``), and sends calls of one
    token (the shortest output the engine makes; the validator's one-row head block). Packed with
    each other, none is flagged by `check_shape` or `check_scores`."""
    node, val = NodeLogits(monkeypatch), ValidatorLogits(monkeypatch)
    tok = fp32_node.tokenizer
    prompts = [tok.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS[:6]]
    probe = generate(fp32_node, [(p, SamplingParams(max_new_tokens=48)) for p in prompts], threads=1)
    ended = [(p, len(r.output_ids)) for p, r in zip(prompts, probe, strict=True) if r.finish_reason == "stop"]
    assert ended, "no greedy answer ended within 48 tokens"
    jobs = [(p, SamplingParams(max_new_tokens=n)) for p, n in ended]
    jobs += [(p, SamplingParams(max_new_tokens=1, temperature=1.0, seed=s)) for s, p in enumerate(prompts)]
    jobs += [(prompts[0], SamplingParams(max_new_tokens=1))]
    results = generate(fp32_node, jobs, threads=1)
    calls = [as_call(i, r, p) for i, (r, (_, p)) in enumerate(zip(results, jobs, strict=True))]
    at_budget = [c for c in calls[: len(ended)] if c.finish_reason == "stop"]
    assert at_budget and all(len(c.output_ids) == c.max_new_tokens for c in at_budget)
    assert all(c.output_ids[-1] in fp32_validator.eos_ids for c in at_budget)
    assert all(len(c.output_ids) == 1 for c in calls[len(ended) :])
    tol = Tolerance.for_pair("float32", fp32_validator.dtype)
    for per_pass in (None, 1):
        scored, rows = score_as(fp32_validator, calls, per_pass, val)
        found = findings(fp32_validator, calls, scored, tol)
        used = usage(calls, results, scored, rows, node, tol)
        print(f"EOS at budget / one-token calls, {per_pass or 'all'} per pass: {used}")
        assert found == [], found[:3]
        assert max(used.values()) < FRACTION, used


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def seed_aimed_at(target: float, position: int, tries: int = 1 << 22, start: int = 1) -> int:
    """The seed among ``tries`` whose draw at ``position`` is nearest ``target`` (a user's search,
    vectorised `sampling.uniform`)."""
    seeds = np.arange(start, start + tries, dtype=np.uint64)
    with np.errstate(over="ignore"):
        u = (_splitmix64(_splitmix64(seeds) ^ np.uint64(position)) >> np.uint64(11)).astype(
            np.float64
        ) * 2.0**-53
    best = int(np.abs(u - target).argmin())
    seed = int(seeds[best])
    assert uniform(seed, position) == float(u[best])  # the search is the protocol's own draw
    return seed


def test_defence_seeds_aimed_at_a_near_tie_do_not_frame_the_node(
    fp16_node: Any, fp16_validator: ModelScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The framing attack itself: a user computes, with the validator's own model, the first output
    token's distribution for each of 8 prompts, and searches 4M seeds for the one whose draw lands
    within ~1e-7 of the CDF edge between the two likeliest tokens (T = 0.6 and 1.0), so that the
    node's and validator's rounding disagree on which side of the edge the draw falls. The honest
    node's token may then be "wrong" for the validator, but only by the rounding of that edge,
    which the sampled bound covers (measured: no finding, worst draw far inside the bound)."""
    node, val = NodeLogits(monkeypatch), ValidatorLogits(monkeypatch)
    tok = fp16_node.tokenizer
    jobs = []
    aimed = []
    for k, q in enumerate(QUESTIONS[:8]):
        prompt = tok.apply_chat_template([{"role": "user", "content": q}])
        # the validator's logits of the first output token: score any one-token output
        score_calls(fp16_validator, [as_call(0, _Stub(prompt), SamplingParams(temperature=1.0))])
        logits = val.take()[0]
        for t in (0.6, 1.0):
            probs = torch.softmax(logits.double() / t, -1)
            a = min(probs.topk(2).indices.tolist())  # the lower id of the two likeliest
            edge = float(probs[: a + 1].sum() / probs.sum())  # boundary between the ids a and a+1
            seed = seed_aimed_at(edge, len(prompt), start=1 + k * 1_000_003)
            aimed.append(abs(uniform(seed, len(prompt)) - edge))
            jobs.append((prompt, SamplingParams(max_new_tokens=4, temperature=t, seed=seed)))
    assert max(aimed) < 2e-6, aimed  # every draw really sits on a boundary
    results = generate(fp16_node, jobs, threads=2)
    calls = [as_call(i, r, p) for i, (r, (_, p)) in enumerate(zip(results, jobs, strict=True))]
    tol = Tolerance.for_pair("float16-weights", fp16_validator.dtype)
    scored, rows = score_as(fp16_validator, calls, None, val)
    found = findings(fp16_validator, calls, scored, tol)
    used = usage(calls, results, scored, rows, node, tol)
    first = [s.margins[0] for s in scored if s.margins]
    print(f"aimed draws (distance to edge {max(aimed):.2g}): first-token margins {max(first):.3g}, {used}")
    assert found == [], found[:3]
    assert max(used.values()) < FRACTION, used


class _Stub:
    """A one-token output of ``prompt`` (what a user scores to read the first token's logits)."""

    def __init__(self, prompt: Sequence[int]) -> None:
        self.prompt_ids, self.output_ids, self.logprobs, self.fingerprints = tuple(prompt), (0,), (0.0,), ()
        self.finish_reason = "length"
