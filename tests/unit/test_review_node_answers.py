"""Adversarial review: the HONEST node's side of data claims.

Scope: how an honest node answers the claims that slash it when unanswered: availability
(`supernet.node.service.availability.AvailabilityResponder._answer`, ``answerAvailability``),
manifest (``_answer_manifest``, ``answerManifest``) and omission claims, how it follows them
(its block cursor), and how its answers are sent (`Binding.answer` / `bindings.send`: nonces shared
with commits and redemptions, fee caps, waits). Thought as validators (or anyone) who want an
honest node slashed or drained, and as chance (a reorg, a restart, a hosted RPC) that makes it
miss a window.

Real parts: Anvil with the compiled contracts (``network``), the node's real `Database`, its real
`AvailabilityResponder` bound to the node's key (as `NodeRunner` builds it: from the deployment
block), the embedded content store (``store_client``). One FAKE, named where used: a hosted RPC's
cap on an ``eth_getLogs`` block range (Anvil has none), as tests/unit/test_review_session_changes15.py
fakes it.

Found:

1. HIGH, FIXED (the scan reads in ranges of `CLAIM_LOG_RANGE`, halved when refused; the cursor is
   kept in the database; a batch's header is read in its commit's block, or searched back from the
   head in such ranges: `AvailabilityResponder._scan`, `_header`; now
   `test_defence_a_log_range_cap_leaves_every_claim_unanswered`): the responder reads
   ``AvailabilityChallenged``, ``OmissionChallenged`` and ``ManifestChallenged`` in ONE
   ``eth_getLogs`` each, from its cursor to the head, and its cursor starts at the deployment
   block (availability.py:100-115, run_forever 86-97; runner.py:183-189). A hosted RPC caps a
   query's range (10,000 blocks, 2,000, or fewer on free tiers: the reason
   `Web3Chain.channel_events` splits its ranges, `LOG_RANGE`), so on any deployment older than the
   cap the first scan after every start is refused, ``answer_once`` raises before answering
   anything (the log reads are outside the per-claim ``try``), ``_next_block`` never moves, and
   ``run_forever`` retries the same refused range every second for ever: every claim against the
   honest node goes unanswered and each is slashed (1 ether), for a node that holds all its data.
   Fix (by design): read in ranges as `channel_events` does (halve on refusal), persist the
   cursor, and start at most one answer window back (a claim older than ``VOTE_WINDOW`` cannot be
   answered anyway); a failed log read must not stop the answers to the claims already known.

2. MEDIUM, FIXED (each scan reads `REORG_LOOKBACK` blocks behind its cursor again; claims are
   kept by id, and those already settled are not taken up again; now
   `test_defence_a_claim_in_a_block_reorged_below_the_cursor_is_never_seen`): the cursor
   is a bare block number with no fork check (availability.py:115 ``self._next_block = head + 1``).
   A one-block reorg whose new block carries a claim the orphaned block did not (the claim was
   still in the mempool when the node read the orphaned block: routine on L1) puts the claim at
   a height the node has already read; it is never read, never answered, and the honest node is
   slashed. (A claim re-included under another id after a reorg is the same: the node keeps the
   orphaned id's batch and index.) The validator's `Follower` and the node's batcher were given
   fork checks for the same reason (tests/integration/test_review_reorgs.py); the responder was
   not. Fix: keep a checkpoint (block hash) with the cursor and re-read from the fork point, or
   simply re-read the whole open answer window each scan (claims are keyed by id and re-checked
   by status; ``VOTE_WINDOW`` bounds the range).

3. MEDIUM, FIXED in the twenty-seventh session (answers are sent as commits are:
   `supernet.node.service.answer_outbox`; was pinned as a known limit, now
   `test_defence_a_restart_while_an_answer_is_pending_sends_a_second_answer_that_reverts`):
   the responder keeps no record of an answer it sent that is not yet mined. A node restarted
   while its answer waits in the pool (congestion, a tip at the floor below the market, finding 4)
   re-reads the claim, finds it OPEN and signs a second answer at the next nonce; both are mined
   and the second reverts late, after paying nearly the whole answer (measured: 835,660 gas for a
   20 KB trace; EIP-7623's calldata floor alone is ~15.7 M gas for a `MAX_TRACE_BYTES` trace, ~0.3
   ether at 20 gwei), repaid by no deposit. The same path runs without a restart whenever
   `bindings.send`'s 120 s receipt wait gives up (``TimeExhausted`` is "answer failed, retrying"
   in availability.py:128-129: the next scan signs a new answer at the next nonce while the first
   is still pending), once per 120 s for as long as the first stays out of blocks. Root cause:
   `Binding.answer` -> `bindings.send` (sign, send, wait) with nothing persisted, where commits
   are signed, persisted, broadcast and re-broadcast (`Web3Chain.sign_commit` / `broadcast`).
   Fix (by design): send answers as commits are sent: persist (claim id, tx hash, raw, nonce)
   before broadcasting; while a stored answer's nonce is unused, re-broadcast or reprice it at
   that nonce instead of signing another.

4. MEDIUM, FIXED in the twenty-seventh session (the same outbox reprices a stored answer at its
   nonce, `supernet.sdk.chain.resend.repriced`; was pinned as a known limit, now
   `test_defence_an_answer_priced_out_by_a_base_fee_rise_is_never_replaced`): an answer's
   fee cap is fixed when it is signed (2 x base + tip without a floor; 81/64 x base + floor with
   one, `Binding.answer` / `claim_fee_cap`): a base fee that rises past it (two full blocks with a
   floor, ~six without) leaves it unmineable, and nothing replaces it at its nonce (only commits
   are repriced: `Web3Chain.repriced`); Anvil even drops it from its pool. The responder sits in
   `bindings.send`'s 120 s wait (4x the devnet's 30 s window; measured: claim OPEN at the
   deadline, node slashed to 1 of 2 ether), then signs a new answer at the next nonce, which the
   stuck one blocks; so does it block every later commit of the node (whose own repricing cannot
   help: its nonce is above the stuck one), letting promises fall due. The tip ceiling would have
   allowed a replacement (it bounds the tip, not the cap). Fix: poll the answer's receipt without
   blocking the responder, and reprice it at its nonce past the base fee as `repriced` does for
   commits (bounded by the tip ceiling, logged as a duty at risk beyond it).

Also noted, not tested: the responder answers every availability claim before any manifest
claim, one blocking send at a time, with no regard to deadlines; a manifest claim's deadline is
at most CHALLENGE_WINDOW / 4 after it (``answerBy``), far earlier than an availability claim's
``VOTE_WINDOW``, so a burst of availability claims opened just before it delays its answer by one
mined transaction each (LOW at the production parameters: ~1,800 bonded claims on a 12 s chain
for a 6 h quarter window).

Checked and holding:

- a claim opened while the node was down is answered after a restart (the cursor starts at the
  deployment block: `test_defence_a_claim_opened_while_the_node_was_down_is_answered`), on an RPC
  without a range cap;
- every entry of a batch claimed at once (and a second batch) is answered in one scan, in claim
  order (the earliest deadline first among availability claims), repaid into the node's credit
  (`test_defence_every_entry_of_two_batches_claimed_at_once_is_answered_in_one_scan`);
- a claim already answered by someone else costs the node no transaction
  (`test_defence_a_claim_answered_by_someone_else_costs_the_node_nothing`);
- a manifest claim is answered with every receipt in order, and a second claim on the batch is
  refused by the contract (`test_defence_a_manifest_claim_is_answered_and_cannot_be_repeated`);
- a trace of exactly `MAX_TRACE_BYTES` non-zero bytes (the costliest answer) is posted: the gas
  limit's margin stops at `TX_GAS_CAP`, above it, and the wallet check prices it
  (`test_defence_a_trace_at_the_size_limit_is_answered`); a trace is pinned when saved and a task
  whose trace is over the limit fails unreceipted (`kernel.trace.save_trace`), so a node never
  commits an entry it cannot post (read, not tested here).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from supernet.node.service.availability import REORG_LOOKBACK, AvailabilityResponder
from supernet.node.service.db import Database
from supernet.node.service.models import NewTask, ReceiptRow
from supernet.sdk.chain import Contracts, Receipt, ReceiptTree, hash_task_request, output_hash
from supernet.sdk.chain.anvil import _rpc, mine, revert, set_next_base_fee, snapshot
from supernet.sdk.chain.contract_errors import ContractError
from supernet.sdk.chain.omission import ManifestStatus
from supernet.sdk.chain.receipts import trace_hash
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.sdk.store import StoreClient
from supernet.sdk.store.cids import encode_dag

from tests.chain_fixtures import MODEL_ID, Actors, make_request


async def _committed_batch(
    c: Contracts,
    actors: Actors,
    db: Database,
    store: StoreClient,
    count: int,
    trace_bytes: int,
    first: int = 0,
) -> int:
    """``count`` finished tasks of `Actors.node` (requests ``first`` on), each with a pinned trace
    of about ``trace_bytes`` in the store, sealed and committed on chain with their proofs stored,
    as the node's batcher leaves them (tests/unit/test_review_hostile_parties.py's helper, with a
    first request number so that two batches hold different tasks): returns the chain batch id."""
    node = actors.node
    receipts, ids = [], []
    for i in range(first, first + count):
        req = make_request(actors.users, node.address, i)
        task_id = "0x" + hash_task_request(req, c.domain).hex()
        trace_cid = await store.put_dag({"type": "pad", "i": i, "pad": "x" * trace_bytes}, pin=True)
        receipt = Receipt(
            request_hash=bytes.fromhex(task_id[2:]),
            user=req.user,
            model_id=MODEL_ID,
            input_hash=req.input_hash,
            output_hash=output_hash(f"answer {i}"),
            trace_hash=trace_hash(trace_cid),
            fee=10**14,
        )
        db.insert_task(
            NewTask(
                id=task_id,
                user=req.user,
                nonce=req.nonce,
                model_id="0x" + MODEL_ID.hex(),
                agent="chat",
                agent_hash="0x" + bytes(32).hex(),
                input=f"task {i}",
                input_hash="0x" + req.input_hash.hex(),
                max_fee=req.max_fee,
                fee=10**14,
                deadline=req.deadline,
                signature="0x" + "11" * 65,
                voucher_amount=10**14,
                voucher_signature="0x" + "22" * 65,
            )
        )
        row = ReceiptRow(
            task_id, "0x" + receipt.leaf().hex(), json.dumps(receipt.to_json()), "0x" + "33" * 65
        )
        db.finish_task(task_id, f"answer {i}", trace_cid, row)
        receipts.append(receipt)
        ids.append(task_id)
    tree = ReceiptTree.from_receipts(receipts)
    local = db.seal_batch("0x" + tree.root.hex(), "bafymanifest", ids)
    chain_id = c.as_account(node).task_manager.commit_batch(tree.root, count, "bafymanifest").value.batch_id
    proofs = {tid: json.dumps(["0x" + p.hex() for p in tree.proof_at(j)]) for j, tid in enumerate(ids)}
    db.mark_batch_committed(local, chain_id, proofs)
    mine(c.w3, 3)  # past the seed block
    return int(chain_id)


def _responder(c: Contracts, actors: Actors, db: Database, store: StoreClient) -> AvailabilityResponder:
    """The node's responder as `NodeRunner.setup` builds it: from the deployment block, with the
    OmissionManager (manifest and omission claims too)."""
    node = c.as_account(actors.node)
    return AvailabilityResponder(
        db,
        store,
        node.task_manager,
        actors.node.address,
        c.deployment.deploy_block,
        omission_manager=node.omission_manager,
    )


async def _scan(responder: AvailabilityResponder) -> list[int]:
    """One round of `AvailabilityResponder.run_forever` (which logs an error and retries)."""
    try:
        return await responder.answer_once()
    except Exception:
        return []


def _settle_after_window(c: Contracts, actors: Actors, aid: int) -> tuple[AvailabilityStatus, int]:
    """Past the answer window: resolve the claim if still open (anyone may); its final status and
    the node's stake."""
    _rpc(c.w3, "evm_increaseTime", [c.params.vote_window + 1])
    mine(c.w3)
    status = c.task_manager.get_availability(aid).status
    if status == AvailabilityStatus.OPEN:
        c.as_account(actors.outsider).task_manager.resolve_availability(aid)
    return status, c.service_manager.get_node(actors.node.address).stake


