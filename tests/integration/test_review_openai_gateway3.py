"""Adversarial review 3 of the OpenAI drop-in: commit 3d50003, which checks an answer's
``finish_reason``, ``usage`` and ``logprobs`` against the trace its signed receipt names
(`supernet.sdk.openai_compat.answer_facts`, `answer_check.CheckedStream`, `auth.SupernetAuth`'s
``store_url``) by the rule node and drop-in now share (`supernet.sdk.formats.chat_facts`).

Scope: a node that wants the user's application to act on facts the trace does not hold, or to
stall or grow the user's process; an honest node wrongly failed; a user who misconfigures the store.
Real parts: the node's real service app (``POST /v1/chat/completions``, `routes_chat`) on the FAKE
executor and chain of ``tests/node_fixtures.py`` with the real embedded content store, each chat task
storing a well-formed trace (`chat_traces`, as tests/unit/test_openai_answer_facts.py); the official
``openai`` client on the real `SupernetAuth`, async in process and sync over a real socket (uvicorn);
the real SmolLM2 tokenizer (`supernet.node.llm.tokenizer.Tokenizer`, what the node's engine decodes
with) for the shared rule; a real embedded store server for a user's own store. A hostile node is
the real app behind an ASGI wrapper or an HTTP transport that rewrites what it sends (what its
operator runs); a slow store is a tiny HTTP server, which is what such a store is.

Found (each FIXED, its test renamed ``test_defence_*``, assertions unchanged; finding 4's test
now reaches the node's advertised store over ``store_transport``, which only that store uses):
1. MEDIUM — a stream's facts are held without bound
   (`test_defence_a_streamed_answer_holds_facts_without_bound`). Commit 3d50003 made
   `answer_check._Answer` keep every chunk's ``logprobs`` and ``usage`` object (`ShownFacts`,
   appended in ``_stated`` / ``add_chunk``) until ``[DONE]``, but only the text counts against
   `answer_bound` (``_grow``) and only one line against `body_bound`. A node streams text-free
   chunks (``"delta": {}``), each a ``logprobs`` of thousands of entries just under the line
   bound, for as long as it likes (its keep-alive pings hold the read timeout off): the user's
   process parses and keeps them all (a Python dict per entry, several times the JSON's bytes;
   the test's 6 MB stream left 120,000 entries held for an answer of 4 signed tokens), and the
   check runs only at the end. The bound review 2 set on a stream's text (gateway2 finding 4) no
   longer bounds what the drop-in holds.
   FIXED: `answer_check._Answer` counts the facts as they arrive (``_stated``,
   ``_finish_reason``, ``_usage``, ``_label``) and fails the answer at once past what the signed
   token limit allows (`signed_tokens`): ``logprobs`` entries at most one a signed token (an empty
   object counting one), at most one ``finish_reason``, `MAX_USAGES` ``usage`` objects, the stream
   lines holding facts at most `body_bound` bytes together, and one reply ``id`` (a second fails
   at once); an empty delta is no longer kept either.
2. MEDIUM — ``logprobs`` may cover only part of the answer
   (`test_defence_a_node_reports_logprobs_for_only_part_of_the_answer`). `_logprobs_problem`
   accepts 1 to n entries for a non-empty answer (n: the call's recorded tokens), and no
   ``logprobs`` at all where the caller asked for them. A node keeps the log-probabilities of the
   first, confident tokens and drops the rest (where the model was unsure), or withholds them for
   the answers it would rather not score: an application that averages them for a confidence
   score or a classifier acts on a number the trace contradicts, and the answer passes as checked.
   Docs/security-parameters.md calls the limit closed ("every reported log-probability is the
   trace's, token by token, in order").
   FIXED: `answer_facts.facts_problem` fails an answer without ``logprobs`` where the signed input
   asked for them and the trace records them; `_logprobs_problem` requires the entries' ``bytes``
   to concatenate to the answer (its UTF-8, read as the tokenizer reads bytes), each ``token`` to
   be its bytes' decoding, and at least `least_span` entries: the recorded tokens the answer spans
   (`chat_facts.spanned`), exact for an answer that is the call's whole text (all tokens but the
   end-of-turn token of a ``stop`` call), and within the bytes a stop string cut off otherwise.
3. LOW — the shared rule misreports the log-probabilities of non-ASCII text
   (`test_defence_the_shared_rule_gives_every_token_of_non_ascii_text_its_bytes`).
   `chat_facts.token_logprobs` cuts each token's text from the decoded prefix: a token ending
   inside a multi-byte character decodes to U+FFFD, so the entry's ``token`` is "\\ufffd" and its
   ``bytes`` those of U+FFFD, the next token's piece is "" and, since the loop stops when the
   decoded prefix (replacement characters counted) reaches the answer's length, the last tokens'
   entries are dropped: for "北京是首都" (10 SmolLM2 tokens) an honest node reports 9 entries
   whose bytes do not spell the answer. OpenAI's contract is that the entries' ``bytes``
   concatenate to the text's UTF-8. It also blocks the natural fix of finding 2 (check the
   entries' bytes against the answer), which would refuse honest CJK or emoji answers today.
   FIXED: each entry carries its token's own bytes (`chat_facts.token_pieces`: the tokenizer's
   byte-level token bytes, `supernet.node.llm.tokenizer.Tokenizer.token_bytes`), cut at the
   answer's end where a stop string cut it (`byte_end`), its ``token`` their (lossy) decoding, one
   entry per token the answer spans (`spanned`); the node's ``logprobs`` (and its ``top_logprobs``
   alternatives) change accordingly.
4. LOW — a user's own store setting costs every paid answer
   (`test_defence_a_store_setting_lacking_the_trace_costs_every_paid_answer`). `SupernetAuth`
   reads the trace only from ``store_url``, else ``$SUPERNET_STORE_URL``, else the node's
   advertised store (auth.py ``self.store_url or info.storeUrl``). README's quick start and
   docs/store.md tell every component to export ``SUPERNET_STORE_URL`` (the user's own store);
   a user with it set, talking to a remote node, has every honest answer fail after the task
   was paid (recorded ``answer_mismatch``), although the node's store holds the trace. Since the
   block is re-hashed against its CID, where it is read from does not matter to the check.
   FIXED: `answer_facts.TraceStore` reads the user's store (over the network) and, where that read
   fails, the node's advertised one (over ``store_transport``, the node's app in this test): at
   most those two reads, within one deadline (`TRACE_READ_TIMEOUT_S` for both;
   `SupernetAuth._trace_store`).

Checked and holding:
* a trace of another task, or the task's trace with another output, committed under the receipt
  (the node signs a receipt naming it): `trace_problem` (`Client.verify`'s checks) fails the answer;
* a store that serves another task's valid trace for the CID: the block is re-hashed, unreadable;
* a stream that ends without ``[DONE]`` still has its facts checked (`_end`); two ``finish_reason``
  chunks fail; a forged fact on the sync client path fails as on the async one;
* a store that drips its answer is bounded by one deadline for the whole read (`StoreClient`'s
  ``asyncio.timeout``, `TRACE_READ_TIMEOUT_S`), not per byte, and the async client's event loop
  keeps running meanwhile (the read is awaited, not run on a blocking call);
* the sync client's per-answer thread ends with the answer (no thread left per request); an honest
  answer, plain or streamed, costs exactly one store read, no retries;
* no false refusal of an honest node: the facts the node derives by the shared rule (real
  tokenizer) pass `facts_problem` for unicode, an empty answer, a token-limit cut, a stop-string
  cut, a tool call and a null (NaN) log-probability;
* the node's behaviour is unchanged by the move: `chat_result` serves the SDK's functions, and the
  moved code (``call_facts_of``, ``finish_reason``, ``token_logprobs``) is the old
  `chat_result` code line for line (read in `git show 3d50003`; the node's answers in
  tests/unit/test_openai_answer_facts.py are unchanged);
* by design (`test_known_limit_a_node_that_commits_false_facts_in_its_trace_passes_the_drop_in`):
  the drop-in proves the facts are those of the trace the node committed, not that the trace is
  true; a trace with a false finish reason or inflated token counts is the validators' to find
  (`validator.llm_check`: finish and shape checks, re-scoring), at the sampling rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from chat_traces import chat_trace
from node_fixtures import FakeNode, forging_answers
from supernet.node.llm.tokenizer import Tokenizer
from supernet.node.service import chat_result
from supernet.node.service.ports import Job, JobResult
from supernet.sdk.chain.eip712 import Domain, TaskRequest
from supernet.sdk.client.answer import AnswerMismatchError, SignedCall
from supernet.sdk.client.state import ClientState
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.formats import chat_facts
from supernet.sdk.formats.chat_facts import call_facts_of, finish_reason, token_logprobs
from supernet.sdk.formats.trace import Trace, example_dag
from supernet.sdk.openai_compat import SupernetAuth, answer_facts
from supernet.sdk.openai_compat.answer_facts import ShownFacts, facts_problem
from supernet.sdk.store.client import STORE_URL_ENV
from supernet.sdk.store.embedded import serve_in_thread

ASGI = Callable[[Any, Any, Any], Awaitable[None]]
MESSAGES: Any = [{"role": "user", "content": "what is the capital of France?"}]
HONEST = "echo: what is the capital of France?"
WORDS = len(HONEST.split(" "))  # the FAKE trace's answer tokens (`chat_traces.chat_trace`)


# -- helpers -------------------------------------------------------------------------------------------


def _store_traces(node: FakeNode, make: Callable[[Job, str], Trace] = chat_trace) -> None:
    """`chat_traces.store_chat_traces`, with the trace ``make`` writes (a node's own choice: it
    signs the receipt naming whatever CID it stores)."""
    run = node.executor.run

    async def traced(result: JobResult, job: Job) -> JobResult:
        if job.agent != "chat":
            return result
        cid = await node.store.put_dag(make(job, result.output).to_dag())
        return dataclasses.replace(result, trace_cid=cid)

    async def run_traced(job: Job, on_token: Any, on_event: Any = None, on_result: Any = None) -> JobResult:
        async def sink(result: JobResult) -> None:
            await on_result(await traced(result, job))

        result = await run(job, on_token, on_event, sink if on_result is not None else None)
        return await traced(result, job)

    node.executor.run = run_traced  # type: ignore[method-assign]


def _client(
    node: FakeNode, state: Path, app: ASGI | None = None, transport: Any = None, **auth: Any
) -> openai.AsyncOpenAI:
    """The async drop-in on the node's app (``app``: a hostile wrapper of it), reading traces from
    the node's own advertised store unless ``auth`` says otherwise."""
    auth.setdefault("store_transport", httpx.ASGITransport(app=node.service.app))
    signer = SupernetAuth(node.user, node.chain.domain, rule=node.chain, state_dir=state, **auth)
    transport = transport or httpx.ASGITransport(app=app or node.service.app)
    http = httpx.AsyncClient(transport=transport, auth=signer, timeout=60)
    return openai.AsyncOpenAI(base_url="http://node/v1", api_key="-", http_client=http, max_retries=0)


