"""Review: a rational cheater that goes after an honest validator's ether and bonds, not its CPU
(real Anvil, the real compiled contracts, the real embedded store; the real `Disputes`,
`Availability`, `ManifestWatch`, `ReceiptIndex`, `Follower`, `TaskManagerClient` and `Database`).

Scope: availability claims (bond plus the costliest answer: ~0.3 ether at 10 gwei), manifest
claims, fraud challenges (CHALLENGE_BOND), vote bonds (commitVote), reveals (gas only), seed seals,
and whether the deposits a validator locks come back; what an honest validator stops doing once
its wallet is empty, and what it does first. The validator's own re-execution is replaced by a
stand-in verdict (`_verdicts`, as in tests/unit/test_review_validator_game.py): the checks are not
under review here, the money is. `Validator.step`'s tail (``vote_open`` then ``settle``, inside
`_steps`' catch-all) is replayed in its order (validator/supernet/validator/service.py:418-419).

Found:

- HIGH, FIXED (test_attack_manifest_claim_refunds_and_rewards_are_never_withdrawn, now
  test_defence_manifest_claim_refunds_and_rewards_are_withdrawn: `Disputes.settle` withdraws both
  contracts' balances; `validator rewards | claim` shows and claims both): a manifest claim's
  refund (answered) and its deposit plus the slash reward (unanswered) are credited to the
  OmissionManager's own ``claimable``; the validator only ever reads and withdraws the
  TaskManager's (`Disputes.settle`, challenger.py:704-706; `supernet validator rewards | claim`,
  sdk/supernet/sdk/money_cli.py:253, also reads only the TaskManager's). Measured at a 10 gwei base
  fee: two manifest claims lock 0.35 ether; after one answer and one slash, 0.54 ether (the
  0.2 ether reward included) sits in OmissionManager.claimable, never withdrawn nor shown. A node
  that withholds the manifest of every batch and answers each claim (its answer paid by the
  deposit) moves ~0.17 ether of the first claimant's wallet there per batch, for the price of its
  commit: the validator's liquid ether drains until it cannot bond a vote or a challenge.
- MEDIUM, a KNOWN LIMIT (test_known_limit_an_honest_claimant_pays_for_the_trace_the_node_withheld;
  docs/security-parameters.md "Known limits": the contract cannot tell a withheld block from the
  claimant's store failing, and charging the node would let any picked validator make honest
  nodes pay to post their traces): the node withholds
  a trace from the validator sampled for it, the validator retries and claims as designed, and the
  node answers at leisure: the deposit pays the node's answer (priced by the trace the node chose)
  and 10 % of the bond burns, both from the honest claimant. A 100 KB trace at ~10 gwei: the
  claimant loses ~0.04 ether, the node ~0.004 (its tip). The docs price the claim to stop a
  griefing *claimant*; the node griefing honest claimants is not covered
  (docs/security-parameters.md "Availability"), and it teaches validators to stop claiming.
- MEDIUM, FIXED (test_attack_bonds_locked_in_a_friends_challenges_leave_a_real_fraud_without_votes,
  now test_defence_bonds_locked_in_a_friends_challenges_leave_a_vote_for_a_real_fraud: a 'not
  fraud' vote is sealed only with a fraud vote's bond and gas to spare after it): a
  node's ally opens challenges on the node's honest receipts; every validator seals a "not fraud"
  vote on each, a bond each, in challenge-id order (`Disputes.vote_open`, challenger.py:399) with no
  reserve and no priority. A validator holding 0.35 ether spare ("a few bonds' worth",
  docs/validator.md) seals three and has nothing left for the honest challenge of another node's
  real fraud opened a block later; the bonds come back only after that vote's sealing phase. The
  real challenge ends without a verdict: the cheating node is not slashed and the honest
  challenger's bond burns. The ally's three challenges are cleared, so the node gets back each
  bond less the voter pool: the block costs the coalition 0.06 ether a vote window.
- LOW, FIXED (test_attack_a_reveal_the_wallet_cannot_pay_stops_the_step_before_settle_refills_it,
  now test_defence_a_reveal_the_wallet_cannot_pay_no_longer_stops_settle_refilling_it): a
  reveal the wallet cannot pay raises out of `Disputes.vote_open` (`_reveal_one` handles no funds
  error, challenger.py:597), so `Validator.step` never reaches `settle`, whose `withdraw` would bring
  back the refunds (here an answered availability claim's) that pay it: every step fails the same
  way until the vote window ends, and the sealed vote's bond burns. What escapes here is a bare
  ``Web3RPCError``: a transaction whose estimate fits the wallet but whose signed limit (estimate +
  30 %) does not fails at ``send_raw_transaction`` (bindings.py:552, outside `_funds_named`), not
  as `InsufficientFundsError`, so `_commit`'s handler (challenger.py:514) misses that case too (a
  vote commit in that band also ends the step before settle).
  Narrow trigger (a wallet between a withdrawal's and a reveal's gas), but the cheater
  steers the wallet down by the claims and seals it provokes.

Checked and holding:

- An availability claim the wallet cannot pay is deferred for that entry alone; the step goes on,
  the answered claim's refund is withdrawn by `settle`, and the deferred entry is claimed at the next
  step (test_defence_an_unaffordable_availability_claim_defers_only_its_entry_and_refunds_come_back).
  Refunds of availability claims and vote bonds are TaskManager credits and `settle` withdraws them
  whenever ``claimable`` is non-zero (not only after a claim of its own).
- Within a step, a validator's fraud challenges (`_check_batches`) come before new availability
  claims (service.py:400, 414), and a deferred challenge is retried first at the next step (by reading).
- A seed seal that fails (no ether, already sealed) is logged and the retries go on
  (`Availability._seal`); already sealed, `seal_seed_block` sends nothing.
- The operator is told in words: `InsufficientFundsError` names the account, its balance and "send
  it some ether first", logged as a warning per deferred duty. There is no metric or health field
  for the wallet or for duties deferred for lack of ether (ops.py), so a dashboard shows a healthy
  validator while its votes go unsealed (noted, not tested).
"""

