// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice Builds the batch tree of docs/protocol.md in Solidity, for tests: leaves in the
///         order given (a position is part of what a proof proves), parent = keccak256(left ‖
///         right), an odd layer carries its last node up unchanged.
library Merkle {
    function parent(bytes32 left, bytes32 right) internal pure returns (bytes32) {
        return keccak256(abi.encode(left, right));
    }

    function _up(bytes32[] memory layer, uint256 n) private pure returns (uint256 m) {
        m = (n + 1) / 2;
        for (uint256 i; i < m; ++i) {
            layer[i] = 2 * i + 1 < n ? parent(layer[2 * i], layer[2 * i + 1]) : layer[2 * i];
        }
    }

    function _copy(bytes32[] memory leaves) private pure returns (bytes32[] memory out) {
        out = new bytes32[](leaves.length);
        for (uint256 i; i < leaves.length; ++i) {
            out[i] = leaves[i];
        }
    }

    function root(bytes32[] memory leaves) internal pure returns (bytes32) {
        bytes32[] memory layer = _copy(leaves);
        uint256 n = layer.length;
        require(n > 0, "Merkle: empty");
        while (n > 1) {
            n = _up(layer, n);
        }
        return layer[0];
    }

    /// @notice The proof of the leaf at `index`.
    function proofAt(bytes32[] memory leaves, uint256 index) internal pure returns (bytes32[] memory path) {
        bytes32[] memory layer = _copy(leaves);
        uint256 n = layer.length;
        require(index < n, "Merkle: index out of range");
        bytes32[] memory buf = new bytes32[](64);
        uint256 len;
        while (n > 1) {
            uint256 sibling = index ^ 1;
            if (sibling < n) buf[len++] = layer[sibling];
            n = _up(layer, n);
            index /= 2;
        }
        path = new bytes32[](len);
        for (uint256 i; i < len; ++i) {
            path[i] = buf[i];
        }
    }

    /// @notice The proof of the first leaf equal to `leaf`.
    function proof(bytes32[] memory leaves, bytes32 leaf) internal pure returns (bytes32[] memory) {
        for (uint256 i; i < leaves.length; ++i) {
            if (leaves[i] == leaf) return proofAt(leaves, i);
        }
        revert("Merkle: leaf not found");
    }
}
