"""Batch commit → challenge (SDK Merkle proof) → votes → resolve → slash, on a real Anvil."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest
from chain_fixtures import (
    NODE_STAKE,
    VALIDATOR_STAKE,
    Actors,
    cast_votes,
    commit_vote,
    make_receipts,
    make_request,
    to_reveal_phase,
)
from supernet.sdk.chain import ChallengeStatus, Contracts, ReceiptTree
from supernet.sdk.chain.anvil import increase_time, mine, set_next_base_fee
from supernet.sdk.chain.contract_errors import (
    AccusedCannotVote,
    AlreadyVoted,
    InvalidProof,
    NotActiveValidator,
    NotTheCommittedVote,
    NotThePromisedReceipt,
    NotTheRequest,
    NotWinningVoter,
    OperatorFrozen,
    SeedNotReady,
    TraceTooLarge,
    VoteWindowOpen,
    WrongBond,
    WrongVotePhase,
)
from supernet.sdk.chain.eip712 import ReceiptPromise, recover_receipt_promise, sign_receipt_promise
from supernet.sdk.chain.omission import OmissionStatus
from supernet.sdk.chain.sampling import batch_seed
from supernet.sdk.chain.tasks import vote_commitment
from supernet.sdk.client import Client, ClientState, RefundClaimed
from supernet.sdk.client.state import TaskRecord
from supernet.sdk.formats.trace import MAX_TRACE_BYTES

pytestmark = pytest.mark.anvil

BPS = 10_000


def _commit(c: Contracts, actors: Actors, count: int = 7):
    receipts = make_receipts(c, actors.users, actors.node.address, count)
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = (
        c.as_account(actors.node)
        .task_manager.commit_batch(tree.root, len(tree), "bafymanifest")
        .value.batch_id
    )
    return receipts, tree, batch_id


def test_commit_sample_and_leaves_match(network: Contracts, actors: Actors) -> None:
    receipts, tree, batch_id = _commit(network, actors)
    tm = network.task_manager
    batch = tm.batch(batch_id)
    assert (batch.node, batch.count, batch.root) == (actors.node.address, 7, tree.root)
    assert all(tm.hash_receipt(r) == r.leaf() for r in receipts)
    with pytest.raises(SeedNotReady):
        tm.batch_seed(batch_id)
    mine(network.w3, 2)  # the seed block (commit + SEED_DELAY_BLOCKS = 1) and one after it
    with pytest.raises(SeedNotReady):  # mined, but its RANDAO mix is not proven to the beacon yet
        tm.batch_seed(batch_id)
    validator_tm = network.as_account(actors.validators[0]).task_manager
    assert validator_tm.seal_seed_block(batch)  # Anvil's own header, rebuilt and proven
    seed_block = network.w3.eth.get_block(tm.seed_block(batch))
    assert tm.batch_seed(batch_id) == batch_seed(bytes(seed_block["mixHash"]), batch_id)
    assert validator_tm.seal_seed_block(batch), "sealing again is a no-op"
    assert tm.is_sampled(batch_id, actors.validators[0].address, 6)  # devnet samples everything


def test_fraud_slashes_refunds_and_rewards(network: Contracts, actors: Actors) -> None:
    receipts, tree, batch_id = _commit(network, actors)
    bad = receipts[3]
    challenger, v1, v2 = (network.as_account(v).task_manager for v in actors.validators)
    p = network.params

    mine(network.w3, 2)  # a validator challenges once the seed says it is sampled
    cid = challenger.challenge(batch_id, 3, bad, tree.proof_at(3), "bafyevidence").value
    assert network.task_manager.get_challenge(cid).sampled  # so it earns the challenger reward
    assert network.service_manager.get_operator(actors.node.address).frozen_count == 1
    with pytest.raises(AlreadyVoted):  # the challenge is the challenger's fraud vote
        commit_vote(network, cid, actors.validators[0], True)
    with pytest.raises(WrongBond):  # a vote is bonded like a challenge
        v1.commit_vote(cid, bytes(32), value=1)
    with pytest.raises(WrongVotePhase):  # sealed votes are opened in the last REVEAL_WINDOW only
        v1.reveal_vote(cid, True, bytes(32))
    cast_votes(network, cid, [(actors.validators[1], True), (actors.validators[2], False)])
    with pytest.raises(WrongVotePhase):  # no more commits in the reveal phase
        commit_vote(network, cid, actors.outsider, True)
    with pytest.raises(NotTheCommittedVote):  # revealed once
        v1.reveal_vote(cid, True, bytes(32))
    with pytest.raises(VoteWindowOpen):
        v1.resolve(cid)

    increase_time(network.w3, p.vote_window + 1)
    result = network.as_account(actors.outsider).task_manager.resolve(cid).value
    slashed = p.slash_amount
    reward, pool = slashed * p.challenger_reward_bps // BPS, slashed * p.voter_reward_bps // BPS
    held = (slashed - reward - pool) // 2  # the refund's cap, held for the request's signer
    assert result["fraud"] and result["slashed"] == slashed and result["refund"] == held
    assert result["burned"] == slashed - reward - pool - held

    tm = network.task_manager
    assert tm.get_challenge(cid).status == ChallengeStatus.FRAUD
    assert tm.get_challenge(cid).refund_due == held and tm.claimable(bad.user) == 0  # held
    burned_before = tm.total_burned()
    # the user finds its challenged receipt from the chain alone, and shows its signed request
    assert tm.challenged_receipts({bad.request_hash}) == [(cid, bad)]
    user_tm = network.as_account(next(u for u in actors.users if u.address == bad.user)).task_manager
    with pytest.raises(NotTheRequest):  # another of its requests is not this receipt's
        user_tm.claim_refund(cid, bad, make_request(actors.users, actors.node.address, 2))
    signed = make_request(actors.users, actors.node.address, 3)
    assert signed.max_fee == bad.fee < held  # the node charged the signed maxFee and wrote it
    assert user_tm.claim_refund(cid, bad, signed).value == signed.max_fee  # the signed fee, from the held cap
    assert tm.claimable(bad.user) == signed.max_fee
    assert tm.total_burned() == burned_before + held - signed.max_fee  # the rest of the cap burned
    assert tm.get_challenge(cid).refund_due == 0
    assert tm.claimable(actors.validators[0].address) == p.challenge_bond + reward
    op = network.service_manager.get_operator(actors.node.address)
    assert (op.stake, op.slash_count, op.frozen_count) == (NODE_STAKE - slashed, 1, 0)

    # the pool has the losing voter's bond too; the winner gets its own bond back with its share
    bond = p.challenge_bond
    assert v1.claim_vote_reward(cid).value == bond + (pool + bond) // 2  # two fraud voters, equal stake
    with pytest.raises(NotWinningVoter):
        v2.claim_vote_reward(cid)
    user_tm.withdraw()
    assert tm.claimable(bad.user) == 0


def test_a_sealed_vote_opens_with_its_own_side_and_salt_only(network: Contracts, actors: Actors) -> None:
    """The SDK's `vote_commitment` is the contract's: the vote it seals is revealed and counted;
    the other side (or another salt) is refused, and the side stays secret until the reveal."""
    receipts, tree, batch_id = _commit(network, actors)
    mine(network.w3, 2)
    challenger = network.as_account(actors.validators[0]).task_manager
    cid = challenger.challenge(batch_id, 0, receipts[0], tree.proof_at(0), "bafyevidence").value
    voter = actors.validators[1]
    tm = network.as_account(voter).task_manager
    salt = os.urandom(32)
    tx = tm.commit_vote(cid, vote_commitment(cid, voter.address, True, salt))
    [ev] = tm.events(tx, "VoteCommitted")
    assert (ev["args"]["validator"], ev["args"]["weight"]) == (voter.address, VALIDATOR_STAKE)
    sealed = tm.get_vote(cid, voter.address)
    assert sealed.weight == VALIDATOR_STAKE and not sealed.revealed
    assert tm.get_challenge(cid).committed == 1 and tm.get_challenge(cid).fraud_stake == VALIDATOR_STAKE
    to_reveal_phase(network, cid)
    with pytest.raises(NotTheCommittedVote):  # the other side
        tm.reveal_vote(cid, False, salt)
    with pytest.raises(NotTheCommittedVote):  # another salt
        tm.reveal_vote(cid, True, os.urandom(32))
    [voted] = tm.events(tm.reveal_vote(cid, True, salt), "Voted")
    assert voted["args"]["fraud"] is True and voted["args"]["weight"] == VALIDATOR_STAKE
    opened = tm.get_vote(cid, voter.address)
    assert opened.revealed and opened.fraud
    ch = tm.get_challenge(cid)
    assert (ch.fraud_voters, ch.honest_voters, ch.fraud_stake) == (1, 0, 2 * VALIDATOR_STAKE)


def test_false_accusation_pays_the_node(network: Contracts, actors: Actors) -> None:
    receipts, tree, batch_id = _commit(network, actors, count=1)
    assert tree.root == receipts[0].leaf() and tree.proof(receipts[0]) == []
    challenger = network.as_account(actors.validators[0]).task_manager
    cid = challenger.challenge(batch_id, 0, receipts[0], [], "bafyevidence").value
    cast_votes(network, cid, [(actors.validators[1], False), (actors.validators[2], False)])
    increase_time(network.w3, network.params.vote_window + 1)
    assert not challenger.resolve(cid).value["fraud"]
    bond = network.params.challenge_bond
    pool = bond * network.params.voter_reward_bps // BPS
    assert network.task_manager.claimable(actors.node.address) == bond - pool


def test_unbond_blocked_during_dispute(network: Contracts, actors: Actors) -> None:
    receipts, tree, batch_id = _commit(network, actors)
    node_sm = network.as_account(actors.node).service_manager
    cid = (
        network.as_account(actors.validators[0])
        .task_manager.challenge(batch_id, 0, receipts[0], tree.proof_at(0), "bafyevidence")
        .value
    )
    node_sm.request_unbond(NODE_STAKE)
    # past unbonding and the lock (the window's end, rounded up to LOCK_STEP = window / 16)
    p = network.params
    increase_time(network.w3, max(p.unbonding_period, p.challenge_window * 17 // 16) + 1)
    with pytest.raises(OperatorFrozen) as exc:
        node_sm.withdraw_unbonded()
    assert exc.value.frozenCount == 1
    network.task_manager.with_account(actors.outsider).resolve(cid)  # one fraud vote < quorum: cleared
    node_sm.withdraw_unbonded()
    assert node_sm.get_operator(actors.node.address).unbonding == 0


def test_bad_challenges_are_typed(network: Contracts, actors: Actors) -> None:
    receipts, tree, batch_id = _commit(network, actors)
    v = network.as_account(actors.validators[0]).task_manager
    proof = tree.proof(receipts[2])
    tampered = [proof[0][:-1] + bytes([proof[0][-1] ^ 1]), *proof[1:]]
    with pytest.raises(InvalidProof):
        v.challenge(batch_id, 2, receipts[2], tampered, "bafy")
    with pytest.raises(InvalidProof):  # a proof of another leaf
        v.challenge(batch_id, 2, receipts[2], tree.proof_at(1), "bafy")
    with pytest.raises(WrongBond) as exc:
        v.challenge(batch_id, 2, receipts[2], proof, "bafy", bond=1)
    assert exc.value.required == network.params.challenge_bond
    with pytest.raises(NotActiveValidator):
        network.as_account(actors.outsider).task_manager.challenge(batch_id, 2, receipts[2], proof, "bafy")
    cid = v.challenge(batch_id, 2, receipts[2], proof, "bafy").value
    with pytest.raises(AccusedCannotVote):
        commit_vote(network, cid, actors.node, False)


async def test_client_claims_its_refunds_from_the_chain_alone(
    network: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A user whose task was proven faulty gets its refund with nothing but its own state: the
    client finds the challenge by its request hash, reads the receipt from the challenge's
    calldata (the node is not asked) and shows the request it signed."""
    receipts, tree, batch_id = _commit(network, actors)
    bad = receipts[1]
    user = next(u for u in actors.users if u.address == bad.user)
    request = make_request(actors.users, actors.node.address, 1)
    task_id = "0x" + bad.request_hash.hex()
    state = ClientState.open(tmp_path)
    state.tasks[task_id] = TaskRecord(
        actors.node.address, "http://127.0.0.1:9", "task 1", "0x" + bad.model_id.hex(), bad.fee,
        status="done", request=request.to_json(),
    )  # fmt: skip
    state.save()
    challenger = network.as_account(actors.validators[0]).task_manager
    mine(network.w3, 2)
    cid = challenger.challenge(batch_id, 1, bad, tree.proof_at(1), "bafyevidence").value
    async with Client(network.as_account(user), state_dir=tmp_path) as client:
        assert await client.claim_refunds() == []  # open: nothing to claim yet
        cast_votes(network, cid, [(actors.validators[1], True)])
        increase_time(network.w3, network.params.vote_window + 1)
        assert challenger.resolve(cid).value["fraud"]
        assert await client.claim_refunds() == [RefundClaimed(task_id, cid, bad.fee)]
        assert await client.claim_refunds() == []  # claimed once
    assert network.task_manager.claimable(user.address) == bad.fee


