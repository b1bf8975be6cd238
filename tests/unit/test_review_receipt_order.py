"""Review of "a successful task's receipt is stored before its writes become its user's roots"
(`Kernel.submit(on_success=...)`, `KernelExecutor.run(on_result=...)`, `TaskWorker._run`'s ``store``,
`Kernel.namespace_roots` masking) and of the client's "latest memory and files" check
(`supernet.sdk.client.freshness.check_latest`).

Written as ``test_bug_*`` tests that passed while each problem existed; the fixed ones now assert
the defence (``test_defence_*``, the docstring saying what the problem was and how it was fixed),
and the one once left open (a crash between the receipt and the roots) is closed by design.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest
from supernet.node.kernel.access import namespace_of
from supernet.node.service.db import Database
from supernet.node.service.kernel_executor import KernelExecutor
from supernet.node.service.ports import Job, JobResult, RootsSnapshot
from supernet.sdk.client.freshness import SeenRoot, check_latest
from supernet.sdk.formats.trace import Trace

from tests.unit.test_root_origins import OTHER
from tests.unit.test_validator_attacks import MODEL_ID, NODE, USER
from tests.unit.test_validator_attacks3 import AGENTS, Notes, SlowNotes, stand_in_kernel

NS = namespace_of(USER.address, Notes.agent_id)


def tid(n: int) -> str:
    return "0x" + f"{n:064x}"


def job(task_id: str, task_input: Any, user: str = USER.address, agent: str = Notes.agent_id) -> Job:
    return Job(task_id=task_id, user=user, agent=agent, model_id=MODEL_ID, input=task_input)


def quiet(_text: str) -> None:
    pass


async def trace_of(kernel: Any, cid: str) -> Trace:
    return Trace.from_dag(await kernel.store.get_dag(cid))


async def test_defence_a_roots_save_failure_never_undoes_a_receipted_tasks_writes(tmp_path: Path) -> None:
    """FIXED (the hook only stores the receipt; once it returns the writes stay, and what is saved
    after, by `KernelExecutor.run`, can no longer undo anything). The problem:
    `KernelExecutor.run`'s ``succeeded`` hook stored the receipt (``on_result``) and then
    saved the roots; if the save raised (disk full, EIO, a missing data dir) the exception left
    ``on_success`` and `Kernel._execute` released with ``keep=False``: the writes of a task whose
    receipt IS stored were undone (and their roots unpinned). The worker saw ``stored`` and left
    the task ``done`` (charged, batched), yet the user's next task no longer saw its note, and the
    client's "latest memory and files" check accused the honest node."""
    db = Database.open(tmp_path / "node.sqlite3")
    receipts: list[JobResult] = []

    async def store(result: JobResult) -> None:
        receipts.append(result)

    def disk_full(_snapshot: Any) -> None:
        raise OSError("No space left on device")

    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        executor = KernelExecutor(kernel, "model", 100, db)
        save = db.save_roots
        db.save_roots = disk_full  # type: ignore[method-assign]
        with pytest.raises(OSError):
            await executor.run(job(tid(1), {"text": "first"}), quiet, on_result=store)
        assert len(receipts) == 1  # the receipt is stored: the task reads done and is charged
        assert kernel.storage.roots.root(NS) is not None  # ... and its write stays
        db.save_roots = save  # type: ignore[method-assign]  # the disk is back
        b = await executor.run(job(tid(2), {"text": "second"}), quiet, on_result=store)
        trace_a, trace_b = await trace_of(kernel, receipts[0].trace_cid), await trace_of(kernel, b.trace_cid)
        seen: dict[str, SeenRoot] = {}
        first = await check_latest(seen, NODE.address, tid(1), 1.0, 2.0, trace_a, kernel.store.get_dag)
        second = await check_latest(seen, NODE.address, tid(2), 3.0, 4.0, trace_b, kernel.store.get_dag)
    assert first is not None and first[0]
    assert second is not None and second[0], second  # the honest node is not accused


