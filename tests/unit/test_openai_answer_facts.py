"""What an OpenAI answer states beside its text (``finish_reason``, ``usage``, ``logprobs``), checked
by the drop-in against the task's trace (`supernet.sdk.openai_compat.answer_facts`), and the one rule
node and drop-in derive them by (`supernet.sdk.formats.chat_facts`).

The rule is unit-tested on hand-built traces; the drop-in on the real service app on the FAKE
executor and chain (each chat task storing a well-formed trace, `chat_traces`), with the official
``openai`` client (async in process, sync over a real socket) on the real `SupernetAuth`: an honest
answer passes, plain and streamed, and states its trace's facts; a node rewriting any of them, or a
trace that cannot be read, fails the answer. The real model's case (a cut answer marked ``stop``,
inflated usage, confident log-probabilities) is tests/integration/test_review_openai_gateway2.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from chat_traces import store_chat_traces
from node_fixtures import FakeNode, forging_answers
from supernet.node.service import chat_result
from supernet.sdk.chain.eip712 import Domain, TaskRequest
from supernet.sdk.client.answer import AnswerMismatchError, SignedCall
from supernet.sdk.client.state import ClientState
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.formats import chat_facts
from supernet.sdk.formats.chat_facts import (
    NO_LOGPROB,
    CallFacts,
    call_facts_of,
    finish_reason,
    logprob_value,
    token_logprobs,
)
from supernet.sdk.formats.trace import Trace, example_dag
from supernet.sdk.openai_compat import SupernetAuth
from supernet.sdk.openai_compat.answer_facts import ShownFacts, facts_problem

ASGI = Callable[[Any, Any, Any], Awaitable[None]]
Rewrite = Callable[[bytes], bytes]
MESSAGES: Any = [{"role": "user", "content": "what is the capital of France?"}]
HONEST = "echo: what is the capital of France?"
WORDS = len(HONEST.split(" "))  # the FAKE trace's answer tokens (`chat_traces.chat_trace`)


# -- the shared rule ----------------------------------------------------------------------------------


def _llm(output_ids: list[int], finish: str, logprobs: list[float | None], prompt: int = 2) -> dict[str, Any]:
    event = dict(example_dag()["events"][0])
    return {
        **event,
        "prompt_ids": list(range(prompt)),
        "output_ids": output_ids,
        "finish_reason": finish,
        "logprobs": logprobs,
    }


def _trace(*events: dict[str, Any]) -> Trace:
    return Trace.from_dag({**example_dag(), "events": list(events)})


class _Chars:
    """A tokenizer whose token ``i`` is the character ``chr(i)``."""

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(chr(i) for i in ids)


def test_the_rule_reads_the_calls_of_the_trace() -> None:
    """Usage counts every call's tokens; finish reason, token ids and log-probabilities are the last
    call's (the chat agent's answer); a trace without an LLM call has no facts."""
    facts = call_facts_of(
        _trace(_llm([7, 8], "stop", [-1.0, -2.0], 5), _llm([9, 10, 11], "length", [-0.5, None, -0.25]))
    )
    assert facts == CallFacts(7, 5, "length", (0, 1), (9, 10, 11), (-0.5, None, -0.25))
    assert facts.usage() == {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
    assert call_facts_of(_trace()) is None


def test_the_rule_derives_the_finish_reason_and_the_logprobs() -> None:
    facts = call_facts_of(
        _trace(_llm([ord("h"), ord("i"), ord("!"), 0], "length", [-0.5, None, -0.25, -3.0]))
    )
    assert facts is not None
    assert finish_reason(facts, stopped=False) == "length"  # the token limit ended it
    assert finish_reason(facts, stopped=True) == "stop"  # a stop string did
    assert finish_reason(facts, stopped=False, tool_call=True) == "tool_calls"
    assert finish_reason(None, stopped=False) == "stop"  # no LLM call recorded
    entries = token_logprobs(_Chars(), facts, "hi")  # "!" and the rest lie past the answer
    assert [(e["token"], e["logprob"], e["bytes"]) for e in entries] == [
        ("h", -0.5, [104]),
        ("i", NO_LOGPROB, [105]),  # a null (NaN) recorded log-probability
    ]
    assert logprob_value(None) == NO_LOGPROB and logprob_value(-0.25) == -0.25


def test_the_node_answers_by_the_sdks_rule() -> None:
    """One rule: the node's `chat_result` serves the SDK's functions, not copies of them."""
    assert chat_result.CallFacts is chat_facts.CallFacts
    assert chat_result.finish_reason is chat_facts.finish_reason
    assert chat_result.token_logprobs is chat_facts.token_logprobs
    assert chat_result.NO_LOGPROB == chat_facts.NO_LOGPROB


def _call(task_input: Any) -> SignedCall:
    request = TaskRequest("0x" + "11" * 20, "0x" + "22" * 20, b"\7" * 32, bytes(32), bytes(32), 10, 1, 1)
    return SignedCall("0x" + "ab" * 32, request, task_input, Domain(31337, "0x" + "33" * 20))


def test_what_the_node_writes_by_the_rule_is_what_the_check_accepts() -> None:
    """`facts_problem` accepts exactly the facts the node derives from the trace, and names each
    it is shown otherwise (the unit of the drop-in's check; the answers below run it end to end)."""
    doc = {
        **example_dag(),
        "output": "hi! and more",
        "events": [_llm([104, 105, 33], "length", [-0.5, None, -0.25])],
    }
    call = _call({"messages": [], "stop": ["!"]})
    facts = call_facts_of(Trace.from_dag(doc))
    assert facts is not None
    logprobs = {"content": token_logprobs(_Chars(), facts, "hi")}
    honest = ShownFacts(["stop"], [facts.usage()], [logprobs])  # cut at "!": stop, not length
    assert facts_problem(call, doc["output"], doc, honest, tool_call=False) is None
    assert facts_problem(call, doc["output"], doc, ShownFacts(["stop"]), False) is None  # none stated
    forged = {
        "finish": ShownFacts(["length"]),
        "no finish": ShownFacts([None]),
        "two finishes": ShownFacts(["stop", "stop"]),
        "usage": ShownFacts(["stop"], [{**facts.usage(), "completion_tokens": 30}]),
        "usage as floats": ShownFacts(["stop"], [{k: float(v) for k, v in facts.usage().items()}]),
        "usage extra": ShownFacts(["stop"], [{**facts.usage(), "cached_tokens": 1}]),
        "logprob": ShownFacts(["stop"], [], [{"content": [{**logprobs["content"][0], "logprob": -0.01}]}]),
        "logprob bool": ShownFacts(
            ["stop"], [], [{"content": [{**logprobs["content"][0], "logprob": True}]}]
        ),
        "more logprobs": ShownFacts(["stop"], [], [{"content": logprobs["content"] * 2}]),
        "bytes": ShownFacts(["stop"], [], [{"content": [{**logprobs["content"][0], "bytes": [1]}]}]),
        "form": ShownFacts(["stop"], [], [{"content": logprobs["content"], "refusal": "x"}]),
    }
    for name, shown in forged.items():
        assert facts_problem(call, doc["output"], doc, shown, False) is not None, name
    assert facts_problem(call, doc["output"], doc, ShownFacts(["tool_calls"]), True) is None


# -- the drop-in, end to end --------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _traced(fake_node: FakeNode) -> None:
    store_chat_traces(fake_node)


def _client(node: FakeNode, state: Path, app: ASGI | None = None, **auth: Any) -> openai.AsyncOpenAI:
    app = app or node.service.app
    auth.setdefault("store_transport", httpx.ASGITransport(app=app))
    signer = SupernetAuth(node.user, node.chain.domain, rule=node.chain, state_dir=state, **auth)
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), auth=signer)
    return openai.AsyncOpenAI(base_url="http://node/v1", api_key="-", http_client=http, max_retries=0)


