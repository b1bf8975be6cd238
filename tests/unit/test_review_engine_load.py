"""Adversarial review: the node's LLM engine and scheduler under adversarial users (load, not
numerics): `supernet.node.llm.engine` / ``step`` / ``kvcache`` / ``handle``, the kernel's
`Scheduler`, `FairSharePolicy`, `ContextManager` and stop-string watcher
(`supernet.node.kernel.dispatch._StopWatcher`), and the node's token streams
(`supernet.node.service.streams`, ``routes_tasks.task_events``). Real parts throughout: the
SmolLM2-135M engine of ``tests/kernel_fixtures.py`` (``kernel_engine``, few tokens per test), the
real `Scheduler` and `FairSharePolicy` on it, the real tokenizer, and the node service on the FAKE
executor and chain of ``tests/node_fixtures.py`` where the service's own streaming is under test.

The attacker is a paying user, or many sybil keys: starve the others, hold memory, stall the
engine, or make an honest node's results differ from what a validator recomputes.

Found:

* MEDIUM, FIXED (`test_defence_a_long_prompt_stalls_every_co_batched_decoder`): a step prefilled
  every newly admitted prompt whole, packed with the decode of every running sequence, so one
  prompt near the context limit held every other user's next token for its whole prefill (768
  tokens: ~2-3.5 s against ~0.05 s a step here; 2,000 tokens ~10 s), and neither the price nor the
  fair share counted prompt tokens. Fixed: chunked prefill, at most
  `supernet.node.llm.engine.PREFILL_CHUNK_TOKENS` (256) prompt tokens a step (a longer prompt goes
  in over several steps, its first token sampled with its last chunk; same tokens and logprobs,
  `test_defence_a_chunked_prompt_gives_the_unchunked_tokens_and_logprobs`), and the fair share
  charges the prompt tokens a call's prefill computed (`TokenEvent.prefilled`, `Scheduler._consume`;
  `test_defence_prompt_tokens_count_in_the_fair_share`). The price is unchanged.
* LOW (MEDIUM on a GPU node), FIXED (`test_defence_the_chat_agent_takes_thousands_of_stop_strings`):
  the ``chat`` agent through ``POST /v1/tasks`` took any number of stop strings (~1,600 in the
  16 KiB input) where ``POST /v1/chat/completions`` takes 4 of 64 characters, and the node's
  `_StopWatcher` decoded the whole output and scanned it for each after every token, on the event
  loop. Fixed: the agent's input schema caps ``stop`` as the route does
  (`supernet.node.agents.chat.MAX_STOP_STRINGS` x ``MAX_STOP_CHARS``), and the watcher decodes
  only the tokens since the text last ended on a whole character and searches only the end of the
  text a new token can complete (the longest stop string plus the new text): same stream and stops.

Checked and holding:

* A sequence preempted by another user's call (fair share, a 4-token slice) and resumed after that
  call's prompt was prefilled in its place produces the very tokens of a solo run, greedy and
  sampled (seed ``2**64 - 1``): a validator's recomputation does not flag the node for the
  scheduling a user provoked (`test_defence_preempted_and_resumed_calls_give_the_solo_tokens`).
* A caller that goes away (its task cancelled) while running or while preempted releases its
  engine slot, its scheduler slot and its KV snapshot; nothing is left to hold memory
  (`test_defence_abandoned_calls_release_slot_snapshot_and_batch`).
* A reader that subscribes to a task's stream and then never reads does not hold the task: text
  goes into the task's in-memory stream and the task finishes, is stored and gets its receipt
  whatever its readers do; the parked reader holds no engine state and leaves no waiter
  (`test_defence_a_reader_that_never_reads_holds_nothing_of_the_task`). A reader slower than the
  socket is cut by ``api.stream_send_timeout_s`` and every connection by ``api.max_stream_s``.
* Not repeated here: fair share per key is dodged by sybil keys, and a paid offer buys no priority
  where the worker's 16 slots equal the batch (tests/unit/test_review_chat_and_scheduling.py);
  sampling parameter edges against the validator's checks (tests/unit/test_review_framing_llm.py).
* Formerly a known limit, FIXED (`test_defence_the_prefix_cache_is_bounded_in_bytes_and_emptied_when_idle`):
  the engine's prefix cache kept up to 8 prompt prefixes of up to ``max_seq_len - 1`` tokens each
  (~750 MB of fp32 keys/values for SmolLM2) beyond the KV pool, past the idle release. Fixed: at
  most `supernet.node.llm.kvcache.PREFIX_CACHE_BYTES` (128 MB, least recently used out first), and
  the idle release (``KV_RELEASE_AFTER_S``) empties it with the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from typing import Any

import pytest
import pytest_asyncio
from kernel_fixtures import RecordingFairShare
from supernet.node.agents.chat import MAX_STOP_CHARS, MAX_STOP_STRINGS, ChatAgent
from supernet.node.kernel.dispatch import _StopWatcher
from supernet.node.kernel.policies import FairSharePolicy
from supernet.node.kernel.scheduler import LLMJob, Scheduler
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm.engine import PREFILL_CHUNK_TOKENS
from supernet.node.llm.grammar import grammar_of
from supernet.node.llm.kvcache import PREFIX_CACHE_BYTES, PrefixCache
from supernet.node.service.routes_tasks import task_events
from supernet.node.service.schemas import ChatCompletionCreate
from supernet.sdk.agents.input_schema import input_problem

from tests.node_fixtures import FakeNode

pytestmark = pytest.mark.model

FEE = 10**12


@pytest_asyncio.fixture
async def engine(kernel_engine: LLMEngine) -> Any:
    """The session's real SmolLM2 engine, started for one test."""
    await kernel_engine.start()
    try:
        yield kernel_engine
    finally:
        await kernel_engine.stop()