async def test_defence_a_crash_right_after_the_receipt_keeps_the_writes(tmp_path: Path) -> None:
    """FIXED (the roots holding a task's writes are stored in its receipt's transaction:
    `JobResult.roots`, `Database.finish_task`). The problem (was ``test_known_limit_...``): the
    receipt was stored first and the roots file written after; a crash in between left the
    receipt (task ``done``, charged, batched; the client received the result and remembered its
    last root) with the roots from before the task. After the restart the user's next task started
    from the older root and `check_latest` reported "latest memory and files" FAILED against an
    honest node that merely lost power. (A second defence of the old design, against a node stop
    while the roots file was being written after the receipt, is gone with the window: nothing is
    awaited between the receipt's transaction and the task's release.)

    Here the node's real worker path stores the receipt (`TaskWorker._finish` ->
    `Database.finish_task`), and the power goes out right after: nothing the executor saves later
    reaches the disk."""
    db = Database.open(tmp_path / "node.sqlite3")
    receipts: list[JobResult] = []

    async def store(result: JobResult) -> None:  # what `TaskWorker._finish` stores, in one transaction
        receipts.append(result)
        assert result.roots is not None
        db.save_roots(result.roots)

    def power_lost(_snapshot: Any) -> None:
        raise OSError("the machine is off")

    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        executor = KernelExecutor(kernel, "model", 100, Database.open(tmp_path / "node.sqlite3"))
        assert executor.db is not None
        executor.db.save_roots = power_lost  # type: ignore[method-assign]
        with pytest.raises(OSError):
            await executor.run(job(tid(4), {"text": "remember me"}), quiet, on_result=store)
        written = kernel.storage.roots.root(NS)
    assert written is not None
    saved = db.load_roots()
    assert saved is not None and saved.roots["storage"][NS] == written  # the write is on disk
    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:  # the restart
        executor = KernelExecutor(kernel, "model", 100, Database.open(tmp_path / "node.sqlite3"))
        assert kernel.storage.roots.root(NS) == written
        b = await executor.run(job(tid(5), {"text": "next"}), quiet, on_result=store)
        trace_a, trace_b = await trace_of(kernel, receipts[0].trace_cid), await trace_of(kernel, b.trace_cid)
        seen: dict[str, SeenRoot] = {}
        await check_latest(seen, NODE.address, tid(4), 1.0, 2.0, trace_a, kernel.store.get_dag)
        verdict = await check_latest(seen, NODE.address, tid(5), 10.0, 11.0, trace_b, kernel.store.get_dag)
    assert verdict is not None and verdict[0], verdict  # the honest node is not accused


async def test_defence_an_older_roots_snapshot_never_replaces_a_newer_one(tmp_path: Path) -> None:
    """DEFENCE. Snapshots are taken in order on the event loop but stored by different paths (a
    task's receipt transaction, the executor's saves after each outcome): the database keeps the
    newest by number, whatever order the writes land in, and a restarted executor numbers after it."""
    db = Database.open(tmp_path / "node.sqlite3")
    db.save_roots(RootsSnapshot(2, {"memory": {"ns": "newer"}}))
    db.save_roots(RootsSnapshot(1, {"memory": {"ns": "older"}}))
    saved = db.load_roots()
    assert saved is not None and (saved.seq, saved.roots["memory"]["ns"]) == (2, "newer")
    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        executor = KernelExecutor(kernel, "model", 100, db)
        assert executor._roots_snapshot().seq == 3


async def test_defence_the_client_orders_sends_and_results_by_its_own_logical_clock(
    tmp_path: Path,
) -> None:
    """FIXED (sends and results are numbered by the client state's persisted logical clock,
    `ClientState.tick`, not the wall clock). The problem: with wall-clock times, a clock stepping
    back (NTP, a VM resume, a state folder moved to another machine) made a result look earlier
    than a send: the client sends A, then B concurrently; the node runs B first, then A on top of
    it; if A's result is stamped before B's send, B was judged against A's last root and the
    honest node was accused. Now the order is the order of events in this state, whatever the
    machine's clock does."""
    from supernet.sdk.client.state import ClientState

    state = ClientState.open(tmp_path / "client")
    sent_a, sent_b = state.tick(), state.tick()  # A sent, then B, before any result
    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        executor = KernelExecutor(kernel, "model", 100)
        b = await executor.run(job(tid(7), {"text": "B"}), quiet)  # B ran first on the node
        a = await executor.run(job(tid(6), {"text": "A"}), quiet)
        done_a, done_b = state.tick(), state.tick()  # A's result came first, whatever the clock said
        trace_a, trace_b = await trace_of(kernel, a.trace_cid), await trace_of(kernel, b.trace_cid)
        ok_a = await check_latest(
            state.roots, NODE.address, tid(6), sent_a, done_a, trace_a, kernel.store.get_dag
        )
        ok_b = await check_latest(
            state.roots, NODE.address, tid(7), sent_b, done_b, trace_b, kernel.store.get_dag
        )
    assert ok_a is not None and ok_a[0] and ok_b is not None and ok_b[0], (ok_a, ok_b)
    state.save()
    assert ClientState.open(tmp_path / "client").tick() == 5  # the clock survives a restart


