"""Review 25: the session's fix for hosted RPCs that cap ``eth_getLogs`` (commit 9ff80ae and the
working tree): `supernet.sdk.chain.logs.LogRanges` (read / scan / find_back), `Binding.logs` /
`last_logs`, `TaskManager.batch` (search back, ``batchCount`` refusal), `SeedBeacon.sealed`, the
validator's `TaskManagerClient.batch` / `_look_up`, `Follower.step` and
`ManifestWatch._follow_refusals` (scan, cursor to the last block read), the client's
`Client.verify` (`_chain_batch`) and `claim_refunds` (the ``refund_scans`` mark), the explorer's
`ChainReader.scan` / `Indexer._scan`.

Everything is real (Anvil, the compiled contracts, `TaskManagerClient`, `Follower`, `Database`, the
SDK's `Client`, the explorer's `Indexer`) except the hosted RPC's own behaviour, which Anvil does
not have: each is a JSON-RPC proxy in front of the real Anvil (tests/rpc_proxy.py), named FAKE
where it is defined (a cap on a query's blocks, a cap on an answer's logs, a silent truncation).
Caps are scale models: ``CAP`` = 64 blocks for 10,000, ``MAX_LOGS`` = 8 logs for 10,000.

Found:

- HIGH where reachable (an L2 whose blocks hold ~55 M gas against a 10,000-log answer cap; any
  chain against a cap of a few thousand logs; else a limit in waiting):
  test_defence_a_flood_of_permissionless_reservations_in_one_block_stops_every_follower_for_good.
  ``reserveSlots`` is open to any address and emits ``SlotsReserved`` for a few thousand gas; the
  follower asks for every TaskManager log unfiltered (validator/chain.py `_logs`), the explorer
  for every log of the four contracts (explorer/chain.py `logs`). One block holding more logs than
  the provider's answer cap is refused even alone, and `LogRanges` has nothing narrower than a
  block (logs.py `_try`: `LogsUnreadable`); `scan` stops there, every step, for ever: no batch
  after it is recorded, sampled or challenged, and the explorer freezes. FIXED by design: the
  follower asks only for the four events it follows (a topic filter: ``SlotsReserved`` no longer
  counts toward the cap), and a block refused alone is read from its receipts
  (`logs.block_logs`, ``eth_getBlockReceipts``: `LogRanges`' ``one_block``), by the follower and
  the explorer.
- MEDIUM: test_defence_a_silently_truncating_rpc_moves_the_refund_mark_past_a_refund_for_good. An
  RPC that answers a too-wide range with ``[]`` (or a backend behind a load balancer that lacks the
  blocks) is taken at its word (logs.py `_try` counts any answer as complete); `claim_refunds`
  then moves the persisted mark past the fraud verdict's challenge, and no later call, through any
  RPC, reads it again: the refund is lost. (Before the mark, the next call read from the deployment
  and found it: a regression of this session.) FIXED: each range's ``ChallengeOpened`` logs are
  counted against the contract's ``challengeCount`` at both ends (`Client._all_challenges`); a
  shortfall holds the mark before the range.
- MEDIUM: test_defence_a_silently_truncating_rpc_moves_the_followers_cursor_past_a_batch. The same
  trust in the follower: the cursor moves past a batch it never saw; it is never checked, even
  once the RPC is honest again. FIXED: the follower counts the batches and challenges read against
  the contract's counters at both ends of the range (`Follower._counted`, where the RPC keeps the
  state), and checks that ids follow each other (`Follower._complete`); a shortfall moves nothing
  and the range is read again, narrower.

Checked and holding:

- test_defence_a_batch_id_never_committed_costs_one_call_and_no_log_query: a receipt document
  naming a batch id past ``batchCount`` (with a lying ``txHash``) is refused with one ``eth_call``,
  no log search back to block 0.
- test_defence_a_reorg_during_a_scan_cut_short_records_nothing_of_the_orphaned_branch: a reorg
  between the read and the cursor move, on a step that stopped at an unreadable block
  (``last < end``): nothing of the orphaned branch is recorded, and the batch id the new branch
  gives to another commit is recorded, and looked up, as the new branch's.
- test_known_limit_a_header_looked_up_without_its_block_costs_queries_linear_in_its_age: with no
  block hint (a receipt document without or with a lying ``txHash``; a `TaskManagerClient` with no
  database) the search back costs about age / cap queries, plus a refused regrow every
  ``REGROW_AFTER`` ranges; never from block 0 to the head in one.
- (read) the topic-filtered reads (``ChallengeOpened`` for refunds, ``AvailabilityResolved`` for
  refusals, ``BatchCommitted`` by id for headers, ``SlotsReserved`` by node for the node) are not
  reachable by the ``SlotsReserved`` flood; a lying ``txHash`` finds nothing (the query is filtered
  by the TaskManager's address and the batch id) and falls back to the search; `SeedBeacon.sealed`
  reads storage; an RPC that times out on a wide range is narrowed as a refusal is; a follower's
  reorg check pins ``end`` before the read, so a reorg under a cut-short scan is caught.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import Actors, cast_votes, make_receipts, make_request
from rpc_proxy import answer, rpc_proxy
from sqlalchemy.orm import Session
from supernet.explorer.chain import ChainReader
from supernet.explorer.db.engine import open_database
from supernet.explorer.indexer import Indexer, get_cursor
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import _rpc, increase_time, mine, revert, snapshot
from supernet.sdk.chain.contracts import make_web3
from supernet.sdk.chain.logs import REGROW_AFTER
from supernet.sdk.client.client import REFUND_SCAN_LAG, Client, RefundClaimed
from supernet.sdk.client.state import ClientState, TaskRecord
from supernet.validator.chain import TaskManagerClient
from supernet.validator.db import Database
from supernet.validator.follower import Follower

from tests.unit import test_review_capped_rpc as review
from tests.unit.test_review_capped_rpc import CAP, _age, _never_stored, _number, _party, capped_rpc
from tests.unit.test_review_validator_funds import _commit
from tests.unit.test_review_validator_game import Game

game = review.game  # the fixture: real Anvil, the staked network and two embedded stores

pytestmark = [pytest.mark.anvil, pytest.mark.asyncio(loop_scope="session")]

MAX_LOGS = 8
"""Logs one answer may hold on the log-capped RPC: a scale model of a provider's 10,000."""