def _chat_ids(engine: LLMEngine, text: str) -> tuple[int, ...]:
    tok = engine.tokenizer
    assert tok is not None
    return tuple(tok.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True))


def _unique_prompt(n: int, salt: int) -> list[int]:
    """``n`` token ids no cached prefix holds (the prefix cache must not shorten the prefill)."""
    return [(i * 7919 + salt * 104729) % 40000 + 100 for i in range(n)]


# -- findings ------------------------------------------------------------------------------------------


async def _honest_tokens_during(engine: LLMEngine, attack_len: int, salt: int) -> tuple[int, float, float]:
    """An honest greedy generation; after its 6th token another user's ``attack_len``-token prompt
    (one new token) is submitted. Returns the honest tokens produced between that submission and
    the attacker's answer, the honest stream's longest gap between two tokens, and its median."""
    honest = engine.submit(
        _chat_ids(engine, "Count from 1 to 50."), SamplingParams(max_new_tokens=20, stop_token_ids=())
    )
    times: list[float] = []
    marks: dict[str, int] = {}
    watch: asyncio.Task[None] | None = None
    async for _ in honest:
        times.append(time.perf_counter())
        if len(times) == 6:
            attack = engine.submit(_unique_prompt(attack_len, salt), SamplingParams(max_new_tokens=1))
            marks["submitted"] = len(times)

            async def answered(handle: Any = attack) -> None:
                await handle.result()
                marks["answered"] = len(times)

            watch = asyncio.create_task(answered())
    assert watch is not None
    await watch
    gaps = sorted(b - a for a, b in itertools.pairwise(times))
    return marks["answered"] - marks["submitted"], gaps[-1], gaps[len(gaps) // 2]


async def test_defence_a_long_prompt_stalls_every_co_batched_decoder(engine: LLMEngine) -> None:
    """MEDIUM, FIXED. ATTACK: while an honest user's answer streams, another user (any paying key,
    sybils for more slots) submits a prompt of unique tokens near the context limit with one new
    token. `LLMEngine._admit` puts it in the next step and `step._decode_and_prefill` runs its
    whole prompt packed with the decode of every running sequence: every co-batched user's next
    token waits for the full prefill. Here a 768-token prompt holds the honest stream 2-3.5 s
    between two tokens (a decode step is ~0.06 s); a 2,000-token prompt holds it ~10 s; sixteen
    admitted together (four keys x the worker's four slots per user) put ~32k tokens in one step,
    minutes on a CPU node. Repeating it every step keeps every other user at one token per
    attacker prefill (a 128-token answer then outlives ``api.max_stream_s``).

    WHO GAINS: a competitor degrading a node's service (its honest users time out, its scores in
    discovery's measured latency fall), at one task fee per stall: a task's price is a fixed
    ``tokens_per_task`` budget whatever its prompt, and `FairSharePolicy` charges output tokens
    only (`Scheduler._consume`), so prompt work is free in both.

    DEFENCE: chunked prefill: a step computes at most ``PREFILL_CHUNK_TOKENS`` (256) prompt
    tokens across the new sequences, a long prompt's remaining tokens go in over the next steps
    while the running ones keep decoding, so a decoder waits for at most one chunk; and the fair
    share charges the prompt tokens a call's prefill computed (less any prefix-cache hit;
    `test_defence_prompt_tokens_count_in_the_fair_share`). The price stays a task's fixed budget.
    Asserted: the honest stream keeps producing tokens while a 768-token prompt is prefilled (one
    per chunk step; before, it got only the token of the step before and of the packed step)."""
    assert engine.prefill_chunk == PREFILL_CHUNK_TOKENS < 768
    await _honest_tokens_during(engine, 8, salt=1)  # warm-up (first steps of a fresh pool)
    small_during, small_gap, _ = await _honest_tokens_during(engine, 96, salt=2)
    during, gap, median = await _honest_tokens_during(engine, 768, salt=3)
    report = (
        f"honest tokens while a 768-token prompt was prefilled: {during}; longest gap {gap:.2f} s "
        f"(median {median:.3f} s; with a 96-token prompt: {small_gap:.2f} s, {small_during} tokens)"
    )
    assert during >= 3, report


def test_defence_the_chat_agent_takes_thousands_of_stop_strings(kernel_engine: LLMEngine) -> None:
    """LOW (MEDIUM on a GPU node), FIXED. ATTACK: ``POST /v1/tasks`` with the ``chat`` agent and an
    input whose ``stop`` holds ~1,600 short strings that never occur (16 KiB of input,
    ``api.max_input_chars``). The OpenAI route refuses more than 4 stop strings of 64 characters
    (`ChatCompletionCreate`), the agent's own input schema (what admission checks, `input_problem`)
    bounds neither. The node's `_StopWatcher.on_token` decodes the whole output so far and looks for
    every stop string in all of it after each token, on the event loop (the engine's loop, every
    other user's watcher and the API wait meanwhile): ~0.4 ms a token over 128 tokens (10x the
    decode itself), growing with the text (~1.8 ms a token at 512), for each of the attacker's
    sequences in the batch. Sixteen such sequences add ~10 ms to every step: noise beside a CPU
    step (~60 ms), about a GPU step's whole time (throughput halved for everyone), for the price
    of ordinary tasks.

    DEFENCE: the chat agent's input schema caps ``stop`` as the OpenAI route does (at most
    ``MAX_STOP_STRINGS`` (4) strings of 1 to ``MAX_STOP_CHARS`` (64) characters; the schema is
    part of the agent's code hash, so node and validator agree), and the watcher decodes only the
    tokens since the text last ended on a whole character (and a few before them) and looks only
    at the end of the text a new token can complete (the longest stop string plus the new text).
    Asserted: admission refuses the attack's input and the route's and the schema's bounds are
    the same; the watcher's cost per token does not grow with the output (the same stream and
    stops as a whole decode: tests/unit/test_review_client_verify2.py, test_review_framing_llm.py)."""
    tok = kernel_engine.tokenizer
    assert tok is not None
    stops = [f"q{i}z" for i in range(1600)]
    task_input = {"messages": [{"role": "user", "content": "Tell me a story."}], "stop": stops}
    assert len(json.dumps(task_input)) < 16 * 1024  # within the default api.max_input_chars
    with pytest.raises(ValueError):  # the OpenAI route's own bound
        ChatCompletionCreate.model_validate({"model": "m", "messages": task_input["messages"], "stop": stops})
    ids = tok.encode("Once upon a time there was a little fox who lived in the forest and ran. " * 12)[:128]

    def watcher_seconds(stop: list[str]) -> float:
        watcher = _StopWatcher(tok, tuple(stop), lambda _i, _t: None)
        start = time.perf_counter()
        for i, token in enumerate(ids):
            assert not watcher.on_token(i, token)
        return time.perf_counter() - start

    many, openai_max = watcher_seconds(stops), watcher_seconds(["x" * 63 + str(i) for i in range(4)])
    problem = input_problem(ChatAgent.input_schema, task_input)
    assert problem is not None, (
        f"the chat agent admits {len(stops)} stop strings: {many * 1000:.0f} ms of event loop for "
        f"128 tokens, against {openai_max * 1000:.1f} ms with the OpenAI route's maximum"
    )
    # the same bounds as the route's, either way
    messages = task_input["messages"]
    for stop, ok in (
        (["x" * MAX_STOP_CHARS] * MAX_STOP_STRINGS, True),
        ("x" * MAX_STOP_CHARS, True),
        (["x"] * (MAX_STOP_STRINGS + 1), False),
        (["x" * (MAX_STOP_CHARS + 1)], False),
        ("x" * (MAX_STOP_CHARS + 1), False),
        ([""], False),
    ):
        assert (input_problem(ChatAgent.input_schema, {"messages": messages, "stop": stop}) is None) is ok
        route_ok = True
        try:
            ChatCompletionCreate.model_validate({"model": "m", "messages": messages, "stop": stop})
        except ValueError:
            route_ok = False
        assert route_ok is ok, stop
    # a token's cost does not grow with the output: the last 64 of 512 tokens cost about the first 64
    long_ids = tok.encode("Once upon a time there was a little fox who lived in the forest and ran. " * 48)
    watcher = _StopWatcher(tok, tuple(f"q{i}z" for i in range(MAX_STOP_STRINGS)), lambda _i, _t: None)
    spent: list[float] = []
    for i, token in enumerate(long_ids[:512]):
        start = time.perf_counter()
        watcher.on_token(i, token)
        spent.append(time.perf_counter() - start)
    first, last = sorted(spent[:64])[32], sorted(spent[-64:])[32]  # medians
    assert last < 3 * first + 50e-6, f"median per token: {first * 1e6:.0f} us first, {last * 1e6:.0f} us last"


# -- defences ------------------------------------------------------------------------------------------


async def _until(condition: Any, timeout_s: float = 30.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.01)


def _job(name: str, user: str, fee: int, prompt: tuple[int, ...], params: SamplingParams) -> LLMJob:
    return LLMJob(name, f"task-{name}", user, fee, prompt, params)


async def test_defence_preempted_and_resumed_calls_give_the_solo_tokens(engine: LLMEngine) -> None:
    """ATTACK: make an honest node's recorded call differ from what a validator recomputes (the
    validator scores one call alone, teacher-forced) by scheduling: a user's call arrives mid-way
    through another user's generation, with a higher fee and a longer prompt; the fair share
    preempts the running call after its slice (KV exported, snapshot held), prefills the new
    prompt in the freed slot, and resumes the first call later in another batch. DEFENCE: the
    resumed call continues from its exact keys/values and counter-based draws (position, seed):
    greedy and sampled (temperature 0.8, top_p 0.9, seed ``2**64 - 1``), tokens equal the solo
    run's and logprobs agree to rounding."""
    victim_prompt = _chat_ids(engine, "List five colours.")
    rival_prompt = _chat_ids(engine, "Write one sentence about the sea. " * 12)
    for params in (
        SamplingParams(max_new_tokens=14, stop_token_ids=()),
        SamplingParams(max_new_tokens=14, temperature=0.8, top_p=0.9, seed=2**64 - 1, stop_token_ids=()),
    ):
        rival_params = SamplingParams(max_new_tokens=6, stop_token_ids=())
        alone = await engine.submit(victim_prompt, params).result()
        rival_alone = await engine.submit(rival_prompt, rival_params).result()

        sched = Scheduler(engine, FairSharePolicy(), max_active=1, time_slice_tokens=4)
        started = asyncio.Event()

        def on_token(index: int, _token: int, started: asyncio.Event = started) -> bool:
            if index == 1:
                started.set()
            return False

        victim = asyncio.create_task(
            sched.generate(_job("victim", "0xv", FEE, victim_prompt, params), on_token)
        )
        await started.wait()
        rival = await sched.generate(_job("rival", "0xr", 10 * FEE, rival_prompt, rival_params))
        got = await victim
        assert got.preemptions >= 1  # it was taken out and resumed
        assert got.output_ids == alone.output_ids
        assert max(abs(a - b) for a, b in zip(got.logprobs, alone.logprobs, strict=True)) < 1e-4
        assert rival.output_ids == rival_alone.output_ids
        assert sched.context.stats().held == 0


async def test_defence_abandoned_calls_release_slot_snapshot_and_batch(engine: LLMEngine) -> None:
    """ATTACK: hold the node's memory and batch with calls whose callers go away: two users' calls
    take turns in a one-slot batch (a 2-token slice), so one runs while the other waits preempted
    (its KV snapshot held by the `ContextManager`); then both tasks are cancelled. DEFENCE:
    `Scheduler._abandon` cancels the runner (the engine finishes the sequence ``cancelled`` and
    frees its slot) or takes the waiting entry out and drops its snapshot; afterwards no slot,
    queue entry or snapshot is left and the engine is idle."""
    sched = Scheduler(engine, FairSharePolicy(), max_active=1, time_slice_tokens=2)
    params = SamplingParams(max_new_tokens=64, stop_token_ids=())
    counts = {"long": 0, "rival": 0}

    def counter(name: str) -> Any:
        def on_token(_index: int, _token: int) -> bool:
            counts[name] += 1
            return False

        return on_token

    long_call = asyncio.create_task(
        sched.generate(_job("long", "0xa", FEE, _chat_ids(engine, "Count to 100."), params), counter("long"))
    )
    await _until(lambda: counts["long"] >= 3)
    rival = asyncio.create_task(
        sched.generate(_job("rival", "0xb", FEE, _chat_ids(engine, "Say hi."), params), counter("rival"))
    )
    # the two take turns: one of them waits preempted, its snapshot held, while the other runs
    await _until(lambda: sched.context.stats().held == 1 and counts["rival"] >= 2)
    long_call.cancel()
    rival.cancel()
    for call in (long_call, rival):
        with contextlib.suppress(asyncio.CancelledError):
            await call
    await _until(lambda: not (sched.active or engine.load_stats["active"] or engine.load_stats["waiting"]))
    assert sched.waiting == 0 and sched.context.stats().held == 0
    done = dict(counts)
    await asyncio.sleep(0.3)
    assert counts == done  # nothing generates for the callers that left


async def test_defence_a_reader_that_never_reads_holds_nothing_of_the_task(fake_node: FakeNode) -> None:
    """ATTACK: open a task's event stream, take the first event and never read again (a slow or
    stalled client), hoping the node waits for its reader: the task held, its slot kept, its
    receipt never written. DEFENCE: text goes into the task's in-memory `TokenStream`, which never
    awaits a reader; the task finishes, is stored with its receipt, and once the parked reader
    is closed no waiter is left on the stream."""
    node = fake_node
    assert node.service.ctx is not None
    ctx = node.service.ctx
    gate = asyncio.Event()
    node.executor.gate = gate
    r = await node.http.post("/v1/tasks", json=node.body("one two three four five six", cumulative=FEE))
    assert r.status_code == 202, r.text
    tid = r.json()["id"]
    reader = task_events(ctx, tid)
    first = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0.05)
    gate.set()
    assert (await asyncio.wait_for(first, 10))["event"] == "token"
    # the reader is parked after one event: the task still ends, stored with its receipt
    await asyncio.wait_for(ctx.worker.wait(tid), 10)
    task = (await node.http.get(f"/v1/tasks/{tid}")).json()
    assert task["status"] == "done" and task["output"] == "echo: one two three four five six"
    assert (await node.http.get(f"/v1/tasks/{tid}/receipt")).status_code == 200
    stream = ctx.streams.get(tid)
    assert stream is not None and stream.closed
    await reader.aclose()
    assert stream._waiters == 0


