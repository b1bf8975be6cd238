"""Adversarial review: the answer check (`supernet.sdk.client.answer.check_answer`), the OpenAI
drop-in's `supernet.sdk.openai_compat.answer_check.CheckedStream` that applies it to a response as
the caller's client reads it, `SupernetAuth.auth_flow` that installs it and records the task, and
the node's ``supernet`` proof (`supernet.node.service.routes_chat._proof`).

Tried as a node that runs each task honestly (its receipt and trace commit the real output, so
validators find nothing) but wants the user to read other text, or the client to record something
false. The node is the real service app on the FAKE executor and chain of ``tests/node_fixtures.py``
and the attacker an ASGI wrapper around it (what an operator can run), served in process or by a
real uvicorn server where the timing of the connection matters; the caller is the official
``openai`` client (async and sync) on the real `SupernetAuth`. Not repeated here: the attacks of
tests/unit/test_openai_answer_check.py (two data lines, second choice, missing or replayed receipt,
202, other body form, text after the proof) and the Client path of
tests/integration/test_node_attacks.py.

Found (all FIXED; each test below was an attack that passed, now a defence):
1. HIGH — an ``"error": null`` key (any falsy ``error``) in a chunk was read as the node's failure
   and its text skipped; ``openai`` shows it. Now an ``error`` key is a failure only as ``openai``
   reads one (truthy, no choices, no text before), anything else fails the answer, and a failure
   raises at ``[DONE]`` too (`test_defence_a_falsy_error_key_fails_the_answer`).
2. HIGH — text after a stop string passed (the check cut the text at the stop strings, as
   `Client.stream` cuts what it shows; the drop-in's caller reads it uncut). Now the text is
   compared with the output cut at the stop strings (`cut_at_stop`, now the SDK's, which the node
   imports), verbatim for a plain answer (`test_defence_text_after_a_stop_string_fails_the_check`).
3. HIGH — the answer ended for the caller before the check: ``openai`` stops at data *starting*
   with ``[DONE]`` and decodes a ``Content-Encoding``. Now the check runs at any such data (only the
   exact ``[DONE]`` passes) and an encoded body fails at its first bytes
   (`test_defence_the_check_runs_where_the_caller_stops_reading`).
4. HIGH — two choices with ``index`` 0 in a chunk: now a chunk has exactly one choice (index 0) or
   none (`test_defence_a_second_index_zero_choice_fails_the_answer`).
5. MEDIUM — text beside a tool call: now a tool call's message has no text
   (`test_defence_text_beside_a_tool_call_fails_the_answer`).
6. LOW — tool arguments compared as Python values (``true == 1``): now the arguments string must
   be the node's compact rendering of the committed ones
   (`test_defence_tool_arguments_of_another_json_type_fail`).
7. LOW — a ``refusal`` field (any field but ``role``, ``content``, ``tool_calls``) passed: now
   refused (`test_defence_a_refusal_field_fails_the_answer`).
8. LOW — U+FFFD runs hiding words of a plain answer: a plain answer is compared verbatim, and in a
   stream a U+FFFD run stands only for non-ASCII characters (a split character is multi-byte)
   (`test_defence_replacement_characters_cannot_hide_words_of_a_plain_answer`).
9. LOW — a chunk whose content is not text raised a TypeError outside the check (task left
   "sent"): now an answer the check cannot read is an `AnswerMismatchError`, recorded
   (`test_defence_a_malformed_chunk_is_recorded_as_a_mismatch`).

Checked and holding: a redirect (with a client that follows them) is checked on the final answer
(httpx runs the auth flow around the redirects, so a redirected request is signed and paid once);
duplicate ``choices`` keys resolve alike (last wins for both parsers); a BOM, a ``data`` line
without a colon, two spaces before ``[DONE]`` and invalid UTF-8 fail closed; an inexact ``[DONE]``
on the in-process transport is caught by ``openai``'s drain. Known limits: a caller that stops
reading early gets no check (record "sent"). The token strings of ``logprobs``, a known limit
here, are now checked: the entries' bytes must spell the answer, each token its bytes' decoding
(tests/integration/test_review_openai_gateway3.py finding 2,
`test_defence_logprobs_tokens_must_spell_the_answer`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from chat_traces import store_chat_traces
from node_fixtures import FakeNode, forging_answers
from supernet.sdk.client.state import ClientState
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.openai_compat import SupernetAuth
from supernet.sdk.openai_compat.answer_check import AnswerMismatchError

CHAT = "/v1/chat/completions"
ASGI = Callable[[Any, Any, Any], Awaitable[None]]
Rewrite = Callable[[bytes], bytes]
MESSAGES: Any = [{"role": "user", "content": "what is the capital of France?"}]
HONEST = "echo: what is the capital of France?"
FORGED = "Germany? Berlin."


@pytest.fixture(autouse=True)
def _traced(fake_node: FakeNode) -> None:
    """The fake node stores each chat task's trace, which the drop-in reads (`chat_traces`)."""
    store_chat_traces(fake_node)


