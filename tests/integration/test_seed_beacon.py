"""The SeedBeacon on a real Anvil: Anvil's own headers rebuilt and proven, what a validator
samples by before anyone seals, and what a node (or its RPC) cannot make the beacon take.

The contract's rules (sources, expiry, malformed headers) are in contracts/test/SeedBeacon.t.sol;
the grinding attack this closes is `test_defence_the_builder_of_the_seed_block_cannot_choose_the_seed`
(tests/unit/test_review_sampling_economics.py).
"""

from __future__ import annotations

import pytest
from chain_fixtures import Actors, make_receipts
from eth_utils import keccak
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import mine
from supernet.sdk.chain.beacon import HeaderError, Source, header_rlp
from supernet.sdk.chain.contract_errors import BlockNotMined, NotTheHeader, SeedNotReady
from supernet.sdk.chain.sampling import batch_seed
from supernet.validator.chain import TaskManagerClient

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
