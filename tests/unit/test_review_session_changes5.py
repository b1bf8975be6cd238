"""Adversarial review of two changes of the session: the validator's radix-tree re-scoring
(`ModelScorer.score_many`: each shared prompt prefix computed once, packs of calls over it, a
prefix cache kept across passes) and the back-off of re-checks that fail on the validator
(`Validator._check_diverged`, `Database.mark_recheck`, `service.recheck_at`, `Availability.deadline`).
The four findings are fixed; their tests are now ``test_defence_*``.

Real parts: the validator's `ModelScorer` on a random tiny Llama (float32, packed float32,
float16-weights, bfloat16), every call compared with one plain `score` pass; the validator's
`Database` and its real `Validator._check_diverged` / `_entry_window` / `_closed` driven over a
whole window of steps (a chain clock and a check whose outcome the test sets stand in for Anvil
and the model, so that a one-day window of one-second steps runs in a second); and, for the
slow-step attack, the real `Validator.step` on Anvil with SmolLM2 (`vnet`, `scoring_through`).

What was tried, and what was found:

1. Radix-tree re-scoring (node-chosen prompts).
   * holds: scores equal one plain `score` pass per call (logprobs, margins at T = 0.3,
     fingerprinted hidden rows: < 5e-5 in float32, packed float32 and float16-weights) whatever
     the cache holds from earlier passes (a key that is a prefix of another, keys/values sliced
     from a longer entry, an entry evicted mid-walk with ``PREFIX_CACHE_ENTRIES`` = 2), with
     duplicates, one-token prompts, a prompt that is another call's prompt + output, empty
     outputs, in shuffled order; results come back in request order.
   * holds: in bfloat16 a 40-level chain of prefix extensions (each computed from its parent's
     keys/values) stays ~0.05 from a plain pass, as a single prefix does: no compounding, 15x
     inside the bfloat16 pair's bounds.
   * holds: tokens through the decoder never exceed the old scheme's (one prefix all share, then
     one pass per call) by more than ``MIN_SAVED_TOKENS``, on combs, chains, duplicates and random
     trees; the walk terminates on 300 identical prompts.
   * FIXED (was FOUND, memory): the prefix cache was bounded in *entries*, not tokens, and every
     extension is a full copy of its parent (`torch.cat` in `score_with_prompt_kv`). One pass of
     nested prompts (a long stem, pairs branching off every 100 tokens) leaves 8 nested entries,
     7 of them redundant (the longest holds them all), ~7x ``HELD_PREFIX_TOKENS`` in the test's
     tiny model and 8 x max_positions in general (~3 GB of float32 keys/values for SmolLM2 at
     8,192 positions), held after the pass until later passes evict them. The old scheme added one
     entry per pass; the walk adds one per branch point. Now an entry whose key begins a new one
     is dropped (the new one serves it, sliced) and the cache is bounded in tokens too
     (``PREFIX_CACHE_TOKENS``, `ModelScorer._keep`).
2. Re-check back-off.
   * FIXED (was FOUND): the back-off counted *steps*, not time, and the last call was a single
     step. A validator whose steps are long (a node floods it with batches to check; each step
     checks every pending batch before its re-checks) backs off past the steps where checking
     works again and can step over the last tenth entirely: on Anvil with 100 s steps and a 600 s
     window, memory short for the first three steps, the cheat ended *unchecked* (tried at steps
     1 and 3 only), where the old every-step re-check found it at step 4. Now the back-off is in
     chain time, at most a quarter of the time left, and due re-checks run before the batches.
   * FIXED (was FOUND): on a one-day window of one-second steps an entry was checked 17 times
     (it was 86,400): a node that can make a validator's check fail (memory pressure it causes)
     has to hit 16 back-off moments, dense at the start, and one last call whose chain time it
     knows exactly (``end - window // LAST_CALL_PART``); after that last call the next back-off is
     past the window, and the last ~2.4 hours, where the check passes, were never used. Now the
     tries thicken toward the end at moments drawn at random; there is no last call.
   * FIXED (was FOUND): the last call was marked *before* it ran; an error that is not a
     local-failure verdict (the store refusing the evidence, an RPC hiccup, a crash) spends it,
     and the next back-off is past the window: a cheat that one more step would have caught ends
     unchecked. Now an error leaves the entry due (and there is no last call to spend).
   * holds: a diverged writer (``attempts`` 0) is still checked every step until settled, and at
     its window's end is settled without an ``unchecked`` report; `Availability.deadline` is the
     contract's `_checkChallengeable` (batch window, or a full window from `answeredAt` if later:
     read side by side, the same in every case).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from llm_fixtures import TINY, make_tiny_llama
from supernet.node.llm import SamplingParams
from supernet.node.llm.model import Llama
from supernet.node.llm.scoring import ScoreRequest, Tolerance, score
from supernet.node.llm.types import ScoreResult
from supernet.sdk.chain.anvil import advance_to
from supernet.validator import scoring as validator_scoring
from supernet.validator.db import CheckRow, Database
from supernet.validator.scoring import ModelScorer
from supernet.validator.service import Validator, recheck_at

from tests.unit.test_review_validator_budgets import scoring_through

LOW_T = SamplingParams(max_new_tokens=8, temperature=0.3, top_p=0.95, seed=9)


def scorer_of(model: Llama) -> ModelScorer:
    return ModelScorer(model, None, "0xtiny", (0,))  # type: ignore[arg-type]


def gap_to_one_pass_each(model: Llama, requests: list[ScoreRequest], got: list[ScoreResult]) -> float:
    """Greatest difference, over every call, between ``got`` and a plain `score` of that call alone:
    logprobs, selection margins and the fingerprinted hidden rows (what `compare_generation` reads)."""
    assert len(got) == len(requests)
    worst = 0.0
    for r, g in zip(requests, got, strict=True):
        ref = score(model, r.prompt_ids, r.output_ids, r.params)
        assert len(g.logprobs) == len(r.output_ids)
        assert (ref.margins is None) == (g.margins is None)
        if not r.output_ids:
            continue
        worst = max(worst, *(abs(a - b) for a, b in zip(ref.logprobs, g.logprobs, strict=True)))
        if ref.margins is not None and g.margins is not None:
            worst = max(worst, *(abs(a - b) for a, b in zip(ref.margins, g.margins, strict=True)))
        assert ref.fingerprint_rows is not None and g.fingerprint_rows is not None
        worst = max(worst, float((ref.fingerprint_rows - g.fingerprint_rows).abs().max()))
    return worst


def old_scheme_tokens(requests: list[ScoreRequest]) -> int:
    """Tokens the scheme before the change put through the decoder (no cache): the prefix every
    scored prompt shares (each keeping one token; kept from ``MIN_SHARED_PREFIX``), then each call
    past it."""
    prompts = [tuple(r.prompt_ids) for r in requests if r.output_ids]
    if not prompts:
        return 0
    n = min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        i = 0
        while i < n and p[i] == prompts[0][i]:
            i += 1
        n = i
    shared = n if n >= validator_scoring.MIN_SHARED_PREFIX else 0
    return shared + sum(len(r.prompt_ids) - shared + len(r.output_ids) - 1 for r in requests if r.output_ids)


# -- 1. the radix-tree walk ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["float32", "packed", "float16-weights"])
def test_defence_cache_entries_from_earlier_passes_and_eviction_mid_walk_change_no_score(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An earlier pass leaves entries a node chose (a long stem, and a key that is a prefix of it);
    the next pass's calls hit them at every offset (a prefix of a key, past a key, diverging inside
    one: keys/values sliced from a longer entry), with a cache of two entries so that the walk
    evicts what it just used, plus duplicates, one-token prompts, a call whose prompt is another's
    prompt + output and empty outputs, shuffled. Every call scores as one plain pass, in order."""
    monkeypatch.setattr(validator_scoring, "PREFIX_CACHE_ENTRIES", 2)
    model = make_tiny_llama(11)
    if fmt == "packed":
        model.pack_linears(batch_hint=validator_scoring.MAX_PACKED_TOKENS)
    elif fmt == "float16-weights":
        model.use_fp16_weights()
    rng = random.Random(5)
    stem = tuple(rng.randrange(1, 100) for _ in range(220))
    scorer = scorer_of(model)
    earlier = [
        ScoreRequest((*stem[:200], 7), [1, 2]),
        ScoreRequest((*stem[:200], 8), [3]),
        ScoreRequest((*stem[:90], 9), [4]),
        ScoreRequest((*stem[:90], 10), [5]),
    ]
    assert gap_to_one_pass_each(model, earlier, scorer.score_many(earlier)) < 5e-5
    assert {len(k) for k in scorer._prefixes} <= {90, 200}  # the node's stems are cached
    out = [rng.randrange(1, 100) for _ in range(6)]
    requests = [
        ScoreRequest((*stem[:60], 11), out[:3], LOW_T),  # inside both keys
        ScoreRequest((*stem[:150], 12), out, None),  # past one key, inside the other
        ScoreRequest((*stem[:150], 12), out, None),  # its duplicate
        ScoreRequest((*stem[:150], 12), out[:2], LOW_T),  # same prompt, another output
        ScoreRequest((*stem[:215], 13), out, LOW_T),  # past the longest key
        ScoreRequest((*stem[:215], 13, *out), [5, 6, 7], None),  # the previous prompt + output
        ScoreRequest((*stem[:120], 99 - stem[120] % 50, *stem[121:180]), out[:4], None),  # diverges inside
        ScoreRequest((stem[0],), [3, 4], None),  # one token
        ScoreRequest((42,), [3], LOW_T),  # one token, shares nothing
        ScoreRequest(stem[:100], [], LOW_T),  # nothing to score
        ScoreRequest((*stem[:17], 1), [2, 2, 2], None),  # just past MIN_SHARED_PREFIX
        ScoreRequest((*stem[:9],), [8], None),  # a prompt shorter than two of the others' shared part
    ]
    rng.shuffle(requests)
    before = scorer.stats.tokens
    got = scorer.score_many(requests)
    assert gap_to_one_pass_each(model, requests, got) < 5e-5
    # in request order: the duplicates and the call with no output keep their places
    for r, g in zip(requests, got, strict=True):
        assert len(g.logprobs) == len(r.output_ids)
    assert len(scorer._prefixes) <= 2
    unshared = sum(len(r.prompt_ids) + len(r.output_ids) - 1 for r in requests if r.output_ids)
    assert scorer.stats.tokens - before < unshared // 3  # the cached stems were used, not re-read


