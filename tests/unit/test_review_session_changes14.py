"""Adversarial review of the newest changes (931e403..HEAD), as a user, an outsider or a node would
attack them:

* the node's settlement scan: `Redeemer.due` / `for_commit` (redeemer.py), the ``closing_channels``
  and ``chain_cursors`` tables and the ``redemptions.deposited/block`` migration (db.py), and
  `Web3Chain.channel_events` (chain.py, ``WithdrawalRequested`` / ``Deposited`` logs in
  `LOG_RANGE`-block ``eth_getLogs``);
* `http_protocol.DeadlineH11Protocol`: eviction of the oldest idle connection over
  ``[api] max_connections``, the write-stall abort (`WRITE_STALL_S`);
* the validator: `_stage` filling its barrier's list, non-CID search entries as findings,
  `chain_read.EVM_HALTS`.

Real parts: the node's `Database`, `Redeemer` and `Web3Chain` on the session's Anvil with the
compiled contracts (vouchers really signed, the contract checks them; a reorg is Anvil's
``evm_revert`` to a block before the redemption, then new blocks); the node service served by its
own uvicorn path (`NodeService.run_forever`, ``tests/node_fixtures.py``). One fake, named where it
is used: a hosted RPC's cap on an ``eth_getLogs`` answer (Anvil has none), wrapped around the real
answer.

Found:

1. HIGH — one ``eth_getLogs`` range the RPC refuses stops all of the node's settlement, for good
   (`test_defence_one_log_range_the_rpc_refuses_stops_every_settlement_for_good`). `Redeemer.due`
   (redeemer.py ``head = await self._scan_events(users)``) runs the log scan before it looks at any
   user, and `Web3Chain.channel_events` (chain.py) raises if any one of its ranges fails; the
   cursor is only written after the whole scan (`Database.record_channel_events`). So while one
   range cannot be read, no voucher is redeemed at all: not the users owing far above the
   threshold (who need no log to be due), not the closing channels (whose deadline is the reason
   for the scan). `for_commit` swallows the error (commits go on, settling nothing) and the round
   logs and retries the same range next time. Hosted RPCs refuse an answer of more than 10,000
   logs (Infura, Alchemy: "query returned more than 10000 results"); both events index the node,
   and ``deposit``/``depositFor`` of 1 wei by anyone emits one, so an outsider who emits 10,001
   ``Deposited`` to the node within one 5,000-block range (~0.5 G gas: cents on an L2) freezes
   the node's settlement permanently (the cursor never passes that range, re-scanned every round);
   every closing channel then withdraws its unpaid fees after ``WITHDRAWAL_DELAY``. An RPC whose
   range cap is below 5,000 blocks (several public ones: 1,000-2,000) does the same with no
   attacker. Fix by design: a scan failure must not block known debts (look at ``_watch`` with
   the records already known, and fall back to reading the channels of users with an unredeemed
   voucher while the logs cannot be read); split a refused range (halve on a size/range error),
   and advance the cursor per range read.
   FIXED: `Web3Chain.channel_events` halves a refused range (one block: its withdrawal requests
   alone) and reports how far it got, the cursor is saved after every call, debts at the threshold
   are read whatever the logs say, and while the scan is behind the round reads small debts'
   channels (`FALLBACK_READS`, least recently read first) while commits settle nothing.
2. MEDIUM — the first scan reads the whole chain's history inside the commit's lock
   (`test_defence_the_first_scan_before_a_commit_reads_the_whole_chain_history`). With no cursor
   (a node upgraded to this version, or any new node joining a deployment that is months old) the
   scan starts at the deployment block and reads every `LOG_RANGE` range to the head in one call
   of `channel_events`, sequentially, from `Redeemer.for_commit`, which the batcher awaits in
   `_sign` with ``settlement.lock`` held (batcher.py ``_commit_once``) before it signs the commit.
   A year of 2-s blocks is 3,154 queries (~5 min at 100 ms each) before the node's first commit,
   past the commit's own 60 s margin (`BatchSettings.commit_margin_s`) and towards its 600-s
   promises (slashable omissions); and since the cursor is only stored at the end, any failed
   query among them starts the next commit's scan from the deployment again. Measured here
   (ranges scaled down to 10 blocks, so as not to mine 200,000): 41 ``eth_getLogs`` before one
   commit of a node with no user at all, 40 ranges after the deployment. Fix by design: a fresh
   database (no voucher, no record) starts the cursor at the head; otherwise catch up in the
   redeemer's round, a few ranges per call with the cursor stored after each, and let
   `for_commit` scan at most a bounded number of ranges.
   FIXED: a database with no task starts its cursor near the head; otherwise each call scans at
   most `SCAN_QUERIES` (a round) or `COMMIT_SCAN_QUERIES` (1, before a commit) log queries, the
   cursor saved after each.
3. LOW — a redemption undone by a reorg after its first read-back is never read again
   (`test_defence_a_redemption_undone_by_a_shallow_reorg_after_its_read_back_is_never_redeemed`).
   The module says a recent record is "read again until it is CONFIRMATIONS deep", but the first
   read-back sets ``block = head`` (redeemer.py ``block = head if u.block is None ...``) and
   `_User.confirmed` then needs only ``head - block >= CONFIRMATIONS`` to pass with no further
   read: a reorg of 3 blocks, shortly after the read-back, that drops the redemption leaves the
   record high, the user's ``owed()`` at 0, and the user is discarded (closing or not). The user
   withdraws the fee after the delay. Needs a redemption not re-included after the reorg (the
   batcher re-broadcasts its commits, a pool usually re-mines a dropped transaction), hence LOW.
   Fix by design: confirm with a read made at least `CONFIRMATIONS` after the redemption's block
   (keep the block of the last read that agreed, and require it to be CONFIRMATIONS past the
   first), or re-read the closing channels whatever their record says.
   FIXED: a record counts as confirmed only once a read at least `CONFIRMATIONS` blocks after the
   one that first found it still finds it (`_User.to_confirm`; then stored with block 0).
4. MEDIUM — connections whose request body never comes are not idle, so the eviction does not
   touch them and every user gets 503 again
   (`test_defence_sockets_holding_half_a_request_body_still_make_every_user_a_503`). The fix of the
   previous review evicts only connections with no request in progress
   (`DeadlineH11Protocol._idle`: ``cycle is None or cycle.response_complete``); a connection that
   sent the headers of ``POST /v1/tasks`` with ``Content-Length: 1000`` and one byte of body has
   a cycle (uvicorn starts the app at the headers) that is not complete for the 10 s of
   `REQUEST_DEADLINE_S`. ``max_connections`` of them, reopened every 10 s (~51 a second at 512,
   no key, no deposit, no fee), leave nothing to evict, the honest connection is kept over the
   limit and uvicorn's ``limit_concurrency`` (max + 1) answers its request 503 — the attack the
   eviction was to stop, with one more line per socket. Fix by design: treat a request still
   receiving its headers or body as evictable (only a request whose body is in, being handled or
   answered, is protected), or a per-address cap; and evict by last activity, not opening time.
   FIXED: a connection still receiving its request's headers or body is evictable like an idle
   one (`DeadlineH11Protocol._idle`), the least recently active first. (And from the notes below:
   the write stall now counts what the client takes, the socket's unsent queue included, so a
   slow but steady reader is never cut: `tests/unit/test_http_deadline.py`.)

Checked and holding:

* The migration on an existing database: version 1 files gain ``deposited`` (NULL) and ``block``
  (0, "read long ago") and the two tables; a record from before is trusted as confirmed, as
  before the change (`test_defence_the_migration_keeps_old_records_and_a_closing_channel_is_still_redeemed`),
  and a closing channel of such a user is still found in the logs and redeemed.
* A top-up after the node read the deposit: ``Deposited`` drops the recorded deposit, so a user
  whose owed amount the old deposit capped below the threshold is read and redeemed once the
  deposit covers it (`test_defence_a_top_up_after_the_deposit_was_read_is_seen_and_redeemed`).
* Request, cancel and request again around a read: ``_open_at`` only drops requests at or below
  the head of the read that found the channel open; a later request (a new block) is seen
  (`test_defence_request_cancel_request_again_is_still_seen_as_closing`).
* A crash between a redemption and its record (`settled`): the record stays low, which only costs
  a read (the chain's ``redeemed`` only grows); the record and cursor of one scan are written in
  one transaction.
* `_evict_idle` is O(n log n) per new connection over the limit, n bounded by about twice
  ``max_connections`` (requests over uvicorn's limit are answered 503 at once, so become idle);
  an honest request in progress is never evicted. Not tested, a note: `WRITE_STALL_S` times how
  long writing stays paused, not whether bytes move, so a reader making steady progress on one
  large response (a 1 MiB store block at under ~100 KB/s keeps the transport above its low water
  for over 10 s) is aborted too; abort on no progress (the write buffer not shrinking) instead.
* The validator's `_stage`: the list it fills only ever gains the return values of completed
  checks, each a finding about what the node committed; an exception in this validator's own
  code after them adds nothing (the barrier keeps what was found, ``local``), and a failure of the
  trace fetch or the model load is never a finding. Search roots: a root's entries come from the
  node's own ``memory.write`` chain (replayed by the validator), so a non-CID entry is the node's.
  ``EVM_HALTS``: a revert is caught as ``ContractLogicError`` before the wording test (a revert
  string saying "invalid opcode" is a revert, not a halt). Not tested here (needs two clients):
  execution context that differs between RPC implementations for ``eth_call`` (``GASPRICE``, a
  default ``from``) already lets a crafted contract give two honest RPCs two values; a halt
  only adds one more way for the same difference to show (pre-existing class, docs should name
  one reference client for re-reads).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from supernet.node.service import chain as chain_module
from supernet.node.service.chain import LOG_RANGE, Web3Chain
from supernet.node.service.db import _MIGRATIONS as node_migrations
from supernet.node.service.db import Database
from supernet.node.service.http_protocol import REQUEST_DEADLINE_S
from supernet.node.service.models import NewTask, ReceiptRow
from supernet.node.service.redeemer import CONFIRMATIONS, Redeemer, RedeemPolicy
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import mine, revert, snapshot
from supernet.sdk.chain.eip712 import Voucher, sign_voucher

from tests.chain_fixtures import Actors
from tests.unit.test_review_session_changes13 import _get, _serving

THRESHOLD = 10**17
POLICY = RedeemPolicy(min_amount_wei=THRESHOLD)
SMALL = 10**12  # one fee, far below the threshold
BIG = 2 * 10**17  # worth a redemption on its own


def _done_task(
    db: Database, c: Contracts, user: LocalAccount, node: str, cumulative: int, nonce: int = 1
) -> None:
    """One task of ``user`` done here, its fee the whole voucher ``cumulative`` (a first task)."""
    task_id = "0x" + os.urandom(32).hex()
    signed = Voucher(user=user.address, node=node, cumulative_amount=cumulative)
    voucher = sign_voucher(signed, c.domain, user)
    db.insert_task(
        NewTask(
            id=task_id,
            user=user.address,
            nonce=nonce,
            model_id="0x" + "aa" * 32,
            agent="chat",
            agent_hash="0x" + "bb" * 32,
            input="hello",
            input_hash="0x" + "cc" * 32,
            max_fee=cumulative,
            fee=cumulative,
            deadline=2**40,
            signature="0x" + "11" * 65,
            voucher_amount=cumulative,
            voucher_signature="0x" + voucher.hex(),
        )
    )
    db.finish_task(
        task_id, "hi", "bafytrace", ReceiptRow(task_id, "0x" + os.urandom(32).hex(), "{}", "0x" + "33" * 65)
    )


async def _rounds(redeemer: Redeemer, n: int = 3) -> None:
    """``n`` rounds as `Redeemer.run_forever` runs them (an error is logged and retried)."""
    for _ in range(n):
        with contextlib.suppress(Exception):
            await redeemer.redeem_once()


# ------------------------------------------------------------------------------------------------
# The settlement scan
# ------------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_one_log_range_the_rpc_refuses_stops_every_settlement_for_good(
    network: Contracts, actors: Actors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HIGH. Setup: user A owes `BIG` (worth a redemption by itself, no log needed), user B owes
    one small fee and asks to close its channel. Attack: an outsider deposits 1 wei to the node
    ``CAP + 1`` times in a row: ``CAP + 1`` ``Deposited`` logs in one 5,000-block range. FAKE (a
    fault Anvil cannot produce): the RPC refuses an ``eth_getLogs`` answer of more than ``CAP``
    logs, as Infura and Alchemy refuse more than 10,000 (the real answer, counted, then refused).

    Safe: A's and B's vouchers are redeemed (the debts the node already knows do not wait on a log
    query; B's closing channel is read some other way). Today: every round raises in
    `_scan_events`, nothing is redeemed, the cursor never moves past the flood; B withdraws its
    fee after ``WITHDRAWAL_DELAY``."""
    cap = 20
    node = actors.node.address
    a, b, outsider = actors.users[0], actors.users[1], actors.users[2]
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        _done_task(db, network, a, node, BIG)
        _done_task(db, network, b, node, SMALL)
        network.as_account(b).payments.request_withdrawal(node)
        for _ in range(cap + 1):  # ~50k gas each, from anyone, for anyone's channel to the node
            network.as_account(outsider).payments.deposit_for(Account.create().address, node, 1)

        real = network.w3.eth.get_logs

        def capped(query: Any) -> Any:  # FAKE: a hosted RPC's cap on one answer's size
            logs = real(query)
            if len(logs) > cap:
                raise ValueError({"code": -32005, "message": f"query returned more than {cap} results"})
            return logs

        monkeypatch.setattr(network.w3.eth, "get_logs", capped)
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        # before a commit the scan is behind (one query): A's debt needs no log and rides on it;
        # B's closing channel is unseen yet (the rounds find it)
        due = await redeemer.for_commit()
        assert [v.user for v, _ in due] == [a.address], "what is due without a log rides on the commit"
        await _rounds(redeemer)
        mine(network.w3, 2 * CONFIRMATIONS)  # the chain moves on: the flood stays in every scan
        await _rounds(redeemer)
        paid_a = network.payments.channel(a.address, node).redeemed
        paid_b = network.payments.channel(b.address, node).redeemed
        cursor = db.channel_events_cursor()
    finally:
        db.close()
    assert (paid_a, paid_b) == (BIG, SMALL), (
        f"after 6 rounds A's channel redeemed {paid_a} of {BIG} (due on its own) and the closing B's "
        f"{paid_b} of {SMALL}; the scan cursor is {cursor}: one eth_getLogs range the RPC refuses "
        f"(here {cap + 1} Deposited logs of 1 wei each, anyone can emit them) makes Redeemer.due raise "
        f"before it looks at any user, and the cursor, written only after a whole scan, never passes it"
    )


