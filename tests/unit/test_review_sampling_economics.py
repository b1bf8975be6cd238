"""Adversarial review: WHICH receipts get verified, and whether cheating pays, from a rational
node's point of view (alone, or with a validator or a block builder of its own).

Scope: the seed and the sample (`TaskManager.commitBatch` / `batchSeed` / `isSampled` /
`SeedBeacon.seal` / `_seed` / `_picks`, the validator's `supernet.validator.sampler` and
`TaskManagerClient.batch_seed`), which leaf a challenge occupies (`leafChallenge`, keyed by batch
and leaf), the slash and its split (`_resolveFraud`, `ServiceManager.slash`), and where the fees a
commit settles go (`Payments.settle` / `withdrawEarnings`), at the documented parameters
(docs/security-parameters.md: q = 10 % per validator, SEED_DELAY_BLOCKS = 2, S = 1 ETH,
MIN_NODE_STAKE = 2 ETH, the verification share 38 %). Not repeated here: the validator's turns and
time budgets (test_review_validator_budgets.py, test_review_session_changes6/7/8.py), the vote
game (test_review_validator_game.py, test_review_sealed_votes.py, contracts/test/Review5/6.t.sol),
an ally squatting a leaf for the finder's reward (contracts/test/Adversary2.t.sol).

Real parts: a real Anvil, the real compiled contracts (deployed again with the documented sampling
parameters where the devnet's full sampling would hide the question), the SDK's bindings and
signatures, the validator's own sampler and chain client. The one stand-in is the builder of a
block: its candidate seed blocks are the real seed block's header with the fields a builder sets
changed (no test can win a real builder auction).

Found:

1. MEDIUM (was `test_known_limit_the_builder_of_the_seed_block_chooses_which_receipts_nobody_samples`,
   now `test_defence_the_builder_of_the_seed_block_cannot_choose_the_seed`): the
   seed is ``keccak256(blockhash(commitBlock + 2), batchId)``, and the hash of one block is chosen
   by whoever builds that block: any header field it sets (fee recipient, extra data, which
   transactions, in which order) gives another hash. A node that builds block ``B + 2`` itself
   (an L2 sequencer, a PoA signer, or on Ethereum a builder winning that one slot's MEV-Boost
   auction, since the node picks ``B`` by when it sends the commit) tries candidate blocks
   offline and publishes one whose seed samples none of its cheats for any validator. Here, 8
   cheats among 32 receipts, 3 validators at q = 10 % (0.9^24 = 8 % of seeds leave them all
   unsampled): a dozen candidate blocks on average, found in well under a second; on a GPU
   ~10^9 hashes/s hide k cheats from V validators while 0.9^-(kV) stays below that, e.g. 19
   cheats per batch from 10 validators. The docs (security-parameters.md, "Earlier limits") say
   the proposer "can bias it by withholding the block (cost: its block reward)": it does not
   bias a bit, it picks the sample outright, for the price of building one block, and the expected
   slash of every cheat it hides (p·S, 0.1 to 0.27 ETH each with one to three validators) is what
   it saves.
   FIXED by design (docs/protocol.md, "Seeds"): the seed is ``keccak256(abi.encode(mix,
   batchId))`` with ``mix`` the seed block's RANDAO mix (``mixHash``, its ``prevrandao``), which a
   builder does not set; a validator proves it to the SeedBeacon contract with the block's RLP
   header (checked against ``blockhash``). What remains is a proposer withholding its block (one
   bit, at the cost of its block reward), and chains whose prevrandao is constant, which deploy
   the beacon on block hashes (``SOURCE = Blockhash``) and keep this limit.
   Fix by design: a sample the node cannot compute at all until a validator shows it, e.g. each
   validator's sample from a VRF of its own key over (batchId, root) (a BLS signature checked at
   challenge time with the EIP-2537 precompiles): no builder, node or copier can grind or even
   read it. Short of that, a seed mixing randomness no builder sets (``block.prevrandao``, which
   a proposer can only withhold) from several later blocks, so grinding needs several
   consecutive blocks.
2. MEDIUM (`test_known_limit_a_node_takes_more_in_fees_in_one_window_than_fraud_verdicts_can_slash`):
   the fees a commit settles are credited to the node's earnings at once and can be withdrawn at
   once, even while the node is frozen by open fraud challenges on the very batch that settled
   them; fraud verdicts take at most the node's stake (``ServiceManager.slash`` caps at stake +
   unbonding), after which a proven fraud slashes 0 (no challenger reward, no voter pool, no
   refund). docs/security-parameters.md ("Whole batches") requires that "the stake must exceed
   what a node can gain in one challenge window" and argues it from an honest CPU node's
   throughput (~0.006 ETH a day); but a node that fabricates its answers does no model work, so
   its throughput is bounded only by demand, and nothing on chain ties the fees it settles in a
   window to its stake. Here a node with the minimum 2 ETH fabricates 24 answers at 0.5 ETH,
   settles 12 ETH with its commit, withdraws 7.44 ETH (the 62 % that is not escrow) while three
   fraud challenges on that batch are open, and the three verdicts slash 1 + 1 + 0 ETH: it leaves
   5.44 ETH ahead. Per receipt the inequality p·(R+S) > C holds; per window it does not.
   FIXED (docs/security-parameters.md, "Held earnings";
   `test_defence_fees_settled_in_a_window_stay_where_fraud_verdicts_reach_them`): every redeemed
   fee is held in Payments for its `holdPeriod` (until the last verdict on what it paid), and a slash
   past the stake takes the held fees; here the withdrawal is refused and the third verdict slashes
   its full 1 ETH from them.
   Fix by design (as suggested): earnings settled by a commit stay held (and slashable) until
   that commit's challenge window closes and no challenge on it is open (one more word per node:
   the amount and its release time, like the stake lock), or cap the fees a node may settle per
   window at a fraction of its stake.
3. MEDIUM, a limit of the design with a price
   (`test_known_limit_withholding_a_sampled_trace_costs_its_checker_and_not_the_node`): from the
   seed block on, everyone (the node included) computes every validator's sample, so the node
   knows which validator will ask for which trace. Withholding exactly those traces forces each
   checker onto the availability path: it claims, the node answers, the answer is repaid to the
   node at the base fee out of the claim's deposit (the node loses its tip, ~0.0005 ETH here),
   and the checker loses the 10 % fee (0.01 ETH) plus its claim's gas, ~20x the node's loss and
   ~7 x 10^4 times what the verification escrow pays per check at the documented fee. Against a
   node that does this, checking is a loss at any sampling rate, and a validator that stops
   claiming leaves the withheld entries unverifiable, which is where the node then cheats. The
   docs account for the fee as what stops griefing claimants, not as a tax a node can put on its
   checkers. Fix by design: traces posted where availability is the chain's (EIP-4844 blobs with
   the commit), or the fee waived for a claimant the seed sampled for the entry (griefing bounded
   by q per entry and validator) with the node's own bond paying for the posting it forced.

Checked and holding:

- nobody (the node included) can read a batch's sample in its commit block or the block after:
  ``batchSeed`` reverts ``SeedNotReady`` and the validator's client answers "not yet"; once the
  seed block exists the seed is fixed (sealing stores the same value), and committing the same
  receipts again is another batch with its own, independent sample, while the first stays in its
  slot (``SlotInUse``) and stays checkable: re-committing only adds samples, it never replaces one
  (`test_defence_the_sample_is_unreadable_at_commit_and_a_recommit_only_adds_samples`).
- a cheat committed in two batches is challengeable and slashed in each (``leafChallenge`` is keyed
  by batch and leaf), so a copy under challenge never shields the other, sampled copy; within one
  batch a leaf repeated at two indexes is one receipt, slashed once, and a second challenge on it
  is refused while the first is open or after its fraud verdict
  (`test_defence_a_cheat_committed_twice_is_slashed_in_each_batch`).
- the order, size and composition of a batch do not move any index's chance of being sampled
  (every index draws ``keccak256(seed, validator, index)`` on its own); splitting and flooding
  batches is the turns reviews' subject.
- a validator colluding with the node learns the sample no earlier than anyone (the seed is public
  from its block on, and every validator's sample is computable from it); it can skip its own
  sample (the detection bound is the independent validators, as documented), and acquitting is
  the cartel limit (docs/validator.md, "The vote game"); taking the leaf first only burns the
  finder's reward (Adversary2.t.sol). Not re-tested here.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
import rlp
from chain_fixtures import (
    ETHER,
    MODEL_ID,
    Actors,
    burn_address_exists,
    cast_votes,
    make_receipts,
    stake_network,
)
from eth_abi import encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from supernet.sdk.chain import (
    Contracts,
    ProtocolParams,
    Receipt,
    ReceiptTree,
    TaskRequest,
    Voucher,
    hash_task_request,
    input_hash,
    output_hash,
    sign_voucher,
)
from supernet.sdk.chain.anvil import increase_time, mine
from supernet.sdk.chain.beacon import header_rlp
from supernet.sdk.chain.bindings import TxResult
from supernet.sdk.chain.contract_errors import (
    BlockAlreadySealed,
    EarningsHeld,
    LeafAlreadyChallenged,
    NotTheHeader,
    SeedNotReady,
    SlotInUse,
)
from supernet.sdk.chain.payments import pack_vouchers
from supernet.sdk.chain.sampling import batch_seed
from supernet.sdk.chain.tasks import ChallengeStatus
from supernet.validator.chain import TaskManagerClient
from supernet.validator.sampler import sample

pytestmark = pytest.mark.anvil

SAMPLE_RATE_PPM = 100_000
"""The documented default: q = 10 % per validator and receipt."""

SEED_DELAY_BLOCKS = 2
"""The documented default: the seed comes from the block two after the commit."""


def _sampling_deployment(chain: Contracts, actors: Actors) -> Contracts:
    """The contracts again, with the devnet's short windows but the documented sampling (the
    devnet samples every receipt, where no sample can be chosen), staked like ``network``."""
    params = dataclasses.replace(
        chain.params, sample_rate_ppm=SAMPLE_RATE_PPM, seed_delay_blocks=SEED_DELAY_BLOCKS
    )
    return stake_network(Contracts.deploy(chain.w3, actors.deployer, params), actors)


def _seed_of(block_hash: bytes, batch_id: int) -> bytes:
    """``keccak256(abi.encode(blockhash(seedBlock), batchId))`` (TaskManager._seed)."""
    return keccak(encode(["bytes32", "uint256"], [block_hash, batch_id]))


def _sampled_cheats(seed: bytes, validators: list[str], count: int, cheats: set[int]) -> set[int]:
    """The cheats that some validator's own sample (the validator's sampler) takes."""
    return {i for v in validators for i in sample(seed, v, count, SAMPLE_RATE_PPM) if i in cheats}


def test_defence_the_builder_of_the_seed_block_cannot_choose_the_seed(
    chain: Contracts, actors: Actors
) -> None:
    """Was MEDIUM, a known limit (``test_known_limit_the_builder_of_the_seed_block_chooses_which_
    receipts_nobody_samples``). FIXED by design: the seed no longer comes from the seed block's
    hash but from its RANDAO mix, proven to the SeedBeacon by the block's header.

    The attack: the node puts its cheats where it likes (entries 0..7 of 32), commits at block
    ``B`` and builds block ``B + 2``, trying candidate blocks that differ in header fields it sets
    freely (the fee recipient, extra data, which transactions) until one's seed samples no cheat
    for any validator: with the seed ``keccak256(blockhash(B + 2), batchId)``, about a dozen
    candidates did (8 cheats, 3 validators at q = 10 %). Now every candidate's value is the
    block's ``mixHash``, which those fields do not touch: on Ethereum it is the proposer's RANDAO
    reveal mixed in (a builder cannot set it; a proposer can only withhold its block), so all the
    candidates give the node one and the same seed.

    Anvil draws a fresh mix for every block it mines, a re-mined one included, which is not the
    chain being modelled; so the candidates are made the way a builder makes them, from the real
    seed block: its header with another fee recipient and extra data. Asserted: each candidate
    moves the block hash (the old seed's input) and not the value the beacon takes (its own
    ``mixHashOf``, the code ``seal`` runs); the beacon refuses to seal any candidate but the
    block's real header; the validator's seal of the real one makes the seed ``keccak256(mix,
    batchId)``, the same on chain and in the validators' sampler."""
    c = _sampling_deployment(chain, actors)
    node = c.as_account(actors.node).task_manager
    receipts = make_receipts(c, actors.users, actors.node.address, 32)
    tree = ReceiptTree.from_receipts(receipts)
    batch = node.commit_batch(tree.root, len(tree), "bafy-batch").value
    seed_block = batch.commit_block + SEED_DELAY_BLOCKS
    mine(c.w3, seed_block + 1 - c.w3.eth.block_number)
    block = c.w3.eth.get_block(seed_block)
    real = header_rlp(block)
    mix = bytes(block["mixHash"])
    beacon = c.as_account(actors.outsider).task_manager.seed_beacon
    fields = rlp.decode(real)
    for attempt in range(12):  # the builder's candidates
        candidate = list(fields)
        candidate[2] = hashlib.sha256(b"fee recipient %d" % attempt).digest()[:20]
        candidate[12] = b"extra data %d" % attempt
        encoded = rlp.encode(candidate)
        assert keccak(encoded) != bytes(block["hash"]), "the fields move the hash the old seed was"
        assert bytes(beacon.call("mixHashOf", encoded)) == mix, "... and not the beacon's value"
        with pytest.raises(NotTheHeader):
            beacon.transact("seal", seed_block, encoded)

    checker = TaskManagerClient.of(c)
    seed = checker.batch_seed(batch.batch_id)  # the validator samples by the real header
    assert beacon.seal(seed_block).value == mix  # a challenger's seal proves that header
    assert seed == batch_seed(mix, batch.batch_id) == c.task_manager.batch_seed(batch)
    assert seed != _seed_of(bytes(block["hash"]), batch.batch_id)
    for v in actors.validators:
        picked = sample(seed, v.address, len(tree), SAMPLE_RATE_PPM)
        assert picked == [i for i in range(len(tree)) if checker.is_sampled(batch.batch_id, v.address, i)]


