// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/*//////////////////////////////////////////////////////////////
                    PROTOCOL TYPES (docs/protocol.md)
//////////////////////////////////////////////////////////////*/

/// @notice A user's signed request for one task (EIP-712 type `TaskRequest`).
/// @dev Its EIP-712 digest is the task id (`requestHash`). Field order is normative.
struct TaskRequest {
    address user;
    address node;
    bytes32 modelId;
    bytes32 agentHash;
    bytes32 inputHash;
    uint256 maxFee;
    uint256 nonce;
    uint256 deadline;
}

/// @notice A user's cumulative IOU to one node (EIP-712 type `Voucher`).
struct Voucher {
    address user;
    address node;
    uint256 cumulativeAmount;
}

/// @notice A user's consent to one irreversible action (EIP-712 type `Confirmation`).
struct Confirmation {
    bytes32 requestHash;
    bytes32 actionHash;
}

/// @notice A node's promise that the receipt with leaf `leaf` of task `requestHash` is committed in
///         one of its batches by `commitBy` (EIP-712 type `ReceiptPromise`, signed by the node and
///         handed to the user with the receipt). A promise not kept is slashable
///         (TaskManager.challengeOmission): a receipt a node leaves out of its batches can no
///         longer escape sampling for free.
struct ReceiptPromise {
    bytes32 requestHash;
    bytes32 leaf;
    uint256 commitBy;
}

/// @notice One executed task, a leaf of a committed batch.
struct Receipt {
    bytes32 requestHash; // EIP-712 digest of the TaskRequest
    address user;
    bytes32 modelId;
    bytes32 inputHash; // sha256 of the input
    bytes32 outputHash; // sha256 of the UTF-8 output
    bytes32 traceHash; // sha256 of the dag-cbor trace block (the digest inside its CIDv1)
    uint256 fee; // wei charged for this task
}
