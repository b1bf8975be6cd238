# Adversarial review (2026-12-04): five holes were found, each first recorded as a test_known_limit_*
# that passed while the hole existed; all five are fixed, and each is now a test_defence_* asserting
# the attack is refused (and that honest calls still pass).
"""Adversarial review of the validator's LLM checks (`supernet.validator.llm_check` and what it wires).

Each ``test_defence_*`` names an attack (a cheating node's call the validator used to accept, or an
honest node's call it used to flag), why it mattered and what now stops it, and asserts the attack
is refused while the honest controls pass. The tiny random Llama of ``tests/llm_fixtures.py``
stands in for the model (same decoder, sampler and scoring code).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from supernet.node.llm.sampling import (
    MIN_TEMPERATURE,
    SamplingParams,
    select,
    selection_margin,
    selection_margins,
    uniform,
)
from supernet.node.llm.scoring import Tolerance
from supernet.validator.llm_check import check_scores, check_shape
from supernet.validator.trace_view import LLMCall

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from llm_fixtures import make_tiny_llama

PROMPT = (5, 17, 33, 2, 9)
EOS = 0  # the tiny model's end-of-sequence token


def _scorer():  # type: ignore[no-untyped-def]
    from supernet.validator.scoring import ModelScorer

    return ModelScorer(make_tiny_llama(3), None, "0x" + "ab" * 32, (EOS,))


def _first_logits() -> torch.Tensor:
    """The float32 logits predicting the first output token after ``PROMPT`` (they do not depend on
    the seed, so a node knows them before it picks a token)."""
    model = make_tiny_llama(3)
    with torch.inference_mode():
        hidden = model(torch.tensor([list(PROMPT)]))
        return model.logits(hidden[0, -1:])[0].float()


def _claim(
    scorer, output: tuple[int, ...], temperature: float, seed: int, max_new: int, finish: str
) -> LLMCall:  # type: ignore[no-untyped-def]
    """The call a cheating node records: its chosen tokens with the model's own logprobs and
    fingerprints for them (one teacher-forced pass: what an honest validator re-computes)."""
    from supernet.validator.verifier import score_call

    probe = LLMCall(
        0,
        "m",
        PROMPT,
        output,
        (0.0,) * len(output),
        None,
        temperature,
        1.0,
        seed,
        max_new,
        None,
        finish,
        None,
    )
    own = score_call(scorer, probe)
    fps = [{"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in own.fingerprints]
    return LLMCall(
        0, "m", PROMPT, output, own.logprobs, fps, temperature, 1.0, seed, max_new, None, finish, None
    )


def _verdict(scorer, call: LLMCall) -> list:  # type: ignore[no-untyped-def]
    """Every finding the validator's LLM checks give the call (shape + teacher-forced scores)."""
    from supernet.validator.verifier import score_call

    return check_shape(call, scorer.eos_ids) + check_scores(call, score_call(scorer, call), Tolerance())


def _never_drawn(logits: torch.Tensor, token: int, temperature: float) -> bool:
    """Whether the sampler (top_p 1) picks ``token`` for no draw ``u`` but possibly ``u == 0``
    exactly, whatever the seed: its CDF interval in the sampler's own float64 arithmetic is empty
    (its mass is below the sum's rounding) or narrower than the draws' 2^-53 grid."""
    cdf = torch.softmax(logits.double() / temperature, dim=-1).cumsum(0)
    lo = cdf[token - 1] if token > 0 else torch.zeros((), dtype=torch.float64)
    return bool(cdf[token] == lo) or float((cdf[token] - lo) / cdf[-1]) < 2.0**-53


