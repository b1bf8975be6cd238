// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title ModelRegistry
/// @notice Names model weights by content: `modelId` = sha256 of the canonical weights manifest,
///         stored with the manifest's CID on the content store. Entries are permanent and
///         first-come: the id is a content hash, so whoever registers it first publishes the same
///         bytes anyone else would (anyone can re-hash the manifest behind the CID to check it).
contract ModelRegistry {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice One registered model.
    struct Model {
        string manifestCid;
        string name;
        address publisher;
        uint64 registeredAt;
    }

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Longest CID or name accepted, in bytes.
    uint256 public constant MAX_STRING_LENGTH = 256;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    mapping(bytes32 => Model) internal _models;
    bytes32[] internal _modelIds;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice A model was registered.
    event ModelRegistered(bytes32 indexed modelId, address indexed publisher, string manifestCid, string name);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice The model id is zero.
    error ZeroModelId();
    /// @notice The manifest CID is empty or too long.
    error InvalidManifestCid();
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

    /// @notice Registers a model.
    /// @param modelId sha256 of the canonical weights manifest (non-zero).
    /// @param manifestCid CID of that manifest (1..MAX_STRING_LENGTH bytes).
    /// @param name Human-readable name (0..MAX_STRING_LENGTH bytes).
    function registerModel(bytes32 modelId, string calldata manifestCid, string calldata name) external {
        if (modelId == bytes32(0)) revert ZeroModelId();
        uint256 cidLength = bytes(manifestCid).length;
        if (cidLength == 0 || cidLength > MAX_STRING_LENGTH) revert InvalidManifestCid();
        if (bytes(name).length > MAX_STRING_LENGTH) revert InvalidName();
        Model storage m = _models[modelId];
        if (m.publisher != address(0)) revert ModelAlreadyRegistered(modelId);
        m.manifestCid = manifestCid;
        m.name = name;
        m.publisher = msg.sender;
        m.registeredAt = uint64(block.timestamp);
        _modelIds.push(modelId);
        emit ModelRegistered(modelId, msg.sender, manifestCid, name);
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
