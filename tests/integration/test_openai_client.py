"""The official ``openai`` client against a real node: ``supernet node run`` on a real Anvil with the
real default model, reached through `supernet.sdk.openai_client` (each call signed and paid by
voucher, nothing else changed in the OpenAI code).

Greedy decoding is deterministic, so a streamed answer, an answer cut at a stop string and one with
log-probabilities are each compared with the plain answer to the same request. Structured output
(``response_format`` ``json_schema`` / ``json_object``) parses and validates against its schema, and
so do tool calls' arguments against their tool's parameters.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
import rfc8785
from node_fixtures import NodeProcess, node_on_anvil
from pydantic import BaseModel, Field
from supernet.node.llm.grammar import grammar_of
from supernet.sdk import async_openai_client, openai_client
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account
from supernet.sdk.client import ReadGrantAuth
from supernet.sdk.client.types import ClientError
from supernet.sdk.openai_compat import chat_task_input
from supernet.sdk.store import StoreClient

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

NODE_KEY_INDEX, USER_INDEX = 17, 18  # dev accounts no other suite uses
PROMPT = [{"role": "user", "content": "Name the days of the week."}]


@dataclass
class Net:
    anvil: Anvil
    contracts: Contracts
    deployment: Path
    node: NodeProcess
    ai: openai.OpenAI
    model: str
    key: str
    state: Path


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("openai")
    key = "0x" + bytes(dev_account(USER_INDEX).key).hex()
    with node_on_anvil(tmp, NODE_KEY_INDEX) as (anvil, contracts, deployment, node):
        state = tmp / "user"
        ai = openai_client(
            node.url, key, deployment, rpc_url=anvil.url, deposit=10**17, state_dir=state, max_retries=0
        )
        model = ai.models.list().data[0].id
        yield Net(anvil, contracts, deployment, node, ai, model, key, state)
        ai.close()


def ask(net: Net, **kw: Any) -> Any:
    return net.ai.chat.completions.create(model=net.model, messages=kw.pop("messages", PROMPT), **kw)


@pytest.fixture(scope="module")
def plain(net: Net) -> Any:
    """The plain answer to `PROMPT` (greedy, 16 tokens at most)."""
    return ask(net, max_completion_tokens=16)


def test_models_in_openai_shape(net: Net) -> None:
    models = net.ai.models.list().data
    assert [m.object for m in models] == ["model"] and models[0].owned_by == dev_account(
        NODE_KEY_INDEX
    ).address
    assert (models[0].model_extra or {})["modelId"].startswith("0x")


def test_plain_answer_with_usage(plain: Any) -> None:
    assert plain.object == "chat.completion" and plain.id.startswith("0x")
    choice = plain.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length") and choice.logprobs is None
    u = plain.usage
    assert u.prompt_tokens > 5 and 0 < u.completion_tokens <= 16
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens


def test_finish_reason_length_at_max_completion_tokens(net: Net) -> None:
    reply = ask(
        net,
        messages=[{"role": "user", "content": "Write a long story about a cat."}],
        max_completion_tokens=3,
    )
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage.completion_tokens == 3


def test_stop_cuts_the_answer_where_the_stop_string_starts(net: Net, plain: Any) -> None:
    full = plain.choices[0].message.content
    assert len(full) >= 8, full
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    reply = ask(net, max_completion_tokens=16, stop=[stop])
    assert reply.choices[0].message.content == full[: full.find(stop)]
    assert reply.choices[0].finish_reason == "stop"


def test_logprobs_and_top_logprobs_of_each_token(net: Net, plain: Any) -> None:
    reply = ask(net, max_completion_tokens=16, logprobs=True, top_logprobs=3)
    content = reply.choices[0].message.content
    assert content == plain.choices[0].message.content
    tokens = reply.choices[0].logprobs.content
    assert "".join(t.token for t in tokens) == content
    assert 0 < len(tokens) <= reply.usage.completion_tokens
    for t in tokens:
        alternatives = [a.logprob for a in t.top_logprobs]
        assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        assert t.logprob <= 0
        # greedy took the likeliest token: the trace's log-prob is the scoring pass's best one
        assert abs(t.logprob - alternatives[0]) < 0.02, (t.token, t.logprob, t.top_logprobs)


async def test_streamed_answer_is_the_plain_one(net: Net, plain: Any) -> None:
    ai = async_openai_client(net.node.url, net.key, net.deployment, state_dir=net.state, max_retries=0)
    try:
        stream = await ai.chat.completions.create(
            model=net.model,
            messages=PROMPT,
            max_completion_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [c async for c in stream]
    finally:
        await ai.close()
    assert len({(c.id, c.created) for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage == plain.usage


def test_unsupported_parameter_is_a_400_naming_it(net: Net) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(net, max_completion_tokens=4, logprobs=True, top_logprobs=6)
    assert caught.value.param == "top_logprobs" and caught.value.code == "unsupported_parameter"


@pytest.mark.parametrize(
    ("kw", "param"), [({"n": 2}, "n"), ({"frequency_penalty": 1.0}, "frequency_penalty")]
)
def test_a_parameter_the_signature_would_not_bind_is_refused_before_signing(
    net: Net, kw: dict[str, Any], param: str
) -> None:
    """A field outside the signed input would be the node's to honour or drop unseen: the drop-in
    refuses it before it signs (tests/integration/test_review_openai_gateway2.py)."""
    with pytest.raises(ClientError, match=param):
        ask(net, max_completion_tokens=4, **kw)


def test_calls_in_a_row_are_billed_once_each_and_ran_as_signed(net: Net) -> None:
    """Every call above was admitted with the next voucher; the node billed exactly one fee per
    completion. The receipt and the trace of a completion hold the input its body hashes to."""
    body = {
        "messages": [{"role": "user", "name": "ann", "content": "Say yes."}],
        "max_completion_tokens": 4,
        "temperature": 0,
    }
    reply = ask(net, **body)
    node = dev_account(NODE_KEY_INDEX).address
    user = dev_account(USER_INDEX)
    with httpx.Client(base_url=net.node.url, timeout=30) as http:
        auth = ReadGrantAuth(user, node, net.contracts.domain)
        account = http.get(f"/v1/accounts/{user.address}", auth=auth).json()
        fee = int(http.get("/v1/node").json()["taskFee"])
        for _ in range(60):
            r = http.get(f"/v1/tasks/{reply.id}/receipt", auth=auth)
            if r.status_code == 200:
                break
            time.sleep(0.5)
    assert r.status_code == 200, r.text
    billed = int(account["billed"])
    assert billed % fee == 0 and billed // fee >= 6  # the calls of this module so far, none twice
    expected = chat_task_input({"model": net.model, **body})
    digest = "0x" + hashlib.sha256(rfc8785.dumps(expected)).hexdigest()
    assert r.json()["receipt"]["inputHash"] == digest
    trace_cid = (reply.model_extra or {})["supernet"]["traceCid"]
    assert r.json()["traceCid"] == trace_cid
    store_url = httpx.get(f"{net.node.url}/v1/node").json()["storeUrl"]
    trace = _run(_trace(store_url, trace_cid))
    assert trace["input"] == expected


async def _trace(store_url: str, cid: str) -> Any:
    async with StoreClient(store_url, timeout=30) as store:
        return await store.get_dag(cid)


def _run(coro: Any) -> Any:
    import asyncio

    return asyncio.run(coro)


# -- structured output: response_format honoured by constrained decoding -------------------------

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 30},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "likes_cats": {"type": "boolean"},
    },
    "required": ["name", "age", "likes_cats"],
    "additionalProperties": False,
}
PERSON_FORMAT = {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


@pytest.mark.parametrize(
    "prompt",
    ["Describe a person as JSON.", "Who wrote Hamlet?", "Tell me about your neighbour.", "Hi!"],
)
def test_json_schema_answers_parse_and_validate(net: Net, prompt: str) -> None:
    reply = ask(
        net,
        messages=[{"role": "user", "content": prompt}],
        max_completion_tokens=64,
        response_format=PERSON_FORMAT,
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    jsonschema.validate(json.loads(choice.message.content or ""), PERSON)


@pytest.mark.parametrize(
    "prompt",
    [
        "List three colours as a JSON object.",
        "Reply in JSON: what is the capital of France?",
        "Describe a cat as a JSON object with a name and an age.",
    ],
)
def test_json_object_answer_is_a_json_object(net: Net, prompt: str) -> None:
    """Any JSON object (greedy: a 135M model sampling under no schema may write digits forever)."""
    reply = ask(
        net,
        messages=[{"role": "user", "content": prompt}],
        max_completion_tokens=64,
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop", reply.choices[0].message.content
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)


def test_parse_with_a_pydantic_model(net: Net) -> None:
    """The openai package's own structured-output helper (a strict json_schema from the model)."""

    class City(BaseModel):
        name: str = Field(max_length=30)
        country: str = Field(max_length=30)

    parsed = net.ai.chat.completions.parse(
        model=net.model,
        messages=[{"role": "user", "content": "Name a big city."}],
        max_completion_tokens=64,
        response_format=City,
    )
    assert isinstance(parsed.choices[0].message.parsed, City)


