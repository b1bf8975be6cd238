"""Second adversarial review of the LLM checks after commit 2cb5d57 (false positives first).

The two problems it found are fixed; each ``test_defence_*`` says what happened before and what
stops it now, or pins a case tried that behaves correctly.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from supernet.node.kernel.dispatch import _StopWatcher, stop_text
from supernet.node.llm.sampling import (
    MIN_TEMPERATURE,
    SamplingParams,
    select,
    selection_margin,
    selection_margins,
    uniform,
)
from supernet.node.llm.scoring import Tolerance
from supernet.validator.llm_check import _past_stop_string, check_shape
from supernet.validator.trace_view import LLMCall

SMOLLM2 = Path.home() / ".cache" / "supernet" / "models" / "smollm2-135m"


def test_defence_draw_floor_term_stays_finite_for_an_honest_token_that_underflows_cross_format() -> None:
    """Now fixed: `_interval_margin` takes the share in log space from the token's own
    log-probability (``log_p``, from the logits), so the honest token below scores ~1.6e-3, within
    the bound, on both code paths; the first review's attacks are still refused
    (tests/unit/test_review_llm_check.py).

    Cause (before): `sampling._interval_margin` takes the DRAW_FLOOR term from the share ``(hi - lo) / mass``
    of the validator's float64 CDF. Its docstring bounds how rounding moves that term (``d / 2`` for
    logits ``d`` apart) but the computed share is a difference of two CDF values: once the token's
    share falls below the CDF's rounding (~1e-16) it is exactly 0, ``log`` gives ``-inf`` and the
    term is ``inf`` whatever ``d`` was. Between formats (a bfloat16 node is always re-scored
    cross-format: ``ModelScorer.for_compute("bfloat16")`` returns the validator's own scorer, judged
    with ``Tolerance.bf16``, ``sample_margin`` 0.1) logits of a near-tie routinely move by a few
    hundredths (greedy gaps by up to 0.43, docs/benchmarks/precision.md). At a low temperature that
    pushes the honest runner-up's share from a few % to ~1e-19 in the validator's row.

    Attack (a USER gets an honest bfloat16 node slashed): sign a call at ``T`` = 1e-3 (any
    ``T`` below ~0.01 works; 1e-4 even with ~0.004 of rounding) on a prompt with a near-tie, and a
    seed whose draw lands in the runner-up's interval (1 try in ~20 here). The honest node draws
    the runner-up (share 4.7 %); the validator's margin for it is ``inf``. Before 2cb5d57 the margin
    was the CDF distance (~0.009 here), within the 0.1 bound: the commit turned an accepted honest
    draw into an ``llm.sample`` accusation.

    Who loses: honest bfloat16 nodes (slashed), on user-chosen low temperatures. Severity: high
    (user-triggerable accusation, no cheating needed, cheap to set up).

    Fix: take the share in log space from the token's own probability, not from the CDF
    difference: ``log_share = log_softmax(row / T)[token] - log(mass)`` (finite for any finite
    logit), ``own = T * clamp(log(DRAW_FLOOR) - log_share, min=0) / 4``. That term really moves by
    at most ``d / 2`` (here ~1.6e-3, accepted) and still refuses the review's attacks (a token 7 nats
    down at ``T`` 0.1 scores ~0.83; an EOS of share 4.5e-23 at ``T`` 0.2 ~0.7); keep ``inf`` only for
    a token outside the support (probability exactly 0, e.g. masked by a grammar).
    """
    temperature, position = 1e-3, 7
    node = torch.zeros(64, dtype=torch.float32)  # the bfloat16 node's logits (values exact in bf16)
    node[5], node[6] = 10.0, 10.0 - 0.003  # a near-tie: the runner-up (id 6) holds ~4.7 %
    validator = node.clone()  # the validator's row: the gap 0.04 wider (well within bf16 rounding)
    validator[5] += 0.02
    validator[6] -= 0.02
    seed = next(s for s in range(10_000) if uniform(s, position) > 0.96)
    params = SamplingParams(max_new_tokens=8, temperature=temperature, seed=seed)
    u = uniform(seed, position)
    assert select(node[None], [params], [position])[0] == 6  # the honest node draws the runner-up
    share = float(torch.softmax(node.double() / temperature, -1)[6])
    assert 0.04 < share < 0.05

    bound = Tolerance.for_pair("bfloat16", "float32").sample_margin
    assert bound == pytest.approx(0.1)
    # what the CDF distance (the margin before 2cb5d57) says: the draw is 1 - u from the edge
    cdf_distance = 1.0 - u
    assert cdf_distance < 0.01 < bound
    # the validator's share of the runner-up underflows in its CDF: the interval is empty
    cdf = torch.softmax(validator.double() / temperature, -1).cumsum(0)
    assert cdf[6] == cdf[5]
    log_share = float(torch.log_softmax(validator.double() / temperature, -1)[6])
    assert -45 < log_share < -40  # finite: the fix's term would be ~1.6e-3
    assert temperature * (log_share * -1 + math.log(2.0**-53)) / 4 < bound
    # the honest token is within the bound, on both code paths
    assert selection_margin(validator, 6, params, position) < bound
    assert selection_margins(validator[None], [6], params, position)[0] < bound
    # control: the node's own row scores it 0
    assert selection_margin(node, 6, params, position) == 0.0


def test_defence_same_format_near_ties_at_min_temperature_stay_within_the_bound() -> None:
    """Tried: the DRAW_FLOOR term at exactly ``MIN_TEMPERATURE`` (1e-4, still sampled) with a user's
    seed aimed at the runner-up of a near-tie and same-format rounding (1.3e-4, the largest
    measured) against the node. Shares move by ``exp(2d / T)`` ~ 13x: the runner-up stays far above
    the draws' grid, so the term is 0 and the margin is the small edge distance. Accepted."""
    assert not SamplingParams(temperature=MIN_TEMPERATURE).greedy
    gen = torch.Generator().manual_seed(11)
    worst = 0.0
    for trial in range(40):
        gap = (1e-4, 3e-4, 6e-4, 1e-3)[trial % 4]
        node = torch.randn(512, dtype=torch.float64, generator=gen)
        a, b = 40 + trial, 300 + trial
        node[a], node[b] = 20.0, 20.0 - gap
        noise = (torch.rand(512, dtype=torch.float64, generator=gen) * 2 - 1) * 1.3e-4
        p_b = float(torch.softmax(node / MIN_TEMPERATURE, -1)[b])
        lo = float(torch.softmax(node / MIN_TEMPERATURE, -1)[:b].sum())
        seed = next(s for s in range(100_000) if lo < uniform(s, 3) < lo + p_b)
        params = SamplingParams(temperature=MIN_TEMPERATURE, seed=seed)
        assert select(node[None], [params], [3])[0] == b
        worst = max(worst, selection_margin(node + noise, b, params, 3))
    assert worst <= Tolerance().sample_margin