# ------------------------------------------------------------------------------------------ helpers


def _refusal(request: dict[str, Any], message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32005, "message": message}}


def _range(request: dict[str, Any], upstream: str) -> tuple[int, int] | None:
    """(first, last) of an ``eth_getLogs`` by block numbers (None: another call, or by hash)."""
    if request.get("method") != "eth_getLogs" or request["params"][0].get("blockHash"):
        return None
    query = request["params"][0]
    return _number(query.get("fromBlock"), upstream), _number(query.get("toBlock"), upstream)


@contextmanager
def log_capped_rpc(upstream: str) -> Iterator[tuple[str, list[tuple[int, int]]]]:
    """FAKE (Anvil has no cap): the real Anvil behind a proxy that refuses an ``eth_getLogs`` over
    more than ``CAP`` blocks, and one whose answer holds more than ``MAX_LOGS`` logs ("query
    returned more than 10000 results", as Infura-class providers answer). Yields (its URL, the
    ranges refused for their logs)."""
    too_many: list[tuple[int, int]] = []

    def rewrite(request: dict[str, Any], forward: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        span = _range(request, upstream)
        if span is None:
            return None
        if span[1] - span[0] + 1 > CAP:
            return _refusal(request, f"eth_getLogs is limited to a {CAP} block range")
        got = forward()
        if len(got.get("result") or []) > MAX_LOGS:
            too_many.append(span)
            return _refusal(request, f"query returned more than {MAX_LOGS} results")
        return got

    with rpc_proxy(upstream, rewrite) as (url, _seen):
        yield url, too_many


@contextmanager
def truncating_rpc(upstream: str) -> Iterator[tuple[str, list[tuple[int, int]]]]:
    """FAKE: the real Anvil behind a proxy that answers an ``eth_getLogs`` over more than ``CAP``
    blocks with an empty list, no error (a provider that truncates silently; a load-balanced
    backend that lacks the blocks). Yields (its URL, the ranges it emptied)."""
    emptied: list[tuple[int, int]] = []

    def rewrite(request: dict[str, Any], _forward: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        span = _range(request, upstream)
        if span is None or span[1] - span[0] + 1 <= CAP:
            return None
        emptied.append(span)
        return answer(request, [])

    with rpc_proxy(upstream, rewrite) as (url, _seen):
        yield url, emptied


@contextmanager
def counted_rpc(upstream: str) -> Iterator[tuple[str, list[str], list[tuple[int, int]]]]:
    """FAKE (Anvil has no cap): `capped_rpc`'s refusal over ``CAP`` blocks, every method and every
    log range asked recorded. Yields (its URL, the methods, the log ranges)."""
    methods: list[str] = []
    ranges: list[tuple[int, int]] = []

    def rewrite(request: dict[str, Any], _forward: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        methods.append(str(request.get("method")))
        span = _range(request, upstream)
        if span is None:
            return None
        ranges.append(span)
        if span[1] - span[0] + 1 > CAP:
            return _refusal(request, f"eth_getLogs is limited to a {CAP} block range")
        return None

    with rpc_proxy(upstream, rewrite) as (url, _seen):
        yield url, methods, ranges


def _flood(c: Contracts, sender: Any, count: int) -> tuple[int, int]:
    """``count`` ``reserveSlots(0, 1)`` calls of ``sender`` (any address: no stake, no role) mined
    in ONE block. Returns (the block, the gas of a repeat call's execution, past its transaction's
    21,000 and calldata)."""
    w3, tm = c.w3, c.task_manager.contract
    nonce = w3.eth.get_transaction_count(sender.address)
    fee = 4 * int(w3.eth.get_block("latest").get("baseFeePerGas") or 10**9) + 10**9
    hashes = []
    _rpc(w3, "evm_setAutomine", [False])
    try:
        for i in range(count):
            tx = tm.functions.reserveSlots(0, 1).build_transaction(
                {
                    "from": sender.address,
                    "nonce": nonce + i,
                    "gas": 150_000,
                    "maxFeePerGas": fee,
                    "maxPriorityFeePerGas": 10**9,
                    "chainId": w3.eth.chain_id,
                }
            )
            hashes.append(w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction))
        mine(w3)
    finally:
        _rpc(w3, "evm_setAutomine", [True])
    receipts = [w3.eth.get_transaction_receipt(h) for h in hashes]
    blocks = {int(r["blockNumber"]) for r in receipts}
    assert len(blocks) == 1 and all(r["status"] == 1 for r in receipts), (blocks, receipts[:1])
    data = bytes(w3.eth.get_transaction(hashes[-1])["input"])
    calldata = sum(16 if b else 4 for b in data)
    return blocks.pop(), int(receipts[-1]["gasUsed"]) - 21_000 - calldata


def _fraud_refund(c: Contracts, a: Actors, tmp_path: Path) -> tuple[str, int, int, Any]:
    """A user's task proven faulty (a fraud verdict), recorded in a client state at ``tmp_path``:
    (its task id, the challenge id, the refund due, the user)."""
    receipts = make_receipts(c, a.users, a.node.address, 3)
    tree = ReceiptTree(receipts)
    batch_id = c.as_account(a.node).task_manager.commit_batch(tree.root, 3, _never_stored("r25 refund")).value
    bad = receipts[1]
    user = next(u for u in a.users if u.address == bad.user)
    task_id = "0x" + bad.request_hash.hex()
    state = ClientState.open(tmp_path)
    state.tasks[task_id] = TaskRecord(
        a.node.address, "http://127.0.0.1:9", "task 1", "0x" + bad.model_id.hex(), bad.fee,
        status="done", request=make_request(a.users, a.node.address, 1).to_json(),
    )  # fmt: skip
    state.save()
    mine(c.w3, 2)
    challenger = c.as_account(a.validators[0]).task_manager
    cid = challenger.challenge(batch_id, 1, bad, tree.proof_at(1), "bafy-evidence").value
    cast_votes(c, cid, [(a.validators[1], True)])
    increase_time(c.w3, c.params.vote_window + 1)
    assert challenger.resolve(cid).value["fraud"]
    return task_id, cid, bad.fee, user


# ------------------------------------------------------------------------------------------ attacks


async def test_defence_a_flood_of_permissionless_reservations_in_one_block_stops_every_follower_for_good(
    game: Game,
) -> None:
    """HIGH. Attack (any address; the node that cheats, or a friend of it): one block of
    ``MAX_LOGS + 1`` ``reserveSlots`` calls (open to anyone, one ``SlotsReserved`` each), then the
    node commits its cheat. The validator's follower and the explorer read every log of the
    contracts, unfiltered; the provider refuses the flooded block's answer even alone, `LogRanges`
    raises `LogsUnreadable` at it and `scan` ends every step there. Safe: the cheat's batch is
    recorded (and the explorer indexes past it). Scale: a repeat reservation's execution measures
    ~4,800 gas (about 700 more per call from a looping contract): ~5,400 logs in a 30 M gas block,
    so a 10,000-log cap needs ~55 M gas in one block: out of reach on L1 today, one block of an L2
    with a larger block gas limit (cents), and any provider capping answers at a few thousand logs
    is in reach everywhere. Every validator and explorer on such a provider stops for good."""
    g = game
    c, a = g.chain, g.actors
    dep = c.deployment
    with log_capped_rpc(str(dep.rpc_url)) as (url, too_many):
        v = _party(g, a.validators[1], url, "flooded")
        v.follower.catch_up()
        engine = open_database("sqlite://")
        indexer = Indexer(engine, ChainReader(make_web3(url), dep), None, start_block=dep.deploy_block)
        indexer.step()
        flood_block, gas = _flood(c, a.outsider, MAX_LOGS + 1)
        cheat, _receipts = await _commit(g, a.node, 2, "r25 cheat after the flood")
        commit_block = int(c.task_manager.batch(cheat).commit_block)
        _age(c, 4)
        for _ in range(4):  # four polls each
            v.follower.step()
            indexer.step()
        recorded = v.db.batch(cheat)
        validator_at = v.db.cursor(default=dep.deploy_block)
        with Session(engine) as s:
            explorer_at = get_cursor(s, dep.deploy_block)
        v.db.close()
    assert recorded is not None and explorer_at > commit_block, (
        f"{MAX_LOGS + 1} reserveSlots calls by an outsider in block {flood_block} ({gas} gas of execution "
        f"each: ~{30_000_000 // (gas + 700):,} per 30 M gas block) stop the validator at block "
        f"{validator_at} and the explorer at {explorer_at}; the cheat (batch {cheat}, block "
        f"{commit_block}) is never recorded; single-block answers refused: {sorted(set(too_many))[:4]}"
    )


async def test_defence_a_silently_truncating_rpc_moves_the_refund_mark_past_a_refund_for_good(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. Chance (or a provider's policy): the user's wallet RPC answers a log query wider
    than it serves with an empty list. The user's task was proven faulty; `claim_refunds` through
    that RPC finds nothing and moves its persisted mark past the challenge (every range "read",
    none held open). The user then switches to an honest RPC. Safe: the refund is claimed. Today
    the mark is past it: no later call reads its block again, and the refund stays unclaimed."""
    c, a = network, actors
    task_id, cid, fee, user = _fraud_refund(c, a, tmp_path)
    challenge_block = int(c.w3.eth.block_number)
    mine(c.w3, REFUND_SCAN_LAG + CAP)
    with truncating_rpc(str(c.deployment.rpc_url)) as (url, emptied):
        async with Client(Contracts.connect(url, c.deployment, user), state_dir=tmp_path) as client:
            first = await client.claim_refunds()
            mark = max(client.state.refund_scans.values(), default=-1)
    with capped_rpc(str(c.deployment.rpc_url)) as (url, _refused):
        async with Client(Contracts.connect(url, c.deployment, user), state_dir=tmp_path) as client:
            second = await client.claim_refunds()
    assert first + second == [RefundClaimed(task_id, cid, fee)], (
        f"the refund of challenge {cid} ({fee} wei, resolved in block {challenge_block}) is lost: the "
        f"truncating RPC emptied {emptied[:2]}, the mark moved to {mark}, and the honest RPC's call "
        f"reads only after it: {second}; claimable {c.task_manager.claimable(user.address)}"
    )


async def test_defence_a_silently_truncating_rpc_moves_the_followers_cursor_past_a_batch(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """MEDIUM. Chance: the validator's RPC empties a log answer wider than it serves (as above). A
    validator starting fresh (or back from downtime) scans from the deployment: the node's batch is
    in a range answered ``[]``; the cursor moves past it. Safe: the batch is recorded, at the latest
    once the RPC answers truthfully again. Today it is never recorded: never sampled or checked."""
    c, a = network, actors
    dep = c.deployment
    mine(c.w3, CAP)
    header = c.as_account(a.node).task_manager.commit_batch(b"\x25" * 32, 1, _never_stored("r25 t")).value
    mine(c.w3, 2)
    db = Database(tmp_path / "truncated.sqlite")
    try:
        with truncating_rpc(str(dep.rpc_url)) as (url, emptied):
            Follower(TaskManagerClient.connect(url, dep, a.validators[1]), db, dep.deploy_block).catch_up()
        with capped_rpc(str(dep.rpc_url)) as (url, _refused):  # honest again
            Follower(TaskManagerClient.connect(url, dep, a.validators[1]), db, dep.deploy_block).catch_up()
        row, cursor = db.batch(header.batch_id), db.cursor(default=dep.deploy_block)
    finally:
        db.close()
    assert row is not None, (
        f"batch {header.batch_id} (block {header.commit_block}) was never recorded: the truncating RPC "
        f"emptied {emptied[:2]} and the cursor moved to {cursor}"
    )


# ----------------------------------------------------------------------------------------- defences


async def test_defence_a_batch_id_never_committed_costs_one_call_and_no_log_query(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A node's receipt document names a batch id never committed (past ``batchCount``) and a
    commit ``txHash`` of a real transaction elsewhere: `Client._chain_batch` refuses it with
    ``LookupError`` after the hint's one single-block query, and `TaskManager.batch` alone asks no
    log at all (no search back to block 0 for nothing)."""
    c, a = network, actors
    mine(c.w3, 2 * CAP)
    other = c.as_account(a.node).task_manager.commit_batch(b"\x26" * 32, 1, _never_stored("r25 other"))
    lie = "0x" + bytes(other.receipt["transactionHash"]).hex()
    ghost = c.task_manager.batch_count() + 7
    with counted_rpc(str(c.deployment.rpc_url)) as (url, methods, ranges):
        client = Client(Contracts.connect(url, c.deployment, a.users[0]), state_dir=tmp_path)
        try:
            with pytest.raises(LookupError):
                client._chain_batch(ghost, lie)
            hinted = list(ranges)
            del ranges[:]
            with pytest.raises(LookupError):
                client.contracts.task_manager.batch(ghost)
        finally:
            await client.aclose()
    block = int(other.receipt["blockNumber"])
    assert hinted == [(block, block)], f"one query, of the hinted block: {hinted}"
    assert ranges == [], f"no log query for an id never committed: {ranges} ({methods[-3:]})"


async def test_defence_a_reorg_during_a_scan_cut_short_records_nothing_of_the_orphaned_branch(
    network: Contracts, actors: Actors, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chance: a reorg between the follower's read and its cursor move, in a step whose scan stopped
    early at a block it could not read (``last < end``: the checkpoints are then taken after the
    read). The orphaned branch held batch N; the new one gives N to another commit (a batch id
    reused by a reorg). Safe, and holding: the step records nothing; the next steps record N as the
    new branch's, and the header the validator looks up for N is the new one."""
    c, a = network, actors
    dep, w3 = c.deployment, c.w3
    db = Database(tmp_path / "reorg.sqlite")
    client = TaskManagerClient.connect(str(dep.rpc_url), dep, a.validators[1])
    follower = Follower(client, db, dep.deploy_block)
    try:
        follower.catch_up()
        fork = snapshot(w3)
        node_tm = c.as_account(a.node).task_manager
        orphan = node_tm.commit_batch(b"\x27" * 32, 1, _never_stored("r25 orphan")).value
        mine(w3, 6)
        unreadable = orphan.commit_block + 3  # FAKE: the RPC fails this block's query (a scan cut short)
        real = client.events
        reorged: list[int] = []

        def events(first: int, last: int) -> list[Any]:
            if first <= unreadable <= last:
                raise RuntimeError(f"FAKE: the logs of block {unreadable} time out")
            got = real(first, last)
            if not reorged:  # the reorg, right after the first range read
                revert(w3, fork)
                reorged.append(node_tm.commit_batch(b"\x28" * 32, 2, _never_stored("r25 new")).value.batch_id)
                mine(w3, 6)  # as long as the orphaned branch
            return got

        monkeypatch.setattr(client, "events", events)
        recorded = follower.step()
        kept_cursor = db.cursor(default=dep.deploy_block)
        monkeypatch.setattr(client, "events", real)
        follower.catch_up()
        row = db.batch(orphan.batch_id)
        header = client.batch(orphan.batch_id)
    finally:
        db.close()
    assert reorged == [orphan.batch_id], "the new branch gave the id to another commit"
    assert recorded == 0 and kept_cursor <= orphan.commit_block, (recorded, kept_cursor)
    assert row is not None and row.root == b"\x28" * 32 and row.count == 2, row
    assert header.root == b"\x28" * 32 and header.count == 2, header


async def test_known_limit_a_header_looked_up_without_its_block_costs_queries_linear_in_its_age(
    network: Contracts, actors: Actors
) -> None:
    """Known limit (cost): with no block for the commit (a receipt document without a ``txHash``, or
    a lying one; a `TaskManagerClient` with no database), `TaskManager.batch` searches back from the
    head, one range the RPC accepts at a time, plus a refused regrow every ``REGROW_AFTER`` ranges:
    queries linear in the batch's age (a year-old batch on a 2 s chain and a 2,000-block cap: ~8,000
    queries per lookup). Never one query from block 0 to the head; never more than the age needs.
    A fix by design is a view of a batch's commit block by id (one call, then one block)."""
    c, a = network, actors
    header = c.as_account(a.node).task_manager.commit_batch(b"\x29" * 32, 1, _never_stored("r25 old")).value
    ranges_back = 8
    mine(c.w3, ranges_back * CAP)
    with counted_rpc(str(c.deployment.rpc_url)) as (url, _methods, ranges):
        tm = Contracts.connect(url, c.deployment, a.users[0]).task_manager
        found = tm.batch(header.batch_id)
    refused = [r for r in ranges if r[1] - r[0] + 1 > CAP]
    accepted = len(ranges) - len(refused)
    assert found.root == b"\x29" * 32
    assert accepted >= ranges_back, f"about one query per {CAP} blocks of age: {accepted}"
    assert len(ranges) <= 2 * ranges_back + 8, f"bounded by the age: {len(ranges)} ({ranges[:6]})"
    assert all(last - first + 1 <= 2_000 for first, last in ranges), "never wider than the widest"
    assert REGROW_AFTER >= 2