def _statuses(state: Path) -> list[str]:
    return sorted(r.status for r in ClientState.open(state).tasks.values())


async def _outcome(call: Awaitable[Any]) -> Any:
    try:
        return await call
    except Exception as exc:
        return exc


def _events(body: bytes) -> list[bytes]:
    return [e for e in body.split(b"\r\n\r\n") if e]


def _join(events: list[bytes]) -> bytes:
    return b"\r\n\r\n".join(events) + b"\r\n\r\n"


def _edit_final(edit: Callable[[dict[str, Any]], None]) -> Callable[[bytes], bytes]:
    """Apply ``edit`` to a plain answer's JSON, or to the stream chunk carrying the proof."""

    def rewrite(body: bytes) -> bytes:
        if body.startswith(b"{"):
            doc = json.loads(body)
            edit(doc)
            return json.dumps(doc).encode()
        events = _events(body)
        for i, event in enumerate(events):
            if event.startswith(b"data: {") and b'"supernet"' in event:
                doc = json.loads(event[6:])
                edit(doc)
                events[i] = b"data: " + json.dumps(doc).encode()
        return _join(events)

    return rewrite


@contextlib.asynccontextmanager
async def _served(app: ASGI) -> AsyncIterator[str]:
    """``app`` on a real local server (tests/unit/test_openai_answer_facts.py): its API base URL."""
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


