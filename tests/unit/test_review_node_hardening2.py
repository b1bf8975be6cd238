"""Adversarial review (second hardening pass) of the node's HTTP service as an outside attacker or
a hostile user sees it: `supernet.node.service` (``app``, ``api``, ``auth``, ``routes_*``,
``streams``, ``worker``, ``runner``, ``db``, ``redeemer``, ``batcher``, ``wallet_float``).

Not repeated (earlier reviews): the admission chain-read bound and funded cache
(test_review_admission_cache.py), read grants, body limits, nesting, one request spent once
across routes (test_review_node_api3.py), per-user worker slots and the trace gate
(test_review_node_hardening.py), crash points of commit and redemption
(test_review_crash_consistency.py), availability griefing and the wallet float's answers
(test_review_hostile_parties*.py).

Real parts: the node service's own app and uvicorn serving path (`NodeService.run_forever`), its
real `Database`, `Redeemer` and `Web3Chain` on the session's Anvil with the compiled contracts,
the embedded content store. The executor and (where the chain plays no part) the chain are the
FAKE ones of ``tests/node_fixtures.py``.

Found:

1. MEDIUM — an unauthenticated peer holds a connection open for as long as it likes
   (`test_defence_a_silent_connection_is_held_open_forever`). `NodeService.run_forever`
   (runner.py) serves with uvicorn's defaults: no ``limit_concurrency`` and no timeout on a
   connection that has not sent a whole request (uvicorn's h11 protocol arms its keep-alive timer
   only after a response). A connection that sends half a request line, or nothing, is held for
   good: a slowloris with no signature, no deposit and no fee. Each costs a file descriptor of
   the node process, which also needs descriptors for its RPC, its store and its database; once
   they run out the node can neither serve tasks nor commit nor answer a claim. The compose
   file publishes the nodes' ports directly, with no proxy in front.
   FIXED: each connection must deliver a whole request (headers and body) within 10 s of opening
   or of its last response (`service/http_protocol.DeadlineH11Protocol`), and uvicorn's
   ``limit_concurrency`` is ``[api] max_connections`` (512, 503 beyond).
2. MEDIUM — every user who ever had a task done here costs one sequential chain read before
   every commit, forever (`test_defence_every_past_payer_is_read_from_the_chain_before_each_commit`).
   `Redeemer.due` (redeemer.py) reads ``Payments.channel`` for every user in
   ``users_with_vouchers()`` (all users ever, settled and gone included), one ``to_thread`` call
   after another, and the batcher calls it (`Redeemer.for_commit`, batcher.py ``_sign``) under
   the settlement lock before it signs each commit; the redeemer's own round holds the same
   lock for a full scan too. Measured: 300 past payers, 300 reads, 1.8 s (6 ms a read) on the
   local Anvil, before a commit with nothing to settle. At the default fee (1e12 wei) and
   ``worth_factor`` a user is redeemed only once it owes 2,500 fees or closes, so nearly every
   user stays in the scan. N
   keys with one task each (N fees and N deposits) make each commit wait N round trips to the
   RPC: at a hosted RPC's 20-50 ms, a few thousand keys push a batch past ``commit_margin_s``
   and 10^4 past ``promise_s``, after which every promised receipt is an omission claim that
   slashes the honest node; long before that, commits (16 receipts each) fall behind the tasks.
   FIXED: the redeemer reads a channel only when its own records leave something due possible
   (best voucher above the recorded redeemed and deposit, and worth the gas or closing), learning
   closing channels from one ``eth_getLogs`` of ``WithdrawalRequested`` per round from a cursor
   kept in the database (`Redeemer.due`; 0 reads here).
3. MEDIUM — one funded key gets any number of tasks admitted and stored, unbilled
   (`test_defence_one_funded_key_queues_unbounded_tasks_that_are_never_billed`). The only bound
   on a user's unfinished tasks is the deposit (voucher = billed + fee <= deposit): 10^6 tasks
   per ether at the default fee. A task still queued behind the user's own per-user slots when its
   deadline passes is refused, never charged, and the refund returns to the deposit for the next
   round. Each admission costs the node two signature recoveries, a sum over the user's billed
   tasks and an fsync'd insert, and every refused task stays in ``node.sqlite3`` with its input
   (up to 16 KiB) forever. Measured here: 96 tasks of ~16 KiB admitted on a deposit's credit,
   4 ran and were billed, 92 refused free, ~1.5 MB kept; repeatable with the same deposit.
   FIXED: a user's accepted and running tasks are capped at admission (``[api]
   max_unfinished_per_user``, 16: four times the worker's per-user slots; 429 ``too_many_tasks``,
   checked again inside the storing transaction).
4. LOW — ``GET /healthz`` (no authentication) counts every task the node ever had
   (``Database.count_by_status``: ``GROUP BY status`` over the whole table) inline on the event
   loop (`test_defence_healthz_work_grows_with_the_nodes_history`): ~21 ms at 300,000 tasks on this
   machine, so some 50 requests a second keep the loop (admissions, streams, the batcher) busy;
   finding 3 grows the table for free.
   FIXED: the health check reports the node's load (tasks accepted and running), counted through
   the status index (`Database.count_unfinished`); the totals are in /metrics.

Fixes (by design): (1) serve with ``limit_concurrency`` (and a per-address cap) and a header
timeout (uvicorn's ``timeout_keep_alive`` from accept, or a proxy in front documented as
required); (2) drop users with nothing owed from the scan (a voucher no larger than what the
chain already redeemed needs no read) and learn of closing channels from
``Payments.WithdrawalRequested`` logs (one ``eth_getLogs`` per round) instead of one read per user,
and never scan inside the commit's critical section; (3) cap a user's unfinished tasks at
admission (e.g. its per-user slots times a small queue depth, 429 past it) and prune refused
tasks' inputs; (4) keep the status counts in memory (updated with each status change) or drop
them from the health check.

Checked and holding:

- a signed request re-encoded (keys in another order, hex in upper case, numbers as JSON numbers,
  extra fields, whitespace) is the same task (the id is the EIP-712 hash of the typed struct):
  409, one task, billed once (`test_defence_a_re_encoded_replay_is_the_same_task_and_billed_once`);
- the identity is the recovered signer: a request naming a funded victim as ``user`` but signed
  by another key is a 401 and changes nothing of the victim's nonce or billing
  (`test_defence_the_user_field_is_not_the_identity`);
- the chat route compiles a user's grammar before reading a signature (`chat_plan`), but within
  `check_budget` llguidance compiles lazily: regexes with exponential DFAs, counted repetitions,
  256 patterns and huge length/array bounds each took under 40 ms (probed, no test);
- the wallet float pulls every credit when an answer is short, so a run of claims costs the node
  only tips (read; the float before commits is the documented limit "Commits still pay from the
  wallet alone").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from eth_account import Account
from eth_utils import to_checksum_address
from node_fixtures import FakeNode, make_fake_node, signed_task
from supernet.node.service.chain import Web3Chain
from supernet.node.service.db import Database
from supernet.node.service.models import NewTask, ReceiptRow, TaskStatus
from supernet.node.service.redeemer import Redeemer
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.payments import Channel
from supernet.sdk.devnet.processes import free_port

from tests.chain_fixtures import Actors

FEE = 10**12  # the node's default task fee (NodeSettings.pricing)


@pytest_asyncio.fixture
async def node(tmp_path: Path) -> AsyncIterator[FakeNode]:
    n = await make_fake_node(tmp_path / "node", batch={"max_size": 2, "max_age_s": 0.2})
    yield n
    await n.http.aclose()
    await n.service.cleanup()
    await n.store.aclose()


# ------------------------------------------------------------------------------------------------
# 1. Connections held by anyone
# ------------------------------------------------------------------------------------------------


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closed the connection (EOF, or a 4xx then EOF) within ``seconds``."""
    end = asyncio.get_running_loop().time() + seconds
    while True:
        left = end - asyncio.get_running_loop().time()
        if left <= 0:
            return False
        try:
            data = await asyncio.wait_for(reader.read(4096), left)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        if not data:
            return True


