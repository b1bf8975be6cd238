"""Review of how an answered data claim is priced and who is paid, on a real Anvil.

The rule (`ClaimBond.costOfAnswer`): an answer's price is EIP-7623's
``21000 + max(4 * tokens + execution, 10 * tokens)`` over its own calldata and its execution
metered from its first statement, plus a constant allowance for the unmetered head and tail
(`ANSWER_UNMETERED_GAS`, `NEW_SLOT_GAS` per distinct split slot that is 0). The price goes to the
accused node, whoever sends the answer (docs/protocol.md, "Claim deposits"). Each attack below is
a real transaction on Anvil; a price is compared with the receipt's ``gasUsed`` at the block's
base fee (as tests/integration/test_answer_prices.py does).

Found at commit d066863, and fixed since:

- A copy of the node's pending answer sent through a contract (or verbatim from an EIP-7702
  account) landed first, priced as metered execution only (no 21,000, no calldata), and the
  node's own transaction reverted after paying the calldata floor: at a 100 KB trace the node paid
  ~4.0M gas and was paid ~1.0M. And answers batched through one contract were each paid the cold
  tail they spent once: 12 answers were paid ~100k gas above their whole transaction, so baiting
  claims paid the node. Fixed in `ClaimBond.costOfAnswer`: every answer (availability, omission,
  manifest) must be its own transaction from an account without code (``AnswerNotDirect``) with
  canonical-length calldata, and is priced by the direct formula; the relayed, 7702 and batched
  copies now revert and the node's own answer is paid at least its cost
  (test_defence_a_contract_relayed_copy_is_refused_and_the_node_is_paid_its_answer,
  test_defence_an_eip7702_copy_is_refused_and_the_node_is_paid_its_answer,
  test_defence_answers_batched_through_a_contract_are_refused).
- A node that claimed itself had its one balance slot counted as new twice (paid ~20k gas above
  its cost). Fixed: `ClaimBond.tail` counts that slot once (``selfClaim``) and prices its second
  write as the dirty one it is (test_defence_a_self_claim_counts_its_one_new_balance_slot_once).
- An answer that moved the node's stake lock (written after the price was taken) was paid ~1.6k
  gas below its cost. Fixed: the lock and the unfreeze run before the price, inside the metered
  span, and the allowance was re-measured
  (test_defence_an_answer_that_moves_the_stake_lock_is_paid_its_cost).

Held then and now: a direct copy pays the node at least its reverted answer
(test_defence_a_direct_copy_pays_the_node_at_least_its_reverted_answer); a balance emptied before
the answer is priced as the slot it sets
(test_defence_a_balance_emptied_before_the_answer_is_priced_as_the_slot_it_sets); a permuted
encoding of canonical length with junk padding is paid exactly its cost (the tokens are the real
calldata's) (test_defence_a_permuted_encoding_with_junk_padding_is_paid_exactly_its_cost); an
access list gains the node nothing (its intrinsic cost is not priced: the node's own choice)
(test_defence_an_access_list_gains_the_node_nothing).

What remains: the price hard-codes Prague's gas schedule. On an EVM without EIP-7623 (Anvil
--hardfork cancun: Arbitrum, an OP Stack chain before Isthmus) a dense 50 KB trace is paid ~420k
gas above its transaction (the 10-per-token floor it never paid), so baiting pays; a later fork
raising the floor (EIP-7976) would underpay every honest answer. Known limit
(test_known_limit_without_eip7623_the_floor_price_pays_the_node_above_its_cost). Read, no test:
the metered span calls no code an attacker controls (no re-entry, nothing to refund: the answers
clear no storage); `block.basefee` is one per block; `msg.sender == tx.origin` without code only
holds for the top-level call, whose `msg.data` is the transaction's data; `calldataTokens` folds
each byte onto its lowest bit without crossing bytes. The tip is not paid (by design, "the base
fee, not the sender's gas price") and an L2's L1 data fee is a documented known limit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from chain_fixtures import (
    BURN_ADDRESS,
    CHAIN_TEST_PARAMS,
    MODEL_ID,
    MODEL_MANIFEST,
    NODE_STAKE,
    VALIDATOR_STAKE,
    Actors,
    burn_address_exists,
    make_receipts,
)
from eth_account.signers.local import LocalAccount
from hexbytes import HexBytes
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import Anvil, increase_time, mine
from supernet.sdk.chain.contract_errors import AnswerNotDirect
from supernet.sdk.chain.tasks import AvailabilityStatus
from web3 import Web3

TIP = 10**9
SLACK_GAS = 3_000
"""The most test_answer_prices.py lets an answer be paid above its transaction's gas."""


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    return w3.provider.make_request(method, params)  # type: ignore[arg-type]