# -- 1. a stream's facts, held without bound --------------------------------------------------------


class _Pieces(httpx.AsyncByteStream):
    """A body sent piece by piece, counting what the reader took."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces, self.taken = pieces, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces:
            self.taken += 1
            yield piece


class _Relay(httpx.AsyncBaseTransport):
    """The node's operator between its app and the drop-in: a chat answer's body goes out as the
    pieces ``split`` makes of it (``last``: the stream it sent)."""

    def __init__(self, app: ASGI, split: Callable[[bytes], list[bytes]]) -> None:
        self.inner, self.split = httpx.ASGITransport(app=app), split
        self.last: _Pieces | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if request.method != "POST" or not request.url.path.endswith("/chat/completions"):
            return response
        body = await response.aread()
        self.last = _Pieces(self.split(body))
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-length"]
        return httpx.Response(response.status_code, headers=headers, stream=self.last)


FILLERS = 120
ENTRIES = 1000  # ~60 KB a line: under `body_bound` (~262 KB for 4 signed tokens)


def _flood(body: bytes) -> list[bytes]:
    """The honest stream with FILLERS text-free chunks before its last one, each carrying a
    ``logprobs`` of ENTRIES entries (nothing of the text grows)."""
    events = _events(body)
    head = json.loads(events[0][6:])
    entry = {"token": "x", "logprob": -0.1, "bytes": [120], "top_logprobs": []}
    choice = {"index": 0, "delta": {}, "logprobs": {"content": [entry] * ENTRIES}, "finish_reason": None}
    filler = {k: head[k] for k in ("id", "object", "created", "model")} | {"choices": [choice]}
    line = b"data: " + json.dumps(filler).encode() + b"\r\n\r\n"
    final = next(i for i, e in enumerate(events) if b'"supernet"' in e)
    pieces = [e + b"\r\n\r\n" for e in events[:final]] + [line] * FILLERS
    return pieces + [e + b"\r\n\r\n" for e in events[final:]]


async def test_defence_a_streamed_answer_holds_facts_without_bound(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """MEDIUM. Attack: the honest text and proof, and between them text-free chunks whose
    ``logprobs`` objects fill each line almost to `body_bound`, as many as the node likes (6 MB
    here, ~27 times the bound; a real node streams on for ever behind its keep-alive pings). Root
    cause: `answer_check._Answer._stated` appends every chunk's ``logprobs`` and ``usage`` to
    `ShownFacts` (commit 3d50003), counted against no bound (``_grow`` counts the text alone,
    `_bounded` one line), and `facts_problem` runs only at ``[DONE]``. Safe: the drop-in fails the
    answer once what it holds beside the text passes what the signed token limit allows (at most
    one ``logprobs`` entry a signed token, one ``usage`` and one ``finish_reason``), before it has
    read the whole flood. Today it reads and keeps all of it, failing only at the end."""
    _store_traces(fake_node)
    relay = _Relay(fake_node.service.app, _flood)
    ai = _client(fake_node, tmp_path, transport=relay)

    async def read() -> None:
        chunks = await ai.chat.completions.create(
            model="fake-model", messages=MESSAGES, stream=True, max_completion_tokens=4
        )
        async for _ in chunks:
            pass

    got = await _outcome(read())
    assert isinstance(got, AnswerMismatchError), got
    assert relay.last is not None
    taken, sent = relay.last.taken, len(relay.last.pieces)
    assert taken < FILLERS // 4, (
        f"the drop-in read and held {taken} of {sent} pieces (~{taken * ENTRIES} logprobs entries for "
        f"an answer of 4 signed tokens) before failing: {got}"
    )


# -- 2. logprobs for part of the answer ------------------------------------------------------------


def _first_only(doc: dict[str, Any]) -> None:
    logprobs = doc["choices"][0]["logprobs"]
    logprobs["content"] = logprobs["content"][:1]  # the first token's, which is the trace's


def _withheld(doc: dict[str, Any]) -> None:
    doc["choices"][0]["logprobs"] = None


@pytest.mark.parametrize("edit", [_first_only, _withheld], ids=["prefix", "withheld"])
async def test_defence_a_node_reports_logprobs_for_only_part_of_the_answer(
    fake_node: FakeNode, tmp_path: Path, edit: Callable[[dict[str, Any]], None]
) -> None:
    """MEDIUM. Attack: the caller asks for ``logprobs``; the node returns the entry of the first
    token only (its value the trace's), dropping the six others (the trace's -0.25 ... -0.875: the
    less sure part), or no ``logprobs`` at all. An application that averages them (confidence,
    classification) acts on a figure the trace contradicts: -0.125 where the trace's mean is -0.5.
    Root cause: `answer_facts._logprobs_problem` requires at least one entry for a non-empty
    answer and at most the recorded count, not one per answer token, and returns None when none
    are shown (``if not shown``), though the drop-in knows the caller asked. Fix by design: the
    entries must span the answer (their ``bytes`` concatenating to its UTF-8, once the rule gives
    each token its own bytes: finding 3) and number the recorded tokens the answer spans; when
    ``logprobs`` were asked for and the trace records them, an answer without them fails."""
    _store_traces(fake_node)
    honest = _client(fake_node, tmp_path)
    reply = await honest.chat.completions.create(model="fake-model", messages=MESSAGES, logprobs=True)
    assert reply.choices[0].logprobs is not None and len(reply.choices[0].logprobs.content or []) == WORDS
    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, _edit_final(edit)))
    got = await _outcome(ai.chat.completions.create(model="fake-model", messages=MESSAGES, logprobs=True))
    assert isinstance(got, AnswerMismatchError), (
        f"the answer passed with logprobs {getattr(got.choices[0], 'logprobs', None)!r} for an answer "
        f"of {WORDS} recorded tokens"
    )


# -- 3. the shared rule on non-ASCII text ----------------------------------------------------------


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2_dir: Path) -> Tokenizer:
    return Tokenizer(smollm2_dir)


def _facts_of(ids: list[int], finish: str = "stop", logprobs: list[float | None] | None = None) -> Any:
    lps = logprobs if logprobs is not None else [-0.0625 * (i + 1) for i in range(len(ids))]
    event = {**example_dag()["events"][0], "output_ids": ids, "finish_reason": finish, "logprobs": lps}
    return call_facts_of(Trace.from_dag({**example_dag(), "events": [event]}))


@pytest.mark.model
def test_defence_the_shared_rule_gives_every_token_of_non_ascii_text_its_bytes(
    smollm2_tokenizer: Tokenizer,
) -> None:
    """LOW. An honest node's ``logprobs`` for "北京是首都" (10 SmolLM2 tokens, several ending inside
    a character), by `chat_facts.token_logprobs` with the node's real tokenizer: 9 entries, tokens
    "\\ufffd", "", "\\ufffd", "", "是", ... whose ``bytes`` are U+FFFD's, the last token's value
    missing. Root cause: a token's text is cut from the decoded prefix, a partial character decodes
    to U+FFFD (counted as a character by the ``len(text) >= len(content)`` stop). Safe: one entry
    per answer token, each with its value, and the entries' ``bytes`` concatenating to the answer's
    UTF-8 (OpenAI's contract; the fix: each entry's ``bytes`` are its token's own bytes, its
    ``token`` their decoding)."""
    text = "北京是首都"
    ids = smollm2_tokenizer.encode(text)
    facts = _facts_of(ids)
    entries = token_logprobs(smollm2_tokenizer, facts, text)
    assert [e["logprob"] for e in entries] == [-0.0625 * (i + 1) for i in range(len(ids))], entries
    assert b"".join(bytes(e["bytes"]) for e in entries) == text.encode(), [e["token"] for e in entries]


def _call(task_input: Any) -> SignedCall:
    request = TaskRequest("0x" + "11" * 20, "0x" + "22" * 20, b"\7" * 32, bytes(32), bytes(32), 10, 1, 1)
    return SignedCall("0x" + "ab" * 32, request, task_input, Domain(31337, "0x" + "33" * 20))


@pytest.mark.model
@pytest.mark.parametrize(
    ("output", "stop", "finish", "tool", "lps"),
    [
        ("北京是首都 🐱 café", [], "stop", False, None),
        ("", [], "stop", False, None),
        ("Paris is the capital of", [], "length", False, None),
        ("Paris! is the capital", ["!"], "length", False, None),
        ('{"name": "f", "arguments": {"x": "é"}}', [], "stop", True, None),
        ("Paris é", [], "stop", False, [None, -0.5]),
    ],
    ids=["unicode", "empty", "length", "stop-string", "tool-call", "null-logprob"],
)
def test_defence_an_honest_nodes_facts_are_never_refused(
    smollm2_tokenizer: Tokenizer,
    output: str,
    stop: list[str],
    finish: str,
    tool: bool,
    lps: list[float | None] | None,
) -> None:
    """No false refusal: what the node derives by the shared rule with its real tokenizer
    (finish reason, usage, logprobs) passes `facts_problem` on the same trace, for unicode, an
    empty answer (the end-of-turn token only), a token-limit cut, a stop-string cut, a tool call
    and a null (NaN) recorded log-probability."""
    ids = smollm2_tokenizer.encode(output) or [2]  # an empty answer: the end-of-turn token
    doc = {**example_dag(), "output": output}
    event = {**doc["events"][0], "output_ids": ids, "finish_reason": finish}
    event["logprobs"] = lps if lps is not None else [-0.0625 * (i + 1) for i in range(len(ids))]
    doc["events"] = [event]
    facts = call_facts_of(Trace.from_dag(doc))
    assert facts is not None
    content = output.split(stop[0])[0] if stop else output
    logprobs = {"content": token_logprobs(smollm2_tokenizer, facts, content)}
    shown = ShownFacts([finish_reason(facts, bool(stop), tool_call=tool)], [facts.usage()], [logprobs])
    call = _call({"messages": [], "stop": stop} if stop else {"messages": []})
    assert facts_problem(call, output, doc, shown, tool_call=tool) is None


def test_defence_the_node_answers_by_the_moved_rule() -> None:
    """The node imports the SDK's rule, not a copy: its answers cannot drift from the check."""
    assert chat_result.call_facts.__module__ == chat_result.__name__
    assert chat_result.finish_reason is chat_facts.finish_reason
    assert chat_result.token_logprobs is chat_facts.token_logprobs
    assert chat_result.CallFacts is chat_facts.CallFacts


