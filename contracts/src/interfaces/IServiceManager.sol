// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title IServiceManager
/// @notice The part of the operator registry that the dispute logic (TaskManager) relies on.
interface IServiceManager {
    /// @notice Seconds between a request to unbond and the withdrawal of that stake.
    function UNBONDING_PERIOD() external view returns (uint256);

    /// @notice True iff `node` is a registered node with at least the minimum node stake.
    function isActiveNode(address node) external view returns (bool);

    /// @notice True iff `validator` is a registered validator with at least the minimum validator stake.
    function isActiveValidator(address validator) external view returns (bool);

    /// @notice Active stake of `validator` if it is an active validator, else 0 (its vote weight).
    function validatorStake(address validator) external view returns (uint256);

    /// @notice Sum of the active stake of all registered validators (the quorum base).
    function totalValidatorStake() external view returns (uint256);

    /// @notice `totalValidatorStake` without the stake added in the current second, which cannot
    ///         vote in a challenge opened now (`votingStake`): a challenge's quorum base.
    function settledValidatorStake() external view returns (uint256);

    /// @notice The active stake of a registered validator if none of it was added at or after
    ///         `since` (a challenge's opening time), else 0: stake that joins a dispute late
    ///         cannot vote in it.
    function votingStake(address validator, uint256 since) external view returns (uint256);

    /// @notice Takes up to `amount` wei from `operator` (active stake first, then unbonding stake,
    ///         then, for a node, its earnings Payments still holds) and sends it to the caller.
    ///         Only the TaskManager and the OmissionManager.
    /// @return slashed The wei actually taken (less than `amount` when the operator has less).
    function slash(address operator, uint256 amount) external returns (uint256 slashed);

    /// @notice Opens one dispute on `operator`: it cannot withdraw unbonded stake until every
    ///         dispute is closed. Only the TaskManager.
    function freeze(address operator) external;

    /// @notice Closes one dispute on `operator` and, when `lockUntil` is not 0, locks its stake
    ///         until then like {lockStake} (a dispute that ends by reopening a window holds the
    ///         stake that window could slash). Only the TaskManager and the OmissionManager.
    function unfreeze(address operator, uint64 lockUntil) external;

    /// @notice Keeps `operator`'s stake (active and unbonding) in the contract until `until`
    ///         (unix seconds); a lock never moves backwards. Only the TaskManager.
    function lockStake(address operator, uint64 until) external;

    /// @notice When `operator`'s stake may fall below `keep`: 0 while it is an active node (it
    ///         can still commit), its active stake is at least `keep` or nothing is unbonding, else
    ///         the time its unbonding stake may be withdrawn (the later of `unbondingReadyAt` and
    ///         its lock). A claim must be able to open before it.
    function stakeLeavesAt(address operator, uint256 keep) external view returns (uint64);

    /// @notice One call for a batch commit: if `node` is an active node, locks its stake until
    ///         `until` like {lockStake} and returns true; otherwise changes nothing and returns
    ///         false. Only the TaskManager.
    function lockActiveNode(address node, uint64 until) external returns (bool active);
}