async def test_defence_a_silent_connection_is_held_open_forever(tmp_path: Path) -> None:
    """MEDIUM. Attack: open TCP connections to the node's API and send half a request line (or
    nothing at all), then wait. No signature, no deposit, no fee. The node serves through
    `NodeService.run_forever`, which builds ``uvicorn.Config`` with no ``limit_concurrency`` and no
    header timeout; uvicorn's h11 protocol arms ``timeout_keep_alive`` (5 s) only once a response
    went out, so a connection that never completes a request is never timed out. Each holds one of
    the process's file descriptors, which the node also needs for its RPC, store and database
    connections: enough of them and it can neither take tasks nor commit nor answer a claim.

    Safe: the node drops a connection that has not sent a whole request within a bounded time
    (here: 12 s, over twice uvicorn's own 5 s keep-alive). Today both are still open after it."""
    port = free_port()
    n = await make_fake_node(tmp_path / "node", api={"port": port})
    serving = asyncio.create_task(n.service.run_forever())
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        for _ in range(200):  # until uvicorn listens
            with contextlib.suppress(OSError):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            await asyncio.sleep(0.05)
        # the node answers an honest request on the same server
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n")
        await w.drain()
        assert (await asyncio.wait_for(r.read(), 10)).startswith(b"HTTP/1.1 200")
        w.close()

        partial = await asyncio.open_connection("127.0.0.1", port)
        partial[1].write(b"GET /healthz HTTP/1.1\r\nHost: no")  # and never the rest
        await partial[1].drain()
        silent = await asyncio.open_connection("127.0.0.1", port)  # sends nothing at all
        conns = [partial, silent]
        closed = await asyncio.gather(_closed_within(partial[0], 12.0), _closed_within(silent[0], 12.0))
        assert all(closed), (
            f"after 12 s the node still holds a connection that sent half a request line "
            f"(closed: {closed[0]}) and one that sent nothing (closed: {closed[1]}): uvicorn as "
            f"`NodeService.run_forever` configures it has no header timeout and no connection "
            f"limit, so anyone holds the node's descriptors for free"
        )
    finally:
        for _, w in conns:
            w.close()
        n.service.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 15)
        await n.http.aclose()
        await n.service.cleanup()
        await n.store.aclose()


