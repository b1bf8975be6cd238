"""Adversarial review 2 of the OpenAI drop-in (README "OpenAI drop-in": `supernet.sdk.openai_compat`,
the ``openai_client`` factories) and the node's ``POST /v1/chat/completions`` that serves it.

Scope: what the first review (tests/integration/test_review_openai_gateway.py: model coverage, the
answer-to-receipt binding, the task records, an endpoint claiming another node's address, duplicate
keys, relays changing transport fields, a claimed larger bill) did not cover. Tried as (1) a hostile
node, which the drop-in pays with the user's key: can it be paid for what the user did not get, make
the drop-in sign more, hand over parts of an answer nobody checks, or exhaust the user's memory or
deposit; (2) anyone who reaches the node's port without the user's key; (3) a user sending bad input.
Real parts throughout: ``supernet node run`` on a real Anvil with the compiled contracts and the real
default model (`node_fixtures.node_on_anvil`, as tests/integration/test_openai_client.py), the
official ``openai`` package driving the real `SupernetAuth`. A hostile node is the real node behind
an HTTP transport that rewrites what goes in or out (what its operator can run: it holds the node's
key and serves its port), never a stand-in for code under test; a hostile endpoint in the deposit
tests is a tiny HTTP server, which is what such an endpoint is.

Found (all FIXED; each was a failing ``test_attack_*`` or a pinned known limit):
1. MEDIUM, FIXED (the ``id`` first, the facts later) — the answer check covered the text and the
   tool call only: ``finish_reason``, ``usage`` and
   ``logprobs`` go to the caller as the node wrote them, although README/docs/node.md present them
   as read "from the trace" (the record validators check). A node can say ``length`` for an answer
   that ended (or ``stop`` for one cut short), inflate ``usage`` (which applications bill their own
   users by) or hand over log-probabilities of its choosing (used as confidence scores and
   classifiers); it can also answer under another ``id`` than the task's (the id a user hands to
   ``Client.verify`` and the claims). The drop-in passed all of it over a receipt that verifies.
   FIXED for the ``id``: an answer labelled with another id than the signed task's fails
   (`test_defence_a_node_cannot_relabel_an_answer_with_another_task_id`; a body a transport handed
   over already read is now checked at once too). FIXED for the facts
   (`test_defence_a_node_cannot_report_facts_the_trace_does_not_hold`, three cases): once the text
   passed, the drop-in reads the trace the signed receipt names (its CID bound by ``traceHash``,
   from the node's advertised store as `Client.verify` reads it, at most ``MAX_TRACE_BYTES``;
   `answer_facts.TraceStore`), checks it against the receipt with `Client.verify`'s checks,
   derives the three by the node's own rule (`supernet.sdk.formats.chat_facts`, which the node
   now imports) and fails the answer on any difference, a stream at its end; a trace it cannot read
   fails the answer too (`answer_facts.facts_problem`). Still the node's word: the token strings of
   ``logprobs`` (the client has no tokenizer) and the ``top_logprobs`` alternatives (not in a trace).
2. MEDIUM — a parameter the drop-in sends but does not sign (``logit_bias``, penalties, ``n``) is
   honoured only by the node's goodwill: an honest node refuses it (400, README), a node that drops
   it before its API runs the signed input, bills the fee, and the drop-in hands the answer over as
   if the parameter had been applied; no receipt or validator can tell, since the signature never
   covered it (`test_defence_a_parameter_the_drop_in_would_send_unsigned_is_refused_before_signing`).
   FIXED: the drop-in refuses, before it signs, every field neither signed nor without effect
   (`chat_input.unsigned_fields`; ``n: 1`` and zero penalties pass).
3. MEDIUM — ``openai_client(..., deposit=X)`` funds the channel to whatever address the URL's
   ``/v1/node`` names, before the signing rule and without `Client`'s deposit rules: an endpoint
   naming an address that is no active node (which `SupernetAuth` then refuses to pay) gets ``X``
   wei locked until a withdrawal delay passes, and a closing channel is topped up, where the node
   admits no work (`test_defence_the_factory_deposits_only_to_an_active_node`,
   `test_defence_the_factory_never_deposits_into_a_closing_channel`). FIXED: `factory._fund` runs
   `SigningRule.active` and `refuse_closing` first.
4. LOW — a streamed answer's text is kept and passed on without bound until ``[DONE]``: the signed
   ``max_completion_tokens`` caps what an honest answer can hold, yet a node may stream megabytes
   (or stream for ever, with the node's pings keeping the read timeout at bay) and `CheckedStream`
   holds every piece (`_Answer.text`), so a node can grow the user's process without end
   (`test_defence_a_streamed_answer_is_bounded_by_the_signed_token_limit`). FIXED: an answer past
   `answer_check.answer_bound` (1,024 characters a signed token, at least 16 KiB) fails at once.

Checked and holding:
* a caller without a signed request (none, garbage, another shape) gets 401 in the OpenAI error
  shape (``openai`` raises `AuthenticationError`), naming no key, path or internal detail, and
  nothing is billed;
* bad input is refused before anything is billed: an unknown model (the drop-in refuses before it
  signs, no nonce spent), ``n`` > 1, the legacy ``functions``, an unknown field
  (``reasoning_effort``), ``top_logprobs`` without ``logprobs``, a token limit as a string, past
  the node's limit or zero: 4xx in the OpenAI shape, the ``param`` named where there is one;
* no re-send behind the user's back: ``max_retries`` is 0 in the factories and the drop-in never
  fails over to another node, so a timeout or a 5xx is never paid twice by the drop-in itself;
  fees do not grow with tokens (one task fee, signed as ``maxFee`` and checked in the receipt),
  so neither a streamed token count nor ``max_tokens`` moves what is signed;
* read, no test: unauthenticated work before the signature check is the request's typed
  validation and the grammar check of a ``response_format``, bounded (the 64 KiB body limit; an
  in-budget schema compiles in milliseconds); the node bounds connections and slow readers
  (`http_protocol`, ``stream_send_timeout_s``, reviewed in the node-API reviews); a failed task's
  error text (``TypeName: message``, `worker.py`) goes only to the user who paid for it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from node_fixtures import NodeProcess, node_on_anvil
from supernet.node.service.chat_result import CallFacts, call_facts
from supernet.sdk import openai_client
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil, dev_account
from supernet.sdk.chain.deployment import Deployment
from supernet.sdk.client import ReadGrantAuth
from supernet.sdk.client.answer import AnswerMismatchError
from supernet.sdk.client.signable import SigningRule
from supernet.sdk.client.state import ClientState
from supernet.sdk.client.types import ClientError
from supernet.sdk.openai_compat import SupernetAuth
from supernet.sdk.store import StoreClient

pytestmark = [pytest.mark.anvil, pytest.mark.model]

NODE_KEY_INDEX, USER_INDEX, CLOSER_INDEX, LENDER_INDEX = 13, 14, 15, 16
STORY: Any = [{"role": "user", "content": "Write a long story about a cat."}]
CHAT = "/chat/completions"


@dataclass
class Net:
    anvil: Anvil
    contracts: Contracts
    deployment: Path
    node: NodeProcess
    model: str
    state: Path
    store_url: str
    node_address: str


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("openai2")
    key = "0x" + bytes(dev_account(USER_INDEX).key).hex()
    with node_on_anvil(tmp, NODE_KEY_INDEX) as (anvil, contracts, deployment, node):
        state = tmp / "user"
        with openai_client(
            node.url, key, deployment, rpc_url=anvil.url, deposit=10**17, state_dir=state
        ) as ai:
            model = ai.models.list().data[0].id
        store_url = httpx.get(f"{node.url}/v1/node", timeout=30).json()["storeUrl"]
        address = dev_account(NODE_KEY_INDEX).address
        yield Net(anvil, contracts, deployment, node, model, state, store_url, address)


# -- helpers -----------------------------------------------------------------------------------------


Edit = Callable[[bytes], Any]


class HostileNode(httpx.BaseTransport):
    """The network between the drop-in and the real node, run by the node's operator: chat requests
    may be rewritten before the node's API reads them (``edit_request``: the parsed body, edited in
    place) and chat answers after it wrote them (``edit_answer``: the body's bytes to new bytes, or
    to an iterator of byte pieces streamed out one by one). Everything else passes unchanged."""

    def __init__(
        self, edit_request: Callable[[dict[str, Any]], None] | None = None, edit_answer: Edit | None = None
    ) -> None:
        self.inner = httpx.HTTPTransport()
        self.edit_request, self.edit_answer = edit_request, edit_answer

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        chat = request.method == "POST" and request.url.path.endswith(CHAT)
        if chat and self.edit_request is not None:
            body = json.loads(request.read())
            self.edit_request(body)
            headers = [(k, v) for k, v in request.headers.multi_items() if k.lower() != "content-length"]
            request = httpx.Request(request.method, request.url, headers=headers, content=json.dumps(body))
        response = self.inner.handle_request(request)
        if not chat or self.edit_answer is None or response.status_code != 200:
            return response
        raw = response.read()
        response.close()
        out = self.edit_answer(raw)
        skip = ("content-length", "transfer-encoding")
        headers = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in skip]
        if isinstance(out, bytes):
            return httpx.Response(200, headers=headers, content=out)
        return httpx.Response(200, headers=headers, stream=_Pieces(out))

    def close(self) -> None:
        self.inner.close()


class _Pieces(httpx.SyncByteStream):
    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces

    def __iter__(self) -> Iterator[bytes]:
        yield from self.pieces


def _user(index: int = USER_INDEX) -> LocalAccount:
    return dev_account(index)


def drop_in(net: Net, transport: httpx.BaseTransport | None = None) -> openai.OpenAI:
    """The drop-in as `openai_client` builds it (its `SupernetAuth` with the chain's `SigningRule`,
    the module's state directory, no retries), over ``transport``."""
    account = _user()
    contracts = Contracts.connect(net.anvil.url, Deployment.load(net.deployment), account)
    auth = SupernetAuth(account, contracts.domain, rule=SigningRule(contracts), state_dir=net.state)
    http = httpx.Client(auth=auth, transport=transport or httpx.HTTPTransport(), timeout=60)
    return openai.OpenAI(
        base_url=f"{net.node.url}/v1", api_key="-", http_client=cast(Any, http), max_retries=0
    )


def billed(net: Net) -> int:
    """What the node billed the user so far (its own account answer)."""
    user = _user()
    auth = ReadGrantAuth(user, net.node_address, net.contracts.domain)
    r = httpx.get(f"{net.node.url}/v1/accounts/{user.address}", auth=auth, timeout=30)
    assert r.status_code == 200, r.text
    return int(r.json()["billed"])


def trace_facts(net: Net, reply: Any) -> CallFacts:
    """What the task's trace records (usage, finish reason, logprobs): the trace named by the signed
    receipt the drop-in checked, read from the node's store."""
    cid = (reply.model_extra or {})["supernet"]["signedReceipt"]["traceCid"]

    async def read() -> CallFacts | None:
        async with StoreClient(net.store_url, timeout=30) as store:
            return await call_facts(store, cid)

    facts = asyncio.run(read())
    assert facts is not None
    return facts


def outcome(call: Callable[[], Any]) -> Any:
    """The call's value, or the exception it raised (whatever type a fix picks)."""
    try:
        return call()
    except Exception as exc:
        return exc


def _rewrite_plain(edit: Callable[[dict[str, Any]], None]) -> Edit:
    def rewrite(raw: bytes) -> bytes:
        doc = json.loads(raw)
        edit(doc)
        return json.dumps(doc).encode()

    return rewrite


def _events(raw: bytes) -> list[bytes]:
    """The events of an SSE body, each with its own line ends."""
    sep = b"\r\n\r\n" if b"\r\n\r\n" in raw else b"\n\n"
    return [e + sep for e in raw.split(sep) if e.strip()]


# -- 1. facts beside the text: unchecked -------------------------------------------------------------


def _say_stop(doc: dict[str, Any]) -> None:
    doc["choices"][0]["finish_reason"] = "stop"


def _inflate_usage(doc: dict[str, Any]) -> None:
    usage = doc["usage"]
    usage["completion_tokens"] *= 50
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]