def _fabricated(
    c: Contracts, users: tuple[LocalAccount, ...], node: str, per_user: int, fee: int
) -> list[Receipt]:
    """``per_user`` receipts per user, each a paid task at ``fee`` whose answer the node made up
    (no model work: nothing bounds how many a node can serve but its users' demand)."""
    out = []
    for j in range(per_user):
        for u in users:
            req = TaskRequest(
                user=u.address,
                node=node,
                model_id=MODEL_ID,
                agent_hash=bytes(32),
                input_hash=input_hash(f"question {j} of {u.address}"),
                max_fee=fee,
                nonce=j,
                deadline=2**40,
            )
            out.append(
                Receipt(
                    request_hash=hash_task_request(req, c.domain),
                    user=u.address,
                    model_id=MODEL_ID,
                    input_hash=req.input_hash,
                    output_hash=output_hash(f"made-up answer {j}"),
                    trace_hash=hashlib.sha256(f"made-up trace {j} {u.address}".encode()).digest(),
                    fee=fee,
                )
            )
    return out


def test_defence_fees_settled_in_a_window_stay_where_fraud_verdicts_reach_them(
    network: Contracts, actors: Actors
) -> None:
    """MEDIUM, FIXED (it was `test_known_limit_a_node_takes_more_in_fees_in_one_window_than_fraud_
    verdicts_can_slash`). Who gained: a node that fabricates answers for one window and leaves; who loses: its
    users (paid for made-up answers, and refunded nothing past the stake) and the validators who
    prove the later frauds (no reward: the slash is 0).

    A node at the minimum stake (2 ETH) fabricates 24 answers at 0.5 ETH (three users, 4 ETH of
    vouchers each), commits them and settles the 12 ETH in the same transaction: 7.44 ETH to its
    earnings, 4.56 ETH to its escrow. Three validators challenge three of the receipts (the
    challenge is the challenger's fraud vote, and each is above the quorum). While all three are
    open and the node is frozen, it withdraws its earnings. The verdicts then slash 1, 1 and 0 ETH:
    the stake is gone after two.

    Safe behaviour asserted: a node whose receipts are proven fraudulent does not come out ahead,
    i.e. what it withdrew of the fees settled with that batch is at most what the verdicts took
    (docs: the stake must exceed what a node can gain in one challenge window). Now the fees are
    held (the withdrawal is refused) and every verdict slashes its full amount, the stake first,
    then the held fees; what is left is withdrawable only after the hold.

    Fix by design: earnings settled by a commit held, and slashable ahead of the stake, until that
    commit's window closes with no challenge open on it; or fees settled per window capped by the
    stake.
    """
    c = network
    node_acct = actors.node
    node = c.as_account(node_acct)
    fee, per_user = ETHER // 2, 8
    for u in actors.users:  # the network's 1 ETH channel each, topped up to 4 ETH
        c.as_account(u).payments.deposit(node_acct.address, 3 * ETHER)
    receipts = _fabricated(c, actors.users, node_acct.address, per_user, fee)
    vouchers = [Voucher(u.address, node_acct.address, per_user * fee) for u in actors.users]
    sigs = [sign_voucher(v, c.domain, u) for v, u in zip(vouchers, actors.users, strict=True)]
    tree = ReceiptTree.from_receipts(receipts)
    earnings0, escrow0 = node.payments.node_account(node_acct.address)
    batch = node.task_manager.commit_batch(
        tree.root, len(tree), "bafy-made-up", pack_vouchers(vouchers, sigs)
    ).value
    earnings, escrow = node.payments.node_account(node_acct.address)
    settled = (earnings - earnings0) + (escrow - escrow0)
    assert settled == len(receipts) * fee == 12 * ETHER

    mine(c.w3, 2)  # past the seed block: the challengers are sampled (the devnet samples all)
    challenges = []
    for i, v in enumerate(actors.validators):
        tm = c.as_account(v).task_manager
        challenges.append(tm.challenge(batch, i, receipts[i], tree.proof_at(i), "bafy-evidence").value)
    frozen = c.service_manager.get_node(node_acct.address).frozen_count
    assert frozen == len(challenges)

    held, free_at = node.payments.held_earnings(node_acct.address)
    assert held == earnings - earnings0
    with pytest.raises(EarningsHeld):  # the fees stay where a verdict can reach them
        node.payments.withdraw_earnings()

    increase_time(c.w3, c.params.vote_window + 1)  # no other votes: each challenger's is a quorum
    stake0 = c.service_manager.get_node(node_acct.address)
    slashed = []
    for cid in challenges:
        c.as_account(actors.outsider).task_manager.resolve(cid)
        ch = c.task_manager.get_challenge(cid)
        assert ch.status == ChallengeStatus.FRAUD
        slashed.append(ch.slashed)
    lost = sum(slashed)
    assert stake0.stake + stake0.unbonding < lost == len(challenges) * c.params.slash_amount, (
        "past the stake, the third verdict takes the held fees"
    )
    seized = lost - stake0.stake - stake0.unbonding
    assert node.payments.held_earnings(node_acct.address)[0] == held - seized
    increase_time(c.w3, free_at - int(c.w3.eth.get_block("latest")["timestamp"]))
    wallet0 = c.w3.eth.get_balance(node_acct.address)
    tx = node.payments.withdraw_earnings()  # what no verdict took, after the hold
    gas = int(tx.receipt["gasUsed"]) * int(tx.receipt["effectiveGasPrice"])
    assert c.w3.eth.get_balance(node_acct.address) - wallet0 + gas == earnings - seized


