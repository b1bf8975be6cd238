"""The committed bindings match forge's artifacts; deploy/connect and the Merkle tree on chain."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from chain_fixtures import Actors, make_receipts
from supernet.sdk.chain import CONTRACT_NAMES, Contracts, Deployment, DeploymentError, ReceiptTree
from supernet.sdk.chain.anvil import increase_time
from supernet.sdk.chain.contract_errors import InvalidProof

ROOT = Path(__file__).resolve().parents[2]


def test_committed_bindings_are_not_stale() -> None:
    out = ROOT / "contracts" / "out"
    if not all((out / f"{n}.sol" / f"{n}.json").exists() for n in CONTRACT_NAMES):
        pytest.skip("contracts/out missing: run `make contracts` (forge build) first")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_bindings.py"), "--check"], capture_output=True, text=True
    )
    assert proc.returncode == 0, f"stale bindings, run `make bindings`:\n{proc.stderr}"


@pytest.mark.anvil
def test_deployment_file_connects(deployed: Contracts, tmp_path: Path) -> None:
    path = deployed.deployment.save(tmp_path / "deployment.json")
    c = Contracts.connect(deployed.w3, Deployment.load(path))
    assert c.service_manager.task_manager() == c.deployment.address("TaskManager")
    assert c.payments.withdrawal_delay() == deployed.params.withdrawal_delay
    assert c.deployment.deploy_block >= 1
    wrong = Deployment(1, 0, dict(deployed.deployment.contracts))
    with pytest.raises(DeploymentError):
        Contracts.connect(deployed.w3, wrong)


@pytest.mark.anvil
def test_contract_accepts_every_proof_of_an_odd_tree(network: Contracts, actors: Actors) -> None:
    receipts = make_receipts(network, actors.users, actors.node.address, 6)  # layers 6 -> 3 -> 2 -> 1
    tree = ReceiptTree.from_receipts(receipts)
    batch_id = network.as_account(actors.node).task_manager.commit_batch(tree.root, 6, "bafy").value.batch_id
    validator = network.as_account(actors.validators[0]).task_manager
    with pytest.raises(InvalidProof):
        validator.challenge(batch_id, 0, receipts[0], tree.proof_at(0)[:-1], "bafy")
    with pytest.raises(InvalidProof):  # a proof binds its position: entry 1's proof is not entry 0's
        validator.challenge(batch_id, 0, receipts[1], tree.proof_at(1), "bafy")
    ids = [
        validator.challenge(batch_id, i, r, tree.proof_at(i), "bafy").value for i, r in enumerate(receipts)
    ]
    assert ids == list(range(1, 7))


async def test_the_node_finds_its_own_commit_before_resending(network: Contracts, actors: Actors) -> None:
    """`Web3Chain.find_commit`: the batcher's guard against committing one batch twice."""
    from supernet.node.service.chain import Web3Chain

    chain = Web3Chain(network, actors.node)
    receipts = make_receipts(network, actors.users, actors.node.address, 3)
    root = ReceiptTree.from_receipts(receipts).root
    assert await chain.find_commit(root) is None
    commit = await chain.sign_commit(root, 3, "bafy")
    await chain.broadcast(commit)
    batch_id = await chain.wait_commit(commit)
    assert batch_id is not None and await chain.find_commit(root) == batch_id
    other = Web3Chain(network, actors.node2)
    assert await other.find_commit(root) is None  # another node's lookup never sees this node's batch


async def test_a_signed_commit_lands_once_however_often_it_is_broadcast(
    network: Contracts, actors: Actors
) -> None:
    """The batcher persists a signed ``commitBatch`` before broadcasting it and re-broadcasts the same
    bytes after a crash or a timeout: with mining paused (the transaction pending), re-broadcasting
    is harmless, a wait that ends while it is pending says so (and signs nothing new), and it lands
    once. A signed commit whose nonce went to another transaction is reported dead."""
    from supernet.node.service.chain import Web3Chain
    from supernet.node.service.ports import CommitPending

    w3 = network.w3
    chain = Web3Chain(network, actors.node)
    receipts = make_receipts(network, actors.users, actors.node.address, 2)
    root = ReceiptTree.from_receipts(receipts).root
    w3.provider.make_request("evm_setAutomine", [False])  # type: ignore[arg-type]
    try:
        commit = await chain.sign_commit(root, 2, "bafy")
        for _ in range(3):
            await chain.broadcast(commit)
        with pytest.raises(CommitPending):
            await chain.wait_commit(commit, timeout_s=0.5)
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
    finally:
        w3.provider.make_request("evm_setAutomine", [True])  # type: ignore[arg-type]
    batch_id = await chain.wait_commit(commit)
    assert batch_id is not None and await chain.find_commit(root) == batch_id
    await chain.broadcast(commit)  # mined already: "nonce too low" is not an error
    logs = network.task_manager.contract.events.BatchCommitted().get_logs(
        from_block=0, argument_filters={"node": actors.node.address}
    )
    assert [bytes(e["args"]["root"]) for e in logs].count(root) == 1

    other_root = ReceiptTree.from_receipts(make_receipts(network, actors.users, actors.node.address, 1)).root
    dead = await chain.sign_commit(other_root, 1, "bafy")  # signed, never broadcast ...
    other = actors.node.sign_transaction(  # ... and its nonce used by another transaction
        {
            "to": actors.node.address,
            "value": 0,
            "gas": 21_000,
            "gasPrice": w3.eth.gas_price * 2,
            "nonce": dead.nonce,
            "chainId": w3.eth.chain_id,
        }
    )
    w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(other.raw_transaction))
    await chain.broadcast(dead)  # nonce too low: ignored
    assert await chain.wait_commit(dead, timeout_s=0.5) is None


@pytest.mark.anvil
async def test_a_new_node_reserves_slots_and_reuses_them_after_retention(
    chain: Contracts, actors: Actors
) -> None:
    """The node service's batch slots on a real chain: a new node reserves its slots when it
    registers, commits into the lowest free one, and after `BATCH_RETENTION` (also after a restart,
    learning its slots from its own events) rewrites its oldest slot instead of creating one."""
    from chain_fixtures import MODEL_ID, NODE_STAKE
    from supernet.node.service.chain import RESERVED_SLOTS, Web3Chain

    me = actors.outsider  # never registered: a new node
    node = Web3Chain(chain, me)
    await node.ensure_registered("http://127.0.0.1:8199", ["0x" + MODEL_ID.hex()], NODE_STAKE)
    tm = chain.task_manager
    assert tm.batch_slot(me.address, RESERVED_SLOTS - 1)[0] == 1, "reserved: an old, empty word"
    assert tm.batch_slot(me.address, RESERVED_SLOTS)[0] == 0

    async def commit(web3_chain: Web3Chain, tag: str) -> int:
        signed = await web3_chain.sign_commit(hashlib.sha256(tag.encode()).digest(), 1, "bafy")
        await web3_chain.broadcast(signed)
        batch_id = await web3_chain.wait_commit(signed)
        assert batch_id is not None
        return tm.batch(batch_id).slot

    assert [await commit(node, "a"), await commit(node, "b")] == [0, 1]
    increase_time(chain.w3, tm.batch_retention())
    restarted = Web3Chain(chain, me)  # a fresh process: its slots come from its events
    assert await commit(restarted, "c") == 0, "the oldest slot is free again: rewritten, not created"
    assert await commit(restarted, "d") == 1
    assert await commit(restarted, "e") == 2
