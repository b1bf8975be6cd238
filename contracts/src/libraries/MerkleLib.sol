// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title MerkleLib
/// @notice The batch tree of docs/protocol.md: leaves in manifest order, a parent is
///         `keccak256(left ‖ right)`, a layer's odd last node is carried up unchanged. A proof
///         binds a leaf to its *position*, so "entry i of the batch" means one receipt, the one a
///         validator sampled and the one an availability answer must post.
library MerkleLib {
    /// @notice The root reached from `leaf` at position `index` of a tree of `count` leaves.
    /// @return root The root (zero when `ok` is false).
    /// @return ok False when `index >= count` or `proof` has the wrong length for that position.
    /// @dev At most 32 iterations (count < 2**32): bounded by the batch, not by the caller.
    function rootAt(bytes32 leaf, uint256 index, uint256 count, bytes32[] calldata proof)
        internal
        pure
        returns (bytes32 root, bool ok)
    {
        if (index >= count) return (bytes32(0), false);
        bytes32 node = leaf;
        uint256 used;
        uint256 n = count;
        while (n > 1) {
            if ((index ^ 1) < n) {
                if (used == proof.length) return (bytes32(0), false);
                bytes32 sibling = proof[used];
                unchecked {
                    ++used;
                }
                node = index & 1 == 0 ? _parent(node, sibling) : _parent(sibling, node);
            }
            index >>= 1;
            n = (n + 1) >> 1;
        }
        if (used != proof.length) return (bytes32(0), false);
        return (node, true);
    }

    /// @notice The root of the tree whose leaves are `layer`, in order (`layer` is overwritten).
    /// @dev O(n) hashes over a list the caller already paid to send: a manifest answer posts
    ///      every receipt of its batch, and only a batch's own count bounds it.
    function rootOf(bytes32[] memory layer) internal pure returns (bytes32) {
        uint256 n = layer.length;
        if (n == 0) return bytes32(0);
        while (n > 1) {
            uint256 half = n >> 1;
            for (uint256 i; i < half; ++i) {
                layer[i] = _parent(layer[2 * i], layer[2 * i + 1]);
            }
            if (n & 1 == 1) layer[half] = layer[n - 1]; // the odd last node is carried up
            n = (n + 1) >> 1;
        }
        return layer[0];
    }

    function _parent(bytes32 left, bytes32 right) private pure returns (bytes32 parent) {
        assembly ("memory-safe") {
            mstore(0x00, left)
            mstore(0x20, right)
            parent := keccak256(0x00, 0x40)
        }
    }
}
