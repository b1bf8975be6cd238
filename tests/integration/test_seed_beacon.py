"""The SeedBeacon on a real Anvil: Anvil's own headers rebuilt and proven, what a validator
samples by before anyone seals, and what a node (or its RPC) cannot make the beacon take.

The contract's rules (sources, expiry, malformed headers) are in contracts/test/SeedBeacon.t.sol;
the grinding attack this closes is `test_defence_the_builder_of_the_seed_block_cannot_choose_the_seed`
(tests/unit/test_review_sampling_economics.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from chain_fixtures import Actors, make_receipts, stake_network
from eth_utils import keccak
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import mine
from supernet.sdk.chain.beacon import HeaderError, Source, header_rlp
from supernet.sdk.chain.contract_errors import BlockNotMined, NotTheHeader, SeedNotReady
from supernet.sdk.chain.sampling import batch_seed
from supernet.validator.availability import Availability
from supernet.validator.chain import BatchCommitted, TaskManagerClient
from supernet.validator.db import Database
from supernet.validator.follower import Follower
from supernet.validator.sampler import sample
from supernet.validator.service import Validator

from tests.unit import test_review_validator_game as vgame
from tests.unit.test_review_session_changes6 import Availability as FakeAvailability
from tests.unit.test_review_session_changes6 import Disputes, Groups, Turns
from tests.unit.test_review_validator_game import Game, _commit

game = vgame.game  # fixture: real Anvil, contracts and two embedded stores

pytestmark = pytest.mark.anvil


def test_every_header_anvil_mines_is_rebuilt_to_its_hash(network: Contracts, actors: Actors) -> None:
    """Blocks with and without transactions, contract calls and plain transfers (the prefix of
    fork fields a header holds is the chain's, and Anvil's are Prague's: up to requestsHash)."""
    w3 = network.w3
    c = network.as_account(actors.node)
    receipts = make_receipts(network, actors.users, actors.node.address, 3)
    c.task_manager.commit_batch(ReceiptTree.from_receipts(receipts).root, 3, "bafy-headers")
    mine(w3, 2)
    head = int(w3.eth.block_number)
    for number in range(max(1, head - 12), head + 1):
        block = w3.eth.get_block(number)
        assert keccak(header_rlp(block)) == bytes(block["hash"]), number
    assert network.task_manager.seed_beacon.source is Source.PREVRANDAO  # the devnet's


def test_a_header_that_is_not_the_blocks_is_refused_before_and_on_chain(
    network: Contracts, actors: Actors
) -> None:
    """An RPC (or a node behind one) that hands a validator a header with another mix: the SDK
    refuses to rebuild it (its hash is not the block's), and the beacon refuses it too."""
    w3 = network.w3
    mine(w3, 2)
    number = int(w3.eth.block_number) - 1
    block = dict(w3.eth.get_block(number))
    block["mixHash"] = b"\x11" * 32  # the mix a node would like
    with pytest.raises(HeaderError, match="does not hash"):
        header_rlp(block)
    beacon = network.as_account(actors.outsider).task_manager.seed_beacon
    real = header_rlp(w3.eth.get_block(number))
    forged = real.replace(bytes(w3.eth.get_block(number)["mixHash"]), b"\x11" * 32)
    with pytest.raises(NotTheHeader):
        beacon.transact("seal", number, forged)
    with pytest.raises(BlockNotMined):
        beacon.transact("seal", number + 5, real)
    assert beacon.randomness(number) == (bytes(32), False), "nothing stored"


def test_a_validator_samples_by_the_header_before_anyone_seals_and_the_seal_agrees(
    network: Contracts, actors: Actors
) -> None:
    """Sampling costs a validator no transaction: before any seal its client computes the seed
    from the seed block's header, and the contract's seed after the seal (made by a challenger)
    is the same one."""
    node = network.as_account(actors.node).task_manager
    receipts = make_receipts(network, actors.users, actors.node.address, 4)
    batch = node.commit_batch(ReceiptTree.from_receipts(receipts).root, 4, "bafy-sample").value
    client = TaskManagerClient(network.w3, network.deployment.address("TaskManager"), actors.validators[0])
    assert client.batch_seed(batch.batch_id) is None, "the seed block is not mined yet"
    mine(network.w3, 2)
    nonce = network.w3.eth.get_transaction_count(actors.validators[0].address)
    seed = client.batch_seed(batch.batch_id)
    assert network.w3.eth.get_transaction_count(actors.validators[0].address) == nonce, "no transaction"
    with pytest.raises(SeedNotReady):  # on chain: not sealed yet
        network.task_manager.batch_seed(batch)
    mix = bytes(network.w3.eth.get_block(network.task_manager.seed_block(batch))["mixHash"])
    assert seed == batch_seed(mix, batch.batch_id)
    assert network.as_account(actors.validators[1]).task_manager.seal_seed_block(batch)
    assert network.task_manager.batch_seed(batch) == seed == client.batch_seed(batch.batch_id)


async def test_a_validator_samples_again_once_a_reorg_replaces_the_seed_block(
    chain: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A validator samples by the seed block's header as soon as it is mined, and a batch it
    checks over several turns keeps its sample (`TurnOrder.samples`). A reorg that replaces the
    seed block (the commit staying) gives the batch another seed, the one the contract will hold.
    It was: the first sample was kept until the batch was done, so a node able to replace that
    block (its proposer, or a deeper reorg) had the validator check entries the contract does not
    pick it for, and skip those it does. Now the sample is kept with its seed and drawn again when
    the seed differs."""
    # a sample that can differ, and a block between the commit and the seed block (Anvil draws a
    # block's mix when it mines the block before: a reorg from there gives the seed block a new one)
    params = dataclasses.replace(chain.params, sample_rate_ppm=100_000, seed_delay_blocks=2)
    c = stake_network(Contracts.deploy(chain.w3, actors.deployer, params), actors)
    w3, count, me, rate = c.w3, 64, actors.validators[0].address, params.sample_rate_ppm
    receipts = make_receipts(c, actors.users, actors.node.address, count)
    tree = ReceiptTree.from_receipts(receipts)
    batch = c.as_account(actors.node).task_manager.commit_batch(tree.root, count, "bafy-reorged").value
    mine(w3, 3)
    client = TaskManagerClient(w3, c.deployment.address("TaskManager"), actors.validators[0])
    v = _SamplingValidator.on(client, tmp_path, me)
    v.commit(batch.batch_id, actors.node.address, count)
    row = v.db.batch(batch.batch_id)
    assert row is not None

    def opened_sample() -> list[int]:
        return [d["sampled"] for k, d in v.events if k == "batch"][-1]

    await v._open_batch(row)
    before = client.batch_seed(batch.batch_id)
    assert before and opened_sample() == sample(before, me, count, rate)
    await v._open_batch(row)  # a second turn, same seed: the kept sample, no second draw
    assert opened_sample() == sample(before, me, count, rate)

    number = c.task_manager.seed_block(batch)
    for _ in range(8):  # replace the seed block until its new mix picks another sample
        stale = header_rlp(w3.eth.get_block(number))
        depth = int(w3.eth.block_number) - number + 2  # from the block after the commit
        w3.provider.make_request("anvil_reorg", [depth, []])  # type: ignore[arg-type]
        assert header_rlp(w3.eth.get_block(number)) != stale, "the seed block was replaced"
        after = client.batch_seed(batch.batch_id)
        assert after
        if sample(after, me, count, rate) != sample(before, me, count, rate):
            break
    else:
        pytest.fail("eight new seed blocks all picked the same sample")
    assert int(w3.eth.get_block(batch.commit_block)["number"]) == batch.commit_block, "the commit stays"
    await v._open_batch(row)
    assert opened_sample() == sample(after, me, count, rate)
    assert c.as_account(actors.validators[1]).task_manager.seal_seed_block(batch)
    assert c.task_manager.batch_seed(batch) == after, "the seed the contract holds"
    picked = [i for i in range(count) if c.task_manager.is_sampled(batch, me, i)]
    assert opened_sample() == picked


async def test_a_batch_finished_before_a_reorg_replaced_its_seed_block_is_sampled_again(
    chain: Contracts, actors: Actors, tmp_path: Path
) -> None:
    """A batch this validator finished (its sample checked, or nothing sampled) whose seed block a
    reorg then replaces, the commit staying: it was left finished, so the entries the new seed
    picks this validator for went unchecked (review 19, read). Now the real `Follower`, on finding
    the fork, puts such a batch back to pending (`Database.undo_after`'s ``seed_delay``), and the
    next turn samples it by the new seed block, the sample the contract holds it to."""
    params = dataclasses.replace(chain.params, sample_rate_ppm=100_000, seed_delay_blocks=2)
    c = stake_network(Contracts.deploy(chain.w3, actors.deployer, params), actors)
    w3, count, me, rate = c.w3, 64, actors.validators[0].address, params.sample_rate_ppm
    receipts = make_receipts(c, actors.users, actors.node.address, count)
    tree = ReceiptTree.from_receipts(receipts)
    batch = c.as_account(actors.node).task_manager.commit_batch(tree.root, count, "bafy-finished").value
    mine(w3, 4)  # the follower then keeps the commit's block as a checkpoint: the fork is found there
    client = TaskManagerClient(w3, c.deployment.address("TaskManager"), actors.validators[0])
    v = _SamplingValidator.on(client, tmp_path, me)
    follower = Follower(client, v.db, start_block=batch.commit_block)
    while follower.step():
        pass
    row = v.db.batch(batch.batch_id)
    assert row is not None and row.status == "pending" and row.commit_block == batch.commit_block
    await v._open_batch(row)
    before = client.batch_seed(batch.batch_id)
    assert before
    assert [d["sampled"] for k, d in v.events if k == "batch"][-1] == sample(before, me, count, rate)
    v.db.finish_batch(batch.batch_id)  # its sample checked: the validator is done with it
    assert [b.batch_id for b in v.db.pending_batches()] == []

    number = c.task_manager.seed_block(batch)
    for _ in range(8):  # replace the seed block until its new mix picks another sample
        depth = int(w3.eth.block_number) - number + 2  # from the block after the commit
        w3.provider.make_request("anvil_reorg", [depth, []])  # type: ignore[arg-type]
        after = client.batch_seed(batch.batch_id)
        if after and sample(after, me, count, rate) != sample(before, me, count, rate):
            break
    else:
        pytest.fail("eight new seed blocks all picked the same sample")
    undone: list[list[int]] = []
    follower.on_undo = undone.append
    while follower.step():
        pass
    assert undone == [[]], "the fork is at the commit's block: the batch stays, its seed block does not"
    pending = v.db.pending_batches()
    assert [b.batch_id for b in pending] == [batch.batch_id], "finished before the reorg, sampled again"
    v.turn_order.samples.pop(batch.batch_id, None)  # a fresh process: nothing kept in memory
    await v._open_batch(pending[0])
    assert [d["sampled"] for k, d in v.events if k == "batch"][-1] == sample(after, me, count, rate)


class _SamplingValidator(Turns):
    """The validator's turns (`Turns`: the real `_open_batch` and its sample kept per batch) with
    the real `Validator.sample` against a real `TaskManagerClient`; nothing is scored."""

    sample = Validator.sample

    @classmethod
    def on(cls, client: TaskManagerClient, tmp_path: Path, address: str) -> _SamplingValidator:
        db = Database(tmp_path / "v.sqlite")
        fake_chain: Any = client  # the stand-ins take the chain they are given
        disputes = Disputes(fake_chain, db)
        groups = Groups(fake_chain)
        availability = FakeAvailability(fake_chain, disputes.answered_at, db=db)
        return cls(db, fake_chain, groups, disputes, availability, address)

    def commit(self, batch_id: int, node: str, count: int) -> None:
        """The batch as the validator's follower records it (the chain is the real one)."""
        ev = BatchCommitted(batch_id, node, b"\x00" * 32, count, 0, "bafy-reorged", 1, 0)
        self.db.record_events([ev], 2)


def test_under_blockhash_the_sdk_seals_the_value_it_could_read_unsealed(
    chain: Contracts, actors: Actors
) -> None:
    """Under `Source.BLOCKHASH` a seed block's value is readable unsealed while `blockhash`
    reaches the block, and gone after (8,191 blocks with EIP-2935: 4.5 h of 2 s blocks).
    It was: `seal_seed_block` saw it known and sealed nothing, so a node that answered a claim
    past that horizon turned the finder's pick into `Pick.Everyone` (no decoy bounty:
    contracts/test/Review17.t.sol). Now it seals while no seal stored the value, once."""
    params = dataclasses.replace(chain.params, seed_source=int(Source.BLOCKHASH))
    c = stake_network(Contracts.deploy(chain.w3, actors.deployer, params), actors)
    receipts = make_receipts(c, actors.users, actors.node.address, 2)
    tree = ReceiptTree.from_receipts(receipts)
    batch = c.as_account(actors.node).task_manager.commit_batch(tree.root, 2, "bafy-blockhash").value
    mine(c.w3, 2)
    tm = c.as_account(actors.validators[0]).task_manager
    number = tm.seed_block(batch)
    assert tm.seed_beacon.source is Source.BLOCKHASH
    assert tm.seed_beacon.randomness(number)[1] and not tm.seed_beacon.sealed(number), "readable, unsealed"
    assert tm.seal_seed_block(batch)
    assert tm.seed_beacon.sealed(number), "stored for good"
    assert c.task_manager.batch_seed(batch) == batch_seed(
        bytes(c.w3.eth.get_block(number)["hash"]), batch.batch_id
    )
    nonce = c.w3.eth.get_transaction_count(actors.validators[0].address)
    assert tm.seal_seed_block(batch)
    assert c.w3.eth.get_transaction_count(actors.validators[0].address) == nonce, "one seal, not one per call"


@pytest.mark.asyncio(loop_scope="session")
async def test_a_validator_seals_the_seed_block_once_its_retries_of_withheld_data_are_spent(
    game: Game,
) -> None:
    """A node decides when its withheld data comes out (a manifest answered at its claim's
    deadline, a trace at its claim's), and so whether the seed is still provable when the finder
    challenges. It was: nothing sealed before a challenge, and a late answer outlived the seed:
    the picked finder's challenge was `Pick.Everyone`, the decoy bounty it earned unpaid
    (contracts/test/Review17.t.sol). Now, once the retries of an entry the validator cannot read
    are spent, it seals the seed block before what comes next (here its claim); data served
    within the retries costs no seal (tests/unit/test_review_session_changes19.py)."""
    g = game
    batch_id, _, _ = await _commit(g)
    v = g.party(g.actors.validators[1], g.stores["partial"], "v")  # entry 0's trace withheld from it
    v.follower.catch_up()
    batch = v.db.batch(batch_id)
    assert batch is not None
    tm = g.chain.task_manager
    number = tm.seed_block(tm.batch(batch_id))
    mine(g.chain.w3, 2)
    assert not tm.seed_beacon.randomness(number)[1], "unsealed"

    async def settle(*args: object) -> bool:
        return True

    av = Availability(v.client, v.db, v.disputes, v.disputes.verifier, settle, retries=2, backoff_s=0.01)
    av.note(batch, 0, "trace withheld")
    await asyncio.sleep(0.02)
    await av.step(v.client.timestamp())
    assert [(r.status, r.attempts) for r in v.db.missing()] == [("retrying", 1)]
    assert not tm.seed_beacon.sealed(number), "a retry left: no seal yet"
    await asyncio.sleep(0.05)
    await av.step(v.client.timestamp())
    assert tm.seed_beacon.sealed(number), "the seed block was not sealed once the retries were spent"
    assert [r.status for r in v.db.missing()] == ["challenged"], "then claimed"