def test_defence_the_sample_is_unreadable_at_commit_and_a_recommit_only_adds_samples(
    chain: Contracts, actors: Actors
) -> None:
    """A node that wants to cheat where nobody looks needs the sample before its receipts are
    fixed, or a way to replace a batch once its sample is known.

    Neither exists: in the commit block and the next, ``batchSeed`` reverts ``SeedNotReady`` (the
    validator's client: None) and ``isSampled`` reverts; from the seed block on the seed is fixed,
    and sealing it stores the same value. The same receipts committed again are a second batch with
    its own seed, so their sample is drawn again, independently; the first batch cannot be
    overwritten in its slot (``SlotInUse`` until ``BATCH_RETENTION``) and stays checkable, so the
    node only adds samples (each index drawn per batch), it never trades one away.
    """
    c = _sampling_deployment(chain, actors)
    node = c.as_account(actors.node).task_manager
    checker = TaskManagerClient.of(c)
    receipts = make_receipts(c, actors.users, actors.node.address, 32)
    tree = ReceiptTree.from_receipts(receipts)
    first = node.commit_batch(tree.root, len(tree), "bafy-first").value
    for _ in range(SEED_DELAY_BLOCKS):  # the commit block, then the next: nothing to read
        assert checker.batch_seed(first.batch_id) is None
        with pytest.raises(SeedNotReady):
            c.task_manager.is_sampled(first, actors.validators[0].address, 0)
        mine(c.w3)
    assert c.w3.eth.block_number == first.commit_block + SEED_DELAY_BLOCKS
    mine(c.w3)
    seed = checker.batch_seed(first.batch_id)  # the validator samples by the seed block's header
    mix = bytes(c.w3.eth.get_block(first.commit_block + SEED_DELAY_BLOCKS)["mixHash"])
    assert seed == batch_seed(mix, first.batch_id)
    assert c.as_account(actors.validators[1]).task_manager.seal_seed_block(first)
    assert c.task_manager.batch_seed(first) == seed
    with pytest.raises(BlockAlreadySealed):  # nobody seals it again, with this or another value
        c.as_account(actors.outsider).task_manager.seed_beacon.seal(first.commit_block + SEED_DELAY_BLOCKS)

    with pytest.raises(SlotInUse):  # the batch whose sample it dislikes cannot be replaced
        node.commit_batch(tree.root, len(tree), "bafy-again", slot=first.slot)
    second = node.commit_batch(tree.root, len(tree), "bafy-again").value
    mine(c.w3, SEED_DELAY_BLOCKS + 1)
    assert second.batch_id != first.batch_id and c.task_manager.is_committed(first)
    seed2 = checker.batch_seed(second.batch_id)
    assert seed2 is not None and seed2 != seed
    assert c.as_account(actors.validators[1]).task_manager.seal_seed_block(second)  # for isSampled
    for v in actors.validators:
        for batch, s in ((first, seed), (second, seed2)):
            picked = sample(s, v.address, len(tree), SAMPLE_RATE_PPM)
            on_chain = [i for i in range(len(tree)) if c.task_manager.is_sampled(batch, v.address, i)]
            assert on_chain == picked


