"""Second review of how answered data claims are priced and split, on a real Anvil.

The rule under review (`ClaimBond.costOfAnswer`, docs/protocol.md "Claim deposits"): an answer is
paid ``(21000 + max(4 * tokens + execution, 10 * tokens)) * block.basefee`` out of the claimant's
deposit, ``execution`` metered from the answer's first statement plus a constant allowance for what
runs outside the metered span (``ANSWER_UNMETERED_GAS``: 23,650 in the TaskManager, 23,500 in the
OmissionManager for both of its answers) and ``NEW_SLOT_GAS`` per split slot set from 0. The docs
say every answer is paid "within a few hundred gas above its transaction's gasUsed, never below";
tests/integration/test_answer_prices.py measures availability and manifest answers only.

Tried here (each price compared with the mined receipt's ``gasUsed`` at the block's base fee):

- FOUND, fixed: the omission answer was paid BELOW its cost, by 192 gas, in every state of the three
  split balances (so it was the allowance, not the slot accounting): `answerOmission` and
  `answerManifest` share one allowance that was measured on manifest answers, but the omission
  answer's tail emitted ``OmissionAnswered`` with five data words after the price
  (``ManifestSettled`` has three). Small per answer, but it broke the one rule the claim deposits
  rest on, for the answer any paying user can force. Now every answer's unmetered tail is the same
  code (the split, one settle event of one shape, the burn): ``OmissionAnswered`` (batch, index) is
  emitted inside the metered span and the split in ``OmissionSettled``
  (test_defence_an_omission_answer_is_paid_its_cost).
- FOUND, fixed by a deployment parameter (a known limit for one session): the price was the base
  fee only. Where the base fee is 0 (BNB Chain since BEP-226, a private or app chain, an
  Anvil/devnet started with ``--base-fee 0``) or negligible against the tip the chain requires
  (Polygon PoS's minimum tip), a claim posted the bare bond and the node was paid nothing for an
  answer whose whole gas it pays: Review8's asymmetry (the claimant risks the 0.01 ether fee, the
  node pays the answer) back in full
  (test_known_limit_without_a_floor_at_a_zero_base_fee_the_node_is_paid_nothing). Now answers are
  priced at ``max(block.basefee, MIN_ANSWER_GAS_PRICE)`` (`ClaimBond.gasPrice`), a TaskManager
  parameter the OmissionManager reads, set to the chain's least accepted gas price, and
  ``supernet contracts deploy`` refuses a chain whose base fee is 0 unless it is given
  (test_defence_at_a_zero_base_fee_the_answer_gas_price_floor_pays_the_node,
  test_defence_the_deploy_cli_refuses_a_zero_base_fee_chain_without_a_floor).
- Known limit confirmed: an availability or manifest answer is paid a few hundred gas above its
  cost (~235 and ~470), and an access list naming only the burn account (warmed for the unmetered
  ``_send``: 2,400 up front, 2,500 saved) adds exactly 100 more; against any tip of 0.01 gwei and
  up the node still loses on a claim it baited
  (test_known_limit_an_answer_is_paid_a_few_hundred_gas_above_its_cost).
- Holds: every answered deposit is split in full, ether held = credits (node's price + claimant's
  refund) and the burn account receives exactly the fee, in both contracts and for a self-claim
  (test_defence_every_answered_deposit_is_split_in_full).

Read, no test: the claimant shapes none of the answer's calldata but the claim id (availability)
and its receipt's user-set fields (omission), all metered; every slot a claimant can make cold or
zero (its balance, the total burned) is priced by `ClaimBond.tail` (the omission attack's over is
the same -192 whichever is zero); no answer can trigger a refund (no slot is cleared or restored:
the freeze count shares the node's operator slot; the guard is transient), so EIP-3529 cannot
lower the real cost under the metered one; a refund of 0 writes a slot ``tail`` prices as a
credit (2,900 or 20,000 against 100), but only where the price already reaches the deposit's cap
(at most 19,900 gas over, in a band the node cannot aim at); on a chain where 0x...dEaD does not
exist yet, the first burn's account creation (25,000 gas) is unmetered: once per chain.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import (
    BURN_ADDRESS,
    Actors,
    burn_address_exists,
    claim_omission,
    make_receipts,
    stake_network,
)
from eth_account.signers.local import LocalAccount
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import Anvil, mine, set_next_base_fee
from web3 import Web3
from web3.exceptions import ContractLogicError

from tests.integration.test_review_answer_prices import _mined
from tests.integration.test_review_answer_prices import _send_raw as send_raw

TIP = 10**9
OVER_LIMIT_GAS = 600
"""'A few hundred gas': the most an answer is paid above its gasUsed in the known limit below."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _send_raw(w3: Web3, account: LocalAccount, tx: dict[str, Any]) -> dict[str, Any]:
    """Sign and send ``tx`` as is (EIP-1559, a 1 gwei tip by default) and wait for its receipt."""
    return _mined(w3, send_raw(w3, account, tx))