def test_defence_a_deep_chain_of_prefix_extensions_does_not_compound_bfloat16_rounding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In bfloat16 each level of the tree extends its parent's keys/values by one more pass:
    a node nesting 40 levels (pairs branching off every 12 tokens) might have hoped the roundings
    add up to an accusation of an honest call (or room for a cheat). They do not: the deepest
    call is as close to one plain pass as with one prefix, far inside the bfloat16 pair's bounds."""
    monkeypatch.setattr(validator_scoring, "MIN_SAVED_TOKENS", 8)  # a prefix pass at every level
    model = make_tiny_llama(5).to(torch.bfloat16)
    rng = random.Random(3)
    spine = tuple(rng.randrange(1, 100) for _ in range(500))
    requests = [
        ScoreRequest((*spine[: 12 * k], 100, 50 + side), [3, 4, 5, 6, 7], LOW_T if side else None)
        for k in range(1, 41)
        for side in (0, 1)
    ]
    scorer = scorer_of(model)
    got = scorer.score_many(requests)
    assert scorer.stats.passes >= 40  # one prefix pass per level: the chain is 40 deep
    gap = gap_to_one_pass_each(model, requests, got)
    bounds = Tolerance.bf16()
    assert gap < 0.1 < bounds.logprob_atol / 5, gap
    assert gap < bounds.hidden_atol / 5


