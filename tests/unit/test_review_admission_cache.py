"""Adversarial review of admission's funded-channel cache and chain-read bound
(`Authenticator._channel`, node/supernet/node/service/auth.py) and of the read grant now
required by ``GET /v1/accounts/{user}`` (deps.reader_of; the SDK's `Client._sync_account` and
`SupernetAuth` send it).

``test_known_limit_*`` pass while the problem exists (each asserts today's bad outcome and says
in its docstring what goes wrong, who is harmed and the fix); ``test_defence_*`` assert an attack
the code already defeats. All run on the in-process app over the FAKE executor and chain of
``tests/node_fixtures.py`` (fast, no model, no socket).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import openai
import pytest
from eth_account import Account
from supernet.node.service import auth as auth_module
from supernet.node.service.auth import FUNDED_CHANNEL_TTL_S, MAX_ADMISSION_CHAIN_READS, Authenticator
from supernet.sdk.chain.eip712 import Domain, ReadGrant, sign_typed
from supernet.sdk.chain.payments import Channel
from supernet.sdk.client import client as client_module
from supernet.sdk.client.client import Client
from supernet.sdk.client.read_grant import READ_HEADER, sign_read_grant
from supernet.sdk.client.types import ClientError, PreparedTask
from supernet.sdk.openai_compat import SupernetAuth

from tests.chat_traces import store_chat_traces
from tests.node_fixtures import FakeNode, make_fake_node, signed_task, until_held

FEE = 10**12


def _auth(node: FakeNode) -> Authenticator:
    assert node.service.ctx is not None
    return node.service.ctx.auth


def _db(node: FakeNode) -> Any:
    assert node.service.ctx is not None
    return node.service.ctx.db


def _stranger(node: FakeNode) -> httpx.AsyncClient:
    """A client with no read grant that sees 500s as an HTTP peer would."""
    assert node.service.app is not None
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node.service.app, raise_app_exceptions=False),
        base_url="http://node",
    )


def _reads(node: FakeNode, fast: set[str] | None = None) -> tuple[list[str], asyncio.Event]:
    """Count channel reads. With ``fast`` given, the read of any user not in it waits for the
    returned event (a slow RPC for a flood of strangers); ``fast=None``: no read waits."""
    reads: list[str] = []
    release = asyncio.Event()
    real = node.chain.channel
    assert node.service.ctx is not None
    node.service.ctx.worker.chain = None  # only admission's reads: not the worker's at a task's start

    async def counting(user: str) -> Channel:
        reads.append(user)
        if fast is not None and user not in fast:
            await release.wait()
        return await real(user)

    node.chain.channel = counting  # type: ignore[method-assign]
    return reads, release


async def _flood(node: FakeNode, n: int = 12) -> list[asyncio.Future[httpx.Response]]:
    """Fresh unfunded keys holding every chain-read slot (their reads hang until released)."""
    bodies = [
        signed_task(Account.create(), node.address, node.chain.domain, "x", cumulative=FEE, nonce=0)
        for _ in range(n)
    ]
    sent = [asyncio.ensure_future(node.http.post("/v1/tasks", json=b)) for b in bodies]
    _, pending = await until_held(sent, MAX_ADMISSION_CHAIN_READS)
    assert len(pending) == MAX_ADMISSION_CHAIN_READS  # every slot held by the flood
    return sent


# -- known limits -----------------------------------------------------------------------------------


async def test_defence_a_flood_of_free_keys_delays_a_new_paying_user_and_not_a_returning_one(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """Found by this review: the funded-channel cache covered only a user read in the last 15 s,
    and everyone else competed with free keys for the 8 read slots; a flood (~8 / RPC latency
    requests a second) turned away (a) a user who just deposited and (b) a paying user returning
    after 15 s. Fixed for (b): a user with a nonce on record here reads through slots of its own
    (`KNOWN_USER_CHAIN_READS`, waiting up to `KNOWN_USER_WAIT_S`), which free keys cannot hold.

    (a) was a known limit (the SDK failed the first task with a 503): a key with no task here yet
    is indistinguishable from the flood's free keys (a deposit would tell them apart, but seeing it
    is the very read being rationed). Now admission answers ``503 busy`` with ``Retry-After`` and
    the SDK's `Client._send` sends the same signed body again: the new user's first task waits out
    the flood and is admitted once, with its own nonce."""
    honest_new = Account.create()
    fake_node.chain.deposits[honest_new.address] = 10**18  # deposited a moment ago
    reads, release = _reads(fake_node, fast={fake_node.user.address, honest_new.address})
    first = await fake_node.http.post("/v1/tasks", json=fake_node.body("first", cumulative=FEE))
    assert first.status_code == 202  # a paying user, on record now
    sent = await _flood(fake_node)
    try:
        # (a) a funded user's first request: refused while the flood lasts, with a retry hint...
        body = signed_task(
            honest_new, fake_node.address, fake_node.chain.domain, "hi", cumulative=FEE, nonce=0
        )
        new = await fake_node.http.post("/v1/tasks", json=body)
        assert new.status_code == 503 and new.json()["error"]["code"] == "busy"
        assert new.headers["retry-after"] == "1"
        # (b) the paying user, 16 s later (their cache entry expired): admitted through its own slots
        auth = _auth(fake_node)
        auth._clock = lambda: time.time() + FUNDED_CHANNEL_TTL_S + 1  # type: ignore[method-assign]
        back = await fake_node.http.post("/v1/tasks", json=fake_node.body("back", cumulative=2 * FEE))
        assert back.status_code == 202, back.text
        assert honest_new.address not in reads and reads.count(fake_node.user.address) == 2
        # ...and the SDK's client, sending it, waits the flood out (released after 0.3 s here)
        client = _sdk_client(tmp_path, honest_new, fake_node)
        prepared = _prepared(fake_node, body)
        asyncio.get_running_loop().call_later(0.3, release.set)
        created = await client._send(prepared)
        assert created.status == "accepted" and created.user == honest_new.address
    finally:
        release.set()
        await asyncio.gather(*sent)
    assert _db(fake_node).task_count() == 3 and _db(fake_node).last_nonce(honest_new.address) == 0


def _prepared(node: FakeNode, body: dict[str, Any]) -> PreparedTask:
    """``body`` (a signed ``POST /v1/tasks`` body) as the SDK's `PreparedTask` for ``node``."""
    return PreparedTask(
        task_id="0x" + "00" * 32,  # the client's own bookkeeping key; the node derives the real one
        node=SimpleNamespace(url="http://node", address=node.address),  # type: ignore[arg-type]
        signed={k: body[k] for k in ("request", "signature", "voucher")},
        agent=body["agent"],
        input=body["input"],
        model_id=body["request"]["modelId"],
        fee=FEE,
        cumulative=FEE,
    )


