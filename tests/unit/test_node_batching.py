"""Batching, proofs, redemption and restart of the node service (FAKE executor and chain)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from eth_account import Account
from node_fixtures import FakeNode, make_fake_node
from supernet.node.service.models import TaskStatus
from supernet.node.service.ports import CommitPending, RootsSnapshot
from supernet.node.service.redeemer import GAS_PER_VOUCHER, Redeemer, RedeemPolicy
from supernet.sdk.chain.merkle import verify
from supernet.sdk.chain.receipts import Receipt, recover_receipt_signer

FEE = 10**12


async def _submit(node: FakeNode, text: str, cumulative: int) -> str:
    r = await node.http.post("/v1/tasks", json=node.body(text, cumulative=cumulative))
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def _committed(node: FakeNode, task_id: str) -> dict:
    for _ in range(300):
        r = await node.http.get(f"/v1/tasks/{task_id}/receipt")
        if r.status_code == 200 and (r.json().get("batch") or {}).get("status") == "committed":
            return r.json()
        await asyncio.sleep(0.02)
    raise AssertionError(f"receipt of {task_id} was not committed")


async def test_receipts_batched_with_valid_proofs(fake_node: FakeNode) -> None:
    runner = asyncio.create_task(fake_node.service.batcher.run_forever())  # type: ignore[union-attr]
    try:
        ids = [await _submit(fake_node, f"t{i}", FEE * (i + 1)) for i in range(3)]
        docs = [await _committed(fake_node, t) for t in ids]
    finally:
        fake_node.service.batcher.stop()  # type: ignore[union-attr]
        await runner
    roots = {c[0] for c in fake_node.chain.commits}
    assert len(fake_node.chain.commits) == 2  # size 2, then the age limit cut the third
    for doc in docs:
        receipt = Receipt.from_json(doc["receipt"])
        proof = [bytes.fromhex(p[2:]) for p in doc["batch"]["proof"]]
        root, count = fake_node.chain.commits[doc["batch"]["chainBatchId"] - 1][:2]
        assert root in roots and verify(proof, root, receipt.leaf(), doc["batch"]["index"], count)
        assert recover_receipt_signer(receipt, bytes.fromhex(doc["signature"][2:])) == fake_node.address
    manifest = await fake_node.store.get_dag(docs[0]["batch"]["manifestCid"])
    entry = manifest["receipts"][docs[0]["batch"]["index"]]
    assert entry["receipt"] == docs[0]["receipt"] and entry["requestSignature"].startswith("0x")


async def test_redeem_only_finished_work(fake_node: FakeNode) -> None:
    fake_node.executor.fail_on = "boom"
    ok = await _submit(fake_node, "fine", FEE)
    bad = await _submit(fake_node, "boom", 2 * FEE)
    for tid in (ok, bad):
        await fake_node.service.ctx.worker.wait(tid)  # type: ignore[union-attr]
    db = fake_node.service.ctx.db  # type: ignore[union-attr]
    assert db.task(bad).status is TaskStatus.FAILED  # type: ignore[union-attr]
    assert db.billed(fake_node.user.address) == FEE  # the failed task is not billed
    redeemer = Redeemer(db, fake_node.chain, interval_s=60)
    assert len(await redeemer.redeem_once()) == 1
    assert fake_node.chain.redeemed_amounts[fake_node.user.address] == FEE
    assert await redeemer.redeem_once() == []  # nothing new: no second charge
    # the next voucher only needs to cover billed work: FEE + FEE, not 3 * FEE
    third = await _submit(fake_node, "again", 2 * FEE)
    await fake_node.service.ctx.worker.wait(third)  # type: ignore[union-attr]
    await redeemer.redeem_once()
    assert fake_node.chain.redeemed_amounts[fake_node.user.address] == 2 * FEE


async def test_restart_resumes_or_refuses(tmp_path: Path) -> None:
    node = await make_fake_node(tmp_path / "n")
    node.executor.gate = asyncio.Event()  # tasks hang: the "crash" comes mid-task
    live = await _submit(node, "resume me", FEE)
    late_body = node.body("too late", cumulative=2 * FEE)
    r = await node.http.post("/v1/tasks", json=late_body)
    late = r.json()["id"]
    await asyncio.sleep(0.05)
    await node.http.aclose()
    await node.service.cleanup()  # tasks cancelled, left `running` in the database
    # shorten the second task's deadline as if the restart came after it
    with sqlite3.connect(tmp_path / "n" / "node.sqlite3") as c:
        c.execute("UPDATE tasks SET deadline = 1 WHERE id = ?", (late,))
    again = await make_fake_node(tmp_path / "n", node.chain)  # the chain outlives the node
    try:
        await again.service.ctx.worker.wait(live)  # type: ignore[union-attr]
        db = again.service.ctx.db  # type: ignore[union-attr]
        assert db.task(live).status is TaskStatus.DONE  # type: ignore[union-attr]
        assert db.task(late).status is TaskStatus.REFUSED  # type: ignore[union-attr]
        assert again.address == node.address  # same key from the data directory
        best = db.redeemable_voucher(node.user.address)
        assert best is not None and best[0] == FEE  # the refused task is never collected
    finally:
        await again.http.aclose()
        await again.service.cleanup()


async def test_a_batch_is_never_committed_twice(fake_node: FakeNode) -> None:
    """A crash between sending `commitBatch` and recording its hash (or a wait that gave up while
    the transaction still landed) must not make the node commit the same batch again."""
    tid = await _submit(fake_node, "once", FEE)
    await fake_node.service.ctx.worker.wait(tid)  # type: ignore[union-attr]
    batcher = fake_node.service.batcher
    assert batcher is not None
    batch = await batcher.flush()
    assert batch is not None and batch.status == "committed"
    commits = len(fake_node.chain.commits)
    db = fake_node.service.ctx.db  # type: ignore[union-attr]
    with db.transaction() as c:  # as if the node died right after sending, before recording anything
        c.execute(
            "UPDATE batches SET status = 'sealed', tx_hash = NULL, chain_batch_id = NULL WHERE id = ?",
            (batch.id,),
        )
    sealed = db.batch(batch.id)
    assert sealed is not None and sealed.status == "sealed"
    again = await batcher.commit(sealed)
    assert len(fake_node.chain.commits) == commits, "no second commitBatch"
    assert again.chain_batch_id == batch.chain_batch_id and again.status == "committed"


async def test_a_pending_commit_is_rebroadcast_never_replaced(fake_node: FakeNode) -> None:
    """While a signed commit is pending (a wait that gave up, a restart), the batcher broadcasts the
    same persisted transaction again and signs nothing new: two signed commits of one batch would
    carry two nonces, and both could land."""
    tid = await _submit(fake_node, "pending", FEE)
    await fake_node.service.ctx.worker.wait(tid)  # type: ignore[union-attr]
    batcher = fake_node.service.batcher
    assert batcher is not None
    chain, db = fake_node.chain, fake_node.service.ctx.db  # type: ignore[union-attr]
    chain.paused = True
    with pytest.raises(CommitPending):
        await batcher.flush()
    [sent] = [b for b in db.unfinished_batches()]
    assert sent.status == "sent" and db.commit_tx(sent.id) is not None  # persisted before broadcast
    for _ in range(2):  # the next rounds: the same transaction again
        with pytest.raises(CommitPending):
            await batcher.commit(sent)
    assert len(chain.signed) == 1 and chain.broadcasts == 3 and chain.commits == []
    chain.paused = False
    done = await batcher.commit(sent)
    assert done.status == "committed" and len(chain.commits) == 1 and len(chain.signed) == 1


async def test_redeem_policy_worth_its_gas_always_before_a_close_and_chunked(fake_node: FakeNode) -> None:
    """Vouchers are redeemed when what they owe is worth ``worth_factor`` times their gas at the
    current gas price, whatever they owe once the user asks to close the channel (the node must
    redeem before the withdrawal delay ends), and in calls of at most ``MAX_REDEEM_BATCH``."""
    db = fake_node.service.ctx.db  # type: ignore[union-attr]
    user = fake_node.user.address
    tid = await _submit(fake_node, "pay me", FEE)
    await fake_node.service.ctx.worker.wait(tid)  # type: ignore[union-attr]
    policy = RedeemPolicy(worth_factor=100)
    fake_node.chain.price = FEE // (100 * GAS_PER_VOUCHER) + 1  # the fee is not worth the gas
    redeemer = Redeemer(db, fake_node.chain, interval_s=60, policy=policy)
    assert await redeemer.redeem_once() == []
    fake_node.chain.closing[user] = 10**9  # the user asked to close: redeem now, worth it or not
    assert len(await redeemer.redeem_once()) == 1
    assert fake_node.chain.redeemed_amounts[user] == FEE
    del fake_node.chain.closing[user]
    fake_node.chain.price = 0
    assert policy.threshold(10**9) == 100 * GAS_PER_VOUCHER * 10**9
    assert RedeemPolicy(min_amount_wei=7).threshold(10**9) == 7

    # many users: several calls, none above the contract's batch limit
    fake_node.chain.max_batch = 2
    for i in range(5):
        other = Account.create()
        fake_node.chain.deposits[other.address] = 10**18
        r = await fake_node.http.post("/v1/tasks", json=fake_node.body(f"u{i}", cumulative=FEE, user=other))
        assert r.status_code == 202, r.text
        await fake_node.service.ctx.worker.wait(r.json()["id"])  # type: ignore[union-attr]
    calls = fake_node.chain.redeem_calls
    assert len(await redeemer.redeem_once()) == 3  # 5 vouchers in calls of at most 2
    assert fake_node.chain.redeem_calls == calls + 3


async def test_due_vouchers_ride_on_the_commit(fake_node: FakeNode) -> None:
    """What the policy says is due is redeemed in the batch's own commit transaction (one
    transaction per batch), recorded once it landed, and not redeemed again on its own."""
    service, chain = fake_node.service, fake_node.chain
    assert service.batcher is not None and service.redeemer is not None
    assert service.batcher.settlement is service.redeemer, "the runner wires settlement into commits"
    service.redeemer.policy = RedeemPolicy(min_amount_wei=1)  # everything is worth redeeming
    ids = [await _submit(fake_node, f"t{i}", FEE * (i + 1)) for i in range(2)]
    for tid in ids:
        await service.ctx.worker.wait(tid)  # type: ignore[union-attr]
    await service.batcher.flush()
    assert chain.settled_in_commits == [1], "the one user's latest voucher rode on the commit"
    assert chain.redeemed_amounts[fake_node.user.address] == 2 * FEE
    assert chain.redeem_calls == 0, "no redemption transaction of its own"
    assert service.ctx.db.redeemed(fake_node.user.address) == 2 * FEE  # type: ignore[union-attr]
    assert await service.redeemer.redeem_once() == []  # nothing left: never paid twice


async def test_a_voucher_that_cannot_be_settled_never_holds_a_batch_back(fake_node: FakeNode) -> None:
    """If the commit cannot be signed with its vouchers (one went stale meanwhile, say), the batch
    is committed without them and the redeemer collects them on its own."""
    service, chain = fake_node.service, fake_node.chain
    assert service.batcher is not None and service.redeemer is not None
    service.redeemer.policy = RedeemPolicy(min_amount_wei=1)
    chain.refuse_vouchers = True
    tid = await _submit(fake_node, "pay me", FEE)
    await service.ctx.worker.wait(tid)  # type: ignore[union-attr]
    batch = await service.batcher.flush()
    assert batch is not None and batch.chain_batch_id == 1
    assert chain.settled_in_commits == [0]
    assert len(await service.redeemer.redeem_once()) == 1
    assert chain.redeemed_amounts[fake_node.user.address] == FEE


def test_batch_slots_pick_the_lowest_free_one() -> None:
    """`BatchSlots`: a slot is free once its batch is `retention` old; otherwise a new one."""
    from supernet.node.service.chain import BatchSlots

    slots = BatchSlots(retention_s=100, used={0: 1, 1: 1})  # two reserved slots ("used" at time 1)
    assert slots.pick(now=1000) == 0
    slots.used(0, 1000)
    assert slots.pick(now=1010) == 1
    slots.used(1, 1010)
    assert slots.pick(now=1020) == 2, "every slot holds a batch that can still be disputed"
    slots.used(2, 1020)
    assert slots.pick(now=1099) == 3 and slots.pick(now=1100) == 0


async def test_receipts_are_batched_in_the_order_they_were_stored(
    fake_node: FakeNode, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receipt stored first is committed no later, even if the wall clock stepped back in
    between (an NTP correction): a user's task reads the writes of the one before only once that
    one's receipt is stored, and validators require the writer committed no later than the reader
    (docs/validator.md, "Where a task's roots come from")."""
    import types

    import supernet.node.service.db as node_db

    first = await _submit(fake_node, "first", FEE)
    await fake_node.service.ctx.worker.wait(first)  # type: ignore[union-attr]
    stepped_back = types.SimpleNamespace(time=lambda: 1_000.0)  # the database's clock steps back
    monkeypatch.setattr(node_db, "time", stepped_back)
    second = await _submit(fake_node, "second", 2 * FEE)
    await fake_node.service.ctx.worker.wait(second)  # type: ignore[union-attr]
    monkeypatch.undo()
    db = fake_node.service.ctx.db  # type: ignore[union-attr]
    assert db.receipt(second).created_at < db.receipt(first).created_at  # type: ignore[union-attr]
    assert [r.task_id for r in db.pending_receipts(10)] == [first, second]


