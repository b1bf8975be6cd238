"""One finish-reason rule for the engine and the validator (`supernet.node.llm.types.finish_reason_of`).

A recorded call's ``finish_reason`` is a function of the call: its output ids, its budget
(``max_new_tokens``), its stop tokens (``stop_token_ids``, else the model's EOS) and its stop strings
(looked for in `stop_text`). The engine decides it after every token (`LLMEngine._finish_if_done`:
a stop token before the budget), the kernel's stop-string watcher ends a call at the token that
completes a stop string (`Scheduler` ``"stopped"``, recorded ``"stop"``, even on the last budgeted
token), and `llm_check.check_shape` derives the same value and flags any other: a node that records
``"length"`` for a stop (or ``"stop"`` for a spent budget) chooses what the agent reads
(`ChatResult.finish_reason`) and what the OpenAI gateway returns.

Real parts: the engine on a tiny random Llama, the kernel's `Scheduler` and `_StopWatcher` (with a
one-character-per-id tokenizer), the validator's `check_shape`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from llm_fixtures import make_tiny_llama
from supernet.node.kernel.dispatch import _StopWatcher, stop_text
from supernet.node.kernel.policies import FifoPolicy
from supernet.node.kernel.scheduler import LLMJob, Scheduler
from supernet.node.llm import LLMEngine, SamplingParams
from supernet.node.llm import engine as engine_module
from supernet.node.llm.types import finish_reason_of
from supernet.validator.evidence import Check
from supernet.validator.llm_check import check_shape
from supernet.validator.trace_view import LLMCall

pytestmark = pytest.mark.timeout(120)

PROMPT = (5, 17, 33, 2, 9)
EOS = (0,)


class _Letters:
    """A tokenizer of one letter per id (``A`` + id mod 26); id 0 is a special token."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(chr(65 + i % 26) for i in ids if not (skip_special_tokens and i == 0))


def _decode(ids: Sequence[int]) -> str:
    return stop_text(_Letters(), ids)


def call(
    output: tuple[int, ...],
    finish: str,
    max_new: int,
    stop_ids: tuple[int, ...] | None = None,
    stops: tuple[str, ...] = (),
) -> LLMCall:
    lps = (-0.1,) * len(output)
    return LLMCall(0, "m", PROMPT, output, lps, None, 0.0, 1.0, 0, max_new, stop_ids, finish, None, stops)


def shape(c: LLMCall) -> list[tuple[str, Any, Any]]:
    return [(f.check.value, f.expected, f.claimed) for f in check_shape(c, EOS, c.stop_strings, _decode)]


@pytest.fixture(scope="module")
def tiny() -> LLMEngine:
    return LLMEngine.from_model(make_tiny_llama(3), max_batch=4, max_seq_len=128)


async def _greedy(
    engine: LLMEngine, max_new: int, stop_ids: tuple[int, ...] = ()
) -> tuple[tuple[int, ...], str]:
    params = SamplingParams(max_new_tokens=max_new, temperature=0.0, seed=1, stop_token_ids=stop_ids)
    async with engine:
        res = await engine.submit(PROMPT, params).result()
    return res.output_ids, res.finish_reason


# -- the rule itself ---------------------------------------------------------------------------------


def test_the_rule_puts_a_stop_before_the_budget() -> None:
    stops = frozenset({0})
    assert finish_reason_of((), 4, stops) is None  # no token yet
    assert finish_reason_of((7,), 4, stops) is None  # goes on
    assert finish_reason_of((7, 0), 4, stops) == "stop"
    assert finish_reason_of((7, 8, 9, 6), 4, stops) == "length"
    assert finish_reason_of((7, 8, 9, 0), 4, stops) == "stop"  # a stop token on the last budgeted token
    assert finish_reason_of((7, 8, 9, 6), 4, stops, stop_string=True) == "stop"  # a stop string there
    assert finish_reason_of((7, 8), 4, stops, stop_string=True) == "stop"
    assert finish_reason_of((7, 8), 4, ()) is None  # no stop tokens at all: only the budget ends it
    assert engine_module.finish_reason_of is finish_reason_of  # the engine decides with this rule


# -- every finish reason the honest engine records is accepted -----------------------------------------


