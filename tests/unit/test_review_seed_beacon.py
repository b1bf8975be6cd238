"""Adversarial review of the SeedBeacon seeds (commits d1986f8, 4e46028): the SDK side.

Scope: `supernet.sdk.chain.beacon` (header_rlp, SeedBeacon.value_from_header, seal),
`TaskManager.header_seed` / `seal_seed_block` / `_sealed_ref`, the validator's
`TaskManagerClient.batch_seed`, on a real Anvil with the real contracts. The contract side
(SeedBeacon's parser, the TaskManager's use of unknown / expired values) is in
contracts/test/Review16.t.sol.

Found:
- MEDIUM (contracts/test/Review16.t.sol, now
  test_defence_AFriendWaitsOutTheUnsealedSeedAndCollectsEveryDecoyBounty).
  Since 4e46028 no honest party seals a seed block unless it challenges, so a seed block no
  challenge touched expires unsealed, and an expired seed picks every validator for every entry,
  decoy bounties included: a friend the node told where its decoys are waits 8,192 blocks (4.5 h
  of 2 s blocks, inside the 1-day window) and collects every decoy's bounty, the escrow going back
  to the node's side. The Python root: `TaskManagerClient.batch_seed` samples by the header and
  never seals (`test_known_limit_a_validator_that_finds_nothing_leaves_the_seed_block_unsealed`).
  FIXED by design in the contract, so sampling stays free: a challenge records how the seed
  picked its challenger (`TaskManager.Pick`: `BySeed`, or `Everyone` once the seed expired
  unsealed); fraud and availability rewards, paid from a slash, go to either, a decoy bounty,
  paid from the node's escrow, only to `BySeed`.
- LOW. The SDK and the beacon disagree on a zero mix: `SeedBeacon.seal` refuses it
  (`NoRandomness`: the value stays unknown until it expires, then everyone is sampled), but
  `value_from_header` returns it, so on such a chain (a Clique / Polygon PoS / BSC-style chain
  deployed with the default `Prevrandao` source) every validator samples by
  `keccak(0, batchId)`, which the node computes before it commits (batch ids are sequential),
  and the cross-check with `isSampled` is skipped while unsealed
  (now `test_defence_the_sdk_does_not_sample_by_a_zero_mix_the_beacon_refuses`). FIXED:
  `value_from_header` raises `HeaderError` on a zero mix, as `seal` refuses it, and the SDK's
  challenge paths go on without a seal on `NoRandomness`.
- LOW (contracts/test/Review16.t.sol, now test_defence_APrevrandaoBeaconOnAChainWithoutRandaoIsRefused):
  the default source deploys where prevrandao is not randomness (Arbitrum), and seals a
  predictable mix. FIXED: a `Prevrandao` beacon refuses to deploy where `block.prevrandao` is
  at most 2**64 (EIP-4399's test; `NoRandomness`); OP-stack chains, whose mix is the L1 origin's
  and known ahead, are documented as needing `Blockhash`.

Checked and holding:
- Headers of earlier forks (Cancun, Shanghai: fewer trailing fields) are rebuilt to their hash,
  so `header_seed` and `seal` work there too (`test_defence_headers_of_earlier_forks_rebuild_to_their_hash`).
- A reorg of the seed block between a validator's header read and a seal: the stale header cannot
  be sealed (`NotTheHeader`), `seal_seed_block` proves the canonical one, and the validator's
  client then computes the seed the contract holds
  (`test_defence_a_reorg_of_the_seed_block_seals_only_the_canonical_header`).
- A node that seals its own seed block first (or front-runs a challenger's seal) stores the same
  value; the challenger's `seal_seed_block` then sends nothing and its reward stands
  (`test_defence_a_seal_by_the_node_changes_nothing_and_costs_the_challenger_nothing`).
"""

from __future__ import annotations

from typing import Any