def test_the_constraint_is_signed_and_recorded(net: Net) -> None:
    """The response_format is part of the signed input, and the trace records the grammar the
    mask came from (what validators re-apply)."""
    body = {"messages": [{"role": "user", "content": "A person?"}], "max_completion_tokens": 48}
    reply = ask(net, **body, response_format=PERSON_FORMAT)
    trace_cid = (reply.model_extra or {})["supernet"]["traceCid"]
    store_url = httpx.get(f"{net.node.url}/v1/node").json()["storeUrl"]
    trace = _run(_trace(store_url, trace_cid))
    assert trace["input"]["response_format"] == PERSON_FORMAT
    [llm] = [e for e in trace["events"] if e["kind"] == "llm"]
    assert llm["params"]["grammar"] == grammar_of(PERSON_FORMAT)


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
        {"type": "json_schema"},
    ],
)
def test_a_schema_without_a_grammar_is_a_400(net: Net, response_format: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(net, max_completion_tokens=4, response_format=response_format)
    assert caught.value.param == "response_format"


# -- tool calling: tools / tool_choice honoured by a grammar built from the tools ----------------

WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30}},
    "required": ["city"],
    "additionalProperties": False,
}
ADD_PARAMS = {
    "type": "object",
    "properties": {
        "a": {"type": "integer", "minimum": -1000, "maximum": 1000},
        "b": {"type": "integer", "minimum": -1000, "maximum": 1000},
    },
    "required": ["a", "b"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": WEATHER_PARAMS,
        },
    },
    {
        "type": "function",
        "function": {"name": "add", "description": "Add two numbers.", "parameters": ADD_PARAMS},
    },
]
PARAMS = {"get_weather": WEATHER_PARAMS, "add": ADD_PARAMS}
ADD_CHOICE = {"type": "function", "function": {"name": "add"}}