def _auth(node: FakeNode, state: Path, in_process: bool = True) -> SupernetAuth:
    """The drop-in's auth; ``in_process``: it reads the node's store through the node's app (else
    at the URL the node advertises, for a node served on a real socket)."""
    store = httpx.ASGITransport(app=node.service.app) if in_process else None
    return SupernetAuth(node.user, node.chain.domain, rule=node.chain, state_dir=state, store_transport=store)


def _client(node: FakeNode, state: Path, app: ASGI, **http: Any) -> openai.AsyncOpenAI:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), auth=_auth(node, state), **http)
    return openai.AsyncOpenAI(base_url="http://node/v1", api_key="-", http_client=client, max_retries=0)


@contextlib.asynccontextmanager
async def _served(app: ASGI) -> AsyncIterator[str]:
    """``app`` on a real local server (the connection's timing is the node's): its API base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
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


async def _outcome(coro: Awaitable[Any]) -> Any:
    """The coroutine's value, or the exception it raised (whatever type a fix picks)."""
    try:
        return await coro
    except Exception as exc:
        return exc


async def _streamed(ai: openai.AsyncOpenAI, **kw: Any) -> str:
    """What a caller reading ``choices[0].delta.content`` is shown."""
    chunks = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True, **kw)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])


def _statuses(state: Path) -> list[str]:
    return [r.status for r in ClientState.open(state).tasks.values()]


def _events(body: bytes) -> list[Any]:
    """The node's event stream as its data: chunk objects, then ``"[DONE]"``."""
    out: list[Any] = []
    for event in body.split(b"\r\n\r\n"):
        if event.startswith(b"data: "):
            data = event[6:].decode()
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def _sse(events: list[Any]) -> bytes:
    return b"".join(
        b"data: " + (e if isinstance(e, str) else json.dumps(e)).encode() + b"\r\n\r\n" for e in events
    )


def _content_chunk(events: list[Any], text: str) -> dict[str, Any]:
    """The chunk whose delta is ``text`` (the FAKE streams the output word by word)."""
    [chunk] = [e for e in events if isinstance(e, dict) and e["choices"][:1] and _delta(e) == text]
    return chunk


def _delta(chunk: dict[str, Any]) -> Any:
    return chunk["choices"][0]["delta"].get("content")


def _forged_stream(body: bytes, done: str = "[DONE]") -> bytes:
    """The honest stream, its last word replaced by `FORGED`, ended by ``done``."""
    events = _events(body)
    _content_chunk(events, "France? ")["choices"][0]["delta"]["content"] = FORGED
    return _sse([e for e in events if e != "[DONE]"] + [done])


def _plain(edit: Callable[[dict[str, Any]], None]) -> Rewrite:
    """A plain completion's body with its message edited by ``edit``."""

    def rewrite(body: bytes) -> bytes:
        doc = json.loads(body)
        edit(doc["choices"][0]["message"])
        return json.dumps(doc).encode()

    return rewrite


# -- 1. an error key openai ignores ------------------------------------------------------------------


async def test_defence_a_falsy_error_key_fails_the_answer(fake_node: FakeNode, tmp_path: Path) -> None:
    """HIGH, fixed. Who gains: any node, for any streamed answer, with no receipt at all: it sends
    ``{"error": null, "choices": [<any text>]}`` then ``[DONE]``. `_Answer.add_chunk` treats any
    ``"error"`` key as the node's failure report (``answer.error``, the chunk's text skipped) and
    `_finish` then records "failed" and *returns* (no raise), so ``[DONE]`` goes through; ``openai``
    raises only when ``data.get("error")`` is truthy, so it shows the text. The task was billed and is
    recorded "failed". Fix (by design): an ``error`` key is a failure only as ``openai`` reads one
    (truthy, in a chunk without choices; anything else fails the answer), and a failure raises at
    ``[DONE]`` as well as being recorded, so a failed answer never ends cleanly."""

    def forge(body: bytes) -> bytes:
        head = _events(body)[0]
        head["error"] = None
        head["choices"] = [{"index": 0, "delta": {"role": "assistant", "content": FORGED}}]
        return _sse([head, "[DONE]"])

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, forge))
    got = await _outcome(_streamed(ai))
    assert isinstance(got, Exception), f"the caller read {got!r}, which no receipt commits"
    assert _statuses(tmp_path) == ["answer_mismatch"]