def _send_raw(w3: Web3, account: LocalAccount, tx: dict[str, Any]) -> bytes:
    """Sign and send ``tx`` as is (no estimate, no wait), EIP-1559 with a 1 gwei tip by default."""
    tx = dict(tx)
    tx.setdefault("nonce", w3.eth.get_transaction_count(account.address, "pending"))
    tx.setdefault("chainId", w3.eth.chain_id)
    tx.setdefault("maxPriorityFeePerGas", TIP)
    tx.setdefault("maxFeePerGas", 10**12)
    tx.setdefault("value", 0)
    signed = account.sign_transaction(tx)
    return bytes(w3.eth.send_raw_transaction(signed.raw_transaction))


def _mined(w3: Web3, tx_hash: bytes) -> dict[str, Any]:
    return dict(w3.eth.wait_for_transaction_receipt(HexBytes(tx_hash)))


@contextmanager
def _one_block(w3: Web3) -> Iterator[None]:
    """Transactions sent inside land in one block (Anvil orders them by tip), mined on exit."""
    _rpc(w3, "evm_setAutomine", [False])
    try:
        yield
        _rpc(w3, "evm_mine", [])
    finally:
        _rpc(w3, "evm_setAutomine", [True])


def _creation(runtime: bytes) -> bytes:
    """Creation code that returns ``runtime`` (CODECOPY from offset 9, RETURN)."""
    return bytes([0x60, len(runtime), 0x80, 0x60, 0x09, 0x5F, 0x39, 0x5F, 0xF3]) + runtime


def _forwarder(target: str) -> bytes:
    """A contract that calls ``target`` with its own calldata and reverts as it does."""
    runtime = (
        bytes.fromhex("365f5f375f5f365f5f73")  # calldatacopy(0, 0, cds); call(gas, target, 0, 0, cds, 0, 0)
        + bytes.fromhex(target[2:])
        + bytes.fromhex("5af1602a573d5f5f3e3d5ffd5b00")
    )
    assert runtime[0x2A] == 0x5B
    return _creation(runtime)


def _multicall(target: str) -> bytes:
    """A contract that calls ``target`` once per ``(uint256 length, bytes data)`` in its calldata."""
    runtime = (
        bytes.fromhex("5f5b36811015603957803580826020015f375f5f825f5f73")
        + bytes.fromhex(target[2:])
        + bytes.fromhex("5af115603b57016020016001565b005b3d5f5f3e3d5ffd")
    )
    assert runtime[0x39] == 0x5B and runtime[0x3B] == 0x5B
    return _creation(runtime)


def _deploy(c: Contracts, owner: LocalAccount, creation: bytes) -> str:
    receipt = _mined(c.w3, _send_raw(c.w3, owner, {"data": creation, "gas": 300_000}))
    assert receipt["status"] == 1
    return str(receipt["contractAddress"])


def _claimed_entries(
    c: Contracts, actors: Actors, traces: list[bytes], claimants: list[LocalAccount] | None = None
) -> list[tuple[int, bytes]]:
    """One batch of the node whose entry ``i`` has trace ``traces[i]``, every entry claimed for
    availability (by ``claimants`` round-robin, validator 0 by default): ``(id, answer calldata)``."""
    claimants = claimants or [actors.validators[0]]
    receipts = make_receipts(c, actors.users, actors.node.address, max(2, len(traces)))
    for i, trace in enumerate(traces):
        receipts[i] = dataclasses.replace(receipts[i], trace_hash=hashlib.sha256(trace).digest())
    tree = ReceiptTree.from_receipts(receipts)
    node_tm = c.as_account(actors.node).task_manager
    batch_id = node_tm.commit_batch(tree.root, len(tree), "bafymanifest").value.batch_id
    mine(c.w3, 2)
    ref = c.task_manager.batch(batch_id).as_tuple()
    out = []
    for i, trace in enumerate(traces):
        claimant = c.as_account(claimants[i % len(claimants)]).task_manager
        aid = claimant.challenge_availability(batch_id, i).value
        fn = c.task_manager.contract.functions.answerAvailability(
            aid, ref, receipts[i].as_tuple(), list(tree.proof_at(i)), trace
        )
        out.append((aid, bytes.fromhex(fn._encode_transaction_data()[2:])))
    return out


