"""Adversarial review: hostile users and validators against an HONEST node.

Scope: what a malicious user or a malicious validator (alone or a minority) can do to a node that
runs every task honestly: get it slashed, make it work unpaid, or exhaust it. Here: the node's
answers to data claims (`supernet.node.service.availability.AvailabilityResponder`) and who pays
for them (`TaskManager.challengeAvailability` / ``answerAvailability`` / ``_splitAnswerBond``).

Real parts: Anvil with the compiled contracts (``network``), the node's real `Database`, its real
`AvailabilityResponder` bound to the node's key, the embedded content store (``store_client``).

Found:

1. FIXED (medium; an honest node slashed by anyone, no stake needed): an availability claim's
   deposit repays the node its answer, but into ``TaskManager.claimable[node]``, which nothing in
   the node service ever withdraws (only the operator's ``supernet node withdraw`` does). Every
   answer is paid from the node's wallet. A griefer opens claims on an honest node's entries,
   gets most of each deposit back at the answer, and reuses it for the next claim: each claim
   costs it 10 % of the bond (0.01 ether) and moves one answer's cost from the node's wallet
   into a credit the daemon never touches (measured: a 20 KB trace, ~837 k gas, 0.0155 ether at
   a 20 gwei base fee, 0.0146 of it credited; a 384 KiB trace ~16 M gas, ~0.3 ether). Once the
   wallet cannot pay one answer the next claim goes unanswered and the node is slashed, though
   its credit would have paid that answer
   (`test_attack_answers_are_paid_from_the_wallet_and_refunded_where_the_node_never_looks`:
   slashed from 2 to 1 ether holding 0.0146 ether of refunds, wallet 0.0093, answer 0.0155).
   The same empty wallet would also stop the node's commits (their gas; not tested here).
   Fix (by design): answers that finance themselves: the contract pays the answer's price to the
   node in the answering transaction (a push to the node, whoever sends it), or the responder
   pulls its ``claimable`` before an answer its wallet cannot pay and alarms below a float of one
   costliest answer (``AVAILABILITY_WORST_GAS`` at the fee cap).
   Fixed the second way (`supernet.node.service.wallet_float.WalletFloat`): before every answer
   (availability, omission, manifest) the responder pulls the node's credits from the TaskManager
   and the OmissionManager when the wallet holds less than the answer may cost at the moment's fee
   cap, and logs "DUTY AT RISK" when even they do not cover it. A run of claims then moves only
   the answers' tips out of the node's funds. The test now lets credits pile up over three
   answered claims, drops the wallet below one answer, and requires the fourth to be answered.

Checked and holding:

- an entry is claimed at most once (open, then answered), so the griefing is bounded by the
  node's committed entries (`test_defence_an_answered_entry_cannot_be_claimed_again`);
- not re-reported: the node's tip on an answer is not repaid (by design, the base fee's price:
  tests/integration/test_review_answer_prices.py), and at Anvil's idle 0.05 gwei base fee the
  credit was 5 % of what the answer cost the node (a 1 gwei tip); the test therefore runs at a
  20 gwei base fee, where the credit is 95 %.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from supernet.node.service.availability import AvailabilityResponder
from supernet.node.service.db import Database
from supernet.node.service.models import NewTask, ReceiptRow
from supernet.sdk.chain import Contracts, Receipt, ReceiptTree, hash_task_request, output_hash
from supernet.sdk.chain.anvil import increase_time, mine, set_balance, set_next_base_fee
from supernet.sdk.chain.contract_errors import AlreadyAnswered, AvailabilityAlreadyOpen
from supernet.sdk.chain.receipts import trace_hash
from supernet.sdk.chain.tasks import AvailabilityStatus
from supernet.sdk.store import StoreClient

from tests.chain_fixtures import MODEL_ID, Actors, make_request

BASE_FEE = 20 * 10**9
"""A busy L1's base fee: the answer's price (`ClaimBond.costOfAnswer`) is the base fee's."""


def _busy(c: Contracts) -> None:
    """A block at `BASE_FEE` (the next one follows EIP-1559 from it, as on a busy chain)."""
    set_next_base_fee(c.w3, BASE_FEE)
    mine(c.w3)


# ---------------------------------------------------------------------------------------------
# An honest node's committed batch, as its batcher leaves it in its database
# ---------------------------------------------------------------------------------------------


async def _committed_batch(
    c: Contracts, actors: Actors, db: Database, store: StoreClient, count: int, trace_bytes: int
) -> int:
    """``count`` finished tasks of `Actors.node`, each with a trace of about ``trace_bytes`` in the
    store, sealed and committed on chain with their proofs stored: returns the chain batch id."""
    node = actors.node
    receipts, ids = [], []
    for i in range(count):
        req = make_request(actors.users, node.address, i)
        task_id = "0x" + hash_task_request(req, c.domain).hex()
        trace_cid = await store.put_dag({"type": "pad", "i": i, "pad": "x" * trace_bytes})
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
        leaf = "0x" + receipt.leaf().hex()
        row = ReceiptRow(task_id, leaf, json.dumps(receipt.to_json()), "0x" + "33" * 65)
        db.finish_task(task_id, f"answer {i}", trace_cid, row)
        receipts.append(receipt)
        ids.append(task_id)
    tree = ReceiptTree.from_receipts(receipts)
    local = db.seal_batch("0x" + tree.root.hex(), "bafymanifest", ids)
    chain_id = c.as_account(node).task_manager.commit_batch(tree.root, count, "bafymanifest").value.batch_id
    proofs = {tid: json.dumps(["0x" + p.hex() for p in tree.proof_at(i)]) for i, tid in enumerate(ids)}
    db.mark_batch_committed(local, chain_id, proofs)
    mine(c.w3, 3)  # past the seed block
    return int(chain_id)