def test_defence_a_cheat_committed_twice_is_slashed_in_each_batch(network: Contracts, actors: Actors) -> None:
    """Can a node make a sampled receipt drop out of checking by committing it twice, so that the
    copy an ally challenges first (and keeps open) blocks the challenge of the copy an honest
    validator was sampled for?

    No: a challenge occupies ``keccak256(batchId, leaf)``, so the copy in another batch is
    challenged while the first is open and each fraud verdict slashes. Inside one batch the same
    leaf at two indexes is one receipt (one task, one fee): a second challenge on it is refused
    while the first is open (the honest finder votes on the open one instead) and after its fraud
    verdict, which slashed once.
    """
    c = network
    node = c.as_account(actors.node).task_manager
    receipts = make_receipts(c, actors.users, actors.node.address, 4)
    cheat = receipts[1]
    doubled = [*receipts, cheat]  # the cheat at index 1 and again at index 4
    tree_a, tree_b = ReceiptTree.from_receipts(doubled), ReceiptTree.from_receipts([cheat, receipts[0]])
    batch_a = node.commit_batch(tree_a.root, len(tree_a), "bafy-a").value
    batch_b = node.commit_batch(tree_b.root, len(tree_b), "bafy-b").value
    mine(c.w3, 2)
    ally, honest, third = (c.as_account(v).task_manager for v in actors.validators)
    in_a = ally.challenge(batch_a, 1, cheat, tree_a.proof_at(1), "bafy-ally").value
    with pytest.raises(LeafAlreadyChallenged):  # the same receipt again in the same batch
        honest.challenge(batch_a, 4, cheat, tree_a.proof_at(4), "bafy-honest")
    in_b = honest.challenge(batch_b, 0, cheat, tree_b.proof_at(0), "bafy-honest").value
    cast_votes(c, in_a, [(actors.validators[1], True), (actors.validators[2], True)])
    increase_time(c.w3, c.params.vote_window)
    stake0 = c.service_manager.get_node(actors.node.address).stake
    for cid in (in_a, in_b):
        third.resolve(cid)
        assert c.task_manager.get_challenge(cid).status == ChallengeStatus.FRAUD
    assert stake0 - c.service_manager.get_node(actors.node.address).stake == 2 * c.params.slash_amount
    with pytest.raises(LeafAlreadyChallenged):  # proven once in batch A: never again there
        third.challenge(batch_a, 4, cheat, tree_a.proof_at(4), "bafy-third")