# -- 4. the user's store setting ---------------------------------------------------------------------


async def test_defence_a_store_setting_lacking_the_trace_costs_every_paid_answer(
    fake_node: FakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LOW. A user follows README's quick start / docs/store.md and exports
    ``SUPERNET_STORE_URL`` for its own content store (a real embedded store here), then asks a
    remote node through the drop-in. Root cause: `SupernetAuth.__init__` takes the variable
    over the node's advertised store and `_flow` reads only there; the honest answer is paid,
    then fails (``answer_mismatch``), every time, although the node's store serves the trace. Safe:
    the honest answer passes; the block is re-hashed against the receipt's CID
    (`StoreClient.get_dag`), so falling back to the node's advertised store (or trying both)
    costs the check nothing. Fixed: the user's store is read over the network and lacks the
    trace; the node's advertised store (``store_transport``: the node's app, as `_client` sets it)
    holds it."""
    _store_traces(fake_node)
    url, stop = serve_in_thread(tmp_path / "own-store")
    try:
        monkeypatch.setenv(STORE_URL_ENV, url)
        ai = _client(fake_node, tmp_path / "user")
        got = await _outcome(ai.chat.completions.create(model="fake-model", messages=MESSAGES))
    finally:
        stop()
    assert not isinstance(got, Exception), f"an honest, paid answer failed: {got}"


# -- defences ------------------------------------------------------------------------------------------


def _other_task(job: Job, output: str) -> Trace:
    return dataclasses.replace(chat_trace(job, output), task_id="0x" + "ab" * 32)


def _other_output(job: Job, output: str) -> Trace:
    return dataclasses.replace(chat_trace(job, output), output=output + " and Berlin")


@pytest.mark.parametrize("make", [_other_task, _other_output], ids=["another-task", "another-output"])
async def test_defence_a_receipt_naming_a_trace_of_something_else_fails(
    fake_node: FakeNode, tmp_path: Path, make: Callable[[Job, str], Trace]
) -> None:
    """Attack: the node commits (signs a receipt naming) a valid-looking trace of another task, or
    of this task with another output, whose facts it may choose. Defence: `trace_problem` runs
    `Client.verify`'s checks of the trace against the receipt and the signed request."""
    _store_traces(fake_node, make)
    ai = _client(fake_node, tmp_path)
    got = await _outcome(ai.chat.completions.create(model="fake-model", messages=MESSAGES))
    assert isinstance(got, AnswerMismatchError) and "fails its receipt" in str(got), got