from __future__ import annotations

import asyncio
import os

import pytest
from chain_fixtures import Actors, commit_vote, make_receipts, reveal_vote
from eth_account.signers.local import LocalAccount
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import advance_to, increase_time, mine, set_balance, set_next_base_fee
from supernet.sdk.chain.bindings import claim_fee_cap, gas_limit
from supernet.sdk.chain.eip712 import TaskRequest, hash_task_request, sign_task_request
from supernet.sdk.chain.receipts import Receipt, input_hash, output_hash, sign_receipt, trace_hash
from supernet.sdk.formats.manifest import BatchManifest, ManifestEntry
from supernet.sdk.store.cids import compute_cid, encode_dag
from supernet.validator.availability import Availability
from supernet.validator.chain import ChallengeStatus
from supernet.validator.db import BatchRow
from supernet.validator.evidence import Check, Finding, Verdict
from supernet.validator.manifests import ManifestWatch
from supernet.validator.origin_check import ReceiptIndex

from tests.unit import test_review_validator_game as vgame
from tests.unit.test_review_validator_game import Game, Party, _open

game = vgame.game  # fixture: real Anvil, contracts (staked network) and two embedded stores

pytestmark = pytest.mark.asyncio(loop_scope="session")

ETHER = 10**18
GWEI = 10**9


# -- helpers ------------------------------------------------------------------------------------------


def _commit_withheld_manifest(
    c: Contracts, node: LocalAccount, actors: Actors, tag: str
) -> tuple[int, list[Receipt]]:
    """``node`` commits a batch of two receipts whose manifest it never serves (a CID no store holds)."""
    receipts = make_receipts(c, actors.users, node.address, 2)
    tree = ReceiptTree.from_receipts(receipts)
    cid = compute_cid(encode_dag({"manifest never served": tag}), "dag-cbor")
    batch_id = c.as_account(node).task_manager.commit_batch(tree.root, len(tree), cid).value.batch_id
    mine(c.w3, 2)
    return int(batch_id), receipts


