// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Receipt} from "./Types.sol";

/// @title ReceiptLib
/// @notice Hashes a receipt into its batch Merkle leaf, exactly as docs/protocol.md states.
library ReceiptLib {
    /// @notice `keccak256(bytes.concat(keccak256(abi.encode(receipt))))`.
    /// @dev Double hashing keeps a 64-byte inner node from being presented as a leaf
    ///      (second-preimage attack on the commutative tree).
    function leaf(Receipt calldata receipt) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(receipt))));
    }
}