def _honest_output(tok, ids: list[int], stops: tuple[str, ...]) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    """What the honest engine records: tokens up to the one after which `_StopWatcher` stops."""
    watcher = _StopWatcher(tok, stops, lambda _i, _t: None)
    out: list[int] = []
    for i, t in enumerate(ids):
        out.append(t)
        if watcher.on_token(i, t):
            break
    return tuple(out)


def _call(output: tuple[int, ...], stopped: bool) -> LLMCall:
    """The recorded call: finish "stop" where the watcher stopped it, else "length" at its budget."""
    finish = "stop" if stopped else "length"
    lps = (0.0,) * len(output)
    return LLMCall(0, "m", (1, 2), output, lps, None, 0.7, 1.0, 1, len(output), (), finish, None)


@pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").exists(), reason="SmolLM2 tokenizer not cached")
def test_defence_past_stop_string_never_flags_the_honest_watcher_with_the_real_tokenizer() -> None:
    """Tried: SmolLM2's byte-level tokenizer on texts whose prefixes decode to U+FFFD (a CJK char or
    emoji split over tokens), stop strings made of such characters, a stop string that is U+FFFD
    itself, one that spans a special token (skipped in the decode), punctuation after a space,
    whitespace-only and empty stop strings. The node's `_StopWatcher` and the validator's
    `_past_stop_string` decode the same prefixes with the same `stop_text`, so an honest output
    (cut where the watcher stops) is never flagged; SmolLM2 does no clean-up of spaces, so a prefix's
    text is a prefix of the whole but for a trailing U+FFFD. A cheat that runs on is flagged at the
    first token after the stop (except with a U+FFFD stop string: `test_known_limit_a_u_fffd_*`)."""
    from supernet.node.llm.tokenizer import Tokenizer

    tok = Tokenizer(SMOLLM2)
    decode = lambda ids: stop_text(tok, ids)  # noqa: E731
    texts = [
        "café 中文 😀 and more text here. Done .",
        "Answer: 42\n\nObservation: none , really ?",
        "x<|im_end|>y 😀😀 z",
    ]
    stop_sets = [("中",), ("😀",), ("\ufffd",), ("xy",), (" .",), ("\n\n",), (" ",), ("",), ("none ,",)]
    for text in texts:
        ids = tok.encode(text)
        for stops in stop_sets:
            honest = _honest_output(tok, ids, stops)
            assert _past_stop_string(honest, stops, decode) is None, (text, stops)
            stopped = len(honest) < len(ids) or any(x in decode(honest) for x in stops)
            assert check_shape(_call(honest, stopped), (), stops, decode) == [], (text, stops)
            if len(honest) < len(ids) and "\ufffd" not in stops:  # a run-on: refused at the next token
                cheat = tuple(ids[: len(honest) + 2])
                assert _past_stop_string(cheat, stops, decode) == len(honest), (text, stops)