def _valid_call(reply: Any, names: tuple[str, ...]) -> Any:
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", choice.message
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_") and call.function.name in names
    jsonschema.validate(json.loads(call.function.arguments), PARAMS[call.function.name])
    return call


@pytest.mark.parametrize(
    ("prompt", "tool_choice", "names"),
    [
        ("What is the weather in Paris?", "required", ("get_weather", "add")),
        ("Hi!", "required", ("get_weather", "add")),
        ("What is 2 plus 3?", ADD_CHOICE, ("add",)),
        ("Tell me a joke.", ADD_CHOICE, ("add",)),
    ],
)
def test_required_and_named_tool_calls_validate(net: Net, prompt: str, tool_choice: Any, names: Any) -> None:
    reply = ask(
        net,
        messages=[{"role": "user", "content": prompt}],
        max_completion_tokens=64,
        tools=TOOLS,
        tool_choice=tool_choice,
    )
    _valid_call(reply, names)


def test_tool_calling_is_signed_and_recorded(net: Net) -> None:
    """tools and tool_choice are part of the signed input; the trace records the prompt with the
    tools listed and the grammar the agent derives from them (what a validator's replay rebuilds)."""
    from supernet.node.agents.tool_calls import tools_response_format

    body = {"messages": [{"role": "user", "content": "Weather in Rome?"}], "max_completion_tokens": 48}
    reply = ask(net, **body, tools=TOOLS, tool_choice="required")
    _valid_call(reply, ("get_weather", "add"))
    store_url = httpx.get(f"{net.node.url}/v1/node").json()["storeUrl"]
    trace = _run(_trace(store_url, (reply.model_extra or {})["supernet"]["traceCid"]))
    assert trace["input"]["tools"] == TOOLS and trace["input"]["tool_choice"] == "required"
    [llm] = [e for e in trace["events"] if e["kind"] == "llm"]
    assert llm["params"]["grammar"] == grammar_of(tools_response_format(TOOLS, "required"))
    assert '"name":"get_weather"' in llm["messages"][0]["content"]