def _sdk_client(tmp_path: Path, user: Any, node: FakeNode) -> Client:
    """The SDK's real `Client` for ``user`` (no chain reads are made by ``_send``), talking to the
    in-process app."""
    contracts = SimpleNamespace(
        account=user,
        domain=node.chain.domain,
        # the registry's word on where the node is: read grants go only there (`Client._read_auth`)
        service_manager=SimpleNamespace(get_node=lambda _a: SimpleNamespace(endpoint="http://node")),
    )
    client = Client(contracts, state_dir=tmp_path / "client")  # type: ignore[arg-type]
    assert node.service.app is not None
    client.http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=node.service.app), base_url="http://node"
    )
    return client


async def test_known_limit_a_withdrawal_is_not_seen_for_up_to_15_s(fake_node: FakeNode) -> None:
    """LIMIT (bounded since this review): a channel cached as open is not re-read for up to its
    TTL, so a user who called ``requestWithdrawal`` is still admitted until the entry expires
    (docs/node.md's 402 row says so). The review found the TTL unrelated to the contract's
    ``WITHDRAWAL_DELAY`` (the contract takes any delay > 0): on a short-delay deployment the user
    could withdraw before the redeemer collected. Now the TTL is at most a quarter of the delay
    (`Authenticator._funded_ttl`; no cache when it cannot be read), so the node keeps three
    quarters of the delay to redeem (the defence test below on a 20 s delay)."""
    reads, _ = _reads(fake_node)
    user = fake_node.user.address
    first = await fake_node.http.post("/v1/tasks", json=fake_node.body("one", cumulative=FEE))
    assert first.status_code == 202 and reads == [user]
    fake_node.chain.closing[user] = int(time.time()) + 60  # the user asks to withdraw
    again = await fake_node.http.post("/v1/tasks", json=fake_node.body("two", cumulative=2 * FEE))
    assert again.status_code == 202, again.text  # admitted on a closing channel, from the cache
    assert reads == [user]
    later = time.time() + FUNDED_CHANNEL_TTL_S + 1
    _auth(fake_node)._clock = lambda: later  # type: ignore[method-assign]
    third = await fake_node.http.post("/v1/tasks", json=fake_node.body("three", cumulative=3 * FEE))
    assert third.status_code == 402 and "closing" in third.json()["error"]["message"]  # only now
    assert _db(fake_node).billed(user) == 2 * FEE