def test_defence_low_temperature_refuses_a_token_the_sampler_can_never_draw() -> None:
    """Attack: on a sampled call below temperature 1 (top_p 1, the default), whenever the draw ``u``
    lies near a CDF boundary (here ``u`` = 0.99988, within 1e-3 of the end), the node replaces the
    token with ANY token whose id is on the far side of that boundary, even one whose probability
    at that temperature is ~1e-31, i.e. a token whose CDF interval is empty in the sampler's own
    float64 arithmetic, so `select` can never produce it for any seed. It claims the model's own
    logprobs and fingerprints for it. Below T ~0.5 most of a real vocabulary underflows to
    zero-width intervals piled up on the boundaries of the few likely tokens, so at ~0.2 % of
    positions (more near a near-tie) the node could inject a word of its choosing.

    Defence: `sampling._interval_margin` measured only the distance from ``u`` to the token's nearer
    interval edge. It now also measures how far the token's own share ``(hi - lo) / mass`` is below
    ``DRAW_FLOOR`` (2^-53, the draws' grid): ``T * log(DRAW_FLOOR / share) / 4``, ``inf`` for an empty
    interval. Rounding of the logits by ``d`` moves that term by at most ``d / 2``, as it does the
    edge's log-odds, so an honest token is refused only if its own share is below the draws' grid.
    """
    scorer = _scorer()
    temperature, seed, steered = 0.1, 301, 41
    logits = _first_logits()
    params = SamplingParams(max_new_tokens=1, temperature=temperature, top_p=1.0, seed=seed)
    u = uniform(seed, len(PROMPT))
    assert u > 0.999  # the draw near the end of the CDF
    honest = select(logits[None], [params], [len(PROMPT)])[0]
    assert honest != steered
    # the steered token: 7 nats below the best raw logit, ~1e-31 likely at T 0.1
    assert float(logits.max() - logits[steered]) > 6.5
    assert float(torch.softmax(logits.double() / temperature, -1)[steered]) < 1e-30
    assert _never_drawn(logits, steered, temperature)
    cdf = torch.softmax(logits.double() / temperature, dim=-1).cumsum(0)
    assert cdf[steered] == cdf[steered - 1]  # an empty interval: no draw at all reaches it
    assert all(
        select(logits[None], [SamplingParams(temperature=temperature, seed=s)], [len(PROMPT)])[0] != steered
        for s in range(2000)
    )
    # the validator's margin for it is far outside the bound, whichever precision pair judges it
    assert selection_margin(logits, steered, params, len(PROMPT)) > Tolerance.bf16().sample_margin
    assert selection_margins(logits[None], [steered], params, len(PROMPT))[0] > Tolerance.bf16().sample_margin

    call = _claim(scorer, (steered,), temperature, seed, 1, "length")
    assert [f.check.value for f in _verdict(scorer, call)] == ["llm.sample"]  # refused
    # controls: the honest token at that draw passes, and so does every honest draw at low
    # temperatures under same-format rounding (1.3e-4 in logits, the largest measured)
    assert _verdict(scorer, _claim(scorer, (honest,), temperature, seed, 1, "length")) == []
    gen = torch.Generator().manual_seed(3)
    for trial in range(48):
        t = (1e-3, 0.1, 0.3, 1.0)[trial % 4]
        row = torch.randn(4000, dtype=torch.float64, generator=gen) * 4
        noise = (torch.rand(row.shape, dtype=torch.float64, generator=gen) * 2 - 1) * 1.3e-4
        p = SamplingParams(temperature=t, top_p=(1.0, 0.9)[trial % 2], seed=trial)
        tokens = [select(row[None], [p], [pos])[0] for pos in range(32)]
        assert (
            max(selection_margins((row + noise)[None].expand(32, -1), tokens, p, 0))
            <= Tolerance().sample_margin
        )


