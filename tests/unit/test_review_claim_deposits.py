"""Review of the SDK side of claim deposits (`Binding.claim`, `claim_fee_cap`): a data claim is sent
with a fee cap (the latest base fee after two of EIP-1559's largest rises, plus the tip) and
``value = bond + worstGas * cap``, so its deposit covers the contracts' ``ClaimBond.required`` at
whatever base fee its block has, up to the cap. Real Anvil (tests/chain_fixtures.py), base fees
set with `set_next_base_fee`.

Tried, and what was found:

- A base fee that rises between the claim's build and its block, up to the cap: the availability
  and the manifest claim still open, their deposits cover the contracts' least at the block's base
  fee, and the node is paid its answers in full. holds
  (test_defence_a_claim_opens_when_the_base_fee_rises_up_to_its_cap).
- A base fee past the cap in the claim's block: the transaction is refused before it spends
  anything (no claim, no ether gone), and the next try, priced from the newer block, opens.
  holds (test_defence_a_base_fee_past_the_cap_refuses_the_claim_and_costs_nothing).
- The tip above the cap cannot happen (the cap includes the tip, and `send` takes the smaller).
  holds, by reading (no test).
- A chain without ``baseFeePerGas``: `claim_fee_cap` falls back to the tip alone, but such a chain
  has no BASEFEE opcode either, so the contracts do not run there at all. Not applicable (no test).
- What a claimant must hold: the SDK's value was ``bond + worstGas * (2 * base + tip)``, twice the
  cover the contract asks for (now two blocks of EIP-1559's largest rise, `claim_fee_cap`), and
  ``worstGas`` is the largest trace's (384 KiB at 40 gas a byte) whatever the entry's real trace.
  FOUND, partly fixed (test_known_limit_a_claims_deposit_is_sized_for_the_largest_trace).
- The change's own high-base-fee integration test: Anvil keeps the base fee it set past the
  `chain` fixture's `evm_revert`, so the session's next tests could not send a transaction.
  FIXED (`revert` restores the base fee;
  test_defence_a_base_fee_set_in_a_test_does_not_outlive_the_chain_snapshot).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import pytest
from chain_fixtures import Actors, make_receipts
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import mine, revert, set_balance, set_next_base_fee, snapshot
from supernet.sdk.chain.bindings import claim_fee_cap
from supernet.sdk.chain.errors import InsufficientFundsError
from web3.exceptions import Web3RPCError

GWEI = 10**9
ETHER = 10**18
FEE_BPS = 1_000  # AVAILABILITY_FEE_BPS / ANSWER_FEE_BPS
BPS = 10_000


def _batch(network: Contracts, actors: Actors, trace: bytes) -> tuple[int, list, ReceiptTree]:
    """A 3-receipt batch of the network's node whose receipt 0 commits to ``trace``, its seed
    block sealed."""
    receipts = make_receipts(network, actors.users, actors.node.address, 3)
    receipts[0] = dataclasses.replace(receipts[0], trace_hash=hashlib.sha256(trace).digest())
    tree = ReceiptTree.from_receipts(receipts)
    node_tm = network.as_account(actors.node).task_manager
    batch_id = node_tm.commit_batch(tree.root, len(tree), "bafymanifest").value.batch_id
    mine(network.w3, 2)
    # the seed block sealed now (a validator's transaction): the SDK's claim seals it first where
    # nobody has, which would put the claim a block after the base fee the test sets for it
    network.as_account(actors.validators[1]).task_manager.seal_seed_block(
        network.task_manager.batch(batch_id)
    )
    return batch_id, receipts, tree


def _base_fee_at(network: Contracts, block: int) -> int:
    return int(network.w3.eth.get_block(block)["baseFeePerGas"])


def test_defence_a_claim_opens_when_the_base_fee_rises_up_to_its_cap(
    network: Contracts, actors: Actors
) -> None:
    """The latest block says 10 gwei; the claim's block comes at one wei under the SDK's cap (the
    base fee rose by two of EIP-1559's largest steps). The availability claim and
    the manifest claim both open; each deposit is at least the contracts' least at its block's base
    fee; the node's answers are paid in full and the rest comes back."""
    w3 = network.w3
    tm, om = network.task_manager, network.omission_manager
    trace = bytes(b | 1 for b in os.urandom(2048))
    batch_id, receipts, tree = _batch(network, actors, trace)
    bond = tm.challenge_bond()
    claimant = network.as_account(actors.validators[0])

    set_next_base_fee(w3, 10 * GWEI)
    mine(w3)
    cap = claim_fee_cap(w3)
    set_next_base_fee(w3, cap - 1)
    opened = claimant.task_manager.challenge_availability(batch_id, 0)
    block_fee = _base_fee_at(network, opened.receipt["blockNumber"])
    assert block_fee == cap - 1
    worst = int(tm.call("AVAILABILITY_WORST_GAS"))
    deposit = tm.get_availability(opened.value).deposit
    assert deposit == bond + worst * cap >= bond + worst * block_fee

    mcap = claim_fee_cap(w3)
    set_next_base_fee(w3, mcap - 1)
    mopened = claimant.omission_manager.challenge_manifest(network.task_manager.batch(batch_id))
    mworst = int(om.call("MANIFEST_WORST_GAS"))
    claim = om.batch_manifest(batch_id)
    assert claim is not None
    mdeposit = claim.deposit
    assert _base_fee_at(network, mopened.receipt["blockNumber"]) == mcap - 1
    assert mdeposit == bond + mworst * mcap

    node = network.as_account(actors.node)
    answer = node.task_manager.answer_availability(opened.value, receipts[0], tree.proof_at(0), trace)
    answer_fee = _base_fee_at(network, answer.receipt["blockNumber"])
    cost = answer.value["answerCost"]  # its transaction's gas at its base fee (test_answer_prices.py)
    fee = bond * FEE_BPS // BPS
    # paid in full, not capped by the deposit (within the devnet's one-time creation of the burn
    # address, 25k gas, when this is the chain's first burn)
    assert abs(cost // answer_fee - answer.receipt["gasUsed"]) <= 25_000, "paid in full"
    assert answer.value["refunded"] == deposit - fee - cost
    node.omission_manager.answer_manifest(mopened.value, network.task_manager.batch(batch_id), receipts)
    answered = om.batch_manifest(batch_id)
    assert answered is not None and answered.status.name == "ANSWERED"


def test_defence_a_base_fee_past_the_cap_refuses_the_claim_and_costs_nothing(
    network: Contracts, actors: Actors
) -> None:
    """The claim's block comes one wei above the cap: the transaction is refused (it could never
    pay its block's base fee), nothing is opened and the claimant's ether is untouched; once that
    block is the latest, the next try is priced from it and opens."""
    w3 = network.w3
    tm = network.task_manager
    batch_id, _, _ = _batch(network, actors, b"trace")
    claimant = network.as_account(actors.validators[0])
    set_next_base_fee(w3, 10 * GWEI)
    mine(w3)
    cap = claim_fee_cap(w3)
    set_next_base_fee(w3, cap + 1)
    balance = w3.eth.get_balance(actors.validators[0].address)
    count = int(tm.call("availabilityCount"))
    with pytest.raises(Web3RPCError, match="max fee per gas less than block base fee"):
        claimant.task_manager.challenge_availability(batch_id, 0)
    assert int(tm.call("availabilityCount")) == count
    assert w3.eth.get_balance(actors.validators[0].address) == balance

    mine(w3)  # the risen base fee is now the latest
    assert _base_fee_at(network, w3.eth.block_number) == cap + 1
    aid = claimant.task_manager.challenge_availability(batch_id, 0).value
    assert tm.get_availability(aid).deposit >= tm.challenge_bond() + int(
        tm.call("AVAILABILITY_WORST_GAS")
    ) * (cap + 1)


def test_known_limit_a_claims_deposit_is_sized_for_the_largest_trace(
    network: Contracts, actors: Actors
) -> None:
    """KNOWN LIMIT (liquidity). At a 20 gwei base fee an availability claim costs, by the contract,
    ``0.1 + 15.93 M gas * 20 gwei`` = 0.42 ether, sized for the largest trace (384 KiB at 40 gas a
    byte) whatever the entry's trace is (a typical one is a few KiB: its answer costs ~1/50 of
    that), and locked until the answer, which the node may post at the end of its window
    (VOTE_WINDOW). Against the old fixed 0.1 ether a validator locks ~4x as much per claim at 20
    gwei: a node that withholds many entries at once runs its validators short of ether, and
    entries left unclaimed when the window closes expire as "unverifiable" (never an accusation).
    The SDK adds its margin on top (`claim_fee_cap`: two blocks of EIP-1559's largest rise, no
    longer web3's twice the base fee, which locked 0.75 ether here): a validator holding the
    contract's price plus a little gas cannot open the claim through the SDK
    (``InsufficientFundsError``; the validator logs "availability claim deferred" and retries).
    Fix (removes the class): bind the trace's length in the receipt (a `traceBytes` field in the
    leaf, checked by `answerAvailability`), so a claim's deposit covers that entry's answer."""
    w3 = network.w3
    tm = network.task_manager
    small = b"a small trace"
    batch_id, _, _ = _batch(network, actors, small)
    validator = actors.validators[0]
    claimant = network.as_account(validator).task_manager
    set_next_base_fee(w3, 20 * GWEI)
    mine(w3)
    bond = tm.challenge_bond()
    worst = int(tm.call("AVAILABILITY_WORST_GAS"))
    contract_price = bond + worst * 20 * GWEI  # the next block's base fee is at most 20 gwei (an empty block)
    assert contract_price > 4 * bond, "sized for the largest trace"
    small_answer = (int(tm.call("ANSWER_FIXED_GAS")) + 40 * len(small)) * 20 * GWEI
    assert small_answer * 50 < contract_price - bond, "this entry's answer is a sliver of it"
    tip = int(w3.eth.max_priority_fee)
    assert bond + worst * claim_fee_cap(w3) == bond + worst * (20 * GWEI * 81 // 64 + tip), "the SDK's margin"

    set_balance(w3, validator.address, contract_price + ETHER // 50)  # the price plus 0.02 ether of gas
    with pytest.raises(InsufficientFundsError):
        claimant.challenge_availability(batch_id, 0)
    assert int(tm.call("availabilityCount")) == 0

    aid = claimant.challenge_availability(batch_id, 0, bond=contract_price).value
    assert tm.get_availability(aid).deposit == contract_price, "the contract's price opens the same claim"


def test_defence_a_base_fee_set_in_a_test_does_not_outlive_the_chain_snapshot(
    network: Contracts, actors: Actors
) -> None:
    """ATTACK (the change's own test broke the suite; fixed): Anvil keeps its base fee across
    ``evm_revert``: after a test that raised it (tests/integration/test_chain_disputes.py::
    test_a_claim_at_a_high_base_fee_covers_the_answer_it_forces sets 1,000 gwei), the `chain`
    fixture reverted to a block whose base fee is low, web3 priced the next transaction from that
    block, and Anvil refused it ("max fee per gas less than block base fee"): the session's later
    tests failed in their fixtures. DEFENCE: `supernet.sdk.chain.anvil.revert` sets the next base
    fee back to the reverted latest block's."""
    w3 = network.w3
    inner = snapshot(w3)
    set_next_base_fee(w3, 1_000 * GWEI)
    mine(w3)
    revert(w3, inner)
    latest = int(w3.eth.get_block("latest")["baseFeePerGas"])
    assert 2 * latest + int(w3.eth.max_priority_fee) < 1_000 * GWEI * 7 // 8  # priced from the old block
    network.as_account(actors.users[0]).payments.deposit(actors.node.address, 1)  # ... and it goes through