async def test_defence_the_prefix_cache_is_bounded_in_bytes_and_emptied_when_idle(
    engine: LLMEngine,
) -> None:
    """Formerly a KNOWN LIMIT (memory held). ATTACK: send pairs of prompts that share a long prefix
    (the second differs in its last tokens only): `PrefixCache.propose` caches each common
    prefix's keys/values (a copy, outside the KV pool). The cache held up to 8 prefixes of up to
    ``max_seq_len - 1`` tokens, for SmolLM2 in float32 8 x 2,047 x 45 KiB ~ 750 MB on top of the
    pool, and the idle release (`LLMEngine._idle` -> `KVPool.release`) gave back the pool only.
    DEFENCE: the cache holds at most ``max_bytes`` (`PREFIX_CACHE_BYTES`, 128 MB; least recently
    used entries go first, an entry larger than that is not kept), and the idle release empties it.
    Asserted on a cache bounded at 100 tokens' worth: pairs with three 48-token prefixes leave the
    last two, within the bound, and the idle release leaves none."""
    saved, saved_after = engine.prefixes, engine.kv_release_after_s
    assert saved is not None and saved.max_bytes == PREFIX_CACHE_BYTES
    assert PREFIX_CACHE_BYTES < 8 * (engine.max_seq_len - 1) * engine.kv_bytes_per_token / 5
    per_token = engine.kv_bytes_per_token
    prefixes = engine.prefixes = PrefixCache(max_bytes=100 * per_token)
    try:
        shared = [_unique_prompt(48, salt=salt) for salt in (9, 10, 11)]
        for prefix in shared:
            for tail in ([11, 12], [13, 14]):
                await engine.submit([*prefix, *tail], SamplingParams(max_new_tokens=1)).result()
        assert list(prefixes.entries) == [tuple(p) for p in shared[1:]]  # the oldest went first
        assert prefixes.bytes == 2 * 48 * per_token <= prefixes.max_bytes
        prefixes.add(tuple(range(101)), *engine.pool.export(0, 101))  # larger than the bound: not kept
        assert len(prefixes.entries) == 2
        # idle: the pool and the prefix cache are given back together
        releases = engine.kv_releases
        engine.kv_release_after_s = 0.1
        await engine.submit([5, 6, 7], SamplingParams(max_new_tokens=1)).result()
        await _until(lambda: engine.kv_releases > releases)
        assert not prefixes.entries and prefixes.bytes == 0
    finally:
        engine.prefixes, engine.kv_release_after_s = saved, saved_after


