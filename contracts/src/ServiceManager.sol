// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IPayments} from "./interfaces/IPayments.sol";
import {IServiceManager} from "./interfaces/IServiceManager.sol";
import {ITaskManagerWindows} from "./interfaces/ITaskManagerWindows.sol";

/// @title ServiceManager
/// @notice Registry of staked operators: nodes (run agent tasks) and validators (re-check
///         sampled receipts and vote on disputes). Stake is native ETH.
/// @dev Lifecycle: register (with stake) -> addStake / update details -> requestUnbond ->
///      withdrawUnbonded after UNBONDING_PERIOD. Unbonding stake stays slashable; nothing can be
///      withdrawn while the operator is frozen (an open dispute) or locked (a batch of it is still
///      challengeable, or it voted on a dispute that is still open).
///
///      Wiring: the deployer calls {setTaskManager} exactly once after deploying the TaskManager
///      (which takes this contract's address in its constructor). Until then `slash`, `freeze`,
///      `unfreeze`, `lockStake` and `lockActiveNode` cannot be called by anyone.
///
///      An address has one role for life (node or validator). Nodes are listed in registration
///      order for discovery ({nodeCount}/{nodeAt}/{getNodes}); the list only grows, reads are
///      paged by the caller, and no state-changing function loops over it.
contract ServiceManager is IServiceManager, ReentrancyGuardTransient {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice What an address registered as. Fixed at first registration.
    enum Role {
        None,
        Node,
        Validator
    }

    /// @notice Stake bookkeeping of one operator.
    struct Operator {
        Role role;
        bool registered;
        uint32 frozenCount; // open disputes against the operator
        uint32 slashCount;
        uint64 unbondingReadyAt; // unix seconds when `unbonding` may be withdrawn
        uint64 lockedUntil; // unix seconds before which nothing may be withdrawn
        uint40 stakedAt; // unix seconds of the last stake increase (a vote counts only older stake)
        uint256 stake; // active stake
        uint256 unbonding; // requested out, still slashable
    }

    /// @notice Everything a client needs to discover and price a node, in one read.
    struct NodeView {
        address node;
        string endpoint;
        bytes32[] modelIds;
        uint256 pricePerToken;
        uint256 stake;
        uint256 unbonding;
        uint64 unbondingReadyAt;
        uint64 lockedUntil;
        uint32 frozenCount;
        uint32 slashCount;
        bool registered;
        bool active;
    }

    struct TotalCheckpoint {
        uint40 second;
        uint216 totalBefore;
    }

    struct NodeInfo {
        string endpoint;
        bytes32[] modelIds;
        uint256 pricePerToken;
    }

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Longest endpoint URL accepted, in bytes (sanity bound on storage written per node).
    uint256 public constant MAX_ENDPOINT_LENGTH = 256;

    /*//////////////////////////////////////////////////////////////
                               IMMUTABLES
    //////////////////////////////////////////////////////////////*/

    /// @notice Least active stake (wei) for a node to be active (commit batches, be discovered).
    uint256 public immutable MIN_NODE_STAKE;
    /// @notice Least active stake (wei) for a validator to be active (challenge and vote).
    uint256 public immutable MIN_VALIDATOR_STAKE;
    /// @notice Seconds between {requestUnbond} and {withdrawUnbonded}.
    uint256 public immutable UNBONDING_PERIOD;
    /// @notice Most model ids one node may list.
    uint256 public immutable MAX_MODELS;
    /// @notice The address allowed to call {setTaskManager} (once).
    address public immutable DEPLOYER;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @notice The dispute contract allowed to slash, freeze, unfreeze and lock.
    address public taskManager;
    /// @notice The OmissionManager, which may freeze, unfreeze and slash too (set once by the deployer).
    address public omissionManager;
    /// @notice Sum of the active stake of registered validators.
    uint256 public totalValidatorStake;
    /// @dev `totalValidatorStake` as it stood before the first change in second `second`: stake
    ///      added in the current second cannot vote in a challenge opened in it, so it must not
    ///      count in that challenge's quorum base either (`settledValidatorStake`).
    TotalCheckpoint internal _checkpoint;

    mapping(address => Operator) internal _operators;
    mapping(address => NodeInfo) internal _nodeInfo;
    /// @dev Validator => the served model ids it checks (declareCheckedModels).
    mapping(address => bytes32[]) internal _checkedModels;
    address[] internal _nodes;
    address[] internal _validators;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice The TaskManager was wired in (happens once).
    event TaskManagerSet(address indexed taskManager);
    /// @notice The OmissionManager was wired in (once).
    event OmissionManagerSet(address indexed omissionManager);
    /// @notice A node registered (or re-registered after deregistering).
    event NodeRegistered(
        address indexed node, string endpoint, bytes32[] modelIds, uint256 pricePerToken, uint256 stake
    );
    /// @notice A validator registered (or re-registered after deregistering).
    event ValidatorRegistered(address indexed validator, uint256 stake);
    /// @notice An operator added stake.
    event StakeAdded(address indexed operator, uint256 amount, uint256 newStake);
    /// @notice A node changed its endpoint.
    event EndpointUpdated(address indexed node, string endpoint);
    /// @notice A node changed its model list.
    event ModelsUpdated(address indexed node, bytes32[] modelIds);
    /// @notice A validator declared the served model ids it checks.
    event CheckedModelsDeclared(address indexed validator, bytes32[] modelIds);
    /// @notice A node changed its price.
    event PriceUpdated(address indexed node, uint256 pricePerToken);
    /// @notice Stake moved from active to unbonding; withdrawable from `readyAt`.
    event UnbondRequested(address indexed operator, uint256 amount, uint256 totalUnbonding, uint64 readyAt);
    /// @notice Unbonded stake was paid out.
    event UnbondedWithdrawn(address indexed operator, uint256 amount);
    /// @notice An operator left: its whole active stake is now unbonding.
    event Deregistered(address indexed operator);
    /// @notice Stake was taken from an operator and sent to the TaskManager.
    event Slashed(address indexed operator, uint256 amount, uint256 fromStake, uint256 fromUnbonding);
    /// @notice A dispute on `operator` opened; `frozenCount` is the number now open.
    event Frozen(address indexed operator, uint32 frozenCount);
    /// @notice A dispute on `operator` closed; `frozenCount` is the number still open.
    event Unfrozen(address indexed operator, uint32 frozenCount);
    /// @notice `operator`'s stake cannot be withdrawn before `until`.
    event StakeLocked(address indexed operator, uint64 until);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice A constructor argument is out of range.
    error InvalidParameter();
    /// @notice Only the deployer may wire the TaskManager.
    error OnlyDeployer();
    /// @notice The TaskManager is already wired.
    error TaskManagerAlreadySet();
    /// @notice The zero address was given.
    error ZeroAddress();
    /// @notice Only the TaskManager may call this.
    error OnlyTaskManager();
    /// @notice Only Payments sends ether to this contract outside registration and staking.
    error OnlyPayments();
    /// @notice The caller is already registered.
    error AlreadyRegistered();
    /// @notice The address is registered with the other role.
    error RoleMismatch();
    /// @notice The caller is not registered.
    error NotRegistered();
    /// @notice The caller is not a registered node.
    error NotANode();
    /// @notice The caller is not a registered validator.
    error NotAValidator();
    /// @notice Stake (sent or remaining) is below the minimum.
    error InsufficientStake(uint256 stake, uint256 minimum);
    /// @notice Too many model ids.
    error TooManyModels(uint256 count, uint256 maximum);
    /// @notice Endpoint empty or longer than MAX_ENDPOINT_LENGTH.
    error InvalidEndpoint();
    /// @notice Amount is zero.
    error ZeroAmount();
    /// @notice Unbond amount exceeds the active stake.
    error AmountExceedsStake(uint256 amount, uint256 stake);
    /// @notice Nothing is unbonding.
    error NothingToWithdraw();
    /// @notice The unbonding period has not passed.
    error UnbondingNotReady(uint64 readyAt);
    /// @notice A dispute on the operator is open.
    error OperatorFrozen(uint32 frozenCount);
    /// @notice The stake is locked (challengeable batch or open vote).
    error StakeIsLocked(uint64 until);
    /// @notice The operator has no open dispute to close.
    error NotFrozen();
    /// @notice Index past the end of the list.
    error IndexOutOfRange(uint256 index, uint256 length);
    /// @notice An ETH transfer failed.
    error TransferFailed();

    /*//////////////////////////////////////////////////////////////
                               MODIFIERS
    //////////////////////////////////////////////////////////////*/

    modifier onlyTaskManager() {
        if (msg.sender != taskManager || msg.sender == address(0)) revert OnlyTaskManager();
        _;
    }

    /// @dev The dispute contracts: the TaskManager, and the OmissionManager (omission challenges).
    modifier onlyDisputes() {
        if (msg.sender == address(0) || (msg.sender != taskManager && msg.sender != omissionManager)) {
            revert OnlyTaskManager();
        }
        _;
    }

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param minNodeStake MIN_NODE_STAKE in wei (default 2 ether).
    /// @param minValidatorStake MIN_VALIDATOR_STAKE in wei, > 0 (default 1 ether).
    /// @param unbondingPeriod UNBONDING_PERIOD in seconds (default 7 days; devnet 3600).
    /// @param maxModels MAX_MODELS, > 0 (default 16).
    constructor(uint256 minNodeStake, uint256 minValidatorStake, uint256 unbondingPeriod, uint256 maxModels) {
        if (minNodeStake == 0 || minValidatorStake == 0 || maxModels == 0) revert InvalidParameter();
        if (unbondingPeriod > type(uint32).max) revert InvalidParameter();
        MIN_NODE_STAKE = minNodeStake;
        MIN_VALIDATOR_STAKE = minValidatorStake;
        UNBONDING_PERIOD = unbondingPeriod;
        MAX_MODELS = maxModels;
        DEPLOYER = msg.sender;
    }

    /*//////////////////////////////////////////////////////////////
                                 WIRING
    //////////////////////////////////////////////////////////////*/

    /// @notice Wires the TaskManager. Callable once, by the deployer only.
    /// @param taskManager_ The TaskManager contract.
    function setTaskManager(address taskManager_) external {
        if (msg.sender != DEPLOYER) revert OnlyDeployer();
        if (taskManager != address(0)) revert TaskManagerAlreadySet();
        if (taskManager_ == address(0)) revert ZeroAddress();
        taskManager = taskManager_;
        emit TaskManagerSet(taskManager_);
    }

    /// @notice Wires in the OmissionManager (once, by the deployer, after the TaskManager).
    /// @param omissionManager_ The OmissionManager.
    function setOmissionManager(address omissionManager_) external {
        if (msg.sender != DEPLOYER) revert OnlyDeployer();
        if (omissionManager != address(0)) revert TaskManagerAlreadySet();
        if (omissionManager_ == address(0)) revert ZeroAddress();
        omissionManager = omissionManager_;
        emit OmissionManagerSet(omissionManager_);
    }

    /*//////////////////////////////////////////////////////////////
                              REGISTRATION
    //////////////////////////////////////////////////////////////*/

    /// @notice Registers the caller as a node; `msg.value` is its stake.
    /// @param endpoint Public URL of the node's API (1..MAX_ENDPOINT_LENGTH bytes).
    /// @param modelIds Models served (sha256 of each weights manifest), at most MAX_MODELS.
    /// @param pricePerToken Price in wei per generated token.
    function registerNode(string calldata endpoint, bytes32[] calldata modelIds, uint256 pricePerToken)
        external
        payable
    {
        Operator storage op = _operators[msg.sender];
        if (op.registered) revert AlreadyRegistered();
        if (op.role == Role.Validator) revert RoleMismatch();
        _checkEndpoint(endpoint);
        _checkModels(modelIds);
        uint256 stake = op.stake + msg.value;
        if (stake < MIN_NODE_STAKE) revert InsufficientStake(stake, MIN_NODE_STAKE);

        if (op.role == Role.None) {
            op.role = Role.Node;
            _nodes.push(msg.sender);
        }
        op.registered = true;
        op.stake = stake;
        NodeInfo storage info = _nodeInfo[msg.sender];
        info.endpoint = endpoint;
        info.modelIds = modelIds;
        info.pricePerToken = pricePerToken;
        emit NodeRegistered(msg.sender, endpoint, modelIds, pricePerToken, stake);
    }

    /// @notice Registers the caller as a validator; `msg.value` is its stake.
    function registerValidator() external payable {
        Operator storage op = _operators[msg.sender];
        if (op.registered) revert AlreadyRegistered();
        if (op.role == Role.Node) revert RoleMismatch();
        uint256 stake = op.stake + msg.value;
        if (stake < MIN_VALIDATOR_STAKE) revert InsufficientStake(stake, MIN_VALIDATOR_STAKE);

        if (op.role == Role.None) {
            op.role = Role.Validator;
            _validators.push(msg.sender);
        }
        op.registered = true;
        op.stake = stake;
        // forge-lint: disable-next-line(unsafe-typecast)
        op.stakedAt = uint40(block.timestamp);
        _setTotal(totalValidatorStake + stake);
        emit ValidatorRegistered(msg.sender, stake);
    }

    /// @notice Adds `msg.value` to the caller's active stake (a validator's must reach
    ///         MIN_VALIDATOR_STAKE).
    function addStake() external payable {
        Operator storage op = _operators[msg.sender];
        if (!op.registered) revert NotRegistered();
        if (msg.value == 0) revert ZeroAmount();
        uint256 stake = op.stake + msg.value;
        // A validator holds 0 or at least the minimum (as requestUnbond keeps it): stake below it
        // counted in the quorum's base yet could never vote (Review11).
        if (op.role == Role.Validator && stake < MIN_VALIDATOR_STAKE) {
            revert InsufficientStake(stake, MIN_VALIDATOR_STAKE);
        }
        op.stake = stake;
        // forge-lint: disable-next-line(unsafe-typecast)
        op.stakedAt = uint40(block.timestamp);
        if (op.role == Role.Validator) _setTotal(totalValidatorStake + msg.value);
        emit StakeAdded(msg.sender, msg.value, stake);
    }

    /// @notice Replaces the caller's endpoint URL.
    /// @param endpoint New URL (1..MAX_ENDPOINT_LENGTH bytes).
    function updateEndpoint(string calldata endpoint) external {
        _requireRegisteredNode();
        _checkEndpoint(endpoint);
        _nodeInfo[msg.sender].endpoint = endpoint;
        emit EndpointUpdated(msg.sender, endpoint);
    }

    /// @notice Replaces the caller's model list.
    /// @param modelIds New list, at most MAX_MODELS entries.
    function updateModels(bytes32[] calldata modelIds) external {
        _requireRegisteredNode();
        _checkModels(modelIds);
        _nodeInfo[msg.sender].modelIds = modelIds;
        emit ModelsUpdated(msg.sender, modelIds);
    }

    /// @notice Declares the served model ids the calling validator checks (holds the weights to
    ///         re-score their calls), replacing its last declaration. A receipt under a model no
    ///         validator holds is unverifiable whatever it says, and with quorums over the whole
    ///         validator stake one holder decides its challenges alone: clients sign requests only
    ///         for ids declared by validators holding at least QUORUM_BPS of the stake
    ///         (`supernet.sdk.chain.coverage`). A declaration is a claim of work, not a proof.
    /// @param modelIds At most MAX_MODELS ids.
    function declareCheckedModels(bytes32[] calldata modelIds) external {
        Operator storage op = _operators[msg.sender];
        if (op.role != Role.Validator || !op.registered) revert NotAValidator();
        _checkModels(modelIds);
        _checkedModels[msg.sender] = modelIds;
        emit CheckedModelsDeclared(msg.sender, modelIds);
    }

    /// @notice The served model ids `validator` declared it checks (empty: none).
    /// @param validator The validator.
    function checkedModels(address validator) external view returns (bytes32[] memory) {
        return _checkedModels[validator];
    }

    /// @notice Replaces the caller's price per token.
    /// @param pricePerToken New price in wei per generated token.
    function updatePrice(uint256 pricePerToken) external {
        _requireRegisteredNode();
        _nodeInfo[msg.sender].pricePerToken = pricePerToken;
        emit PriceUpdated(msg.sender, pricePerToken);
    }

    /*//////////////////////////////////////////////////////////////
                               UNBONDING
    //////////////////////////////////////////////////////////////*/

    /// @notice Moves `amount` of active stake to unbonding; restarts the unbonding clock for the
    ///         whole unbonding amount. A validator must keep 0 or at least MIN_VALIDATOR_STAKE.
    /// @param amount Wei to unbond (<= active stake).
    function requestUnbond(uint256 amount) external {
        Operator storage op = _operators[msg.sender];
        if (op.role == Role.None) revert NotRegistered();
        if (amount == 0) revert ZeroAmount();
        uint256 stake = op.stake;
        if (amount > stake) revert AmountExceedsStake(amount, stake);
        uint256 remaining = stake - amount;
        if (op.role == Role.Validator && op.registered) {
            if (remaining != 0 && remaining < MIN_VALIDATOR_STAKE) {
                revert InsufficientStake(remaining, MIN_VALIDATOR_STAKE);
            }
            _setTotal(totalValidatorStake - amount);
        }
        _unbond(op, msg.sender, amount, remaining);
    }

    /// @notice Leaves the network: the whole active stake starts unbonding and the caller is no
    ///         longer registered (it may register again later with the same role).
    function deregister() external {
        Operator storage op = _operators[msg.sender];
        if (!op.registered) revert NotRegistered();
        op.registered = false;
        uint256 stake = op.stake;
        if (op.role == Role.Validator) _setTotal(totalValidatorStake - stake);
        emit Deregistered(msg.sender);
        if (stake != 0) _unbond(op, msg.sender, stake, 0);
    }

    /// @notice Pays out the caller's unbonding stake once UNBONDING_PERIOD has passed, no dispute
    ///         on it is open and its stake lock has expired.
    function withdrawUnbonded() external nonReentrant {
        Operator storage op = _operators[msg.sender];
        uint256 amount = op.unbonding;
        if (amount == 0) revert NothingToWithdraw();
        if (op.frozenCount != 0) revert OperatorFrozen(op.frozenCount);
        if (block.timestamp < op.unbondingReadyAt) revert UnbondingNotReady(op.unbondingReadyAt);
        if (block.timestamp < op.lockedUntil) revert StakeIsLocked(op.lockedUntil);
        op.unbonding = 0;
        emit UnbondedWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////
                         DISPUTE HOOKS (TASKMANAGER)
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IServiceManager
    function slash(address operator, uint256 amount) external onlyDisputes nonReentrant returns (uint256 slashed) {
        Operator storage op = _operators[operator];
        uint256 fromStake = amount < op.stake ? amount : op.stake;
        uint256 rest = amount - fromStake;
        uint256 fromUnbonding = rest < op.unbonding ? rest : op.unbonding;
        slashed = fromStake + fromUnbonding;
        op.stake -= fromStake;
        op.unbonding -= fromUnbonding;
        op.slashCount += 1;
        if (op.role == Role.Validator && op.registered) {
            // A validator holds 0 or at least MIN_VALIDATOR_STAKE, as addStake and requestUnbond
            // ask: a remainder under it could never vote, yet would count in every later quorum
            // base (contracts/test/Review21.t.sol). It starts unbonding (still slashable there).
            uint256 left = op.stake;
            uint256 dropped = left != 0 && left < MIN_VALIDATOR_STAKE ? left : 0;
            _setTotal(totalValidatorStake - fromStake - dropped);
            if (dropped != 0) _unbond(op, operator, dropped, 0);
        }
        // Past the stake, a node's fees still held (Payments' hold: the disputes over what they
        // paid are not over) answer for it: a node cannot settle more in one window than
        // verdicts can take back (docs/security-parameters.md, "Held earnings").
        if (slashed < amount && op.role == Role.Node) slashed += _seizeHeld(operator, amount - slashed);
        emit Slashed(operator, slashed, fromStake, fromUnbonding);
        if (slashed != 0) _send(msg.sender, slashed);
    }

    /// @notice Accepts a slashed node's held earnings from Payments only (during `slash`).
    receive() external payable {
        if (msg.sender != address(_payments())) revert OnlyPayments();
    }

    /// @inheritdoc IServiceManager
    function freeze(address operator) external onlyDisputes {
        uint32 count = _operators[operator].frozenCount + 1;
        _operators[operator].frozenCount = count;
        emit Frozen(operator, count);
    }

    /// @inheritdoc IServiceManager
    function unfreeze(address operator, uint64 lockUntil) external onlyDisputes {
        Operator storage op = _operators[operator];
        uint32 count = op.frozenCount;
        if (count == 0) revert NotFrozen();
        unchecked {
            --count;
        }
        op.frozenCount = count;
        emit Unfrozen(operator, count);
        if (lockUntil != 0) _lock(op, operator, lockUntil);
    }

    /// @inheritdoc IServiceManager
    function lockStake(address operator, uint64 until) external onlyTaskManager {
        _lock(_operators[operator], operator, until);
    }

    /// @inheritdoc IServiceManager
    function lockActiveNode(address node, uint64 until) external onlyTaskManager returns (bool active) {
        Operator storage op = _operators[node];
        if (!_isActiveNode(op)) return false;
        _lock(op, node, until);
        return true;
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @inheritdoc IServiceManager
    function stakeLeavesAt(address operator, uint256 keep) external view returns (uint64) {
        Operator storage op = _operators[operator];
        if (_isActiveNode(op) || op.stake >= keep || op.unbonding == 0) return 0;
        return op.unbondingReadyAt > op.lockedUntil ? op.unbondingReadyAt : op.lockedUntil;
    }

    /// @inheritdoc IServiceManager
    function isActiveNode(address node) public view returns (bool) {
        return _isActiveNode(_operators[node]);
    }

    /// @inheritdoc IServiceManager
    function isActiveValidator(address validator) public view returns (bool) {
        Operator storage op = _operators[validator];
        return op.registered && op.role == Role.Validator && op.stake >= MIN_VALIDATOR_STAKE;
    }

    /// @inheritdoc IServiceManager
    function validatorStake(address validator) external view returns (uint256) {
        return isActiveValidator(validator) ? _operators[validator].stake : 0;
    }

    /// @inheritdoc IServiceManager
    function settledValidatorStake() external view returns (uint256) {
        TotalCheckpoint memory cp = _checkpoint;
        return cp.second == block.timestamp ? cp.totalBefore : totalValidatorStake;
    }

    /// @inheritdoc IServiceManager
    function votingStake(address validator, uint256 since) external view returns (uint256) {
        if (!isActiveValidator(validator) || _operators[validator].stakedAt >= since) return 0;
        return _operators[validator].stake;
    }

    /// @notice Stake bookkeeping of any address (zeroes for unknown addresses).
    /// @param operator The address.
    function getOperator(address operator) external view returns (Operator memory) {
        return _operators[operator];
    }

    /// @notice Full view of a node (zeroes and `registered == false` for unknown addresses).
    /// @param node The node address.
    function getNode(address node) external view returns (NodeView memory v) {
        Operator storage op = _operators[node];
        NodeInfo storage info = _nodeInfo[node];
        v.node = node;
        v.endpoint = info.endpoint;
        v.modelIds = info.modelIds;
        v.pricePerToken = info.pricePerToken;
        v.stake = op.stake;
        v.unbonding = op.unbonding;
        v.unbondingReadyAt = op.unbondingReadyAt;
        v.lockedUntil = op.lockedUntil;
        v.frozenCount = op.frozenCount;
        v.slashCount = op.slashCount;
        v.registered = op.registered && op.role == Role.Node;
        v.active = isActiveNode(node);
    }

    /// @notice Number of addresses that ever registered as a node (active or not).
    function nodeCount() external view returns (uint256) {
        return _nodes.length;
    }

    /// @notice The `index`-th node address in registration order.
    /// @param index Position, < nodeCount().
    function nodeAt(uint256 index) external view returns (address) {
        if (index >= _nodes.length) revert IndexOutOfRange(index, _nodes.length);
        return _nodes[index];
    }

    /// @notice Up to `limit` node addresses starting at `start` (a page for discovery).
    /// @param start First position.
    /// @param limit Most addresses returned.
    function getNodes(uint256 start, uint256 limit) external view returns (address[] memory page) {
        uint256 length = _nodes.length;
        if (start >= length) return new address[](0);
        uint256 end = length - start < limit ? length : start + limit;
        page = new address[](end - start);
        for (uint256 i = start; i < end; ++i) {
            page[i - start] = _nodes[i];
        }
    }

    /// @notice Number of addresses that ever registered as a validator.
    function validatorCount() external view returns (uint256) {
        return _validators.length;
    }

    /// @notice The `index`-th validator address in registration order.
    /// @param index Position, < validatorCount().
    function validatorAt(uint256 index) external view returns (address) {
        if (index >= _validators.length) revert IndexOutOfRange(index, _validators.length);
        return _validators[index];
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    /// @dev Every change of `totalValidatorStake` goes through here, so `_checkpoint` holds its
    ///      value at the start of the current second.
    function _setTotal(uint256 total) internal {
        if (_checkpoint.second != block.timestamp) {
            // forge-lint: disable-next-line(unsafe-typecast)
            _checkpoint = TotalCheckpoint({second: uint40(block.timestamp), totalBefore: uint216(totalValidatorStake)});
        }
        totalValidatorStake = total;
    }

    function _unbond(Operator storage op, address operator, uint256 amount, uint256 remaining) internal {
        op.stake = remaining;
        uint256 unbonding = op.unbonding + amount;
        op.unbonding = unbonding;
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 readyAt = uint64(block.timestamp + UNBONDING_PERIOD);
        op.unbondingReadyAt = readyAt;
        emit UnbondRequested(operator, amount, unbonding, readyAt);
    }

    function _isActiveNode(Operator storage op) internal view returns (bool) {
        return op.registered && op.role == Role.Node && op.stake >= MIN_NODE_STAKE;
    }

    /// @dev Moves `op`'s lock forward to `until` (never backwards).
    function _lock(Operator storage op, address operator, uint64 until) internal {
        if (until > op.lockedUntil) {
            op.lockedUntil = until;
            emit StakeLocked(operator, until);
        }
    }

    function _requireRegisteredNode() internal view {
        Operator storage op = _operators[msg.sender];
        if (op.role != Role.Node) revert NotANode();
        if (!op.registered) revert NotRegistered();
    }

    function _checkEndpoint(string calldata endpoint) internal pure {
        uint256 length = bytes(endpoint).length;
        if (length == 0 || length > MAX_ENDPOINT_LENGTH) revert InvalidEndpoint();
    }

    function _checkModels(bytes32[] calldata modelIds) internal view {
        if (modelIds.length > MAX_MODELS) revert TooManyModels(modelIds.length, MAX_MODELS);
    }

    /// @dev Takes up to `amount` of `node`'s held earnings from Payments into this contract.
    function _seizeHeld(address node, uint256 amount) internal returns (uint256) {
        IPayments payments = _payments();
        if (address(payments) == address(0)) return 0;
        return payments.seize(node, amount);
    }

    /// @dev Payments, as the TaskManager knows it (one address, never a second copy); none while
    ///      the TaskManager is unwired.
    function _payments() internal view returns (IPayments) {
        address tm = taskManager;
        if (tm == address(0)) return IPayments(address(0));
        return IPayments(ITaskManagerWindows(tm).PAYMENTS());
    }

    function _send(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