@pytest.mark.anvil
async def test_defence_the_first_scan_before_a_commit_reads_the_whole_chain_history(
    network: Contracts, actors: Actors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MEDIUM. Setup: a node with no cursor (upgraded to this version, or new on a deployment
    that is old) and no user at all; the chain is 40 ranges past the deployment (`LOG_RANGE`
    scaled down to 10 blocks: the same loop, without mining 200,000 blocks).

    Safe: `Redeemer.for_commit`, which the batcher awaits with the settlement lock held before it
    signs its commit, makes a bounded number of ``eth_getLogs`` whatever the chain's age. Today it
    reads every range from the deployment to the head (one per 5,000 blocks: 3,154 for a year of
    2-s blocks), and starts over at the next commit if any of them fails."""
    ranges = 40
    scale = 10  # LOG_RANGE scaled down 500x (the same loop): 40 ranges without mining 200,000 blocks
    monkeypatch.setattr(chain_module, "LOG_RANGE", scale)
    head = int(network.w3.eth.block_number)
    deploy = network.deployment.deploy_block
    mine(network.w3, max(ranges * scale - (head - deploy), 1))
    queries = 0
    real = network.w3.eth.get_logs

    def counting(query: Any) -> Any:  # the real query, counted
        nonlocal queries
        queries += 1
        return real(query)

    monkeypatch.setattr(network.w3.eth, "get_logs", counting)
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        assert await redeemer.for_commit() == []
    finally:
        db.close()
    assert queries <= 2, (
        f"one for_commit of a node with no user made {queries} eth_getLogs (the whole history since "
        f"the deployment, {ranges} ranges; {LOG_RANGE} blocks each unscaled) before the batcher could "
        f"sign its commit, with the settlement lock held: a year of 2-s blocks is 3,154 of them"
    )


@pytest.mark.anvil
async def test_defence_a_redemption_undone_by_a_shallow_reorg_after_its_read_back_is_never_redeemed(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """LOW. Setup: user A owes `BIG`; the node redeems it (block X) and its next round reads the
    channel back (head H, the record's ``block``). Then a reorg of 3 blocks (Anvil's
    ``evm_revert`` to before X, a chain that never had the redemption) and 2 x CONFIRMATIONS new
    blocks. A asks to close its channel.

    Safe: the node sees the chain's ``redeemed`` back at 0 and redeems `BIG` before A can
    withdraw (the record was never read `CONFIRMATIONS` deep). Today: the record counts as
    confirmed on block distance alone, A's ``owed()`` is 0, A is discarded, closing or not."""
    node = actors.node.address
    a = actors.users[0]
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        _done_task(db, network, a, node, BIG)
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        before = snapshot(network.w3)
        assert await redeemer.redeem_once(), "A owes a redemption's worth"
        assert network.payments.channel(a.address, node).redeemed == BIG
        assert await redeemer.redeem_once() == [], "the read-back: nothing more"
        revert(network.w3, before)  # the reorg: the redemption's block is replaced
        mine(network.w3, 2 * CONFIRMATIONS)
        assert network.payments.channel(a.address, node).redeemed == 0, "the chain: not redeemed"
        network.as_account(a).payments.request_withdrawal(node)
        await redeemer.redeem_once()  # (no error: the round runs, and finds nothing due)
        await redeemer.redeem_once()
        paid = network.payments.channel(a.address, node).redeemed
    finally:
        db.close()
    assert paid == BIG, (
        f"A's closing channel has {paid} of {BIG} redeemed after the reorg: the node's record (read "
        f"once, right after the redemption) counts as confirmed {CONFIRMATIONS} blocks later without "
        f"another read, so A withdraws the fee after the delay"
    )


@pytest.mark.anvil
async def test_defence_the_migration_keeps_old_records_and_a_closing_channel_is_still_redeemed(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """An existing version-1 database (its ``redemptions`` without the new columns) is migrated:
    old records read as confirmed (block 0) with no known deposit; the first round scans from the
    deployment, finds a user's withdrawal request and redeems its small fee."""
    path = tmp_path / "node.sqlite3"
    node = actors.node.address
    a, b = actors.users[0], actors.users[1]
    db = Database.open(path)
    try:
        _done_task(db, network, a, node, SMALL)
        _done_task(db, network, b, node, SMALL)
        db.set_redeemed({b.address: 0}, tx_hash="0xold")
    finally:
        db.close()
    raw = sqlite3.connect(path)  # back to the file an older node left: version 1, old columns
    try:
        raw.executescript(
            "DROP TABLE closing_channels; DROP TABLE chain_cursors;"
            "CREATE TABLE r2 (user TEXT PRIMARY KEY, redeemed TEXT NOT NULL, tx_hash TEXT,"
            " updated_at REAL NOT NULL);"
            "INSERT INTO r2 SELECT user, redeemed, tx_hash, updated_at FROM redemptions;"
            "DROP TABLE redemptions; ALTER TABLE r2 RENAME TO redemptions; PRAGMA user_version = 1;"
        )
        raw.commit()
    finally:
        raw.close()
    network.as_account(a).payments.request_withdrawal(node)
    network.as_account(b).payments.request_withdrawal(node)
    db = Database.open(path)
    try:
        assert db.schema_version() == len(node_migrations)  # migrated to the current schema
        assert db.redemption_records() == {b.address: (0, None, 0)}
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        assert await redeemer.redeem_once()
        assert network.payments.channel(a.address, node).redeemed == SMALL
        assert network.payments.channel(b.address, node).redeemed == SMALL
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_a_top_up_after_the_deposit_was_read_is_seen_and_redeemed(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A user whose deposit was read small (the cap keeps what it owes below the threshold) tops
    up: the ``Deposited`` log drops the recorded deposit, its next round reads and redeems."""
    node = actors.node.address
    u = Account.create()
    funder = actors.users[2]
    network.as_account(funder).payments.deposit_for(u.address, node, SMALL)  # a small channel
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        _done_task(db, network, u, node, BIG)
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        assert await redeemer.redeem_once() == [], "owes BIG but only SMALL is deposited: not worth it"
        assert db.redemption_records()[u.address][1] == SMALL, "the deposit, as read"
        mine(network.w3, 2 * CONFIRMATIONS)
        assert await redeemer.redeem_once() == [], "set aside, no read"
        network.as_account(funder).payments.deposit_for(u.address, node, BIG)  # the top-up
        assert await redeemer.redeem_once(), "the top-up is seen in the logs: redeemed"
        assert network.payments.channel(u.address, node).redeemed == BIG
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_request_cancel_request_again_is_still_seen_as_closing(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A user owing a small fee asks to close, the node reads the channel closing and redeems; the
    user gets one more task done, cancels (the node reads it open) and asks again: the second
    request, in a later block, is still seen and the new fee redeemed before the delay ends."""
    node = actors.node.address
    a = actors.users[0]
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        _done_task(db, network, a, node, SMALL)
        redeemer = Redeemer(db, Web3Chain(network, actors.node), interval_s=60.0, policy=POLICY)
        network.as_account(a).payments.request_withdrawal(node)
        assert await redeemer.redeem_once()
        network.as_account(a).payments.cancel_withdrawal(node)
        _done_task(db, network, a, node, 2 * SMALL, nonce=2)  # a second fee (voucher 2 x SMALL)
        await _rounds(redeemer, 1)  # reads the channel open (the record is recent)
        network.as_account(a).payments.request_withdrawal(node)
        await _rounds(redeemer, 2)
        paid = network.payments.channel(a.address, node).redeemed
    finally:
        db.close()
    assert paid == 2 * SMALL


# ------------------------------------------------------------------------------------------------
# The node's HTTP connections
# ------------------------------------------------------------------------------------------------


async def test_defence_sockets_holding_half_a_request_body_still_make_every_user_a_503(
    tmp_path: Path,
) -> None:
    """MEDIUM. Attack: an outsider (no key, no deposit) opens ``max_connections`` connections, each
    sending the headers of ``POST /v1/tasks`` with ``Content-Length: 1000`` and one byte of body,
    then nothing (reopened as the 10-s deadline drops them). Each has a request in progress
    (uvicorn started the app at the headers), so `DeadlineH11Protocol._evict_idle` finds nothing
    idle to evict, the honest connection is kept over the limit and uvicorn's limit answers 503.

    Safe: an honest ``GET /healthz`` is answered 200 (a request whose body never came is as cheap
    as an idle socket and must be evictable as one). Today: 503."""
    limit = 8
    head = (
        b"POST /v1/tasks HTTP/1.1\r\nHost: node\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{"
    )
    async with _serving(tmp_path, max_connections=limit) as (_, port):
        assert (await _get(port, "/healthz")).startswith(b"HTTP/1.1 200")
        held = []
        try:
            for _ in range(limit):
                r, w = await asyncio.open_connection("127.0.0.1", port)
                w.write(head)
                await w.drain()
                held.append((r, w))
            await asyncio.sleep(0.3)
            status = await _get(port, "/healthz")
        finally:
            for _, w in held:
                w.close()
    assert status.startswith(b"HTTP/1.1 200"), (
        f"with {limit} connections each holding half a request body (max_connections={limit}) an honest "
        f"request is answered {status!r}: they are not idle (a cycle, not complete), so nothing is "
        f"evicted, and reopened every {REQUEST_DEADLINE_S:g} s they deny the API to every user"
    )