@pytest.mark.anvil
async def test_defence_answers_are_paid_from_the_credits_they_earned(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Severity medium (an honest node slashed; who gains: a competitor, or anyone holding a
    short position on the node's stake; the claimant also earns the challenger reward where the
    seed picked it).

    Attack: a griefer with no stake opens availability claims on an honest node's entries. The
    node answers each from its wallet; the deposit repays the answer's cost to
    ``TaskManager.claimable[node]`` (`_splitAnswerBond`), and the claimant gets the rest of its
    deposit back at once (less 10 % of the bond), so the same capital opens the next claim. The
    node service never calls ``TaskManager.withdraw`` (only the operator's ``supernet node
    withdraw`` does), so each claim moves up to one answer's cost from the wallet into a credit
    the node does not touch. Here the wallet holds 60 % of one answer after the first claim,
    while its credit holds a whole answer: the second claim is not answered (the transaction
    cannot be paid), and the node is slashed at the deadline.

    Fix (by design): make an answer self-financing. Either the contract pays the answer's cost
    to the node in the answering transaction (push, the node being the payee whoever sends it),
    or the responder pulls its ``claimable`` credit before an answer its wallet cannot pay (and
    alarms below a float of the costliest answer, `AVAILABILITY_WORST_GAS` at the fee cap)."""
    c = network
    node = actors.node
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=4, trace_bytes=20_000)
        header = c.task_manager.batch(batch_id)
        griefer = c.as_account(actors.outsider).task_manager  # no stake: anyone may claim
        node_tm = c.as_account(node).task_manager
        responder = AvailabilityResponder(db, store_client, node_tm, node.address, start_block=0)

        # claim 1: answered from the wallet, repaid into the node's claimable credit (a 20 gwei
        # base fee: the answer's price is the base fee's, the node's 1 gwei tip is its own, by design)
        _busy(c)
        first = griefer.challenge_availability(header, 0).value
        wallet0, credit0 = c.w3.eth.get_balance(node.address), c.task_manager.claimable(node.address)
        _busy(c)
        assert await responder.answer_once() == [first]
        spent = wallet0 - c.w3.eth.get_balance(node.address)
        credit = c.task_manager.claimable(node.address) - credit0
        assert spent > 0 and credit >= spent * 9 // 10, (spent, credit)  # repaid, less the tip

        # two more claims answered while the wallet is full (nothing to pull): credits pile up
        for index in (1, 2):
            _busy(c)
            claim = griefer.challenge_availability(header, index).value
            _busy(c)
            assert await responder.answer_once() == [claim]
        # the wallet now holds 60 % of one answer, the TaskManager three answers for the node
        set_balance(c.w3, node.address, spent * 6 // 10)
        _busy(c)
        second = griefer.challenge_availability(header, 3).value
        for _ in range(2):
            _busy(c)
            await responder.answer_once()  # the answer cannot be paid: logged, retried
        increase_time(c.w3, c.params.vote_window + 1)
        status = c.task_manager.get_availability(second).status
        if status == AvailabilityStatus.OPEN:
            c.as_account(actors.outsider).task_manager.resolve_availability(second)
        stake_left = c.service_manager.get_node(node.address).stake
        assert status == AvailabilityStatus.ANSWERED, (
            f"an honest node holding {c.task_manager.claimable(node.address)} wei of answer refunds "
            f"in the TaskManager left claim {second} unanswered ({status.name}) because its wallet "
            f"held {spent * 6 // 10} wei, less than one answer ({spent}); it was slashed to "
            f"{stake_left} wei of stake"
        )
    finally:
        db.close()


@pytest.mark.anvil
async def test_defence_an_answered_entry_cannot_be_claimed_again(
    network: Contracts, actors: Actors, store_client: StoreClient, tmp_path: Path
) -> None:
    """Tried: repeat the availability claim on one entry, so that one honest receipt costs its node
    an answer per claim. Holds: an entry is claimed once (`AvailabilityAlreadyOpen` while open,
    `AlreadyAnswered` once posted), so the griefing of the finding above is bounded by the node's
    committed entries (and each costs the griefer 10 % of the bond)."""
    c = network
    db = Database.open(tmp_path / "node.sqlite3")
    try:
        batch_id = await _committed_batch(c, actors, db, store_client, count=1, trace_bytes=100)
        header = c.task_manager.batch(batch_id)
        griefer = c.as_account(actors.outsider).task_manager
        node_tm = c.as_account(actors.node).task_manager
        responder = AvailabilityResponder(db, store_client, node_tm, actors.node.address, start_block=0)
        claim = griefer.challenge_availability(header, 0).value
        with pytest.raises(AvailabilityAlreadyOpen):
            griefer.challenge_availability(header, 0)
        assert await responder.answer_once() == [claim]
        with pytest.raises(AlreadyAnswered):
            griefer.challenge_availability(header, 0)
        assert c.task_manager.get_availability(claim).status == AvailabilityStatus.ANSWERED
    finally:
        db.close()