def _statuses(state: Path) -> list[str]:
    return sorted(r.status for r in ClientState.open(state).tasks.values())


def _recorded_logprobs(n: int) -> list[float]:
    return [-0.125 * (i + 1) for i in range(n)]  # `chat_traces.chat_trace`


def _prompt_tokens() -> int:
    return len(MESSAGES[0]["content"].split())


async def test_an_honest_plain_answer_states_its_traces_facts_and_passes(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    ai = _client(fake_node, tmp_path)
    reply = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, logprobs=True)
    assert reply.choices[0].message.content == HONEST
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (_prompt_tokens(), WORDS)
    assert reply.choices[0].logprobs is not None and reply.choices[0].logprobs.content is not None
    assert [t.logprob for t in reply.choices[0].logprobs.content] == _recorded_logprobs(WORDS)
    assert _statuses(tmp_path) == ["done"]


async def test_an_honest_streamed_answer_states_its_traces_facts_and_passes(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    ai = _client(fake_node, tmp_path)
    chunks = await ai.chat.completions.create(
        model="fake-model",
        messages=MESSAGES,
        stream=True,
        logprobs=True,
        stream_options={"include_usage": True},
    )
    got = [c async for c in chunks]
    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    assert text.strip() == HONEST
    assert [c.choices[0].finish_reason for c in got if c.choices and c.choices[0].finish_reason] == ["stop"]
    [usage] = [c.usage for c in got if c.usage is not None]
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        _prompt_tokens(),
        WORDS,
        _prompt_tokens() + WORDS,
    )
    shown = [
        t.logprob
        for c in got
        if c.choices and c.choices[0].logprobs
        for t in c.choices[0].logprobs.content or []
    ]
    assert shown == _recorded_logprobs(WORDS)
    assert _statuses(tmp_path) == ["done"]


