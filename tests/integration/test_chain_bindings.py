"""The committed bindings match forge's artifacts; deploy/connect and the Merkle tree on chain."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from chain_fixtures import Actors, make_receipts
from supernet.sdk.chain import CONTRACT_NAMES, Contracts, Deployment, DeploymentError, ReceiptTree
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
    batch_id = network.as_account(actors.node).task_manager.commit_batch(tree.root, 6, "bafy").value
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
    batch_id = await chain.wait_commit(await chain.send_commit(root, 3, "bafy"))
    assert batch_id is not None and await chain.find_commit(root) == batch_id
    other = Web3Chain(network, actors.node2)
    assert await other.find_commit(root) is None  # another node's lookup never sees this node's batch