# -- 2. text after a stop string ----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_defence_text_after_a_stop_string_fails_the_check(
    fake_node: FakeNode, tmp_path: Path, stream: bool
) -> None:
    """HIGH, fixed. Who gains: a node serving a request with ``stop`` strings: it appends a stop
    string and any text to the honest answer. The check runs `stream_problem`, which cuts the text
    at the first stop string before comparing (right for `Client.stream`, whose `StopCutter` also
    cuts what it shows), but the drop-in hands the caller the text uncut, so everything after the
    stop string is shown and never checked. Fix (by design): the drop-in compares the text verbatim
    with the receipt's output cut at the stop strings (`cut_at_stop`, what an honest node sends):
    a stop string in the text fails the answer."""
    tail = "\n\nCorrection: the capital is Berlin."

    def forge(body: bytes) -> bytes:
        if not stream:
            return _plain(lambda m: m.update(content=m["content"] + tail))(body)
        events = _events(body)
        extra = json.loads(json.dumps(_content_chunk(events, "France? ")))
        extra["choices"][0]["delta"]["content"] = tail
        return _sse([*events[:-2], extra, *events[-2:]])

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, forge))
    if stream:
        got = await _outcome(_streamed(ai, stop=["\n\n"]))
    else:
        reply = _outcome(ai.chat.completions.create(model="fake-model", messages=MESSAGES, stop=["\n\n"]))
        got = await reply
        got = got if isinstance(got, Exception) else got.choices[0].message.content
    assert isinstance(got, Exception), f"the caller read {got!r}; the receipt commits {HONEST!r}"
    assert _statuses(tmp_path) == ["answer_mismatch"]


# -- 3. the caller's stream ends before the check ------------------------------------------------------


@pytest.mark.parametrize("variant", ["done-suffix", "gzip"])
async def test_defence_the_check_runs_where_the_caller_stops_reading(
    fake_node: FakeNode, tmp_path: Path, variant: str
) -> None:
    """HIGH, fixed. Who gains: any node, for any streamed answer. `CheckedStream` runs the check at
    an exact ``data: [DONE]`` line of the raw body, else when the body ends; ``openai`` stops at
    the first event whose data *starts with* ``[DONE]`` (``[DONE]x``), after decoding any
    ``Content-Encoding`` (a gzip body, whose ``[DONE]`` the raw bytes do not show). The sync client
    then closes the response and never reaches the check; the async one drains it for 0.1 s, so a
    node holding the connection open a little longer ends the caller's loop cleanly. The caller
    read forged text; the task stays "sent". Fix (by design): end the answer where ``openai`` does
    (any data starting with ``[DONE]``: check there, and refuse all but an exact ``[DONE]``), and
    refuse a ``Content-Encoding`` other than identity at the response's headers."""
    if variant == "gzip":
        forged = forging_answers(
            fake_node.service.app,
            lambda b: gzip.compress(_forged_stream(b)) + b"\n",
            headers=[(b"content-encoding", b"gzip")],
            stall_s=0.5,
        )
    else:
        forged = forging_answers(fake_node.service.app, lambda b: _forged_stream(b, "[DONE]x"), stall_s=0.5)
    async with _served(forging_answers(fake_node.service.app, lambda b: b, stall_s=0.5)) as url:  # control
        honest = openai.AsyncOpenAI(
            base_url=url,
            api_key="-",
            http_client=httpx.AsyncClient(auth=_auth(fake_node, tmp_path / "c", False)),
        )
        assert (await _streamed(honest)).strip() == HONEST
    async with _served(forged) as url:
        http = httpx.AsyncClient(auth=_auth(fake_node, tmp_path / "async", False))
        ai = openai.AsyncOpenAI(base_url=url, api_key="-", http_client=http, max_retries=0)
        got_async = await _outcome(_streamed(ai))
        sync = openai.OpenAI(
            base_url=url,
            api_key="-",
            http_client=httpx.Client(auth=_auth(fake_node, tmp_path / "sync", False)),
            max_retries=0,
        )

        def read_sync() -> str:
            chunks = sync.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

        got_sync = await _outcome(asyncio.to_thread(read_sync))
    read = {state: got for state, got in (("async", got_async), ("sync", got_sync)) if isinstance(got, str)}
    assert not read, f"callers read {read}, which no receipt commits"
    assert _statuses(tmp_path / "async") == _statuses(tmp_path / "sync") == ["answer_mismatch"]