def test_defence_low_temperature_refuses_an_eos_the_sampler_can_never_draw() -> None:
    """Attack: the same hole used to truncate. On a sampled call at T 0.2 whose draw ``u`` is below
    1e-3 (0.1 % of positions), the node ends the generation at once with the end-of-sequence
    token (id 0: its CDF interval, of mass 4.5e-23, sits at the very bottom of the id-ordered
    CDF, so only the one draw ``u == 0`` of the 2^53 could reach it) and finish ``"stop"``,
    though the sampler draws the likely token there for this and every other seed. The agent would
    get an empty (or cut) reply and the node skip the rest of the generation. SmolLM2's special
    tokens (ids 0-2, EOS among them) are the lowest ids, so this is the real model's case.

    Defence: as in `test_defence_low_temperature_refuses_a_token_the_sampler_can_never_draw`
    (`sampling._interval_margin` no longer accepts a token of negligible own share by its edge).
    """
    scorer = _scorer()
    temperature, seed = 0.2, 202
    logits = _first_logits()
    params = SamplingParams(max_new_tokens=16, temperature=temperature, top_p=1.0, seed=seed)
    assert uniform(seed, len(PROMPT)) < 1e-3
    assert select(logits[None], [params], [len(PROMPT)])[0] != EOS
    assert _never_drawn(logits, EOS, temperature)
    assert float(torch.softmax(logits.double() / temperature, -1)[EOS]) < 1e-20

    assert all(
        select(logits[None], [SamplingParams(temperature=temperature, seed=s)], [len(PROMPT)])[0] != EOS
        for s in range(2000)
    )
    assert selection_margin(logits, EOS, params, len(PROMPT)) > Tolerance.bf16().sample_margin

    call = _claim(scorer, (EOS,), temperature, seed, 16, "stop")
    assert [f.check.value for f in _verdict(scorer, call)] == ["llm.sample"]  # the empty answer refused


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_defence_honest_near_tie_at_min_temperature_is_not_accused(top_p: float) -> None:
    """Reverse attack (a USER gets an honest node slashed): the user signs a sampled call at the
    smallest non-greedy temperature on a prompt with a near-tie (two best logits ~1e-5 apart, which
    a user can search prompts for). The honest node's logits differ from the validator's by
    same-format rounding (5e-5 here, below the 7.1e-5 measured in docs/benchmarks/exact_pairs.md),
    which flips the tie. With ``MIN_TEMPERATURE`` at 1e-6 the node's token was then ``>= 21 * T``
    below the best in the validator's distribution, its share below ``ODDS_FLOOR`` (1e-9), where
    `_odds_distance` is infinite, so the plain CDF distance (~``u``) stood and ~35 % of such honest
    draws were flagged.

    Defence: ``sampling.MIN_TEMPERATURE`` is now 1e-4 (below it a call is greedy, on the node and
    on every validator, `is_greedy`, judged by the 1e-3-nat greedy bound): rounding of ~1e-4 in
    the logits then moves a share's log-odds by ~2, far from ``ODDS_FLOOR``'s ~20.7. The temperature
    that was attacked (1e-6) is greedy now and accuses nobody either.
    """
    gen = torch.Generator().manual_seed(7)
    bound = Tolerance().sample_margin
    flagged = {MIN_TEMPERATURE: 0, 1e-5: 0, 1e-6: 0, 0.0: 0}
    for trial in range(120):
        row = torch.randn(1000, dtype=torch.float64, generator=gen) * 3
        best, second = torch.topk(row, 2).indices.tolist()
        row[second] = row[best] - 1e-5
        noise = torch.randn(row.shape, dtype=torch.float64, generator=gen) * 5e-5
        for temperature in flagged:
            params = SamplingParams(temperature=temperature, top_p=top_p, seed=trial)
            token = select(row[None], [params], [trial])[0]  # the honest node's draw
            margin = selection_margins((row + noise)[None], [token], params, trial)[0]
            flagged[temperature] += margin > bound
    assert MIN_TEMPERATURE == 1e-4 and not SamplingParams(temperature=MIN_TEMPERATURE).greedy
    assert SamplingParams(temperature=1e-6).greedy and SamplingParams(temperature=9.9e-5).greedy
    assert flagged == {MIN_TEMPERATURE: 0, 1e-5: 0, 1e-6: 0, 0.0: 0}  # no honest draw accused


