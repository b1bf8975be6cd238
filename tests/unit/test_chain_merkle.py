"""ReceiptTree: OpenZeppelin-compatible sorted-pair Merkle tree (on-chain acceptance: integration)."""

from __future__ import annotations

import random

import pytest
from eth_utils import keccak
from supernet.sdk.chain.merkle import MerkleError, ReceiptTree, hash_pair, verify
from supernet.sdk.chain.receipts import Receipt


def _leaves(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(32) for _ in range(n)]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 33, 100, 257])
def test_every_proof_verifies(n: int) -> None:
    leaves = _leaves(n, n)
    tree = ReceiptTree(leaves)
    assert len(tree) == n
    for leaf in leaves:
        proof = tree.proof(leaf)
        assert len(proof) <= max(1, (n - 1).bit_length())
        assert verify(proof, tree.root, leaf) and tree.verify(leaf, proof)


def test_random_sizes_and_tampering() -> None:
    rng = random.Random(7)
    for _ in range(30):
        n = rng.randint(2, 80)
        leaves = _leaves(n, rng.randint(0, 10**6))
        tree = ReceiptTree(leaves)
        leaf = rng.choice(leaves)
        proof = tree.proof(leaf)
        i = rng.randrange(len(proof))
        bad = [*proof[:i], bytes([proof[i][0] ^ 0x80]) + proof[i][1:], *proof[i + 1 :]]
        assert not verify(bad, tree.root, leaf)
        assert not verify(proof[:-1], tree.root, leaf)
        assert not verify(proof, tree.root, keccak(leaf))


def test_root_is_order_independent_and_matches_hand_computed() -> None:
    a, b, c = _leaves(3, 1)
    tree = ReceiptTree([c, a, b])
    assert tree.root == ReceiptTree([a, b, c]).root
    s = sorted([a, b, c])
    # sorted leaves, pairs hashed commutatively, the odd last node carried up unchanged
    assert tree.root == hash_pair(hash_pair(s[0], s[1]), s[2])
    assert hash_pair(a, b) == keccak(min(a, b) + max(a, b))


def test_single_leaf_and_errors() -> None:
    (leaf,) = _leaves(1, 3)
    tree = ReceiptTree([leaf])
    assert tree.root == leaf and tree.proof(leaf) == []
    with pytest.raises(MerkleError):
        ReceiptTree([])
    with pytest.raises(MerkleError):
        ReceiptTree([b"short"])
    with pytest.raises(MerkleError):
        tree.proof(b"\x00" * 32)


def test_receipts_as_leaves() -> None:
    receipts = [
        Receipt(bytes([i]) * 32, "0x" + "ab" * 20, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, b"\x05" * 32, i)
        for i in range(5)
    ]
    tree = ReceiptTree.from_receipts(receipts)
    assert tree.root == ReceiptTree(receipts).root
    assert receipts[2] in tree.leaves or receipts[2].leaf() in tree
    assert tree.verify(receipts[2], tree.proof(receipts[2]))