def _node_nonce(c: Contracts, actors: Actors, block: str = "latest") -> int:
    return int(c.w3.eth.get_transaction_count(actors.node.address, block))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_a_log_range_cap_leaves_every_claim_unanswered(
    network: Contracts,
    actors: Actors,
    store_client: StoreClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HIGH. FAKE (Anvil has no cap): the RPC refuses an ``eth_getLogs`` over more than `cap`
    blocks, as hosted RPCs do (the reason `Web3Chain.channel_events` splits its ranges). The
    deployment is older than the cap (here 3 x 64 blocks; on L1 10,000 blocks is 1.4 days).

    Attack: none needed; any claim on the honest node (a validator's routine one). Safe: the node
    answers it. Today: the responder's first scan reads from the deployment block to the head in
    one query per event, the RPC refuses it, ``answer_once`` raises before any answer, the cursor
    never moves, and every later scan is refused the same way: the claim is never answered and
    the node is slashed."""
    c = network
    cap = 64
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=200)
        header = c.task_manager.batch(batch_id)
        mine(c.w3, 3 * cap)  # a deployment older than the RPC's range cap
        real = c.w3.eth.get_logs
        refused = 0

        def range_capped(query: Any) -> Any:  # FAKE: a hosted RPC's cap on a query's block range
            nonlocal refused
            first, last = query.get("fromBlock", 0), query.get("toBlock", "latest")
            first = int(first, 16) if isinstance(first, str) else int(first)
            last = int(c.w3.eth.block_number) if last == "latest" else last
            last = int(last, 16) if isinstance(last, str) else int(last)
            if last - first + 1 > cap:
                refused += 1
                raise ValueError({"code": -32600, "message": f"block range exceeds {cap}"})
            return real(query)

        monkeypatch.setattr(c.w3.eth, "get_logs", range_capped)
        responder = _responder(c, actors, db, store_client)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        for _ in range(4):  # four rounds of the node's service, a block apart
            await _scan(responder)
            mine(c.w3)
        status, stake = _settle_after_window(c, actors, aid)
    finally:
        db.close()
    assert status == AvailabilityStatus.ANSWERED, (
        f"availability claim {aid} on an honest node holding the entry was never answered "
        f"({status.name}): its responder asked for the logs from the deployment block "
        f"{c.deployment.deploy_block} in one query, refused {refused} times by an RPC capping ranges at "
        f"{cap} blocks (availability.py answer_once: one eth_getLogs per event, outside the per-claim "
        f"try, cursor never moved); the node was slashed to {stake} wei"
    )


@pytest.mark.anvil
async def test_defence_a_claim_in_a_block_reorged_below_the_cursor_is_never_seen(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """MEDIUM (an honest node slashed by a one-block reorg; no attacker needed, a validator able
    to time its claim around a reorg does better).

    The node reads block H (no claim in it: the claim is still in the mempool), then H is
    orphaned and the canonical H' carries the claim, followed by H'+1. Safe: the node answers it.
    Today: its cursor is H+1 (a number, no block hash), so it reads from H'+1 on and never H':
    the claim is never answered and the node is slashed at the deadline."""
    c = network
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=200)
        header = c.task_manager.batch(batch_id)
        claimant = c.as_account(actors.outsider).task_manager
        claimant.seal_seed_block(header)  # (the claim's own seal would be a block of its own)
        responder = _responder(c, actors, db, store_client)
        assert await responder.answer_once() == []  # caught up with the head
        fork = snapshot(c.w3)
        mine(c.w3)  # block H: the node reads it, no claim in it
        assert await responder.answer_once() == []
        head_read = int(c.w3.eth.block_number)
        revert(c.w3, fork)  # H orphaned; the new branch: H' (the claim), then H'+1
        aid = claimant.challenge_availability(header, 0).value
        claim_block = int(c.w3.eth.block_number)
        assert claim_block <= head_read, "the claim sits at a height the node read on the old branch"
        answered: list[int] = []
        for _ in range(4):  # the node's next rounds, the new branch growing
            mine(c.w3)
            answered += await _scan(responder)
        status, stake = _settle_after_window(c, actors, aid)
    finally:
        db.close()
    assert status == AvailabilityStatus.ANSWERED, (
        f"availability claim {aid} landed in block {claim_block} of the new branch, at or below the "
        f"block {head_read} the responder had read on the orphaned one; its cursor (a bare number, "
        f"availability.py `_next_block = head + 1`) never goes back, so the claim was never read "
        f"(answered: {answered}), left {status.name}, and the honest node was slashed to {stake} wei"
    )


@pytest.mark.anvil
async def test_defence_a_restart_while_an_answer_is_pending_sends_a_second_answer_that_reverts(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """MEDIUM (the node's wallet drained by paid reverts; griefable by anyone who can keep the
    node's answers out of blocks for a while, or by chance: congestion, a base-fee rise).

    The node's answer waits in the pool (mining paused here: a congested chain); the node
    restarts (or its 120 s wait gives up: the same path). Safe: the answer already sent is the
    one that lands; no second answer is paid for. Was: the restarted responder signed a second
    answer at the next nonce; both were mined, the second reverted after paying its calldata. FIXED:
    answers are persisted before they are broadcast (`AnswerOutbox`); the restarted responder finds
    the stored one pending and sends it again instead of signing another."""
    c = network
    w3 = c.w3
    db = Database.open(tmp_path / "node.sqlite3")
    tasks: list[asyncio.Task[list[int]]] = []
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=20_000)
        header = c.task_manager.batch(batch_id)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        mined_before = _node_nonce(c, actors)
        _rpc(w3, "evm_setAutomine", [False])
        try:
            first = _responder(c, actors, db, store_client)
            tasks.append(asyncio.create_task(first.answer_once()))
            for _ in range(200):  # its answer reaches the pool
                if _node_nonce(c, actors, "pending") > mined_before:
                    break
                await asyncio.sleep(0.05)
            assert _node_nonce(c, actors, "pending") == mined_before + 1, "the first answer is pending"
            # the node restarts: a new responder over the same database and store
            second = _responder(c, actors, db, store_client)
            tasks.append(asyncio.create_task(second.answer_once()))
            for _ in range(60):  # give it time to send (or to decide not to)
                if _node_nonce(c, actors, "pending") > mined_before + 1:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            mine(w3)  # the chain takes the node's pending transactions
        finally:
            _rpc(w3, "evm_setAutomine", [True])
        results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        sent = _node_nonce(c, actors) - mined_before
        block = w3.eth.get_block("latest", full_transactions=True)
        mine_txs = [t for t in block["transactions"] if t["from"] == actors.node.address]
        receipts = [w3.eth.get_transaction_receipt(t["hash"]) for t in mine_txs]
        reverted = [r for r in receipts if r["status"] != 1]
        wasted = sum(int(r["gasUsed"]) * int(r["effectiveGasPrice"]) for r in reverted)
        status = c.task_manager.get_availability(aid).status
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
        db.close()
    assert status == AvailabilityStatus.ANSWERED
    assert sent == 1 and not reverted, (
        f"one claim, {sent} answers sent by the node ({results}); {len(reverted)} reverted after "
        f"paying {sum(int(r['gasUsed']) for r in reverted)} gas ({wasted} wei) for a 20 KB trace: the "
        f"restarted responder keeps no record of the answer it had pending and signs another at the "
        f"next nonce (a 384 KiB trace: ~16 M gas a duplicate, never repaid)"
    )


@pytest.mark.anvil
async def test_defence_an_answer_priced_out_by_a_base_fee_rise_is_never_replaced(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """MEDIUM (an honest node slashed by the fee market; a stuck nonce also holds every later
    commit of the node back).

    The node's answer is in the pool when the base fee rises past its fee cap (signed at twice
    the latest base fee plus the tip; with a floor, 81/64 of it plus the floor) and stays there
    for the rest of the window, well within what the node may pay (its tip ceiling bounds the
    tip, not the cap). Safe: the node replaces it at its nonce with fees that can be mined, as
    its batcher does for a commit (`Web3Chain.repriced`), and the claim is answered. Was:
    `bindings.send` waited for the receipt of the bytes it sent (120 s, longer than the devnet's
    30 s window; on a 1-day window it then signed a new answer at the NEXT nonce, stuck behind the
    first), nothing repriced an answer, and the node was slashed at the deadline. FIXED: the
    responder never waits on an answer; each scan while the claim is open reprices the stored one
    at its nonce once the base fee has passed its cap (`AnswerOutbox`, `resend.repriced`)."""
    c = network
    w3 = c.w3
    db = Database.open(tmp_path / "node.sqlite3")
    task: asyncio.Task[list[int]] | None = None
    spike = cap = 0
    raw: str | None = None
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=2_000)
        header = c.task_manager.batch(batch_id)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        mined_before = _node_nonce(c, actors)
        responder = _responder(c, actors, db, store_client)
        _rpc(w3, "evm_setAutomine", [False])
        try:
            task = asyncio.create_task(responder.answer_once())
            for _ in range(200):  # the answer reaches the pool
                if _node_nonce(c, actors, "pending") > mined_before:
                    break
                await asyncio.sleep(0.05)
            pool = _rpc(w3, "txpool_content", [])["pending"]
            [sent] = [
                tx
                for who, txs in pool.items()
                if who.lower() == actors.node.address.lower()
                for tx in txs.values()
            ]
            cap = int(sent["maxFeePerGas"], 16)
            raw = _rpc(w3, "eth_getRawTransactionByHash", [sent["hash"]])
            spike = 4 * cap  # the base fee quadruples past the answer's cap, and stays there
            set_next_base_fee(w3, spike)
            mine(w3)
        finally:
            _rpc(w3, "evm_setAutomine", [True])
        if task is not None:  # (the first scan sent the answer and returned: it never waits on it)
            await asyncio.wait_for(task, 30)
        for _ in range(10):  # ten blocks of the spike, a scan at each: room to reprice
            await _scan(responder)
            set_next_base_fee(w3, spike)
            mine(w3)
        _rpc(w3, "evm_increaseTime", [c.params.vote_window + 1])
        set_next_base_fee(w3, spike)
        mine(w3)
        status = c.task_manager.get_availability(aid).status
        if status == AvailabilityStatus.OPEN:
            c.as_account(actors.outsider).task_manager.resolve_availability(aid)
        stake = c.service_manager.get_node(actors.node.address).stake
    finally:
        set_next_base_fee(w3, 10**8)  # the spike ends: the answer lands (and reverts)
        mine(w3)
        if raw is not None:  # (Anvil dropped it from its pool at the spike; a pool gives it back)
            with contextlib.suppress(Exception):
                w3.eth.send_raw_transaction(raw)
        if task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        db.close()
    assert status == AvailabilityStatus.ANSWERED, (
        f"the node's answer to claim {aid} was signed with a fee cap of {cap} wei/gas and the base "
        f"fee rose to {spike}: for ten blocks and the rest of the window the answer could not be mined "
        f"(Anvil even dropped it from its pool) and was never replaced or sent again at its nonce "
        f"(bindings.send waits 120 s on the same bytes; only "
        f"commits are repriced), so the claim was {status.name} at the deadline and the honest node "
        f"was slashed to {stake} wei"
    )


# ---------------------------------------------------------------------------------------------
# Defences
# ---------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_a_claim_opened_while_the_node_was_down_is_answered(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Tried: a claim opened while the node is down (its cursor is in memory only), many blocks
    before it restarts. Holds (on an RPC without a range cap, finding 1): the new responder reads
    from the deployment block and answers it."""
    c = network
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=200)
        header = c.task_manager.batch(batch_id)
        before = _responder(c, actors, db, store_client)
        assert await before.answer_once() == []  # the node ran, then went down
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        mine(c.w3, 20)
        after = _responder(c, actors, db, store_client)  # restarted
        assert await after.answer_once() == [aid]
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_every_entry_of_two_batches_claimed_at_once_is_answered_in_one_scan(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Tried: every entry of two batches claimed in the same blocks, so that the node must send
    many answers before any deadline. Holds: one scan answers all of them, in claim order (the
    earliest deadline first), each repaid into the node's credit, and the node is unfrozen."""
    c = network
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        first = await _committed_batch(c, actors, db, store_client, count=3, trace_bytes=2_000)
        second = await _committed_batch(c, actors, db, store_client, count=2, trace_bytes=2_000, first=3)
        headers = [c.task_manager.batch(first), c.task_manager.batch(second)]
        claimant = c.as_account(actors.outsider).task_manager
        claims = [claimant.challenge_availability(h, i).value for h in headers for i in range(h.count)]
        credit = c.task_manager.claimable(actors.node.address)
        responder = _responder(c, actors, db, store_client)
        assert await responder.answer_once() == claims
        assert c.task_manager.claimable(actors.node.address) > credit
        assert all(c.task_manager.get_availability(a).status == AvailabilityStatus.ANSWERED for a in claims)
        assert c.service_manager.get_operator(actors.node.address).frozen_count == 0
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_a_claim_answered_by_someone_else_costs_the_node_nothing(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Tried: a third party (a validator that fetched the trace) answers the claim first, so that
    the node's own answer reverts after paying its calldata. Holds: the responder checks the
    claim's status first and sends nothing for a claim no longer open."""
    c = network
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=2_000)
        header = c.task_manager.batch(batch_id)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        # a validator that holds the data answers it (the node's own data, as a copier would)
        helper = _responder(c, actors, db, store_client)
        helper.tm = c.as_account(actors.validators[0]).task_manager
        assert await helper.answer_once() == [aid]
        nonce = _node_nonce(c, actors)
        node = _responder(c, actors, db, store_client)
        assert await node.answer_once() == []
        assert _node_nonce(c, actors) == nonce, "the node sent nothing"
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_a_manifest_claim_is_answered_and_cannot_be_repeated(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Tried: a manifest claim (the node must post every receipt of the batch), then the same
    claim again to make it pay a second answer. Holds: the responder posts the receipts in order
    (the contract recomputes the root) and the second claim is refused."""
    c = network
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=4, trace_bytes=100)
        header = c.task_manager.batch(batch_id)
        claimant = c.as_account(actors.outsider).omission_manager
        mid = claimant.challenge_manifest(header).value
        responder = _responder(c, actors, db, store_client)
        await responder.answer_once()
        state = c.omission_manager.batch_manifest(batch_id)
        assert state is not None and state.manifest_id == mid and state.status == ManifestStatus.ANSWERED
        with pytest.raises(ContractError):
            claimant.challenge_manifest(header)
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_a_trace_at_the_size_limit_is_answered(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Tried: a claim on an entry whose trace is exactly `MAX_TRACE_BYTES` of non-zero bytes (the
    costliest answer: EIP-7623's calldata floor, ~15.7 M gas), hoping the node's gas limit (the
    estimate's margin, `TX_GAS_CAP`) or its wallet check refuses it. Holds: the node posts it
    (the margin stops at `TX_GAS_CAP`, above the answer's gas) and is repaid its cost."""
    c = network
    limit = int(c.task_manager.call("MAX_TRACE_BYTES"))
    overhead = len(encode_dag({"type": "pad", "i": 0, "pad": "x" * 100_000})) - 100_000
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=limit - overhead)
        [row] = db.batch_receipts(db.batch_by_chain_id(batch_id).id)  # type: ignore[union-attr]
        task = db.task(row.task_id)
        assert task is not None and task.trace_cid is not None
        assert len(await store_client.get_block(task.trace_cid)) == limit
        header = c.task_manager.batch(batch_id)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        credit = c.task_manager.claimable(actors.node.address)
        assert await _responder(c, actors, db, store_client).answer_once() == [aid]
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
        assert c.task_manager.claimable(actors.node.address) > credit
    finally:
        db.close()


def test_defence_a_passing_rpc_failure_does_not_leave_the_scan_at_one_block_a_query() -> None:
    """Follow-up of the range fix: a width halved by failures (an RPC down for a moment) grows back
    after ranges are read, so later scans do not ask for one block a query for ever. FAKE chain
    reads (the responder's three log reads), failing for a while as a restarting RPC does."""
    from types import SimpleNamespace

    from supernet.node.service.availability import CLAIM_LOG_RANGE, AvailabilityResponder

    queries: list[tuple[int, int]] = []
    down = {"left": 11}  # 2,000 halved to 1 (10 refusals), then one refused block ends the scan

    def opened(first: int, last: int) -> list[Any]:
        queries.append((first, last))
        if down["left"] > 0:
            down["left"] -= 1
            raise ConnectionError("the RPC is restarting")
        return []

    tm = SimpleNamespace(w3=None, availability_opened=opened)
    db = SimpleNamespace(claims_cursor=lambda: None, set_claims_cursor=lambda block: None)
    responder = AvailabilityResponder(db, None, tm, "0x" + "11" * 20, 0, wallet=object())  # type: ignore[arg-type]
    assert responder._scan(0, 10_000) < 10_000  # refused down to one block, then it stops there
    assert responder._ranges.width < CLAIM_LOG_RANGE
    for _ in range(3):
        assert responder._scan(0, 100_000) == 100_000  # the RPC is back
    assert responder._ranges.width == CLAIM_LOG_RANGE
    before = len(queries)
    responder._scan(0, 4 * CLAIM_LOG_RANGE - 1)
    assert len(queries) - before == 4, "full-width ranges again"


class _StoreDown:
    """FAKE: the node's content store failing for a while (a disk fault, a restart of Kubo): every
    read raises. A fault that cannot be caused on demand in the embedded store."""

    async def get_block(self, cid: str) -> bytes:
        raise OSError(f"store unavailable: {cid} not read")


@pytest.mark.anvil
async def test_defence_a_claim_left_unanswered_for_a_while_survives_a_restart(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """MEDIUM (an honest node slashed after the restart an operator does to fix a fault).

    The node reads a claim but cannot answer it for a while (its store is down: a FAKE; the same
    for a wallet it cannot top up, an answer priced out past its tip ceiling, a receipt not yet
    committed for an omission claim); its claims cursor, stored at every scan, moves more than
    `REORG_LOOKBACK` blocks past the claim; the operator restarts the node. Was: the restarted
    responder read on from the stored cursor, never saw the claim again, and the node was
    slashed at the deadline. FIXED: the cursor stored is never past the block range of a claim
    still open (`AvailabilityResponder._durable_cursor`), so a restart reads it again."""
    c = network
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=500)
        header = c.task_manager.batch(batch_id)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        down = _responder(c, actors, db, _StoreDown())  # type: ignore[arg-type]
        assert await down.answer_once() == []  # read, not answerable now
        mine(c.w3, 3 * REORG_LOOKBACK)
        assert await down.answer_once() == []
        restarted = _responder(c, actors, db, store_client)  # the operator restarts it, store back
        assert await restarted.answer_once() == [aid]
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_a_claim_past_its_deadline_is_not_tried_again_and_again(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path, caplog: Any
) -> None:
    """LOW. A claim whose answer window passed while the node could not answer it stays OPEN until
    someone resolves it, and nobody has to. Was: every scan (once a second) tried to answer it
    again, its estimate reverted (``AnswerWindowClosed``) and a warning was logged, for ever; and
    the stored cursor could never move past it. FIXED: a claim past its deadline is dropped."""
    c = network
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=500)
        header = c.task_manager.batch(batch_id)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        _rpc(c.w3, "evm_increaseTime", [c.params.vote_window + 1])
        mine(c.w3)
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.OPEN
        responder = _responder(c, actors, db, store_client)
        nonce = _node_nonce(c, actors)
        for _ in range(3):
            assert await responder.answer_once() == []
        assert _node_nonce(c, actors) == nonce
        assert "answer failed" not in caplog.text
        assert db.claims_cursor() == int(c.w3.eth.block_number)
    finally:
        db.close()