def test_defence_output_continued_past_a_stop_string_is_refused() -> None:
    """Attack: a call with a stop string (the agent's ``stop``) must end at the token where that
    string first appears (`dispatch._StopWatcher` stops the engine there). `check_shape` only asked
    that the string occur *somewhere* in the decoded output for finish ``"stop"``, and nothing at
    all for ``"length"``; the replay's tape engine never calls ``on_token``. A node could therefore
    record extra tokens after the stop string (the model's honest continuation, which the
    teacher-forced check accepts) and stop where it liked: the agent's text is unchanged (cut at
    the first stop string), but the task's token budget (``use.llm_tokens``) is burnt, so the
    agent's later calls get a smaller ``max_new_tokens`` or are refused (``BudgetExceededError``).

    Defence: `llm_check.check_shape` (`_past_stop_string`) requires, for either finish reason, that
    no proper prefix of the output decodes to a text holding a stop string (the longest one is
    decoded; a bisection finds the first extra token for the evidence): an ``llm.finish`` finding.
    """
    text = {1: "The answer", 2: " is 4", 3: ".\n\n", 4: "Extra", 5: " words"}

    def decode(ids: tuple[int, ...] | list[int] | Sequence[int]) -> str:
        return "".join(text.get(i, "") for i in ids)

    def call(output: tuple[int, ...], finish: str, max_new: int) -> LLMCall:
        lps = (-0.1,) * len(output)
        return LLMCall(0, "m", PROMPT, output, lps, None, 0.0, 1.0, 0, max_new, None, finish, None, ("\n\n",))

    def shape(c: LLMCall) -> list[tuple[str, int | None]]:
        return [(f.check.value, f.position) for f in check_shape(c, (EOS,), c.stop_strings, decode)]

    padded = call((1, 2, 3, 4, 5), "stop", 16)  # two tokens past the stop string, no stop token
    assert "\n\n" in decode((1, 2, 3))  # the honest engine stops after token 3
    assert shape(padded) == [("llm.finish", 3)]
    to_budget = call((1, 2, 3, 4, 5), "length", 5)  # or runs on to the budget
    assert shape(to_budget) == [("llm.finish", 3)]
    with_eos = call((1, 2, 3, 4, EOS), "stop", 16)  # or ends on a stop token later
    assert shape(with_eos) == [("llm.finish", 3)]
    # controls: honest ends pass (at the stop string, on a stop token, at the budget), and a
    # truncation before the stop string is still caught
    assert shape(call((1, 2, 3), "stop", 16)) == []
    # the string and the budget at the same token: the watcher's stop wins, the engine records
    # "stop" (`types.finish_reason_of`), so "length" there is the node's choice, a finding
    assert shape(call((1, 2, 3), "length", 3)) == [("llm.finish", 2)]
    assert shape(call((1, 2, EOS), "stop", 16)) == []
    assert shape(call((1, 2, 4, 5), "length", 4)) == []
    assert shape(call((1, 2), "stop", 16)) == [("llm.finish", 1)]


# -- a bfloat16 screen in front of the float32 arbiter -------------------------------------------------

STEER_PROMPT = (65, 53, 63, 46, 54, 45)  # a prompt whose two best next tokens round to one bf16 logit


