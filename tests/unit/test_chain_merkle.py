"""ReceiptTree: the positional batch tree (on-chain acceptance of the same proofs: integration)."""

from __future__ import annotations

import random

import pytest
from eth_utils import keccak
from supernet.sdk.chain.merkle import MerkleError, ReceiptTree, parent, verify
from supernet.sdk.chain.receipts import Receipt


def _leaves(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 33, 100, 257])
def test_every_proof_verifies_at_its_position_only(n: int) -> None:
    leaves = _leaves(n, n)
    tree = ReceiptTree(leaves)
    assert len(tree) == n
    for i, leaf in enumerate(leaves):
        proof = tree.proof_at(i)
        assert len(proof) <= max(1, (n - 1).bit_length())
        assert verify(proof, tree.root, leaf, i, n) and tree.verify(leaf, i, proof)
        if n > 1:
            assert not verify(proof, tree.root, leaf, (i + 1) % n, n)


def test_random_sizes_and_tampering() -> None:
    rng = random.Random(7)
    for _ in range(30):
        n = rng.randint(2, 80)
        leaves = _leaves(n, rng.randint(0, 10**6))
        tree = ReceiptTree(leaves)
        i = rng.randrange(n)
        proof = tree.proof_at(i)
        j = rng.randrange(len(proof))
        bad = [*proof[:j], bytes([proof[j][0] ^ 0x80]) + proof[j][1:], *proof[j + 1 :]]
        assert not verify(bad, tree.root, leaves[i], i, n)
        assert not verify(proof[:-1], tree.root, leaves[i], i, n)
        assert not verify([*proof, proof[0]], tree.root, leaves[i], i, n)
        assert not verify(proof, tree.root, keccak(leaves[i]), i, n)


def test_order_matters_and_matches_hand_computed() -> None:
    a, b, c = _leaves(3, 1)
    tree = ReceiptTree([a, b, c])
    assert tree.root != ReceiptTree([b, a, c]).root
    # left ‖ right, the odd last node carried up unchanged
    assert tree.root == parent(parent(a, b), c) == keccak(keccak(a + b) + c)


def test_single_leaf_duplicates_and_errors() -> None:
    (leaf,) = _leaves(1, 3)
    tree = ReceiptTree([leaf])
    assert tree.root == leaf and tree.proof_at(0) == [] and tree.proof(leaf) == []
    twice = ReceiptTree([leaf, leaf])
    assert twice.index(leaf) == 0 and twice.verify(leaf, 1, twice.proof_at(1))
    with pytest.raises(MerkleError):
        ReceiptTree([])
    with pytest.raises(MerkleError):
        ReceiptTree([b"short"])
    with pytest.raises(MerkleError):
        tree.proof(b"\x00" * 32)
    with pytest.raises(MerkleError):
        tree.proof_at(1)


def test_receipts_as_leaves() -> None:
    receipts = [
        Receipt(bytes([i]) * 32, "0x" + "ab" * 20, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, b"\x05" * 32, i)
        for i in range(5)
    ]
    tree = ReceiptTree.from_receipts(receipts)
    assert tree.root == ReceiptTree(receipts).root
    assert tree.index(receipts[2]) == 2 and receipts[2].leaf() in tree
    assert tree.verify(receipts[2], 2, tree.proof(receipts[2]))
