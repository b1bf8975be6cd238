"""The OpenAI drop-in's answer check (`supernet.sdk.openai_compat.answer_check`) against a node that
wants the user to read other text than its receipt commits, in every shape the check could miss.

The node is the real service app on the FAKE executor and chain of ``tests/node_fixtures.py``; the
attacker is an ASGI wrapper around that app rewriting what it sends (what an operator can run),
and the client is the official ``openai.AsyncOpenAI`` on the real `SupernetAuth`. Each attack is
first shown to reach the caller's parser (the forged text is in the bytes the node sends), then to
be refused: the caller gets `AnswerMismatchError`, never the forged text, and the task's record in
the client state says so.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from chat_traces import store_chat_traces
from node_fixtures import FakeNode, forging_answers
from supernet.sdk.chain.eip712 import TaskRequest
from supernet.sdk.client.answer import SignedCall, check_answer
from supernet.sdk.client.state import ClientState
from supernet.sdk.openai_compat import AUTH_HEADER, SupernetAuth, chat_task_input
from supernet.sdk.openai_compat.answer_check import AnswerMismatchError

CHAT = "/v1/chat/completions"
ASGI = Callable[[Any, Any, Any], Awaitable[None]]
Rewrite = Callable[[bytes], bytes]
MESSAGES: Any = [{"role": "user", "content": "what is the capital of France?"}]
HONEST = "echo: what is the capital of France?"


@pytest.fixture(autouse=True)
def _traced(fake_node: FakeNode) -> None:
    """The fake node stores each chat task's trace, which the drop-in reads (`chat_traces`)."""
    store_chat_traces(fake_node)


def _client(node: FakeNode, tmp_path: Path, app: ASGI) -> openai.AsyncOpenAI:
    store = httpx.ASGITransport(app=app)  # the node's public store, through the same (lying) node
    auth = SupernetAuth(
        node.user, node.chain.domain, rule=node.chain, state_dir=tmp_path, store_transport=store
    )
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), auth=auth)
    return openai.AsyncOpenAI(base_url="http://node/v1", api_key="-", http_client=http, max_retries=0)


async def _ask(ai: openai.AsyncOpenAI, stream: bool, **kw: Any) -> str:
    if not stream:
        reply = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, **kw)
        return reply.choices[0].message.content or ""
    chunks = await ai.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True, **kw)
    return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices]).strip()


def _only_record(tmp_path: Path) -> Any:
    [record] = ClientState.open(tmp_path).tasks.values()
    return record


def _events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\r\n\r\n") if e]


def _chunk(event: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(event.removeprefix(b"data: "))
    return doc


async def test_an_honest_answer_passes_and_is_recorded_with_its_promise(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    ai = _client(fake_node, tmp_path, fake_node.service.app)
    assert await _ask(ai, stream=False) == HONEST
    assert await _ask(ai, stream=True) == HONEST
    records = list(ClientState.open(tmp_path).tasks.values())
    assert [r.status for r in records] == ["done", "done"]
    assert all(r.output == HONEST and r.promise is not None and r.request is not None for r in records)


def _smuggled(body: bytes) -> bytes:
    """An event whose JSON is split over two ``data`` lines (SSE joins them with a newline): a
    parser reading one line per event sees no JSON there; the caller's parser sees " Berlin."."""
    events = _events(body)
    head = _chunk(events[1])
    head["choices"][0]["delta"] = {"content": " Berlin."}
    text = json.dumps(head)
    cut = text.index('"choices"')
    extra = b"data: " + text[:cut].encode() + b"\r\ndata: " + text[cut:].encode()
    return b"\r\n\r\n".join([*events[:-1], extra, events[-1]]) + b"\r\n\r\n"


async def test_an_event_split_over_two_data_lines_is_refused(fake_node: FakeNode, tmp_path: Path) -> None:
    """Attack: smuggle forged text in an event a strict one-line reader would skip but the
    caller's SSE parser joins. Defence: an event with two ``data`` lines fails the answer."""
    forged = _smuggled
    raw = forged(await _raw_stream(fake_node)).decode()
    assert "Berlin" in raw and raw.count("\r\ndata: ") > raw.count("\r\n\r\ndata: ")  # it is there
    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, forged))
    with pytest.raises(AnswerMismatchError, match="the answer holds an event"):
        await _ask(ai, stream=True)
    assert _only_record(tmp_path).status == "answer_mismatch"