async def test_defence_bf16_screen_ties_send_a_float32_nodes_greedy_call_to_the_arbiter() -> None:
    """Attack: a float32 node on a greedy call swaps the argmax for the runner-up wherever the two
    are close enough (here 0.055 nat, 55x the float32 bound) that the bf16 screen's logits round
    them to the SAME bfloat16 value (bf16 has 8 mantissa bits: logits of 8-16 are on a 0.0625 grid,
    so ties are common: 17 of 400 random prompts of the tiny model at the first position alone).
    It claims the runner-up's own float32 logprob and fingerprints. The screen's greedy margin is
    then exactly 0 (`Tolerance.screening` keeps the float32 0.001-nat greedy bound, which a tie
    meets), so the screen accepted the call and the arbiter saw it only if its random draw (1 call
    per receipt by default) fell on it: with n calls per receipt the steered one escaped with
    probability 1 - 1/n. The node can compute the screen's bf16 logits itself, so it knows exactly
    where the ties are.

    Defence, by design (`Verifier._route`): the screen never judges a greedy call of a node in
    another format than its own; every such call goes to the arbiter, whose exact bound refuses the
    swap whatever the screen's rounding shows. (The first fix sent a greedy call on only when the
    screen saw a near-tie in it; nearly every greedy call of a few tokens holds one, so scoring them
    on the screen first was wasted work, and the rule's window was one more bound to get right.)
    """
    import random

    from supernet.validator.scoring import ModelScorer
    from supernet.validator.tool_check import RegistryRunner
    from supernet.validator.verifier import Verifier, score_call

    from tests.unit.test_validator_attacks import DOMAIN, DictStore, StandInScorer, registry, staged

    weights = "0x" + "ab" * 32
    arbiter = ModelScorer(make_tiny_llama(3), None, weights, (EOS,))
    screen = ModelScorer(make_tiny_llama(3).to(torch.bfloat16), None, weights, (EOS,))
    assert screen.dtype == "bfloat16" and arbiter.dtype == "float32"

    def greedy(prompt: tuple[int, ...], output: tuple[int, ...], call: int) -> LLMCall:
        probe = LLMCall(call, "m", prompt, output, (0.0,), None, 0.0, 1.0, 0, 1, None, "length", None)
        own = score_call(arbiter, probe)  # the node's float32 logprobs and fingerprints
        fps = [
            {"index": f.index, "indices": list(f.indices), "values": list(f.values)} for f in own.fingerprints
        ]
        return LLMCall(call, "m", prompt, output, own.logprobs, fps, 0.0, 1.0, 0, 1, None, "length", None)

    probe = score_call(
        arbiter, LLMCall(1, "m", STEER_PROMPT, (0,), (0.0,), None, 0.0, 1.0, 0, 1, None, "length", None)
    )
    (_best, best_lp), (runner_up, runner_lp) = probe.top_tokens[0][:2]
    assert 0.05 < best_lp - runner_lp  # float32: the runner-up is 0.055 nat below the argmax
    honest_prompt = (1, 2, 3, 4, 5)
    honest_tok = score_call(
        arbiter, LLMCall(0, "m", honest_prompt, (0,), (0.0,), None, 0.0, 1.0, 0, 1, None, "length", None)
    ).top_tokens[0][0][0]
    calls = (greedy(honest_prompt, (honest_tok,), 0), greedy(STEER_PROMPT, (runner_up,), 1))
    on_screen = score_call(screen, calls[1])
    assert on_screen.margins == (0.0,)  # a bf16 tie: the screen sees the runner-up as an argmax

    class DrawsTheOtherCall(random.Random):
        """The validator's draw landing on the honest call (probability 1/2 with its CSPRNG)."""

        def sample(self, population, k):  # type: ignore[no-untyped-def,override]
            return [c for c in population if c.call != 1][:k]

    store = DictStore()
    verifier = Verifier(
        store, StandInScorer(), RegistryRunner(store), DOMAIN, "0xv", agents=registry(),
        arbiter=arbiter, rng=DrawsTheOtherCall(),
    )  # fmt: skip
    receipt = staged(calls, screen, arbiter)  # a float32 node, bf16 screen, float32 arbiter
    [judged] = await verifier._judge([receipt])
    assert not isinstance(judged, str)
    # the steered greedy token is refused by the arbiter, whatever the random draw
    assert [(f.check.value, f.position) for f in judged.findings[1]] == [("llm.token", 0)]
    assert judged.rechecked == 2  # both greedy calls, by the arbiter alone
    assert verifier._route(receipt, False) == (list(calls), [])  # the screen scored neither
    assert judged.findings[0] == []  # control: the honest call passes
    # control: the honest tied call (the argmax itself) is re-scored too, and passes
    honest_tie = greedy(STEER_PROMPT, (_best,), 1)
    [fair] = await verifier._judge([staged((calls[0], honest_tie), screen, arbiter)])
    assert not isinstance(fair, str) and fair.findings == {0: [], 1: []} and fair.rechecked == 2
    # control: a bf16 node is judged in bf16 anyway: the screen scores its greedy calls
    assert verifier._route(staged(calls, screen, screen, "bfloat16"), False) == ([], list(calls))