def test_a_broken_receipt_promise_is_slashed_and_a_kept_one_answered(
    network: Contracts, actors: Actors
) -> None:
    """Omission: the node signs, with each receipt, a promise to commit it by a time. A receipt it
    leaves out of its batches (paid by the voucher, never sampled) is claimed by its user after
    that time and the node is slashed; a receipt it did commit is shown and the claim costs the
    node nothing."""
    receipts, tree, batch_id = _commit(network, actors, count=3)
    node = actors.node
    domain = network.domain
    now = network.w3.eth.get_block("latest")["timestamp"]
    kept = ReceiptPromise(receipts[1].request_hash, receipts[1].leaf(), now + 60)
    omitted_receipt = make_receipts(network, actors.users, node.address, 5)[4]  # never committed
    omitted = ReceiptPromise(omitted_receipt.request_hash, omitted_receipt.leaf(), now + 60)
    assert recover_receipt_promise(kept, domain, sign_receipt_promise(kept, domain, node)) == node.address
    increase_time(network.w3, 61)

    def user_tm(i: int):
        request = make_request(actors.users, node.address, i)
        return network.as_account(
            next(u for u in actors.users if u.address == request.user)
        ).omission_manager, request

    tm_kept, req_kept = user_tm(1)
    with pytest.raises(NotThePromisedReceipt):  # another receipt than the promised one
        tm_kept.challenge_omission(kept, sign_receipt_promise(kept, domain, node), req_kept, receipts[0])
    aid = tm_kept.challenge_omission(
        kept, sign_receipt_promise(kept, domain, node), req_kept, receipts[1]
    ).value
    answered = (
        network.as_account(node)
        .omission_manager.answer_omission(
            aid, network.task_manager.batch(batch_id), 1, receipts[1], tree.proof_at(1)
        )
        .value
    )
    assert answered["index"] == 1 and answered["answerCost"] < network.params.challenge_bond
    assert network.omission_manager.get_omission(aid).status == OmissionStatus.ANSWERED

    tm_omitted, req_omitted = user_tm(4)
    oid = tm_omitted.challenge_omission(
        omitted, sign_receipt_promise(omitted, domain, node), req_omitted, omitted_receipt
    ).value
    with pytest.raises(InvalidProof):  # the receipt is in none of the node's batches
        network.as_account(node).omission_manager.answer_omission(
            oid, network.task_manager.batch(batch_id), 0, omitted_receipt, tree.proof_at(0)
        )
    increase_time(network.w3, network.params.vote_window + 1)
    stake = network.service_manager.get_operator(node.address).stake
    resolved = network.as_account(actors.outsider).omission_manager.resolve_omission(oid).value
    assert resolved["slashed"] == network.params.slash_amount
    assert network.service_manager.get_operator(node.address).stake == stake - network.params.slash_amount
    assert network.omission_manager.get_omission(oid).status == OmissionStatus.UNANSWERED