async def test_one_user_cannot_hold_every_worker_slot(fake_node: FakeNode) -> None:
    """Found reviewing the receipt ordering: a user's tasks can wait in the executor for long (for
    the user's own memory, held by another of their tasks; for a confirmation never given) and,
    failing, are not billed; with one worker semaphore for all, one user's stuck tasks could fill
    every slot and keep every other user's task from starting. A user gets at most a quarter of
    the slots (4 of 16 here); another user's task still starts."""
    fake_node.executor.gate = asyncio.Event()  # every task hangs in the executor until released
    mine = [await _submit(fake_node, f"stuck {i}", FEE * (i + 1)) for i in range(6)]
    other = Account.create()
    fake_node.chain.deposits[other.address] = 10**18
    r = await fake_node.http.post("/v1/tasks", json=fake_node.body("hello", cumulative=FEE, user=other))
    assert r.status_code == 202, r.text
    theirs = str(r.json()["id"])
    for _ in range(200):
        if theirs in fake_node.executor.runs:
            break
        await asyncio.sleep(0.01)
    assert theirs in fake_node.executor.runs  # the other user's task started
    assert len([t for t in fake_node.executor.runs if t in mine]) == 4  # the cap: 4 of my 6 running
    fake_node.executor.gate.set()
    for t in [*mine, theirs]:
        await fake_node.service.ctx.worker.wait(t)  # type: ignore[union-attr]
    db = fake_node.service.ctx.db  # type: ignore[union-attr]
    assert all(db.task(t).status is TaskStatus.DONE for t in [*mine, theirs])  # type: ignore[union-attr]


async def test_a_tasks_roots_are_stored_in_its_receipts_transaction(fake_node: FakeNode) -> None:
    """The roots holding a task's writes reach the disk with its receipt, in one transaction
    (`Database.finish_task`): a crash keeps both or neither."""
    fake_node.executor.stores_roots = True
    task_id = await _submit(fake_node, "remember", FEE)
    await fake_node.service.ctx.worker.wait(task_id)  # type: ignore[union-attr]
    db = fake_node.service.ctx.db  # type: ignore[union-attr]
    saved = db.load_roots()
    assert db.receipt(task_id) is not None
    assert saved is not None and saved.roots["memory"][fake_node.user.address.lower()] == task_id
    # a second store of that receipt fails (one receipt per task): its roots are not kept either
    row = db.receipt(task_id)
    assert row is not None
    with pytest.raises(sqlite3.IntegrityError):
        db.finish_task(task_id, "again", "cid", row, None, RootsSnapshot(99, {"memory": {}}))
    after = db.load_roots()
    assert after is not None and after.seq == saved.seq and after.roots == saved.roots
