"""The kernel's recording rules a user must not be able to turn against an honest node:

* a tool result is handed to the agent exactly as the trace records it (`as_recorded`), and one a
  trace cannot hold is a `ToolError` in the shared `ToolRegistry.call`, so a node's kernel and a
  validator's re-run (`RegistryRunner`) cannot disagree on it;
* the calculator refuses non-finite numbers (literals and constants included);
* an LLM call's recorded budget is capped at the protocol's context (`MAX_CONTEXT_TOKENS`), a
  number the replay knows, never at the node's own engine size.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import pytest
from supernet.node.agents.registry import AgentInfo
from supernet.node.kernel.access import AccessManager, Capabilities, NodePolicy
from supernet.node.kernel.builtin_tools import builtin_tools
from supernet.node.kernel.calculator import CalculatorError, evaluate
from supernet.node.kernel.dispatch import Dispatcher, TaskState
from supernet.node.kernel.errors import LLMError, TaskAbort, ToolError
from supernet.node.kernel.syscalls import GenerationOutcome, LLMChat, Message, TaskSpec
from supernet.node.kernel.tools import Tool, ToolRegistry, ToolSpec
from supernet.node.kernel.trace import TraceRecorder, as_recorded
from supernet.node.llm import SamplingParams
from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import ToolCall

pytestmark = pytest.mark.timeout(30)


def registry_with(result: Any) -> ToolRegistry:
    reg = ToolRegistry()
    reg.register(Tool(ToolSpec("give", "Returns a fixed value.", {"type": "object"}), lambda args: result))
    return reg


# -- one recording rule for tool results ------------------------------------------------------------


def test_as_recorded_is_the_trace_round_trip() -> None:
    assert as_recorded((1, 2.5, float("nan"), float("-inf"))) == [1, 2.5, None, None]
    out = as_recorded({"bb": 1, "a": {"d": 2, "c": 3}})
    assert list(out) == ["a", "bb"] and list(out["a"]) == ["c", "d"]  # dag-cbor's key order
    assert as_recorded(out) == out  # idempotent: what a replay's tape answers maps to itself
    for bad in (2**64, -(2**64) - 1, "\ud800", {"k": ["\udfff"]}):
        with pytest.raises(ValueError, match="not recordable"):
            as_recorded(bad)


@pytest.mark.parametrize("bad", [123456789012345678901234567890, "a\ud800b", {"x": [2**70]}])
async def test_an_unrecordable_result_is_the_tools_error_on_both_sides(bad: Any) -> None:
    with pytest.raises(ToolError, match="cannot hold"):
        await registry_with(bad).call("give", {})


async def test_a_result_is_returned_as_recorded() -> None:
    assert await registry_with({"b": (1, math.inf), "a": math.nan}).call("give", {}) == {
        "a": None,
        "b": [1, None],
    }


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ({"json": '{"a": 123456789012345678901234567890}', "path": "a"}, True),
        ({"json": '{"a": "\\ud800"}', "path": "a"}, True),
        ({"json": '{"a": NaN}', "path": "a"}, False),
    ],
)
async def test_validator_rerun_agrees_with_the_nodes_record(
    store_client: Any, args: Any, error: bool
) -> None:
    """What the node's registry records is what the validator's `RegistryRunner` re-run finds."""
    reg = ToolRegistry()
    for tool in builtin_tools(store_client, None):
        reg.register(tool)
    try:
        result, recorded_error = await reg.call("json_query", args), None
    except ToolError as exc:
        result, recorded_error = None, f"ToolError: {exc}"
    assert (recorded_error is not None) is error
    call = ToolCall(
        call=0, name="json_query", args=args, deterministic=True, result=result, error=recorded_error
    )
    findings, rerun, unverifiable = await check_tools((call,), RegistryRunner(store_client))
    assert findings == [] and rerun == 1 and unverifiable is None


@pytest.mark.parametrize("expr", ["1e400", "-1e400", "1e308 * 10", "2 * 1e400", "exp(1000)"])
def test_calculator_refuses_non_finite_numbers(expr: str) -> None:
    with pytest.raises(CalculatorError):
        evaluate(expr)


def test_calculator_keeps_finite_results() -> None:
    assert evaluate("1e300") == 1e300 and evaluate("pi") == math.pi and evaluate("10**100") == 1e100


# -- the context cap of an LLM call -----------------------------------------------------------------


class _Tokenizer:
    def __init__(self, n: int) -> None:
        self.n = n

    def apply_chat_template(self, messages: Any, add_generation_prompt: bool = True) -> list[int]:
        return [7] * self.n

    def decode(self, ids: Any, skip_special_tokens: bool = True) -> str:
        return "x" * len(ids)


class _Engine:
    model_id = "0x" + "ab" * 32

    def __init__(self, n: int, max_seq_len: int | None) -> None:
        self.tokenizer = _Tokenizer(n)
        if max_seq_len is not None:
            self.max_seq_len = max_seq_len


class _Scheduler:
    """Gives each call its whole budget, like an engine that never meets a stop token."""

    def __init__(self) -> None:
        self.budgets: list[int] = []

    async def generate(self, job: Any, on_token: Any) -> GenerationOutcome:
        n = job.params.max_new_tokens
        self.budgets.append(n)
        return GenerationOutcome((5,) * n, (-0.5,) * n, "length", None, 0)


def _state(max_new_tokens: int = 4096) -> TaskState:
    caps = Capabilities(frozenset(), "ns", False, False, 4, 10**6, max_new_tokens, 4, 1024)
    spec = TaskSpec(task_id="0x" + "01" * 32, agent_id="a", input="hi", user="0x" + "02" * 20, fee=0)
    rec = TraceRecorder(spec.task_id, spec.user, 0, "a", "0x" + "03" * 32, _Engine.model_id, "hi")
    return TaskState(spec, AgentInfo("a", "0x" + "03" * 32, "", object), caps, rec, (), 1)


def _dispatcher(prompt: int, max_seq_len: int | None, sched: _Scheduler) -> Dispatcher:
    return Dispatcher(
        engine=_Engine(prompt, max_seq_len),
        scheduler=sched,
        tools=ToolRegistry(),
        memory=None,
        storage=None,
        access=AccessManager(NodePolicy()),
        params_type=SamplingParams,
    )


def _recorded(st: TaskState) -> Mapping[str, Any]:
    return st.trace.events[-1]


@pytest.mark.parametrize(
    ("prompt", "asked", "budget"),
    [(10, 64, 64), (MAX_CONTEXT_TOKENS - 24, 64, 24), (MAX_CONTEXT_TOKENS - 1, 64, 1)],
)
async def test_the_budget_is_capped_at_the_protocols_context(prompt: int, asked: int, budget: int) -> None:
    """Whatever the engine holds (an engine of 8192 positions here), the recorded budget is
    ``min(asked, MAX_CONTEXT_TOKENS - prompt)``: the number the replay re-derives."""
    sched, st = _Scheduler(), _state()
    d = _dispatcher(prompt, 8192, sched)
    out = await d.handle(st, LLMChat(messages=(Message("user", "hi"),), max_new_tokens=asked))
    assert sched.budgets == [budget] and len(out.output_ids) == budget
    event = _recorded(st)
    assert event["params"]["max_new_tokens"] == budget and event["finish_reason"] == "length"


async def test_a_prompt_that_fills_the_context_is_refused_and_recorded() -> None:
    sched, st = _Scheduler(), _state()
    d = _dispatcher(MAX_CONTEXT_TOKENS, 8192, sched)
    with pytest.raises(LLMError, match="context"):
        await d.handle(st, LLMChat(messages=(Message("user", "hi"),), max_new_tokens=8))
    assert sched.budgets == [] and _recorded(st)["kind"] == "error"


async def test_an_engine_smaller_than_the_context_refuses_instead_of_cutting_short() -> None:
    """Never cut short, and never an error the agent may turn into a fallback answer: the task
    aborts (`TaskAbort`, no receipt), since no replay could reproduce an engine-sized refusal."""
    sched, st = _Scheduler(), _state()
    d = _dispatcher(1000, 1024, sched)
    with pytest.raises(TaskAbort, match="1024 positions"):
        await d.handle(st, LLMChat(messages=(Message("user", "hi"),), max_new_tokens=64))
    assert sched.budgets == [] and len(st.trace.events) == 0
    # within the engine's positions it runs as usual
    out = await d.handle(st, LLMChat(messages=(Message("user", "hi"),), max_new_tokens=24))
    assert len(out.output_ids) == 24