def test_the_largest_trace_a_kernel_saves_is_answered_in_one_transaction(
    network: Contracts, actors: Actors
) -> None:
    """B7: an availability answer posts the whole trace as calldata, and a trace too big for one
    transaction could not be answered, so anyone could get its honest node slashed. Kernels now
    save at most MAX_TRACE_BYTES; this Anvil enforces EIP-7825's 2^24 gas per transaction (as
    mainnet since Osaka) and prices calldata at EIP-7623's floor, and the answer with the costliest
    trace of that size (no zero byte) goes through. A trace past the cap is refused (TraceTooLarge)."""
    largest = bytes(b | 1 for b in os.urandom(MAX_TRACE_BYTES))  # no zero byte: the costliest calldata
    too_big = bytes(b | 1 for b in os.urandom(MAX_TRACE_BYTES * 5 // 4))
    receipts = make_receipts(network, actors.users, actors.node.address, 3)
    receipts[1] = dataclasses.replace(receipts[1], trace_hash=hashlib.sha256(largest).digest())
    receipts[2] = dataclasses.replace(receipts[2], trace_hash=hashlib.sha256(too_big).digest())
    tree = ReceiptTree.from_receipts(receipts)
    node_tm = network.as_account(actors.node).task_manager
    batch_id = node_tm.commit_batch(tree.root, len(tree), "bafymanifest").value.batch_id
    mine(network.w3, 2)
    claimant = network.as_account(actors.validators[0]).task_manager
    aid = claimant.challenge_availability(batch_id, 1).value
    answer = node_tm.answer_availability(aid, receipts[1], tree.proof_at(1), largest)
    floor = 21_000 + 40 * MAX_TRACE_BYTES  # EIP-7623: 10 gas per token, 4 tokens per non-zero byte
    assert floor < answer.gas_used <= 2**24, answer.gas_used
    assert network.task_manager.get_availability(aid).status.name == "ANSWERED"

    aid2 = claimant.challenge_availability(batch_id, 2).value
    with pytest.raises(TraceTooLarge):  # over the protocol's cap (and EIP-7825's, for any transaction)
        node_tm.answer_availability(aid2, receipts[2], tree.proof_at(2), too_big)
    assert network.task_manager.get_availability(aid2).status.name == "OPEN"


def test_a_claim_at_a_high_base_fee_covers_the_answer_it_forces(network: Contracts, actors: Actors) -> None:
    """A claim's deposit covers its costliest answer at its block's base fee (the contracts'
    ClaimBond): with the bond alone, the node was paid its answer's cost capped at 90 % of the
    bond, so at a base fee spike a claim cost the honest node more than the slash it avoided
    (contracts/test/Review8.t.sol). Here at ~1,000 gwei, through the SDK as a validator sends it:
    the bond alone is refused and changes nothing, the default deposit goes through, and the
    node is paid its answer in full, well above the old cap, from the claimant's deposit."""
    tm = network.task_manager
    trace = bytes(b | 1 for b in os.urandom(4096))  # no zero byte: priced at 40 gas a byte
    receipts = make_receipts(network, actors.users, actors.node.address, 2)
    receipts[0] = dataclasses.replace(receipts[0], trace_hash=hashlib.sha256(trace).digest())
    tree = ReceiptTree.from_receipts(receipts)
    node_tm = network.as_account(actors.node).task_manager
    batch_id = node_tm.commit_batch(tree.root, len(tree), "bafymanifest").value.batch_id
    mine(network.w3, 2)
    set_next_base_fee(network.w3, 1_000 * 10**9)
    mine(network.w3)
    claimant = network.as_account(actors.validators[0]).task_manager
    bond = tm.challenge_bond()
    count = int(tm.call("availabilityCount"))
    with pytest.raises(WrongBond):
        claimant.challenge_availability(batch_id, 0, bond=bond)
    assert int(tm.call("availabilityCount")) == count

    opened = claimant.challenge_availability(batch_id, 0)
    aid = opened.value
    claim_fee = int(network.w3.eth.get_block(opened.receipt["blockNumber"])["baseFeePerGas"])
    deposit = tm.get_availability(aid).deposit
    assert deposit >= bond + int(tm.call("AVAILABILITY_WORST_GAS")) * claim_fee

    answer = node_tm.answer_availability(aid, receipts[0], tree.proof_at(0), trace)
    answer_fee = int(network.w3.eth.get_block(answer.receipt["blockNumber"])["baseFeePerGas"])
    cost = answer.value["answerCost"]  # its transaction's gas at its base fee (test_answer_prices.py)
    fee = bond * int(tm.call("AVAILABILITY_FEE_BPS")) // BPS
    assert cost > bond - fee, "paid in full, above the old cap"
    assert abs(cost // answer_fee - answer.receipt["gasUsed"]) <= 25_000  # (a devnet's first burn: 25k)
    assert answer.value["refunded"] == deposit - fee - cost
    assert tm.claimable(actors.validators[0].address) >= deposit - fee - cost