async def test_an_honest_answer_cut_at_a_stop_string_says_stop(fake_node: FakeNode, tmp_path: Path) -> None:
    ai = _client(fake_node, tmp_path)
    reply = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, stop=["capital"])
    assert reply.choices[0].message.content == "echo: what is the "
    assert reply.choices[0].finish_reason == "stop" and _statuses(tmp_path) == ["done"]


@contextlib.asynccontextmanager
async def _served(app: ASGI) -> AsyncIterator[str]:
    """``app`` on a real local server: its API base URL (its advertised store is on it too)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(1000):
            if server.started:
                break
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        await serving


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_the_sync_client_reads_the_trace_too(fake_node: FakeNode, tmp_path: Path, stream: bool) -> None:
    """The sync ``openai`` client (its own thread, no event loop) reads the trace from the store the
    node advertises, over the network: an honest answer passes, a rewritten fact fails."""
    async with _served(fake_node.service.app) as url:
        auth = SupernetAuth(fake_node.user, fake_node.chain.domain, rule=fake_node.chain, state_dir=tmp_path)
        sync = openai.OpenAI(base_url=url, api_key="-", http_client=httpx.Client(auth=auth), max_retries=0)

        def ask() -> tuple[str, list[Any]]:
            if not stream:
                reply = sync.chat.completions.create(model="fake-model", messages=MESSAGES)
                return reply.choices[0].message.content or "", [reply.choices[0].finish_reason]
            chunks = list(sync.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True))
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            return text.strip(), [
                c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
            ]

        assert await asyncio.to_thread(ask) == (HONEST, ["stop"])
    async with _served(forging_answers(fake_node.service.app, _final(_say_length))) as url:
        sync = openai.OpenAI(base_url=url, api_key="-", http_client=httpx.Client(auth=auth), max_retries=0)
        with pytest.raises(AnswerMismatchError, match="finish_reason 'length' where the trace gives 'stop'"):
            await asyncio.to_thread(ask)
    assert _statuses(tmp_path) == ["answer_mismatch", "done"]


# -- a node rewriting the facts ----------------------------------------------------------------------


def _final(edit: Callable[[dict[str, Any]], None]) -> Rewrite:
    """Apply ``edit`` to a plain answer's JSON, or to a stream's chunk carrying the proof."""

    def rewrite(body: bytes) -> bytes:
        if body.startswith(b"{"):
            doc = json.loads(body)
            edit(doc)
            return json.dumps(doc).encode()
        events = [e for e in body.split(b"\r\n\r\n") if e]
        for i, event in enumerate(events):
            if event.startswith(b"data: {") and b'"supernet"' in event:
                doc = json.loads(event[6:])
                edit(doc)
                events[i] = b"data: " + json.dumps(doc).encode()
        return b"\r\n\r\n".join(events) + b"\r\n\r\n"

    return rewrite


def _say_length(doc: dict[str, Any]) -> None:
    doc["choices"][0]["finish_reason"] = "length"


def _bill_more(doc: dict[str, Any]) -> None:
    doc["usage"] = {"prompt_tokens": 1, "completion_tokens": 900, "total_tokens": 901}


def _sure(doc: dict[str, Any]) -> None:
    entries = [{"token": "", "logprob": -0.001, "bytes": [], "top_logprobs": []}] * WORDS
    doc["choices"][0]["logprobs"] = {"content": entries}


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
@pytest.mark.parametrize(
    ("edit", "why"),
    [
        (_say_length, "finish_reason 'length' where the trace gives 'stop'"),
        (_bill_more, "usage .* where the trace gives"),
        (_sure, "logprob -0.001 for token 0 where the trace records -0.125"),
    ],
    ids=["finish_reason", "usage", "logprobs"],
)
async def test_defence_a_rewritten_fact_fails_the_answer(
    fake_node: FakeNode, tmp_path: Path, stream: bool, edit: Callable[[dict[str, Any]], None], why: str
) -> None:
    """Attack: the honest text and receipt, with a finish reason, a usage or log-probabilities of
    the node's choosing. Defence: each is derived from the trace the receipt names and compared."""
    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, _final(edit)))
    with pytest.raises(AnswerMismatchError, match=why):
        if not stream:
            await ai.chat.completions.create(model="fake-model", messages=MESSAGES)
        else:
            chunks = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
            async for _ in chunks:
                pass
    assert _statuses(tmp_path) == ["answer_mismatch"]