def _gas_paid(tx: TxResult) -> int:
    return int(tx.receipt["gasUsed"]) * int(tx.receipt["effectiveGasPrice"])


def test_known_limit_withholding_a_sampled_trace_costs_its_checker_and_not_the_node(
    network: Contracts, actors: Actors
) -> None:
    """MEDIUM (a limit of the design, with a price). Who gains: a node that wants its checks to
    cost more than checking pays, so that rational validators stop claiming its data.

    Once the seed is out the node knows exactly which validator checks which entry. It withholds
    the sampled traces (from those validators only, if it likes); each checker retries, then must
    claim the entry on chain (`Availability`), and the node answers at leisure. The answer is
    repaid to the node at the base fee out of the claimant's deposit (here the node's net is its
    tip only), while the claimant loses the 10 % fee (0.01 ETH) plus its claim's gas: ~7 x 10^4
    times what the verification escrow pays per check at the documented fee (rho (1 - s) F, ~1.5e-7
    ETH at F = 5.12e-7 ETH). So against such a node checking is a loss at any sampling rate; a
    validator that stops claiming leaves the withheld entries unverifiable, where the node's cheats
    go. The chain cannot tell a node withholding on purpose from a claimant lying about an outage
    (the fisherman's dilemma), which is why the claimant pays the fee (it stops griefing honest
    nodes: docs/protocol.md, "Availability").

    Fix by design (any of): traces published where availability is the chain's (EIP-4844 blobs
    with the commit: no claim needed in the window); or the fee waived for a claimant the seed
    sampled for that entry whose claim was answered (griefing then bounded by q per entry per
    validator, and the node pays for the posting it forced with a bond of its own instead).
    """
    c = network
    burn_address_exists(c)
    node_acct, checker_acct = actors.node, actors.validators[0]
    trace = b"\xa1" + bytes(range(256)) * 40  # the withheld trace (10 KB; its bytes are the node's)
    receipts = make_receipts(c, actors.users, node_acct.address, 4)
    receipts[2] = dataclasses.replace(receipts[2], trace_hash=hashlib.sha256(trace).digest())
    tree = ReceiptTree.from_receipts(receipts)
    batch = c.as_account(node_acct).task_manager.commit_batch(tree.root, len(tree), "bafy-withheld").value
    mine(c.w3, 2)
    checker = c.as_account(checker_acct).task_manager
    assert checker.seal_seed_block(batch)  # what the validator does before it reads its sample
    assert checker.is_sampled(batch, checker_acct.address, 2)

    checker_wallet0, node_wallet0 = (c.w3.eth.get_balance(a.address) for a in (checker_acct, node_acct))
    claim = checker.challenge_availability(batch, 2)
    answer = c.as_account(node_acct).task_manager.answer_availability(
        claim.value, receipts[2], tree.proof_at(2), trace
    )
    split = answer.value
    for who in (checker_acct, node_acct):
        c.as_account(who).task_manager.withdraw()
    checker_net = c.w3.eth.get_balance(checker_acct.address) - checker_wallet0
    node_net = c.w3.eth.get_balance(node_acct.address) - node_wallet0

    fee_burned = c.params.challenge_bond * 1_000 // 10_000
    assert split["burned"] == fee_burned == ETHER // 100
    assert checker_net <= -(fee_burned + _gas_paid(claim)), "the checker pays the fee and its claim"
    tips = int(answer.receipt["gasUsed"]) * (
        int(answer.receipt["effectiveGasPrice"])
        - int(c.w3.eth.get_block(answer.receipt["blockNumber"])["baseFeePerGas"])
    )
    assert node_net >= -(tips + 2 * _gas_paid(answer) // 10), "the node is repaid its answer (all but tips)"

    docs = ProtocolParams()  # the documented defaults: what one check is paid in an honest network
    s, rho, fee = docs.verification_share_bps / 10_000, 0.472, 512 * 10**9
    paid_per_check = rho * (1 - s) * fee  # = s·h·F / N*
    assert -checker_net > 10_000 * paid_per_check, (checker_net, paid_per_check)
