"""Adversarial review of chunked prefill in the node's LLM engine (commit 13983f5):
`supernet.node.llm.engine` (``PREFILL_CHUNK_TOKENS``, ``LLMEngine._plan``, ``_arrange`` moving
sequences' keys/values between slots, ``_admit``, ``_retire``, preempt and cancel), ``step``
(``run_step``, ``_decode_and_prefill``, ``_prefill_shared``, rows that return no token mid-prefill, the
fused C decode step of float16-weights), ``kvcache`` (``PrefixPrefillAttention`` with real row
lengths, the byte-bounded `PrefixCache`) and the scheduler's fair-share charge of prompt tokens
(`Scheduler._consume`, `TokenEvent.prefilled`).

Real parts throughout: SmolLM2-135M loaded as the node loads it, in float32 and in float16-weights
(the node's default on a CPU: decode-only steps run the fused C kernel, steps with prompt tokens the
packed torch pass); every recorded call is judged by the validator's own code (`ModelScorer` loaded
separately in the node's format, `verifier.score_calls`, `llm_check.check_scores` under
`Tolerance.for_pair`, `grammar_check.check_grammar`), and compared with the same call run alone
on an unchunked engine with no prefix cache (batch invariance). The real `Scheduler` and
`FairSharePolicy` for the charge. Token counts are kept small; a small ``prefill_chunk`` (set per
engine, as an operator could) puts many chunk boundaries into short prompts, and one test runs the
default 256 at its edges.

The attacker is a paying user (or several sybil keys) who picks prompt lengths, shared prefixes,
sampling seeds, grammars and arrival times: make an honest node's record differ from a validator's
re-score (a false slash), crash, hang or bloat the engine, or shift the fair share.

Found:

* LOW, OPEN (`test_known_limit_a_call_abandoned_mid_prefill_is_never_charged`): the prompt tokens a
  call's prefill computed are charged with its first token only, so a call that goes away part-way
  through its prompt (the task cancelled, its 600 s bound, the kernel stopping) costs its user
  nothing in the fair share however many chunks were computed. A user cannot cancel one call at
  will today, hence LOW.
* LOW, OPEN (`test_known_limit_the_first_row_pays_a_prefix_shared_within_its_batch`): a prefix
  that several new prompts of one step share is computed once and charged in full to the first of
  them (admission order); the others pay only their own tails, whoever they belong to. No user
  pays more than its own prompt (asserted), but a key that copies a popular prompt's prefix rides
  free on whoever arrives first (the same holds, by design, for the prefix cache).

Checked and holding:

* Long prompts arriving while others decode, several at once for fewer slots (some wait), one
  preempted part-way through its prompt and resumed (prefilled again), one cancelled part-way, a
  decoder retiring while a prompt is part-way in (its keys/values moved to a lower slot by
  ``_arrange``, asserted to have happened), a prefix-cache hit continued over several chunks, a
  prefix shared in one batch, a one-token prompt, a prompt of exactly one chunk, greedy and seeded
  sampled calls: every call's tokens equal its solo run's, logprobs within 1e-4, and the
  validator finds nothing (tokens, logprobs, margins, fingerprints, the first token's fingerprint
  being the last chunk's), in float32 and in float16-weights (fused decode steps). A seeded call's
  draw is keyed by absolute position, so chunking cannot shift it.
* The default chunk at its edges (float16-weights): prompts of 255 and 257 tokens (257 =
  ``max_seq_len - 1``, its single token at the context's end) and a one-token prompt arriving
  together while two calls decode: the budget splits them across steps (255 + 1, 256, 1), all
  pass the validator.
* A constrained call (``response_format`` JSON) chunked, co-batched, preempted after its first
  tokens and resumed: the grammar walk and the masked margins pass, the tokens are the solo ones.
* Fair share: a chunked prompt is charged its whole computed length once, with its first token; a
  prompt that hits a warmed prefix cache is charged what was computed (never zero or negative: at
  least its one computed prompt token and its output token); no user is ever charged another
  user's prompt tokens.
* Engine state after every scenario: no active or waiting sequence is left behind.
* A prefix shared by two prompts of one step whose rows are chunked differently (the budget cuts
  the second) is not shared: the chunked row computes its whole prompt (and is charged it). Correct,
  only a missed saving.
* Not repeated here: `_arrange`'s park-and-load path for a cycle of moves is unreachable (decoding
  rows always lead, prompts follow in admission order, and only the last served prompt can be
  part-way in). A random fuzz of arrivals, preempts (decoding and part-way), cancels, resumes,
  shared and cached prefixes and sampled seeds (45 scenarios at chunks 3-20 in both formats, 8 at
  chunks 40-100 with prompts to 420 tokens growing the pool past 256 in float16-weights; 188
  calls, each against its solo run and the validator) found no mismatch, no leftover sequence;
  sampled down to the fixed scenarios here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kernel_fixtures import RecordingFairShare
from supernet.node.kernel.scheduler import LLMJob, Scheduler
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm.engine import PREFILL_CHUNK_TOKENS
from supernet.node.llm.grammar import grammar_of
from supernet.node.llm.scoring import Tolerance
from supernet.node.llm.types import GenerationResult
from supernet.validator.grammar_check import check_grammar
from supernet.validator.llm_check import check_scores
from supernet.validator.scoring import ModelScorer
from supernet.validator.trace_view import LLMCall
from supernet.validator.verifier import score_calls

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"
pytestmark = [
    pytest.mark.model,
    pytest.mark.skipif(not (SMOLLM2 / "config.json").is_file(), reason="SmolLM2 not cached"),
]
FP32, FP16W = "float32", "float16-weights"
MAX_SEQ = 300


def _greedy(n: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, stop_token_ids=())


def _sampled(n: int, seed: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0.8, top_p=0.9, seed=seed, stop_token_ids=())


def _prompt(n: int, salt: int) -> list[int]:
    """``n`` pseudo-random token ids (no other test's prefix)."""
    r = random.Random(salt)
    return [r.randrange(100, 40000) for _ in range(n)]


# -- fixtures: the node's engine and the validator's scorer, per format --------------------------------


@pytest.fixture(scope="module", params=[FP32, FP16W])
def compute(request: pytest.FixtureRequest) -> str:
    return str(request.param)


_LOADED: dict[tuple[str, str], Any] = {}


def _load(kind: str, compute: str) -> Any:
    """One load per module and format: the node's (`LLMEngine.load`: float16-weights runs the fused
    C decode where it builds) and a validator's own (`ModelScorer.load`, fbgemm)."""
    if (kind, compute) not in _LOADED:
        _LOADED[kind, compute] = (
            LLMEngine.load(SMOLLM2, compute=compute, max_batch=4, max_seq_len=MAX_SEQ)
            if kind == "node"
            else ModelScorer.load(str(SMOLLM2), dtype=compute, device="cpu")
        )
    return _LOADED[kind, compute]


@pytest.fixture(scope="module")
def node(compute: str) -> LLMEngine:
    """The node's load in ``compute``; tests wrap its model in fresh engines (`_engine`)."""
    return _load("node", compute)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def scorer(compute: str) -> ModelScorer:
    """A validator's own load, in the node's format (what `ModelScorer.for_compute` picks)."""
    return _load("scorer", compute)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def node32() -> LLMEngine:
    """The node's float32 load (the fair-share tests: accounting, one format)."""
    return _load("node", FP32)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def scorer32() -> ModelScorer:
    return _load("scorer", FP32)  # type: ignore[no-any-return]


def _engine(base: LLMEngine, **kwargs: Any) -> LLMEngine:
    """A fresh engine (own pool and prefix cache) on ``base``'s loaded model."""
    opts: dict[str, Any] = {"max_batch": 4, "max_seq_len": MAX_SEQ, "prefill_chunk": PREFILL_CHUNK_TOKENS}
    opts.update(kwargs)
    return LLMEngine(base.model, base.tokenizer, base.weights_id, **opts)


def _solo(base: LLMEngine, max_seq_len: int = MAX_SEQ) -> LLMEngine:
    """The reference: one slot, whole-prompt prefill, no prefix cache."""
    return _engine(base, max_batch=1, max_seq_len=max_seq_len, prefix_cache=False, prefill_chunk=10**6)


# -- helpers: the validator's judgement and the solo comparison ----------------------------------------


def _call(prompt: list[int], res: GenerationResult, params: SamplingParams, grammar: str | None) -> LLMCall:
    fps = [{"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in res.fingerprints]
    return LLMCall(
        call=0,
        model_id="0x00",
        prompt_ids=tuple(prompt),
        output_ids=tuple(res.output_ids),
        logprobs=tuple(res.logprobs),
        fingerprints=fps,
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        max_new_tokens=params.max_new_tokens,
        stop_token_ids=params.stop_token_ids,
        finish_reason=res.finish_reason,
        text=None,
        grammar=grammar,
    )


Record = tuple[list[int], GenerationResult, SamplingParams]


def _validator_findings(scorer: ModelScorer, node_compute: str, records: list[Record]) -> list[Any]:
    """What a validator flags in these recorded calls (nothing, for an honest node)."""
    calls = [_call(p, r, s, s.grammar) for p, r, s in records]
    tol = Tolerance.for_pair(node_compute, scorer.dtype)
    findings: list[Any] = []
    for call, scored in zip(calls, score_calls(scorer, calls), strict=True):
        findings += check_grammar(call, scorer.tokenizer, scorer.vocab_size, scorer.eos_ids)
        findings += check_scores(call, scored, tol)
    return findings


async def _against_solo(solo: LLMEngine, records: list[Record]) -> list[str]:
    """Where a recorded call differs from the same call run alone (tokens, or logprobs > 1e-4)."""
    problems = []
    for prompt, res, params in records:
        alone = await solo.submit(prompt, params).result()
        if alone.output_ids != res.output_ids:
            problems.append(f"{len(prompt)}-token prompt: {res.output_ids} alone {alone.output_ids}")
            continue
        worst = max(abs(a - b) for a, b in zip(alone.logprobs, res.logprobs, strict=True))
        if worst > 1e-4:
            problems.append(f"{len(prompt)}-token prompt: |dlogprob| {worst:.2e}")
    return problems


async def _until(cond: Callable[[], bool], limit: float = 30.0) -> None:
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < limit, "the engine made no progress (hang)"
        await asyncio.sleep(0.002)


def _spy_moves(engine: LLMEngine) -> list[tuple[int, int, int, int, int]]:
    """Record every `KVPool.move` of ``_arrange`` as (src, dst, length, outputs so far, prompt
    length) of the sequence moved; the real move runs."""
    moves: list[tuple[int, int, int, int, int]] = []
    real = engine.pool.move

    def move(src: int, dst: int, length: int) -> None:
        seq = next((s for s in engine._active if s.slot == src), None)
        if seq is not None:
            moves.append((src, dst, length, len(seq.output), len(seq.prompt)))
        real(src, dst, length)

    engine.pool.move = move  # type: ignore[method-assign]
    return moves


# -- numerics under interleavings nobody tested ---------------------------------------------------------


async def test_defence_interleaved_chunked_prefills_pass_the_validator_and_match_solo(
    node: LLMEngine, scorer: ModelScorer, compute: str
) -> None:
    """ATTACK: while two calls decode, send six prompts at once for four slots (some wait): a
    64-token one (4 chunks of 16) that is part-way in when a decoder retires (its keys/values move
    to a lower slot), then is preempted part-way and resumed; a 37-token one cancelled part-way; a
    prompt hitting a cached 24-token prefix and continuing over chunks; two sharing it in one batch;
    a one-token prompt; a prompt of exactly one chunk; greedy and seeded sampled calls. Any wrong
    move, stale chunk or shifted draw would show as a record the validator flags (a false slash of
    an honest node) or one that differs from its solo run.
    DEFENCE: every record passes the validator and equals its solo run, in both formats."""
    eng, solo = _engine(node, prefill_chunk=16), _solo(node)
    moves = _spy_moves(eng)
    shared = _prompt(24, 1)
    warm = [(shared + _prompt(5, 2), _greedy(2)), (shared + _prompt(4, 12), _greedy(2))]
    d1, d2 = (_prompt(10, 3), _greedy(4)), (_prompt(7, 4), _sampled(8, 9))
    long = (_prompt(64, 5), _greedy(3))
    cut = (_prompt(37, 6), _sampled(4, 77))
    rest = [
        (shared + _prompt(26, 7), _greedy(4)),  # cache hit, 2 chunks
        (shared + _prompt(9, 8), _sampled(4, 2**64 - 1)),
        (_prompt(16, 9), _greedy(3)),  # exactly one chunk
        (_prompt(1, 10), _greedy(3)),  # one token
    ]
    records: list[Record] = []
    async with eng, solo:
        for prompt, params in warm:  # the second proposes `shared`, and caches it once prefilled
            records.append((prompt, await eng.submit(prompt, params).result(), params))
        assert eng.prefixes is not None and tuple(shared) in eng.prefixes.entries
        h1, h2 = eng.submit(*d1), eng.submit(*d2)
        await _until(lambda: len(h1._seq.output) >= 1)
        hl, hc = eng.submit(*long), eng.submit(*cut)
        hr = [eng.submit(*pr) for pr in rest]
        # d1 retires while the long prompt is part-way in: `_arrange` moves its chunks down a slot
        await _until(lambda: h1._seq.finished)
        await _until(lambda: hl._seq.cached > 0)
        assert not hl._seq.output and hl._seq.cached < len(long[0])
        snap = await hl.preempt()
        assert snap.output_ids == () and snap.keys is None  # prefilled again on resume
        hl = eng.submit(*long, resume=snap)
        await _until(lambda: hc._seq.cached > 0 or hc._seq.finished)
        assert not hc._seq.output, "the cut call got past its prompt before the cancel"
        hc.cancel()
        gone = await hc.result()
        assert gone.finish_reason == "cancelled" and gone.output_ids == ()
        for (prompt, params), h in zip([d1, d2, long, *rest], [h1, h2, hl, *hr], strict=True):
            res = await asyncio.wait_for(h.result(), 60)
            assert res.finish_reason == "length"
            records.append((prompt, res, params))
        assert eng.load_stats["active"] == 0 and eng.load_stats["waiting"] == 0
        assert eng.prefixes.hits >= 2  # both calls starting with `shared` loaded it
        problems = await _against_solo(solo, records)
    # the part-way prompt was moved with its chunks (its slot held fewer tokens than its prompt)
    assert any(out == 0 and 0 < n < plen for _, _, n, out, plen in moves), moves
    assert all(src != dst for src, dst, *_ in moves)
    assert problems == []
    assert _validator_findings(scorer, compute, records) == []


async def test_defence_prompts_at_the_default_chunk_edges_pass_the_validator(
    node: LLMEngine, scorer: ModelScorer, compute: str
) -> None:
    """ATTACK: prompts of 255 and 257 tokens (257 = ``max_seq_len - 1``: one output token, at the
    context's last position) and a one-token prompt arrive together while two calls decode, under
    the default budget of 256 prompt tokens a step: the steps split them 255 + 1 (a row computing
    one token of its prompt must not be taken for one whose prompt is in), then 256 (its last chunk
    exactly one budget), then the one-token prompt. (A prompt of exactly one chunk is the 16-token
    one above, at chunk 16.) DEFENCE: every record passes the validator (the solo comparison is
    the chunk-16 test's: the validator's passes over these prompts are this file's costliest)."""
    if compute != FP16W:
        pytest.skip("the node's default format only: the float32 path is covered above at chunk 16")
    top = PREFILL_CHUNK_TOKENS + 2  # max_seq_len: the 257-token prompt is max_seq_len - 1
    eng = _engine(node, max_seq_len=top)
    assert eng.prefill_chunk == 256
    decoders = [(_prompt(6, 20), _greedy(10)), (_prompt(9, 21), _sampled(10, 5))]
    edges = [(_prompt(n, 22 + n), _greedy(3)) for n in (255, 257)] + [(_prompt(1, 30), _sampled(3, 8))]
    async with eng:
        hd = [eng.submit(*d) for d in decoders]
        await _until(lambda: len(hd[1]._seq.output) >= 1)
        he = [eng.submit(*e) for e in edges]
        steps = eng.steps
        results = [await asyncio.wait_for(h.result(), 60) for h in hd + he]
        records = [(p, r, s) for (p, s), r in zip(decoders + edges, results, strict=True)]
        assert [len(r.output_ids) for r in results[2:]] == [3, 1, 3]  # the 257: to the context's end
        assert eng.steps - steps >= 3  # 255 + 1, then 256, then the one-token prompt
    assert _validator_findings(scorer, compute, records) == []


async def test_defence_a_constrained_call_chunked_and_resumed_passes_the_grammar_and_scores(
    node: LLMEngine, scorer: ModelScorer, compute: str
) -> None:
    """ATTACK: a ``response_format`` (JSON object) call whose chat prompt is prefilled in chunks of
    8 while another call decodes, preempted after its first tokens and resumed (the grammar state
    rebuilt from its output), and a sampled constrained call: a mask applied to a mid-prefill row, or
    a resume that lost the grammar's position, would record tokens outside the grammar or off the
    masked rule. DEFENCE: the validator's grammar walk and masked margins pass; solo tokens.
    (float16-weights only: the mask is applied to the logits whatever computed them.)"""
    if compute != FP16W:
        pytest.skip("the node's default format only: masks do not depend on the format")
    tok = node.tokenizer
    assert tok is not None
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Give a JSON object with the name and age of a cat."}],
        add_generation_prompt=True,
    )
    grammar = grammar_of({"type": "json_object"})
    greedy = SamplingParams(max_new_tokens=5, grammar=grammar)
    sampled = SamplingParams(max_new_tokens=5, temperature=0.9, seed=4242, grammar=grammar)
    other = (_prompt(5, 40), _greedy(8))
    eng, solo = _engine(node, prefill_chunk=8), _solo(node)
    async with eng, solo:
        await eng.prepare_grammar(greedy)
        ho = eng.submit(*other)
        await _until(lambda: len(ho._seq.output) >= 1)
        hg, hs = eng.submit(chat, greedy), eng.submit(chat, sampled)
        await _until(lambda: len(hg._seq.output) >= 2)
        snap = await hg.preempt()
        hg = eng.submit(chat, greedy, resume=snap)
        results = [await asyncio.wait_for(h.result(), 60) for h in (ho, hg, hs)]
        calls = [other, (chat, greedy), (chat, sampled)]
        records = [(p, r, s) for (p, s), r in zip(calls, results, strict=True)]
        problems = await _against_solo(solo, records)
    assert snap.output_ids and all(len(r.output_ids) == 5 for _, r, _ in records[1:])
    assert problems == []
    assert _validator_findings(scorer, compute, records) == []


# -- the fair share's charge of prompt tokens ------------------------------------------------------------


def _job(name: str, user: str, prompt: list[int], params: SamplingParams) -> LLMJob:
    return LLMJob(name, f"task-{name}", user, 1, tuple(prompt), params)


def _per_user(charged: list[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for user, n in charged:
        out[user] = out.get(user, 0) + n
    return out


async def test_known_limit_the_first_row_pays_a_prefix_shared_within_its_batch(
    node32: LLMEngine, scorer32: ModelScorer
) -> None:
    """LOW, known limit. ATTACK (prefix gaming): user B sends prompts that start with a prompt
    prefix user A also sends (a popular agent's instructions), timed to share A's step; and B
    warms the prefix cache once, then sends long prompts that hit it.
    Today: the shared prefix is computed once and charged whole to the first row (A, admitted
    first); B pays only its own tail; the cache hit pays what it computed (its one new prompt
    token and its output token: never zero or negative). Holding: no user is charged more than
    its own prompt and output, and a 60-token prompt prefilled in 4 chunks is charged 60 once.
    Acceptable: the prefix was computed once, and the payer paid no more than alone; a fairer split
    would divide a shared prefix's tokens among the rows that use it (and a cache hit's among the
    calls that load it), which the engine could report per row in ``StepOutput.prefilled``."""
    eng = _engine(node32, prefill_chunk=128)  # both prompts whole in one step: the prefix is shared
    policy = RecordingFairShare()
    sched = Scheduler(eng, policy, max_active=4)
    one = _greedy(1)
    shared = _prompt(40, 50)
    a_prompt, b_prompt = shared + _prompt(10, 51), shared + _prompt(3, 52)
    async with eng:
        # a third user decodes, so A's and B's calls arrive during one step and share the next one:
        # B's prompt is proposed against A's (in `recent`), the prefix computed once
        busy = asyncio.ensure_future(sched.generate(_job("z", "0xz", _prompt(5, 54), _greedy(8))))
        await _until(lambda: ("0xz", 6) in policy.charged)
        outcomes = await asyncio.gather(
            sched.generate(_job("a", "0xa", a_prompt, one)), sched.generate(_job("b", "0xb", b_prompt, one))
        )
        await busy
        # the prefix computed once in A's slot and copied into B's: both records still pass
        records = [(a_prompt, outcomes[0], one), (b_prompt, outcomes[1], one)]
        assert _validator_findings(scorer32, FP32, records) == []  # type: ignore[arg-type]
        off = dataclasses.replace(outcomes[1], logprobs=(outcomes[1].logprobs[0] - 0.01,))
        assert _validator_findings(scorer32, FP32, [(b_prompt, off, one)])  # type: ignore[list-item]
        first = _per_user(policy.charged)
        assert first == {"0xz": 5 + 8, "0xa": len(a_prompt) + 1, "0xb": len(b_prompt) - len(shared) + 1}
        assert eng.prefixes is not None and tuple(shared) in eng.prefixes.entries
        policy.charged.clear()
        hit = [*shared, 7]  # one computed prompt token
        await sched.generate(_job("c", "0xb", hit, one))
        assert policy.charged == [("0xb", 2)]
        policy.charged.clear()
        eng.prefill_chunk = 16
        await sched.generate(_job("d", "0xc", _prompt(60, 53), _greedy(2)))
        assert policy.charged == [("0xc", 61), ("0xc", 1)]
    sched.close()


async def test_known_limit_a_call_abandoned_mid_prefill_is_never_charged(node32: LLMEngine) -> None:
    """LOW, known limit. ATTACK: a call whose task goes away while its long prompt is part-way in
    (cancelled with its task, the task's 600 s bound, the kernel stopping) has had chunks computed,
    yet the fair share charges prompt tokens only with the first output token
    (`TokenEvent.prefilled`): its user is charged nothing for them. A user cannot cancel one call
    at will today (no cancel route; a task's bound is the node's), so it is pinned, not fixed.
    Fix by design: charge each step's computed prompt tokens as they are computed (an engine
    callback or a per-step event without a token), so an abandoned prefill is paid for too."""
    eng = _engine(node32, prefill_chunk=16)
    policy = RecordingFairShare()
    sched = Scheduler(eng, policy, max_active=2)
    async with eng:
        call = asyncio.ensure_future(sched.generate(_job("x", "0xa", _prompt(96, 60), _greedy(2))))
        await _until(lambda: bool(eng._active) and eng._active[0].cached >= 32)
        computed = eng._active[0].cached
        call.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await call
        await _until(lambda: not eng._active)
    sched.close()
    assert computed >= 32  # two chunks or more were computed for 0xa ...
    assert policy.charged == []  # ... and charged to nobody