def _confident(doc: dict[str, Any]) -> None:
    for entry in doc["choices"][0]["logprobs"]["content"]:
        entry["logprob"] = -0.0001


def _true_finish(reply: Any, facts: CallFacts) -> bool:
    return bool(reply.choices[0].finish_reason == ("length" if facts.finish_reason == "length" else "stop"))


def _true_usage(reply: Any, facts: CallFacts) -> bool:
    return bool(
        reply.usage.model_dump(include={"prompt_tokens", "completion_tokens"})
        == {
            "prompt_tokens": facts.prompt_tokens,
            "completion_tokens": facts.completion_tokens,
        }
    )


def _other_id(doc: dict[str, Any]) -> None:
    doc["id"] = "0x" + "ab" * 32


def _true_id(reply: Any, facts: CallFacts) -> bool:
    return bool(reply.id == (reply.model_extra or {})["supernet"]["signedReceipt"]["receipt"]["requestHash"])


def _true_logprobs(reply: Any, facts: CallFacts) -> bool:
    shown = [t.logprob for t in reply.choices[0].logprobs.content]
    recorded = [-9999.0 if lp is None else lp for lp in facts.logprobs[: len(shown)]]
    return len(shown) > 0 and all(abs(a - b) < 1e-6 for a, b in zip(shown, recorded, strict=True))


