"""An answered data claim pays the node what its answer's transaction was charged, on a real Anvil.

A claim (availability, manifest, omission) forces the node to post data on chain; the claimant's
deposit pays the node the answer's cost (docs/protocol.md, "Claim deposits"). The price used to be a
model, a fixed 200k plus 40 gas a byte, which added the fixed execution on top of EIP-7623's
calldata floor: past ~11 KB of trace a node was paid ~165k gas more than its answer cost, so every
claim it baited by withholding paid it, and the price went to whoever sent the answer, so a copy of
the node's answer from the mempool took it (contracts/test/Review11.t.sol). Now
`ClaimBond.costOfAnswer` charges EIP-7623's own rule, ``21000 + max(4 * tokens + execution,
10 * tokens)``, over the answer's real calldata and its metered execution, plus a measured
allowance for what runs outside the metered span, and pays it to the node.

Here each answer's price is compared with the gas its transaction really used (the receipt's
``gasUsed`` at the block's base fee): a trace the calldata floor prices is paid exactly; every
other answer within a few thousand gas above its cost, never below, for traces of 10 bytes to
100 KB, manifests of 1 to 300 receipts and omission answers (whose allowance is the manifest
answer's: both run the same code after the price, test_review_answer_prices2.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

from chain_fixtures import Actors, burn_address_exists, claim_omission, make_receipts
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import mine

SLACK_GAS = 3_000
"""The most an answer is paid above its transaction's gas: the measured allowance's margin."""


def _overpaid_gas(network: Contracts, receipt: dict, price: int) -> float:
    """How much more gas the price pays than the answer's transaction used (negative: less)."""
    fee = int(network.w3.eth.get_block(receipt["blockNumber"])["baseFeePerGas"])
    assert price % fee == 0
    return price // fee - receipt["gasUsed"]


def _answer_availability(network: Contracts, actors: Actors, trace: bytes) -> tuple[dict, int]:
    receipts = make_receipts(network, actors.users, actors.node.address, 2)
    receipts[0] = dataclasses.replace(receipts[0], trace_hash=hashlib.sha256(trace).digest())
    tree = ReceiptTree.from_receipts(receipts)
    node_tm = network.as_account(actors.node).task_manager
    batch_id = node_tm.commit_batch(tree.root, len(tree), "bafymanifest").value.batch_id
    mine(network.w3, 2)
    aid = network.as_account(actors.validators[0]).task_manager.challenge_availability(batch_id, 0).value
    answer = node_tm.answer_availability(aid, receipts[0], tree.proof_at(0), trace)
    return answer.receipt, int(answer.value["answerCost"])


def test_an_availability_answer_is_paid_its_transactions_gas(network: Contracts, actors: Actors) -> None:
    burn_address_exists(network)
    dense = bytes(b | 1 for b in os.urandom(50_000))  # no zero byte: the calldata floor decides
    receipt, price = _answer_availability(network, actors, dense)
    assert _overpaid_gas(network, receipt, price) == 0

    for trace in (b"first", b"x" * 10, bytes(50_000), bytes(100_000), os.urandom(20_000)):
        receipt, price = _answer_availability(network, actors, trace)
        assert 0 <= _overpaid_gas(network, receipt, price) <= SLACK_GAS, len(trace)


def test_a_manifest_answer_is_paid_its_transactions_gas(network: Contracts, actors: Actors) -> None:
    burn_address_exists(network)
    node_tm = network.as_account(actors.node).task_manager
    node_om = network.as_account(actors.node).omission_manager
    claimant = network.as_account(actors.validators[1]).omission_manager
    paid_before = network.omission_manager.claimable(actors.node.address)
    for n in (1, 8, 64, 300):
        receipts = make_receipts(network, actors.users, actors.node.address, n)
        tree = ReceiptTree.from_receipts(receipts)
        batch_id = node_tm.commit_batch(tree.root, len(tree), "bafymanifest").value.batch_id
        header = network.task_manager.batch(batch_id)
        manifest_id = claimant.challenge_manifest(header).value
        answer = node_om.answer_manifest(manifest_id, header, receipts)
        assert len(answer.value["receipts"]) == n  # the receipts are in the event, then the split
        price = int(answer.value["answerCost"])
        assert 0 <= _overpaid_gas(network, answer.receipt, price) <= SLACK_GAS, n
        assert network.omission_manager.claimable(actors.node.address) == paid_before + price
        paid_before += price


def test_an_omission_answer_is_paid_its_transactions_gas(network: Contracts, actors: Actors) -> None:
    burn_address_exists(network)
    node = actors.node
    node_om = network.as_account(node).omission_manager
    for i in (0, 3, 9):  # batches of 1, 4 and 10 receipts: proofs of 0, 2 and 4 hashes
        claim = claim_omission(network, actors, i)
        paid_before = network.omission_manager.claimable(node.address)
        batch = network.task_manager.batch(claim.batch_id)
        answer = node_om.answer_omission(
            claim.omission_id, batch, i, claim.receipts[i], claim.tree.proof_at(i)
        )
        assert answer.value["index"] == i  # the answered event, then the split
        price = int(answer.value["answerCost"])
        assert 0 <= _overpaid_gas(network, answer.receipt, price) <= SLACK_GAS, i
        assert network.omission_manager.claimable(node.address) == paid_before + price