async def test_defence_a_usage_beside_streamed_text_is_checked_too(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """Attack: put a ``usage`` on a content chunk (``openai`` shows any chunk's) rather than the
    usage chunk. Defence: every ``usage`` a stream states is compared."""

    def rewrite(body: bytes) -> bytes:
        events = [e for e in body.split(b"\r\n\r\n") if e]
        doc = json.loads(events[1][6:])
        doc["usage"] = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        events[1] = b"data: " + json.dumps(doc).encode()
        return b"\r\n\r\n".join(events) + b"\r\n\r\n"

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, rewrite))
    chunks = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    with pytest.raises(AnswerMismatchError, match="usage"):
        async for _ in chunks:
            pass


class _Store(httpx.AsyncBaseTransport):
    """A content store that answers every read with ``status`` and ``body``."""

    def __init__(self, status: int, body: bytes) -> None:
        self.status, self.body = status, body

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.status, content=self.body)


@pytest.mark.parametrize(
    ("store", "why"),
    [
        (
            _Store(500, b'{"Message": "block was not found locally", "Code": 0, "Type": "error"}'),
            "cannot be read",
        ),
        (_Store(200, b"\xa1ahbyes"), "cannot be read"),  # another block than the CID names
        (_Store(200, b"\0" * (400 * 1024)), "cannot be read"),  # past MAX_TRACE_BYTES
    ],
    ids=["missing", "another-block", "too-large"],
)
async def test_defence_an_answer_whose_trace_cannot_be_read_fails_closed(
    fake_node: FakeNode, tmp_path: Path, store: _Store, why: str
) -> None:
    """A store that lacks the trace, serves another block or an endless one: the facts cannot be
    checked, so the answer fails (recorded as a mismatch), as one without a receipt does."""
    ai = _client(fake_node, tmp_path, store_transport=store)
    with pytest.raises(AnswerMismatchError, match=why):
        await ai.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert _statuses(tmp_path) == ["answer_mismatch"]


async def test_defence_an_unreachable_store_fails_closed(fake_node: FakeNode, tmp_path: Path) -> None:
    ai = _client(fake_node, tmp_path, store_url="http://127.0.0.1:9", store_transport=None)
    with pytest.raises(AnswerMismatchError, match=r"cannot be read from http://127\.0\.0\.1:9"):
        await ai.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert _statuses(tmp_path) == ["answer_mismatch"]