async def _raw_stream(node: FakeNode) -> bytes:
    """The bytes of one honest streamed answer (a separate task, to build the forgery from)."""
    body = {"model": "fake-model", "messages": MESSAGES, "stream": True}
    signed = node.body(chat_task_input(body), nonce=50, cumulative=10**12)
    token = {k: signed[k] for k in ("request", "signature", "voucher")}
    header = {AUTH_HEADER: base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")}
    r = await node.http.post(CHAT, json=body, headers=header)
    assert r.status_code == 200, r.text
    return r.content


@pytest.mark.parametrize(
    "rewrite, why",
    [
        (
            lambda b: json.dumps(
                {
                    **json.loads(b),
                    "choices": [
                        *json.loads(b)["choices"],
                        {"index": 1, "message": {"role": "assistant", "content": "Berlin."}},
                    ],
                }
            ).encode(),
            "exactly one choice",
        ),
        (lambda b: json.dumps({**json.loads(b), "supernet": None}).encode(), "without a signed receipt"),
        (
            lambda b: json.dumps(
                {**json.loads(b), "supernet": {**json.loads(b)["supernet"], "output": "Berlin."}}
            ).encode(),
            "output hash",
        ),
    ],
    ids=["second-choice", "no-receipt", "other-output-same-receipt"],
)
async def test_a_plain_answer_the_receipt_does_not_vouch_for_is_refused(
    fake_node: FakeNode, tmp_path: Path, rewrite: Rewrite, why: str
) -> None:
    """Attacks on a plain completion: a second choice beside the honest one, the receipt left
    out, an output claimed under the honest receipt. Each is refused before the caller reads it."""
    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, rewrite))
    with pytest.raises(AnswerMismatchError, match=why):
        await _ask(ai, stream=False)
    assert _only_record(tmp_path).status == "answer_mismatch"


async def test_an_earlier_tasks_receipt_does_not_vouch_for_a_new_answer(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """Attack: the node keeps the answer and receipt of the user's first question and serves them
    again, unchanged and consistent with each other, for a second question it never ran (or ran and
    answered with something else). Defence: the receipt must be for the request just signed."""
    stored: dict[str, bytes] = {}

    def replay(body: bytes) -> bytes:
        stored.setdefault("first", body)
        return stored["first"]

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, replay))
    assert await _ask(ai, stream=False) == HONEST
    other: Any = [{"role": "user", "content": "and of Spain?"}]
    with pytest.raises(AnswerMismatchError, match=r"request hash|labelled"):
        await ai.chat.completions.create(model="fake-model", messages=other)
    statuses = sorted(r.status for r in ClientState.open(tmp_path).tasks.values())
    assert statuses == ["answer_mismatch", "done"]


async def test_a_forged_answer_under_another_success_status_is_still_checked(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """Attack: answer 202 (a success the caller's client still parses) with forged text, hoping
    only a 200 is checked. Defence: every 2xx answer is checked."""
    forge = forging_answers(fake_node.service.app, lambda b: b.replace(b"France", b"Prance"), status=202)
    ai = _client(fake_node, tmp_path, forge)
    with pytest.raises(AnswerMismatchError, match="output"):
        await _ask(ai, stream=False)


async def test_a_body_of_the_other_form_than_asked_is_refused(fake_node: FakeNode, tmp_path: Path) -> None:
    """Attack: answer a plain request with an event stream (or the reverse), so the check reads
    the body one way and the caller's client another. Defence: the body must be the asked form."""
    forge = forging_answers(fake_node.service.app, lambda b: b, content_type=b"text/event-stream")
    ai = _client(fake_node, tmp_path, forge)
    with pytest.raises(AnswerMismatchError, match="where application/json was asked"):
        await _ask(ai, stream=False)


async def test_streamed_text_after_the_proof_is_checked_too(fake_node: FakeNode, tmp_path: Path) -> None:
    """Attack: send the honest chunks and the proof, then one more content chunk before
    ``[DONE]`` (the caller's client shows every chunk until ``[DONE]``). Defence: the check runs at
    ``[DONE]`` over all the text streamed."""

    def add_tail(body: bytes) -> bytes:
        events = _events(body)
        tail = _chunk(events[1])
        tail["choices"][0]["delta"] = {"content": " Actually, Berlin."}
        return (
            b"\r\n\r\n".join([*events[:-1], b"data: " + json.dumps(tail).encode(), events[-1]]) + b"\r\n\r\n"
        )

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, add_tail))
    with pytest.raises(AnswerMismatchError, match="not what the receipt commits"):
        await _ask(ai, stream=True)


async def test_a_receipt_committed_before_the_check_still_vouches(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """A node may commit the batch before the client reads the receipt (a fast batcher, a slow
    client): the receipt then carries its batch. The answer check leaves the commit to
    `Client.verify` and passes an honest answer whatever the batch field says (it raised "cannot be
    committed yet" on a committed receipt, failing honest answers at random)."""
    captured: dict[str, Any] = {}

    def keep(body: bytes) -> bytes:
        captured["doc"] = json.loads(body)
        return body

    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, keep))
    assert await _ask(ai, stream=False) == HONEST
    [record] = ClientState.open(tmp_path).tasks.values()
    proof = captured["doc"]["supernet"]
    committed = {
        "localId": 1,
        "status": "committed",
        "chainBatchId": 7,
        "root": "0x" + "11" * 32,
        "index": 0,
        "manifestCid": "bafym",
        "txHash": "0x" + "22" * 32,
    }
    proof = {**proof, "signedReceipt": {**proof["signedReceipt"], "batch": {**committed, "proof": []}}}
    call = SignedCall(
        proof["taskId"], TaskRequest.from_json(record.request), record.input, fake_node.chain.domain
    )
    assert check_answer(call, proof, HONEST, None, "plain").output == HONEST
    with pytest.raises(AnswerMismatchError, match="output hash"):
        check_answer(call, {**proof, "output": "echo: something else"}, HONEST, None, "plain")