def test_defence_the_walk_never_costs_more_than_the_old_scheme_and_always_ends() -> None:
    """Trees a node may shape against the walk: 300 identical prompts, a comb (a call ending at
    every position of a stem), pairs sharing less than a prefix pass would spare, prompts each a
    prefix of the next, random stems. Tokens through the decoder stay within ``MIN_SAVED_TOKENS``
    of the old scheme's; passes within two per call."""
    model = make_tiny_llama(2)
    rng = random.Random(8)
    stem = tuple(rng.randrange(1, 100) for _ in range(300))
    shapes: dict[str, list[ScoreRequest]] = {
        "duplicates": [ScoreRequest(stem[:40], [1, 2])] * 300,
        "comb": [ScoreRequest((*stem[:k], 100), [1]) for k in range(1, 120)],
        "thin pairs": [ScoreRequest((*stem[:30], 90 + k), [1, 2]) for k in range(2)],
        "chain": [ScoreRequest(stem[: 8 * k], [3]) for k in range(1, 36)],
        "random": [
            ScoreRequest(
                (*rng.choice([stem, stem[::-1]])[: rng.randrange(0, 200)], rng.randrange(1, 100)),
                [rng.randrange(1, 100) for _ in range(rng.randrange(0, 5))],
            )
            for _ in range(60)
        ],
    }
    for name, requests in shapes.items():
        scorer = scorer_of(model)
        got = scorer.score_many(requests)
        assert len(got) == len(requests), name
        live = sum(1 for r in requests if r.output_ids)
        allowed = old_scheme_tokens(requests) + validator_scoring.MIN_SAVED_TOKENS
        assert scorer.stats.tokens <= allowed, (name, scorer.stats, allowed)
        assert scorer.stats.passes <= 2 * live + 1, (name, scorer.stats)


