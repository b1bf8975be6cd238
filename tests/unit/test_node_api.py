"""The node's HTTP surface on a FAKE executor and chain: admission, refusals, reads, streams."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from node_fixtures import FakeNode, make_fake_node
from supernet.sdk.chain.eip712 import Domain, ReadGrant, sign_typed
from supernet.sdk.chain.receipts import input_hash
from supernet.sdk.client.read_grant import (
    MAX_READ_GRANT_S,
    READ_HEADER,
    ReadGrantAuth,
    ReadGrantError,
    sign_read_grant,
    verify_read_grant,
)

DOMAIN = Domain(31337, "0x" + "11" * 20)


def db_snapshot(node: FakeNode) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (to prove a refused request changed nothing)."""
    path = node.service.settings.data_dir / "node.sqlite3"
    with sqlite3.connect(path) as c:
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: sorted(c.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


async def wait_done(node: FakeNode, task_id: str) -> dict[str, Any]:
    for _ in range(200):
        r = await node.http.get(f"/v1/tasks/{task_id}")
        if r.json()["status"] in ("done", "failed", "refused"):
            return r.json()
        await asyncio.sleep(0.01)
    raise AssertionError("task did not finish")


async def test_task_accepted_runs_and_has_receipt(fake_node: FakeNode) -> None:
    r = await fake_node.http.post("/v1/tasks", json=fake_node.body("hello world", cumulative=10**12))
    assert r.status_code == 202, r.text
    task = r.json()
    assert task["status"] in ("accepted", "running")
    done = await wait_done(fake_node, task["id"])
    assert done["output"] == "echo: hello world"
    rec = (await fake_node.http.get(f"/v1/tasks/{task['id']}/receipt")).json()
    assert rec["receipt"]["requestHash"] == task["id"]
    assert rec["receipt"]["fee"] == str(10**12)


async def test_events_replay_tokens_then_done(fake_node: FakeNode) -> None:
    fake_node.executor.gate = asyncio.Event()
    r = await fake_node.http.post("/v1/tasks", json=fake_node.body("a b c", cumulative=10**12))
    tid = r.json()["id"]
    asyncio.get_running_loop().call_later(0.05, fake_node.executor.gate.set)
    resp = await fake_node.http.get(f"/v1/tasks/{tid}/events")
    events = [line.split(": ", 1)[1] for line in resp.text.splitlines() if line.startswith("event: ")]
    datas = [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "done" and set(events[:-1]) == {"token"}
    assert "".join(d["text"] for d in datas[:-1]).strip() == "echo: a b c"


async def test_replay_is_409_and_changes_nothing(fake_node: FakeNode) -> None:
    body = fake_node.body("once", cumulative=10**12)
    first = await fake_node.http.post("/v1/tasks", json=body)
    assert first.status_code == 202
    await wait_done(fake_node, first.json()["id"])
    before = db_snapshot(fake_node)
    again = await fake_node.http.post("/v1/tasks", json=body)
    assert again.status_code == 409 and again.json()["error"]["code"] == "replay"
    # a fresh request with an old nonce is a replay too
    stale = fake_node.body("other", cumulative=2 * 10**12, nonce=int(body["request"]["nonce"]))
    r = await fake_node.http.post("/v1/tasks", json=stale)
    assert r.status_code == 409, r.text
    assert db_snapshot(fake_node) == before


async def test_bad_signatures_are_401_and_change_nothing(fake_node: FakeNode) -> None:
    before = db_snapshot(fake_node)
    body = fake_node.body("x", cumulative=10**12)
    forged = fake_node.body("x", cumulative=10**12, user=Account.create())
    body["signature"] = forged["signature"]
    r = await fake_node.http.post("/v1/tasks", json=body)
    assert r.status_code == 401 and "request signature" in r.json()["error"]["message"]
    body = fake_node.body("x", cumulative=10**12)
    body["voucher"]["signature"] = forged["voucher"]["signature"]
    r = await fake_node.http.post("/v1/tasks", json=body)
    assert r.status_code == 401 and "voucher signature" in r.json()["error"]["message"]
    body = fake_node.body("x", cumulative=10**12)
    body["voucher"]["cumulativeAmount"] = str(10**15)  # signed amount was smaller
    assert (await fake_node.http.post("/v1/tasks", json=body)).status_code == 401
    assert db_snapshot(fake_node) == before


async def test_payment_and_shape_refusals(fake_node: FakeNode) -> None:
    before = db_snapshot(fake_node)
    cases = {
        402: [fake_node.body("x", cumulative=10**12 - 1), fake_node.body("x", cumulative=10**12, fee=1)],
        400: [fake_node.body("x", cumulative=10**12, deadline=1)],
        403: [{**fake_node.body("x", cumulative=10**12), "agent": "other"}],
    }
    tampered = fake_node.body("x", cumulative=10**12)
    tampered["input"] = "y"
    cases[400].append(tampered)
    poor = Account.create()
    cases[402].append(fake_node.body("x", cumulative=10**12, user=poor))
    for status, bodies in cases.items():
        for body in bodies:
            r = await fake_node.http.post("/v1/tasks", json=body)
            assert r.status_code == status, (status, r.text)
            assert r.json()["error"]["message"]
    assert db_snapshot(fake_node) == before


async def test_admission_counts_only_the_users_channel_to_this_node(fake_node: FakeNode) -> None:
    """A node admits work only against funds it alone can claim: a voucher beyond what the user's
    channel to this node holds, or any voucher once the user asked to close that channel, is a 402
    that names the channel (a deposit promised to every node could be paid to one of them)."""
    before = db_snapshot(fake_node)
    user = fake_node.user.address
    deposited = fake_node.chain.deposits[user]
    fake_node.chain.deposits[user] = 10**12 - 1  # the exact voucher (billed 0 + fee) is above it
    try:
        r = await fake_node.http.post("/v1/tasks", json=fake_node.body("x", cumulative=10**12))
        assert r.status_code == 402 and "payment channel" in r.json()["error"]["message"], r.text
    finally:
        fake_node.chain.deposits[user] = deposited
    fake_node.chain.closing[user] = 123
    try:
        r = await fake_node.http.post("/v1/tasks", json=fake_node.body("x", cumulative=10**12))
        assert r.status_code == 402 and "closing" in r.json()["error"]["message"], r.text
    finally:
        del fake_node.chain.closing[user]
    assert db_snapshot(fake_node) == before


def _loose_digest(task_input: Any) -> bytes:
    """inputHash the way a client with Python's lenient json would compute it (NaN, big ints...)."""
    text = json.dumps(task_input, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


async def test_inputs_without_a_canonical_form_are_refused_before_anything(fake_node: FakeNode) -> None:
    """A user who signs an input the trace cannot record as signed (NaN becomes null in dag-cbor, a
    2**64 integer cannot be encoded, a lone surrogate is not UTF-8) would get the honest node
    slashed, or its work for free. Admission refuses it with a 400, and nothing is stored."""
    before = db_snapshot(fake_node)
    for bad in (
        {"x": float("nan")},
        {"x": float("inf")},
        {"n": 2**64},
        {"n": 2**53},
        {"s": "\ud800"},
        "\ud800",
        {"n": 1e16},  # spelled 10000000000000000 by RFC 8785: its normal form has no canonical form
    ):
        body = fake_node.body(bad, cumulative=10**12, input_digest=_loose_digest(bad))
        r = await fake_node.http.post(
            "/v1/tasks",
            content=json.dumps(body).encode(),  # NaN, Infinity, \ud800 as Python's json writes them
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 400, (bad, r.text)
        assert r.json()["error"]["code"] == "input_not_canonical", r.text
    body = fake_node.body("x", cumulative=10**12, deadline=2**63)
    r = await fake_node.http.post("/v1/tasks", json=body)
    assert r.status_code == 422 and "deadline" in r.text  # refused by shape, before the signature
    assert db_snapshot(fake_node) == before


def test_input_hash_is_rfc8785() -> None:
    """Other clients compute inputHash with any RFC 8785 library: numbers in ECMAScript form, keys
    sorted by UTF-16 code units."""
    assert input_hash({"b": 1.0, "a": [1e21, 0.5]}) == hashlib.sha256(b'{"a":[1e+21,0.5],"b":1}').digest()
    assert (
        input_hash({"\uff5e": 1, "\U0001f600": 2})
        == hashlib.sha256(  # U+FF5E sorts after D83D
            '{"\U0001f600":2,"\uff5e":1}'.encode()
        ).digest()
    )
    assert input_hash("hé") == hashlib.sha256('"hé"'.encode()).digest()


def test_a_string_input_never_has_an_object_inputs_hash() -> None:
    """A string input used to hash as its bare UTF-8, so the string spelling an object's canonical
    JSON had that object's hash: anyone seeing a signed request could run that text in its place
    under the user's signature. Now every input hashes as its RFC 8785 JSON, type included."""
    obj = {"messages": [{"role": "user", "content": "hi"}]}
    text = '{"messages":[{"content":"hi","role":"user"}]}'  # the object's canonical JSON
    assert input_hash(text) != input_hash(obj)
    as_json_string = json.dumps(text, separators=(",", ":")).encode()  # '"{\\"messages\\":...}"'
    assert input_hash(text) == hashlib.sha256(as_json_string).digest()


async def test_malformed_and_oversized_requests(fake_node: FakeNode) -> None:
    before = db_snapshot(fake_node)
    r = await fake_node.http.post(
        "/v1/tasks", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    body = fake_node.body("x", cumulative=10**12)
    body["request"]["user"] = "0x1234"
    assert (await fake_node.http.post("/v1/tasks", json=body)).status_code == 422
    big = fake_node.body("z" * 70_000, cumulative=10**12)
    assert (await fake_node.http.post("/v1/tasks", json=big)).status_code == 413
    mid = fake_node.body("z" * 20_000, cumulative=10**12)
    assert (await fake_node.http.post("/v1/tasks", json=mid)).status_code == 413
    assert (await fake_node.http.get("/v1/tasks/0x12")).status_code == 422
    assert (await fake_node.http.get("/v1/tasks/0x" + "00" * 32)).status_code == 404
    assert db_snapshot(fake_node) == before


async def test_every_error_is_in_the_documented_format(fake_node: FakeNode) -> None:
    """Starlette's own errors and a garbage credential come back as ``{"error": {code, message}}``:
    a body that is not UTF-8, an unknown path, a wrong method (with ``Allow``), and an
    ``X-Supernet-Auth`` that is not a signed request (401, not a 400 with a pydantic dump)."""
    before = db_snapshot(fake_node)
    cases = [
        (
            await fake_node.http.post(
                "/v1/tasks", content=b"\xff\xfe{", headers={"content-type": "application/json"}
            ),
            (400, 422),
        ),
        (await fake_node.http.get("/v1/nothing-here"), (404,)),
        (await fake_node.http.delete("/v1/tasks"), (405,)),
    ]
    chat = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    for header in ("%%%", "e30", "bm90IGpzb24"):  # not base64, "{}", "not json"
        r = await fake_node.http.post("/v1/chat/completions", json=chat, headers={"X-Supernet-Auth": header})
        cases.append((r, (401,)))
        assert "pydantic" not in r.text and "errors.pydantic.dev" not in r.text, r.text
    for r, statuses in cases:
        assert r.status_code in statuses, (r.status_code, r.text)
        error = r.json()["error"]
        assert error["code"] and error["message"], r.text
    assert "POST" in cases[2][0].headers.get("allow", ""), cases[2][0].headers
    assert db_snapshot(fake_node) == before


def test_uint256_fields_publish_an_exact_bound() -> None:
    """The OpenAPI document must not publish 2**256 as a float (1.157920892373162e+77)."""
    from supernet.node.service.api import create_app

    text = json.dumps(create_app().openapi())
    assert "e+77" not in text and "1.157920892373162" not in text


async def test_models_node_health_metrics(fake_node: FakeNode) -> None:
    models = (await fake_node.http.get("/v1/models")).json()
    assert models["data"][0]["id"] == "fake-model"
    info = (await fake_node.http.get("/v1/node")).json()
    assert info["address"] == fake_node.address and info["agents"]["chat"]
    assert (await fake_node.http.get("/healthz")).json()["status"] == "ok"
    fake_node.service.ctx.accepting = False  # shutting down: a load balancer must stop sending tasks
    draining = await fake_node.http.get("/healthz")
    assert draining.status_code == 503 and draining.json()["status"] == "draining"
    fake_node.service.ctx.accepting = True
    metrics = (await fake_node.http.get("/metrics")).text
    assert "supernet_tasks_admitted_total" in metrics
    assert 'supernet_http_request_seconds_count{route="/healthz"}' in metrics  # latency per route


def _chat_body(node: FakeNode, cumulative: int, stream: bool) -> dict[str, Any]:
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 8}
    task_input = {"messages": chat["messages"], "max_new_tokens": 8}
    signed = node.body(task_input, cumulative=cumulative)
    auth = {k: signed[k] for k in ("request", "signature", "voucher")}
    return {**chat, "stream": stream, "supernet": auth}


async def test_chat_completions_plain_streamed_and_header(fake_node: FakeNode) -> None:
    import base64

    r = await fake_node.http.post("/v1/chat/completions", json=_chat_body(fake_node, 10**12, False))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "echo: hi there"
    r = await fake_node.http.post("/v1/chat/completions", json=_chat_body(fake_node, 2 * 10**12, True))
    datas = [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]
    assert datas[-1] == "[DONE]"
    text = "".join(json.loads(d)["choices"][0]["delta"].get("content", "") for d in datas[:-1])
    assert text.strip() == "echo: hi there"
    body = _chat_body(fake_node, 3 * 10**12, False)
    header = base64.urlsafe_b64encode(json.dumps(body.pop("supernet")).encode()).decode().rstrip("=")
    r = await fake_node.http.post("/v1/chat/completions", json=body, headers={"X-Supernet-Auth": header})
    assert r.status_code == 200, r.text
    body = _chat_body(fake_node, 4 * 10**12, False)
    del body["supernet"]
    assert (await fake_node.http.post("/v1/chat/completions", json=body)).status_code == 401


async def test_the_advertised_store_is_read_only(fake_node: FakeNode) -> None:
    """Users and validators are pointed at ``/v1/store`` of the node's API, never at its store RPC:
    it serves the blocks (re-hashed) and refuses every write, ``block/rm`` and ``pin/rm`` included,
    so nobody can delete a node's traces and then get it slashed for not serving them."""
    import httpx
    import pytest
    from supernet.sdk.store import StoreClient
    from supernet.sdk.store.errors import BlockNotFoundError, InvalidCIDError, StoreError

    info = (await fake_node.http.get("/v1/node")).json()
    assert info["storeUrl"] == "http://node/v1/store"
    cid = await fake_node.store.put_dag({"trace": "of a task"}, pin=True)
    transport = httpx.ASGITransport(app=fake_node.service.app)
    async with StoreClient(info["storeUrl"], transport=transport) as public:
        assert await public.get_dag(cid) == {"trace": "of a task"}
        assert (await public.stat(cid)).size > 0
        with pytest.raises(BlockNotFoundError):
            await public.get_block("bafyreibjk2zm52hfizr454i2vrctndr2q2oimlwxu36s3or2icabptr6by")
        with pytest.raises(InvalidCIDError):
            await public.get_block("not-a-cid")
        for write in (public.rm_block(cid), public.put_block(b"x"), public.pin_rm(cid)):
            with pytest.raises(StoreError):
                await write
    for path in ("block/rm", "pin/rm", "block/put", "pin/add", "dag/put"):
        r = await fake_node.http.post(f"/v1/store/api/v0/{path}", params={"arg": cid})
        assert r.status_code == 403 and "read-only" in r.json()["Message"], (path, r.text)
    assert await fake_node.store.get_dag(cid) == {"trace": "of a task"}  # still there


async def test_results_receipts_and_streams_are_readable_only_by_the_tasks_user(fake_node: FakeNode) -> None:
    """Task ids are public (every batch manifest lists them), so the id must not open a result:
    reads need a fresh `ReadGrant` signed by the task's user for this node."""
    r = await fake_node.http.post("/v1/tasks", json=fake_node.body("private words", cumulative=10**12))
    tid = r.json()["id"]
    await wait_done(fake_node, tid)
    domain, node = fake_node.chain.domain, fake_node.address
    other_node = Account.create().address
    now = time.time()
    own = sign_read_grant(fake_node.user, node, domain).header()
    user, expiry, sig = own.split(":")
    day = int(now) + 86_400
    long_lived = sign_typed(ReadGrant(user, node, day), domain, fake_node.user)
    refused = {
        "no grant": (None, 401),
        "another user's grant": (sign_read_grant(Account.create(), node, domain).header(), 403),
        "the user's grant for another node": (
            sign_read_grant(fake_node.user, other_node, domain).header(),
            401,
        ),
        "an expired grant": (sign_read_grant(fake_node.user, node, domain, now=now - 3700).header(), 401),
        "a grant living a day": (f"{user}:{day}:0x{long_lived.hex()}", 401),
        "the expiry moved": (f"{user}:{int(expiry) - 1}:{sig}", 401),
        "another user named": (f"{Account.create().address}:{expiry}:{sig}", 401),
        "garbage": ("garbage", 401),
        "a short signature": (f"{user}:{expiry}:0x00", 401),
        "a huge expiry": (f"{user}:{'9' * 80}:{sig}", 401),
    }
    transport = httpx.ASGITransport(app=fake_node.service.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://node") as anon:
        for path in ("", "/receipt", "/events"):
            for why, (header, status) in refused.items():
                headers = {} if header is None else {READ_HEADER: header}
                resp = await anon.get(f"/v1/tasks/{tid}{path}", headers=headers)
                assert resp.status_code == status, (path, why, resp.text)
                assert resp.json()["error"]["code"] in ("unauthorized", "forbidden"), (path, why)
                assert "private words" not in resp.text
            ok = await anon.get(f"/v1/tasks/{tid}{path}", headers={READ_HEADER: own})
            assert ok.status_code == 200, (path, ok.text)
        # an unknown task is a 404 for anyone with a valid grant; without one, 401 first
        missing = "/v1/tasks/0x" + "00" * 32
        assert (await anon.get(missing, headers={READ_HEADER: own})).status_code == 404
        assert (await anon.get(missing)).status_code == 401
    assert "private words" in (await fake_node.http.get(f"/v1/tasks/{tid}")).json()["output"]


def test_the_sdk_read_grant_is_renewed_before_it_expires() -> None:
    user, node = Account.create(), Account.create().address
    clock = [1_000_000.0]
    auth = ReadGrantAuth(user, node, DOMAIN, clock=lambda: clock[0])
    first = auth.header()
    assert verify_read_grant(first, node, DOMAIN, now=clock[0]) == user.address
    clock[0] += 600
    assert auth.header() == first  # still valid for long enough: no new signature
    clock[0] += MAX_READ_GRANT_S - 600 - 100  # under RENEW_BEFORE_S left
    renewed = auth.header()
    assert renewed != first and verify_read_grant(renewed, node, DOMAIN, now=clock[0]) == user.address
    with pytest.raises(ReadGrantError, match="expired"):
        verify_read_grant(first, node, DOMAIN, now=clock[0] + 200)


async def test_an_event_stream_ends_after_its_time_limit_and_the_task_goes_on(tmp_path: Path) -> None:
    """A peer must not hold a connection open for as long as it likes: the stream of a task that
    is still running ends with ``pending`` after ``api.max_stream_s``; the task is unaffected."""
    node = await make_fake_node(tmp_path / "node", api={"max_stream_s": 0.5})
    try:
        node.executor.gate = asyncio.Event()  # the task runs until the gate opens
        tid = (await node.http.post("/v1/tasks", json=node.body("slow words", cumulative=10**12))).json()[
            "id"
        ]
        started = time.monotonic()
        resp = await node.http.get(f"/v1/tasks/{tid}/events")
        waited = time.monotonic() - started
        events = [line.split(": ", 1)[1] for line in resp.text.splitlines() if line.startswith("event: ")]
        assert events[-1] == "pending" and 0.4 < waited < 10, (events, waited)
        node.executor.gate.set()
        assert (await wait_done(node, tid))["output"] == "echo: slow words"
    finally:
        await node.http.aclose()
        await node.service.cleanup()
        await node.store.aclose()


async def test_a_voucher_the_contract_could_not_redeem_is_refused(fake_node: FakeNode) -> None:
    """Vouchers go on chain packed (a 96-bit amount, a low-s EIP-2098 signature). A voucher that
    does not fit would make its task free, so admission refuses it and stores nothing."""
    before = db_snapshot(fake_node)
    body = fake_node.body("x", cumulative=10**12)
    sig = bytes.fromhex(body["voucher"]["signature"][2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = (n - int.from_bytes(sig[32:64], "big")).to_bytes(32, "big")
    body["voucher"]["signature"] = "0x" + (sig[:32] + high_s + bytes([55 - sig[64]])).hex()  # 27 <-> 28
    r = await fake_node.http.post("/v1/tasks", json=body)
    assert r.status_code == 401 and "voucher signature" in r.json()["error"]["message"], r.text
    fake_node.chain.deposits[fake_node.user.address] = 2**100
    huge = fake_node.body("x", cumulative=2**96)
    r = await fake_node.http.post("/v1/tasks", json=huge)
    assert r.status_code == 402 and "above the most a voucher can redeem" in r.json()["error"]["message"], (
        r.text
    )
    assert db_snapshot(fake_node) == before


async def test_a_user_may_offer_more_than_the_price_for_priority(fake_node: FakeNode) -> None:
    """The fee is what the user signs (`maxFee`, at least the node's price): a task offering 3x
    the price is billed 3x, its voucher must cover that, its receipt says so, and the kernel gets
    that fee as the fair-share scheduler's weight."""
    price = 10**12
    short = fake_node.body("x", cumulative=price, fee=3 * price)  # the voucher covers only the price
    r = await fake_node.http.post("/v1/tasks", json=short)
    assert r.status_code == 402 and r.json()["error"]["requiredCumulative"] == str(3 * price), r.text
    r = await fake_node.http.post("/v1/tasks", json=fake_node.body("x", cumulative=3 * price, fee=3 * price))
    assert r.status_code == 202, r.text
    task_id = r.json()["id"]
    await fake_node.service.ctx.worker.wait(task_id)  # type: ignore[union-attr]
    assert fake_node.executor.fees[task_id] == 3 * price
    assert fake_node.service.ctx.db.billed(fake_node.user.address) == 3 * price  # type: ignore[union-attr]
    doc = (await fake_node.http.get(f"/v1/tasks/{task_id}/receipt")).json()
    assert doc["receipt"]["fee"] == str(3 * price)


async def test_an_input_runs_as_the_value_its_hash_names(fake_node: FakeNode) -> None:
    """RFC 8785 writes ``8.0`` as ``8`` and ``-0.0`` as ``0``: one ``inputHash`` for several values.
    Attack (a user, found by review: tests/unit/test_review_encodings.py): sign a budget of ``8.0``,
    which every admission check reads as 8, so that the trace format (integers only) refuses the
    call after the model did the work: a failed task, never billed. Defence: admission reads the
    input back from its canonical bytes (`normal_input`) before anything sees it; the task is stored
    and run with the integer 8 and 0, so its trace records the value the signed hash names."""
    sent = {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 8.0, "z": -0.0}
    r = await fake_node.http.post("/v1/tasks", json=fake_node.body(sent, cumulative=10**12))
    assert r.status_code == 202, r.text
    done = await wait_done(fake_node, r.json()["id"])
    assert done["status"] == "done" and done["output"] == "echo: hi"
    stored = fake_node.service.ctx.db.task(r.json()["id"])  # type: ignore[union-attr]
    assert stored is not None
    assert stored.input == {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 8, "z": 0}
    assert type(stored.input["max_new_tokens"]) is int and type(stored.input["z"]) is int
    assert stored.input_hash == "0x" + input_hash(sent).hex()  # the hash the user signed, unchanged
