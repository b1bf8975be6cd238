"""Tool calling under verification: the built-in ``chat`` agent's tool-calling replies on the real
model, node kernel and validator (fixtures in tests/validator_fixtures.py).

The agent derives the prompt (the tools listed) and the grammar (one tool call of an offered tool,
its arguments valid against that tool's parameters) from its signed input, so the validator's
replay rebuilds both and its grammar walk re-applies the mask to every token of the call. An
honest tool call is not flagged; a trace whose call has a token outside the tool grammar is,
at that token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from supernet.node.agents.tool_calls import parse_tool_call, tools_response_format
from supernet.node.llm.grammar import GrammarConstraint, grammar_of
from supernet.validator.evidence import Check
from supernet.validator.grammar_check import check_grammar
from supernet.validator.scoring import ModelScorer
from supernet.validator.trace_view import parse_trace
from validator_fixtures import VNet

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

PARAMS = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 24},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "days"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "forecast", "description": "A weather forecast.", "parameters": PARAMS},
    },
    {"type": "function", "function": {"name": "time_in", "parameters": {"type": "object"}}},
]
INPUTS = [
    {
        "messages": [{"role": "user", "content": "Will it rain in Oslo this week?"}],
        "tools": TOOLS,
        "tool_choice": "required",
        "max_new_tokens": 48,
    },
    {
        "messages": [{"role": "user", "content": "Weather for Lima, 3 days."}],
        "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "forecast"}},
        "max_new_tokens": 48,
    },
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def honest(vnet: VNet) -> AsyncIterator[list[dict[str, Any]]]:
    """The traces of one honest batch of tool-calling chats."""
    traces: list[dict[str, Any]] = []

    def keep(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        traces.append(trace)
        return trace

    vnet.faults()
    await vnet.run_batch([], chat_inputs=INPUTS, edit_trace=keep)
    yield traces


async def test_tool_calls_validate_and_record_the_tools_grammar(honest: list[dict[str, Any]]) -> None:
    for doc, task_input in zip(honest, INPUTS, strict=True):
        [call] = parse_trace(doc).llm_calls
        assert call.grammar == grammar_of(tools_response_format(TOOLS, task_input["tool_choice"]))
        parsed = parse_tool_call(call.text or "", TOOLS)
        assert parsed is not None and call.finish_reason == "stop", call.text
        name, arguments = parsed
        assert name == "forecast" or task_input["tool_choice"] == "required"
        jsonschema.validate(arguments, PARAMS if name == "forecast" else {"type": "object"})


async def test_honest_tool_calls_are_not_flagged(vnet: VNet, validator_factory: Any) -> None:
    vnet.faults()
    batch_id, receipts = await vnet.run_batch([], chat_inputs=INPUTS)
    async with validator_factory(0, challenge=False) as v:
        await v.step()
        checks = v.db.checks(batch_id)
    assert len(checks) == len(receipts) and all(c.ok for c in checks), [c.kinds for c in checks]


def _outside(vnet: VNet, doc: dict[str, Any]) -> tuple[int, int]:
    """A position of the call's arguments and a token the tool grammar forbids there (the text
    ``oops`` where the grammar wants JSON)."""
    call = parse_trace(doc).llm_calls[0]
    scorer = ModelScorer.from_loaded(vnet.loaded)
    constraint = GrammarConstraint(scorer.tokenizer, call.grammar or "", scorer.vocab_size, scorer.eos_ids)
    prefix = '{"name":"forecast","arguments":'
    head = next(
        k
        for k in range(len(call.output_ids))
        if len(scorer.tokenizer.decode(list(call.output_ids[:k]))) >= len(prefix)
    )
    for t in call.output_ids[:head]:
        assert constraint.advance(t)
    mask = constraint.allowed()
    [bad] = scorer.tokenizer.encode(" oops")[:1]
    assert not bool(mask[bad])
    return head, bad


async def test_a_token_outside_the_tool_grammar_is_caught(
    vnet: VNet, validator_factory: Any, honest: list[dict[str, Any]]
) -> None:
    """A node that rewrites one token of a tool call's arguments (the named-function task) to one
    the tool grammar forbids: the grammar walk names that token, and the validator flags the task."""
    position, token = _outside(vnet, honest[1])
    scorer = ModelScorer.from_loaded(vnet.loaded)
    call = parse_trace(honest[1]).llm_calls[0]
    ids = (*call.output_ids[:position], token, *call.output_ids[position + 1 :])
    edited_call = dataclasses.replace(call, output_ids=ids)
    found = check_grammar(edited_call, scorer.tokenizer, scorer.vocab_size, scorer.eos_ids)
    assert [(f.check, f.position, f.claimed) for f in found] == [(Check.LLM_TOKEN, position, token)]

    def edit(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        [llm] = [e for e in trace["events"] if e["kind"] == "llm"]
        llm["output_ids"] = [*llm["output_ids"][:position], token, *llm["output_ids"][position + 1 :]]
        return trace

    vnet.faults()
    batch_id, _ = await vnet.run_batch([], chat_inputs=INPUTS[1:], edit_trace=edit)
    async with validator_factory(1, challenge=False) as v:
        await v.step()
        [check] = v.db.checks(batch_id)
    assert not check.ok and "llm.token" in check.kinds.split(","), check.kinds
    evidence = await vnet.store.get_dag(check.evidence_cid)
    assert any("grammar" in f["message"] for f in evidence["findings"]), evidence["findings"]