def test_defence_one_pass_keeps_no_nested_copies_in_the_prefix_cache() -> None:
    """A node's calls: a 3,900-token stem, and pairs of questions branching off it every 100 tokens
    from 3,000 on (each pair spares a prefix pass, so each branch point computes one). Every
    extension is a full copy of its parent's keys/values; the cache was bounded in entries only
    and kept 8 nested entries, ~27,000 tokens (1.3 GB for SmolLM2 in float32), 7 of them
    redundant. Defence (by design, `ModelScorer._keep`): an entry whose key begins a new one is
    dropped (the new one serves it, sliced), and the cache is bounded in tokens too
    (``PREFIX_CACHE_TOKENS``). The scores are unchanged (compared with a plain pass)."""
    cfg = TINY.__class__(**{**TINY.__dict__, "max_position": 4096})
    model = make_tiny_llama(3, cfg)
    rng = random.Random(4)
    stem = tuple(rng.randrange(1, 99) for _ in range(3900))
    requests = [
        ScoreRequest((*stem[: 3000 + 100 * k], 100, 50 + side), [1, 2]) for k in range(9) for side in (0, 1)
    ]
    scorer = scorer_of(model)
    got = scorer.score_many(requests)
    keys = list(scorer._prefixes)
    assert keys and not [a for a in keys for b in keys if a != b and b[: len(a)] == a]  # none nested
    held = sum(kv[0].shape[2] for kv in scorer._prefixes.values())
    assert held <= validator_scoring.PREFIX_CACHE_TOKENS, held
    assert held <= 3900, held  # the stem once, not once per branch point
    for r, g in zip(requests[::5], got[::5], strict=True):
        ref = score(model, r.prompt_ids, r.output_ids)
        assert max(abs(a - b) for a, b in zip(ref.logprobs, g.logprobs, strict=True)) < 5e-5


# -- 2. the re-check back-off ----------------------------------------------------------------------


@dataclass
class _Header:
    committed_at: int


@dataclass
class _Params:
    challenge_window: int


@dataclass
class _Chain:
    committed_at: int
    window: int

    def params(self) -> _Params:
        return _Params(self.window)

    def batch(self, batch_id: int) -> _Header:
        return _Header(self.committed_at)


@dataclass
class _Availability:
    chain: _Chain
    answered_at: int = 0

    async def deadline(self, batch_id: int, index: int | None = None) -> int:
        """`Availability.deadline`, as the contract's `_checkChallengeable` has it."""
        end = self.chain.committed_at + self.chain.window
        answered = 0 if index is None else self.answered_at
        return max(end, answered + self.chain.window) if answered else end


