"""Adversarial review: the OpenAI drop-in (`supernet.sdk.openai_compat`: `SupernetAuth`,
`chat_task_input`, the ``openai_client`` factories), the node's ``POST /v1/chat/completions`` that
serves it (`supernet.node.service.routes_chat`), and the SDK parts it uses (the voucher ladder,
read grants, the client state).

Tried as (1) a node that wants to be paid for less work or to hand the user an answer the client
takes without a valid receipt, (2) a relay or another user that wants to spend someone's channel or
replay a signed request, (3) a user that wants service without paying. Real service code on the
FAKE executor and chain of ``tests/node_fixtures.py`` (the node's own logic is what is under test
there), the official ``openai`` package driving the real `SupernetAuth`, and a real Anvil with the
compiled contracts where the chain decides (model coverage). A "lying" or "impersonating" node is an
adversary wrapped around the real app (what an operator can run), never a stand-in for code under
test. Already covered elsewhere and not repeated: single use of a credential, its binding to the
model, deadline and exact body (tests/unit/test_openai_chat_api.py,
tests/unit/test_review_chat_and_scheduling.py), one credential spent once across ``/v1/tasks`` and
the chat route (tests/unit/test_review_node_api3.py), no automatic retries of paid requests.

Found:
1. HIGH, FIXED — the drop-in signed for any model id the node's ``/v1/node`` named: a registered,
   staked node whose served id no validator checks was paid for answers nobody can verify. Now
   `SupernetAuth` takes a signing ``rule`` (`supernet.sdk.client.signable.SigningRule`, which
   `Client` signs by too: active node, model registered by it, validators' quorum); the factories
   read it from the chain (``rpc_url``, default the deployment file's) and refuse to build without one
   (`test_defence_the_drop_in_refuses_a_model_no_validator_checks`).
2. HIGH, FIXED — the drop-in returned whatever text the node sent. Now the node sends the task's
   output and signed receipt with every answer (``supernet.signedReceipt``; a stream's last chunk)
   and `SupernetAuth` checks them as the response is read (`answer_check.CheckedStream`: the receipt
   for the request it signed, the text by `stream_problem`'s rule); a stream raises before its
   ``[DONE]`` (`test_defence_a_node_cannot_hand_the_drop_in_other_text_than_its_receipt_commits`).
3. MEDIUM, FIXED — the drop-in kept no record of the tasks it paid for. Now each signed completion
   is a `TaskRecord` (signed request, input, model, fee) before it is sent, its checked output and
   the node's promise once answered (`test_defence_the_drop_in_keeps_what_verify_and_claims_need`).
4. LOW — an endpoint answering ``/v1/node`` with another node's address:
   (a) FIXED, the ladder lock-out: `rebase` lifts a known account to what the real node proves with
   the user's own voucher, and refuses a ``lastNonce`` >= 2**64
   (`test_defence_an_endpoint_claiming_another_nodes_address_cannot_lock_the_user_out`; the same
   rule ends the lock-out of one key used from two state directories);
   (b) known limit, the read grant it is sent opens the user's account and tasks at the real node
   for the grant's hour
   (`test_known_limit_an_endpoint_claiming_another_nodes_address_gets_a_read_grant_for_it`).

Checked and holding:
* duplicate JSON keys resolve the same way for the signer, the node's typed view and the input it
  runs (last wins everywhere), so no second body hides behind a signature;
* only transport fields are unsigned (``stream``, ``stream_options``, ``user``,
  ``parallel_tool_calls``, ``n: 1``, zero penalties, the spelling of the token limit): a relay
  changing them changes nothing that runs or is billed (known limit, pinned);
* a node that claims a larger billed total cannot raise the voucher the drop-in signs (the ladder
  only goes down; an unknown account needs the user's own voucher as proof);
* read, no test: no user-reachable way found to make a chat task fail (unbilled) after its tokens
  were streamed (deadline, channel and promise bound are checked before the task starts); empty
  stop strings, ``n`` > 1, ``logit_bias`` and non-text parts are refused before admission; text
  parts joined by ``\n`` and the same text as a string are one input, which the model also reads
  alike.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from chain_fixtures import MODEL_ID, NODE_STAKE, Actors
from chat_traces import store_chat_traces
from node_fixtures import FAKE_MODEL_ID, FakeChain, FakeNode, make_fake_node, rewriting_bodies
from supernet.sdk import async_openai_client
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil
from supernet.sdk.client.state import ClientState
from supernet.sdk.client.types import ClientError
from supernet.sdk.devnet.processes import free_port
from supernet.sdk.openai_compat import AUTH_HEADER, SupernetAuth, chat_task_input

FEE = 10**12  # the fake node's task fee
CHAT = "/v1/chat/completions"
ASGI = Callable[[Any, Any, Any], Awaitable[None]]


def _db(node: FakeNode) -> Any:
    assert node.service.ctx is not None
    return node.service.ctx.db


def _tasks(node: FakeNode) -> list[tuple[str, Any]]:
    """(id, stored input) of every stored task, oldest first."""
    with sqlite3.connect(node.service.settings.data_dir / "node.sqlite3") as c:
        rows = c.execute("SELECT id, input FROM tasks ORDER BY created_at, nonce")
        return [(i, json.loads(inp)) for i, inp in rows]


@pytest.fixture(autouse=True)
def _traced(request: pytest.FixtureRequest) -> None:
    """A test's fake node stores each chat task's trace, which the drop-in reads (`chat_traces`)."""
    if "fake_node" in request.fixturenames:
        store_chat_traces(request.getfixturevalue("fake_node"))


def _auth(node: FakeNode, state: Path) -> SupernetAuth:
    """The drop-in's auth, reading the node's store through the node's own app."""
    store = httpx.ASGITransport(app=node.service.app)
    return SupernetAuth(node.user, node.chain.domain, rule=node.chain, state_dir=state, store_transport=store)


