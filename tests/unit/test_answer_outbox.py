"""The node's answers to data claims kept until they land (`supernet.node.service.answer_outbox`).

Each test opens a real availability claim on Anvil against a real committed batch of the node
(tests/unit/test_review_node_answers.py's helpers), lets the node's real responder answer it, then
does to the stored answer what a chain does to transactions: a pool drops it, another transaction
takes its nonce, it is mined and reverts. The responder must send the same answer again in the
first case, and sign a new one in the others, and answer the claim in every case.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from supernet.node.service.db import Database
from supernet.sdk.chain import Contracts, Receipt
from supernet.sdk.chain.anvil import _rpc, mine
from supernet.sdk.chain.bindings import send_ether
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.sdk.store import StoreClient

from tests.chain_fixtures import Actors
from tests.unit.test_review_node_answers import _committed_batch, _node_nonce, _responder


def _claimed(c: Contracts, actors: Actors, batch_id: int) -> int:
    """An availability claim by an outsider on entry 0 of ``batch_id``."""
    return int(
        c.as_account(actors.outsider)
        .task_manager.challenge_availability(c.task_manager.batch(batch_id), 0)
        .value
    )


def _claim_key(c: Contracts, aid: int) -> str:
    """The outbox's key of availability claim ``aid`` (its id and its entry)."""
    claim = c.task_manager.get_availability(aid)
    return f"a:{aid}:{claim.batch_id}:{claim.index}"


def _pool(c: Contracts, actors: Actors) -> list[str]:
    """The hashes of the node's transactions in Anvil's pool."""
    pending = _rpc(c.w3, "txpool_content", [])["pending"]
    return [
        tx["hash"]
        for who, txs in pending.items()
        if who.lower() == actors.node.address.lower()
        for tx in txs.values()
    ]


@pytest.mark.anvil
async def test_an_answer_a_pool_dropped_is_sent_again_not_signed_again(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        aid = _claimed(
            c, actors, await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=500)
        )
        responder = _responder(c, actors, db, store_client)
        before = _node_nonce(c, actors)
        _rpc(w3, "evm_setAutomine", [False])
        try:
            assert await responder.answer_once() == [aid]
            [sent] = _pool(c, actors)
            _rpc(w3, "anvil_dropTransaction", [sent])  # the pool lost it
            assert _pool(c, actors) == []
            assert await responder.answer_once() == []  # not signed again...
            assert _pool(c, actors) == [sent]  # ...the same bytes sent again
        finally:
            _rpc(w3, "evm_setAutomine", [True])
        mine(w3)
        assert _node_nonce(c, actors) == before + 1
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
        await responder.answer_once()  # settled: the stored answer is forgotten
        assert db.answer_tx(_claim_key(c, aid)) is None
    finally:
        db.close()


@pytest.mark.anvil
async def test_an_answer_whose_nonce_another_transaction_took_is_signed_anew(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        aid = _claimed(
            c, actors, await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=500)
        )
        responder = _responder(c, actors, db, store_client)
        _rpc(w3, "evm_setAutomine", [False])
        try:
            await responder.answer_once()
            [sent] = _pool(c, actors)
            _rpc(w3, "anvil_dropTransaction", [sent])
        finally:
            _rpc(w3, "evm_setAutomine", [True])
        # another transaction of the node's key takes the nonce (an operator's transfer, a commit)
        send_ether(w3, actors.node, actors.node.address, 1)
        stored = db.answer_tx(_claim_key(c, aid))
        assert stored is not None and _node_nonce(c, actors) > stored[1]
        # the stored one cannot land: a new one, once a second look says so (a backend's count
        # can run ahead for a moment: tests/unit/test_review_session_changes24.py)
        assert await responder.answer_once() == []
        assert await responder.answer_once() == [aid]
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
    finally:
        db.close()


@pytest.mark.anvil
async def test_an_answer_that_reverted_is_signed_anew(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """The stored answer was mined and reverted (here: one posting a wrong trace, signed with a
    gas limit so that no estimate refused it) while the claim is still open: a new answer."""
    c, w3 = network, network.w3
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=500)
        aid = _claimed(c, actors, batch_id)
        node_tm = c.as_account(actors.node).task_manager
        row = db.receipt_at(batch_id, 0)
        assert row is not None
        receipt = Receipt.from_json(row.receipt_json)
        fn = node_tm.contract.functions.answerAvailability(
            aid, node_tm.batch(batch_id).as_tuple(), receipt.as_tuple(), [], b"not the trace"
        )
        nonce = w3.eth.get_transaction_count(actors.node.address, "pending")
        tx = fn.build_transaction({"from": actors.node.address, "nonce": nonce, "gas": 300_000})
        bad = actors.node.sign_transaction(tx)  # a gas limit: no estimate refuses it
        db.record_answer_tx(_claim_key(c, aid), "0x" + bad.hash.hex(), bad.raw_transaction, nonce)
        w3.eth.send_raw_transaction(bad.raw_transaction)
        assert w3.eth.wait_for_transaction_receipt(bad.hash, timeout=10)["status"] == 0
        responder = _responder(c, actors, db, store_client)
        assert await responder.answer_once() == [aid]
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
        stored = db.answer_tx(_claim_key(c, aid))
        assert stored is not None and stored[2] == [stored[2][0]] and stored[2][0] != "0x" + bad.hash.hex()
    finally:
        db.close()