def test_defence_a_node_cannot_relabel_an_answer_with_another_task_id(net: Net) -> None:
    """MEDIUM, FIXED (it was the ``id`` case of the test below). A reply's ``id`` is what
    `Client.verify(reply.id)` and the claims read: the drop-in fails an answer labelled with any id
    but the signed task's (`answer_check._Answer.ids`). Also fixed on the way: a body a transport
    handed over already read (httpx serves it from memory, never from the stream) is checked at
    once instead of passing unchecked."""
    ai = drop_in(net, HostileNode(edit_answer=_rewrite_plain(_other_id)))
    try:
        got = outcome(
            lambda: ai.chat.completions.create(model=net.model, messages=STORY, max_completion_tokens=3)
        )
    finally:
        ai.close()
    assert isinstance(got, AnswerMismatchError) and "labelled" in str(got), got


@pytest.mark.parametrize(
    ("edit", "kwargs", "true"),
    [
        (_say_stop, {"messages": STORY, "max_completion_tokens": 3}, _true_finish),
        (_inflate_usage, {"messages": STORY, "max_completion_tokens": 3}, _true_usage),
        (_confident, {"messages": STORY, "max_completion_tokens": 3, "logprobs": True}, _true_logprobs),
    ],
    ids=["finish_reason", "usage", "logprobs"],
)
def test_defence_a_node_cannot_report_facts_the_trace_does_not_hold(
    net: Net, edit: Callable[[dict[str, Any]], None], kwargs: dict[str, Any], true: Callable[..., bool]
) -> None:
    """MEDIUM, FIXED (a known limit until then, pinned here as
    ``test_known_limit_a_node_reports_facts_the_trace_does_not_hold``). Who gains: a node that
    steers what the user's application does with an answer whose text is honest. ``finish_reason``
    ``stop`` for an answer the token limit cut makes the application take a fragment for the whole
    answer (``length`` for a whole one makes it ask again: another paid task); an inflated ``usage``
    is what applications meter and bill their own users by; log-probabilities are used as confidence
    scores and as classifier outputs (a node selling "certain" answers). The drop-in's answer check
    (`answer_check._Answer`, `check_answer`) compared the text and the tool call with the receipt's
    output and read nothing else of the answer: the chunk's and the message's ``finish_reason``,
    ``logprobs`` and the ``usage`` object passed as the node wrote them, while README and
    docs/node.md say they come "from the trace" (the record the validators check). The receipt
    commits to that trace (``traceHash``), so the client can know.

    Fix (by design): the drop-in reads the trace the signed receipt names (its CID bound by
    ``traceHash``, read from the node's store as `Client.verify` does: `answer_facts.TraceStore`),
    derives those facts by the node's own rule (`supernet.sdk.formats.chat_facts`, which
    `chat_result` imports) and fails the answer on any difference (`answer_facts.facts_problem`).
    The control: the same call through an honest network passes, stating the trace's facts."""
    honest = drop_in(net)
    try:
        reply = honest.chat.completions.create(model=net.model, **kwargs)
    finally:
        honest.close()
    assert true(reply, trace_facts(net, reply)), "the honest answer does not state its trace's facts"
    ai = drop_in(net, HostileNode(edit_answer=_rewrite_plain(edit)))
    try:
        got = outcome(lambda: ai.chat.completions.create(model=net.model, **kwargs))
    finally:
        ai.close()
    assert isinstance(got, AnswerMismatchError), f"the drop-in passed the rewritten answer on: {got!r}"
    assert "states what its trace does not" in str(got), got