# -- defences ---------------------------------------------------------------------------------------


async def test_defence_the_cache_lives_at_most_a_quarter_of_the_withdrawal_delay(fake_node: FakeNode) -> None:
    """With a 20 s withdrawal delay a funded channel is cached for 5 s, not 15: a withdrawal
    requested 6 s after the read is seen (402 "closing") with 14 s left for the node to redeem."""
    fake_node.chain.withdrawal_delay_s = 20
    reads, _ = _reads(fake_node)
    user = fake_node.user.address
    assert (
        await fake_node.http.post("/v1/tasks", json=fake_node.body("one", cumulative=FEE))
    ).status_code == 202
    fake_node.chain.closing[user] = int(time.time()) + 20
    later = time.time() + 6
    _auth(fake_node)._clock = lambda: later  # type: ignore[method-assign]
    again = await fake_node.http.post("/v1/tasks", json=fake_node.body("two", cumulative=2 * FEE))
    assert again.status_code == 402 and "closing" in again.json()["error"]["message"]
    assert reads == [user, user]


async def test_defence_the_cache_never_admits_more_than_the_deposit(fake_node: FakeNode) -> None:
    """A cached channel answers only a voucher no larger than the deposit it saw, and the voucher
    must be exactly billed + fee, re-checked in the one write transaction: concurrent requests
    served from the cache cannot together spend more than the channel holds, a voucher above the
    cached deposit is read again (402 naming the shortfall), and a top-up is seen at once."""
    payer = Account.create()
    fake_node.chain.deposits[payer.address] = 2 * FEE
    reads, _ = _reads(fake_node)
    node, domain = fake_node.address, fake_node.chain.domain

    def body(text: str, cumulative: int, nonce: int) -> dict[str, Any]:
        return signed_task(payer, node, domain, text, cumulative=cumulative, nonce=nonce)

    assert (await fake_node.http.post("/v1/tasks", json=body("a", FEE, 1))).status_code == 202
    # ten concurrent requests, each with its own nonce, all claiming the last fee the deposit holds
    racing = [fake_node.http.post("/v1/tasks", json=body(f"r{i}", 2 * FEE, 10 + i)) for i in range(10)]
    statuses = sorted(r.status_code for r in await asyncio.gather(*racing))
    assert statuses.count(202) == 1 and set(statuses) <= {202, 402, 409}, statuses
    assert reads == [payer.address]  # all from the cache
    over = await fake_node.http.post("/v1/tasks", json=body("over", 3 * FEE, 30))
    assert over.status_code == 402 and over.json()["error"]["requiredDeposit"] == str(3 * FEE)
    assert reads == [payer.address] * 2  # a voucher past the cached deposit is read again
    assert _db(fake_node).billed(payer.address) == 2 * FEE  # never more than deposited
    fake_node.chain.deposits[payer.address] += FEE  # a top-up: seen on the next request
    assert (await fake_node.http.post("/v1/tasks", json=body("topped", 3 * FEE, 31))).status_code == 202


