"""Tool calling's pieces: the tool choice, the prompt the model reads, the grammar a tool call must
walk, the signed input that covers the tools and the API's checks of them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.tool_calls import (
    TOOLS_PREAMBLE,
    ToolSpecError,
    parse_tool_call,
    render_messages,
    tool_mode,
    tools_response_format,
)
from supernet.node.llm.grammar import GrammarConstraint, allowed_masks, check_grammar, grammar_of
from supernet.node.service.chat_params import chat_plan
from supernet.node.service.errors import BadRequestError
from supernet.node.service.schemas import ChatCompletionCreate
from supernet.sdk.openai_compat import chat_task_input

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
}
TOOLS = [WEATHER, ADD]
NAMED = {"type": "function", "function": {"name": "add"}}


def test_tool_mode_of_each_choice() -> None:
    assert tool_mode(None, None) == ("none", ())
    assert tool_mode(TOOLS, None) == ("auto", ("get_weather", "add"))  # OpenAI's default with tools
    assert tool_mode(TOOLS, "none")[0] == "none" and tool_mode(TOOLS, "required")[0] == "required"
    assert tool_mode(TOOLS, NAMED) == ("required", ("add",))


@pytest.mark.parametrize(
    ("tools", "choice", "param"),
    [
        (TOOLS, {"type": "function", "function": {"name": "nope"}}, "tool_choice"),
        (TOOLS, "sometimes", "tool_choice"),
        (None, "required", "tool_choice"),
        ([{"type": "retrieval"}], None, "tools[0]"),
        ([{"type": "function", "function": {"parameters": {}}}], None, "tools[0].function.name"),
        ([WEATHER, WEATHER], None, "tools"),
    ],
)
def test_bad_tools_are_named(tools: Any, choice: Any, param: str) -> None:
    with pytest.raises(ToolSpecError) as bad:
        tool_mode(tools, choice)
    assert bad.value.param == param


def test_the_prompt_lists_the_tools_and_renders_calls_and_results() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny, 21C"},
    ]
    out = render_messages(messages, TOOLS, "auto")
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.\n\n" + TOOLS_PREAMBLE)
    assert '"name":"get_weather"' in out[0]["content"] and '"name":"add"' in out[0]["content"]
    assert out[2]["content"] == '{"name":"get_weather","arguments":{"city":"Paris"}}'
    assert out[3]["content"] == '<tool_response id="c1">\nsunny, 21C\n</tool_response>'
    # "none": the tools are not offered, the conversation is still rendered
    assert render_messages(messages, TOOLS, "none")[0] == {"role": "system", "content": "Be brief."}
    # no system message of the caller's: the listing is one
    assert render_messages(messages[1:2], TOOLS, "required")[0]["content"].startswith(TOOLS_PREAMBLE)


def test_the_grammar_of_each_choice_is_a_pure_function_of_the_tools() -> None:
    assert tools_response_format(TOOLS, "none") is None
    required = tools_response_format(TOOLS, "required") or {}
    assert required["type"] == "tool_call" and required["text"] is False
    assert [t["name"] for t in required["tools"]] == ["get_weather", "add"]
    named = tools_response_format(TOOLS, NAMED) or {}
    assert named["tools"] == [{"name": "add", "parameters": ADD["function"]["parameters"]}]
    lark = json.loads(grammar_of(tools_response_format(TOOLS, "auto")) or "")["grammars"][0]["lark_grammar"]
    assert lark.startswith("start: call_0 | call_1 | TEXT\n")
    for choice in ("required", NAMED, "auto"):
        grammar = grammar_of(tools_response_format(TOOLS, choice)) or ""
        check_grammar(grammar)
        # key order in the request does not matter (the stored input's order may differ)
        reordered = [
            {"function": dict(reversed(list(t["function"].items()))), "type": "function"} for t in TOOLS
        ]
        assert grammar == grammar_of(tools_response_format(reordered, choice))


def test_parse_tool_call_takes_only_a_call_of_an_offered_tool() -> None:
    assert parse_tool_call('{"name":"add","arguments":{"a":1,"b":2}}', TOOLS) == ("add", {"a": 1, "b": 2})
    for text in ("Sunny.", '{"name":"mul","arguments":{}}', '{"name":"add"}', '{"name":"add","argu'):
        assert parse_tool_call(text, TOOLS) is None


def test_the_signed_input_covers_tools_and_tool_choice() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": TOOLS,
        "tool_choice": NAMED,
    }
    signed = chat_task_input(body)
    assert signed["tools"] == TOOLS and signed["tool_choice"] == NAMED


def _body(**kw: Any) -> ChatCompletionCreate:
    return ChatCompletionCreate.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **kw}
    )


def test_api_accepts_tools_and_names_what_is_wrong() -> None:
    assert chat_plan(_body(tools=TOOLS)).tools == TOOLS
    assert chat_plan(_body(tools=TOOLS, tool_choice="none")).tools is None
    assert chat_plan(_body(tools=TOOLS, tool_choice=NAMED, parallel_tool_calls=False)).tools == TOOLS
    cases: list[tuple[dict[str, Any], str, str]] = [
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "nope",
        ),
        ({"tools": TOOLS, "response_format": {"type": "json_object"}}, "response_format", "tool call"),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id", "missing"),
        (
            {"messages": [{"role": "user", "content": "x", "tool_calls": []}]},
            "messages[0].tool_calls",
            "assistant",
        ),
    ]
    for kw, param, words in cases:
        with pytest.raises(BadRequestError) as bad:
            chat_plan(_body(**kw))
        assert bad.value.detail.get("param") == param and words in str(bad.value)


@pytest.fixture(scope="module")
def tokenizer(smollm2_dir: Path) -> Any:
    from supernet.node.llm.tokenizer import Tokenizer

    return Tokenizer(smollm2_dir)


EOS = (2,)


def _walk(tokenizer: Any, choice: Any, text: str) -> int | None:
    grammar = grammar_of(tools_response_format(TOOLS, choice)) or ""
    ids = [*tokenizer.encode(text), EOS[0]]
    return allowed_masks(GrammarConstraint(tokenizer, grammar, 49152, EOS), ids)[1]


@pytest.mark.model
def test_the_mask_walk_of_each_choice(tokenizer: Any) -> None:
    call = '{"name":"add","arguments":{"a":1,"b":2}}'
    assert _walk(tokenizer, "required", call) is None and _walk(tokenizer, NAMED, call) is None
    assert _walk(tokenizer, "auto", call) is None and _walk(tokenizer, "auto", "It is sunny.") is None
    assert _walk(tokenizer, "required", "It is sunny.") == 0  # required: no text
    assert _walk(tokenizer, NAMED, '{"name":"get_weather","arguments":{"city":"P"}}') is not None
    assert _walk(tokenizer, "auto", '{"name":"mul","arguments":{}}') is not None  # auto: a call is a call
    assert _walk(tokenizer, "auto", '{"name":"add","arguments":{"a":"x","b":2}}') is not None