# ------------------------------------------------------------------------------------------------
# 2. The settlement scan on the commit's path
# ------------------------------------------------------------------------------------------------


class _CountingChain(Web3Chain):
    """The real `Web3Chain`, counting its ``Payments.channel`` reads (instrumentation only)."""

    reads = 0

    async def channel(self, user: str) -> Channel:
        self.reads += 1
        return await super().channel(user)


def _past_payer(db: Database, user: str, i: int) -> None:
    """A user who had one task done here (billed, voucher stored), as admission and the worker
    leave it in the node's database."""
    task_id = "0x" + os.urandom(32).hex()
    db.insert_task(
        NewTask(
            id=task_id,
            user=user,
            nonce=1,
            model_id="0x" + "aa" * 32,
            agent="chat",
            agent_hash="0x" + "bb" * 32,
            input=f"hello {i}",
            input_hash="0x" + "cc" * 32,
            max_fee=FEE,
            fee=FEE,
            deadline=2**40,
            signature="0x" + "11" * 65,
            voucher_amount=FEE,
            voucher_signature="0x" + "22" * 65,
        )
    )
    row = ReceiptRow(task_id, "0x" + os.urandom(32).hex(), "{}", "0x" + "33" * 65)
    db.finish_task(task_id, "hi", "bafytrace", row)


