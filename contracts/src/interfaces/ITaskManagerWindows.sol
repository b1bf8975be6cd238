// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title ITaskManagerWindows
/// @notice What Payments and the ServiceManager read from the TaskManager they are wired to: the
///         dispute span that holds a node's settled earnings, and each other's address (so that no
///         contract holds a second copy of a parameter or an address it could disagree on).
interface ITaskManagerWindows {
    /// @notice Seconds validators have to challenge a committed batch.
    function CHALLENGE_WINDOW() external view returns (uint256);

    /// @notice Seconds a batch stays disputable after its commit (its slot is kept that long).
    function BATCH_RETENTION() external view returns (uint256);

    /// @notice Seconds a vote lasts (an availability claim during it can extend it to two).
    function VOTE_WINDOW() external view returns (uint256);

    /// @notice The ServiceManager the TaskManager slashes through.
    function SERVICE_MANAGER() external view returns (address);

    /// @notice The Payments contract the TaskManager settles through.
    function PAYMENTS() external view returns (address);
}