class _OneBlock(httpx.AsyncBaseTransport):
    """A store that answers every read with one block (another task's trace)."""

    def __init__(self, block: bytes) -> None:
        self.block = block

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=self.block)


async def test_defence_a_store_serving_another_tasks_trace_fails(fake_node: FakeNode, tmp_path: Path) -> None:
    _store_traces(fake_node)
    first = await _client(fake_node, tmp_path).chat.completions.create(model="fake-model", messages=MESSAGES)
    cid = (first.model_extra or {})["supernet"]["traceCid"]
    block = await fake_node.store.get_block(cid)
    ai = _client(fake_node, tmp_path, store_transport=_OneBlock(block))
    got = await _outcome(
        ai.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    )
    assert isinstance(got, AnswerMismatchError) and "cannot be read" in str(got), got


def _no_done_say_length(body: bytes) -> bytes:
    body = _edit_final(lambda d: d["choices"][0].update(finish_reason="length"))(body)
    return _join([e for e in _events(body) if e != b"data: [DONE]"])


def _two_finishes(body: bytes) -> bytes:
    events = _events(body)
    head = json.loads(events[0][6:])
    extra = {k: head[k] for k in ("id", "object", "created", "model")}
    extra["choices"] = [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    final = next(i for i, e in enumerate(events) if b'"supernet"' in e)
    return _join([*events[:final], b"data: " + json.dumps(extra).encode(), *events[final:]])


@pytest.mark.parametrize(
    ("rewrite", "why"),
    [(_no_done_say_length, "finish_reason 'length'"), (_two_finishes, "finish_reason 'stop', 'stop'")],
    ids=["no-done", "two-finishes"],
)
async def test_defence_a_streams_end_and_its_finish_chunks_are_checked(
    fake_node: FakeNode, tmp_path: Path, rewrite: Callable[[bytes], bytes], why: str
) -> None:
    _store_traces(fake_node)
    ai = _client(fake_node, tmp_path, forging_answers(fake_node.service.app, rewrite))

    async def read() -> None:
        async for _ in await ai.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True):
            pass

    got = await _outcome(read())
    assert isinstance(got, AnswerMismatchError) and why in str(got), got


