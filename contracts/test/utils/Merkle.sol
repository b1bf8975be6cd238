// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice Builds the batch tree of docs/protocol.md in Solidity, for tests: leaves sorted,
///         sorted-pair keccak256 (OpenZeppelin's commutative hash), an odd layer carries its
///         last node up unchanged.
library Merkle {
    function hashPair(bytes32 a, bytes32 b) internal pure returns (bytes32) {
        return a < b ? keccak256(abi.encode(a, b)) : keccak256(abi.encode(b, a));
    }

    function sorted(bytes32[] memory leaves) internal pure returns (bytes32[] memory out) {
        out = new bytes32[](leaves.length);
        for (uint256 i; i < leaves.length; ++i) {
            bytes32 x = leaves[i];
            uint256 j = i;
            while (j > 0 && out[j - 1] > x) {
                out[j] = out[j - 1];
                --j;
            }
            out[j] = x;
        }
    }

    function root(bytes32[] memory leaves) internal pure returns (bytes32) {
        bytes32[] memory layer = sorted(leaves);
        uint256 n = layer.length;
        require(n > 0, "Merkle: empty");
        while (n > 1) {
            uint256 m = (n + 1) / 2;
            for (uint256 i; i < m; ++i) {
                layer[i] = 2 * i + 1 < n ? hashPair(layer[2 * i], layer[2 * i + 1]) : layer[2 * i];
            }
            n = m;
        }
        return layer[0];
    }

    function proof(bytes32[] memory leaves, bytes32 leaf) internal pure returns (bytes32[] memory path) {
        bytes32[] memory layer = sorted(leaves);
        uint256 n = layer.length;
        uint256 idx = type(uint256).max;
        for (uint256 i; i < n; ++i) {
            if (layer[i] == leaf) idx = i;
        }
        require(idx != type(uint256).max, "Merkle: leaf not found");
        bytes32[] memory buf = new bytes32[](64);
        uint256 len;
        while (n > 1) {
            uint256 sibling = idx ^ 1;
            if (sibling < n) buf[len++] = layer[sibling];
            uint256 m = (n + 1) / 2;
            for (uint256 i; i < m; ++i) {
                layer[i] = 2 * i + 1 < n ? hashPair(layer[2 * i], layer[2 * i + 1]) : layer[2 * i];
            }
            idx /= 2;
            n = m;
        }
        path = new bytes32[](len);
        for (uint256 i; i < len; ++i) {
            path[i] = buf[i];
        }
    }
}