@pytest.mark.anvil
async def test_defence_every_past_payer_is_read_from_the_chain_before_each_commit(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. Attack: N keys each buy one task (one fee, one deposit) and leave (or simply stay:
    a user owing less than ``worth_factor`` x a voucher's gas, 2,500 fees at the defaults, is
    never redeemed before it closes). From then on, before each commit the batcher asks the
    redeemer what is due (`Redeemer.for_commit` in `Batcher._sign`, under the settlement lock),
    and `Redeemer.due` reads ``Payments.channel`` for every user in ``users_with_vouchers()``,
    one RPC round trip after another. Nothing is due here (the channels are empty: the users
    withdrew), so every read is wasted, and the commit waits for all of them; the redeemer's own
    round (every ``interval_s``) holds the lock for the same scan. The commit's time then grows
    with the node's user count without bound: past ``commit_margin_s`` (80 s) and ``promise_s``
    (600 s) the node breaks its signed promises and every receipt is a slashable omission.

    Safe: the work before a commit does not grow with users who owe nothing (here: at most a few
    reads for 300 of them). Before the fix: one read each."""
    users = 300
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        for i in range(users):
            _past_payer(db, to_checksum_address(os.urandom(20).hex()), i)
        chain = _CountingChain(network, actors.node)
        redeemer = Redeemer(db, chain, interval_s=60.0)  # the node's default policy
        started = time.perf_counter()
        due = await redeemer.for_commit()
        took = time.perf_counter() - started
        assert due == []  # nothing to settle
        assert chain.reads <= 5, (
            f"before signing one commit (nothing due) the node read {chain.reads} payment channels "
            f"from the chain, one per past payer, sequentially: {took:.2f} s here on a local Anvil "
            f"({took / max(chain.reads, 1) * 1000:.1f} ms a read); at a hosted RPC's 20-50 ms a read, "
            f"{int(80 / 0.03)} users hold every commit past commit_margin_s (80 s)"
        )
    finally:
        db.close()


# ------------------------------------------------------------------------------------------------
# 3. One key's unbounded, unbilled queue
# ------------------------------------------------------------------------------------------------


async def test_defence_one_funded_key_queues_unbounded_tasks_that_are_never_billed(node: FakeNode) -> None:
    """MEDIUM. Attack: a user with an ordinary deposit sends task after task, each with an input
    near the 16 KiB limit and a deadline a few seconds away, while its first tasks are running
    (slow agents: here the FAKE executor's gate holds them). Admission checks each voucher
    against the deposit (``billed + fee <= deposit``): 10^6 tasks per ether at the default fee,
    and nothing else bounds a user's unfinished tasks. The worker runs 4 of them (its per-user
    slots); the rest wait, reach a slot after their deadline and are refused, never charged: their
    fees leave ``billed`` and the same deposit covers the next round. The node did the admission
    work (two signature recoveries, a sum over the user's billed tasks, an fsync'd insert) and
    keeps every refused task's input in ``node.sqlite3`` forever.

    Safe: a user's unfinished tasks are capped at admission (a small multiple of its per-user
    slots; here: some of 96 refused). Today all 96 are admitted."""
    ctx = node.service.ctx
    assert ctx is not None
    node.executor.gate = asyncio.Event()  # the user's first tasks run long
    big = "x" * 16_000
    deadline = int(time.time()) + 4
    admitted, refused_at_admission = [], 0
    for i in range(96):
        billed = ctx.db.billed(node.user.address)
        body = node.body(f"{i} {big}", cumulative=billed + FEE, deadline=deadline)
        r = await node.http.post("/v1/tasks", json=body)
        if r.status_code == 202:
            admitted.append(r.json()["id"])
        else:
            assert r.status_code in (409, 429, 503), r.text
            refused_at_admission += 1
    await asyncio.sleep(max(0.0, deadline + 1.5 - time.time()))
    node.executor.gate.set()
    for tid in admitted:
        await ctx.worker.wait(tid)
    statuses = [ctx.db.task(t).status for t in admitted]  # type: ignore[union-attr]
    refused = statuses.count(TaskStatus.REFUSED)
    kept = sum(len(json.dumps(ctx.db.task(t).input)) for t in admitted)  # type: ignore[union-attr]
    billed = ctx.db.billed(node.user.address)
    assert refused_at_admission > 0, (
        f"one key had all {len(admitted)} tasks admitted on one deposit: {statuses.count(TaskStatus.DONE)} "
        f"ran and were billed ({billed} wei), {refused} were refused at their deadline and never "
        f"charged, and the node keeps {kept} bytes of their inputs; the same deposit does it again"
    )


# ------------------------------------------------------------------------------------------------
# 4. The unauthenticated health check
# ------------------------------------------------------------------------------------------------


def _fill(db: Database, count: int, start: int) -> None:
    """``count`` finished tasks, written as one transaction (a node's history, compressed)."""
    rows = [
        (
            f"0x{i:064x}",
            "0x" + "ab" * 20,
            "1",
            "0x",
            "chat",
            "0x",
            "x",
            "0x",
            "1",
            "1",
            0,
            "0x",
            TaskStatus.REFUSED if i % 3 else TaskStatus.DONE,
            0.0,
            0.0,
        )
        for i in range(start, start + count)
    ]
    with db.transaction() as c:
        c.executemany("INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,NULL,NULL,NULL,?,?)", rows)


async def test_defence_healthz_work_grows_with_the_nodes_history(node: FakeNode) -> None:
    """LOW. Attack: call ``GET /healthz`` (no authentication) in a loop. The handler calls
    ``Database.count_by_status``, a ``GROUP BY status`` over every task the node ever had, inline
    on the event loop (the database runs there): ~21 ms at 300,000 tasks on this machine, so ~50
    requests a second keep the loop that admits tasks, streams tokens and drives the batcher
    busy; the free refused tasks of the finding above grow the table at will.

    Measured without a clock: SQLite's virtual-machine steps for one ``/healthz`` (its progress
    handler, every 1,000 steps), at 1,000 and at 100,000 tasks. Safe: about the same. Today: ~100x.
    """
    ctx = node.service.ctx
    assert ctx is not None
    conn = ctx.db._db._conn  # the real connection, instrumented (no change to what runs)
    ticks = [0]

    def tick() -> int:
        ticks[0] += 1
        return 0

    async def cost() -> int:
        ticks[0] = 0
        conn.set_progress_handler(tick, 1000)
        try:
            r = await node.http.get("/healthz")
        finally:
            conn.set_progress_handler(None, 0)
        assert r.status_code == 200
        return ticks[0]

    _fill(ctx.db, 1_000, 0)
    small = await cost()
    _fill(ctx.db, 99_000, 1_000)
    large = await cost()
    assert large <= 2 * small + 10, (
        f"one unauthenticated /healthz ran {small}k SQLite steps at 1,000 tasks and {large}k at "
        f"100,000: it scans the node's whole history, on the event loop"
    )


# ------------------------------------------------------------------------------------------------
# Defences
# ------------------------------------------------------------------------------------------------


async def test_defence_a_re_encoded_replay_is_the_same_task_and_billed_once(node: FakeNode) -> None:
    """Tried: replay one signed request re-encoded so that a byte-level dedup would miss it: keys
    in reverse order, hex in upper case, ``maxFee``/``nonce``/``deadline`` and the voucher amount
    as JSON numbers instead of strings, extra unknown fields, extra whitespace. Holds: the task id
    is the EIP-712 hash of the typed request, so every form is the same task: 409, one row, the
    user billed one fee, one run."""
    ctx = node.service.ctx
    assert ctx is not None
    body = node.body("pay me once", cumulative=FEE)
    r = await node.http.post("/v1/tasks", json=body)
    assert r.status_code == 202, r.text
    tid = r.json()["id"]
    await ctx.worker.wait(tid)

    def upper(h: str) -> str:
        return "0x" + h[2:].upper()

    req = body["request"]
    forms = []
    forms.append(json.dumps(dict(reversed(list(body.items())))))
    forms.append(
        json.dumps(
            {
                **body,
                "request": {
                    **req,
                    "user": req["user"].lower(),
                    "node": req["node"].lower(),
                    "modelId": upper(req["modelId"]),
                    "agentHash": upper(req["agentHash"]),
                    "inputHash": upper(req["inputHash"]),
                    "maxFee": int(req["maxFee"]),
                    "nonce": int(req["nonce"]),
                    "deadline": int(req["deadline"]),
                },
                "signature": upper(body["signature"]),
                "voucher": {
                    "cumulativeAmount": int(body["voucher"]["cumulativeAmount"]),
                    "signature": upper(body["voucher"]["signature"]),
                },
            }
        )
    )
    forms.append(json.dumps({**body, "extra": 1, "request": {**req, "extra": "x"}}, indent=3))
    for raw in forms:
        r = await node.http.post("/v1/tasks", content=raw, headers={"content-type": "application/json"})
        assert r.status_code in (409, 422), (r.status_code, r.text)
    assert [t.id for t in ctx.db.tasks_with_status(*TaskStatus)] == [tid]
    assert ctx.db.billed(node.user.address) == FEE
    assert node.executor.runs == [tid]


async def test_defence_the_user_field_is_not_the_identity(node: FakeNode) -> None:
    """Tried: send a request that names a funded victim as ``request.user`` (and the voucher's
    user), signed by the attacker's own key, to have the victim billed or its nonce burnt.
    Holds: the identity is the recovered signer; a mismatch is a 401 and stores nothing."""
    ctx = node.service.ctx
    assert ctx is not None
    victim = node.user
    attacker = Account.create()
    body = signed_task(attacker, node.address, node.chain.domain, "on your tab", cumulative=FEE)
    body["request"]["user"] = victim.address
    r = await node.http.post("/v1/tasks", json=body)
    assert r.status_code == 401, r.text
    assert ctx.db.last_nonce(victim.address) == -1 and ctx.db.billed(victim.address) == 0
    assert ctx.db.task_count() == 0
