// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title IPayments
/// @notice The part of Payments that the TaskManager calls when a node commits a batch.
interface IPayments {
    /// @notice Redeems packed vouchers of channels to `node` and pays `node`. Only the TaskManager.
    /// @return total Wei paid to `node`.
    function settle(address node, bytes calldata vouchers) external returns (uint256 total);
}