async def test_defence_an_inexact_done_on_a_closed_connection_is_caught(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """The async client drains the body after ``[DONE]x`` (0.1 s): a body that ends at once
    reaches `CheckedStream`'s end, which raises into the caller's loop."""
    forged = forging_answers(fake_node.service.app, lambda b: _forged_stream(b, "[DONE]x"))
    ai = _client(fake_node, tmp_path, forged)
    with pytest.raises(AnswerMismatchError, match="inexact end of stream"):
        await _streamed(ai)
    assert _statuses(tmp_path) == ["answer_mismatch"]


# -- 4. a second choice with the same index ------------------------------------------------------------


async def test_defence_a_second_index_zero_choice_fails_the_answer(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """HIGH, fixed. Who gains: a node that wants to flip an answer's meaning by deleting words
    ("do not take" shown as "do take"). A chunk with two choices both ``index`` 0: `add_chunk`
    joins both deltas (their join is the committed output, so the check passes); the caller reading
    ``choices[0].delta.content`` (OpenAI's own examples) sees only the first, empty here. Fix (by
    design): a chunk holds exactly one choice (index 0), or none (the usage chunk)."""

    def forge(body: bytes) -> bytes:
        events = _events(body)
        chunk = _content_chunk(events, "capital ")
        chunk["choices"] = [{"index": 0, "delta": {"content": ""}}, chunk["choices"][0]]
        return _sse(events)

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, forge))
    got = await _outcome(_streamed(ai))
    assert isinstance(got, Exception) or got.strip() == HONEST, f"the caller read {got!r}, recorded done"


# -- 5, 6. tool calls -------------------------------------------------------------------------------------

TOOLS: Any = [{"type": "function", "function": {"name": "transfer", "parameters": {"type": "object"}}}]
CALL = '{"name":"transfer","arguments":{"amount":1,"confirm":false}}'


def _replying_with_a_call(node: FakeNode) -> None:
    """The FAKE model replies with `CALL` (it only echoes: a real model may call a tool)."""
    echo = node.executor.run

    async def run(job: Any, on_token: Any, on_event: Any = None, on_result: Any = None) -> Any:
        return replace(await echo(job, on_token, on_event, on_result), output=CALL)

    node.executor.run = run  # type: ignore[method-assign]
    store_chat_traces(node)  # the trace of the reply as answered (the one stored before echoes)


async def _called(ai: openai.AsyncOpenAI) -> Any:
    reply = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, tools=TOOLS)
    return reply.choices[0].message


async def test_defence_text_beside_a_tool_call_fails_the_answer(fake_node: FakeNode, tmp_path: Path) -> None:
    """MEDIUM, fixed. Who gains: a node whose model answered with a tool call: it adds a
    ``content`` to the message (OpenAI's models send text beside calls, and apps show it). With a
    tool call, `check_answer` compares only the call and ignores the text. Fix (by design): with a
    tool call the text must be empty (the node sends ``content: null``), in a stream too."""
    _replying_with_a_call(fake_node)
    honest = await _called(_client(fake_node, tmp_path / "control", fake_node.service.app))
    assert honest.content is None  # control: the honest call passes, without text
    assert json.loads(honest.tool_calls[0].function.arguments) == json.loads(CALL)["arguments"]
    forge = _plain(lambda m: m.update(content="The transfer failed: send 1 ETH to 0xdead instead."))
    got = await _outcome(_called(_client(fake_node, tmp_path, forging_answers(fake_node.service.app, forge))))
    assert isinstance(got, Exception) or not got.content, f"the caller read {got.content!r}"


async def test_defence_tool_arguments_of_another_json_type_fail(fake_node: FakeNode, tmp_path: Path) -> None:
    """LOW, fixed. Who gains: a node retyping a call's arguments (a tool that reads ``amount``
    ``true`` or ``confirm`` ``0`` otherwise than ``1``/``false``, or a schema that refuses them).
    `check_answer` compares parsed values with Python's ``==``, where ``True == 1`` and
    ``0 == False``. Fix (by design): compare the arguments string with the node's compact rendering
    of the committed arguments (or a type-strict canonical form, JCS)."""
    _replying_with_a_call(fake_node)

    def retype(message: dict[str, Any]) -> None:
        message["tool_calls"][0]["function"]["arguments"] = '{"amount":true,"confirm":0}'

    got = await _outcome(
        _called(_client(fake_node, tmp_path, forging_answers(fake_node.service.app, _plain(retype))))
    )
    assert isinstance(got, Exception), f"the caller's tool got {got.tool_calls[0].function.arguments}"


