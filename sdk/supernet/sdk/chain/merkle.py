"""The batch Merkle tree of receipts (docs/protocol.md), positional: what ``MerkleLib.rootAt`` checks.

Rules: leaves in manifest order, a parent is ``keccak256(left ‖ right)``, a layer with an odd
count carries its last node up unchanged. A proof of the leaf at ``index`` is verified with that
index and the batch's leaf count, so it proves *which* entry a receipt is (the one a validator
sampled, the one an availability answer must post), not only that it is one. A tree of one leaf
has ``root == leaf`` and an empty proof.

>>> leaves = [bytes([i]) * 32 for i in range(5)]
>>> tree = ReceiptTree(leaves)
>>> proof = tree.proof_at(3)
>>> verify(proof, tree.root, leaves[3], 3, 5), verify(proof, tree.root, leaves[3], 2, 5)
(True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from eth_utils import keccak
from supernet.sdk.chain.errors import ChainError
from supernet.sdk.chain.receipts import Receipt


class MerkleError(ChainError, ValueError):
    """A tree cannot be built from these leaves, or a leaf is not in it."""


def parent(left: bytes, right: bytes) -> bytes:
    """The parent of two nodes: keccak256 of their concatenation, left first."""
    return keccak(left + right)


def process_proof(proof: Sequence[bytes], leaf: bytes, index: int, count: int) -> bytes | None:
    """The root that ``proof`` leads to from ``leaf`` at ``index`` of ``count`` leaves (None: the
    proof does not fit that position)."""
    if not 0 <= index < count:
        return None
    node, used, n = leaf, 0, count
    while n > 1:
        if index ^ 1 < n:
            if used == len(proof):
                return None
            sibling = proof[used]
            used += 1
            node = parent(node, sibling) if index % 2 == 0 else parent(sibling, node)
        index //= 2
        n = (n + 1) // 2
    return node if used == len(proof) else None


def verify(proof: Sequence[bytes], root: bytes, leaf: bytes, index: int, count: int) -> bool:
    """True iff ``proof`` proves ``leaf`` at ``index`` of a ``count``-leaf tree under ``root``."""
    return process_proof(proof, leaf, index, count) == root


class ReceiptTree:
    """A positional Merkle tree over 32-byte leaves (receipt leaves), with a proof for each position.

    Args:
        leaves: the leaves in manifest order; ``Receipt`` objects are accepted and converted with
            ``Receipt.leaf()``.

    Raises:
        MerkleError: no leaves, or a leaf that is not 32 bytes.
    """

    def __init__(self, leaves: Iterable[bytes | Receipt]) -> None:
        raw = [x.leaf() if isinstance(x, Receipt) else bytes(x) for x in leaves]
        if not raw:
            raise MerkleError("a Merkle tree needs at least one leaf")
        if any(len(x) != 32 for x in raw):
            raise MerkleError("every leaf must be 32 bytes")
        self._layers: list[list[bytes]] = [raw]
        while len(self._layers[-1]) > 1:
            cur = self._layers[-1]
            nxt = [parent(cur[i], cur[i + 1]) for i in range(0, len(cur) - 1, 2)]
            if len(cur) % 2:
                nxt.append(cur[-1])
            self._layers.append(nxt)
        self._index: dict[bytes, int] = {}
        for i, leaf in enumerate(raw):
            self._index.setdefault(leaf, i)

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
        """The leaves in order."""
        return list(self._layers[0])

    def __len__(self) -> int:
        return len(self._layers[0])

    def __contains__(self, leaf: object) -> bool:
        return leaf in self._index

    def index(self, leaf: bytes | Receipt) -> int:
        """The first position of ``leaf``.

        Raises:
            MerkleError: the leaf is not in the tree.
        """
        key = leaf.leaf() if isinstance(leaf, Receipt) else bytes(leaf)
        try:
            return self._index[key]
        except KeyError:
            raise MerkleError(f"leaf 0x{key.hex()} is not in the tree") from None

    def proof_at(self, index: int) -> list[bytes]:
        """The sibling path from the leaf at ``index`` to the root (bottom-up).

        Raises:
            MerkleError: no such position.
        """
        if not 0 <= index < len(self):
            raise MerkleError(f"position {index} is outside a tree of {len(self)} leaves")
        path: list[bytes] = []
        for layer in self._layers[:-1]:
            sibling = index ^ 1
            if sibling < len(layer):  # an odd last node has no sibling: it is carried up
                path.append(layer[sibling])
            index //= 2
        return path

    def proof(self, leaf: bytes | Receipt) -> list[bytes]:
        """The proof of ``leaf`` at its first position (`index`)."""
        return self.proof_at(self.index(leaf))

    def verify(self, leaf: bytes | Receipt, index: int, proof: Sequence[bytes]) -> bool:
        """True iff ``proof`` proves ``leaf`` at ``index`` under this tree's root."""
        key = leaf.leaf() if isinstance(leaf, Receipt) else bytes(leaf)
        return verify(proof, self.root, key, index, len(self))