@pytest.mark.skipif(not (SMOLLM2 / "tokenizer.json").exists(), reason="SmolLM2 tokenizer not cached")
def test_defence_a_u_fffd_stop_string_does_not_let_a_node_run_on() -> None:
    """Now fixed: with a stop string holding U+FFFD, `_past_stop_string` looks in every proper
    prefix; the run-on output is flagged at the token the honest watcher stopped at.

    Cause (before): `_past_stop_string` tests only the longest proper prefix (``ids[:-1]``), assuming a
    prefix's text is a prefix of the whole. With a byte-level tokenizer that fails for a trailing
    U+FFFD (a character split over tokens): a signed stop string "\ufffd" appears in the text of the
    prefix ending mid-character (where the honest watcher stops) and is gone once the next token
    completes it, so an output that runs on is not flagged. Who loses: the user (tokens past the stop
    billed). Severity: low (the user must sign a U+FFFD stop string; the sampling checks still hold
    every token to the rule). Fix: flag when ANY proper prefix ``ids[:k]`` (k < n) has a stop string
    (a linear scan, or an incremental decode as `_StopWatcher` does), not only ``ids[:n-1]``."""
    from supernet.node.llm.tokenizer import Tokenizer

    tok = Tokenizer(SMOLLM2)
    decode = lambda ids: stop_text(tok, ids)  # noqa: E731
    ids = tok.encode("café 中文 😀 and more")
    stops = ("\ufffd",)
    honest = _honest_output(tok, ids, stops)
    assert len(honest) < len(ids) and "\ufffd" in decode(honest)  # the watcher stops mid-emoji
    cheat = tuple(ids[: len(honest) + 2])
    assert _past_stop_string(cheat, stops, decode) == len(honest)  # flagged where it should stop
    assert check_shape(_call(cheat, False), (), stops, decode) != []
    assert _past_stop_string(tuple(honest), stops, decode) is None  # control: the honest output