def _direct(c: Contracts, sender: LocalAccount, to: str, data: bytes, **extra: Any) -> dict[str, Any]:
    """The answer sent as its own transaction by ``sender`` (gas: estimate + 30 %, as the SDK)."""
    est = c.w3.eth.estimate_gas({"from": sender.address, "to": to, "data": data, **extra})  # type: ignore[typeddict-item]
    receipt = _send_raw(c.w3, sender, {"to": to, "data": data, "gas": est * 13 // 10, **extra})
    assert receipt["status"] == 1
    return receipt


def _base_fee(c: Contracts, receipt: dict[str, Any]) -> int:
    return int(c.w3.eth.get_block(receipt["blockNumber"])["baseFeePerGas"])


def _over(c: Contracts, receipt: dict[str, Any], price: int) -> int:
    """How much more gas ``price`` pays than the answer's transaction used (negative: less)."""
    fee = _base_fee(c, receipt)
    assert price % fee == 0
    return price // fee - int(receipt["gasUsed"])


def _settled(contract: Any, event: str, receipt: dict[str, Any]) -> dict[str, Any]:
    """The args of ``event`` in ``receipt`` (other contracts' logs skipped)."""
    logs = [log for log in receipt["logs"] if log["address"] == contract.address]
    return dict(getattr(contract.events, event)().process_log(logs[-1])["args"])


def _omission_claim(c: Contracts, actors: Actors, k: int) -> tuple[int, bytes, LocalAccount]:
    """`claim_omission` of receipt ``2 + k``: ``(omission id, the node's answer calldata, the user)``."""
    claim = claim_omission(c, actors, 2 + k)
    ref = c.task_manager.batch(claim.batch_id).as_tuple()
    i = claim.index
    answer = c.omission_manager.contract.functions.answerOmission(
        claim.omission_id, ref, i, claim.receipts[i].as_tuple(), list(claim.tree.proof_at(i))
    )
    return claim.omission_id, bytes.fromhex(answer._encode_transaction_data()[2:]), claim.user


def _availability_claim(
    c: Contracts, actors: Actors, trace: bytes, claimant: LocalAccount, **claim: Any
) -> tuple[int, bytes]:
    """Entry 0 of a fresh batch of the node, whose trace is ``trace``, claimed by ``claimant``:
    ``(id, the answer's calldata)``. ``claim`` (``value``, fees) sends the claim raw."""
    receipts = make_receipts(c, actors.users, actors.node.address, 2)
    receipts[0] = dataclasses.replace(receipts[0], trace_hash=hashlib.sha256(trace).digest())
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = c.as_account(actors.node).task_manager.commit_batch(tree.root, 2, "bafym").value.batch_id
    mine(c.w3, 2)
    ref = c.task_manager.batch(batch_id).as_tuple()
    if claim:
        fn = c.task_manager.contract.functions.challengeAvailability(ref, 0)
        data = bytes.fromhex(fn._encode_transaction_data()[2:])
        raw = _send_raw(c.w3, claimant, {"to": c.task_manager.address, "data": data, "gas": 500_000, **claim})
        assert raw["status"] == 1
        aid = int(c.task_manager.call("availabilityCount"))
    else:
        aid = c.as_account(claimant).task_manager.challenge_availability(batch_id, 0).value
    fn = c.task_manager.contract.functions.answerAvailability(
        aid, ref, receipts[0].as_tuple(), list(tree.proof_at(0)), trace
    )
    return aid, bytes.fromhex(fn._encode_transaction_data()[2:])


def _zero_base_fee(w3: Web3) -> None:
    """From the next block on, a base fee of 0 (as on BNB Chain or an app chain)."""
    set_next_base_fee(w3, 0)
    mine(w3, 1)
    set_next_base_fee(w3, 0)


def _answered_at_zero_base_fee(
    c: Contracts, node: LocalAccount, data: bytes, fees: dict[str, int]
) -> tuple[int, int]:
    """The node's availability answer ``data`` mined at base fee 0: (what it spent, what it was paid)."""
    set_next_base_fee(c.w3, 0)
    before = c.task_manager.claimable(node.address)
    receipt = _direct(c, node, c.task_manager.address, data, **fees)
    assert _base_fee(c, receipt) == 0
    spent = int(receipt["gasUsed"]) * int(receipt["effectiveGasPrice"])
    return spent, c.task_manager.claimable(node.address) - before


def _dense(n: int) -> bytes:
    """``n`` random bytes, none zero: the calldata floor prices their answer."""
    return bytes(b | 1 for b in os.urandom(n))


# ---------------------------------------------------------------------------------------------
# findings
# ---------------------------------------------------------------------------------------------


def test_defence_an_omission_answer_is_paid_its_cost(network: Contracts, actors: Actors) -> None:
    """A user claims an omission its node did not commit... except it did: the honest node answers
    by showing the receipt in its batch (the answer a node gives most, and the one a griefing user
    forces for the 0.01 ether fee). The answer was paid 192 gas less than its transaction's gasUsed,
    whatever the state of the split's three slots (all zero on the contract's first answer, the
    user's balance zero or not, the node's zero or not): the allowance, not the slot accounting.
    Now it is paid a few hundred gas above its cost, the same whatever the slots.

    Cause: `OmissionManager.ANSWER_UNMETERED_GAS` (23,500) is one constant for `answerOmission`
    and `answerManifest`, measured on manifest answers (tests/integration/test_answer_prices.py
    has no omission case). The omission's unmetered tail is larger: it emits ``OmissionAnswered``
    with five data words after the price (``ManifestSettled``: three; 8 gas a byte plus memory) and
    its dispatch and ABI head differ. A manifest answer is paid ~470 gas above its cost by the same
    constant (see the known limit below). Impact: ~192 gas x base fee lost by the honest node on
    every omission claim (4e-6 ether at 20 gwei): small, but the claim deposits' one rule ("paid at
    least its cost, never below") does not hold for one of the three answers.

    Fix (by design, done): the tails are identical: every answer settles with the split, one
    settle event of the shape ``(id indexed, answerCost, refunded, burned)`` and the burn, and the
    omission's ``batchId`` and ``index`` go in ``OmissionAnswered``, emitted inside the metered
    span, so one measured allowance is right for both of the OmissionManager's answers;
    test_answer_prices.py measures omission answers too.
    """
    c = network
    burn_address_exists(c)
    node = actors.node.address
    overs = []
    for k in range(4):  # the first is the OmissionManager's first answer: every split slot is 0
        _oid, data, user = _omission_claim(c, actors, k)
        before = c.omission_manager.claimable(node)
        zero = (
            before == 0,
            c.omission_manager.claimable(user.address) == 0,
            c.omission_manager.call("totalBurned") == 0,
        )
        receipt = _direct(c, actors.node, c.omission_manager.address, data)
        price = int(_settled(c.omission_manager.contract, "OmissionSettled", receipt)["answerCost"])
        assert c.omission_manager.claimable(node) - before == price  # the node is credited the price
        overs.append((zero, _over(c, receipt, price)))
    assert {over for _zero, over in overs} == {overs[0][1]}, overs  # the same whatever the slots
    assert all(0 <= over <= OVER_LIMIT_GAS for _zero, over in overs), f"not paid its gasUsed: {overs}"


def test_known_limit_without_a_floor_at_a_zero_base_fee_the_node_is_paid_nothing(
    network: Contracts, actors: Actors
) -> None:
    """On a chain whose base fee is 0 (BNB Chain, an app chain, a devnet at ``--base-fee 0``) every
    gas price is a tip. A claim then posts the bare CHALLENGE_BOND (`ClaimBond.required`: bond +
    worstGas x 0), and the answer is priced at ``block.basefee`` = 0: an honest node answering
    a 100 KB trace pays ~4M gas at the chain's gas price (1 gwei here: 0.004 ether; 0.016 ether at
    the largest trace) and is paid nothing; the claimant loses only the 0.01 ether fee and gets
    0.09 back. Likewise for an omission claim. That is Review8's asymmetry (a claim costs the
    claimant less than the answer it forces on the node; past it, being slashed is the node's
    best reply) back in full, and it grows with the share of the tip in the gas price wherever the
    base fee is not 0 (Polygon PoS's minimum tip; an Ethereum block with a low base fee).

    What a deployment WITHOUT a floor (``MIN_ANSWER_GAS_PRICE`` 0, right where the base fee
    carries the price of gas: Ethereum and its rollups) does on such a chain; the reviewer's
    proposed fix, the claim recording its own ``tx.gasprice``, does not close it where tips may be
    0 (a claimant paying 0 pins the rate at 0). The fix is the floor, a deployment parameter: see
    the defence below; the deploy CLI refuses a zero-base-fee chain without one.
    """
    c, w3 = network, network.w3
    burn_address_exists(c)
    bond = c.params.challenge_bond
    fees = {"maxFeePerGas": TIP, "maxPriorityFeePerGas": TIP}
    _zero_base_fee(w3)
    aid, data = _availability_claim(c, actors, _dense(100_000), actors.validators[0], value=bond, **fees)
    assert c.task_manager.get_availability(aid).deposit == bond  # the bare bond: the chain took it
    spent, paid = _answered_at_zero_base_fee(c, actors.node, data, fees)
    assert spent > 10**15  # ~0.004 ether for the node's honest answer
    assert c.task_manager.claimable(actors.validators[0].address) == bond - bond // 10  # 0.09 back
    assert paid == 0  # priced at the base fee, 0: the whole answer is the node's loss


def test_defence_at_a_zero_base_fee_the_answer_gas_price_floor_pays_the_node(
    chain: Contracts, actors: Actors
) -> None:
    """The same answer on a deployment for such a chain: ``MIN_ANSWER_GAS_PRICE`` = 2 gwei (the
    least gas price this chain takes, the node's tip; above the 1 gwei tip the SDK would suggest). A
    claim must post its costliest answer at that price (the bare bond is refused; the SDK's claim
    covers the floor), and the node's answer, mined at base fee 0 and paid at its 2 gwei tip, is
    paid its cost (`ClaimBond.gasPrice`: the greater of the base fee and the floor) within the few
    hundred gas every answer is paid above its gasUsed; the claimant gets the rest back less the
    10 % fee. The OmissionManager reads the same floor."""
    w3 = chain.w3
    floor = 2 * TIP
    params = dataclasses.replace(chain.params, min_answer_gas_price=floor)
    c = stake_network(Contracts.deploy(w3, actors.deployer, params), actors)
    burn_address_exists(c)
    assert int(c.task_manager.call("MIN_ANSWER_GAS_PRICE")) == floor
    assert int(c.omission_manager.call("MIN_ANSWER_GAS_PRICE")) == floor
    bond = c.params.challenge_bond
    fees = {"maxFeePerGas": floor, "maxPriorityFeePerGas": floor}
    _zero_base_fee(w3)
    worst = int(c.task_manager.call("AVAILABILITY_WORST_GAS"))
    answer_gas = int(c.omission_manager.call("ANSWER_GAS"))
    assert int(c.task_manager.call("availabilityBond")) == bond + worst * floor
    assert int(c.omission_manager.call("omissionBond")) == bond + answer_gas * floor
    aid, data = _availability_claim(c, actors, _dense(100_000), actors.validators[0])  # the SDK's claim
    deposit = c.task_manager.get_availability(aid).deposit
    assert deposit >= bond + worst * floor
    ref = c.task_manager.batch(c.task_manager.get_availability(aid).batch_id).as_tuple()
    bare = c.task_manager.contract.functions.challengeAvailability(ref, 1)
    with pytest.raises(ContractLogicError):  # the bare bond no longer opens a claim (WrongBond)
        bare.call({"from": actors.validators[1].address, "value": bond})
    spent, paid = _answered_at_zero_base_fee(c, actors.node, data, fees)
    assert spent > 10**15  # ~0.008 ether: the answer's whole gas, at the tip
    assert 0 <= paid - spent <= OVER_LIMIT_GAS * floor, (paid, spent)  # its cost, a few hundred gas over
    refund = c.task_manager.claimable(actors.validators[0].address)
    assert refund + paid + bond // 10 == deposit  # the deposit split in full


def test_defence_the_deploy_cli_refuses_a_zero_base_fee_chain_without_a_floor(tmp_path: Path) -> None:
    """`supernet contracts deploy` on a chain whose latest base fee is 0, without
    ``--min-answer-gas-price``, deploys nothing and says why; with it (gwei) the floor is deployed."""
    from supernet.sdk.chain.cli import app
    from supernet.sdk.chain.deployment import Deployment
    from typer.testing import CliRunner

    runner = CliRunner()
    with Anvil(accounts=2) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        set_next_base_fee(w3, 0)
        mine(w3, 1)
        base = ["deploy", "--rpc", anvil.url, "--account-index", "0", "--devnet-params"]
        refused = tmp_path / "refused.json"
        result = runner.invoke(app, [*base, "--out", str(refused)])
        assert result.exit_code == 2 and "base fee is 0" in result.output, result.output
        assert not refused.exists()
        out = tmp_path / "deployment.json"
        ok = runner.invoke(app, [*base, "--out", str(out), "--min-answer-gas-price", "0.5"])
        assert ok.exit_code == 0, ok.output
        c = Contracts.connect(anvil.url, Deployment.load(out))
        assert int(c.task_manager.call("MIN_ANSWER_GAS_PRICE")) == 5 * 10**8
        assert c.params.min_answer_gas_price == 5 * 10**8


# ---------------------------------------------------------------------------------------------
# known limit and defence
# ---------------------------------------------------------------------------------------------


def test_known_limit_an_answer_is_paid_a_few_hundred_gas_above_its_cost(
    network: Contracts, actors: Actors
) -> None:
    """docs/protocol.md: every answer the floor does not price is paid "within a few hundred gas
    above its transaction's gasUsed". Measured: an availability answer ~235 gas above, a manifest
    answer ~470 above; an access list naming only the burn account (whose cold access the
    unmetered ``_send`` pays: 2,400 up front, 2,500 saved, the price unchanged) adds exactly 100
    (test_review_answer_prices.py listed the ServiceManager too, whose warming is metered and
    cancelled the gain). Baiting still does not pay: the node's surplus (a few hundred gas at the
    base fee) is below the tip it pays on its ~100k-gas answer at any tip from 0.01 gwei up
    (a node building its own block gets its tip back: then a few hundred gas a claim, while the
    claimant burns 0.01 ether)."""
    c = network
    burn_address_exists(c)
    node = actors.node
    burn_only = [{"address": BURN_ADDRESS, "storageKeys": []}]
    overs = {}
    for label, extra in (("plain", {}), ("burn access list", {"accessList": burn_only})):
        _aid, data = _availability_claim(c, actors, b"x" * 10, actors.validators[0])
        receipt = _direct(c, node, c.task_manager.address, data, **extra)
        price = int(_settled(c.task_manager.contract, "AvailabilitySettled", receipt)["answerCost"])
        overs[label] = _over(c, receipt, price)
        tip_paid = int(receipt["gasUsed"]) * 10**7  # a 0.01 gwei tip
        assert overs[label] * _base_fee(c, receipt) < tip_paid, (label, overs[label])
    assert 0 < overs["plain"] <= OVER_LIMIT_GAS, overs
    assert overs["burn access list"] - overs["plain"] == 100, overs

    receipts = make_receipts(c, actors.users, node.address, 4)
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = c.as_account(node).task_manager.commit_batch(tree.root, 4, "bafym").value.batch_id
    header = c.task_manager.batch(batch_id)
    manifest_id = c.as_account(actors.validators[1]).omission_manager.challenge_manifest(header).value
    answer = c.as_account(node).omission_manager.answer_manifest(manifest_id, header, receipts)
    over = _over(c, dict(answer.receipt), int(answer.value["answerCost"]))
    assert 0 < over <= OVER_LIMIT_GAS, over


def test_defence_every_answered_deposit_is_split_in_full(network: Contracts, actors: Actors) -> None:
    """For availability, omission and manifest answers (one a self-claim: the node claims its own
    batch's manifest, one slot credited twice), the deposit is exactly the node's price + the
    claimant's refund + the fee, each contract's ether grows by exactly the credits it owes, and
    the burn account by exactly the fee (``totalBurned`` with it): nothing escapes, nothing is left
    unowed, no rounding (prices are gas x base fee in wei)."""
    c, w3 = network, network.w3
    burn_address_exists(c)
    node = actors.node
    tm, om = c.task_manager, c.omission_manager
    fee = c.params.challenge_bond // 10

    def state(contract: Any, who: list[str]) -> tuple[int, int, int, int]:
        return (
            w3.eth.get_balance(contract.address),
            sum(contract.claimable(a) for a in set(who)),
            w3.eth.get_balance(BURN_ADDRESS),
            int(contract.call("totalBurned")),
        )

    # availability
    who = [node.address, actors.validators[0].address]
    start = state(tm, who)
    aid, data = _availability_claim(c, actors, bytes(3_000) + _dense(3_000), actors.validators[0])
    deposit = tm.get_availability(aid).deposit
    receipt = _direct(c, node, tm.address, data)
    split = _settled(tm.contract, "AvailabilitySettled", receipt)
    assert split["answerCost"] + split["refunded"] + split["burned"] == deposit and split["burned"] == fee
    end = state(tm, who)
    assert end[0] - start[0] == end[1] - start[1] == deposit - fee
    assert end[2] - start[2] == end[3] - start[3] == fee

    # omission
    oid, data, user = _omission_claim(c, actors, 0)
    who = [node.address, user.address]
    start = state(om, who)  # the deposit held, nobody credited yet
    deposit = om.get_omission(oid).deposit
    receipt = _direct(c, node, om.address, data)
    split = _settled(om.contract, "OmissionSettled", receipt)
    assert split["answerCost"] + split["refunded"] + split["burned"] == deposit and split["burned"] == fee
    end = state(om, who)
    assert end[0] - start[0] == -fee  # the fee left, the rest is owed:
    assert end[1] - start[1] == deposit - fee
    assert end[2] - start[2] == end[3] - start[3] == fee

    # manifest, claimed by the node itself
    receipts = make_receipts(c, actors.users, node.address, 3)
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = c.as_account(node).task_manager.commit_batch(tree.root, 3, "bafym").value.batch_id
    header = c.task_manager.batch(batch_id)
    start = state(om, [node.address])
    manifest_id = c.as_account(node).omission_manager.challenge_manifest(header).value
    deposit = om.batch_manifest(batch_id).deposit
    answer = c.as_account(node).omission_manager.answer_manifest(manifest_id, header, receipts).value
    assert answer["answerCost"] + answer["refunded"] + answer["burned"] == deposit
    end = state(om, [node.address])
    assert end[0] - start[0] == end[1] - start[1] == deposit - fee
    assert end[2] - start[2] == end[3] - start[3] == fee
