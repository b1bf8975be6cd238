"""Re-checking one recorded LLM call against a teacher-forced forward pass of the validator's model.

One forward pass over ``prompt + claimed output`` gives, at every output position, the logits the
model assigns to the next token. From them the validator decides, per position:

* **tokens** — a greedy call's token must be the argmax, a sampled call's token the one the
  counter-based sampler (`supernet.node.llm.sampling`) draws from the recorded seed at its absolute
  position, both up to ``Tolerance.selection_margin`` (a near-tie computed in another batch or
  thread layout is not an accusation);
* **model** — claimed logprobs and activation fingerprints must match the re-computed ones;

Tolerances are the engine's documented ones (`supernet.node.llm.scoring.Tolerance`); the
comparison itself is the engine's `compare_generation`, so node and validator agree on it.
Further:
* **finish** — the recorded finish reason must be the one the engine gives the output
  (`supernet.node.llm.types.finish_reason_of`, the engine's own rule): ``"stop"`` for a stop token
  or a recorded stop string at the end (a stop wins over the budget: a stop on the last budgeted
  token is ``"stop"``), else ``"length"`` for exactly ``max_new_tokens`` tokens (the recorded
  budget, which the kernel caps at the protocol's context ``MAX_CONTEXT_TOKENS - len(prompt)`` and
  the replay re-derives); any other value, or an output that ends on neither (truncated), is a
  finding. A stop token earlier than the end is a token fault, and tokens after the one where a
  stop string first appears in the decoded text a finish fault (for either finish reason: the
  engine stops there).

Per check only the first few offending positions are reported (the evidence stays small).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from supernet.node.kernel.dispatch import first_stop
from supernet.node.llm.sampling import SamplingParams, is_greedy
from supernet.node.llm.scoring import Tolerance, compare_generation
from supernet.node.llm.types import (
    FINGERPRINT_TOP_K,
    Fingerprint,
    GenerationResult,
    ScoreResult,
    finish_reason_of,
)
from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS
from supernet.validator.evidence import Check, Finding
from supernet.validator.trace_view import LLMCall

MAX_POSITIONS_REPORTED = 5


def claimed_fingerprints(raw: Any) -> tuple[Fingerprint, ...]:
    """The trace's fingerprints (dag-cbor maps ``{index, indices, values}``) as engine objects.

    Raises:
        ValueError: not a list of such maps.
    """
    if raw is None:
        return ()
    try:
        fps = tuple(
            Fingerprint(
                index=int(f["index"]),
                indices=tuple(int(x) for x in f["indices"]),
                values=tuple(float(x) for x in f["values"]),
            )
            for f in raw
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"bad fingerprints: {type(exc).__name__}: {exc}") from exc
    if any(len(f.indices) != len(f.values) for f in fps):
        raise ValueError("bad fingerprints: indices and values differ in length")
    # the comparison checks only the dims a node lists: fewer (an empty list checks nothing),
    # repeated or non-finite ones would let a cheaper model through, and no honest engine writes them
    for f in fps:
        if len(set(f.indices)) != FINGERPRINT_TOP_K or len(f.indices) != FINGERPRINT_TOP_K:
            raise ValueError(
                f"bad fingerprints: output {f.index} lists {len(f.indices)} dims "
                f"({len(set(f.indices))} distinct), not {FINGERPRINT_TOP_K}"
            )
        if not all(math.isfinite(v) for v in f.values):
            raise ValueError(f"bad fingerprints: output {f.index} has a non-finite value")
    return fps


def check_tokens(call: LLMCall, vocab_size: int) -> list[Finding]:
    """What must hold before a call can be scored at all: a prompt, no more positions than the
    protocol's context (``MAX_CONTEXT_TOKENS``), and only token ids of the model's vocabulary. No
    honest node records anything else, so each failure is a finding (and the call is not scored:
    an out-of-range id would make the forward pass fail, not the node)."""
    out: list[Finding] = []
    if not call.prompt_ids:
        out.append(Finding(Check.LLM_SHAPE, "empty prompt", call=call.call))
    used = len(call.prompt_ids) + len(call.output_ids)
    if used > MAX_CONTEXT_TOKENS:  # a kernel never records one: never scored (nor its masks built)
        out.append(
            Finding(
                Check.LLM_SHAPE,
                f"the call uses {used} positions, over the protocol's context of {MAX_CONTEXT_TOKENS}",
                call=call.call,
                claimed=used,
            )
        )
    for where, ids in (("prompt", call.prompt_ids), ("output", call.output_ids)):
        bad = next((i for i, t in enumerate(ids) if not 0 <= t < vocab_size), None)
        if bad is not None:
            out.append(
                Finding(
                    Check.LLM_SHAPE,
                    f"{where} token id outside the model's vocabulary of {vocab_size}",
                    call=call.call,
                    position=bad if where == "output" else None,
                    claimed=ids[bad],
                )
            )
    return out


def check_shape(
    call: LLMCall,
    eos_ids: Sequence[int],
    stop_strings: Sequence[str] = (),
    decode: Callable[[Sequence[int]], str] | None = None,
) -> list[Finding]:
    """Lengths, finish reason and stop tokens (no model needed)."""
    out: list[Finding] = []
    n, stops = len(call.output_ids), set(call.stop_token_ids if call.stop_token_ids is not None else eos_ids)
    if call.logprobs and len(call.logprobs) != n:
        out.append(
            Finding(
                Check.LLM_SHAPE,
                "logprobs and output tokens differ in length",
                call=call.call,
                expected=n,
                claimed=len(call.logprobs),
            )
        )
    if n > call.max_new_tokens:
        out.append(
            Finding(
                Check.LLM_SHAPE,
                "more output tokens than max_new_tokens",
                call=call.call,
                expected=call.max_new_tokens,
                claimed=n,
            )
        )
    early = [i for i, t in enumerate(call.output_ids[:-1]) if t in stops]
    if early:
        out.append(
            Finding(
                Check.LLM_TOKEN,
                "a stop token before the end of the output",
                call=call.call,
                position=early[0],
                claimed=call.output_ids[early[0]],
            )
        )
    past = _past_stop_string(call.output_ids, stop_strings, decode)
    if past is not None:
        out.append(
            Finding(
                Check.LLM_FINISH,
                "output continues past a stop string (the engine stops where one first appears)",
                call=call.call,
                position=past,
                claimed=call.output_ids[past],
            )
        )
    if past is None and n <= call.max_new_tokens:  # else the finding above says where it runs on
        out += _check_finish(call, stops, stop_strings, decode)
    return out


def _check_finish(
    call: LLMCall,
    stops: set[int],
    stop_strings: Sequence[str],
    decode: Callable[[Sequence[int]], str] | None,
) -> list[Finding]:
    """The recorded finish reason against the one the engine gives this output (`finish_reason_of`,
    the engine's own rule): a stop token at the end or a stop string in the decoded text ->
    ``"stop"``, else exactly ``max_new_tokens`` tokens -> ``"length"``, else the output was cut
    short. Any other recorded value is a finding: the node would choose what the agent reads
    (`ChatResult.finish_reason`) and what the OpenAI gateway returns.

    Called only for at most ``max_new_tokens`` tokens and when no proper prefix holds a stop string
    (`_past_stop_string`), so a stop string in the whole text is one the last token completed.
    Without a decoder no stop string is found: the verifier decodes every call it scores, and one
    it cannot score has a finding already."""
    ids, claimed = call.output_ids, call.finish_reason
    n = len(ids)
    text = decode(ids) if stop_strings and decode is not None and n > 0 else ""  # decoded once
    on_string = any(s in text for s in stop_strings)
    expected = finish_reason_of(ids, call.max_new_tokens, stops, on_string)
    if claimed == expected:
        return []
    if claimed not in ("stop", "length"):
        why = f"unknown finish reason {claimed!r} (the engine records 'stop' or 'length'"
        why += f": here {expected!r})" if expected is not None else ": this output is cut short)"
        return [Finding(Check.LLM_FINISH, why, call=call.call, expected=expected, claimed=claimed)]
    if n == 0:  # the engine decides after a token, and the kernel's budget is at least one
        why = f"finish {claimed!r} on an empty output (the engine finishes a call after a token)"
        return [Finding(Check.LLM_FINISH, why, call=call.call, expected=None, claimed=claimed)]
    last = ids[-1]
    if expected is None:  # cut short: neither a stop nor the budget at the end
        if claimed == "length":
            return [
                Finding(
                    Check.LLM_FINISH,
                    "finish 'length' with fewer tokens than max_new_tokens",
                    call=call.call,
                    expected=call.max_new_tokens,
                    claimed=n,
                )
            ]
        return [
            Finding(
                Check.LLM_FINISH,
                "finish 'stop' without a stop token or stop string (truncated)",
                call=call.call,
                position=n - 1,
                claimed=last,
            )
        ]
    if expected == "stop":  # claimed "length": the engine checks the stops before the budget
        at = "a stop token" if last in stops else "a stop string"
        why = f"finish 'length' on an output that ends on {at}: the engine reports 'stop'"
    else:  # claimed "stop" at the budget with neither a stop token nor a stop string
        why = (
            "finish 'stop' at max_new_tokens without a stop token or stop string: the engine reports 'length'"
        )
    return [
        Finding(Check.LLM_FINISH, why, call=call.call, position=n - 1, expected=expected, claimed=claimed)
    ]


def _past_stop_string(
    ids: Sequence[int], stop_strings: Sequence[str], decode: Callable[[Sequence[int]], str] | None
) -> int | None:
    """The first output index after the token where a stop string first appears, if any does
    before the last token (None otherwise, or without stop strings or a decoder).

    The node's engine checks the decoded text after every token (`dispatch._StopWatcher`) and
    stops at the first one where a stop string appears, whatever the finish reason; the text of a
    prefix is a prefix of the longer text, so the longest proper prefix tells whether the output
    runs on, and a bisection finds where it should have ended (only for such outputs). One
    exception: a trailing U+FFFD (a character split across tokens) vanishes once the next token
    completes it, so a stop string holding U+FFFD is looked for in every proper prefix
    (tests/unit/test_review_llm_check2.py): by the engine's own watcher (`dispatch.first_stop`),
    a window's decode per token, not a decode of each prefix (a node's trace chose the tokens
    and the strings: tests/unit/test_review_validator_bait.py). The strings are the protocol's
    few (`MAX_STOP_STRINGS`, checked when the trace is read)."""
    if not stop_strings or decode is None or len(ids) < 2:
        return None

    def stopped(k: int) -> bool:
        text = decode(ids[:k])
        return any(s in text for s in stop_strings)

    if any("\ufffd" in s for s in stop_strings):  # rare: the first proper prefix that stops
        return first_stop(_Decoder(decode), ids[:-1], tuple(stop_strings))
    if not stopped(len(ids) - 1):
        return None
    lo, hi = 1, len(ids) - 1  # the first k with a stop string in ids[:k] lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if stopped(mid) else (mid + 1, hi)
    return lo


class _Decoder:
    """A decode function (already `stop_text`'s rule) as the tokenizer `first_stop` reads."""

    def __init__(self, decode: Callable[[Sequence[int]], str]) -> None:
        self._decode = decode

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self._decode(ids)


def sampling_params(call: LLMCall) -> SamplingParams:
    """The call's recorded sampling parameters (what the seeded draw is re-derived from)."""
    return SamplingParams(
        max_new_tokens=max(call.max_new_tokens, 1),
        temperature=max(call.temperature, 0.0),
        top_p=call.top_p if 0 < call.top_p <= 1 else 1.0,
        seed=call.seed % (1 << 64),
    )


def check_scores(call: LLMCall, rescored: ScoreResult, tol: Tolerance) -> list[Finding]:
    """Tokens, logprobs and fingerprints against the teacher-forced re-scoring (`compare_generation`)."""
    try:
        fps = claimed_fingerprints(call.fingerprints)
    except ValueError as exc:
        return [Finding(Check.LLM_SHAPE, str(exc), call=call.call)]
    claimed = GenerationResult(
        prompt_ids=call.prompt_ids,
        output_ids=call.output_ids,
        finish_reason="stop",
        logprobs=call.logprobs,
        fingerprints=fps,
    )
    greedy = is_greedy(call.temperature)  # the node's rule (a tiny temperature is greedy)
    verdict = compare_generation(claimed, rescored, tol, sampled=not greedy, temperature=call.temperature)
    out: list[Finding] = []
    per_kind: dict[str, int] = {}
    for m in verdict.mismatches:
        per_kind[m.kind] = per_kind.get(m.kind, 0) + 1
        if per_kind[m.kind] > MAX_POSITIONS_REPORTED:
            continue
        check = {"logprob": Check.LLM_MODEL, "fingerprint": Check.LLM_MODEL, "length": Check.LLM_SHAPE}.get(
            m.kind, Check.LLM_TOKEN if greedy else Check.LLM_SAMPLE
        )
        pos = m.index if m.index < len(call.output_ids) else None
        expected = (
            rescored.top_tokens[pos][0][0]
            if (pos is not None and greedy and check == Check.LLM_TOKEN and pos < len(rescored.top_tokens))
            else None
        )
        out.append(
            Finding(
                check,
                f"{m.kind}: {m.detail}",
                call=call.call,
                position=pos,
                expected=expected,
                claimed=call.output_ids[pos] if pos is not None else None,
            )
        )
    return out
