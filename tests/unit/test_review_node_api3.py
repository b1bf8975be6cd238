"""Adversarial review (third pass) of the node's HTTP surface: request shapes that break the
project's rules ("bad input gets a clear error and changes nothing", "state that matters is
persisted before it is acknowledged", "authenticate every paid request by signature").

``test_known_limit_*`` pass while the problem exists (each asserts today's bad outcome and says
in its docstring what goes wrong, who is harmed and the fix); ``test_defence_*`` assert an attack
the code already defeats. All run on the in-process app over the FAKE executor and chain of
``tests/node_fixtures.py`` (fast, no model, no socket).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from eth_account import Account
from supernet.node.service.auth import UNFUNDED_CHANNEL_TTL_S
from supernet.sdk.chain.eip712 import Voucher, sign_voucher
from supernet.sdk.chain.payments import Channel
from supernet.sdk.client.read_grant import READ_HEADER, sign_read_grant

from tests.node_fixtures import FakeNode, signed_task, until_held

FEE = 10**12


def _stranger(node: FakeNode) -> httpx.AsyncClient:
    """A client with no read grant that sees the node's 500s as a real HTTP peer would (no
    exception re-raised into the test)."""
    assert node.service.app is not None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node.service.app, raise_app_exceptions=False),
        base_url="http://node",
    )


def _db(node: FakeNode) -> Any:
    assert node.service.ctx is not None
    return node.service.ctx.db


async def _done_task(node: FakeNode, text: str, cumulative: int) -> str:
    resp = await node.http.post("/v1/tasks", json=node.body(text, cumulative=cumulative))
    assert resp.status_code == 202, resp.text
    tid = str(resp.json()["id"])
    assert node.service.ctx is not None
    await node.service.ctx.worker.wait(tid)
    return tid


# -- known limits -----------------------------------------------------------------------------------


async def test_defence_a_non_ascii_digit_in_a_read_grant_is_a_clean_401_on_every_read_route(
    fake_node: FakeNode,
) -> None:
    """Attack (found by this review, fixed): `verify_read_grant` checked the expiry with
    ``str.isdigit()``, True for the Latin-1 superscripts (an HTTP header is decoded as Latin-1, so
    one byte 0xB2 was enough), then ``int()`` raised a plain ``ValueError`` that escaped as an
    unformatted 500 on ``GET /v1/tasks/{id}``, ``/receipt``, ``/events`` and ``/audit``: anyone
    could turn any public task id into server errors and log floods. Defence: ASCII digits only,
    a malformed grant is the documented 401."""
    tid = await _done_task(fake_node, "hello", FEE)
    header = fake_node.user.address.encode() + b":\xb2:0x" + b"11" * 65
    async with _stranger(fake_node) as anon:
        for path in ("", "/receipt", "/events", "/audit"):
            resp = await anon.get(f"/v1/tasks/{tid}{path}", headers={READ_HEADER.encode(): header})
            assert resp.status_code == 401, (path, resp.status_code, resp.text)
            assert resp.json()["error"]["code"] == "unauthorized"
        # an ASCII non-number in the same place is the clean 401 the docs promise
        ascii_bad = fake_node.user.address.encode() + b":x1:0x" + b"11" * 65
        resp = await anon.get(f"/v1/tasks/{tid}", headers={READ_HEADER.encode(): ascii_bad})
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"


async def test_defence_chat_logprobs_never_hide_a_billed_answer(fake_node: FakeNode) -> None:
    """Attack (found by this review, fixed): ``POST /v1/chat/completions`` with ``logprobs: true``
    admitted, ran and billed the task, then read the trace for the log-probabilities; when the
    trace could not be read (a store outage; here the FAKE executor's trace is not in the store)
    it answered ``500 internal`` with no task id: a paid answer lost, a retry a replay or a second
    fee. Defence: the answer goes out with ``"logprobs": null`` (and a warning in the node's log)."""
    messages = [{"role": "user", "content": "hi"}]
    signed = fake_node.body({"messages": messages, "logprobs": True}, cumulative=FEE)
    auth = {k: signed[k] for k in ("request", "signature", "voucher")}
    chat = {"model": "fake-model", "messages": messages, "logprobs": True, "supernet": auth}
    async with _stranger(fake_node) as client:
        resp = await client.post("/v1/chat/completions", json=chat)
    assert resp.status_code == 200, resp.text
    (choice,) = resp.json()["choices"]
    assert choice["message"]["content"] and choice["logprobs"] is None
    db = _db(fake_node)
    assert db.count_by_status() == {"done": 1}
    assert db.billed(fake_node.user.address) == FEE  # and is billed
    assert db.last_nonce(fake_node.user.address) == int(signed["request"]["nonce"])


async def test_known_limit_every_fresh_unfunded_key_costs_the_node_a_chain_read(fake_node: FakeNode) -> None:
    """What goes wrong: admission (`Authenticator._channel`) reads the user's payment channel from
    the chain (`Web3Chain.channel`: one ``eth_call`` on a worker thread) for every request from a
    key it has not read lately whose signatures are valid. Keys are free: a fresh key signing
    nonce 0 with a voucher of exactly one fee passes every check before the chain read, so each
    request of a flood of fresh keys costs the node one RPC round trip, and is then refused 402.

    Who is harmed: the operator and every honest user. The node's RPC quota (a hosted provider's
    rate limit) and its thread pool are shared with the batcher, the redeemer and the availability
    responder. Bounded since earlier reviews: at most `MAX_ADMISSION_CHAIN_READS` run at once and
    a request past them is a 503
    (`test_defence_a_flood_of_unfunded_signers_holds_few_chain_reads_at_once`), so the flood
    cannot take the threads the batcher needs. Closed by this session: one unfunded key repeating
    itself cost a read per request; a channel with nothing ever deposited now answers the same
    user's requests for `UNFUNDED_CHANNEL_TTL_S` without a read, and a first deposit made since is
    seen after it (a top-up of a funded channel at once, as before). What stays: a read per fresh
    key (nothing can tell a fresh key's channel without reading it). Fix: price admission for keys
    with no history (a proof of work, or a per-source rate limit in front of the node).
    """
    calls: list[str] = []
    real = fake_node.chain.channel

    async def counting(user: str) -> Channel:
        calls.append(user)
        return await real(user)

    fake_node.chain.channel = counting  # type: ignore[method-assign]
    node, domain = fake_node.address, fake_node.chain.domain
    statuses = []
    for _ in range(8):  # eight fresh keys, no deposit
        body = signed_task(Account.create(), node, domain, "hi", cumulative=FEE, nonce=0)
        statuses.append((await fake_node.http.post("/v1/tasks", json=body)).status_code)
    repeat = Account.create()
    for nonce in range(8):  # one unfunded key, again and again
        body = signed_task(repeat, node, domain, "hi", cumulative=FEE, nonce=nonce)
        statuses.append((await fake_node.http.post("/v1/tasks", json=body)).status_code)
    assert statuses == [402] * 16
    assert len(calls) == 8 + 1  # a read per fresh key; the repeating key read once
    assert calls.count(repeat.address) == 1
    assert _db(fake_node).task_count() == 0  # (refused cleanly: nothing stored)

    # a deposit made since is seen once the negative answer is older than its TTL
    fake_node.chain.deposits[repeat.address] = 10 * FEE
    body = signed_task(repeat, node, domain, "hi", cumulative=FEE, nonce=8)
    assert (await fake_node.http.post("/v1/tasks", json=body)).status_code == 402  # still remembered
    assert calls.count(repeat.address) == 1
    assert fake_node.service.ctx is not None
    short = fake_node.service.ctx.auth._unfunded
    at, entry = short[repeat.address]
    short[repeat.address] = (at - UNFUNDED_CHANNEL_TTL_S, entry)  # as if the TTL had passed
    body = signed_task(repeat, node, domain, "hi", cumulative=FEE, nonce=9)
    resp = await fake_node.http.post("/v1/tasks", json=body)
    assert resp.status_code == 202, resp.text
    assert calls.count(repeat.address) >= 2 and repeat.address not in short  # read again: admitted


async def test_defence_a_chain_outage_at_admission_is_a_retryable_503(fake_node: FakeNode) -> None:
    """Attack (found by this review, fixed): an RPC failure while admission read the user's
    payment channel escaped as a bare ``500 Internal Server Error`` in text/plain. Defence: it is
    ``503 busy`` in the error format with ``Retry-After`` (retry as it is), and nothing is stored."""

    async def down(user: str) -> Channel:
        raise ConnectionError("rpc unreachable")

    fake_node.chain.channel = down  # type: ignore[method-assign]
    body = fake_node.body("hello", cumulative=FEE)
    async with _stranger(fake_node) as client:
        resp = await client.post("/v1/tasks", json=body)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "busy", resp.text
    assert resp.headers["retry-after"] == "1"
    db = _db(fake_node)
    assert db.task_count() == 0 and db.last_nonce(fake_node.user.address) == -1  # nothing written


async def test_defence_an_oversized_chunked_body_is_a_413(fake_node: FakeNode) -> None:
    """Attack (found by this review, fixed): a body sent chunked (no ``Content-Length``) over
    ``api.max_body_bytes`` raised inside FastAPI's body parsing, which turns any error into
    ``400 "There was an error parsing the body"``. Defence: the limit's error is an HTTP 413
    exception FastAPI passes on: ``413 too_large`` as with a declared length; nothing stored."""

    async def chunks() -> Any:
        for _ in range(100):  # 100 KiB > the 64 KiB default limit, with no Content-Length
            yield b"x" * 1024

    for path in ("/v1/tasks", "/v1/chat/completions"):
        resp = await fake_node.http.post(path, content=chunks(), headers={"content-type": "application/json"})
        assert resp.status_code == 413, (path, resp.text)
        assert resp.json()["error"]["code"] == "too_large"
    big = b"x" * (100 * 1024)  # the same body with its length declared: the documented answer
    resp = await fake_node.http.post("/v1/tasks", content=big, headers={"content-type": "application/json"})
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "too_large"
    assert _db(fake_node).task_count() == 0


async def test_defence_only_the_user_reads_their_account(fake_node: FakeNode) -> None:
    """Attack (found by this review, fixed): ``GET /v1/accounts/{user}`` needed no authentication,
    so any stranger who knows an address (it is in every public trace and on chain) could poll it
    and see, live, each task the user submits (``lastNonce`` moves at admission), what they spend
    (``billed`` includes tasks still running) and their latest voucher signature. Defence: the
    account answers only the user's own read grant (401 without one, 403 for another user's);
    the SDK client and ``SupernetAuth`` send theirs."""
    victim = fake_node.user.address
    node, domain = fake_node.address, fake_node.chain.domain
    spy = Account.create()
    async with _stranger(fake_node) as http:
        none = await http.get(f"/v1/accounts/{victim}")
        assert none.status_code == 401 and none.json()["error"]["code"] == "unauthorized"
        other = {READ_HEADER: sign_read_grant(spy, node, domain).header()}
        theirs = await http.get(f"/v1/accounts/{victim}", headers=other)
        assert theirs.status_code == 403 and theirs.json()["error"]["code"] == "forbidden"
        fake_node.executor.gate = asyncio.Event()  # a task still running
        resp = await fake_node.http.post("/v1/tasks", json=fake_node.body("secret errand", cumulative=FEE))
        assert resp.status_code == 202
        own = {READ_HEADER: sign_read_grant(fake_node.user, node, domain).header()}
        mine = (await http.get(f"/v1/accounts/{victim}", headers=own)).json()
        fake_node.executor.gate.set()
    assert mine["lastNonce"] == int(resp.json()["nonce"]) and mine["billed"] == str(FEE)


# -- defences ---------------------------------------------------------------------------------------


async def test_defence_a_published_voucher_signature_is_not_a_read_grant(fake_node: FakeNode) -> None:
    """A ``Voucher(user, node, cumulativeAmount)`` has the same field types, in the same order, as a
    ``ReadGrant(user, node, expiry)``, and a voucher signature is no secret (``GET
    /v1/accounts/{user}`` used to hand it to anyone; the node redeems it on chain). A voucher
    whose amount happens to be a near-future unix time would make a valid-looking grant
    ``user:amount:sig``; the EIP-712 type name (different type hash) is what keeps it from
    opening the user's results."""
    tid = await _done_task(fake_node, "private", FEE)
    user, node, domain = fake_node.user, fake_node.address, fake_node.chain.domain
    amount = int(time.time()) + 600  # a voucher amount that reads as an expiry ten minutes ahead
    sig = sign_voucher(Voucher(user=user.address, node=node, cumulative_amount=amount), domain, user)
    forged = f"{user.address}:{amount}:0x{sig.hex()}"
    real = sign_read_grant(user, node, domain).header()
    async with _stranger(fake_node) as anon:
        for path in ("", "/receipt", "/events", "/audit"):
            resp = await anon.get(f"/v1/tasks/{tid}{path}", headers={READ_HEADER: forged})
            assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized", path
        assert (await anon.get(f"/v1/tasks/{tid}", headers={READ_HEADER: real})).status_code == 200


async def test_defence_one_signed_request_is_spent_once_across_the_task_and_chat_endpoints(
    fake_node: FakeNode,
) -> None:
    """The same signed `TaskRequest` authenticates ``POST /v1/tasks`` (agent ``chat``, a chat-shaped
    input) and ``POST /v1/chat/completions`` (the input computed from the body): whoever sees it
    (a proxy, the public trace) cannot spend it on the other endpoint for a second run. Its id is
    the request hash, so the second submission is a 409 replay and the user is billed once."""
    messages = [{"role": "user", "content": "hello twice"}]
    signed = fake_node.body({"messages": messages}, cumulative=FEE)
    first = await fake_node.http.post("/v1/tasks", json=signed)
    assert first.status_code == 202, first.text
    auth = {k: signed[k] for k in ("request", "signature", "voucher")}
    chat = {"model": "fake-model", "messages": messages, "supernet": auth}
    again = await fake_node.http.post("/v1/chat/completions", json=chat)
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "replay" and again.json()["error"]["taskId"] == first.json()["id"]
    assert _db(fake_node).task_count() == 1 and _db(fake_node).billed(fake_node.user.address) == FEE


async def test_defence_deeply_nested_inputs_are_refused_cleanly_and_store_nothing(
    fake_node: FakeNode,
) -> None:
    """Inputs nested thousands deep (dicts and lists, within the body limit) reach the canonical
    encoder and the hash check without a ``RecursionError`` escaping as a 500: each is a 4xx in
    the error format and nothing is stored."""
    signed = fake_node.body("placeholder", cumulative=FEE)
    raw = json.dumps(signed)
    for depth, (open_, close) in ((900, ('{"a":', "}")), (2500, ('{"a":', "}")), (2500, ("[", "]"))):
        deep = open_ * depth + '"x"' + close * depth
        body = raw.replace('"input": "placeholder"', f'"input": {{"deep": {deep}}}', 1)
        async with _stranger(fake_node) as client:
            resp = await client.post("/v1/tasks", content=body, headers={"content-type": "application/json"})
        assert 400 <= resp.status_code < 500, (depth, resp.status_code, resp.text[:200])
        assert "error" in resp.json()
    assert _db(fake_node).task_count() == 0 and _db(fake_node).last_nonce(fake_node.user.address) == -1


async def test_defence_another_users_grant_opens_no_audit_of_the_task(fake_node: FakeNode) -> None:
    """``/audit`` (the agent's access decisions: tools, memory, files) is behind the same owner check
    as the task, receipt and stream: a valid grant of another user is 403 and shows no entry; no
    grant is 401."""
    tid = await _done_task(fake_node, "audited", FEE)
    other = sign_read_grant(Account.create(), fake_node.address, fake_node.chain.domain).header()
    async with _stranger(fake_node) as anon:
        resp = await anon.get(f"/v1/tasks/{tid}/audit", headers={READ_HEADER: other})
        assert resp.status_code == 403 and resp.json()["error"]["code"] == "forbidden"
        assert (await anon.get(f"/v1/tasks/{tid}/audit")).status_code == 401
    assert (await fake_node.http.get(f"/v1/tasks/{tid}/audit")).status_code == 200


async def test_defence_a_flood_of_unfunded_signers_holds_few_chain_reads_at_once(fake_node: FakeNode) -> None:
    """Concurrent requests from fresh keys while the chain is slow: at most
    `MAX_ADMISSION_CHAIN_READS` channel reads are in flight; the rest are refused at once with a
    retryable 503 instead of queueing on the node's threads and RPC quota."""
    from supernet.node.service.auth import MAX_ADMISSION_CHAIN_READS

    in_flight, peak = 0, 0
    release = asyncio.Event()
    real = fake_node.chain.channel

    async def slow(user: str) -> Channel:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await release.wait()
        in_flight -= 1
        return await real(user)

    fake_node.chain.channel = slow  # type: ignore[method-assign]
    node, domain = fake_node.address, fake_node.chain.domain
    bodies = [signed_task(Account.create(), node, domain, "hi", cumulative=FEE, nonce=0) for _ in range(20)]
    sent = [asyncio.ensure_future(fake_node.http.post("/v1/tasks", json=b)) for b in bodies]
    done, pending = await until_held(sent, MAX_ADMISSION_CHAIN_READS)  # the reads past the bound end
    assert len(pending) == MAX_ADMISSION_CHAIN_READS and len(done) == 20 - MAX_ADMISSION_CHAIN_READS
    release.set()
    statuses = sorted(r.status_code for r in await asyncio.gather(*sent))
    assert peak == MAX_ADMISSION_CHAIN_READS
    assert statuses == [402] * MAX_ADMISSION_CHAIN_READS + [503] * (20 - MAX_ADMISSION_CHAIN_READS)
    assert _db(fake_node).task_count() == 0


async def test_defence_a_flood_of_fresh_keys_does_not_turn_a_paying_user_away(fake_node: FakeNode) -> None:
    """The bound above turns a flood into 503s; it must not turn them on the node's paying users.
    A channel read open and funded in the last `FUNDED_CHANNEL_TTL_S` answers its user's next
    request without a chain read, so while fresh keys hold every read slot, a user who paid a
    moment ago is still admitted."""
    from supernet.node.service.auth import MAX_ADMISSION_CHAIN_READS

    reads: list[str] = []
    release = asyncio.Event()
    real = fake_node.chain.channel
    assert fake_node.service.ctx is not None
    fake_node.service.ctx.worker.chain = None  # admission's reads only, not the worker's at a task's start

    async def slow_for_strangers(user: str) -> Channel:
        reads.append(user)
        if user != fake_node.user.address:
            await release.wait()
        return await real(user)

    fake_node.chain.channel = slow_for_strangers  # type: ignore[method-assign]
    first = await fake_node.http.post("/v1/tasks", json=fake_node.body("first", cumulative=FEE))
    assert first.status_code == 202 and reads == [fake_node.user.address]
    node, domain = fake_node.address, fake_node.chain.domain
    flood = [signed_task(Account.create(), node, domain, "hi", cumulative=FEE, nonce=0) for _ in range(12)]
    sent = [asyncio.ensure_future(fake_node.http.post("/v1/tasks", json=b)) for b in flood]
    _, pending = await until_held(sent, MAX_ADMISSION_CHAIN_READS)
    assert len(pending) == MAX_ADMISSION_CHAIN_READS  # every read slot held by the flood
    second = await fake_node.http.post("/v1/tasks", json=fake_node.body("second", cumulative=2 * FEE))
    assert second.status_code == 202, second.text  # admitted from what the chain said a moment ago
    assert reads.count(fake_node.user.address) == 1
    release.set()
    await asyncio.gather(*sent)