import pytest
import rlp
from chain_fixtures import Actors, make_receipts
from eth_utils import keccak
from supernet.sdk.chain import Contracts, ReceiptTree
from supernet.sdk.chain.anvil import Anvil, dev_account, mine
from supernet.sdk.chain.beacon import HeaderError, SeedBeacon, header_rlp
from supernet.sdk.chain.contract_errors import NotTheHeader
from supernet.sdk.chain.sampling import batch_seed
from supernet.validator.chain import TaskManagerClient
from web3 import Web3
from web3.datastructures import AttributeDict

pytestmark = pytest.mark.anvil


def _commit(c: Contracts, actors: Actors, count: int, cid: str) -> Any:
    node = c.as_account(actors.node).task_manager
    receipts = make_receipts(c, actors.users, actors.node.address, count)
    return node.commit_batch(ReceiptTree.from_receipts(receipts).root, count, cid).value


def _zero_mix(block: Any) -> AttributeDict:
    """The same block as a chain whose headers carry no RANDAO mix would give it (mixHash zero,
    the hash recomputed over that header): what Clique, Polygon PoS or BSC report."""
    fields = dict(block)
    fields["mixHash"] = b"\x00" * 32
    real = header_rlp(block)
    items = rlp.decode(real)
    items[13] = b"\x00" * 32
    fields["hash"] = keccak(rlp.encode(items))
    return AttributeDict(fields)


def test_defence_the_sdk_does_not_sample_by_a_zero_mix_the_beacon_refuses(
    network: Contracts, actors: Actors
) -> None:
    """LOW. FAKE (named so): Anvil's every header has a random mix; a chain whose headers carry a
    zero mix is faked by one Web3 whose ``get_block`` answers the real block with mixHash zeroed
    and its hash recomputed (an internally consistent header, as such a chain's RPC serves).

    The beacon never stores a zero mix (`seal` reverts `NoRandomness`: the value stays unknown,
    then expires and samples everyone), yet `value_from_header` hands it to the validator, whose
    sample is then ``keccak(0, batchId)``: known to the node before it commits. Safe: the SDK
    refuses what the beacon refuses (None: not known yet, or an error)."""
    batch = _commit(network, actors, 4, "bafy-zero-mix")
    mine(network.w3, 2)
    tm = network.task_manager
    number = tm.seed_block(batch)
    fake = Web3(network.w3.provider)
    real_get_block = fake.eth.get_block
    fake.eth.get_block = lambda n, *a, **k: _zero_mix(real_get_block(n, *a, **k))  # type: ignore[method-assign]
    beacon = SeedBeacon(fake, tm.seed_beacon.address, None)
    assert keccak(header_rlp(fake.eth.get_block(number))) == bytes(fake.eth.get_block(number)["hash"])
    try:
        value = beacon.value_from_header(number)
    except HeaderError:
        return  # refused: safe
    predicted = batch_seed(b"\x00" * 32, batch.batch_id)  # computable before the commit
    assert value is None and predicted, (
        f"the SDK samples by a zero mix the beacon refuses (NoRandomness): the validators' seed "
        f"{batch_seed(value, batch.batch_id).hex()[:16]}… is keccak(0, batchId), known before the commit"
    )


def test_known_limit_a_validator_that_finds_nothing_leaves_the_seed_block_unsealed(
    network: Contracts, actors: Actors
) -> None:
    """By design since 4e46028 (sampling costs no transaction): a validator's `batch_seed` reads the
    header and sends nothing, so unless a challenge seals it the seed block stays unknown on chain
    and expires (then every validator is sampled for every entry). The contract-level consequence
    (a node's friend collecting every decoy bounty after the expiry) is Review16.t.sol's attack."""
    batch = _commit(network, actors, 4, "bafy-unsealed")
    mine(network.w3, 2)
    client = TaskManagerClient(network.w3, network.deployment.address("TaskManager"), actors.validators[0])
    nonce = network.w3.eth.get_transaction_count(actors.validators[0].address)
    assert client.batch_seed(batch.batch_id)
    assert network.w3.eth.get_transaction_count(actors.validators[0].address) == nonce
    tm = network.task_manager
    assert tm.seed_beacon.randomness(tm.seed_block(batch)) == (b"\x00" * 32, False), "unknown on chain"