async def test_defence_the_cache_is_keyed_by_the_verified_signer(fake_node: FakeNode) -> None:
    """Entries are written and read under the checksum address whose signatures were verified
    before the chain step: the same user spelled in lower case hits their own entry, a request
    naming a funded victim but signed by someone else is refused before the cache (and reads
    nothing), and an unfunded key leaves no entry."""
    reads, _ = _reads(fake_node)
    victim = fake_node.user
    assert (
        await fake_node.http.post("/v1/tasks", json=fake_node.body("v", cumulative=FEE))
    ).status_code == 202
    lower = fake_node.body("lower", cumulative=2 * FEE)
    lower["request"]["user"] = lower["request"]["user"].lower()
    resp = await fake_node.http.post("/v1/tasks", json=lower)
    assert resp.status_code == 202, resp.text
    assert reads == [victim.address]  # one entry for both spellings
    attacker = Account.create()
    forged = signed_task(
        attacker, fake_node.address, fake_node.chain.domain, "x", cumulative=3 * FEE, nonce=99
    )
    forged["request"]["user"] = victim.address  # the victim's name on the attacker's signature
    resp = await fake_node.http.post("/v1/tasks", json=forged)
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "bad_signature"
    unfunded = signed_task(attacker, fake_node.address, fake_node.chain.domain, "y", cumulative=FEE, nonce=0)
    assert (await fake_node.http.post("/v1/tasks", json=unfunded)).status_code == 402
    assert set(_auth(fake_node)._funded) == {victim.address}
    assert _db(fake_node).billed(victim.address) == 2 * FEE


async def test_defence_a_503_leaves_nothing_behind_and_the_same_request_is_admitted_later(
    fake_node: FakeNode,
) -> None:
    """Both 503s of admission (the chain failing, every read slot taken) store nothing, consume no
    nonce, write no cache entry and hold no slot: the very same signed body is admitted on retry.
    A request cancelled while its read is in flight (a client that goes away) gives its slot back."""
    auth = _auth(fake_node)
    real = fake_node.chain.channel

    async def down(user: str) -> Channel:
        raise ConnectionError("rpc unreachable")

    body = fake_node.body("retry me", cumulative=FEE)
    fake_node.chain.channel = down  # type: ignore[method-assign]
    resp = await fake_node.http.post("/v1/tasks", json=body)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "busy"
    assert auth._funded == {} and _db(fake_node).last_nonce(fake_node.user.address) == -1
    fake_node.chain.channel = real  # type: ignore[method-assign]
    assert (await fake_node.http.post("/v1/tasks", json=body)).status_code == 202

    payer = Account.create()
    fake_node.chain.deposits[payer.address] = 10**18
    _, release = _reads(fake_node, fast=set())  # every read hangs
    sent = await _flood(fake_node)
    own = signed_task(payer, fake_node.address, fake_node.chain.domain, "later", cumulative=FEE, nonce=0)
    assert (await fake_node.http.post("/v1/tasks", json=own)).status_code == 503
    for f in sent:
        f.cancel()  # the flood's clients go away mid-read
    await asyncio.gather(*sent, return_exceptions=True)
    assert auth._stranger_reads is not None and not auth._stranger_reads.locked()
    release.set()
    assert (await fake_node.http.post("/v1/tasks", json=own)).status_code == 202
    assert _db(fake_node).task_count() == 2 and _db(fake_node).last_nonce(payer.address) == 0


