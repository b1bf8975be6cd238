"""Teacher-forced scoring and the claimed-vs-rescored verdict."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from llm_fixtures import make_tiny_llama
from supernet.node.llm import GenerationResult, LLMEngine, SamplingParams
from supernet.node.llm.scoring import (
    SAMPLE_MARGIN_FLOOR,
    ScoreRequest,
    Tolerance,
    compare_generation,
    prompt_kv,
    score,
    score_packed,
    score_with_prompt_kv,
)
from supernet.node.llm.types import ScoreResult

PROMPT = [3, 14, 15, 92, 65]


async def _generate(engine: LLMEngine, params: SamplingParams, n: int = 3) -> list[GenerationResult]:
    await engine.start()
    try:
        handles = [engine.submit([*PROMPT, i], params) for i in range(n)]
        return [await h.result() for h in handles]
    finally:
        await engine.stop()


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(max_new_tokens=70, stop_token_ids=()),
        SamplingParams(max_new_tokens=70, temperature=1.0, top_p=0.9, seed=5, stop_token_ids=()),
    ],
    ids=["greedy", "sampled"],
)
async def test_honest_generation_passes(params: SamplingParams) -> None:
    engine = LLMEngine.from_model(make_tiny_llama(9), max_batch=4)
    for claimed in await _generate(engine, params):
        rescored = engine.score(claimed.prompt_ids, claimed.output_ids, params)
        verdict = compare_generation(claimed, rescored)
        assert verdict.ok, verdict.mismatches
        assert verdict.max_logprob_error < 1e-4
        assert [f.index for f in rescored.fingerprints] == [0, 32, 64]
        assert len(rescored.top_tokens) == 70 and len(rescored.top_tokens[0]) == 5
        if params.greedy:
            assert all(
                top[0][0] == tok for top, tok in zip(rescored.top_tokens, claimed.output_ids, strict=True)
            )


async def test_swapped_token_is_flagged_at_its_position() -> None:
    params = SamplingParams(max_new_tokens=40, stop_token_ids=())
    engine = LLMEngine.from_model(make_tiny_llama(9), max_batch=4)
    claimed = (await _generate(engine, params, n=1))[0]
    out = list(claimed.output_ids)
    out[17] = (out[17] + 1) % engine.model.cfg.vocab_size
    forged = dataclasses.replace(claimed, output_ids=tuple(out))
    verdict = compare_generation(forged, engine.score(claimed.prompt_ids, out, params))
    assert not verdict.ok
    assert 17 in verdict.positions
    assert {m.kind for m in verdict.mismatches if m.index == 17} >= {"logprob", "selection"}


async def test_a_different_model_is_flagged() -> None:
    params = SamplingParams(max_new_tokens=40, stop_token_ids=())
    cheap = LLMEngine.from_model(make_tiny_llama(10), max_batch=4)
    honest = LLMEngine.from_model(make_tiny_llama(9), max_batch=4)
    claimed = (await _generate(cheap, params, n=1))[0]
    verdict = compare_generation(claimed, honest.score(claimed.prompt_ids, claimed.output_ids, params))
    assert not verdict.ok
    assert {"logprob", "fingerprint", "selection"} <= {m.kind for m in verdict.mismatches}


async def test_non_finite_claims_never_pass() -> None:
    """NaN compares false with every bound: a node must not hide a model swap behind NaN values."""
    params = SamplingParams(max_new_tokens=40, stop_token_ids=())
    engine = LLMEngine.from_model(make_tiny_llama(9), max_batch=4)
    claimed = (await _generate(engine, params, n=1))[0]
    rescored = engine.score(claimed.prompt_ids, claimed.output_ids, params)
    assert compare_generation(claimed, rescored).ok
    nan_logprobs = dataclasses.replace(claimed, logprobs=(float("nan"),) * len(claimed.logprobs))
    verdict = compare_generation(nan_logprobs, rescored)
    assert {m.kind for m in verdict.mismatches} == {"logprob"}
    assert len(verdict.mismatches) == len(claimed.logprobs)
    fp = claimed.fingerprints[0]
    nan_fp = dataclasses.replace(fp, values=(float("nan"),) * len(fp.values))
    verdict = compare_generation(
        dataclasses.replace(claimed, fingerprints=(nan_fp, *claimed.fingerprints[1:])), rescored
    )
    assert [(m.index, m.kind) for m in verdict.mismatches] == [(fp.index, "fingerprint")]


def test_length_mismatch_and_tolerance_presets() -> None:
    engine = LLMEngine.from_model(make_tiny_llama(9))
    claimed = GenerationResult((1, 2), (3, 4), "length", (-1.0, -1.0), ())
    verdict = compare_generation(claimed, engine.score([1, 2], [3]))
    assert not verdict.ok and verdict.mismatches[0].kind == "length"
    assert Tolerance.bf16().logprob_atol > Tolerance().logprob_atol
    with pytest.raises(ValueError):
        engine.score([], [1])
    assert engine.score([1], []).logprobs == ()


def _assert_same_scores(a: ScoreResult, b: ScoreResult, atol: float = 1e-4) -> None:
    assert len(a.logprobs) == len(b.logprobs)
    assert max((abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)), default=0.0) <= atol
    for ta, tb in zip(a.top_tokens, b.top_tokens, strict=True):
        assert [t for t, _ in ta] == [t for t, _ in tb]
        assert max(abs(x - y) for (_, x), (_, y) in zip(ta, tb, strict=True)) <= atol
    assert [f.index for f in a.fingerprints] == [f.index for f in b.fingerprints]
    for fa, fb in zip(a.fingerprints, b.fingerprints, strict=True):
        assert fa.indices == fb.indices
        assert max(abs(x - y) for x, y in zip(fa.values, fb.values, strict=True)) <= atol
    assert (a.margins is None) == (b.margins is None)
    for x, y in zip(a.margins or (), b.margins or (), strict=True):
        assert x == y or abs(x - y) <= atol


SAMPLED = SamplingParams(max_new_tokens=40, temperature=1.0, top_p=0.9, seed=5, stop_token_ids=())
LONG_PROMPT = [(7 * i + 3) % 60 + 1 for i in range(24)]


@pytest.mark.parametrize("start", [1, 10, 23])
def test_score_with_cached_prefix_matches_full_pass(start: int) -> None:
    model = make_tiny_llama(4)
    output = [(5 * i + 1) % 60 + 1 for i in range(40)]
    full = score(model, LONG_PROMPT, output, SAMPLED)
    _, kv = score_with_prompt_kv(model, LONG_PROMPT, output, keep_prompt=start)
    assert kv is not None and kv[0].shape[2] == start
    _assert_same_scores(full, score(model, LONG_PROMPT, output, SAMPLED, prefix=kv))
    # keys/values gathered on top of a prefix cover the whole kept span
    again, kv2 = score_with_prompt_kv(model, LONG_PROMPT, output, SAMPLED, prefix=kv, keep_prompt=24)
    _assert_same_scores(full, again)
    assert kv2 is not None and kv2[0].shape[2] == 24
    torch.testing.assert_close(kv2[0][:, :, :start], kv[0])


def test_score_rejects_a_prefix_covering_the_prompt() -> None:
    model = make_tiny_llama(4)
    _, kv = score_with_prompt_kv(model, LONG_PROMPT, [1, 2], keep_prompt=24)
    assert kv is not None
    with pytest.raises(ValueError, match="prefix"):
        score(model, LONG_PROMPT, [1, 2], prefix=kv)


def test_engine_score_reuses_prompt_prefixes() -> None:
    cached = LLMEngine.from_model(make_tiny_llama(6), max_batch=2)
    plain = LLMEngine.from_model(make_tiny_llama(6), max_batch=2, prefix_cache=False)
    output = [(3 * i + 2) % 60 + 1 for i in range(40)]
    other = [*LONG_PROMPT[:20], 9, 8, 7]
    for prompt in (LONG_PROMPT, LONG_PROMPT, other, LONG_PROMPT[:18], other):
        _assert_same_scores(plain.score(prompt, output, SAMPLED), cached.score(prompt, output, SAMPLED))
    assert tuple(LONG_PROMPT) in cached._score_prefixes
    prefix = cached._score_prefix(tuple(other))
    assert prefix is not None and prefix[0].shape[2] == 22  # the scored `other` itself, less its last token
    assert cached._score_prefix((50, 51, 52) * 8) is None
    assert cached.score(LONG_PROMPT, []).logprobs == ()


def _packed_requests() -> list[ScoreRequest]:
    """Prompts sharing 12 tokens, outputs of different lengths (one empty), greedy and sampled."""
    tails = ([1, 2, 3], [9], [4, 4, 4, 4, 4, 4, 4], [8, 7])
    outputs = (
        [(5 * i + 1) % 60 + 1 for i in range(40)],
        [3, 1, 4],
        [],
        [(7 * i) % 60 + 1 for i in range(17)],
    )
    params = (SAMPLED, None, SAMPLED, None)
    return [
        ScoreRequest([*LONG_PROMPT[:12], *t], o, p) for t, o, p in zip(tails, outputs, params, strict=True)
    ]


@pytest.mark.parametrize("shared", [0, 5, 12])
def test_score_packed_matches_one_pass_per_request(shared: int) -> None:
    model = make_tiny_llama(4)
    requests = _packed_requests()
    prefix = prompt_kv(model, LONG_PROMPT[:shared]) if shared else None
    packed = score_packed(model, requests, prefix=prefix)
    assert len(packed) == len(requests)
    for r, got in zip(requests, packed, strict=True):
        _assert_same_scores(score(model, r.prompt_ids, r.output_ids, r.params), got)
    assert packed[2].logprobs == () and packed[2].margins == ()  # the empty output
    assert len(packed[0].fingerprints) > 1 and packed[0].margins is not None and packed[1].margins is None


def test_score_packed_keeps_requests_apart() -> None:
    """A request's scores do not depend on what it is packed with (the mask isolates it)."""
    model = make_tiny_llama(4)
    a, b, _, d = _packed_requests()
    alone = score_packed(model, [a])[0]
    _assert_same_scores(alone, score_packed(model, [b, a, d])[1])
    changed = ScoreRequest([*b.prompt_ids[:-1], 50], [*b.output_ids, 11], b.params)
    _assert_same_scores(alone, score_packed(model, [changed, a, d])[1])