@dataclass
class Rechecks:
    """The real `Validator._check_diverged` (with its `_entry_window` and `_closed`) over a real
    `Database`, stepped on a chain clock. ``check_entry`` is the full check as `_settle` ends it:
    ``outcome(now)`` says whether checking fails here (a `Verdict.local_failure`: `mark_recheck`
    at `recheck_at`, as `_settle` does), raises (an error, not a verdict) or succeeds (settled)."""

    db: Database
    chain: _Chain
    outcome: Callable[[int], str]
    now: int = 0
    tried: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    availability: _Availability = field(init=False)

    _check_diverged = Validator._check_diverged
    _entry_window = Validator._entry_window
    _closed = Validator._closed

    def __post_init__(self) -> None:
        self.availability = _Availability(self.chain)

    async def check_entry(self, batch_id: int, index: int) -> None:
        self.tried.append(self.now)
        what = self.outcome(self.now)
        if what == "local":  # as `Validator._settle` does
            attempts = self.db.recheck_attempts(batch_id, index) + 1
            end = await self._entry_window(batch_id, index, self.now)
            self.db.mark_recheck(batch_id, index, recheck_at(attempts, self.now, end))
        elif what == "raise":
            raise ConnectionError("store: 503")
        else:
            self.db.settle_diverged(batch_id, index)

    def _emit(self, kind: str, **data: Any) -> None:
        self.events.append({"kind": kind, **data})

    async def run(self, times: range) -> None:
        for t in times:
            self.now = t
            await self._check_diverged(t)


def rechecks(tmp_path: Path, window: int, outcome: Callable[[int], str]) -> Rechecks:
    db = Database(tmp_path / "v.sqlite")
    r = Rechecks(db, _Chain(committed_at=0, window=window), outcome)
    db.mark_recheck(1, 0, recheck_at(1, 0, window))  # the first check, in the batch's step, failed here
    r.tried.append(0)
    return r


async def test_defence_a_day_window_is_tried_to_its_end_at_moments_no_node_knows(tmp_path: Path) -> None:
    """One-day window, a step a second. The node keeps the validator's check failing (memory it
    makes short) until one minute after what was the last call (``end - window // 10``), then lets
    go: the check passes for the last ~2.4 hours of the window. It used to be tried 17 times, none
    in those hours, and end *unchecked*. Defence (by design, `service.recheck_at`): the back-off is
    in chain time and never more than a quarter of the time left, each delay drawn at random: the
    tries thicken toward the end (a few dozen a day, not one a step), so the check is tried again
    in those hours and the entry is settled; no moment of a try is known in advance."""
    window = 86_400
    let_go = window - window // 10 + 60
    r = rechecks(tmp_path, window, lambda t: "local" if t < let_go else "pass")
    await r.run(range(1, window + 2))
    assert len(r.tried) < 100, len(r.tried)  # a few tries a window, not one a step
    assert max(r.tried) >= let_go and max(r.tried) < window  # tried again once it could pass
    assert r.db.unchecked() == [] and r.db.diverged_pending() == [] and r.events == []
    # the schedule is drawn: two validators do not try at the same moments
    other = rechecks(tmp_path / "other", window, lambda t: "local")
    await other.run(range(1, 5_000))
    mine = [t for t in r.tried if t < 5_000]
    assert other.tried[1:] != mine[1:]


async def test_defence_an_error_on_a_try_leaves_the_entry_due(tmp_path: Path) -> None:
    """Memory is short until late in the window; at the first try after that the check raises (the
    store refusing the evidence, an RPC error: not a local-failure verdict) and would pass at any
    later step. It used to be the single last call, marked before it ran: spent, the entry ended
    *unchecked*. Defence: an error changes nothing in the entry's back-off, so it is tried again
    at the next step and settled; there is no last call to spend."""
    window = 600
    turn = window - window // 10

    def outcome(t: int) -> str:
        return "local" if t < turn else "raise" if t == first_after[0] else "pass"

    first_after = [0]
    r = rechecks(tmp_path, window, lambda t: outcome(t))

    async def run() -> None:
        for t in range(1, window + 2):
            r.now = t
            if t >= turn and not first_after[0]:
                [row] = r.db.diverged_rows()
                if t >= row.next_at:
                    first_after[0] = t  # this try raises
            await r._check_diverged(t)

    await run()
    raised = first_after[0]
    assert turn <= raised < window and r.tried.count(raised) == 1
    assert r.tried[-1] == raised + 1  # due again at the next step, and settled there
    assert r.db.unchecked() == [] and r.db.diverged_pending() == []


