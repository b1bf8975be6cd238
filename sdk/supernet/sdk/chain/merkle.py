"""The batch Merkle tree of receipts, compatible with OpenZeppelin's ``MerkleProof.verify``.

Rules (docs/protocol.md): leaves are sorted before building, pairs are hashed commutatively
(``keccak256(min(a, b) ‖ max(a, b))``), and a layer with an odd count carries its last node up
unchanged. A tree of one leaf has ``root == leaf`` and an empty proof.

>>> leaves = [bytes([i]) * 32 for i in range(5)]
>>> tree = ReceiptTree(leaves)
>>> proof = tree.proof(leaves[3])
>>> verify(proof, tree.root, leaves[3])
True
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eth_utils import keccak
from supernet.sdk.chain.errors import ChainError
from supernet.sdk.chain.receipts import Receipt


class MerkleError(ChainError, ValueError):
    """A tree cannot be built from these leaves, or a leaf is not in it."""


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin's commutative keccak256 of two nodes (sorted as big-endian integers)."""
    return keccak(a + b) if a < b else keccak(b + a)


def process_proof(proof: Sequence[bytes], leaf: bytes) -> bytes:
    """The root that ``proof`` leads to from ``leaf``."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, sibling)
    return node


def verify(proof: Sequence[bytes], root: bytes, leaf: bytes) -> bool:
    """True iff ``proof`` proves ``leaf`` under ``root`` (same as ``MerkleProof.verify``)."""
    return process_proof(proof, leaf) == root


class ReceiptTree:
    """A Merkle tree over 32-byte leaves (receipt leaves), with proofs for any leaf.

    Args:
        leaves: the leaves in any order (they are sorted); ``Receipt`` objects are accepted
            and converted with ``Receipt.leaf()``.

    Raises:
        MerkleError: no leaves, or a leaf that is not 32 bytes.
    """

    def __init__(self, leaves: Iterable[bytes | Receipt]) -> None:
        raw = [x.leaf() if isinstance(x, Receipt) else bytes(x) for x in leaves]
        if not raw:
            raise MerkleError("a Merkle tree needs at least one leaf")
        if any(len(x) != 32 for x in raw):
            raise MerkleError("every leaf must be 32 bytes")
        self._layers: list[list[bytes]] = [sorted(raw)]
        while len(self._layers[-1]) > 1:
            cur = self._layers[-1]
            nxt = [hash_pair(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
            if len(cur) % 2:
                nxt.append(cur[-1])
            self._layers.append(nxt)
        self._index = {leaf: i for i, leaf in reversed(list(enumerate(self._layers[0])))}

    @classmethod
    def from_receipts(cls, receipts: Iterable[Receipt]) -> ReceiptTree:
        """Build the tree of a batch of receipts."""
        return cls(r.leaf() for r in receipts)

    @property
    def root(self) -> bytes:
        """The 32-byte root committed on chain."""
        return self._layers[-1][0]

    @property
    def leaves(self) -> list[bytes]:
        """The leaves in tree (sorted) order."""
        return list(self._layers[0])

    def __len__(self) -> int:
        return len(self._layers[0])

    def __contains__(self, leaf: object) -> bool:
        return leaf in self._index

    def proof(self, leaf: bytes | Receipt) -> list[bytes]:
        """The sibling path from ``leaf`` to the root (bottom-up), for ``MerkleProof.verify``.

        Raises:
            MerkleError: the leaf is not in the tree.
        """
        key = leaf.leaf() if isinstance(leaf, Receipt) else bytes(leaf)
        try:
            idx = self._index[key]
        except KeyError:
            raise MerkleError(f"leaf 0x{key.hex()} is not in the tree") from None
        path: list[bytes] = []
        for layer in self._layers[:-1]:
            sibling = idx ^ 1
            if sibling < len(layer):  # an odd last node has no sibling: it is carried up
                path.append(layer[sibling])
            idx //= 2
        return path

    def verify(self, leaf: bytes | Receipt, proof: Sequence[bytes]) -> bool:
        """True iff ``proof`` proves ``leaf`` under this tree's root."""
        key = leaf.leaf() if isinstance(leaf, Receipt) else bytes(leaf)
        return verify(proof, self.root, key)
