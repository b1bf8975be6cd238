"""Teacher-forced scoring and the claimed-vs-rescored verdict."""

from __future__ import annotations

import dataclasses

import pytest
from llm_fixtures import make_tiny_llama
from supernet.node.llm import GenerationResult, LLMEngine, SamplingParams
from supernet.node.llm.scoring import Tolerance, compare_generation

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


def test_length_mismatch_and_tolerance_presets() -> None:
    engine = LLMEngine.from_model(make_tiny_llama(9))
    claimed = GenerationResult((1, 2), (3, 4), "length", (-1.0, -1.0), ())
    verdict = compare_generation(claimed, engine.score([1, 2], [3]))
    assert not verdict.ok and verdict.mismatches[0].kind == "length"
    assert Tolerance.bf16().logprob_atol > Tolerance().logprob_atol
    with pytest.raises(ValueError):
        engine.score([], [1])
    assert engine.score([1], []).logprobs == ()