# -- 2. parameters sent but not signed ---------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [{"logit_bias": {"1": -100}}, {"presence_penalty": 1.5}, {"n": 2}],
    ids=["logit_bias", "presence_penalty", "n"],
)
def test_defence_a_parameter_the_drop_in_would_send_unsigned_is_refused_before_signing(
    net: Net, extra: dict[str, Any]
) -> None:
    """MEDIUM. Who gains: a node paid for answers that ignore what the user asked for. The drop-in
    sends the caller's whole body but signs only what `chat_task_input` keeps (messages, the token
    limit, sampling, stop, logprobs, response_format, tools); README promises that ``n`` > 1,
    penalties and the like are "a 400 naming the parameter, never ignored", which only the node
    decides. A node that strips such a field before its API reads the body runs the signed input
    (its hash is unchanged), bills the fee, and the drop-in passes the answer over: one choice for
    ``n: 2``, no bias where ``logit_bias`` banned tokens (a content filter), no penalty. No receipt
    or validator can tell: the field was never signed.

    Fix (by design): the drop-in refuses, before it signs, any body field that is neither signed
    (`chat_input.PASSED_AS_SENT`, the messages, the token limit) nor a transport field with no
    effect on what runs (``stream``, ``stream_options``, ``user``, ``parallel_tool_calls``, ``n: 1``,
    zero penalties): the node's own `chat_params.chat_plan` rule, run on the client side (or bind
    every field into the signed input, so a node dropping one runs another input)."""
    before = billed(net)

    def strip(body: dict[str, Any]) -> None:
        for key in extra:
            body.pop(key)

    ai = drop_in(net, HostileNode(edit_request=strip))
    try:
        got = outcome(
            lambda: ai.chat.completions.create(
                model=net.model, messages=STORY, max_completion_tokens=3, **extra
            )
        )
    finally:
        ai.close()
    after = billed(net)
    assert isinstance(got, Exception) and after == before, (
        f"the caller asked for {extra}, the node ran without it and billed {after - before} wei, and "
        f"the drop-in handed over {getattr(got, 'choices', got)!r}"
    )


