"""``POST /v1/chat/completions`` on the node service (FAKE executor and chain, real service code):
the signed input is computed from the body as received, every other body is refused without
changing anything, and unsupported parameters are a 400 naming them."""

from __future__ import annotations

import base64
import hashlib
import json
import sqlite3
from typing import Any

import pytest
import rfc8785
from node_fixtures import FakeNode
from supernet.sdk.client.streaming import StopCutter, cut_at_stop
from supernet.sdk.openai_compat import chat_task_input

URL = "/v1/chat/completions"


def header(signed: dict[str, Any]) -> dict[str, str]:
    auth = {k: signed[k] for k in ("request", "signature", "voucher")}
    return {"X-Supernet-Auth": base64.urlsafe_b64encode(json.dumps(auth).encode()).decode().rstrip("=")}


def stored_inputs(node: FakeNode) -> list[Any]:
    with sqlite3.connect(node.service.settings.data_dir / "node.sqlite3") as c:
        return [json.loads(i) for (i,) in c.execute("SELECT input FROM tasks ORDER BY created_at")]


def tasks_count(node: FakeNode) -> int:
    return len(stored_inputs(node))


async def test_an_honest_client_hashing_its_own_json_is_admitted(fake_node: FakeNode) -> None:
    """The client writes ``temperature: 1`` (an integer), a message ``name``, the ``developer``
    role and a content array, and hashes the input by the documented rule with nothing but an
    RFC 8785 library: the node admits it and stores exactly that input."""
    raw = (
        '{"model": "fake-model", "temperature": 1, "max_completion_tokens": 8, "stop": "!",'
        ' "messages": [{"role": "developer", "content": "Be brief."},'
        ' {"role": "user", "name": "ann", "content": [{"type": "text", "text": "hi"},'
        ' {"type": "text", "text": "there"}]}]}'
    )
    expected = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "name": "ann", "content": "hi\nthere"},
        ],
        "max_new_tokens": 8,
        "temperature": 1,
        "stop": "!",
    }
    digest = hashlib.sha256(rfc8785.dumps(expected)).digest()
    signed = fake_node.body("unused", cumulative=10**12, input_digest=digest)
    r = await fake_node.http.post(
        URL, content=raw, headers={**header(signed), "content-type": "application/json"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: hi\nthere"
    assert stored_inputs(fake_node) == [expected]
    # the same request written with `1.0` hashes the same under RFC 8785
    assert chat_task_input(json.loads(raw.replace('"temperature": 1', '"temperature": 1.0'))) == expected
    as_float = chat_task_input(json.loads(raw.replace(": 1,", ": 1.0,")))
    assert rfc8785.dumps(as_float) == rfc8785.dumps(expected)


@pytest.mark.parametrize(
    "change",
    [
        {"messages": [{"role": "user", "content": "run this other prompt instead"}]},
        {"max_tokens": 64},
        {"temperature": 0.7},
        {"stop": ["."]},
        {"seed": 7},
        {"logprobs": True},
    ],
    ids=["prompt", "limit", "temperature", "stop", "seed", "logprobs"],
)
async def test_a_signature_binds_the_exact_messages_and_params(
    fake_node: FakeNode, change: dict[str, Any]
) -> None:
    """Signed for one body, sent with another (what a client or a relay would do to run another
    prompt on someone's voucher, or a node to bill one prompt as another): refused, nothing stored."""
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    signed = fake_node.body(chat_task_input(body), cumulative=10**12)
    r = await fake_node.http.post(URL, json={**body, **change}, headers=header(signed))
    assert r.status_code == 400 and r.json()["error"]["code"] == "input_hash_mismatch", r.text
    assert tasks_count(fake_node) == 0
    r = await fake_node.http.post(URL, json=body, headers=header(signed))  # the signed body runs
    assert r.status_code == 200, r.text
    assert stored_inputs(fake_node) == [chat_task_input(body)]


TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"logprobs": True, "top_logprobs": 6}, "top_logprobs"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logit_bias": {"1": 5}}, "logit_bias"),
        ({"frobnicate": True}, "frobnicate"),
        ({"messages": [{"role": "user", "content": "hi", "function_call": {}}]}, "messages[0].function_call"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content[0]",
        ),
    ],
)
async def test_unsupported_parameters_are_a_400_naming_them(
    fake_node: FakeNode, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **extra}
    signed = fake_node.body(chat_task_input(body), cumulative=10**12)  # a valid signature: not the cause
    r = await fake_node.http.post(URL, json=body, headers=header(signed))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "unsupported_parameter" and error["param"] == param, error
    assert f"`{param}`" in error["message"]
    assert tasks_count(fake_node) == 0


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}},
        {
            "type": "json_schema",
            "json_schema": {"name": "x", "schema": {"type": "array", "uniqueItems": True}},
        },
        {"type": "json_schema"},
    ],
)
async def test_a_response_format_without_a_grammar_is_a_400_naming_it(
    fake_node: FakeNode, response_format: dict[str, Any]
) -> None:
    """Structured output is honoured by constrained decoding (tests/integration/test_openai_client.py);
    a schema that gives no grammar, or one with a keyword the grammar cannot enforce, is refused."""
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": response_format,
    }
    signed = fake_node.body(chat_task_input(body), cumulative=10**12)
    r = await fake_node.http.post(URL, json=body, headers=header(signed))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == "response_format" and tasks_count(fake_node) == 0