async def test_defence_an_unreceipted_write_never_reaches_the_roots_file(
    tmp_path: Path,
) -> None:
    """FIXED (``st.receipted`` is set only after ``on_success`` returned). The problem (latent: the
    node's own worker stores synchronously, but `ResultSink` is declared
    awaitable). `_execute` sets ``st.receipted = True`` *before* awaiting ``on_success``, so while a
    sink is still storing (an async database, a remote store) any other user's task that ends saves
    `namespace_roots()` with this task's writes unmasked. If the receipt store then fails, the task
    fails and its writes are undone in memory, but the roots file already names them; a crash before
    the next save restores a root whose writer has no receipt (an origin finding on an honest node,
    the very thing the masking was added to prevent).
    Fix: unmask only after the receipt is stored: have `KernelExecutor` mark the task (e.g. a
    `Kernel.receipted(task_id)` call, or ``on_success`` split into ``store`` then ``persist``) after
    ``on_result`` returns, and set ``st.receipted`` there."""
    db = Database.open(tmp_path / "node.sqlite3")
    entered = asyncio.Event()
    proceed = asyncio.Event()

    async def slow_failing_store(result: JobResult) -> None:
        entered.set()
        await proceed.wait()
        raise OSError("database is locked")

    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        executor = KernelExecutor(kernel, "model", 100, db)
        run_a = asyncio.create_task(
            executor.run(job(tid(8), {"text": "no receipt"}), quiet, on_result=slow_failing_store)
        )
        await asyncio.wait_for(entered.wait(), 10)
        await executor.run(job(tid(9), {"text": "hi"}, user=OTHER.address), quiet)  # another user's task
        on_disk = db.load_roots()
        assert on_disk is not None
        proceed.set()
        with pytest.raises(OSError):
            await run_a
        assert kernel.storage.roots.root(NS) is None  # A failed: its write undone in memory
    assert on_disk.roots["storage"].get(NS) is None  # ... and never persisted while A had no receipt


async def test_defence_concurrent_tasks_verified_in_any_order_never_look_stale(tmp_path: Path) -> None:
    """DEFENCE. Three tasks of one client sent together (before any result), results received in
    an order unlike the node's, then a fourth task sent after all results: whatever order the
    client verifies them in, "latest memory and files" passes. The node serialises a user's tasks,
    so every receipted task's last root is below every later-started task's first root, and the
    check only judges a task against a result received before it was sent."""
    order: list[str] = []

    async def store(result: JobResult) -> None:
        order.append(result.trace_cid)

    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        executor = KernelExecutor(kernel, "model", 100)
        ids = [tid(20), tid(21), tid(22)]
        results = await asyncio.gather(
            *(
                executor.run(job(t, {"text": t[-2:]}, agent=SlowNotes.agent_id), quiet, on_result=store)
                for t in ids
            )
        )
        last = await executor.run(job(tid(23), {"text": "after"}, agent=SlowNotes.agent_id), quiet)
        traces = {t: await trace_of(kernel, r.trace_cid) for t, r in zip(ids, results, strict=True)}
        traces[tid(23)] = await trace_of(kernel, last.trace_cid)
        # client clock: sent 0, 1, 2; results received in reverse of the node's order; D sent at 10
        node_order = [t for cid in order for t, r in zip(ids, results, strict=True) if r.trace_cid == cid]
        times = {t: (float(i), 9.0 - node_order.index(t)) for i, t in enumerate(ids)}
        times[tid(23)] = (10.0, 11.0)
        for verify_order in itertools.permutations([*ids, tid(23)]):
            seen: dict[str, SeenRoot] = {}
            for t in verify_order:
                sent, done = times[t]
                verdict = await check_latest(
                    seen, NODE.address, t, sent, done, traces[t], kernel.store.get_dag
                )
                assert verdict is not None and verdict[0], (verify_order, t, verdict)


async def test_defence_a_failed_task_leaves_the_roots_for_the_next_and_no_receipt(tmp_path: Path) -> None:
    """DEFENCE. A receipt store that fails before anything is stored (the worker's ``_finish``
    raising) fails the task and undoes its writes; `KernelExecutor` does not persist them, and the
    user's next task starts from the roots before it: consistent with "no receipt, no write"."""
    db = Database.open(tmp_path / "node.sqlite3")

    async def broken(result: JobResult) -> None:
        raise OSError("disk full")

    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        executor = KernelExecutor(kernel, "model", 100, db)
        with pytest.raises(OSError):
            await executor.run(job(tid(30), {"text": "lost"}), quiet, on_result=broken)
        assert kernel.storage.roots.root(NS) is None
        b = await executor.run(job(tid(31), {"text": "next"}), quiet)
        trace_b = await trace_of(kernel, b.trace_cid)
    assert trace_b.events[0].prev_root is None
    saved = db.load_roots()
    assert saved is not None and saved.roots["storage"].get(NS) is not None  # B's own write only