def _answer_directly(c: Contracts, sender: LocalAccount, data: bytes, **extra: Any) -> dict[str, Any]:
    """The answer sent as its own transaction by ``sender`` (gas: estimate + 30 %, as the SDK)."""
    to = c.task_manager.address
    est = c.w3.eth.estimate_gas({"from": sender.address, "to": to, "data": data, **extra})  # type: ignore[typeddict-item]
    return _mined(c.w3, _send_raw(c.w3, sender, {"to": to, "data": data, "gas": est * 13 // 10, **extra}))


def _revert_data(w3: Web3, tx_hash: bytes) -> bytes:
    """What a mined transaction reverted with (its top-level call's output, Anvil's call tracer)."""
    trace = _rpc(w3, "debug_traceTransaction", ["0x" + tx_hash.hex(), {"tracer": "callTracer"}])["result"]
    assert "error" in trace, trace
    return bytes.fromhex(str(trace.get("output", "0x"))[2:])


def _gas(c: Contracts, receipt: dict[str, Any], wei: int) -> int:
    """``wei`` in gas at the base fee of the receipt's block (exact: prices are gas × base fee)."""
    fee = int(c.w3.eth.get_block(receipt["blockNumber"])["baseFeePerGas"])
    assert wei % fee == 0
    return wei // fee


def _dense(n: int) -> bytes:
    """``n`` random bytes, none zero: the calldata floor prices their answer."""
    return bytes(b | 1 for b in os.urandom(n))


# ---------------------------------------------------------------------------------------------
# copies of the node's answer
# ---------------------------------------------------------------------------------------------


def test_defence_a_contract_relayed_copy_is_refused_and_the_node_is_paid_its_answer(
    network: Contracts, actors: Actors
) -> None:
    """The claimant copies the node's pending answer (100 KB trace) into a call through its own
    forwarder contract, with a higher tip, so the copy lands first. It used to be accepted and
    priced as metered execution (~1.0M gas paid to the node, whose own transaction then reverted
    after paying ~4.0M). Now the copy reverts with AnswerNotDirect (its sender is a contract), the
    claimant pays its calldata floor for nothing, and the node's own answer in the same block lands
    and is paid at least its gasUsed, within the slack."""
    c, w3 = network, network.w3
    burn_address_exists(c)
    claimant = actors.validators[0]
    relay = _deploy(c, claimant, _forwarder(c.task_manager.address))
    [(aid, data)] = _claimed_entries(c, actors, [_dense(100_000)], [claimant])
    est = w3.eth.estimate_gas({"from": actors.node.address, "to": c.task_manager.address, "data": data})
    before = c.task_manager.claimable(actors.node.address)
    with _one_block(w3):
        copy = _send_raw(
            w3, claimant, {"to": relay, "data": data, "gas": 2 * est, "maxPriorityFeePerGas": 5 * TIP}
        )
        own = _send_raw(w3, actors.node, {"to": c.task_manager.address, "data": data, "gas": est * 13 // 10})
    copied, answered = _mined(w3, copy), _mined(w3, own)
    assert copied["blockNumber"] == answered["blockNumber"]
    assert copied["transactionIndex"] < answered["transactionIndex"]  # the copy ran first
    assert copied["status"] == 0 and _revert_data(w3, copy) == AnswerNotDirect.selector
    assert copied["gasUsed"] > 3_900_000  # the copier paid the 100 KB floor for nothing
    assert answered["status"] == 1
    assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
    paid = _gas(c, answered, c.task_manager.claimable(actors.node.address) - before)
    assert 0 <= paid - answered["gasUsed"] <= SLACK_GAS, (paid, answered["gasUsed"])


def test_defence_an_eip7702_copy_is_refused_and_the_node_is_paid_its_answer(
    network: Contracts, actors: Actors
) -> None:
    """An outsider's EIP-7702 account (delegated in the same transaction) sends the node's exact
    calldata to the TaskManager first: `msg.sender == tx.origin`, but the origin has code. It used
    to be priced as a contract's answer (~1.0M gas to the node, whose own copy reverted after
    paying ~4.0M); now it reverts with AnswerNotDirect and the node's own answer lands, paid at
    least its gasUsed."""
    c, w3 = network, network.w3
    burn_address_exists(c)
    copier = actors.outsider
    target = _deploy(c, copier, _forwarder(c.task_manager.address))  # any code to delegate to
    [(aid, data)] = _claimed_entries(c, actors, [_dense(100_000)])
    est = w3.eth.estimate_gas({"from": actors.node.address, "to": c.task_manager.address, "data": data})
    nonce = w3.eth.get_transaction_count(copier.address)
    auth = copier.sign_authorization({"chainId": w3.eth.chain_id, "address": target, "nonce": nonce + 1})
    before = c.task_manager.claimable(actors.node.address)
    with _one_block(w3):
        copy = _send_raw(
            w3,
            copier,
            {
                "to": c.task_manager.address,
                "data": data,  # the node's bytes, unchanged
                "gas": 2 * est,
                "nonce": nonce,
                "maxPriorityFeePerGas": 5 * TIP,
                "authorizationList": [auth],
            },
        )
        own = _send_raw(w3, actors.node, {"to": c.task_manager.address, "data": data, "gas": est * 13 // 10})
    copied, answered = _mined(w3, copy), _mined(w3, own)
    assert w3.eth.get_code(copier.address)[:3] == bytes.fromhex("ef0100")  # delegated EOA
    assert copied["transactionIndex"] < answered["transactionIndex"]
    assert copied["status"] == 0 and _revert_data(w3, copy) == AnswerNotDirect.selector
    assert answered["status"] == 1
    assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
    paid = _gas(c, answered, c.task_manager.claimable(actors.node.address) - before)
    assert 0 <= paid - answered["gasUsed"] <= SLACK_GAS, (paid, answered["gasUsed"])


def test_defence_a_direct_copy_pays_the_node_at_least_its_reverted_answer(
    network: Contracts, actors: Actors
) -> None:
    """A copy sent directly by an account without code is priced its own calldata, so the node,
    whose identical answer reverts in the same block, is paid at least what that cost it, for a
    floor-priced trace and for a zero-heavy (standard-priced) one."""
    c, w3 = network, network.w3
    burn_address_exists(c)
    for trace in (_dense(50_000), bytes(50_000)):
        [(_aid, data)] = _claimed_entries(c, actors, [trace])
        est = w3.eth.estimate_gas({"from": actors.node.address, "to": c.task_manager.address, "data": data})
        before = c.task_manager.claimable(actors.node.address)
        with _one_block(w3):
            copy = _send_raw(
                w3,
                actors.outsider,
                {"to": c.task_manager.address, "data": data, "gas": 2 * est, "maxPriorityFeePerGas": 5 * TIP},
            )
            own = _send_raw(
                w3, actors.node, {"to": c.task_manager.address, "data": data, "gas": est * 13 // 10}
            )
        copied, answered = _mined(w3, copy), _mined(w3, own)
        assert copied["status"] == 1 and answered["status"] == 0
        paid = _gas(c, answered, c.task_manager.claimable(actors.node.address) - before)
        assert paid >= answered["gasUsed"], (len(trace), paid, answered["gasUsed"])
        assert c.task_manager.claimable(actors.outsider.address) == 0


# ---------------------------------------------------------------------------------------------
# the allowance for the unmetered tail
# ---------------------------------------------------------------------------------------------


def test_defence_answers_batched_through_a_contract_are_refused(network: Contracts, actors: Actors) -> None:
    """The node withholds a batch, 12 entries are claimed (by three validators), and it answers
    all 12 in ONE transaction through a multicall contract. Each answer used to be priced a cold
    tail it spent once (~8k gas a claim above the whole transaction, so baiting paid); now the
    batch reverts with AnswerNotDirect and answers nothing. Sent one per transaction, as it must,
    each answer is paid at least its gasUsed and within the slack, none above."""
    c, w3 = network, network.w3
    burn_address_exists(c)
    [(_aid, warm_up)] = _claimed_entries(c, actors, [b"warm-up"])
    _answer_directly(c, actors.node, warm_up)  # every balance non-zero: no NEW_SLOT_GAS below
    batcher = _deploy(c, actors.node, _multicall(c.task_manager.address))
    claims = _claimed_entries(c, actors, [f"trace {i}".encode() for i in range(12)], list(actors.validators))
    blob = b"".join(len(data).to_bytes(32, "big") + data for _aid, data in claims)
    before = c.task_manager.claimable(actors.node.address)
    batched = _send_raw(w3, actors.node, {"to": batcher, "data": blob, "gas": 3_000_000})
    assert _mined(w3, batched)["status"] == 0
    assert _revert_data(w3, batched) == AnswerNotDirect.selector
    assert c.task_manager.claimable(actors.node.address) == before
    for aid, data in claims:
        assert c.task_manager.get_availability(aid).status != AvailabilityStatus.ANSWERED
        before = c.task_manager.claimable(actors.node.address)
        receipt = _answer_directly(c, actors.node, data)
        assert receipt["status"] == 1
        assert c.task_manager.get_availability(aid).status == AvailabilityStatus.ANSWERED
        paid = _gas(c, receipt, c.task_manager.claimable(actors.node.address) - before)
        assert 0 <= paid - receipt["gasUsed"] <= SLACK_GAS, (paid, receipt["gasUsed"])


def test_defence_a_self_claim_counts_its_one_new_balance_slot_once(
    network: Contracts, actors: Actors
) -> None:
    """A node opens a manifest claim on its own batch (anyone may) with its balance at 0: the
    node's and the claimant's slot are one, written from 0 once. `ClaimBond.tail` used to add
    NEW_SLOT_GAS for each (the answer paid ~20k gas above its cost); it now counts the slot once
    where the node claimed itself, and prices the claimant's balance write as the dirty second write
    to the node's slot it is (100, not 2,900): the answer is paid at least its gasUsed and within
    the slack (it was 3,270 above before that); the self-claim still burns the 0.01 ether fee."""
    c, w3 = network, network.w3
    burn_address_exists(c)
    node = actors.node.address
    node_om = c.as_account(actors.node).omission_manager
    receipts = make_receipts(c, actors.users, node, 4)
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = (
        c.as_account(actors.node).task_manager.commit_batch(tree.root, 4, "bafymanifest").value.batch_id
    )
    header = c.task_manager.batch(batch_id)
    assert c.omission_manager.claimable(node) == 0
    spent_before = w3.eth.get_balance(node)
    claim = node_om.challenge_manifest(header)
    answer = node_om.answer_manifest(claim.value, header, receipts)
    over = _gas(c, dict(answer.receipt), int(answer.value["answerCost"])) - answer.gas_used
    assert 0 <= over <= SLACK_GAS, over  # was ~20k
    assert int(answer.value["refunded"]) > 0
    # not profitable: the self-claim's net (ether spent, claimable got back) is a loss
    got_back = c.omission_manager.claimable(node)
    assert w3.eth.get_balance(node) + got_back < spent_before


def test_defence_a_balance_emptied_before_the_answer_is_priced_as_the_slot_it_sets(
    network: Contracts, actors: Actors
) -> None:
    """The first answer of a fresh deployment sets three slots from 0 (node, claimant, total
    burned) and is paid for them; a claimant that empties its balance in the node's answer's block
    (to make its slot cost 20,000 instead of 2,900) raises the price with it: the node is never
    paid below its cost, and never more than the slack above it."""
    c, w3 = network, network.w3
    burn_address_exists(c)
    node = actors.node.address
    assert c.task_manager.claimable(node) == 0
    [(_aid, data)] = _claimed_entries(c, actors, [b"x" * 10])
    receipt = _answer_directly(c, actors.node, data)
    assert 0 <= _gas(c, receipt, c.task_manager.claimable(node)) - receipt["gasUsed"] <= SLACK_GAS

    claimant = actors.validators[0]
    [(_aid, data)] = _claimed_entries(c, actors, [bytes(5_000)], [claimant])
    assert c.task_manager.claimable(claimant.address) > 0
    withdraw = c.task_manager.contract.functions.withdraw()._encode_transaction_data()
    est = w3.eth.estimate_gas({"from": node, "to": c.task_manager.address, "data": data})
    before = c.task_manager.claimable(node)
    with _one_block(w3):
        emptied = _send_raw(
            w3,
            claimant,
            {"to": c.task_manager.address, "data": withdraw, "gas": 200_000, "maxPriorityFeePerGas": 5 * TIP},
        )
        own = _send_raw(w3, actors.node, {"to": c.task_manager.address, "data": data, "gas": est * 13 // 10})
    assert _mined(w3, emptied)["status"] == 1
    receipt = _mined(w3, own)
    assert receipt["status"] == 1 and receipt["gasUsed"] > est  # the emptied slot cost the node more
    assert 0 <= _gas(c, receipt, c.task_manager.claimable(node) - before) - receipt["gasUsed"] <= SLACK_GAS


def test_defence_an_answer_that_moves_the_stake_lock_is_paid_its_cost(
    network: Contracts, actors: Actors
) -> None:
    """`answerAvailability` locks the node's stake until `now + CHALLENGE_WINDOW`. A commit locks to
    its window's end rounded UP to LOCK_STEP, so an answer in the commit's step writes nothing,
    and one past it (an idle or leaving node, a claim timed for it) writes the lock and emits
    StakeLocked. The lock used to run after the price (unmetered, ~1.6k gas below cost); now the
    lock and the unfreeze run before it, inside the metered span, so both answers are paid at
    least their gasUsed and within the slack."""
    c, w3 = network, network.w3
    burn_address_exists(c)
    [(_aid, warm_up)] = _claimed_entries(c, actors, [b"warm-up"])
    _answer_directly(c, actors.node, warm_up)
    step = int(c.task_manager.call("LOCK_STEP"))
    window = int(c.task_manager.call("CHALLENGE_WINDOW"))
    for moves in (False, True):
        increase_time(w3, 3 * step)
        [(aid, data)] = _claimed_entries(c, actors, [b"x" * 10])
        locked = c.service_manager.get_operator(actors.node.address).locked_until
        if moves:  # one second past the commit's rounded lock, inside the claim's answer window
            for _ in range(20):  # (the lock is rounded up to LOCK_STEP: retry until one fits)
                if locked - window + 1 < c.task_manager.get_availability(aid).deadline:
                    break
                increase_time(w3, step // 2 + 1)
                [(aid, data)] = _claimed_entries(c, actors, [b"x" * 10])
                locked = c.service_manager.get_operator(actors.node.address).locked_until
            now = w3.eth.get_block("latest")["timestamp"]
            _rpc(w3, "evm_setNextBlockTimestamp", [hex(max(locked - window + 1, now + 1))])
        before = c.task_manager.claimable(actors.node.address)
        receipt = _answer_directly(c, actors.node, data)
        assert receipt["status"] == 1
        assert (c.service_manager.get_operator(actors.node.address).locked_until > locked) is moves
        over = _gas(c, receipt, c.task_manager.claimable(actors.node.address) - before) - receipt["gasUsed"]
        assert 0 <= over <= SLACK_GAS, (moves, over)


# ---------------------------------------------------------------------------------------------
# the calldata part
# ---------------------------------------------------------------------------------------------


def test_known_limit_without_eip7623_the_floor_price_pays_the_node_above_its_cost(actors: Actors) -> None:
    """The same contracts on an EVM without EIP-7623 (Anvil --hardfork cancun; e.g. Arbitrum, an OP
    Stack chain before Isthmus): the transaction pays 21,000 + 4 per token + execution, but
    `costOfAnswer` still takes the 10-per-token floor, so a dense 50 KB trace is paid ~420k gas
    above its cost (~3.3M at the largest trace), and a node profits from every claim it baits.
    A fork that raises the floor (EIP-7976's 15/60) would underpay every honest answer by a third.

    Fix by design: the gas schedule is the chain's, not a library constant: the deployment takes
    the standard and floor token costs as constructor parameters checked against a probe
    transaction's gasUsed at deploy (refusing to deploy on a mismatch), and a fork that changes
    them is a documented redeployment trigger.
    """
    proc = Anvil(accounts=20)
    proc._args += ["--hardfork", "cancun"]
    with proc:
        c = Contracts.deploy(proc.url, actors.deployer, CHAIN_TEST_PARAMS)
        c.model_registry.register_model(MODEL_MANIFEST, "test-model")
        c.as_account(actors.node).service_manager.register_node(
            "http://127.0.0.1:8100", [MODEL_ID], 10**9, NODE_STAKE
        )
        c.as_account(actors.validators[0]).service_manager.register_validator(VALIDATOR_STAKE)
        increase_time(c.w3, 1)
        burn_address_exists(c)
        [(_aid, data)] = _claimed_entries(c, actors, [_dense(50_000)])
        receipt = _answer_directly(c, actors.node, data)
        assert receipt["status"] == 1
        over = _gas(c, receipt, c.task_manager.claimable(actors.node.address)) - receipt["gasUsed"]
    assert over > 300_000, over


def _permuted_with_junk(data: bytes) -> bytes:
    """The same answer, non-canonical at the same length: the trace laid out before the proof
    (offsets swapped) and its padding filled with 0xff."""
    selector, body = data[:4], data[4:]
    words = [body[i : i + 32] for i in range(0, len(body), 32)]
    proof_at, trace_at = int.from_bytes(words[15], "big"), int.from_bytes(words[16], "big")
    proof, trace = body[proof_at:trace_at], body[trace_at:]
    pad = -int.from_bytes(trace[:32], "big") % 32
    trace = trace[: len(trace) - pad] + b"\xff" * pad
    head = b"".join(words[:15]) + (proof_at + len(trace)).to_bytes(32, "big") + proof_at.to_bytes(32, "big")
    return selector + head + trace + proof


def test_defence_a_permuted_encoding_with_junk_padding_is_paid_exactly_its_cost(
    network: Contracts, actors: Actors
) -> None:
    """`requireCanonical` checks only the length, so a layout with the sections swapped and 31
    bytes of junk in the trace's padding is accepted; but the price counts the tokens of the
    calldata the transaction really carried, so it is paid exactly what it cost (floor-priced), and
    the claimant pays at most 31 * 3 * 10 gas for the junk."""
    c = network
    burn_address_exists(c)
    [(_aid, data)] = _claimed_entries(c, actors, [_dense(50_001)])
    odd = _permuted_with_junk(data)
    assert len(odd) == len(data) and odd != data
    receipt = _answer_directly(c, actors.node, odd)
    assert receipt["status"] == 1
    assert _gas(c, receipt, c.task_manager.claimable(actors.node.address)) == receipt["gasUsed"]


def test_defence_an_access_list_gains_the_node_nothing(network: Contracts, actors: Actors) -> None:
    """An access list naming the accounts the unmetered tail touches (ServiceManager, the burn
    account): the tail it warms is priced by a constant allowance, and what the list saves of the
    metered span is metered, so it cannot raise the price; its up-front 2,400 gas an entry is the
    node's own choice and not priced. The node is paid no more above its gasUsed with the list
    than without (it is out of pocket by about the list's cost)."""
    c = network
    burn_address_exists(c)
    overs = []
    for access in (
        [],
        [
            {"address": c.service_manager.address, "storageKeys": []},
            {"address": BURN_ADDRESS, "storageKeys": []},
        ],
    ):
        [(_aid, data)] = _claimed_entries(c, actors, [bytes(5_000)])  # standard-priced: execution counts
        before = c.task_manager.claimable(actors.node.address)
        receipt = _answer_directly(c, actors.node, data, accessList=access)
        overs.append(
            _gas(c, receipt, c.task_manager.claimable(actors.node.address) - before) - receipt["gasUsed"]
        )
    assert 0 <= overs[0] <= SLACK_GAS, overs
    assert overs[1] <= overs[0], overs