def test_score_packed_rejects_a_prompt_inside_the_prefix() -> None:
    model = make_tiny_llama(4)
    kv = prompt_kv(model, LONG_PROMPT[:12])
    assert kv[0].shape[2] == 12
    with pytest.raises(ValueError, match="prefix"):
        score_packed(model, [ScoreRequest(LONG_PROMPT[:12], [1, 2])], prefix=kv)
    with pytest.raises(ValueError, match="prefix"):
        score_packed(model, [ScoreRequest([], [1, 2])])


def test_the_sampled_bound_follows_the_noise_and_is_never_looser_than_before() -> None:
    """`Tolerance.sample_bound`: a same-format pair allows 2e-4 of CDF mass at T = 1 and 2e-4 / T
    below (logit noise moves softmax(l / T)'s CDF by about noise / T), never past the former flat
    1e-3; the bf16 bounds and the screen's stay flat below 1, and so does a bound set above the cap.
    Above 1 every bound narrows as 1 / T (down to SAMPLE_MARGIN_FLOOR): a flat one let a node steer
    every token at T = 5 (`tests/unit/test_review_framing4.py`)."""
    exact = Tolerance()
    assert exact.sample_bound(1.0) == 2e-4
    assert exact.sample_bound(2.0) == pytest.approx(1e-4) and exact.sample_bound(5.0) == pytest.approx(4e-5)
    assert Tolerance.bf16().sample_bound(4.0) == pytest.approx(Tolerance.bf16().sample_margin / 4)
    assert exact.sample_bound(1e300) == SAMPLE_MARGIN_FLOOR > 0
    assert exact.sample_bound(0.5) == pytest.approx(4e-4)
    assert exact.sample_bound(0.1) == exact.sample_bound(1e-6) == 1e-3
    assert all(exact.sample_bound(t) <= 1e-3 for t in (1e-9, 0.01, 0.3, 0.9, 1.0, 5.0))
    for flat in (Tolerance.bf16(), Tolerance.screening("float16-weights", "bfloat16")):
        assert flat.sample_bound(0.05) == flat.sample_bound(1.0) == flat.sample_margin
    assert Tolerance(sample_margin=0.01).sample_bound(0.2) == 0.01