# -- 3. the factory's deposit ------------------------------------------------------------------------


class _Endpoint:
    """An HTTP endpoint answering ``GET /v1/node`` with ``info`` (and nothing else)."""

    def __init__(self, info: dict[str, Any]) -> None:
        body = json.dumps(info).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path == "/v1/node"
                self.send_response(200 if ok else 404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body) if ok else 2))
                self.end_headers()
                self.wfile.write(body if ok else b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        return f"http://127.0.0.1:{self.server.server_port}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def _key(account: LocalAccount) -> str:
    return "0x" + bytes(account.key).hex()


def test_defence_the_factory_deposits_only_to_an_active_node(net: Net, tmp_path: Path) -> None:
    """MEDIUM. Who gains: anyone who gets a user to try a URL (a listing, a typo-squatted name, a
    "free trial" endpoint) locks the user's deposit up; a competitor keeps the user's money away from
    real nodes. ``openai_client(url, key, deployment, deposit=X)`` reads ``address`` from the URL's
    ``/v1/node`` and deposits ``X`` into the channel to it (`factory._fund`) before anything checks
    that address: the signing rule the same factory builds (`SigningRule`: an active node, its
    model registered and checked) then refuses every completion, so nothing can ever be spent there,
    and the deposit only comes back through ``requestWithdrawal`` and the withdrawal delay.
    `Client` checks the rule before any deposit (`Client._prepare_paid`); README's own words for
    the rule are "nothing is deposited or signed for it".

    Fix (by design): the factory deposits only after the rule accepts the node the URL names (the
    node active on chain, its served model registered and checked), as `Client.ensure_deposit` is
    reached only through `_prepare_paid`."""
    lender = dev_account(LENDER_INDEX)
    stranger = Account.create().address  # no node: not registered, no stake
    rule = SigningRule(Contracts.connect(net.anvil.url, Deployment.load(net.deployment), lender))
    with pytest.raises(Exception, match="not an active node"):
        rule.active(stranger)  # what the drop-in will say before every completion
    info = {**httpx.get(f"{net.node.url}/v1/node", timeout=30).json(), "address": stranger}
    with _Endpoint(info) as url:
        got = outcome(
            lambda: openai_client(
                url, _key(lender), net.deployment, rpc_url=net.anvil.url, deposit=10**16, state_dir=tmp_path
            )
        )
    locked = net.contracts.payments.channel(lender.address, stranger).deposited
    assert locked == 0, (
        f"openai_client deposited {locked} wei into a channel to {stranger}, an address that is no active "
        f"node and that the drop-in refuses to pay (factory returned {got!r})"
    )


def test_defence_the_factory_never_deposits_into_a_closing_channel(net: Net, tmp_path: Path) -> None:
    """MEDIUM (same root: `factory._fund` skips `Client`'s deposit rules). A user who asked to
    withdraw from the channel (``requestWithdrawal``) and later builds the drop-in with ``deposit``
    has the factory top the closing channel up: the node admits no work against a closing channel
    (docs/protocol.md "Admission"), so the money only waits for the withdrawal, and every call then
    fails. `Client.ensure_deposit` refuses (`client.refuse_closing`, naming the cancel command).

    Fix (by design): `_fund` runs `refuse_closing` (one rule for every deposit path), and caps
    what it adds as `ensure_deposit` does."""
    closer = dev_account(CLOSER_INDEX)
    first = openai_client(
        net.node.url, _key(closer), net.deployment, rpc_url=net.anvil.url, deposit=10**16, state_dir=tmp_path
    )
    first.close()
    payments = Contracts.connect(net.anvil.url, Deployment.load(net.deployment), closer).payments
    payments.request_withdrawal(net.node_address)
    assert payments.channel(closer.address, net.node_address).closing
    got = outcome(
        lambda: openai_client(
            net.node.url,
            _key(closer),
            net.deployment,
            rpc_url=net.anvil.url,
            deposit=3 * 10**16,
            state_dir=tmp_path,
        )
    )
    deposited = payments.channel(closer.address, net.node_address).deposited
    assert deposited == 10**16, (
        f"openai_client added {deposited - 10**16} wei to a channel that is closing (the node admits "
        f"no work against it), returning {got!r}"
    )


# -- 4. a stream without bound -----------------------------------------------------------------------

PIECE = 8 * 1024
PIECES = 512  # 4 MiB of text for an answer signed for at most 3 tokens


def _flood(raw: bytes) -> Iterator[bytes]:
    """The node's real stream, with 4 MiB of text pushed in after its first event."""
    events = _events(raw)
    sep = b"\r\n\r\n" if events[0].endswith(b"\r\n\r\n") else b"\n\n"
    head = json.loads(events[0].strip().removeprefix(b"data:").strip())
    head["choices"][0]["delta"] = {"content": "A" * PIECE}
    flood = b"data: " + json.dumps(head).encode() + sep
    yield events[0]
    for _ in range(PIECES):
        yield flood
    yield from events[1:]


def test_defence_a_streamed_answer_is_bounded_by_the_signed_token_limit(net: Net) -> None:
    """LOW. Who gains: a node (or anyone on its path) that wants the user's process down, or wants
    its text in front of the user's readers before the check at ``[DONE]``. The answer is signed for
    at most 3 tokens (``max_completion_tokens``, in the signed input); the node streams 4 MiB of
    text and then its honest last chunk. `CheckedStream` passes every piece on and keeps every one
    (`answer_check._Answer.text`) until ``[DONE]``: nothing bounds either, and with the node's
    pings a stream need never end (the read timeout never fires), so one answer grows the user's
    memory without end. The check does fail it at the end, after the caller had it all.

    Fix (by design): the drop-in knows the most an honest answer holds (the signed
    ``max_new_tokens``, else the agent profile's limit, times the longest token a tokenizer decodes
    to, plus the stop-cut leniency) and fails the answer as soon as the streamed text passes it
    (and gives up on a stream past ``api.max_stream_s`` of the node's own rule)."""
    ai = drop_in(net, HostileNode(edit_answer=_flood))
    shown, error = 0, None
    try:
        stream = ai.chat.completions.create(
            model=net.model, messages=STORY, max_completion_tokens=3, stream=True
        )
        for chunk in cast(Any, stream):
            shown += len(chunk.choices[0].delta.content or "") if chunk.choices else 0
    except Exception as exc:
        error = exc
    finally:
        ai.close()
    assert error is not None, "the flooded stream passed the answer check"
    assert shown < 64 * 1024, (
        f"the drop-in passed {shown} characters of an answer signed for 3 tokens before it failed it "
        f"({type(error).__name__}), and held all of them"
    )


# -- holding -----------------------------------------------------------------------------------------


def test_defence_a_caller_without_the_key_gets_an_openai_error_and_spends_nothing(net: Net) -> None:
    """Attack: anyone who reaches the node's port sends completions without the user's signature
    (no header, a garbage header, a header of another shape), hoping for an answer billed to
    someone, or for an error that leaks the node's keys, paths or internals. Defence: 401
    ``bad_signature`` in the OpenAI error shape (``error.message``/``code``, which ``openai`` raises
    as `AuthenticationError`), naming nothing of the node, and nothing billed."""
    before = billed(net)
    plain = openai.OpenAI(base_url=f"{net.node.url}/v1", api_key="sk-anything", max_retries=0)
    with plain, pytest.raises(openai.AuthenticationError) as caught:
        plain.chat.completions.create(model=net.model, messages=STORY, max_completion_tokens=3)
    assert caught.value.code == "bad_signature"
    body = {"model": net.model, "messages": STORY, "max_completion_tokens": 3}
    for header in ("!!!", "e30", "eyJyZXF1ZXN0IjogMX0"):  # not base64url; {}; {"request": 1}
        r = httpx.post(f"{net.node.url}/v1{CHAT}", json=body, headers={"X-Supernet-Auth": header}, timeout=30)
        assert r.status_code == 401, r.text
        error = r.json()["error"]
        assert set(error) >= {"code", "message"} and error["code"] == "bad_signature"
        secrets = ("/tmp", str(net.node.data_dir), "Traceback", bytes(dev_account(NODE_KEY_INDEX).key).hex())
        leaked = [s for s in secrets if s in r.text]
        assert not leaked, (leaked, r.text)
    assert billed(net) == before


BAD: list[tuple[dict[str, Any], str | None]] = [
    ({"model": "gpt-4o"}, None),  # refused by the drop-in before it signs
    ({"n": 2}, "n"),
    ({"extra_body": {"functions": [{"name": "f", "parameters": {"type": "object"}}]}}, "functions"),
    ({"extra_body": {"reasoning_effort": "high"}}, "reasoning_effort"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"max_completion_tokens": "8"}, None),
    ({"max_completion_tokens": 10**6}, None),
    ({"max_completion_tokens": 0}, None),
]


