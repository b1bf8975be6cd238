"""What a node controls cannot stall or bait a validator (issue: validators no node can stall).

Each test is a trace a node could commit: a tool call whose honest result is an integer dag-cbor
cannot hold, an expression that would run for hours, a store read of a block the node withholds.
The validator's answer is a verdict (or *unverifiable*), published as evidence, in bounded time.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from supernet.node.kernel.calculator import CalculatorError, evaluate
from supernet.node.kernel.trace import MAX_TRACE_EVENTS, check_encodable
from supernet.sdk.formats.trace import example_dag
from supernet.sdk.store.cids import compute_cid
from supernet.validator.evidence import Check, Finding, Verdict, publish
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import MalformedTrace, ToolCall, parse_trace


def test_calculator_results_fit_a_trace() -> None:
    big = evaluate("2**100")
    assert isinstance(big, float) and big == 2.0**100
    check_encodable(big)
    assert evaluate("2**62") == 2**62 and isinstance(evaluate("2**62"), int)
    check_encodable(evaluate("-(2**63) + 1"))


@pytest.mark.parametrize("expr", ["round(5, -1000000000)", "round(5, 10**9)", "round(2.5, 0.5)"])
def test_calculator_refuses_round_digits_that_only_cost_time(expr: str) -> None:
    start = time.perf_counter()
    with pytest.raises(CalculatorError, match="digits"):
        evaluate(expr)
    assert time.perf_counter() - start < 1.0
    assert evaluate("round(1234.5678, 2)") == 1234.57 and evaluate("round(1234, -2)") == 1200


async def test_evidence_of_unencodable_values_is_published(store_client: Any) -> None:
    """A finding's expected/claimed come from node data: huge ints, lone surrogates, nested maps."""
    finding = Finding(Check.TOOL, "differs", call=0, expected=2**100, claimed={"x": "\ud800", 1: [2**70]})
    verdict = Verdict(batch_id=1, index=0, leaf=b"\x00" * 32, findings=(finding,))
    cid = await publish(store_client, verdict)
    doc = await store_client.get_dag(cid)
    assert doc["findings"][0]["expected"] == str(2**100)
    assert doc["findings"][0]["claimed"]["1"] == [str(2**70)]


async def test_rerun_of_a_calculator_call_past_64_bits_is_judged(store_client: Any) -> None:
    runner = RegistryRunner(store_client)
    claimed = ToolCall(0, "calculator", {"expression": "2**100"}, 1, None, True)
    findings, rerun, why = await check_tools((claimed,), runner)
    assert rerun == 1 and why is None and [f.check for f in findings] == [Check.TOOL]
    await publish(store_client, Verdict(1, 0, b"\x00" * 32, findings=tuple(findings)))  # never raises


async def test_a_withheld_block_makes_store_read_unverifiable_never_fraud(store_client: Any) -> None:
    """The node read a block, withholds it from validators: re-running cannot accuse it (else it
    could publish the block afterwards and win every challenger's bond)."""
    data = b"published later"
    cid = compute_cid(data, "raw")
    runner = RegistryRunner(store_client)
    recorded = ToolCall(
        0, "store_read", {"cid": cid}, {"cid": cid, "size": len(data), "text": "published later"}, None, True
    )
    findings, rerun, why = await check_tools((recorded,), runner)
    assert findings == [] and why is not None and "ToolUnavailableError" in why
    assert await store_client.put_block(data) == cid
    findings, _, why = await check_tools((recorded,), runner)
    assert findings == [] and why is None  # available now: re-run and equal
    lie = ToolCall(0, "store_read", {"cid": cid}, {"cid": cid, "size": 3, "text": "abc"}, None, True)
    findings, _, _ = await check_tools((lie,), runner)
    assert [f.check for f in findings] == [Check.TOOL]
    node_saw_nothing = ToolCall(
        0,
        "store_read",
        {"cid": cid},
        None,
        f"ToolUnavailableError: {cid} is not available to this task",
        True,
    )
    findings, rerun, why = await check_tools((node_saw_nothing,), runner)
    assert findings == [] and rerun == 0 and why is None  # a moment's outcome: not re-checked


def test_a_trace_longer_than_any_kernel_records_is_malformed_before_any_work() -> None:
    doc = example_dag()
    assert len(parse_trace(doc).llm_calls) == 1
    doc["events"] = doc["events"] * (MAX_TRACE_EVENTS + 1)
    with pytest.raises(MalformedTrace, match="more than"):
        parse_trace(doc)