# -- 7, 8, 9. other fields, U+FFFD, a malformed chunk ---------------------------------------------------


async def test_defence_a_refusal_field_fails_the_answer(fake_node: FakeNode, tmp_path: Path) -> None:
    """LOW, fixed. Who gains: a node that wants a structured-output caller (told by OpenAI to read
    ``message.refusal``) to show its text: only ``content`` and ``tool_calls`` are checked. Fix (by
    design): a message or delta holds only ``role``, ``content`` and ``tool_calls``."""
    forge = _plain(lambda m: m.update(refusal="I cannot answer that; ask at evil.example"))
    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, forge))
    got = await _outcome(ai.chat.completions.create(model="fake-model", messages=MESSAGES))
    assert isinstance(got, Exception) or not got.choices[0].message.refusal, "an unchecked refusal was read"


async def test_defence_replacement_characters_cannot_hide_words_of_a_plain_answer(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """LOW, fixed. Who gains: a node hiding words ("not") of a plain answer behind U+FFFD: the
    stream rule lets a run of k U+FFFD stand for 1..k characters (a character split across tokens),
    but a plain answer is the output itself, with no tokens to split. Fix (by design): a plain
    answer equals the output cut at the stop strings, exactly."""
    hidden = HONEST.replace("France", "\ufffd" * 6)
    ai = _client(
        fake_node,
        tmp_path,
        forging_answers(fake_node.service.app, _plain(lambda m: m.update(content=hidden))),
    )
    got = await _outcome(ai.chat.completions.create(model="fake-model", messages=MESSAGES))
    assert isinstance(got, Exception), f"the caller read {got.choices[0].message.content!r}"


async def test_defence_a_malformed_chunk_is_recorded_as_a_mismatch(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """LOW, fixed. Who gains: a node that wants its billed task recorded as unanswered ("sent")
    rather than as evidence ("answer_mismatch"): a content that is not a string makes `_finish`'s
    join raise TypeError, outside the ``AnswerMismatchError`` handler that records the result. The
    caller does get an error. Fix (by design): any answer the check cannot read is an
    ``AnswerMismatchError``, recorded (type-check the fields where they are read)."""

    def forge(body: bytes) -> bytes:
        events = _events(body)
        _content_chunk(events, "capital ")["choices"][0]["delta"]["content"] = 5
        return _sse(events)

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, forge))
    got = await _outcome(_streamed(ai))
    assert isinstance(got, Exception)
    assert _statuses(tmp_path) == ["answer_mismatch"]


# -- checked and holding -------------------------------------------------------------------------------


async def test_defence_a_redirect_is_checked_on_the_final_answer(fake_node: FakeNode, tmp_path: Path) -> None:
    """Attack: answer the signed request with a 307 to an unchecked path serving forged text, for
    a caller whose client follows redirects. Defence: httpx runs the auth flow around its redirects,
    so the final answer is the one checked (and the request is signed once)."""
    app = fake_node.service.app
    doc = {"id": "x", "object": "chat.completion", "created": 1, "model": "fake-model"}
    doc["choices"] = [
        {"index": 0, "message": {"role": "assistant", "content": FORGED}, "finish_reason": "stop"}
    ]
    forged = json.dumps(doc).encode()

    async def lying(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] in (CHAT, "/v1/forged"):
            if scope["path"] == CHAT:
                await app(scope, receive, lambda message: asyncio.sleep(0))  # run and bill it
                status, headers, body = 307, [(b"location", b"http://node/v1/forged")], b""
            else:
                status, headers, body = 200, [(b"content-type", b"application/json")], forged
            headers.append((b"content-length", str(len(body)).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await app(scope, receive, send)

    ai = _client(fake_node, tmp_path, lying, follow_redirects=True)
    with pytest.raises(AnswerMismatchError, match=r"without a signed receipt|labelled"):
        # (the forged body is also labelled "x", not the task id: whichever check fails first)
        await ai.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert _statuses(tmp_path) == ["answer_mismatch"]


@pytest.mark.parametrize("forged_last", [False, True], ids=["honest-last", "forged-last"])
async def test_defence_duplicate_choices_keys_resolve_alike(
    fake_node: FakeNode, tmp_path: Path, forged_last: bool
) -> None:
    """Attack: two ``choices`` keys in a plain body, hoping the check and the caller pick different
    ones. Defence: both parse with ``json.loads`` (last wins): the caller reads what was checked."""

    def forge(body: bytes) -> bytes:
        doc = json.loads(body)
        honest = json.dumps(doc.pop("choices"))
        fake = json.dumps([{"index": 0, "message": {"role": "assistant", "content": FORGED}}])
        first, last = (honest, fake) if forged_last else (fake, honest)
        return body[:1] + f'"choices": {first}, "choices": {last}, '.encode() + json.dumps(doc).encode()[1:]

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, forge))
    got = await _outcome(ai.chat.completions.create(model="fake-model", messages=MESSAGES))
    if forged_last:
        assert isinstance(got, AnswerMismatchError)
    else:
        assert got.choices[0].message.content == HONEST and _statuses(tmp_path) == ["done"]