@pytest.mark.parametrize("hardfork", ["cancun", "shanghai"])
def test_defence_headers_of_earlier_forks_rebuild_to_their_hash(hardfork: str) -> None:
    """A chain a fork or two behind has fewer trailing header fields; header_rlp takes the prefix
    the block holds, and every mined block (with and without a transaction) rebuilds to its hash."""
    with Anvil(accounts=2, extra_args=["--hardfork", hardfork]) as proc:
        w3 = Web3(Web3.HTTPProvider(proc.url))
        sender = dev_account(0)
        mine(w3, 2)
        tx = {"to": dev_account(1).address, "value": 1, "gas": 21_000, "nonce": 0, "chainId": w3.eth.chain_id}
        tx |= {"maxFeePerGas": 10**10, "maxPriorityFeePerGas": 1}
        w3.eth.send_raw_transaction(sender.sign_transaction(tx).raw_transaction)
        mine(w3, 1)
        for number in range(1, int(w3.eth.block_number) + 1):
            block = w3.eth.get_block(number)
            assert keccak(header_rlp(block)) == bytes(block["hash"]), (hardfork, number)


def test_defence_a_reorg_of_the_seed_block_seals_only_the_canonical_header(
    network: Contracts, actors: Actors
) -> None:
    """The validator read the seed block's header, then the block was replaced (the commit's own
    block stays): the stale header no longer proves anything, `seal_seed_block` proves the new one,
    and the client's seed is the one the contract then holds. (A validator's service kept the
    sample it computed first, `turn_order.samples`; it now draws it again when the seed changes:
    `test_a_validator_samples_again_once_a_reorg_replaces_the_seed_block`,
    tests/integration/test_seed_beacon.py.)"""
    w3 = network.w3
    batch = _commit(network, actors, 4, "bafy-reorg")
    mine(w3, 2)
    tm = network.task_manager
    number = tm.seed_block(batch)
    client = TaskManagerClient(w3, network.deployment.address("TaskManager"), actors.validators[0])
    before = client.batch_seed(batch.batch_id)
    stale = header_rlp(w3.eth.get_block(number))
    w3.provider.make_request("anvil_reorg", [int(w3.eth.block_number) - number + 1, []])  # type: ignore[arg-type]
    assert int(w3.eth.get_block(batch.commit_block)["number"]) == batch.commit_block
    assert header_rlp(w3.eth.get_block(number)) != stale, "the seed block was replaced"
    after = client.batch_seed(batch.batch_id)
    assert after is not None and before is not None  # (Anvil may keep a replaced block's mix)
    challenger = network.as_account(actors.validators[1]).task_manager
    with pytest.raises(NotTheHeader):
        challenger.seed_beacon.transact("seal", number, stale)
    assert challenger.seal_seed_block(batch)
    assert tm.batch_seed(batch) == after == client.batch_seed(batch.batch_id)


def test_defence_a_seal_by_the_node_changes_nothing_and_costs_the_challenger_nothing(
    network: Contracts, actors: Actors
) -> None:
    """The node seals its seed block first (or front-runs a challenger's seal): the same value is
    stored, and the challenger's seal path sees it known and sends no transaction."""
    batch = _commit(network, actors, 4, "bafy-front-run")
    mine(network.w3, 2)
    client = TaskManagerClient(network.w3, network.deployment.address("TaskManager"), actors.validators[0])
    expected = client.batch_seed(batch.batch_id)
    node = network.as_account(actors.node).task_manager
    assert node.seal_seed_block(batch)
    challenger = network.as_account(actors.validators[1]).task_manager
    nonce = network.w3.eth.get_transaction_count(actors.validators[1].address)
    assert challenger.seal_seed_block(batch)
    assert network.w3.eth.get_transaction_count(actors.validators[1].address) == nonce, "no transaction"
    assert challenger.batch_seed(batch) == expected
