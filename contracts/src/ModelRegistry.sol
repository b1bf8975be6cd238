// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title ModelRegistry
/// @notice Names model weights by content: the registrant posts the canonical weights manifest and
///         the contract computes `modelId = sha256(manifest)` itself. An id therefore names exactly
///         one manifest, and nobody can occupy the id of weights they do not describe (an id that
///         was merely *claimed* could be squatted forever with a wrong manifest CID). The manifest's
///         content-store CID follows from the id (CIDv1, raw, sha2-256 = modelId); the bytes are
///         also in the registration's calldata. Entries are permanent; the first registrant's
///         `name` is a label, not an authority (the manifest is).
contract ModelRegistry {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice One registered model.
    struct Model {
        string name;
        address publisher;
        uint64 registeredAt;
    }

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Longest name accepted, in bytes.
    uint256 public constant MAX_STRING_LENGTH = 256;
    /// @notice Largest manifest accepted, in bytes (a 135M-parameter model's is ~46 KB).
    uint256 public constant MAX_MANIFEST_LENGTH = 1 << 20;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    mapping(bytes32 => Model) internal _models;
    bytes32[] internal _modelIds;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice A model was registered.
    event ModelRegistered(bytes32 indexed modelId, address indexed publisher, string name);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice The manifest is empty or larger than MAX_MANIFEST_LENGTH.
    error InvalidManifest();
    /// @notice The name is too long.
    error InvalidName();
    /// @notice The id is already registered.
    error ModelAlreadyRegistered(bytes32 modelId);
    /// @notice The id is not registered.
    error UnknownModel(bytes32 modelId);
    /// @notice Index past the end of the list.
    error IndexOutOfRange(uint256 index, uint256 length);

    /*//////////////////////////////////////////////////////////////
                                 WRITES
    //////////////////////////////////////////////////////////////*/

    /// @notice Registers the model whose canonical weights manifest is `manifest`.
    /// @param manifest The manifest's canonical bytes (1..MAX_MANIFEST_LENGTH).
    /// @param name Human-readable name (0..MAX_STRING_LENGTH bytes).
    /// @return modelId sha256 of `manifest`.
    function registerModel(bytes calldata manifest, string calldata name) external returns (bytes32 modelId) {
        if (manifest.length == 0 || manifest.length > MAX_MANIFEST_LENGTH) revert InvalidManifest();
        if (bytes(name).length > MAX_STRING_LENGTH) revert InvalidName();
        modelId = sha256(manifest);
        Model storage m = _models[modelId];
        if (m.publisher != address(0)) revert ModelAlreadyRegistered(modelId);
        m.name = name;
        m.publisher = msg.sender;
        // forge-lint: disable-next-line(unsafe-typecast)
        m.registeredAt = uint64(block.timestamp);
        _modelIds.push(modelId);
        emit ModelRegistered(modelId, msg.sender, name);
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice The model registered under `modelId`; reverts with UnknownModel if none.
    /// @param modelId The model id.
    function getModel(bytes32 modelId) external view returns (Model memory) {
        Model storage m = _models[modelId];
        if (m.publisher == address(0)) revert UnknownModel(modelId);
        return m;
    }

    /// @notice True iff `modelId` is registered.
    /// @param modelId The model id.
    function isRegistered(bytes32 modelId) external view returns (bool) {
        return _models[modelId].publisher != address(0);
    }

    /// @notice Number of registered models.
    function modelCount() external view returns (uint256) {
        return _modelIds.length;
    }

    /// @notice The `index`-th registered model id.
    /// @param index Position, < modelCount().
    function modelAt(uint256 index) external view returns (bytes32) {
        if (index >= _modelIds.length) revert IndexOutOfRange(index, _modelIds.length);
        return _modelIds[index];
    }
}