@pytest.mark.parametrize(
    "frame",
    [
        lambda s: b"\xef\xbb\xbf" + s,  # a BOM: openai reads the first field as another name
        lambda s: s.replace(b"data: [DONE]", b"data\r\n\r\ndata: [DONE]"),  # a field without a colon
        lambda s: s.replace(b"data: [DONE]", b"data:  [DONE]"),  # openai reads " [DONE]"
        lambda s: s.replace(FORGED.encode(), FORGED.encode() + b"\xff"),  # invalid UTF-8
    ],
    ids=["bom", "bare-data", "two-spaces", "invalid-utf8"],
)
async def test_defence_event_stream_framing_the_parsers_read_apart_fails_closed(
    fake_node: FakeNode, tmp_path: Path, frame: Rewrite
) -> None:
    """Attack: forged text in a stream framed where `CheckedStream` and ``openai``'s SSE decoder
    could part. Defence: each such frame fails the answer (or the caller's parser) with an error."""
    ai = _client(
        fake_node, tmp_path, forging_answers(fake_node.service.app, lambda b: frame(_forged_stream(b)))
    )
    got = await _outcome(_streamed(ai))
    assert isinstance(got, Exception), f"the caller read {got!r}"


# -- known limits ------------------------------------------------------------------------------------------


async def test_known_limit_a_caller_that_stops_reading_early_gets_no_check(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """A stream is checked at its end: a caller that breaks out of its loop early has read text
    that is never checked, and the task stays "sent" (its fee is counted by the ladder). Acceptable:
    streamed text is shown before any check by design (as `Client.stream`), and the caller chose to
    stop; what would change it is recording "abandoned" when the stream is closed unchecked."""
    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, _forged_stream))
    chunks = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
    shown = ""
    async for chunk in chunks:
        shown += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        if FORGED in shown:
            break
    await chunks.close()
    assert FORGED in shown and _statuses(tmp_path) == ["sent"]


async def test_defence_logprobs_tokens_must_spell_the_answer(fake_node: FakeNode, tmp_path: Path) -> None:
    """Once a known limit (the token strings of ``logprobs.content`` were the node's word): now the
    entries' ``bytes`` must concatenate to the checked answer and each ``token`` be their decoding
    (`answer_facts._logprobs_problem`, tests/integration/test_review_openai_gateway3.py finding 2),
    so tokens that are not the answer's fail it. Their values are checked too: each is the
    trace's, in order, so a forged value fails the answer (the control)."""

    def forge(value: float | None) -> Rewrite:
        def rewrite(body: bytes) -> bytes:
            doc = json.loads(body)
            entry = doc["choices"][0]["logprobs"]["content"][0]
            entry.update(token=FORGED, bytes=list(FORGED.encode()))
            if value is not None:
                entry["logprob"] = value
            return json.dumps(doc).encode()

        return rewrite

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, forge(None)))
    with pytest.raises(AnswerMismatchError, match="logprobs whose bytes spell"):
        await ai.chat.completions.create(model="fake-model", messages=MESSAGES, logprobs=True)
    assert _statuses(tmp_path) == ["answer_mismatch"]
    ai = _client(fake_node, tmp_path / "value", forging_answers(fake_node.service.app, forge(0.0)))
    with pytest.raises(AnswerMismatchError, match=r"logprob 0\.0 for token 0"):
        await ai.chat.completions.create(model="fake-model", messages=MESSAGES, logprobs=True)
