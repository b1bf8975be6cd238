// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ReceiptPromise, TaskRequest} from "../libraries/Types.sol";

/// @title IPayments
/// @notice The part of Payments that the TaskManager calls: settlement when a node commits a
///         batch, and decoy bounties from a node's verification escrow.
interface IPayments {
    /// @notice Redeems packed vouchers of channels to `node` into its account. Only the TaskManager.
    /// @return total Wei redeemed (earnings plus the escrow share).
    function settle(address node, bytes calldata vouchers) external returns (uint256 total);

    /// @notice Pays a decoy bounty from `node`'s escrow: the bounty to the TaskManager (for the
    ///         validator), the rebate to `node`'s earnings. Only the TaskManager.
    /// @return bounty Wei sent to the TaskManager.
    /// @return rebate Wei credited to the node.
    function payBounty(address node) external returns (uint256 bounty, uint256 rebate);

    /// @notice Takes up to `amount` of `node`'s held earnings (fees redeemed within the hold) for
    ///         a slash its stake did not cover, sent to the caller. Only the ServiceManager.
    /// @return taken Wei taken.
    function seize(address node, uint256 amount) external returns (uint256 taken);

    /// @notice What one found decoy takes from its node's escrow (bounty plus rebate).
    function DECOY_BOUNTY() external view returns (uint256);

    /// @notice EIP-712 digest of `Decoy(node, requestHash)` in the protocol's domain.
    function hashDecoy(address node, bytes32 requestHash) external view returns (bytes32);

    /// @notice EIP-712 digest of a task request in the protocol's domain (its `requestHash`).
    function hashTaskRequest(TaskRequest calldata request) external view returns (bytes32);

    /// @notice EIP-712 digest of a node's receipt promise in the protocol's domain.
    function hashReceiptPromise(ReceiptPromise calldata receiptPromise) external view returns (bytes32);
}