def test_defence_bad_input_is_refused_clearly_and_costs_nothing(net: Net) -> None:
    """Attack (a careless or hostile caller of the user's drop-in): wrong types, limits past the
    node's, an unknown model, fields the node does not support, hoping for a charge without an
    answer or a silently ignored parameter. Defence: each is refused before admission (a 4xx in
    the OpenAI shape naming the ``param`` where there is one; an unknown model by the drop-in before
    anything is signed, no nonce spent) and the node's billed total does not move."""
    ai = drop_in(net)
    before = billed(net)
    nonce_before = _nonce(net)
    try:
        for edit, param in BAD:
            kwargs: dict[str, Any] = {"model": net.model, "messages": STORY, "max_completion_tokens": 3}
            kwargs.update(edit)
            got = outcome(functools.partial(ai.chat.completions.create, **kwargs))
            assert isinstance(got, Exception), (edit, got)
            if edit.get("model") == "gpt-4o":
                assert _nonce(net) == nonce_before, "a nonce was spent on a model the node does not serve"
                continue
            if isinstance(got, ClientError):  # a field the signature would not bind: refused unsigned
                assert param is not None and param in str(got), (edit, got)
                assert _nonce(net) == nonce_before, (edit, "a nonce was spent on a refused request")
                continue
            assert isinstance(got, openai.APIStatusError) and 400 <= got.status_code < 500, (edit, got)
            assert isinstance(got.body, dict) and got.body.get("message"), (edit, got.body)
            if param is not None:
                assert got.param == param, (edit, got.body)
    finally:
        ai.close()
    assert billed(net) == before


def _nonce(net: Net) -> int:
    state = ClientState.open(net.state)
    return max((a.nonce for a in state.accounts.values()), default=0)