def _openai(app: Any, auth: httpx.Auth, host: str = "node") -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), auth=auth)
    return openai.AsyncOpenAI(base_url=f"http://{host}/v1", api_key="-", http_client=http, max_retries=0)


async def _outcome(coro: Awaitable[Any]) -> Any:
    """The coroutine's value, or the exception it raised (whatever type a fix picks)."""
    try:
        return await coro
    except Exception as exc:
        return exc


def _answer_text(r: httpx.Response) -> str:
    """The answer's text, from a plain body or from the chunks of a stream."""
    if not r.headers["content-type"].startswith("text/event-stream"):
        return r.json()["choices"][0]["message"]["content"]
    events = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    chunks = [json.loads(e) for e in events if e != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]).strip()


def _sha(text: str) -> str:
    return "0x" + hashlib.sha256(text.encode()).hexdigest()


# -- 1. model coverage: the drop-in signs ids no validator checks -------------------------------------


@pytest.mark.anvil
async def test_defence_the_drop_in_refuses_a_model_no_validator_checks(
    network: Contracts, actors: Actors, anvil: Anvil, tmp_path: Path
) -> None:
    """HIGH, fixed. Who gains: a node that serves (or pretends to serve) a model no validator holds: its
    receipts are unverifiable (`Verifier` stops before the replay), so it may answer anything and is
    paid by voucher. Attack: the node registers and stakes on chain with its own served id; the
    validators declare the ids they check (`declareCheckedModels`), not that one; a user points
    ``async_openai_client`` (with ``rpc_url``: the SDK has the chain) at the node. `Client` refuses
    such a node before signing ("below the 30% quorum",
    tests/unit/test_review_model_provenance.py); the drop-in signs the id ``/v1/node`` names and
    the node bills the fee.

    Fix (by design): one signing rule for both clients. The factories take the chain (make
    ``rpc_url`` required, or pass `Contracts`), and `SupernetAuth` signs only a model id the node
    registered on chain and validators holding the quorum of stake declared
    (`supernet.sdk.chain.coverage`, as `Client._prepare_paid`), refusing before any nonce or
    voucher is spent."""
    node = await make_fake_node(
        tmp_path / "node", chain=FakeChain(domain=network.domain), batch={"max_size": 2, "max_age_s": 0.2}
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(
        uvicorn.Config(node.service.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    serving = asyncio.create_task(server.serve())
    try:
        operator = node.service.account
        network.w3.provider.make_request("anvil_setBalance", [operator.address, hex(10 * NODE_STAKE)])  # type: ignore[arg-type]
        sm = network.as_account(operator).service_manager
        sm.register_node(url, [bytes.fromhex(FAKE_MODEL_ID[2:])], 1, NODE_STAKE)
        for v in actors.validators:  # every validator checks the registered test model only
            network.as_account(v).service_manager.declare_checked_models([MODEL_ID])
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        ai = async_openai_client(
            url, node.user, network.deployment, rpc_url=anvil.url, state_dir=tmp_path / "u"
        )
        try:
            got = await _outcome(
                ai.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
            )
        finally:
            await ai.close()
        billed = _db(node).billed(node.user.address)
        assert billed == 0 and isinstance(got, Exception), (
            f"the drop-in paid {billed} wei for model {FAKE_MODEL_ID}, which no validator checks "
            f"(answer: {getattr(got, 'choices', got)!r})"
        )
    finally:
        server.should_exit = True
        await serving
        await node.http.aclose()
        await node.service.cleanup()
        await node.store.aclose()


# -- 2. the answer is never checked against the receipt ----------------------------------------------


def _lying(app: ASGI, old: bytes = b"echo", new: bytes = b"ohce") -> ASGI:
    """The node's own app, with the chat answers it sends rewritten (same length: headers hold)."""
    return rewriting_bodies(app, old, new, lambda path: path == CHAT)  # type: ignore[no-any-return]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_defence_a_node_cannot_hand_the_drop_in_other_text_than_its_receipt_commits(
    fake_node: FakeNode, tmp_path: Path, stream: bool
) -> None:
    """HIGH, fixed. Who gains: a node that sells a cheap or steered answer (an ad, a wrong fact, a
    competitor's text) while its trace and receipt stay honest, so no validator ever finds anything:
    the receipt's ``outputHash`` is the real output, the user reads another text. The drop-in's
    `SupernetAuth` never reads the answer, the factory never fetches the receipt
    (``supernet.receipt`` in the reply is only a URL), and a stream is handed to the caller with no
    check at its end (`Client.stream` compares stream and output, `stream_problem`).

    Fix (by design): the node returns its signed receipt (leaf signature, promise) with the answer
    (the non-streamed body's ``supernet`` field, a streamed answer's last event), and the drop-in
    checks it as `check_receipt` does before handing the answer over (``requestHash`` is the digest
    it signed, ``inputHash`` its input, ``outputHash`` the text it returns before the stop cut, the
    node's signature), raising otherwise; a stream raises at its end."""
    app = _lying(fake_node.service.app)
    ai = _openai(app, _auth(fake_node, tmp_path))
    messages: Any = [{"role": "user", "content": "what is the capital of France?"}]

    async def ask() -> str:
        if not stream:
            reply = await ai.chat.completions.create(model="fake-model", messages=messages)
            return reply.choices[0].message.content or ""
        chunks = await ai.chat.completions.create(model="fake-model", messages=messages, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices]).strip()

    got = await _outcome(ask())
    [(task_id, _)] = _tasks(fake_node)
    r = await fake_node.http.get(f"/v1/tasks/{task_id}/receipt")
    assert r.status_code == 200, r.text
    committed = r.json()["receipt"]["outputHash"]
    assert committed == _sha("echo: what is the capital of France?")  # the node ran it honestly
    assert _db(fake_node).billed(fake_node.user.address) == FEE  # and was paid
    assert not isinstance(got, str) or _sha(got) == committed, (
        f"the drop-in handed over {got!r}, which the receipt of the paid task does not commit to"
    )


# -- 3. nothing is kept to verify or claim with -----------------------------------------------------


async def test_defence_the_drop_in_keeps_what_verify_and_claims_need(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """MEDIUM, fixed. Who gains: a node that takes a drop-in user's vouchers and never commits the
    receipts (no sampling, no challenge can reach them) or runs them under a fraud verdict's
    refund. Against a `Client` user the omission is a slash (`Client.claim_omission` with the
    promise `verify` kept) and a fraud verdict pays a refund to the request's signer
    (`Client.claim_refunds`, which finds tasks by the signed request it stored). The drop-in shares
    the state directory but stores no `TaskRecord` for a completion it paid: the signed request is
    gone once sent, so neither claim can be made, and `Client.verify(id)` without ``node_url`` says
    "not in this client's state".

    Fix (by design): `SupernetAuth` records each signed completion in the shared state as
    `Client.prepare` does (node, URL, input, model id, fee, the signed ``request``), marks it
    answered with the output, and keeps the node's promise once the receipt is checked (finding 2),
    so `Client.verify`, ``claim_omission`` and ``claim_refunds`` work for drop-in tasks."""
    ai = _openai(
        fake_node.service.app,
        _auth(fake_node, tmp_path),
    )
    reply = await ai.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content == "echo: hi"
    assert _db(fake_node).billed(fake_node.user.address) == FEE
    record = ClientState.open(tmp_path).tasks.get(reply.id)
    assert record is not None and record.request is not None, (
        f"paid task {reply.id} left no record (signed request, node, input) in the client state"
    )


# -- 4. an endpoint claiming another node's address --------------------------------------------------


class _Impersonator(httpx.AsyncBaseTransport):
    """Host ``node``: the real node. Host ``evil``: an endpoint that copies the real node's
    ``/v1/node`` (its address, domain, fee, agents), answers the user's account with ``account``,
    keeps the read grants it is sent, and fails every completion with a 500."""

    def __init__(self, node: FakeNode, account: dict[str, Any]) -> None:
        self.real = httpx.ASGITransport(app=node.service.app)
        self.account = account
        self.grants: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "node" or request.url.path == "/v1/node":
            return await self.real.handle_async_request(request)
        if request.url.path.startswith("/v1/accounts/"):
            self.grants.append(request.headers.get("X-Supernet-Read", ""))
            user = request.url.path.rsplit("/", 1)[1]
            return httpx.Response(200, json={"user": user, "redeemed": "0", **self.account})
        return httpx.Response(500, json={"error": {"code": "internal", "message": "try again"}})


def _two_hosts(node: FakeNode, tmp_path: Path, account: dict[str, Any]) -> tuple[Any, Any, _Impersonator]:
    transport = _Impersonator(node, account)
    http = httpx.AsyncClient(
        transport=transport,
        auth=_auth(node, tmp_path),
    )
    real, evil = (
        openai.AsyncOpenAI(base_url=f"http://{h}/v1", api_key="-", http_client=http, max_retries=0)
        for h in ("node", "evil")
    )
    return real, evil, transport


async def _say(ai: openai.AsyncOpenAI, text: str) -> str | None:
    reply = await ai.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": text}])
    return reply.choices[0].message.content


@pytest.mark.parametrize(
    "account",
    [{"lastNonce": 0, "billed": "0"}, {"lastNonce": 2**256 - 1, "billed": "0"}],
    ids=["billed-zero", "nonce-at-the-top"],
)
async def test_defence_an_endpoint_claiming_another_nodes_address_cannot_lock_the_user_out(
    fake_node: FakeNode, tmp_path: Path, account: dict[str, Any]
) -> None:
    """LOW, fixed. Who gains: a competitor (or anyone who gets a user to try its URL) locks the user out of
    a node it wants them off. Attack: the user's drop-in has paid the real node twice; one call to an
    endpoint whose ``/v1/node`` is a copy of the real node's makes `SupernetAuth` re-base the
    persisted ladder of the real node's *address* on the impersonator's ``/v1/accounts``:
    ``billed`` 0 lowers the cumulative total, and `rebase` never raises a known account again
    (only a first contact may climb, to the user's own proven voucher), so every later voucher to
    the real node is below its billed total and refused; a ``lastNonce`` of 2**256-1 leaves no
    nonce to sign. The state directory is shared (``~/.supernet``), so `Client` is locked out too.
    The same happens with no attacker when one key's ladder is kept in two state directories.

    Fix (by design): (a) bind an endpoint to the address it claims before trusting its account
    answer: the address registered on chain for that endpoint, or the node's signature over a
    fresh challenge naming the URL; (b) let `rebase` raise a known account to what the node proves
    with the user's own voucher (``proven_cumulative``, as a first contact does) and refuse a
    ``lastNonce`` no request can follow."""
    real, evil, _ = _two_hosts(fake_node, tmp_path, account)
    assert [await _say(real, "one"), await _say(real, "two")] == ["echo: one", "echo: two"]
    assert isinstance(await _outcome(_say(evil, "hello")), Exception)  # the impersonator's 500
    assert _db(fake_node).billed(fake_node.user.address) == 2 * FEE
    after = await _outcome(_say(real, "three"))
    assert after == "echo: three", f"the real node is unusable after one call elsewhere: {after!r}"


async def test_known_limit_an_endpoint_claiming_another_nodes_address_gets_a_read_grant_for_it(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """Known limit (LOW). Whoever runs an endpoint the user points the drop-in at, copying a real
    node's ``/v1/node``, reads for the grant's hour what the real node answers only to this user:
    its account (nonce and billed total) and its tasks' outputs and receipts before they reach a
    public trace. `SupernetAuth` (and `Client` with a ``node_url``) signs a `ReadGrant` for the
    address the endpoint claims. Nothing is paid or signed for a task there (the completion fails,
    the ladder is unharmed: the test above), and the user chose the URL. Fix: bind an endpoint to
    the address it claims before any grant goes to it (the endpoint registered on chain for that
    address, or the node's signature over a fresh challenge naming the URL it was reached at; the
    first breaks users behind a proxy of their own, the second needs a node-side route). Pinned:
    the grant opens the real node's task."""
    real, evil, spy = _two_hosts(fake_node, tmp_path, {"lastNonce": 0, "billed": "0"})
    assert await _say(real, "secret plans") == "echo: secret plans"
    await _outcome(_say(evil, "hello"))
    [grant] = spy.grants
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake_node.service.app), base_url="http://node"
    ) as stranger:
        [(task_id, _)] = _tasks(fake_node)
        read = await stranger.get(f"/v1/tasks/{task_id}", headers={"X-Supernet-Read": grant})
    assert read.status_code == 200 and read.json()["output"] == "echo: secret plans"


# -- holding ---------------------------------------------------------------------------------------


async def test_defence_duplicate_keys_resolve_alike_for_signer_node_and_run(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """Attack: a body with two ``messages`` and two ``stop`` keys, hoping the signer hashes one and
    the node (its typed view, or the input it runs) reads the other. Defence: `SupernetAuth`, the
    node's typed parsing and its raw re-read are all Python JSON (the last key wins), so what is
    signed, checked and run is one body; the first values are simply not there."""
    auth = _auth(fake_node, tmp_path)
    raw = (
        '{"model": "fake-model", "messages": [{"role": "user", "content": "benign"}],'
        ' "stop": "zz", "messages": [{"role": "user", "content": "hidden"}], "stop": "qq"}'
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=fake_node.service.app), base_url="http://node", auth=auth
    ) as http:
        r = await http.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: hidden"
    [(_, stored)] = _tasks(fake_node)
    assert (
        stored
        == chat_task_input(json.loads(raw))
        == {
            "messages": [{"role": "user", "content": "hidden"}],
            "stop": "qq",
        }
    )


@pytest.mark.parametrize(
    "edit",
    [
        {"stream": True},
        {"stream_options": {"include_usage": True}, "stream": True},
        {"user": "someone-else"},
        {"parallel_tool_calls": False},
        {"n": 1, "presence_penalty": 0, "frequency_penalty": 0},
        {"max_tokens": 8},  # the signed body said max_completion_tokens: 8
    ],
    ids=["stream", "usage", "user", "parallel", "no-ops", "limit-spelling"],
)
async def test_known_limit_a_relay_may_change_transport_fields_only(
    fake_node: FakeNode, edit: dict[str, Any]
) -> None:
    """A relay holding a signed credential may change the fields the signature does not cover
    before the node sees it: ``stream`` and ``stream_options`` (how the answer travels), ``user``,
    ``parallel_tool_calls`` (at most one call per reply whatever it says), no-op ``n`` and
    penalties, and which of the two names carries the token limit. Acceptable: none of them
    changes the input that runs, what is billed, or the answer's text; the relay could as well
    rewrite the response it carries (finding 2 is what binds the answer). Pinned: the edited
    request is admitted and runs exactly the signed input."""
    body = {
        "model": "fake-model",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 8,
    }
    signed = fake_node.body(chat_task_input(body), cumulative=FEE)
    token = {k: signed[k] for k in ("request", "signature", "voucher")}
    header = {AUTH_HEADER: base64.urlsafe_b64encode(json.dumps(token).encode()).decode().rstrip("=")}
    sent = {k: v for k, v in body.items() if not ("max_tokens" in edit and k == "max_completion_tokens")}
    r = await fake_node.http.post(CHAT, json={**sent, **edit}, headers=header)
    assert r.status_code == 200, r.text
    assert _answer_text(r) == "echo: hi"
    assert [i for _, i in _tasks(fake_node)] == [chat_task_input(body)]
    assert _db(fake_node).billed(fake_node.user.address) == FEE


async def test_defence_a_node_claiming_a_larger_bill_cannot_raise_the_voucher(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """Attack: an endpoint (here answering with the real node's identity) says the user was billed
    a million fees, hoping the drop-in signs a voucher on top that the real node can redeem.
    Defence: for an account the state knows, `rebase` only lowers the total (the call signs at most
    state + fee); for one it does not know, ``billed`` needs the user's own voucher as proof and the
    call is refused before anything is signed (`ClientError`)."""
    real, evil, _ = _two_hosts(fake_node, tmp_path, {"lastNonce": 0, "billed": str(10**6 * FEE)})
    refused = await _outcome(_say(evil, "first contact"))
    assert isinstance(refused, ClientError) and "prove" in str(refused), refused
    assert ClientState.open(tmp_path).accounts == {}
    assert await _say(real, "one") == "echo: one"
    await _outcome(_say(evil, "known account"))  # signs one fee on top of the state's total at most
    key = next(iter(ClientState.open(tmp_path).accounts))
    assert ClientState.open(tmp_path).accounts[key].cumulative <= 2 * FEE
