"""Adversarial review 24: how an HONEST node answers data claims after this session's changes.

Scope: commits 35bc966, 7b4c07e and the node part of 9ff80ae: `supernet.node.service.answer_outbox`
(answers signed, stored in ``answer_txs``, broadcast, never waited on; re-sent when the pool lost
them, repriced at their nonce; a new one signed only once the stored one reverted or its nonce went
to another transaction), `supernet.sdk.chain.resend` (broadcast / repriced / nonce_used / in_pool),
`Binding.sign_answer` / `answer_tip_ceiling`, and the responder
(`supernet.node.service.availability`: `_durable_cursor`, claims past their deadline dropped, the
scan through `LogRanges`). Thought as a griefer who wants the honest node slashed or its wallet
drained, and as chance (reorgs, restarts, a load-balanced RPC, two processes on one database).

Real parts: Anvil with the compiled contracts (``network``), the node's real `Database`, its real
`AvailabilityResponder` bound to the node's key, the embedded content store. Reorgs are Anvil's
``evm_snapshot`` / ``evm_revert`` (the blocks after the snapshot replaced by others). FAKES, named
where used: an RPC whose ``latest`` nonce count is one ahead of the chain its receipts come from (a
load balancer's backend on a branch later orphaned), and a content store that is down.

Found:

1. MEDIUM, FIXED `test_defence_an_answer_the_pool_dropped_for_want_of_funds_is_never_funded_again`: the
   wallet float (`_fund`) runs only before an answer is SIGNED, never before a stored one is sent
   again. Many claims at once: each answer's check sees the whole balance (pending answers are not
   counted), the pool takes them all, the block runs out of balance and drops the last ones; from
   then on every scan re-broadcasts them, is refused for want of funds, and never pulls the node's
   credits that would pay them: the claims stay open and the node is slashed (twice here).
   Fix: the wallet float counts every answer in flight (`AnswerOutbox.in_flight_wei`: gas limit
   times fee cap of each one stored), before each new answer and once a scan for the stored ones.
2. MEDIUM, FIXED `test_defence_a_claim_id_a_reorg_gives_to_another_claim_is_never_answered`: the
   responder's ``_done`` (and ``answer_txs``) are keyed by claim id alone. A reorg that re-includes
   two claims in the other order (the later one sent with a higher tip) gives each the other's id;
   both ids are in ``_done``, so neither new claim is taken up; the node's old answers come back
   from the orphaned blocks and revert at its cost, and it is slashed twice. Fix: a claim's
   identity is its id and what it claims (`availability._key`: batch and entry, leaf, batch), in
   ``_done`` and in ``answer_txs``; a claim whose id the contract now holds for other content is
   left to the scan, which reads the new one.
3. LOW, FIXED `test_defence_a_nonce_count_one_ahead_signs_a_second_answer_that_reverts`: `_stands` read
   "nonce used and no receipt of any version" as "another transaction took it" and signs a new
   answer at the next nonce; a count one ahead (FAKE: a lagging or orphaned backend) while the
   answer still waits in the pool gives two answers, the second reverting after paying its calldata
   (the very duplicate the outbox was written to stop). Fix: a stored answer is given up on that
   ground only when two looks in a row say so (as the batcher's `wait_commit` does for commits).
4. LOW, FIXED `test_defence_a_claim_a_reorg_erased_pins_the_claims_cursor`: a claim erased by a reorg
   (its claimant's transaction replaced) stays in ``_open``: its status read reverts
   (``UnknownAvailabilityChallenge``) before the deadline check, so it is never dropped, a warning
   is logged every scan, and `_durable_cursor` stays behind it for ever (until another claim
   happens to take the id): every restart re-reads everything from there. Fix: the deadline (the
   event's) is checked first, and a claim unknown to the contract is left to the scan.
5. LOW, a known limit (pinned by `test_known_limit_two_responders_on_one_database_both_answer`):
   nothing keeps two responders (a restart overlapping the old process, an operator's second
   instance) off one database; the check (`resume`) and the record (`send`) are apart by the
   store read, the wallet top-up and the signature, so both sign, at consecutive nonces, and the
   second answer reverts at the node's cost. FIXED for what makes it happen, two processes: the
   running node holds an exclusive lock of its database (`Database.open(exclusive=True)` in
   `runner.open_bound`; its batcher would double-commit too), and a second process on the same
   data directory is refused at its start (tests/unit/test_node_db_lock.py). The test here models
   the two with two responders in one process, which the lock does not cover: it stays pinned.

Checked and holding:

- a restart after the answer was stored but before it was broadcast sends the stored bytes at
  their nonce, and signs nothing new
  (`test_defence_a_restart_between_store_and_broadcast_sends_the_stored_answer`);
- a replacement and its original both offered to the pool, then the base fee falling back: one of
  them lands, the nonce is used once, nothing more is signed, the stored answer is forgotten
  (`test_defence_a_repriced_answer_and_its_original_land_once`);
- the cursor still moves past a claim once its deadline passed (tests/unit/test_review_node_answers.py).

Known limit pinned: `test_known_limit_an_answer_copied_from_the_mempool_leaves_the_node_s_to_revert`
(the contract pays the node whoever answers, Review11; the node's own transaction still reverts
after paying its calldata, and the outbox forgets it without trying to cancel it at its nonce).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from supernet.node.service.db import Database
from supernet.node.service.wallet_float import WalletFloat
from supernet.sdk.chain import Contracts, Receipt
from supernet.sdk.chain.anvil import _rpc, mine, revert, set_balance, set_next_base_fee, snapshot
from supernet.sdk.chain.bindings import chain_id, release_nonce
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.sdk.store import StoreClient
from web3.exceptions import TransactionNotFound

from tests.chain_fixtures import Actors
from tests.unit.test_review_node_answers import REORG_LOOKBACK, _committed_batch, _node_nonce, _responder

BASE_FEE = 20 * 10**9
"""A busy chain's base fee (tests/unit/test_review_hostile_parties.py's): answers repaid at it."""


def _busy(c: Contracts) -> None:
    set_next_base_fee(c.w3, BASE_FEE)
    mine(c.w3)


def _pool(c: Contracts, actors: Actors) -> list[str]:
    """The hashes of the node's transactions in Anvil's pool."""
    pending = _rpc(c.w3, "txpool_content", [])["pending"]
    return [
        tx["hash"]
        for who, txs in pending.items()
        if who.lower() == actors.node.address.lower()
        for tx in txs.values()
    ]


def _outbox_key(c: Contracts, aid: int) -> str:
    """The answer outbox's key of availability claim ``aid``: its id and its entry (since the
    fix of finding 2, not its id alone)."""
    claim = c.task_manager.get_availability(aid)
    return f"a:{aid}:{claim.batch_id}:{claim.index}"


@contextlib.contextmanager
def _no_automine(c: Contracts) -> Any:
    _rpc(c.w3, "evm_setAutomine", [False])
    try:
        yield
    finally:
        _rpc(c.w3, "evm_setAutomine", [True])


def _slashed_after_window(c: Contracts, actors: Actors, aids: list[int]) -> dict[int, str]:
    """Past the answer window, resolve what is still open: each claim's final status."""
    _rpc(c.w3, "evm_increaseTime", [c.params.vote_window + 1])
    mine(c.w3)
    out = {}
    for aid in aids:
        status = c.task_manager.get_availability(aid).status
        if status == AvailabilityStatus.OPEN:
            c.as_account(actors.outsider).task_manager.resolve_availability(aid)
        out[aid] = status.name
    return out