def test_a_conversation_with_a_tool_result_is_answered(net: Net) -> None:
    first = ask(
        net,
        messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        max_completion_tokens=48,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    call = _valid_call(first, ("get_weather",))
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 24 degrees."},
    ]
    reply = ask(net, messages=messages, max_completion_tokens=32, tools=TOOLS)  # tool_choice: auto
    choice = reply.choices[0]
    if choice.finish_reason == "tool_calls":  # "auto" lets the model call again
        _valid_call(reply, ("get_weather", "add"))
    else:
        assert choice.message.content and not choice.message.content.startswith("{")
        assert choice.message.tool_calls is None


def test_tool_choice_none_answers_in_text(net: Net) -> None:
    reply = ask(
        net,
        messages=[{"role": "user", "content": "What is 2 plus 3?"}],
        max_completion_tokens=16,
        tools=TOOLS,
        tool_choice="none",
    )
    choice = reply.choices[0]
    assert choice.finish_reason in ("stop", "length") and choice.message.tool_calls is None
    assert isinstance(choice.message.content, str) and choice.message.content


async def test_a_streamed_tool_call_is_the_plain_one(net: Net) -> None:
    """A streamed tool-calling reply arrives whole in one chunk (tool calls are not split)."""
    kw: dict[str, Any] = {
        "model": net.model,
        "messages": [{"role": "user", "content": "Add 40 and 2."}],
        "max_completion_tokens": 48,
        "tools": TOOLS,
        "tool_choice": "required",
    }
    plain = net.ai.chat.completions.create(**kw)
    ai = async_openai_client(net.node.url, net.key, net.deployment, state_dir=net.state, max_retries=0)
    try:
        chunks = [c async for c in await ai.chat.completions.create(**kw, stream=True)]
    finally:
        await ai.close()
    deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
    [call] = plain.choices[0].message.tool_calls
    assert [(d.function.name, d.function.arguments) for d in deltas] == [
        (call.function.name, call.function.arguments)
    ]
    assert deltas[0].id.startswith("call_") and deltas[0].type == "function"  # its own task: its own id
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]


def test_an_unknown_tool_in_tool_choice_is_a_400_naming_it(net: Net) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask(
            net,
            max_completion_tokens=4,
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "launch_rocket"}},
        )
    assert caught.value.param == "tool_choice" and "launch_rocket" in caught.value.message