async def _commit(
    g: Game, node: LocalAccount, count: int, tag: str, withheld: dict[int, bytes] | None = None
) -> tuple[int, list[Receipt]]:
    """``node`` commits a batch of ``count`` well-signed receipts, its manifest served on both
    stores; every trace is on the ``full`` store except those of ``withheld`` (index -> the trace
    block, which the node keeps to itself)."""
    c, users = g.chain, g.actors.users
    withheld = withheld or {}
    entries, receipts = [], []
    for i in range(count):
        user = users[i % len(users)]
        block = withheld.get(i) or encode_dag({"kind": f"trace {tag}", "n": i})
        tcid = compute_cid(block, "dag-cbor")
        if i not in withheld:
            await g.stores["full"].put_block(block, "dag-cbor")
        req = TaskRequest(
            user=user.address,
            node=node.address,
            model_id=bytes(32),
            agent_hash=bytes(32),
            input_hash=input_hash(f"{tag} q{i}"),
            max_fee=10**14,  # = the receipt's fee: a node charges the signed maxFee
            nonce=abs(hash(tag)) % 10**9 + i,
            deadline=2**40,
        )
        receipt = Receipt(
            request_hash=hash_task_request(req, c.domain),
            user=user.address,
            model_id=bytes(32),
            input_hash=req.input_hash,
            output_hash=output_hash(f"{tag} a{i}"),
            trace_hash=trace_hash(tcid),
            fee=10**14,
        )
        receipts.append(receipt)
        entries.append(
            ManifestEntry(
                receipt=receipt,
                leaf=receipt.leaf(),
                signature=sign_receipt(receipt, node),
                trace_cid=tcid,
                agent="probe",
                request=req,
                request_signature=sign_task_request(req, c.domain, user),
            )
        )
    manifest = BatchManifest.seal(node.address, entries)
    for store in g.stores.values():
        cid = await store.put_dag(manifest.to_dag(), pin=True)
    tree = ReceiptTree(receipts)
    batch_id = c.as_account(node).task_manager.commit_batch(tree.root, count, cid).value.batch_id
    mine(c.w3, 2)
    return int(batch_id), receipts


def _watch(g: Game, p: Party) -> ManifestWatch:
    index = ReceiptIndex(p.db, p.disputes.manifest, g.chain.domain, claims=p.client)
    return ManifestWatch(p.client, p.db, index, backoff_s=0.01, start_block=g.chain.deployment.deploy_block)


def _verdicts(p: Party, faulty_batches: set[int]) -> None:
    """The validator's own check (a stand-in for the re-execution, as in test_review_validator_game):
    a fault in ``faulty_batches``, sound elsewhere."""

    async def verify(batch_id: int, node: str, index: int, manifest: object, **kw: object) -> Verdict:
        leaf = manifest.leaf(index)  # type: ignore[attr-defined]
        found = (Finding(Check.TRACE, "output is not the trace's"),) if batch_id in faulty_batches else ()
        return Verdict(batch_id, index, leaf, findings=found, validator=p.account.address)

    p.disputes.verifier.verify = verify  # type: ignore[method-assign]


async def _no_settle(batch: BatchRow, index: int, verdict: Verdict) -> bool:
    return True


def _balance(c: Contracts, who: LocalAccount) -> int:
    return int(c.w3.eth.get_balance(who.address))


# -- tests --------------------------------------------------------------------------------------------