class _StoreDown:
    """FAKE: the node's content store down (every read raises)."""

    async def get_block(self, cid: str) -> bytes:
        raise OSError(f"store unavailable: {cid} not read")


# ---------------------------------------------------------------------------------------------
# Findings
# ---------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_an_answer_the_pool_dropped_for_want_of_funds_is_never_funded_again(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """MEDIUM (an honest node slashed while its credits would have paid the answer).

    Attack: a griefer opens four claims in one block on a node whose wallet holds one answer at its
    worst (`WalletFloat.most_cost`) while its earlier answers' refunds sit as credits in the
    TaskManager, which only the wallet float pulls. The responder's first scan checks the wallet
    before each answer (each check sees the whole balance: the answers waiting in the pool are not
    counted, so nothing is pulled), signs, stores and broadcasts all four; the block runs two and
    the others cannot be paid any more (Anvil drops them; geth refuses them at once as an
    overdraft). Every later scan finds it stored,
    re-broadcasts it (`AnswerOutbox.resume`), is refused for want of funds, and returns before
    `_fund`: the credits are never pulled, and the claim is slashed at the deadline. Secure: a
    stored answer refused for funds tops the wallet up as a fresh one does."""
    c, w3, node = network, network.w3, actors.node
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=7, trace_bytes=20_000)
        header = c.task_manager.batch(batch_id)
        griefer = c.as_account(actors.outsider).task_manager
        responder = _responder(c, actors, db, store_client)
        for index in range(3):  # earlier claims at a busy base fee: credits pile up
            _busy(c)
            claim = griefer.challenge_availability(header, index).value
            _busy(c)
            assert await responder.answer_once() == [claim]
        _busy(c)
        aids = [griefer.challenge_availability(header, i).value for i in (3, 4, 5, 6)]
        _busy(c)
        gas = await responder._answer_gas(20_030)
        need = WalletFloat.most_cost(
            gas, c.as_account(node).task_manager.answer_fee_cap("answerAvailability")
        )
        set_balance(w3, node.address, need)  # one answer at its worst
        # a block a second (a chain's pace, not one per transaction): the answers of one scan wait
        # in the pool together, and the wallet float's pulls are mined within a block
        _rpc(w3, "evm_setAutomine", [False])
        _rpc(w3, "evm_setIntervalMining", [1])
        try:
            assert await responder.answer_once() == aids  # all four signed, stored, in the pool
        finally:
            _rpc(w3, "evm_setIntervalMining", [0])
            _rpc(w3, "evm_setAutomine", [True])
        mine(w3)
        for _ in range(3):
            await responder.answer_once()
        credits = c.task_manager.claimable(node.address)
        final = _slashed_after_window(c, actors, aids)
    finally:
        db.close()
    assert set(final.values()) == {"ANSWERED"}, (
        f"claims {final}: the last answer was dropped for want of funds and re-broadcast (refused) at "
        f"every scan without the wallet float: {credits} wei of the node's credits (the answer needs "
        f"at most {need}) were never pulled, and the honest node was slashed"
    )


@pytest.mark.anvil
async def test_defence_a_claim_id_a_reorg_gives_to_another_claim_is_never_answered(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """MEDIUM (an honest node slashed twice by a reorg a griefer can shape, not cause).

    Attack: a griefer claims entry 0, then entry 1 in a later block with a higher tip. The node
    answers both; the claims read ANSWERED and the responder drops them into ``_done`` (keyed by
    id). A reorg replaces those blocks: both claims come back in the pool and the new block orders
    them by tip, so entry 1's claim gets the first id and entry 0's the second; the node's two
    answers come back too and revert (each posts the other entry), after paying their calldata.
    The responder re-reads the blocks (`REORG_LOOKBACK`), finds two open claims against it, and
    skips both: their ids are in ``_done``. Secure: a re-read claim whose content differs from the
    one dropped under its id is a new claim (both answered before the deadline)."""
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=2, trace_bytes=500)
        header = c.task_manager.batch(batch_id)
        griefer = c.as_account(actors.outsider).task_manager
        responder = _responder(c, actors, db, store_client)
        before = snapshot(w3)
        first = griefer.challenge_availability(header, 0).value
        second = griefer.challenge_availability(header, 1).value
        assert await responder.answer_once() == [first, second]
        answers = [
            _rpc(w3, "eth_getRawTransactionByHash", [h])
            for h in (db.answer_tx(_outbox_key(c, first))[2][-1], db.answer_tx(_outbox_key(c, second))[2][-1])  # type: ignore[index]
        ]
        assert await responder.answer_once() == []  # both read ANSWERED: dropped
        revert(w3, before)  # the reorg: those blocks replaced...
        assert griefer.challenge_availability(header, 1).value == first  # ...entry 1 first
        assert griefer.challenge_availability(header, 0).value == second
        for raw in answers:  # the orphaned blocks' answers come back and are mined
            tx_hash = w3.eth.send_raw_transaction(raw)
            with contextlib.suppress(TransactionNotFound):  # (Anvil may hold it after a revert)
                w3.eth.get_transaction_receipt(tx_hash)
            mine(w3)
            assert w3.eth.get_transaction_receipt(tx_hash)["status"] == 0
        for _ in range(3):
            await responder.answer_once()
        final = _slashed_after_window(c, actors, [first, second])
        stake = c.service_manager.get_node(actors.node.address).stake
    finally:
        db.close()
    assert set(final.values()) == {"ANSWERED"}, (
        f"after the reorg, claims {final} against the honest node were never taken up: their ids were "
        f"in the responder's _done from the claims they replaced; the node paid two reverted answers "
        f"and was slashed to {stake} wei"
    )


@pytest.mark.anvil
async def test_defence_a_nonce_count_one_ahead_signs_a_second_answer_that_reverts(
    network: Contracts,
    actors: Actors,
    store_client: StoreClient,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """LOW (the node's wallet pays one more answer's calldata, up to ~16 M gas for a large trace).

    FAKE: for one scan the RPC's ``latest`` nonce count is one ahead of the chain its receipts
    and state come from (a load balancer's backend on a branch later orphaned: the case
    `fill_nonce_gap` is written for). The answer waits in the pool. `_stands` reads "nonce used,
    no receipt of any version" as "another transaction took it", forgets it and signs a new
    answer, at the next nonce (the count is one ahead); both land and the second reverts. Secure:
    a stored answer is given up only on evidence (a receipt, a count at a confirmed depth), not on
    a count a single backend reports."""
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=5_000)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(
            c.task_manager.batch(batch_id), 0
        )
        aid = aid.value
        responder = _responder(c, actors, db, store_client)
        before = _node_nonce(c, actors)
        with _no_automine(c):
            assert await responder.answer_once() == [aid]
            real = w3.eth.get_transaction_count

            def one_ahead(address: str, block: Any = "latest") -> int:  # FAKE: the lagging backend
                count = int(real(address, block))  # type: ignore[arg-type]
                return (
                    count + 1
                    if block == "latest" and address.lower() == actors.node.address.lower()
                    else count
                )

            monkeypatch.setattr(w3.eth, "get_transaction_count", one_ahead)
            await responder.answer_once()
            monkeypatch.undo()
            pool = _pool(c, actors)
        mine(w3)
        reverted = [h for h in pool if w3.eth.get_transaction_receipt(h)["status"] == 0]
        gas = sum(w3.eth.get_transaction_receipt(h)["gasUsed"] for h in reverted)
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
    finally:
        db.close()
    assert _node_nonce(c, actors) == before + 1 and not reverted, (
        f"one lagging count made the responder sign a second answer at the next nonce while the first "
        f"waited in the pool: {len(pool)} answers sent, {len(reverted)} reverted ({gas} gas paid for nothing)"
    )


@pytest.mark.anvil
async def test_defence_a_claim_a_reorg_erased_pins_the_claims_cursor(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """LOW (no slash; a warning every second and a cursor that never moves on).

    The responder reads a claim it cannot answer at once (its store down: FAKE). A reorg erases the
    claim (its claimant's transaction replaced at its nonce on the new branch: a griefer may do it
    on purpose). Its status read now reverts (``UnknownAvailabilityChallenge``) before the deadline
    check, so the claim is never dropped: long past its deadline it is still in ``_open`` and
    `_durable_cursor` stays behind it, so every restart re-reads every block since. Secure: a claim
    past its deadline (or unknown to the contract) leaves, and the stored cursor moves on."""
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=500)
        header = c.task_manager.batch(batch_id)
        responder = _responder(c, actors, db, _StoreDown())  # type: ignore[arg-type]
        before = snapshot(w3)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(header, 0).value
        claim_block = int(w3.eth.block_number)
        assert await responder.answer_once() == []  # read, not answerable now
        revert(w3, before)  # the claim's block replaced by one without it
        mine(w3, 3 * REORG_LOOKBACK)
        _rpc(w3, "evm_increaseTime", [c.params.vote_window + 1])
        mine(w3)
        for _ in range(3):
            await responder.answer_once()
        head, cursor = int(w3.eth.block_number), db.claims_cursor()
        still = aid in responder._open
    finally:
        db.close()
    assert cursor == head and not still, (
        f"claim {aid}, erased by a reorg, is still open in the responder ({still}) past its deadline, "
        f"and the stored claims cursor is pinned at block {cursor} (claim read at {claim_block}, head {head})"
    )


@pytest.mark.anvil
async def test_known_limit_two_responders_on_one_database_both_answer(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """LOW (an answer's calldata paid twice; chance: a restart overlapping the old process).

    Two responders on one database (nothing locks it to one process). Both scan at once: each
    finds no stored answer (`AnswerOutbox.resume`), reads the trace, checks the wallet, signs and
    only then records (`send`): the first at the pending nonce, the second one above, both land
    and the second reverts. Secure: a claim's answer slot is taken atomically in the database
    before signing (or the database is held by one process), so one answer is sent."""
    c, w3 = network, network.w3
    path = tmp_path / "node.sqlite3"
    db, other = Database.open(path), Database.open(path)
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=5_000)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(
            c.task_manager.batch(batch_id), 0
        )
        aid = aid.value
        one, two = _responder(c, actors, db, store_client), _responder(c, actors, other, store_client)
        before = _node_nonce(c, actors)
        with _no_automine(c):
            await asyncio.gather(one.answer_once(), two.answer_once())
            pool = _pool(c, actors)
        mine(w3)
        reverted = [h for h in pool if w3.eth.get_transaction_receipt(h)["status"] == 0]
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
    finally:
        other.close()
        db.close()
    # the known limit, pinned (safe would be one answer, none reverted): a database lock turns it
    assert _node_nonce(c, actors) == before + 2 and len(reverted) == 1, (
        f"two responders on one database sent {len(pool)} answers to claim {aid}; {len(reverted)} reverted"
    )


# ---------------------------------------------------------------------------------------------
# Defences and a known limit
# ---------------------------------------------------------------------------------------------


@pytest.mark.anvil
async def test_defence_a_restart_between_store_and_broadcast_sends_the_stored_answer(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Tried: the process dies after `AnswerOutbox.send` stored the signed answer and before it
    broadcast it (its nonce reservation dies with it). Holds: the restarted responder finds it
    stored, its nonce unused and the pool without it, and broadcasts those bytes: one answer."""
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=500)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(
            c.task_manager.batch(batch_id), 0
        )
        aid = aid.value
        node_tm = c.as_account(actors.node).task_manager
        row = db.receipt_at(batch_id, 0)
        task = db.task(row.task_id) if row is not None else None
        assert row is not None and task is not None and task.trace_cid is not None
        trace = await store_client.get_block(task.trace_cid)
        proof = [bytes.fromhex(p[2:]) for p in json.loads(row.proof)]  # type: ignore[arg-type]
        signed = node_tm.sign_answer_availability(
            aid, Receipt.from_json(row.receipt_json), proof, trace, node_tm.batch(batch_id)
        )
        db.record_answer_tx(_outbox_key(c, aid), "0x" + signed.hash.hex(), signed.raw, signed.nonce)
        release_nonce(w3, actors.node.address, signed.nonce)  # the process died: its memory is gone
        before = _node_nonce(c, actors)
        assert await _responder(c, actors, db, store_client).answer_once() == []  # not signed again
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
        assert _node_nonce(c, actors) == before + 1
        assert w3.eth.get_transaction_receipt(signed.hash)["status"] == 1
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_a_repriced_answer_and_its_original_land_once(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Tried: the answer priced out by a base-fee spike is repriced at its nonce; another pool
    still offers the original; then the base fee falls back. Holds: one version lands (the nonce
    is used once), the claim is answered, the next scan signs nothing and forgets the answer."""
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=500)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(
            c.task_manager.batch(batch_id), 0
        )
        aid = aid.value
        responder = _responder(c, actors, db, store_client)
        before = _node_nonce(c, actors)
        with _no_automine(c):
            assert await responder.answer_once() == [aid]
            [original] = _pool(c, actors)
            raw = _rpc(w3, "eth_getRawTransactionByHash", [original])
            cap = int(w3.eth.get_transaction(original)["maxFeePerGas"])
            set_next_base_fee(w3, 4 * cap)  # the spike: the answer is priced out...
            mine(w3)
            assert await responder.answer_once() == []  # ...and repriced at its nonce
            stored = db.answer_tx(_outbox_key(c, aid))
            assert stored is not None and len(stored[2]) >= 2 and stored[2][0] == original
            with contextlib.suppress(Exception):
                w3.eth.send_raw_transaction(raw)  # another pool offers the original again
            set_next_base_fee(w3, 10**8)  # the base fee falls back
            mine(w3)
        mine(w3)
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
        assert _node_nonce(c, actors) == before + 1
        assert await responder.answer_once() == []
        assert _node_nonce(c, actors) == before + 1 and db.answer_tx(_outbox_key(c, aid)) is None
    finally:
        set_next_base_fee(w3, 10**8)
        mine(w3)
        db.close()


@pytest.mark.anvil
async def test_known_limit_an_answer_copied_from_the_mempool_leaves_the_node_s_to_revert(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Known limit (Review11, TaskManager._splitAnswerBond's comment): a griefer copies the node's
    answer from the pool and sends it with a higher tip. The contract pays the answer's price to
    the node whoever sends it, and the node is not slashed, but its own answer is mined after the
    copy and reverts, having paid its calldata; the outbox only forgets it (`AnswerOutbox.settled`):
    even one still pending is not replaced by a cheap transfer at its nonce. The griefer pays as
    much as the node loses. Fix by design: answers through a private submission (a builder's
    protected RPC), or a cancelling self-transfer at the nonce of a pending answer once the claim
    is settled by another."""
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=5_000)
        aid = c.as_account(actors.outsider).task_manager.challenge_availability(
            c.task_manager.batch(batch_id), 0
        )
        aid = aid.value
        responder = _responder(c, actors, db, store_client)
        credit = c.task_manager.claimable(actors.node.address)
        with _no_automine(c):
            assert await responder.answer_once() == [aid]
            [mine_hash] = _pool(c, actors)
            tx = w3.eth.get_transaction(mine_hash)
            copier = actors.outsider
            copy = copier.sign_transaction(
                {
                    "to": tx["to"],
                    "data": tx["input"],
                    "gas": tx["gas"],
                    "nonce": w3.eth.get_transaction_count(copier.address, "pending"),
                    "chainId": chain_id(w3),
                    "maxFeePerGas": 2 * int(tx["maxFeePerGas"]),
                    "maxPriorityFeePerGas": 2 * int(tx["maxPriorityFeePerGas"]) + 1,
                }
            )
            w3.eth.send_raw_transaction(copy.raw_transaction)
            mine(w3)
        node_receipt = w3.eth.get_transaction_receipt(mine_hash)
        assert w3.eth.get_transaction_receipt(copy.hash)["status"] == 1
        assert node_receipt["status"] == 0 and node_receipt["gasUsed"] > 21_000  # paid for nothing
        assert c.task_manager.claimable(actors.node.address) > credit  # the price went to the node
        assert await responder.answer_once() == []
        assert db.answer_tx(_outbox_key(c, aid)) is None
    finally:
        db.close()