@contextlib.contextmanager
def _dripping_store() -> Iterator[str]:
    """A store that answers 200 with a 4 KiB length, then a byte every 0.1 s."""
    done = threading.Event()

    class Drip(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "4096")
            self.end_headers()
            with contextlib.suppress(OSError):
                for _ in range(4096):
                    if done.wait(0.1):
                        return
                    self.wfile.write(b"\0")
                    self.wfile.flush()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Drip)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        done.set()
        server.shutdown()
        server.server_close()


async def test_defence_a_dripping_store_is_bounded_in_all_and_the_loop_runs_on(
    fake_node: FakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Attack: the node's store answers a byte at a time (each within httpx's per-read timeout).
    Defence: one deadline for the whole read (`StoreClient._post_capped`'s ``asyncio.timeout``;
    `TRACE_READ_TIMEOUT_S`, lowered here from 30 s to 1.5 s to keep the test short), and the async
    client's event loop keeps running while it waits (the read is awaited in the caller's loop)."""
    _store_traces(fake_node)
    monkeypatch.setattr(answer_facts, "TRACE_READ_TIMEOUT_S", 1.5)
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.05)
            ticks += 1

    with _dripping_store() as url:
        ai = _client(fake_node, tmp_path, store_url=url, store_transport=None)
        ticker = asyncio.create_task(tick())
        start = time.monotonic()
        got = await _outcome(ai.chat.completions.create(model="fake-model", messages=MESSAGES))
        took = time.monotonic() - start
        ticker.cancel()
    assert isinstance(got, AnswerMismatchError) and "cannot be read" in str(got), got
    assert took < 15, f"the trace read took {took:.1f} s against a 1.5 s deadline"
    assert ticks >= 10, f"the event loop ran {ticks} times in {took:.1f} s: blocked"


def _counting(app: ASGI, seen: list[str]) -> ASGI:
    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/store"):
            seen.append(scope["path"])
        await app(scope, receive, send)

    return wrapped


def _own_threads() -> list[str]:
    pools = ("asyncio_", "AnyIO worker")
    return sorted(t.name for t in threading.enumerate() if not t.name.startswith(pools))


async def test_defence_the_sync_client_costs_one_read_and_no_thread_per_answer(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """The sync ``openai`` client over a real socket: each answer (plain, streamed) reads the
    trace once from the node's advertised store, and the thread that read runs on ends with it."""
    _store_traces(fake_node)
    seen: list[str] = []
    async with _served(_counting(fake_node.service.app, seen)) as url:
        auth = SupernetAuth(fake_node.user, fake_node.chain.domain, rule=fake_node.chain, state_dir=tmp_path)
        sync = openai.OpenAI(base_url=url, api_key="-", http_client=httpx.Client(auth=auth), max_retries=0)

        def ask(stream: bool) -> str:
            if not stream:
                return (
                    sync.chat.completions.create(model="fake-model", messages=MESSAGES)
                    .choices[0]
                    .message.content
                    or ""
                )
            chunks = sync.chat.completions.create(model="fake-model", messages=MESSAGES, stream=True)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()

        before = _own_threads()
        for stream in (False, True, False):
            assert await asyncio.to_thread(ask, stream) == HONEST
        sync.close()
    assert len(seen) == 3, seen
    assert not [t.name for t in threading.enumerate() if t.name.startswith("supernet-trace")]
    assert _own_threads() == before  # asyncio's and anyio's worker pools aside


# -- known limit -------------------------------------------------------------------------------------


def _false_facts(job: Job, output: str) -> Trace:
    trace = chat_trace(job, output)
    call = dataclasses.replace(trace.events[0], finish_reason="length", prompt_ids=tuple(range(1, 901)))
    return dataclasses.replace(trace, events=(call,))


async def test_known_limit_a_node_that_commits_false_facts_in_its_trace_passes_the_drop_in(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """By design: the drop-in proves that ``finish_reason``, ``usage`` and ``logprobs`` are those
    of the trace the node committed (``traceHash``, signed), not that the trace is true. A node that
    records ``length`` for a whole answer and 900 prompt tokens for a 6-word prompt is answered by
    the validators (`validator.llm_check`: the finish reason against the engine's rule, the prompt
    re-rendered and re-scored), at the sampling rate, with its stake; the drop-in hands the answer
    over. What the drop-in closed: a node can no longer state facts it did not commit to."""
    _store_traces(fake_node, _false_facts)
    ai = _client(fake_node, tmp_path)
    reply = await ai.chat.completions.create(model="fake-model", messages=MESSAGES)
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.prompt_tokens == 900
