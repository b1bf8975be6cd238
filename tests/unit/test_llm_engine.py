"""The continuous-batching engine on a tiny random Llama: batching invariance, streaming, preemption."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
import torch
from llm_fixtures import make_tiny_llama
from supernet.node.llm import (
    ContextOverflowError,
    EngineStoppedError,
    GenerationResult,
    LLMEngine,
    SamplingParams,
    SequenceFinishedError,
)
from supernet.node.llm.kvcache import PrefixCache

GREEDY = SamplingParams(max_new_tokens=40, stop_token_ids=())
SAMPLED = SamplingParams(max_new_tokens=40, temperature=0.9, top_p=0.95, seed=11, stop_token_ids=())
PROMPTS = [
    [5, 6, 7],
    [9, 3, 4, 8, 1, 2, 30],
    [44],
    [12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23],
    [70, 71],
]


@pytest_asyncio.fixture
async def engine() -> AsyncIterator[LLMEngine]:
    eng = LLMEngine.from_model(make_tiny_llama(7), max_batch=4, max_seq_len=128)
    await eng.start()
    yield eng
    await eng.stop()


def _assert_same_generations(expected: list[GenerationResult], got: list[GenerationResult]) -> None:
    """Each generation equals its reference: tokens, logprobs up to rounding, fingerprint rows."""
    for want, have in zip(expected, got, strict=True):
        assert want.output_ids == have.output_ids
        assert max(abs(x - y) for x, y in zip(want.logprobs, have.logprobs, strict=True)) < 1e-4
        assert [f.indices for f in want.fingerprints] == [f.indices for f in have.fingerprints]


async def _alone(engine: LLMEngine, prompt: list[int], params: SamplingParams):  # type: ignore[no-untyped-def]
    return await engine.submit(prompt, params).result()


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
async def test_batched_equals_one_at_a_time(engine: LLMEngine, params: SamplingParams) -> None:
    alone = [await _alone(engine, p, params) for p in PROMPTS]
    handles = [engine.submit(p, params, request_id=f"r{i}") for i, p in enumerate(PROMPTS)]  # 5 > 4 slots
    together = [await h.result() for h in handles]
    for a, b in zip(alone, together, strict=True):
        assert a.output_ids == b.output_ids
        assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)) < 1e-4
        assert [f.indices for f in a.fingerprints] == [f.indices for f in b.fingerprints]
    assert together[2].request_id == "r2" and together[0].finish_reason == "length"


async def test_staggered_arrivals_join_between_steps(engine: LLMEngine) -> None:
    alone = [await _alone(engine, p, GREEDY) for p in PROMPTS[:3]]
    first = engine.submit(PROMPTS[0], GREEDY)
    seen = 0
    later = []
    async for _ in first:
        seen += 1
        if seen in (5, 17):
            later.append(engine.submit(PROMPTS[len(later) + 1], GREEDY))
    results = [await first.result()] + [await h.result() for h in later]
    assert [r.output_ids for r in results] == [r.output_ids for r in alone]


async def test_stream_events_match_the_result(engine: LLMEngine) -> None:
    handle = engine.submit(PROMPTS[1], SAMPLED)
    events = [ev async for ev in handle]
    result = await handle.result()
    assert [e.token_id for e in events] == list(result.output_ids)
    assert [e.position for e in events] == list(range(len(PROMPTS[1]), len(PROMPTS[1]) + 40))
    assert [e.logprob for e in events] == list(result.logprobs)
    assert [f.index for f in result.fingerprints] == [0, 32]


async def test_stop_token_ends_the_generation(engine: LLMEngine) -> None:
    free = await _alone(engine, PROMPTS[0], GREEDY)
    stop_at = free.output_ids[5]
    first = free.output_ids.index(stop_at)
    params = SamplingParams(max_new_tokens=40, stop_token_ids=(stop_at,))
    result = await _alone(engine, PROMPTS[0], params)
    assert result.finish_reason == "stop"
    assert result.output_ids == free.output_ids[: first + 1]


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
@pytest.mark.parametrize("cut", [1, 9, 33])
async def test_preempt_and_resume_continue_exactly(
    engine: LLMEngine, params: SamplingParams, cut: int
) -> None:
    whole = await _alone(engine, PROMPTS[3], params)
    handle = engine.submit(PROMPTS[3], params)
    n = 0
    async for _ in handle:
        n += 1
        if n == cut:
            break
    snapshot = await handle.preempt()
    stopped = await handle.result()
    assert stopped.finish_reason == "preempted"
    assert snapshot.output_ids == stopped.output_ids and len(snapshot.output_ids) >= cut
    assert snapshot.n_cached == len(PROMPTS[3]) + len(snapshot.output_ids) - 1
    resumed = await engine.submit(PROMPTS[3], params, resume=snapshot).result()
    assert resumed.output_ids == whole.output_ids
    assert resumed.logprobs == whole.logprobs  # bit-exact: same batch shape as the uninterrupted run
    assert resumed.fingerprints == whole.fingerprints


async def test_preempt_while_others_run_and_resume_twice(engine: LLMEngine) -> None:
    whole = await _alone(engine, PROMPTS[1], GREEDY)
    others = [engine.submit(p, GREEDY) for p in (PROMPTS[0], PROMPTS[2])]
    handle = engine.submit(PROMPTS[1], GREEDY)
    snap = await handle.preempt()
    for _ in range(2):
        handle = engine.submit(PROMPTS[1], GREEDY, resume=snap)
        async for _ev in handle:
            break
        snap = await handle.preempt()
    result = await engine.submit(PROMPTS[1], GREEDY, resume=snap).result()
    assert result.output_ids == whole.output_ids
    for h in others:
        assert (await h.result()).finish_reason == "length"


async def test_preempting_a_finished_sequence_raises(engine: LLMEngine) -> None:
    handle = engine.submit(PROMPTS[2], SamplingParams(max_new_tokens=2, stop_token_ids=()))
    await handle.result()
    with pytest.raises(SequenceFinishedError):
        await handle.preempt()


async def test_cancel(engine: LLMEngine) -> None:
    handle = engine.submit(PROMPTS[0], GREEDY)
    async for _ in handle:
        handle.cancel()
    result = await handle.result()
    assert result.finish_reason == "cancelled" and 1 <= len(result.output_ids) < 40


async def test_max_seq_len_limits_output(engine: LLMEngine) -> None:
    result = await _alone(engine, list(range(1, 101)), SamplingParams(max_new_tokens=100, stop_token_ids=()))
    assert result.finish_reason == "length" and len(result.output_ids) == 28
    with pytest.raises(ContextOverflowError):
        engine.submit(list(range(1, 101)) * 2, GREEDY)
    with pytest.raises(ValueError):
        engine.submit([], GREEDY)


async def test_stop_fails_outstanding_requests_and_submit_needs_start() -> None:
    eng = LLMEngine.from_model(make_tiny_llama(8), max_batch=2, max_seq_len=64)
    with pytest.raises(EngineStoppedError):
        eng.submit([1, 2], GREEDY)
    await eng.start()
    handles = [eng.submit([1, 2 + i], SamplingParams(max_new_tokens=60, stop_token_ids=())) for i in range(4)]
    await asyncio.sleep(0)
    await eng.stop()
    outcomes = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    assert any(isinstance(o, EngineStoppedError) for o in outcomes)
    assert not eng.running


async def test_event_loop_stays_responsive_during_steps(engine: LLMEngine) -> None:
    handles = [engine.submit(p, GREEDY) for p in PROMPTS[:4]]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.gather(*(h.result() for h in handles))
    task.cancel()
    assert ticks > engine.steps


SHARED = list(range(50, 70))  # a 20-token prefix (a chat template's system turn, say)


async def test_prefix_cache_prefills_only_the_rest_with_the_same_results() -> None:
    model = make_tiny_llama(7)
    plain = LLMEngine.from_model(model, max_batch=4, max_seq_len=128, prefix_cache=False)
    cached = LLMEngine(model, None, plain.weights_id, max_batch=4, max_seq_len=128)
    prompts = [[*SHARED, 5, 6, 7], [*SHARED, 9, 3], SHARED + list(range(40, 52)), [44, 45], [*SHARED, 8]]
    async with plain, cached:
        expected = [await _alone(plain, p, GREEDY) for p in prompts]
        first = [await _alone(cached, p, GREEDY) for p in prompts[:2]]  # the second proposes the prefix
        assert cached.prefixes is not None and tuple(SHARED) in cached.prefixes.entries
        # prefix hits and a prompt without the prefix, prefilled together, 5 requests for 4 slots
        handles = [cached.submit(p, GREEDY) for p in prompts]
        together = [await h.result() for h in handles]
        # a prefix hit preempted after its prefill and resumed
        handle = cached.submit(prompts[2], GREEDY)
        async for _ in handle:
            break
        resumed = await cached.submit(prompts[2], GREEDY, resume=await handle.preempt()).result()
        assert cached.prefixes.hits >= 5
    assert [r.output_ids for r in first] == [r.output_ids for r in expected[:2]]
    _assert_same_generations([*expected, expected[2]], [*together, resumed])
    for want, got in zip([*expected, expected[2]], [*together, resumed], strict=True):
        assert [f.index for f in want.fingerprints] == [f.index for f in got.fingerprints]


async def test_a_prefix_shared_within_one_batch_is_prefilled_once() -> None:
    model = make_tiny_llama(7)
    plain = LLMEngine.from_model(model, max_batch=4, max_seq_len=128, prefix_cache=False)
    cached = LLMEngine(model, None, plain.weights_id, max_batch=4, max_seq_len=128)
    prompts = [[*SHARED, 5, 6, 7], [*SHARED, 9, 3], [44, 45], SHARED + list(range(40, 52))]
    async with plain, cached:
        expected = [await _alone(plain, p, GREEDY) for p in prompts]
        handles = [cached.submit(p, GREEDY) for p in prompts]  # all in the first prefill, cache empty
        together = [await h.result() for h in handles]
        assert cached.prefixes is not None and tuple(SHARED) in cached.prefixes.entries
    _assert_same_generations(expected, together)


async def test_a_longer_shared_prefix_extends_a_cached_one_while_others_decode() -> None:
    # agents' calls share the system turn (cached), then an instruction (new): the batch computes
    # the instruction once on top of the cached turn, in a step that also decodes a running call
    model = make_tiny_llama(7)
    plain = LLMEngine.from_model(model, max_batch=4, max_seq_len=128, prefix_cache=False)
    cached = LLMEngine(model, None, plain.weights_id, max_batch=4, max_seq_len=128)
    more = [*SHARED, 90, 91, 92, 93, 94, 95]
    prompts = [[44, 45, 46], [*more, 5, 6, 7], [*more, 9], [*more, 1, 2]]
    async with plain, cached:
        expected = [await _alone(plain, p, GREEDY) for p in prompts]
        for p in ([*SHARED, 1], [*SHARED, 2]):  # the second caches SHARED
            await _alone(cached, p, GREEDY)
        running = cached.submit(prompts[0], GREEDY)
        async for _ in running:  # decoding when the others arrive
            break
        handles = [running] + [cached.submit(p, GREEDY) for p in prompts[1:]]
        together = [await h.result() for h in handles]
        assert cached.prefixes is not None and tuple(more) in cached.prefixes.entries
    _assert_same_generations(expected, together)


async def test_an_idle_engine_gives_its_kv_cache_back_and_serves_the_same_after() -> None:
    eng = LLMEngine.from_model(make_tiny_llama(7), max_batch=4, max_seq_len=512)
    eng.pool.initial_capacity = 16  # so the generation below grows the pool
    eng.pool.release()
    eng.kv_release_after_s = 0.2
    long = SamplingParams(max_new_tokens=120, stop_token_ids=())
    await eng.start()
    try:
        first = await asyncio.gather(*(eng.submit(p, long).result() for p in PROMPTS[:3]))
        assert eng.pool.capacity >= 128 and eng.kv_releases == 0  # grew; not yet idle long enough
        for _ in range(50):
            if eng.kv_releases:
                break
            await asyncio.sleep(0.05)
        assert eng.kv_releases == 1 and eng.load_stats["kv_releases"] == 1
        assert eng.pool.capacity == 16
        again = await asyncio.gather(*(eng.submit(p, long).result() for p in PROMPTS[:3]))
        _assert_same_generations(first, again)
    finally:
        await eng.stop()


# -- chunked prefill: a step computes at most ``prefill_chunk`` prompt tokens -----------------------

LONG = [(i * 37 + 11) % 90 + 3 for i in range(61)]  # 61 tokens: 9 chunks of 7


@pytest.mark.parametrize("params", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
async def test_chunked_prefill_gives_the_unchunked_results(params: SamplingParams) -> None:
    model = make_tiny_llama(7)
    whole = LLMEngine.from_model(model, max_batch=4, max_seq_len=128, prefix_cache=False)
    chunked = LLMEngine(model, None, whole.weights_id, max_batch=4, max_seq_len=128, prefill_chunk=7)
    prompts = [LONG, *PROMPTS, LONG[5:40]]  # 7 requests for 4 slots: some wait, some join mid-prefill
    async with whole, chunked:
        expected = [await _alone(whole, p, params) for p in prompts]
        alone = [await _alone(chunked, p, params) for p in prompts]
        handles = [chunked.submit(p, params) for p in prompts]
        together = [await h.result() for h in handles]
    _assert_same_generations(expected, alone)
    _assert_same_generations(expected, together)


async def test_a_long_prompt_does_not_hold_a_running_sequence() -> None:
    eng = LLMEngine.from_model(make_tiny_llama(7), max_batch=4, max_seq_len=128, prefill_chunk=7)
    async with eng:
        running = eng.submit(PROMPTS[0], SamplingParams(max_new_tokens=30, stop_token_ids=()))
        seen: list[int] = []  # the engine's step count at each of the running sequence's tokens
        long = None
        async for _ in running:
            seen.append(eng.steps)
            if len(seen) == 3:
                long = eng.submit(LONG, SamplingParams(max_new_tokens=1, stop_token_ids=()))
                long_events = asyncio.ensure_future(_events(long))
        assert long is not None
        events = await long_events
    # the running sequence got a token in every step, the 9 of the long prompt's prefill included
    assert seen == list(range(seen[0], seen[0] + 30))
    assert len(events) == 1 and events[0].prefilled == len(LONG)  # charged once, whole


async def _events(handle):  # type: ignore[no-untyped-def]
    return [ev async for ev in handle]


async def test_chunked_prefill_with_the_prefix_cache_and_a_preempt_mid_prefill() -> None:
    model = make_tiny_llama(7)
    plain = LLMEngine.from_model(model, max_batch=4, max_seq_len=128, prefix_cache=False)
    cached = LLMEngine(model, None, plain.weights_id, max_batch=4, max_seq_len=128, prefill_chunk=6)
    more = [*SHARED, 90, 91, 92, 93, 94, 95]
    prompts = [[*more, 5, 6, 7], [*more, 9], [44, 45], SHARED + list(range(40, 52)), [*SHARED, 8]]
    async with plain, cached:
        expected = [await _alone(plain, p, GREEDY) for p in prompts]
        # shared within one batch, over several chunks (the shared prefix does not fit one)
        together = [await h.result() for h in [cached.submit(p, GREEDY) for p in prompts]]
        assert cached.prefixes is not None and tuple(more) in cached.prefixes.entries
        # a hit: only the rest is computed, and charged
        hit = cached.submit(prompts[0], GREEDY)
        events = [ev async for ev in hit]
        assert events[0].prefilled == len(prompts[0]) - len(more)
        # preempted part-way through its prompt (two of its 11 chunks in, no token yet): resumed,
        # it prefills again; cancelled part-way, it leaves nothing behind
        long_alone = await _alone(plain, LONG, GREEDY)
        handle = await _two_steps_in(cached, LONG)
        snapshot = await handle.preempt()
        assert snapshot.output_ids == () and snapshot.keys is None
        resumed = await cached.submit(LONG, GREEDY, resume=snapshot).result()
        cancelled = await _two_steps_in(cached, LONG[::-1])  # not cached
        cancelled.cancel()
        gone = await cancelled.result()
        assert gone.finish_reason == "cancelled" and gone.output_ids == ()
        assert not cached.load_stats["active"]
    _assert_same_generations(expected, together)
    _assert_same_generations([expected[0], long_alone], [await hit.result(), resumed])


async def _two_steps_in(engine: LLMEngine, prompt: list[int]):  # type: ignore[no-untyped-def]
    start = engine.steps
    handle = engine.submit(prompt, GREEDY)
    while True:
        if engine.steps >= start + 2:
            return handle
        await asyncio.sleep(0)


def test_the_prefix_cache_holds_at_most_max_bytes_least_recently_used_out_first() -> None:
    def kv(n: int) -> tuple[torch.Tensor, torch.Tensor]:  # 8 bytes a token, keys and values
        return torch.zeros(1, 1, n, 1), torch.zeros(1, 1, n, 1)

    cache = PrefixCache(max_bytes=80)
    a, b, c = tuple(range(1, 5)), tuple(range(11, 15)), tuple(range(21, 25))
    cache.add(a, *kv(4))
    cache.add(b, *kv(4))
    assert cache.match((*a, 99)) == a  # used: b is now the least recently used
    cache.add(c, *kv(4))
    assert list(cache.entries) == [a, c] and cache.bytes == 64
    cache.add(tuple(range(30, 41)), *kv(11))  # 88 bytes: never kept
    assert list(cache.entries) == [a, c] and cache.bytes == 64
    cache.clear()
    assert not cache.entries and cache.bytes == 0