async def test_defence_a_chunked_prompt_gives_the_unchunked_tokens_and_logprobs(
    kernel_engine: LLMEngine,
) -> None:
    """The chunked prefill changes the schedule, not the numbers: a ~700-token prompt prefilled in
    one pass, in chunks of 256 (the default) and in chunks of 100 generates the same greedy tokens
    with the same logprobs (float32 rounding: within 1e-3), and the same under a grammar (a JSON
    object), so a validator's unchunked teacher-forced pass still agrees with the node."""
    tok = kernel_engine.tokenizer
    assert tok is not None
    text = "Summarise the following story in one sentence. " + "The fox ran through the forest. " * 90
    prompt = _chat_ids(kernel_engine, text)
    assert 600 < len(prompt) < 900
    greedy = SamplingParams(max_new_tokens=4, stop_token_ids=())
    constrained = SamplingParams(max_new_tokens=4, grammar=grammar_of({"type": "json_object"}))
    results: dict[int, list[Any]] = {}
    for chunk in (4096, PREFILL_CHUNK_TOKENS, 100):
        model, weights = kernel_engine.model, kernel_engine.weights_id
        eng = LLMEngine(model, tok, weights, max_batch=2, prefix_cache=False, prefill_chunk=chunk)
        async with eng:
            results[chunk] = [await eng.submit(prompt, p).result() for p in (greedy, constrained)]
        # each: its prompt's chunks (the last samples the first token), then 3 more tokens
        assert eng.steps == sum(-(-len(prompt) // chunk) + len(r.output_ids) - 1 for r in results[chunk])
    whole = results[4096]
    for chunk in (PREFILL_CHUNK_TOKENS, 100):
        for want, got in zip(whole, results[chunk], strict=True):
            assert got.output_ids == want.output_ids
            assert max(abs(a - b) for a, b in zip(got.logprobs, want.logprobs, strict=True)) < 1e-3


async def test_defence_prompt_tokens_count_in_the_fair_share(engine: LLMEngine) -> None:
    """ATTACK: send long prompts for one output token each: the fair share charged output tokens
    only, so one key's prefills (the engine's main cost for such calls) came free against other
    keys. DEFENCE: the engine reports the prompt tokens it computed for a call with its first token
    (`TokenEvent.prefilled`: the prefill less a prefix-cache hit) and `Scheduler._consume` charges
    them with it. Asserted: a fresh 64-token prompt is charged 64 + 1, the second of two prompts
    sharing a 48-token prefix (which caches it) its whole length + 1, and a third with that prefix
    only its 2 own tokens + 1; the later tokens 1 each."""
    policy = RecordingFairShare()
    sched = Scheduler(engine, policy, max_active=2)
    params = SamplingParams(max_new_tokens=2, stop_token_ids=())
    shared = _unique_prompt(48, salt=21)
    prompts = [_unique_prompt(64, salt=20), [*shared, 1, 2], [*shared, 3, 4], [*shared, 5, 6]]
    for i, prompt in enumerate(prompts):
        await sched.generate(_job(f"c{i}", "0xa", 1, tuple(prompt), params))
    assert policy.charged == [("0xa", n) for n in (65, 1, 51, 1, 51, 1, 3, 1)]