async def test_defence_manifest_claim_refunds_and_rewards_are_withdrawn(game: Game) -> None:
    """Was an attack (HIGH; FIXED: `Disputes.settle` withdraws the OmissionManager's balance too, and the
    money CLI shows and claims both). Two nodes withhold a batch manifest each; the validator's real
    `ManifestWatch` claims both near the end of the claim window (base fee 10 gwei). The node answers one
    (the deposit pays its answer, the rest is refunded to the claimant), the other is slashed (deposit
    back plus the challenger reward). Both credits land in ``OmissionManager.claimable``. The validator's
    steps (`ManifestWatch.step`, `Disputes.settle` with ``auto_withdraw``) run on: safe behaviour is that
    what the claims earned comes back to the wallet. Today it stays in the OmissionManager: settle reads
    and withdraws the TaskManager's balance only, and ``supernet validator rewards`` shows only that one
    too. Fix: `Disputes.settle` (or `ManifestWatch`) withdraws the OmissionManager's ``claimable`` as
    well, and the operator CLI shows and claims both."""
    g = game
    c, a = g.chain, g.actors
    me = a.validators[1]
    v = g.party(me, g.stores["partial"], "v")
    watch = _watch(g, v)
    answered, receipts = _commit_withheld_manifest(c, a.node, a, "answered")
    ignored, _ = _commit_withheld_manifest(c, a.node2, a, "ignored")
    v.follower.catch_up()
    window = v.client.params().challenge_window
    start = c.task_manager.batch(ignored).committed_at
    advance_to(c.w3, start + window // 2 - window // 10 + 1)  # ManifestWatch claims near the half
    set_next_base_fee(c.w3, 10 * GWEI)
    mine(c.w3)
    wallet0 = _balance(c, me)
    await watch.step(v.client.timestamp())
    claims = [c.omission_manager.batch_manifest(b) for b in (answered, ignored)]
    assert claims[0] is not None and claims[1] is not None, "both manifests claimed"
    locked = claims[0].deposit + claims[1].deposit
    assert locked > 3 * ETHER // 10  # ~0.35 ether at 10 gwei
    node_om = c.as_account(a.node).omission_manager
    node_om.answer_manifest(claims[0].manifest_id, c.task_manager.batch(answered), receipts)
    advance_to(c.w3, claims[1].deadline + 1)
    for _ in range(3):  # the validator's steps go on: follow, resolve, settle (withdraw)
        await asyncio.sleep(0.05)
        now = v.client.timestamp()
        await watch.step(now)
        await v.disputes.settle(now)
    assert c.service_manager.get_node(a.node2.address).slash_count == 1, "the silent node was slashed"
    stuck = c.omission_manager.claimable(me.address)
    assert stuck == 0, (
        f"{stuck / ETHER:.3f} ether the validator's manifest claims earned (refund, deposit, reward) "
        "sits in OmissionManager.claimable, never withdrawn; the wallet is "
        f"{(wallet0 - _balance(c, me)) / ETHER:.3f} ether down"
    )


async def test_known_limit_an_honest_claimant_pays_for_the_trace_the_node_withheld(game: Game) -> None:
    """Known limit (was reported MEDIUM; docs/security-parameters.md "Known limits"). The node keeps entry
    0's trace (100 KB) to itself. The validator sampled for it retries, then claims it unavailable (the
    real `Availability`: seal, retry, claim); the node answers (any time in the answer window) and the
    validator follows the claim and withdraws its refund. The deposit pays the node's answer, whose size
    the node chose, and 10 % of the bond burns: the claimant loses ~0.04 ether, the node only its tip.
    Proposed: a claimant the seed picked gets its whole deposit back and the answer is charged to the
    node. Not done: the contract cannot tell a withheld block from the claimant's own store failing, and
    charging the node would let any picked validator make honest nodes pay to post their traces; the
    claimant, who chose to claim after its retries, pays, and no node earns from a claim."""
    g = game
    c, a = g.chain, g.actors
    me = a.validators[1]
    trace = encode_dag({"kind": "a long trace the node keeps to itself", "pad": os.urandom(100_000)})
    batch_id, receipts = await _commit(g, a.node, 2, "claimant-pays", withheld={0: trace})
    v = g.party(me, g.stores["partial"], "v")
    v.follower.catch_up()
    batch = v.db.batch(batch_id)
    assert batch is not None
    av = Availability(v.client, v.db, v.disputes, v.disputes.verifier, _no_settle, retries=1, backoff_s=0.01)
    set_next_base_fee(c.w3, 10 * GWEI)
    mine(c.w3)
    wallet0, node0 = _balance(c, me), _balance(c, a.node)
    av.note(batch, 0, "trace withheld")
    await asyncio.sleep(0.02)
    await av.step(v.client.timestamp())
    aid = v.client.entry_availability(batch_id, 0)
    assert aid, "claimed after the retries"
    node_tm = c.as_account(a.node).task_manager
    node_tm.answer_availability(aid, receipts[0], ReceiptTree(receipts).proof_at(0), trace)
    node_tm.withdraw()  # the node takes its answer's price
    for _ in range(2):
        await av.step(v.client.timestamp())
        await v.disputes.settle(v.client.timestamp())
    assert c.task_manager.claimable(me.address) == 0, "the refund came back to the wallet"
    lost, node_lost = wallet0 - _balance(c, me), node0 - _balance(c, a.node)
    # the limit, measured: the claimant pays the node's answer and the burned fee, the node its tip
    assert lost > ETHER // 100 > node_lost, (lost / ETHER, node_lost / ETHER)
    assert c.task_manager.claimable(a.node.address) == 0, "the node took its answer's price, no more"


async def test_defence_bonds_locked_in_a_friends_challenges_leave_a_vote_for_a_real_fraud(
    game: Game, caplog: pytest.LogCaptureFixture
) -> None:
    """Was an attack (MEDIUM; FIXED: a validator seals a 'not fraud' vote only with a bond and gas to spare
    after it, `Disputes._bond_to_spare`, `FRAUD_VOTE_RESERVE_BONDS`). Stakes: the honest challenger 2, the
    victim voter 2, the node's friend 2, another validator 4 (quorum 30 %: the challenger alone is 20 %,
    with the victim 40 %). The friend opens three challenges on the node's honest receipts; a block later
    the honest challenger challenges node2's real fraud. The victim (0.35 ether spare) runs
    `Disputes.vote_open`: it seals "not fraud" on the friend's three (bond each) and has no ether left for
    the real one; its bonds come back only when the friend's challenges resolve, after the real vote's
    sealing phase. The safe behaviour, asserted: the validator seals its vote on the real fraud. It was:
    the real challenge ended without a verdict: node2 was not slashed and the honest challenger's bond
    burned, while the friend's challenges were cleared and the node got back each bond less the voter
    pool."""
    g = game
    c, a = g.chain, g.actors
    honest, me, friend = a.validators
    c.as_account(a.outsider).service_manager.register_validator(4 * ETHER)
    increase_time(c.w3, 1)
    bait, bait_receipts = await _commit(g, a.node, 3, "bait")
    fraud, fraud_receipts = await _commit(g, a.node2, 1, "fraud")
    coalition0 = _balance(c, friend) + _balance(c, a.node)
    fp = g.party(friend, g.stores["full"], "friend")
    friend_ids = [_open(fp, bait, bait_receipts, i) for i in range(3)]
    hp = g.party(honest, g.stores["full"], "honest")
    real = _open(hp, fraud, fraud_receipts, 0)
    for cid in friend_ids:  # the other honest validators clear the friend's challenges too
        for voter in (honest, a.outsider):
            commit_vote(c, cid, voter, False)
    v = g.party(me, g.stores["full"], "v")
    _verdicts(v, {fraud})
    set_balance(c.w3, me.address, 35 * ETHER // 100)
    v.follower.catch_up()
    await v.disputes.vote_open(v.client.timestamp())  # sealing phase
    posted = [bool(c.task_manager.get_vote(i, me.address).weight) for i in friend_ids]
    assert posted.count(True) < len(friend_ids), posted  # a bond kept back from 'not fraud' votes
    assert "not sealing a 'not fraud' vote" in caplog.text
    await v.disputes.vote_open(v.client.timestamp())  # a later poll of the sealing phase: still nothing
    sealed_real = c.task_manager.get_vote(real, me.address).weight != 0
    slashes = c.service_manager.get_node(a.node2.address).slash_count
    advance_to(c.w3, c.task_manager.reveals_at(real))
    for cid in friend_ids:
        for voter in (honest, a.outsider):
            reveal_vote(c, cid, voter, False)
    await v.disputes.vote_open(v.client.timestamp())  # reveals
    advance_to(c.w3, max(c.task_manager.get_challenge(i).vote_deadline for i in [real, *friend_ids]) + 1)
    burned0 = int(c.task_manager.call("totalBurned"))
    await v.disputes.settle(v.client.timestamp())
    hp.follower.catch_up()
    await hp.disputes.settle(hp.client.timestamp())
    burned = int(c.task_manager.call("totalBurned")) - burned0
    c.as_account(a.node).task_manager.withdraw()
    coalition_cost = coalition0 - _balance(c, friend) - _balance(c, a.node)
    status = c.task_manager.get_challenge(real).status
    assert all(c.task_manager.get_challenge(i).status == ChallengeStatus.NOT_FRAUD for i in friend_ids)
    assert sealed_real, (
        f"no vote sealed on the real fraud: it ended {status.name}, node2 slashed "
        f"{c.service_manager.get_node(a.node2.address).slash_count - slashes} times, {burned / ETHER:.2f} "
        f"ether of the honest challenger's bond burned; the coalition paid {coalition_cost / ETHER:.3f} ether"
    )


async def test_defence_a_reveal_the_wallet_cannot_pay_no_longer_stops_settle_refilling_it(
    game: Game,
) -> None:
    """Was an attack (LOW; FIXED: a send-time "insufficient funds" is an `InsufficientFundsError`, a reveal
    deferred on it, and `settle` withdraws what is claimable first). The validator sealed a fraud vote
    (bond posted). An availability claim of its own was answered meanwhile: its ~0.1 ether refund waits in
    ``TaskManager.claimable``. Its wallet holds enough for a withdrawal's gas but not a reveal's. Each
    step (`vote_open`, then `settle`, as `Validator.step` runs them; `_steps` catches what escapes) fails
    at the reveal, before settle's withdrawal that would pay for it; the reveal phase ends unrevealed and
    the vote bond burns. The safe behaviour: a reveal the wallet cannot pay is deferred like a commit, and
    settle (the withdrawal) runs, so the next reveal try is paid."""
    g = game
    c, a = g.chain, g.actors
    challenger_acct, me = a.validators[0], a.validators[1]
    batch_id, receipts = await _commit(g, a.node, 2, "reveal")
    cid = _open(g.party(challenger_acct, g.stores["full"], "c"), batch_id, receipts, 0)
    v = g.party(me, g.stores["full"], "v")
    _verdicts(v, {batch_id})
    v.follower.catch_up()
    await v.disputes.vote_open(v.client.timestamp())
    assert c.task_manager.get_vote(cid, me.address).weight, "the vote is sealed, its bond posted"
    aid = v.client.challenge_availability(batch_id, 1)  # an earlier claim of its own, answered
    block = encode_dag({"kind": "trace reveal", "n": 1})
    c.as_account(a.node).task_manager.answer_availability(
        aid, receipts[1], ReceiptTree(receipts).proof_at(1), block
    )
    refund = c.task_manager.claimable(me.address)
    assert refund > 0
    advance_to(c.w3, c.task_manager.reveals_at(cid))
    [row] = [r for r in v.db.challenges() if r.challenge_id == cid]
    tm = c.task_manager.contract.functions
    cap = 2 * int(c.w3.eth.get_block("latest")["baseFeePerGas"]) + int(c.w3.eth.max_priority_fee)
    reveal_gas = gas_limit(tm.revealVote(cid, row.my_vote, row.salt).estimate_gas({"from": me.address}))
    withdraw_gas = gas_limit(tm.withdraw().estimate_gas({"from": me.address}))
    assert withdraw_gas < reveal_gas
    set_balance(c.w3, me.address, (withdraw_gas + reveal_gas) // 2 * cap)
    failures: list[str] = []
    deadline = c.task_manager.get_challenge(cid).vote_deadline
    while v.client.timestamp() < deadline - 1:  # the steps of the reveal phase
        now = v.client.timestamp()
        try:
            await v.disputes.vote_open(now)
            await v.disputes.settle(now)
        except Exception as exc:  # what `Validator._steps` does with it: logged, retried next step
            failures.append(type(exc).__name__)
        increase_time(c.w3, 2)
    revealed = c.task_manager.get_vote(cid, me.address).revealed
    assert revealed, (
        f"the sealed vote was never revealed (its bond burns): {len(failures)} steps failed at the reveal "
        f"({sorted(set(failures))}) before settle; {c.task_manager.claimable(me.address) / ETHER:.3f} ether "
        "of refunds stayed unwithdrawn"
    )


async def test_defence_an_unaffordable_availability_claim_defers_only_its_entry_and_refunds_come_back(
    game: Game, caplog: pytest.LogCaptureFixture
) -> None:
    """The node withholds two traces from the validator sampled for them; the wallet covers one
    claim. `Availability.step` opens the first, defers the second (logged: the account, its balance,
    "send it some ether first") and does not raise. The node answers; the next steps follow the
    answer, `settle` withdraws the refund, and the second entry is claimed with it."""
    g = game
    c, a = g.chain, g.actors
    me = a.validators[1]
    traces = {i: encode_dag({"kind": "withheld", "n": i}) for i in (0, 1)}
    batch_id, receipts = await _commit(g, a.node, 2, "defer", withheld=traces)
    v = g.party(me, g.stores["partial"], "v")
    v.follower.catch_up()
    batch = v.db.batch(batch_id)
    assert batch is not None
    av = Availability(v.client, v.db, v.disputes, v.disputes.verifier, _no_settle, retries=1, backoff_s=0.01)
    set_next_base_fee(c.w3, 10 * GWEI)
    mine(c.w3)
    worst = int(c.task_manager.call("AVAILABILITY_WORST_GAS"))
    one_claim = c.task_manager.challenge_bond() + worst * claim_fee_cap(c.w3)
    set_balance(c.w3, me.address, one_claim * 3 // 2)  # one claim and its gas, not two
    for i in (0, 1):
        av.note(batch, i, "trace withheld")
    await asyncio.sleep(0.02)
    await av.step(v.client.timestamp())  # no exception
    first = v.client.entry_availability(batch_id, 0)
    assert first and not v.client.entry_availability(batch_id, 1)
    assert "cannot pay for TaskManager.challengeAvailability" in caplog.text
    c.as_account(a.node).task_manager.answer_availability(
        first, receipts[0], ReceiptTree(receipts).proof_at(0), traces[0]
    )
    await av.step(v.client.timestamp())
    await v.disputes.settle(v.client.timestamp())
    assert c.task_manager.claimable(me.address) == 0, "the refund is back in the wallet"
    await asyncio.sleep(0.05)
    await av.step(v.client.timestamp())
    assert v.client.entry_availability(batch_id, 1), "the deferred entry is claimed with it"