async def test_defence_the_funded_cache_stays_bounded(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each entry needs a funded channel and a paid request, and at most `MAX_FUNDED_CHANNELS` are
    kept: past it, expired entries are dropped and, if all are fresh, the new user is served by a
    read without an entry (admitted, not cached). Memory stays bounded."""
    monkeypatch.setattr(auth_module, "MAX_FUNDED_CHANNELS", 3)
    auth = _auth(fake_node)
    node, domain = fake_node.address, fake_node.chain.domain
    users = [Account.create() for _ in range(6)]
    for u in users:
        fake_node.chain.deposits[u.address] = 10**18
    for u in users[:5]:
        resp = await fake_node.http.post(
            "/v1/tasks", json=signed_task(u, node, domain, "h", cumulative=FEE, nonce=0)
        )
        assert resp.status_code == 202
    assert len(auth._funded) == 3  # full of fresh entries: the 4th and 5th were admitted uncached
    later = time.time() + FUNDED_CHANNEL_TTL_S + 1
    auth._clock = lambda: later  # type: ignore[method-assign]
    resp = await fake_node.http.post(
        "/v1/tasks", json=signed_task(users[5], node, domain, "h", cumulative=FEE, nonce=0)
    )
    assert resp.status_code == 202
    assert set(auth._funded) == {users[5].address}  # the expired entries made room


async def test_defence_the_account_grant_cannot_be_bypassed(fake_node: FakeNode) -> None:
    """``GET /v1/accounts/{user}`` answers only a valid grant of that user for this node and chain:
    the address may be spelled in any case (path or grant), but a grant naming the user and signed
    by another key, one for another node or chain, an expired one and one living past the hour
    are all 401, and another user's valid grant is 403. A user with no task yet reads their empty
    account. (A grant copied from a log or proxy opens the account until it expires, at most an
    hour: the documented trade-off of a bearer grant, docs/protocol.md "Reading results".)"""
    user, node, domain = fake_node.user, fake_node.address, fake_node.chain.domain
    now = int(time.time())
    attacker = Account.create()

    def header(signer: Any, named: str, expiry: int, grant_node: str = node, dom: Domain = domain) -> str:
        sig = sign_typed(ReadGrant(user=named, node=grant_node, expiry=expiry), dom, signer)
        return f"{named}:{expiry}:0x{sig.hex()}"

    own = sign_read_grant(user, node, domain).header()
    refused = {
        "another signer": header(attacker, user.address, now + 600),
        "another node": header(user, user.address, now + 600, grant_node=Account.create().address),
        "another chain": header(user, user.address, now + 600, dom=Domain(1, domain.verifying_contract)),
        "expired": header(user, user.address, now - 1),
        "too long": header(user, user.address, now + 7200),
    }
    async with _stranger(fake_node) as http:
        for why, h in refused.items():
            resp = await http.get(f"/v1/accounts/{user.address}", headers={READ_HEADER: h})
            assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized", why
        theirs = {READ_HEADER: sign_read_grant(attacker, node, domain).header()}
        assert (await http.get(f"/v1/accounts/{user.address}", headers=theirs)).status_code == 403
        for path, h in ((user.address.lower(), own), (user.address, own.lower())):
            resp = await http.get(f"/v1/accounts/{path}", headers={READ_HEADER: h})
            assert resp.status_code == 200 and resp.json()["user"] == user.address, resp.text
        new = Account.create()
        first = await http.get(
            f"/v1/accounts/{new.address}", headers={READ_HEADER: sign_read_grant(new, node, domain).header()}
        )
        assert first.status_code == 200
        assert (
            first.json()["lastNonce"] == -1
            and first.json()["billed"] == "0"
            and first.json()["voucher"] is None
        )
        bad = await http.get(f"/v1/accounts/{user.address}", headers={READ_HEADER: "x:y"})
        assert bad.status_code == 401  # malformed: the error format, no 500


class _Hosts(httpx.AsyncBaseTransport):
    """Routes each host to its own in-process node."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.by_host = {h: httpx.ASGITransport(app=a) for h, a in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.by_host[request.url.host].handle_async_request(request)


async def test_defence_the_openai_path_reads_its_account_after_lost_state_and_on_another_node(
    fake_node: FakeNode, tmp_path: Path
) -> None:
    """Requiring the grant did not break `SupernetAuth`: a fresh state directory (lost state)
    re-bases on the node's proven total and goes on, and the same auth moving to a second node
    signs a grant for that node (a grant is bound to one node address)."""
    second = await make_fake_node(tmp_path / "node2", batch={"max_size": 2, "max_age_s": 0.2})
    try:
        second.chain.deposits[fake_node.user.address] = 10**18
        apps = {"a": fake_node.service.app, "b": second.service.app}
        store_chat_traces(fake_node)  # each answer's trace, which the drop-in reads (`chat_traces`)
        store_chat_traces(second)

        def ai(state: Path) -> tuple[openai.AsyncOpenAI, openai.AsyncOpenAI]:
            auth = SupernetAuth(
                fake_node.user,
                fake_node.chain.domain,
                rule=fake_node.chain,
                state_dir=state,
                store_transport=_Hosts(apps),
            )
            http = httpx.AsyncClient(transport=_Hosts(apps), auth=auth)
            return tuple(  # type: ignore[return-value]
                openai.AsyncOpenAI(base_url=f"http://{h}/v1", api_key="-", http_client=http, max_retries=0)
                for h in ("a", "b")
            )

        async def ask(client: openai.AsyncOpenAI, text: str) -> str | None:
            msg = [{"role": "user", "content": text}]
            reply = await client.chat.completions.create(model="fake-model", messages=msg)  # type: ignore[arg-type]
            return reply.choices[0].message.content

        a, _ = ai(tmp_path / "state1")
        assert [await ask(a, "one"), await ask(a, "two")] == ["echo: one", "echo: two"]
        a2, b2 = ai(tmp_path / "state2")  # the state directory is lost
        assert await ask(a2, "three") == "echo: three"
        assert await ask(b2, "elsewhere") == "echo: elsewhere"
        assert _db(fake_node).billed(fake_node.user.address) == 3 * FEE
        assert _db(second).billed(fake_node.user.address) == FEE
    finally:
        await second.http.aclose()
        await second.service.cleanup()
        await second.store.aclose()


async def test_defence_the_sdk_gives_up_on_a_node_that_stays_busy(
    fake_node: FakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node (or a flood) that answers ``busy`` for ever cannot hold the SDK's client: it sends
    the body `BUSY_RETRIES` more times, then raises the node's 503, and nothing was stored."""
    monkeypatch.setattr(client_module, "BUSY_WAIT_MAX_S", 0.01)  # the waits, not their count
    honest_new = Account.create()
    fake_node.chain.deposits[honest_new.address] = 10**18
    _, release = _reads(fake_node, fast=set())
    sent = await _flood(fake_node)
    try:
        body = signed_task(
            honest_new, fake_node.address, fake_node.chain.domain, "hi", cumulative=FEE, nonce=0
        )
        client = _sdk_client(tmp_path, honest_new, fake_node)
        posts: list[str] = []
        client.http.event_hooks["request"].append(lambda req: _count(posts, req))
        prepared = _prepared(fake_node, body)
        with pytest.raises(ClientError) as err:
            await client._send(prepared)
        assert err.value.status == 503 and err.value.error["code"] == "busy"
        assert len(posts) == client_module.BUSY_RETRIES + 1
    finally:
        release.set()
        await asyncio.gather(*sent)
    assert _db(fake_node).last_nonce(honest_new.address) == -1


async def _count(posts: list[str], request: httpx.Request) -> None:
    posts.append(request.method)
