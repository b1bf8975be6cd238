"""Adversarial review of this session's changes (58cc456..HEAD): the done-fees voucher rule and the
worker's channel re-read at task start, ``503 busy`` with the SDK's re-send, ``wait_commit``'s own
receipt/nonce polling, and the trace size gate's witness cache.

Real parts throughout: the node service with SQLite billing, the worker and the ``Redeemer`` on the
REAL contracts on a real Anvil (the two-node rig of ``test_review_payments_many_nodes.py``, devnet
WITHDRAWAL_DELAY 60 s), ``Web3Chain`` on Anvil switched to interval mining, the SDK's real
``Client`` against the in-process node app, and the real embedded content store. Fakes, named where
used: the executor (``HeldExecutor``: holds / fails a task on a marker, for a task waiting on its
user's confirmation or failing on its input), a chain RPC outage, and a node that lies with a 503.

Found:

- FIXED (was a known limit of the new rule): the fee is the user's own ``maxFee``; a user overpaid
  one task it made fail and, while it was unfinished, sent cheap tasks whose vouchers all carried
  the big fee, so no voucher was within the done fees: the cheap tasks were free. Now the tasks in
  flight at once share one fee (409 ``fee_in_flight``).
- FIXED (was a known limit): a task started on a closing channel seconds before ``withdrawableAt``
  ran, unpaid; now a task does not start on a closing channel.
- FIXED (was a known limit; SDK, cheating node): a node that stored the task and answered ``503
  busy`` made the client, seeing the re-sent body's 409, forget a task the node ran and billed;
  now that 409 (the re-sent task's own id) means "stored" and the client follows the task.
- Defences: a chain RPC failure in `_unpaid` runs the paid task; `wait_commit` under interval
  mining with a 1 ms poll never drops a commit that lands; the witness cache keeps a CID read as a
  file and as a block apart and never caches a failed read.

Read, not tested (no finding): `Disputes.settle` delivers each refund once per resolved row (the
row becomes ``claimed`` right after); expected races and a missing manifest are swallowed, and the
contract pays ``request.user`` whoever sends it, so a griefer cannot loop the validator's gas.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import httpx
import pytest
from chain_fixtures import Actors
from supernet.node.kernel import trace as trace_module
from supernet.node.kernel.trace import collect_witness
from supernet.node.service import chain as chain_module
from supernet.node.service.chain import Web3Chain
from supernet.node.service.models import TaskStatus
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import increase_time
from supernet.sdk.chain.eip712 import TaskRequest, hash_task_request
from supernet.sdk.client import client as client_module
from supernet.sdk.client.state import TaskRecord
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.sdk.store.embedded import in_process_client

from tests.node_fixtures import FakeNode, signed_task
from tests.unit.test_review_admission_cache import _prepared, _sdk_client
from tests.unit.test_review_payments_many_nodes import FEE, ChainNode, _fresh_user, _withdraw_all
from tests.unit.test_review_payments_many_nodes import nodes as nodes  # the fixture


def _redeemed(network: Contracts, user: str, node: str) -> int:
    return network.payments.channel(user, node).redeemed


# -- payments: the done-fees voucher rule and the channel re-read ------------------------------------


@pytest.mark.anvil
async def test_defence_an_overpaid_failing_task_cannot_make_cheap_work_behind_it_free(
    network: Contracts, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """Found by this review (was a known limit). The fee is the user's signed ``maxFee`` (any
    amount at or above the node's price), each voucher ``billed + fee`` at admission. The user sent
    task A offering 5F, made it fail (FAKE failure here; for real: an input its agent fails on,
    or a confirmation it never gives), and while A was unfinished four cheap tasks at F: vouchers
    5F..9F. A failed, the four were done: done fees 4F and no voucher within them, so the node
    collected nothing and the user left with four outputs for free. Now the tasks in flight at
    once share one fee (`Authenticator._guard`: 409 ``fee_in_flight``), so some voucher always
    equals the done fees: the cheap tasks wait for A, and are paid exactly."""
    n1, _ = nodes
    user = _fresh_user(network, 19, n1.address, 10 * FEE)
    n1.executor.held["FAILME overpaid"] = asyncio.Event()
    big = await n1.post(user, "FAILME overpaid", 5 * FEE, fee=5 * FEE)
    assert big.status_code == 202, big.text
    refused = await n1.post(user, "cheap while A runs", 6 * FEE, fee=FEE)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "fee_in_flight" and error["fee"] == str(5 * FEE)
    n1.executor.held["FAILME overpaid"].set()
    assert await n1.status(big.json()["id"]) == "failed"
    cheap = []
    for k in range(1, 5):  # after A: billed 0, so vouchers F..4F
        r = await n1.post(user, f"cheap {k}", k * FEE, fee=FEE)
        assert r.status_code == 202, r.text
        cheap.append(r.json()["id"])
    assert [await n1.status(t) for t in cheap] == ["done"] * 4

    network.as_account(user).payments.request_withdrawal(n1.address)
    await n1.redeem_round()  # the closing channel: the node collects all it can at once
    assert _redeemed(network, user.address, n1.address) == 4 * FEE, "four done, four paid"
    assert _withdraw_all(network, user, n1.address) == 6 * FEE


@pytest.mark.anvil
async def test_defence_a_task_does_not_start_on_a_closing_channel(
    network: Contracts, nodes: tuple[ChainNode, ChainNode]
) -> None:
    """Found by this review (was a known limit): `TaskWorker._unpaid` refused a task only once the
    user HAD withdrawn. The user fills its per-user slots (held: its own confirmations), queues one
    more, and asks to withdraw; just before ``withdrawableAt`` it lets the held ones finish (the
    node collects them); the queued task started on a channel closing 5 s later, ran, and the user
    withdrew meanwhile: work never paid. Now a task does not start on a closing channel (as
    admission takes no new work against one): it is refused, unbilled, and never runs."""
    n1, _ = nodes
    user = _fresh_user(network, 13, n1.address, 10 * FEE)
    slots = n1.ctx.worker._per_user
    held = []
    for k in range(slots):
        n1.executor.held[f"held {k}"] = asyncio.Event()
        r = await n1.post(user, f"held {k}", (k + 1) * FEE)
        assert r.status_code == 202, r.text
        held.append(r.json()["id"])
    n1.executor.held["late start"] = asyncio.Event()
    late = await n1.post(user, "late start", (slots + 1) * FEE)
    assert late.status_code == 202, late.text
    late_id = late.json()["id"]
    await asyncio.sleep(0.2)
    assert n1.ctx.db.task(late_id).status is TaskStatus.ACCEPTED  # type: ignore[union-attr]

    network.as_account(user).payments.request_withdrawal(n1.address)
    increase_time(network.w3, network.params.withdrawal_delay - 5)
    for k in range(slots):
        n1.executor.held[f"held {k}"].set()
    assert [await n1.status(t) for t in held] == ["done"] * slots
    assert await n1.status(late_id) == "refused"
    assert late_id not in n1.executor.runs, "never ran"
    row = n1.ctx.db.task(late_id)
    assert row is not None and "withdraw" in (row.error or "")
    await n1.redeem_round()
    assert _redeemed(network, user.address, n1.address) == slots * FEE, "the finished ones are paid"
    assert _withdraw_all(network, user, n1.address) == (10 - slots) * FEE


async def test_defence_a_chain_outage_at_task_start_does_not_lose_paid_work(fake_node: FakeNode) -> None:
    """A chain RPC failure in `TaskWorker._unpaid` (FAKE outage: the read raises; a user cannot
    make its own channel read fail, it is a plain view call) lets the task run: admission saw the
    channel funded, the node is paid by the voucher it holds. A read that answers and finds the
    channel still funded runs it too; only a withdrawn channel refuses."""
    node = fake_node
    real = node.chain.channel
    worker_reads: list[str] = []

    async def flaky(user: str) -> Any:
        if _in_worker():  # the worker's read at the task's start, not admission's
            worker_reads.append(user)
            raise ConnectionError("RPC hiccup")
        return await real(user)

    node.chain.channel = flaky  # type: ignore[method-assign]
    r = await node.http.post("/v1/tasks", json=node.body("paid work", cumulative=FEE))
    assert r.status_code == 202, r.text
    ctx = node.service.ctx
    assert ctx is not None
    await ctx.worker.wait(r.json()["id"])
    task = ctx.db.task(r.json()["id"])
    assert worker_reads == [node.user.address], "the worker did try to read the channel"
    assert task is not None and task.status is TaskStatus.DONE and task.output == "echo: paid work"
    assert ctx.db.redeemable_voucher(node.user.address) == (FEE, task_voucher(ctx, task.id))


def _in_worker() -> bool:
    current = asyncio.current_task()
    return current is not None and current.get_name().startswith("task-")


def task_voucher(ctx: Any, task_id: str) -> str:
    rows = ctx.db._all("SELECT signature FROM vouchers WHERE task_id = ?", (task_id,))
    return str(rows[0]["signature"])


# -- the SDK's busy re-send ------------------------------------------------------------------------


async def test_defence_a_node_that_stores_then_answers_busy_cannot_make_the_sdk_forget_the_task(
    fake_node: FakeNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by this review (was a known limit; cheating node, never double work). A node stores the
    task and answers ``503 busy`` (FAKE lie: a transport that forwards the first POST to the real
    app and replaces its 202). The client re-sends the same signed body; the node's replay check
    answers 409 "already submitted" with the very task id, so the task runs once and is billed
    once. `Client._send` used to take that 409 for a refusal, drop the task from its state and
    raise while the node ran and billed it. Now a 409 naming the re-sent task's own id means
    "stored": the client keeps the record and follows the task (``GET /v1/tasks/{id}``)."""
    monkeypatch.setattr(client_module, "BUSY_WAIT_MAX_S", 0.01)
    node = fake_node
    assert node.service.app is not None
    inner = httpx.ASGITransport(app=node.service.app)
    answers: list[int] = []

    class LyingTransport(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            real = await inner.handle_async_request(request)
            await real.aread()
            if request.method == "POST" and not answers:
                answers.append(real.status_code)
                body = {"error": {"code": "busy", "message": "retry shortly"}}
                return httpx.Response(503, json=body, headers={"Retry-After": "1"})
            answers.append(real.status_code)
            return real

    body = signed_task(node.user, node.address, node.chain.domain, "lied about", cumulative=FEE, nonce=0)
    client = _sdk_client(tmp_path, node.user, node)
    client.http = httpx.AsyncClient(transport=LyingTransport(), base_url="http://node")
    request = TaskRequest.from_json(body["request"])
    task_id = "0x" + hash_task_request(request, node.chain.domain).hex()  # what the SDK keys it by
    prepared = dataclasses.replace(_prepared(node, body), task_id=task_id)
    client.state.tasks[prepared.task_id] = TaskRecord(
        node.address, "http://node", prepared.input, prepared.model_id, FEE
    )
    created = await client._send(prepared)
    assert answers[:2] == [202, 409] and created.id.lower() == prepared.task_id.lower()
    assert prepared.task_id in client.state.tasks, "the client still follows the task"
    ctx = node.service.ctx
    assert ctx is not None
    await ctx.worker.wait(created.id)
    task = ctx.db.task(created.id)
    assert task is not None and task.status is TaskStatus.DONE, "the node ran it"
    assert node.executor.runs == [created.id], "once: no double work"
    assert ctx.db.billed(node.user.address) == FEE, "and bills it once"


# -- wait_commit under interval mining ----------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_wait_commit_never_drops_a_commit_that_lands_under_interval_mining(
    network: Contracts, actors: Actors, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`Web3Chain.wait_commit` reads the receipt, then the account's nonce, then the receipt
    again: a block mined between the first two reads is caught by the third, so a used nonce with
    no receipt is really another transaction's. Tried on Anvil with interval mining (1 s blocks)
    and a 1 ms poll, to hit the window between reads as often as possible, with another
    transaction of the same account at the next nonce in the same block: every commit is
    returned with its block, none is taken for dead."""
    monkeypatch.setattr(chain_module, "COMMIT_POLL_S", 0.001)
    w3 = network.w3
    chain = Web3Chain(network, actors.node)
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    w3.provider.make_request("evm_setIntervalMining", [1])  # type: ignore[arg-type]
    batch_ids: list[int] = []
    try:
        for i in range(3):
            commit = await chain.sign_commit(bytes([i + 1]) * 32, 1, f"manifest-{i}")
            await chain.broadcast(commit)
            pay = network.as_account(actors.node).payments
            other = asyncio.create_task(
                asyncio.to_thread(pay.fund_escrow, actors.node.address, 1)
            )  # the next nonce
            batch_id = await chain.wait_commit(commit, timeout_s=15)
            await other
            assert batch_id is not None, f"commit {i} that landed was dropped"
            receipt = w3.eth.get_transaction_receipt(commit.tx_hash)  # type: ignore[arg-type]
            assert receipt["status"] == 1
            batch_ids.append(batch_id)
    finally:
        w3.provider.make_request("evm_setIntervalMining", [0])  # type: ignore[arg-type]
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    assert len(set(batch_ids)) == 3, "three batches, each committed once"


# -- the witness cache ----------------------------------------------------------------------------------


async def test_defence_the_witness_cache_keeps_forms_apart_and_never_caches_a_failed_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`collect_witness` with `TraceRecorder.witness_cache`: the same CID named as a ``file`` and
    read by ``store_read`` (``read``), and a dag-cbor block named as a ``block`` and read, each go
    in the list their form gives, exactly as without a cache; a read that failed (the store did not
    have the block yet) is not cached, so the next collection reads it again and gets its bytes.
    The pairs are what `witness_reads` gives (FAKE: patched in, instead of building the events
    that name them); the store is the real embedded one."""
    store = in_process_client(tmp_path / "store")
    try:
        fcid = await store.add_file(b"a file the agent read")
        bcid = await store.put_dag({"note": "a dag-cbor block"})
        later = {"note": "written after the first size check"}
        lcid = compute_cid(encode_dag(later), "dag-cbor")
        pairs = [("file", fcid), ("read", fcid), ("block", bcid), ("read", bcid), ("read", lcid)]
        monkeypatch.setattr(trace_module, "witness_reads", lambda _events: pairs)
        cache: dict[tuple[str, str], tuple[str, bytes]] = {}
        with pytest.raises(Exception):  # noqa: B017 (the store has no such block yet)
            await collect_witness(store, [], cache)
        assert ("read", lcid) not in cache, "a failed read is not cached"
        assert cache[("read", fcid)][0] == "file" and cache[("read", bcid)][0] == "block"

        assert await store.put_dag(later) == lcid
        cached = await collect_witness(store, [], cache)
        fresh = await collect_witness(store, [])
        assert cached == fresh
        assert cached.files == (await store.cat(fcid),)
        assert set(cached.blocks) == {await store.get_block(bcid), await store.get_block(lcid)}
        assert cached.raw == ()
    finally:
        await store.aclose()
