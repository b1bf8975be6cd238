"""Agent SDK pieces that need no model: code hashes, the registry, the ReAct parser, trace values."""

from __future__ import annotations

import math

import pytest
from supernet.node.agents.base import bundle_hash
from supernet.node.agents.react_parse import coerce_args, match_tool, parse_step
from supernet.node.agents.registry import AgentRegistry, default_registry
from supernet.node.kernel.errors import AgentNotAllowedError
from supernet.node.kernel.trace import to_dag

TOOLS = ["calculator", "json_query", "text"]
CALC_SCHEMA = {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}


def test_bundle_hash_is_unambiguous() -> None:
    assert bundle_hash({"a": b"bc"}) != bundle_hash({"ab": b"c"})
    assert bundle_hash({"a": b"x", "b": b"y"}) == bundle_hash({"b": b"y", "a": b"x"})


def test_registry_allows_by_id_or_hash_and_checks_the_hash() -> None:
    every = default_registry()
    assert every.ids() == ["chat", "react", "retrieval"]
    chat = every.get("chat")
    assert chat.code_hash.startswith("0x") and len(chat.code_hash) == 66
    assert every.get("react").code_hash != chat.code_hash
    only_chat = default_registry(allowed=["chat"])
    with pytest.raises(AgentNotAllowedError):
        only_chat.get("react")
    by_hash = default_registry(allowed=[every.get("react").code_hash])
    assert by_hash.ids() == ["react"]
    with pytest.raises(AgentNotAllowedError, match="code hash"):
        every.get("chat", code_hash="0x" + "00" * 32)
    assert AgentRegistry(allowed=[]).ids() == []


@pytest.mark.parametrize(
    ("text", "action", "raw"),
    [
        (
            'Thought: need math\nAction: calculator\nAction Input: {"expression": "2+2"}',
            "calculator",
            '{"expression": "2+2"}',
        ),
        ("action: Calculator\naction input: 17 * 23\n", "calculator", "17 * 23"),
        (
            '**Action**: `calculator tool`\n**Action Input**: ```json\n{"expression": "1+1"}\n```',
            "calculator",
            '```json\n{"expression": "1+1"}\n```',
        ),
        (
            'Action: Text\nAction Input: {"text": "hi", "op": "upper"}\nObservation: HI',
            "text",
            '{"text": "hi", "op": "upper"}',
        ),
    ],
)
def test_parse_step_reads_actions_from_sloppy_text(text: str, action: str, raw: str) -> None:
    step = parse_step(text, TOOLS)
    assert (step.action, step.action_input, step.final_answer) == (action, raw, None)


def test_parse_step_final_answer_and_unknown_tools() -> None:
    assert parse_step("Thought: done\nFinal Answer: 42", TOOLS).final_answer == "42"
    assert parse_step("final answer: Paris.", TOOLS).final_answer == "Paris."
    step = parse_step("Action: browse_web\nAction Input: x", TOOLS)
    assert step.action is None and step.final_answer is None
    assert match_tool("JSON-Query", TOOLS) == "json_query"
    assert match_tool("", TOOLS) is None


def test_coerce_args() -> None:
    assert coerce_args('{"expression": "3*3"}', CALC_SCHEMA) == {"expression": "3*3"}
    assert coerce_args('```json\n{"expression": "1"}\n```', CALC_SCHEMA) == {"expression": "1"}
    assert coerce_args('"5 + 5"', CALC_SCHEMA) == {"expression": "5 + 5"}
    with pytest.raises(ValueError):
        coerce_args("", CALC_SCHEMA)
    with pytest.raises(ValueError):
        coerce_args("x", {"properties": {"a": {}, "b": {}}, "required": ["a", "b"]})


def test_to_dag_makes_trace_values_encodable() -> None:
    assert to_dag({"t": (1, 2), "f": math.inf, "n": [0.5, math.nan]}) == {
        "t": [1, 2],
        "f": None,
        "n": [0.5, None],
    }
    with pytest.raises(TypeError):
        to_dag(object())