async def test_defence_a_diverged_writer_is_checked_every_step_and_settled_quietly(tmp_path: Path) -> None:
    """A diverged writer (`mark_diverged`, ``attempts`` 0) whose check raises every time is tried
    each step, as before the change, until its window closes; it then settles without being
    reported unchecked (nothing failed *here*: it is the old behaviour). An availability answer
    late in the batch's window moves the entry's deadline to a full window from it (the contract's
    `_checkChallengeable`), and the re-checks follow it."""
    db = Database(tmp_path / "v.sqlite")
    r = Rechecks(db, _Chain(committed_at=0, window=100), lambda t: "raise")
    db.mark_diverged(1, 0)
    await r.run(range(0, 120))
    assert r.tried == list(range(0, 100))
    assert db.diverged_pending() == [] and db.unchecked() == [] and r.events == []

    db2 = Database(tmp_path / "w.sqlite")
    late = Rechecks(db2, _Chain(committed_at=0, window=100), lambda t: "local")
    late.availability.answered_at = 95
    db2.mark_recheck(1, 0, next_at=0)
    await late.run(range(1, 200))
    assert max(late.tried) >= 190 and max(late.tried) < 195  # tried up to its own end, inside
    assert db2.unchecked() == [(1, 0)]


@pytest.mark.anvil
@pytest.mark.model
async def test_defence_long_steps_still_recheck_once_checking_works_again(
    vnet: Any, validator_factory: Any
) -> None:
    """A validator whose steps take 100 s of chain time (a node floods it with batches to check),
    600 s window: the cheat's check fails here (memory) at steps 1 to 3, then memory is back. The
    step-counted back-off skipped steps 4-6 and no step made the last call: the cheat ended
    *unchecked*. Defence (by design): the back-off is in chain time and at most a quarter of the
    time left, and a step makes its due re-checks before its pending batches: the cheat is found
    and challenged by step 5, inside the window."""
    from tests.unit.test_validator_recheck_backoff import Memory

    cheat, _ = await vnet.run_batch(["Say hi."], max_new_tokens=4, fault_plan=[{"tokens": 1.0}])
    memory, events = Memory(), list[Any]()
    v = scoring_through(vnet, validator_factory, memory, events=events)
    w3 = vnet.contracts.w3
    window = vnet.contracts.task_manager.challenge_window()
    assert window == 600
    async with v:
        start = v.chain.batch(cheat).committed_at
        end = start + window
        for step in range(1, 6):
            advance_to(w3, start + 5 + 100 * (step - 1))
            memory.at, memory.short = step, step < 4
            await v.step()
            if v.db.checks(cheat):
                break
        assert v.chain.timestamp() < end
        [check] = v.db.checks(cheat)
        assert not check.ok and check.challenge_id is not None
        assert max(memory.tried) >= 4 and v.db.unchecked() == []
    assert [e.data["index"] for e in events if e.kind == "challenge"] == [0]


async def test_defence_a_fault_whose_challenge_was_never_sent_is_reported_unchallenged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reviewer's variant of the error finding: the re-check finds the cheat and records it,
    then sending the challenge fails until the window closes. `_closed` used to see a recorded
    check and settle quietly: a faulty verdict never challenged and never reported. Now it ends
    ``unchallenged``, logged as an error and listed (`Database.unchallenged()`)."""
    db = Database(tmp_path / "v.sqlite")
    r = Rechecks(db, _Chain(committed_at=0, window=100), lambda t: "raise")
    db.mark_recheck(1, 0, next_at=0)
    db.record_check(CheckRow(1, 0, False, "llm.token", "bafyevidence", None))
    caplog.set_level(logging.ERROR, logger="supernet.validator.service")
    await r.run(range(90, 101))
    assert db.diverged_pending() == [] and db.unchecked() == []
    assert db.unchallenged() == [(1, 0)]
    [line] = [rec.getMessage() for rec in caplog.records if "UNCHALLENGED" in rec.getMessage()]
    assert "batch 1 #0" in line and "llm.token" in line