async def test_the_engines_own_finish_reasons_verify(tiny: LLMEngine) -> None:
    """ "length" (budget spent, no stop token), "stop" on a stop token before the budget and "stop"
    on a stop token drawn as the last budgeted token: what the engine records, check_shape accepts;
    the other value is a finding naming both."""
    budget = 12
    full, reason = await _greedy(tiny, budget)
    assert (len(full), reason) == (budget, "length")
    assert check_shape(call(full, "length", budget, ()), EOS) == []
    assert [(f.expected, f.claimed) for f in check_shape(call(full, "stop", budget, ()), EOS)] == [
        ("length", "stop")
    ]
    firsts = [k for k, t in enumerate(full) if t not in full[:k]]  # tokens drawn for the first time
    for k in (firsts[len(firsts) // 2], firsts[-1]):  # greedy: the same prefix up to the stop token
        out, reason = await _greedy(tiny, budget, stop_ids=(full[k],))
        assert (out, reason) == (full[: k + 1], "stop")
        assert check_shape(call(out, "stop", budget, (full[k],)), EOS) == []
    last = firsts[-1]
    out, reason = await _greedy(tiny, last + 1, stop_ids=(full[last],))  # the stop token at the budget
    assert (len(out), reason) == (last + 1, "stop")  # the engine checks the stop token first
    assert check_shape(call(out, "stop", last + 1, (full[last],)), EOS) == []
    flipped = check_shape(call(out, "length", last + 1, (full[last],)), EOS)
    assert [(f.check, f.expected, f.claimed, f.position) for f in flipped] == [
        (Check.LLM_FINISH, "stop", "length", last)
    ]


async def test_a_stop_string_on_the_last_budgeted_token_is_recorded_stop(tiny: LLMEngine) -> None:
    """The kernel's watcher runs on every token the engine streams, the last budgeted one included:
    when it completes a stop string the scheduler reports "stopped" (the kernel records "stop",
    `Dispatcher._llm`), though the engine finished the sequence "length". check_shape derives "stop"
    there and flags "length"."""
    budget = 10
    full, _ = await _greedy(tiny, budget)
    text = _decode(full)
    stop = text  # the whole text: it first appears with the last token
    assert all(stop not in _decode(full[:k]) for k in range(budget))
    for slice_tokens in (None, 3):  # within a slice, and after a preemption that finds it finished
        watcher = _StopWatcher(_Letters(), (stop,), lambda _i, _t: None)
        scheduler = Scheduler(tiny, FifoPolicy(), time_slice_tokens=slice_tokens)
        params = SamplingParams(max_new_tokens=budget, temperature=0.0, seed=1, stop_token_ids=())
        async with tiny:
            outcome = await scheduler.generate(
                LLMJob(f"r{slice_tokens}", "t", "u", 1, PROMPT, params), watcher.on_token
            )
        assert (outcome.output_ids, outcome.finish_reason) == (full, "stopped")
    assert check_shape(call(full, "stop", budget, (), (stop,)), EOS, (stop,), _decode) == []
    flipped = check_shape(call(full, "length", budget, (), (stop,)), EOS, (stop,), _decode)
    assert [(f.check, f.expected, f.claimed) for f in flipped] == [(Check.LLM_FINISH, "stop", "length")]
    assert "stop string" in flipped[0].message


def test_honest_ends_are_accepted() -> None:
    stops = ("\n\n",)
    honest = [
        call((9, 8, 0), "stop", 8),  # the model's EOS
        call((9, 8, 0), "stop", 3),  # EOS on the last budgeted token
        call((9, 8, 7), "length", 3),  # the budget
        call((9, 7), "stop", 8, (7,)),  # a recorded stop token
        call((9, 8, 7), "length", 3, ()),  # no stop tokens at all
        call((1, 3, 2), "stop", 8, None, ("DC",)),  # "BDC": the stop string at the end
        call((1, 3, 2), "stop", 3, None, ("DC",)),  # ... on the last budgeted token
        call((1, 2, 4), "length", 3, None, stops),  # the stop string never appears
    ]
    for c in honest:
        assert shape(c) == [], c


# -- any swap is a finding ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("c", "expected"),
    [
        (call((9, 8, 0), "length", 3), "stop"),  # "length" on a stop token at the budget
        (call((9, 0), "length", 2), "stop"),
        (call((9, 7), "length", 2, (7,)), "stop"),  # on a recorded stop token
        (call((1, 3, 2), "length", 3, None, ("DC",)), "stop"),  # on a stop string at the budget
        (call((9, 8, 7), "stop", 3), "length"),  # "stop" on a spent budget without a stop
        (call((9, 8, 7), "stop", 3, None, ("ZZ",)), "length"),
    ],
)
def test_a_swapped_finish_reason_is_a_finding(c: LLMCall, expected: str) -> None:
    found = check_shape(c, EOS, c.stop_strings, _decode)
    assert [(f.check, f.expected, f.claimed) for f in found] == [
        (Check.LLM_FINISH, expected, c.finish_reason)
    ]
    assert f"the engine reports '{expected}'" in found[0].message
    assert found[0].position == len(c.output_ids) - 1


def test_a_truncated_output_is_a_finding_whichever_reason_it_claims() -> None:
    assert shape(call((9, 8), "stop", 3)) == [("llm.finish", None, 8)]
    assert shape(call((9, 8), "length", 3)) == [("llm.finish", 3, 2)]
    assert shape(call((), "stop", 3)) == [("llm.finish", None, "stop")]
    assert shape(call((), "length", 0)) == [("llm.finish", None, "length")]  # never: the kernel gives >= 1


@pytest.mark.parametrize("claimed", ["preempted", "cancelled", "stopped", "tool_calls", "", "STOP"])
def test_a_reason_no_trace_holds_is_a_finding(claimed: str) -> None:
    """``preempted`` / ``cancelled`` are the engine's control (the kernel resumes or fails such a
    call), ``stopped`` the scheduler's word the kernel records as ``stop``: none is in a trace."""
    for output, budget, expected in (((9, 0), 4, "stop"), ((9, 8), 2, "length"), ((9,), 4, None)):
        found = check_shape(call(output, claimed, budget), EOS)
        assert [(f.check, f.expected, f.claimed) for f in found] == [(Check.LLM_FINISH, expected, claimed)]
        assert "unknown finish reason" in found[0].message


def test_one_finding_for_an_output_that_runs_past_its_stop() -> None:
    """Past a stop string or past the budget the output is itself the fault (one finding says
    where); its finish reason is not judged again."""
    assert [f[0] for f in shape(call((1, 3, 2, 4), "length", 4, None, ("DC",)))] == ["llm.finish"]
    assert [f[0] for f in shape(call((9, 8, 7, 6), "length", 3))] == ["llm.shape"]
    assert [f[0] for f in shape(call((9, 8, 7, 0), "stop", 3))] == ["llm.shape"]