def test_defence_fingerprint_dims_outside_the_rescored_top_k_are_compared_to_their_values() -> None:
    """Attack: a fingerprint is meant to prove the node computed the hidden state (it is what tells
    float16-weights work sold under the float32 id apart, 113x, docs/validator.md). But
    `scoring._compare_fingerprint` accepted a claimed dim that is NOT in the rescored top-8 as a
    "near-tie at the boundary" whenever its claimed magnitude was within the bound of the rescored
    8th-largest magnitude (the floor), without ever looking at the rescored hidden value at that
    dim. So a node could claim 8 arbitrary distinct dims, each with the value ``+floor``: the whole
    fingerprint then carried one number (the floor) instead of 8 dims and 8 values.

    Defence: the rescoring keeps the whole hidden row behind every fingerprint
    (``ScoreResult.fingerprint_rows``, from `score` and `score_packed`), and `_compare_fingerprint`
    compares a claimed dim outside the rescored top-k with the rescored value at that dim (same
    bound as for the top-k dims), besides its magnitude with the floor.
    """
    from supernet.node.llm.scoring import ScoreRequest, compare_generation, fingerprints_of, score_packed
    from supernet.node.llm.types import Fingerprint, GenerationResult
    from supernet.validator.verifier import score_call

    scorer = _scorer()
    model = scorer.model
    output = (37,)  # the greedy token after PROMPT
    honest = score_call(
        scorer, LLMCall(0, "m", PROMPT, output, (0.0,), None, 0.0, 1.0, 0, 1, None, "length", None)
    )
    [ref] = honest.fingerprints
    floor = min(abs(v) for v in ref.values)
    with torch.inference_mode():  # the true hidden row behind that fingerprint
        hidden = model(torch.tensor([list(PROMPT)]))[0, -1].float()
    assert fingerprints_of(hidden[None], [0])[0].indices == ref.indices
    assert honest.fingerprint_rows is not None and torch.allclose(
        honest.fingerprint_rows[0], hidden, atol=1e-5
    )
    # 8 dims the model's top-8 does not hold, among the smallest-magnitude ones of the row
    made_up = tuple(int(d) for d in hidden.abs().argsort()[:8].tolist())
    assert not set(made_up) & set(ref.indices)
    assert max(abs(float(hidden[d])) for d in made_up) < floor / 4  # their true values are far off
    fake = Fingerprint(index=0, indices=made_up, values=(floor,) * 8)
    claimed = GenerationResult(PROMPT, output, "length", honest.logprobs, (fake,))
    verdict = compare_generation(claimed, honest, Tolerance())
    assert not verdict.ok and [m.kind for m in verdict.mismatches] == ["fingerprint"]
    assert "rescored" in verdict.mismatches[0].detail
    # the packed scoring the validator runs keeps the rows too
    [packed] = score_packed(model, [ScoreRequest(PROMPT, output)])
    assert not compare_generation(claimed, packed, Tolerance()).ok
    # controls: the honest fingerprint passes, and so does an honest near-tie at the boundary (the
    # node's top-8 holds the dim tied with the validator's 8th, at its own value)
    assert compare_generation(GenerationResult(PROMPT, output, "length", honest.logprobs, (ref,)), honest).ok
    eighth, ninth = (int(d) for d in hidden.abs().topk(9).indices[7:])
    tied = hidden.clone()
    tied[ninth] = torch.sign(tied[ninth]) * abs(tied[eighth])
    [tied_ref] = fingerprints_of(tied[None], [0])  # the validator's pick among the two
    mine, theirs = (ninth, eighth) if eighth in tied_ref.indices else (eighth, ninth)
    dims = tuple(mine if d == theirs else d for d in tied_ref.indices)
    near = Fingerprint(0, dims, tuple(float(tied[d]) for d in dims))
    rescored = replace(honest, fingerprints=(tied_ref,), fingerprint_rows=tied[None])
    assert compare_generation(
        GenerationResult(PROMPT, output, "length", honest.logprobs, (near,)), rescored
    ).ok


def test_defence_loose_params_and_empty_outputs_do_not_switch_the_checks_off() -> None:
    """Defence (no hole found): params the trace format or the sampler parse loosely cannot turn the
    token check off. NaN / inf temperatures and top_p are refused by the trace format
    (`fields.number`); a negative temperature is greedy on the validator (``is_greedy``), so a
    steered token on such a call is a token finding; out-of-range top_p is read as 1 (the node's
    `SamplingParams` refuses such a call, and the replay pins the recorded params to the agent's).
    A call recorded with an empty output is never scored, but its finish is: ``"stop"`` without a
    stop token is a finding (and ``"length"`` needs ``max_new_tokens`` 0, which no kernel records)."""
    from supernet.sdk.formats.fields import FormatError
    from supernet.sdk.formats.trace import Sampling
    from supernet.validator.llm_check import sampling_params

    base = {
        "max_new_tokens": 4,
        "temperature": 0.5,
        "top_p": 1.0,
        "seed": 1,
        "stop_token_ids": None,
        "stop": [],
    }
    for key in ("temperature", "top_p"):
        for bad in (float("nan"), float("inf"), float("-inf")):
            with pytest.raises(FormatError):
                Sampling.from_dag({**base, key: bad}, "params")
    scorer = _scorer()
    steered = _claim(scorer, (14,), -5.0, 0, 1, "length")  # not the argmax (37)
    assert [f.check.value for f in _verdict(scorer, steered)] == ["llm.token"]
    odd = LLMCall(0, "m", PROMPT, (14,), (0.0,), None, 0.5, 7.5, 3, 1, None, "length", None)
    assert sampling_params(odd).top_p == 1.0
    empty = LLMCall(0, "m", PROMPT, (), (), None, 0.7, 1.0, 3, 16, None, "stop", None)
    assert [f.check.value for f in check_shape(empty, scorer.eos_ids)] == ["llm.finish"]