@pytest.mark.parametrize(
    ("extra", "param", "named"),
    [
        (
            {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            "'nope'",
        ),
        ({"tool_choice": "required"}, "tool_choice", "`tools`"),
        ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0].function.name", "letters"),
        ({"messages": [{"role": "tool", "content": "42"}]}, "messages[0].tool_call_id", "missing"),
    ],
)
async def test_bad_tool_calling_requests_are_a_400_naming_the_field(
    fake_node: FakeNode, extra: dict[str, Any], param: str, named: str
) -> None:
    """Tool calling is honoured (tests/integration/test_openai_client.py); a tool choice naming no
    offered tool, or a malformed tool or tool message, is refused before any task is made."""
    body = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}], **extra}
    signed = fake_node.body(chat_task_input(body), cumulative=10**12)
    r = await fake_node.http.post(URL, json=body, headers=header(signed))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and named in error["message"], error
    assert tasks_count(fake_node) == 0


async def test_no_op_values_of_those_parameters_are_accepted(fake_node: FakeNode) -> None:
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
        "n": 1,
        "presence_penalty": 0,
        "response_format": {"type": "text"},
        "tools": [TOOL],
        "tool_choice": "none",
        "parallel_tool_calls": False,
        "logprobs": False,
        "user": "someone",
    }
    signed = fake_node.body(chat_task_input(body), cumulative=10**12)
    r = await fake_node.http.post(URL, json=body, headers=header(signed))
    assert r.status_code == 200, r.text


async def test_stream_has_one_created_and_cuts_at_stop(fake_node: FakeNode) -> None:
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "alpha beta gamma"}],
        "stream": True,
        "stop": ["gam"],
    }
    signed = fake_node.body(chat_task_input(body), cumulative=10**12)
    r = await fake_node.http.post(URL, json=body, headers=header(signed))
    assert r.status_code == 200, r.text
    datas = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert len({(c["id"], c["created"]) for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "echo: alpha beta " and chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_stop_hold_never_sends_a_stop_string_split_over_pieces() -> None:
    hold = StopCutter(["END", "\n\n"])
    sent = "".join(hold.feed(p) for p in ["Hello wor", "ld E", "N", "D and more"])
    assert sent == "Hello world " and hold.stopped
    assert cut_at_stop("a\n\nbEND", ["END", "\n\n"]) == ("a", True)
    assert cut_at_stop("abc", ["x"]) == ("abc", False)
    free = StopCutter([])
    assert [free.feed(p) for p in ["a", "b"]] == ["a", "b"]
