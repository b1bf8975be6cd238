// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

import {IServiceManager} from "./interfaces/IServiceManager.sol";
import {ITaskManagerWindows} from "./interfaces/ITaskManagerWindows.sol";
import {Confirmation, ReceiptPromise, TaskRequest, Voucher} from "./libraries/Types.sol";

/// @title Payments
/// @notice Payment channels from users to nodes (native ETH), paid through EIP-712 cumulative
///         vouchers.
/// @dev This contract is the `verifyingContract` of the one EIP-712 domain of the protocol
///      (name "Supernet", version "1"), for `TaskRequest`, `Voucher` and `Confirmation`.
///
///      A user funds one channel per node. A channel's deposit can pay only that node, so what a
///      node admits work against is money no other node can take first (a single deposit that
///      every node counted on could be promised to all of them and paid to one). The deposit and
///      what the node redeemed share one storage slot, so a redemption writes one existing slot.
///
///      Vouchers are cumulative per (user, node): the node redeems `cumulativeAmount` minus what it
///      already received, capped by the channel's deposit. A voucher whose amount is not above
///      what was already redeemed reverts with {StaleVoucher} (replays are rejected, never silently
///      skipped). A channel that does not cover the voucher pays what there is, and `redeemed`
///      grows by exactly that, so the same voucher pays the rest after a top-up.
///
///      A user leaves a channel in two steps: {requestWithdrawal} starts WITHDRAWAL_DELAY, during
///      which the node can still redeem its latest voucher (and stops admitting work: it sees the
///      request on chain); {withdraw} then pays the user what the node did not redeem.
///
///      Vouchers travel packed (docs/protocol.md, "Settlement"): 96 bytes each,
///      `user << 96 | cumulativeAmount` (a uint96), then the EIP-2098 compact signature `r`, `vs`.
///      The node is not in the record: it is the caller (or, for {settle}, the node whose batch the
///      TaskManager is committing). A node settles in the transaction that commits its batch
///      ({TaskManager-commitBatch} calls {settle}), or alone with {redeem} (e.g. before a channel's
///      close delay ends).
///
///      Verification is paid from fees (docs/security-parameters.md, "Paying validators"):
///      VERIFICATION_SHARE_BPS of every redeemed fee goes to the node's verification escrow, the
///      rest to its held earnings, both in one slot per node ({NodeAccount}), so a redemption writes
///      one existing slot for the node instead of sending it ether (5,000 gas instead of ~9,100). The
///      node pulls its earnings with {withdrawEarnings}. The escrow can only leave as decoy
///      bounties the TaskManager pays to validators who found one of the node's decoys
///      ({payBounty}): no function returns it to the node, so it is spent on verification whether
///      or not the node plants decoys, and the node's only way to get part of it back is the
///      TaskManager's rebate on decoys that validators found.
///
///      Earnings are held before they can be withdrawn (docs/security-parameters.md, "Held
///      earnings"): what a redemption credits stays in the node's account, and slashable, until
///      every dispute over the receipts it paid is over, so what a node can take out of one window
///      is bounded by what verdicts can take from it (stake, then held earnings: {seize}), not by
///      its stake alone. The hold ({holdPeriod}) lasts until the last verdict any receipt the fee
///      paid can still get: a voucher can be redeemed as soon as its request arrives, the receipt
///      committed as late as its promise can fall due (the request's deadline, at most
///      MAX_REQUEST_AHEAD after the request, plus the OmissionManager's MAX_PROMISE_DELAY =
///      UNBONDING_PERIOD / 2), its disputes open within BATCH_RETENTION of the commit and the last
///      one's vote lasts at most two VOTE_WINDOWs (extended by an availability claim). Read from
///      the TaskManager and the ServiceManager when wired, never a second copy of a parameter
///      (contracts/test/Review14.t.sol). Held fees sit in two buckets per node: fees credited in
///      period `k` of {holdPeriod} seconds are withdrawable from period `k + 2`, so each is held
///      between one and two periods. The current period's bucket shares the slot a redemption
///      writes anyway ({NodeAccount}); the previous one and what is free sit in a second slot
///      ({NodeEarnings}), written when a period rolls over, so a redemption still writes one slot.
contract Payments is EIP712, ReentrancyGuardTransient {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice One (user, node) channel in one slot: wei deposited in total, wei redeemed in total.
    struct Channel {
        uint128 deposit;
        uint128 redeemed;
    }

    /// @notice What a redemption writes, in one slot: the node's verification escrow (paid out
    ///         only as decoy bounties), the fees credited in hold period `period` (held), and
    ///         that period (0: never set).
    struct NodeAccount {
        uint96 escrow;
        uint96 held;
        uint64 period;
    }

    /// @notice The rest of a node's earnings, in one slot written when a period rolls over:
    ///         what it can withdraw (`free`: fees past their hold, decoy rebates) and the fees
    ///         credited in the period before {NodeAccount-period} (`previous`, held). `opened`
    ///         (set by {fundEscrow}) keeps the slot from ever being empty, so a roll rewrites it.
    struct NodeEarnings {
        uint128 free;
        uint120 previous;
        uint8 opened;
    }

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice keccak256 of the `TaskRequest` EIP-712 type string.
    bytes32 public constant TASK_REQUEST_TYPEHASH = keccak256(
        "TaskRequest(address user,address node,bytes32 modelId,bytes32 agentHash,bytes32 inputHash,uint256 maxFee,uint256 nonce,uint256 deadline)"
    );
    /// @notice keccak256 of the `Voucher` EIP-712 type string.
    bytes32 public constant VOUCHER_TYPEHASH = keccak256("Voucher(address user,address node,uint256 cumulativeAmount)");
    /// @notice keccak256 of the `Confirmation` EIP-712 type string.
    bytes32 public constant CONFIRMATION_TYPEHASH = keccak256("Confirmation(bytes32 requestHash,bytes32 actionHash)");
    /// @notice keccak256 of the `Decoy` EIP-712 type string: a receipt's user declares the task a
    ///         decoy its node planted (only the node's own decoy accounts ever sign one).
    bytes32 public constant DECOY_TYPEHASH = keccak256("Decoy(address node,bytes32 requestHash)");
    /// @notice keccak256 of the `ReceiptPromise` EIP-712 type string: a node's promise to commit a
    ///         receipt by a time.
    bytes32 public constant RECEIPT_PROMISE_TYPEHASH =
        keccak256("ReceiptPromise(bytes32 requestHash,bytes32 leaf,uint256 commitBy)");
    /// @notice Basis-point denominator.
    uint256 public constant BPS = 10_000;
    /// @notice Bytes of one packed voucher: `user << 96 | cumulativeAmount`, `r`, `vs`.
    uint256 public constant PACKED_VOUCHER_SIZE = 96;
    /// @notice The latest request deadline the hold covers, after the request: a user who signs a
    ///         later one gives its node that much more time than the hold (the SDK signs 600 s).
    uint256 public constant MAX_REQUEST_AHEAD = 1 hours;

    /*//////////////////////////////////////////////////////////////
                               IMMUTABLES
    //////////////////////////////////////////////////////////////*/

    /// @notice Seconds between {requestWithdrawal} and {withdraw}: the node's time to redeem.
    uint256 public immutable WITHDRAWAL_DELAY;
    /// @notice Most vouchers in one {redeem} or {settle} call.
    uint256 public immutable MAX_REDEEM_BATCH;
    /// @notice The address allowed to call {setTaskManager} (once).
    address public immutable DEPLOYER;
    /// @notice Share (bps) of every redeemed fee that goes to the node's verification escrow.
    uint256 public immutable VERIFICATION_SHARE_BPS;
    /// @notice Wei one found decoy takes from its node's escrow (at most what the escrow holds).
    uint256 public immutable DECOY_BOUNTY;
    /// @notice Share (bps) of that which goes back to the node's earnings; the rest goes to the
    ///         validator that found the decoy.
    uint256 public immutable DECOY_REBATE_BPS;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @notice The TaskManager, allowed to {settle} for the node whose batch it commits.
    address public taskManager;
    /// @notice Seconds a redeemed fee is held at least (at most twice that): MAX_REQUEST_AHEAD +
    ///         UNBONDING_PERIOD / 2 + BATCH_RETENTION + 2 * VOTE_WINDOW, read when the TaskManager
    ///         is wired (0 until then).
    uint64 public holdPeriod;

    mapping(address user => mapping(address node => Channel)) internal _channels;
    /// @notice When the user may {withdraw} a channel (0: no withdrawal requested).
    mapping(address user => mapping(address node => uint256)) public withdrawableAt;
    mapping(address node => NodeAccount) internal _accounts;
    mapping(address node => NodeEarnings) internal _earnings;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice `from` added `amount` to the channel from `user` to `node`.
    event Deposited(address indexed user, address indexed node, address from, uint256 amount);
    /// @notice `user` asked to close its channel to `node`; it can withdraw from `readyAt`.
    event WithdrawalRequested(address indexed user, address indexed node, uint256 readyAt);
    /// @notice `user` kept its channel to `node` open after all.
    event WithdrawalCancelled(address indexed user, address indexed node);
    /// @notice `user` received what `node` had not redeemed from their channel.
    event Withdrawn(address indexed user, address indexed node, uint256 amount);
    /// @notice `node` redeemed `vouchers` vouchers worth `total` in one call: `total - toEscrow`
    ///         went to its earnings, `toEscrow` to its verification escrow.
    event Redeemed(address indexed node, uint256 vouchers, uint256 total, uint256 toEscrow);
    /// @notice `node` pulled `amount` of its earnings.
    event EarningsWithdrawn(address indexed node, uint256 amount);
    /// @notice `from` added `amount` to `node`'s verification escrow.
    event EscrowFunded(address indexed node, address indexed from, uint256 amount);
    /// @notice A found decoy took `bounty + rebate` from `node`'s escrow: `bounty` went to the
    ///         TaskManager for the validator, `rebate` to the node's earnings.
    event BountyPaid(address indexed node, uint256 bounty, uint256 rebate);
    /// @notice The TaskManager was wired in (happens once); redeemed fees are held `holdPeriod`.
    event TaskManagerSet(address indexed taskManager);
    /// @notice A slash of `node` took `amount` of its held earnings (its stake did not cover it).
    event EarningsSeized(address indexed node, uint256 amount);

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice A constructor argument is out of range.
    error InvalidParameter();
    /// @notice Amount is zero.
    error ZeroAmount();
    /// @notice The zero address was given.
    error ZeroAddress();
    /// @notice A channel's deposit would not fit its 128 bits.
    error DepositTooLarge();
    /// @notice Nothing to withdraw.
    error NothingToWithdraw();
    /// @notice No withdrawal was requested for this channel.
    error NoWithdrawalRequested();
    /// @notice A withdrawal of this channel is already requested.
    error WithdrawalAlreadyRequested(uint256 readyAt);
    /// @notice WITHDRAWAL_DELAY has not passed.
    error WithdrawalNotReady(uint256 readyAt);
    /// @notice The packed vouchers are not a whole number of PACKED_VOUCHER_SIZE records.
    error MalformedVouchers(uint256 length);
    /// @notice Only the deployer may wire the TaskManager.
    error OnlyDeployer();
    /// @notice The TaskManager is already wired.
    error TaskManagerAlreadySet();
    /// @notice Only the TaskManager may call this.
    error OnlyTaskManager();
    /// @notice No vouchers given.
    error EmptyBatch();
    /// @notice More than MAX_REDEEM_BATCH vouchers.
    error BatchTooLarge(uint256 count, uint256 maximum);
    /// @notice Voucher `index` is not signed by its user.
    error InvalidSignature(uint256 index);
    /// @notice The voucher's cumulative amount is not above what was already redeemed (replay).
    error StaleVoucher(address user, uint256 cumulativeAmount, uint256 alreadyRedeemed);
    /// @notice An ETH transfer failed.
    error TransferFailed();
    /// @notice A node account's earnings or escrow would not fit its 128 bits.
    error AccountOverflow();
    /// @notice Nothing is withdrawable yet: `held` wei of the earnings are held until `freeAt`.
    error EarningsHeld(uint256 held, uint256 freeAt);
    /// @notice Only the ServiceManager (slashing) may call this.
    error OnlyServiceManager();
    /// @notice The TaskManager is not wired yet: nothing can be redeemed (the hold is its).
    error TaskManagerNotSet();

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param withdrawalDelay WITHDRAWAL_DELAY in seconds, > 0 (default 1 days; devnet 60).
    /// @param maxRedeemBatch MAX_REDEEM_BATCH, > 0 (default 256).
    /// @param verificationShareBps VERIFICATION_SHARE_BPS, 1..5_000 (default 2_000).
    /// @param decoyBounty DECOY_BOUNTY wei, > 0 (default 0.05 ether; the TaskManager also needs it
    ///        below its CHALLENGE_BOND).
    /// @param decoyRebateBps DECOY_REBATE_BPS, 1..5_000 (default 1_000).
    constructor(
        uint256 withdrawalDelay,
        uint256 maxRedeemBatch,
        uint256 verificationShareBps,
        uint256 decoyBounty,
        uint256 decoyRebateBps
    ) EIP712("Supernet", "1") {
        if (maxRedeemBatch == 0 || withdrawalDelay == 0 || withdrawalDelay > type(uint32).max) {
            revert InvalidParameter();
        }
        // Some share must fund verification (0 brings back the verifier's dilemma), and a node
        // must keep most of its fee.
        if (verificationShareBps == 0 || verificationShareBps > BPS / 2) revert InvalidParameter();
        // A rebate of 0 leaves a node no reason to plant decoys validators can find; above half
        // it would keep most of what it owes them.
        if (decoyBounty == 0 || decoyBounty > type(uint128).max) revert InvalidParameter();
        if (decoyRebateBps == 0 || decoyRebateBps > BPS / 2) revert InvalidParameter();
        WITHDRAWAL_DELAY = withdrawalDelay;
        MAX_REDEEM_BATCH = maxRedeemBatch;
        VERIFICATION_SHARE_BPS = verificationShareBps;
        DECOY_BOUNTY = decoyBounty;
        DECOY_REBATE_BPS = decoyRebateBps;
        DEPLOYER = msg.sender;
    }

    /// @notice Wires the TaskManager, and takes the hold of redeemed fees from its windows.
    ///         Callable once, by the deployer only.
    /// @param taskManager_ The TaskManager contract.
    function setTaskManager(address taskManager_) external {
        if (msg.sender != DEPLOYER) revert OnlyDeployer();
        if (taskManager != address(0)) revert TaskManagerAlreadySet();
        if (taskManager_ == address(0)) revert ZeroAddress();
        ITaskManagerWindows tm = ITaskManagerWindows(taskManager_);
        uint256 promiseDelay = IServiceManager(tm.SERVICE_MANAGER()).UNBONDING_PERIOD() / 2;
        uint256 hold = MAX_REQUEST_AHEAD + promiseDelay + tm.BATCH_RETENTION() + 2 * tm.VOTE_WINDOW();
        if (hold == 0 || hold > type(uint32).max) revert InvalidParameter();
        taskManager = taskManager_;
        // forge-lint: disable-next-line(unsafe-typecast)
        holdPeriod = uint64(hold);
        emit TaskManagerSet(taskManager_);
    }

    /*//////////////////////////////////////////////////////////////
                                CHANNELS
    //////////////////////////////////////////////////////////////*/

    /// @notice Adds `msg.value` to the caller's channel to `node` (opening it if new).
    /// @param node The node the deposit can pay.
    function deposit(address node) external payable {
        _deposit(msg.sender, node);
    }

    /// @notice Adds `msg.value` to `user`'s channel to `node`.
    /// @param user The account credited.
    /// @param node The node the deposit can pay.
    function depositFor(address user, address node) external payable {
        if (user == address(0)) revert ZeroAddress();
        _deposit(user, node);
    }

    /// @notice Starts closing the caller's channel to `node`: after WITHDRAWAL_DELAY the caller
    ///         can {withdraw} what the node has not redeemed. The node can redeem until then.
    /// @param node The channel's node.
    function requestWithdrawal(address node) external {
        uint256 ready = withdrawableAt[msg.sender][node];
        if (ready != 0) revert WithdrawalAlreadyRequested(ready);
        Channel storage c = _channels[msg.sender][node];
        if (c.deposit == c.redeemed) revert NothingToWithdraw();
        ready = block.timestamp + WITHDRAWAL_DELAY;
        withdrawableAt[msg.sender][node] = ready;
        emit WithdrawalRequested(msg.sender, node, ready);
    }

    /// @notice Keeps the caller's channel to `node` open after all.
    /// @param node The channel's node.
    function cancelWithdrawal(address node) external {
        if (withdrawableAt[msg.sender][node] == 0) revert NoWithdrawalRequested();
        withdrawableAt[msg.sender][node] = 0;
        emit WithdrawalCancelled(msg.sender, node);
    }

    /// @notice Pays the caller what `node` has not redeemed from their channel, once the
    ///         requested WITHDRAWAL_DELAY has passed. Vouchers above what was redeemed pay nothing
    ///         until the channel is topped up (its deposit then equals its redeemed amount, which is
    ///         kept: a later deposit pays the rest of an unredeemed voucher, docs/security-parameters.md).
    /// @param node The channel's node.
    function withdraw(address node) external nonReentrant {
        uint256 ready = withdrawableAt[msg.sender][node];
        if (ready == 0) revert NoWithdrawalRequested();
        if (block.timestamp < ready) revert WithdrawalNotReady(ready);
        Channel storage c = _channels[msg.sender][node];
        uint256 amount = c.deposit - c.redeemed;
        c.deposit = c.redeemed;
        withdrawableAt[msg.sender][node] = 0;
        emit Withdrawn(msg.sender, node, amount);
        if (amount != 0) _send(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////
                               REDEMPTION
    //////////////////////////////////////////////////////////////*/

    /// @notice Redeems packed vouchers of the caller's channels into the caller's account.
    /// @dev Reverts as a whole on any bad voucher (bad signature, stale amount). Per voucher: one
    ///      signature recovery and one write of an existing slot; one account write and one event
    ///      per call.
    /// @param vouchers Packed vouchers (see the contract's notes), at most MAX_REDEEM_BATCH.
    /// @return total Wei redeemed (earnings plus the escrow share).
    function redeem(bytes calldata vouchers) external nonReentrant returns (uint256 total) {
        total = _redeemAll(msg.sender, vouchers);
    }

    /// @notice {redeem} for `node`, called by the TaskManager in the transaction that commits
    ///         `node`'s batch: one transaction per batch commits the receipts and settles the fees.
    /// @param node The node that is committing (the TaskManager's caller).
    /// @param vouchers Packed vouchers of channels to `node`.
    /// @return total Wei redeemed for `node` (earnings plus the escrow share).
    function settle(address node, bytes calldata vouchers) external nonReentrant returns (uint256 total) {
        if (msg.sender != taskManager || msg.sender == address(0)) revert OnlyTaskManager();
        total = _redeemAll(node, vouchers);
    }

    /*//////////////////////////////////////////////////////////////
                          EARNINGS AND ESCROW
    //////////////////////////////////////////////////////////////*/

    /// @notice Pays the caller (a node) its earnings past their hold; the held ones and the
    ///         escrow stay.
    function withdrawEarnings() external nonReentrant {
        (NodeAccount memory a, NodeEarnings memory e) = _state(msg.sender);
        uint256 amount = e.free;
        if (amount == 0) {
            uint256 held = uint256(a.held) + e.previous;
            if (held != 0) revert EarningsHeld(held, _freeAt(a));
            revert NothingToWithdraw();
        }
        e.free = 0;
        _accounts[msg.sender] = a;
        _earnings[msg.sender] = e;
        emit EarningsWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @notice Takes up to `amount` of `node`'s held earnings for a slash its stake did not
    ///         cover, and sends it to the ServiceManager. Only the ServiceManager (from `slash`).
    /// @param node The slashed node.
    /// @param amount Wei the slash still lacks.
    /// @return taken Wei taken (at most what is held).
    function seize(address node, uint256 amount) external nonReentrant returns (uint256 taken) {
        address tm = taskManager;
        if (tm == address(0) || msg.sender != ITaskManagerWindows(tm).SERVICE_MANAGER()) {
            revert OnlyServiceManager();
        }
        (NodeAccount memory a, NodeEarnings memory e) = _state(node);
        uint256 fromPrevious = amount < e.previous ? amount : e.previous;
        uint256 rest = amount - fromPrevious;
        uint256 fromCurrent = rest < a.held ? rest : a.held;
        taken = fromPrevious + fromCurrent;
        if (taken == 0) return 0;
        // forge-lint: disable-next-line(unsafe-typecast)
        e.previous -= uint120(fromPrevious);
        // forge-lint: disable-next-line(unsafe-typecast)
        a.held -= uint96(fromCurrent);
        _accounts[node] = a;
        _earnings[node] = e;
        emit EarningsSeized(node, taken);
        _send(msg.sender, taken);
    }

    /// @notice Adds `msg.value` to `node`'s verification escrow. Anyone may; nobody can take it
    ///         back (it only leaves as decoy bounties). A node funds its escrow at set-up so that
    ///         it can plant decoys before its fees have filled it, and so that its account slot
    ///         is never empty (a redemption then rewrites it instead of creating it).
    /// @param node The node.
    function fundEscrow(address node) external payable {
        if (msg.value == 0) revert ZeroAmount();
        if (node == address(0)) revert ZeroAddress();
        NodeAccount storage a = _accounts[node];
        uint256 escrow = a.escrow + msg.value;
        if (escrow > type(uint96).max) revert AccountOverflow();
        // forge-lint: disable-next-line(unsafe-typecast)
        a.escrow = uint96(escrow);
        // a node funds its escrow when it sets up: its first redemption then finds its period set
        // (no roll) and a later roll rewrites its earnings slot (5,000 gas) instead of creating it
        uint64 hold = holdPeriod;
        // (only while it holds nothing: period 0 is also a real period on a chain whose time is
        // below the hold, and re-dating held fees would extend their hold: Review15.t.sol)
        if (hold != 0 && a.period == 0 && a.held == 0) a.period = uint64(block.timestamp / hold);
        if (_earnings[node].opened == 0) _earnings[node].opened = 1;
        emit EscrowFunded(node, msg.sender, msg.value);
    }

    /// @notice Pays the bounty of a decoy of `node`'s that a sampled validator found: takes
    ///         `min(DECOY_BOUNTY, escrow)` from the escrow, credits DECOY_REBATE_BPS of it to the
    ///         node's earnings and sends the rest to the TaskManager, which credits the validator.
    ///         Only the TaskManager.
    /// @param node The node whose decoy was found.
    /// @return bounty Wei sent to the TaskManager.
    /// @return rebate Wei credited to the node's earnings.
    function payBounty(address node) external nonReentrant returns (uint256 bounty, uint256 rebate) {
        address tm = taskManager;
        if (msg.sender != tm || tm == address(0)) revert OnlyTaskManager();
        NodeAccount storage a = _accounts[node];
        uint256 escrow = a.escrow;
        uint256 taken = DECOY_BOUNTY < escrow ? DECOY_BOUNTY : escrow;
        if (taken == 0) return (0, 0);
        rebate = taken * DECOY_REBATE_BPS / BPS;
        bounty = taken - rebate;
        // forge-lint: disable-next-line(unsafe-typecast)
        a.escrow = uint96(escrow - taken);
        // a rebate is paid after a verdict, from the escrow: free at once, never held
        // forge-lint: disable-next-line(unsafe-typecast)
        _earnings[node].free += uint128(rebate); // rebate <= escrow < 2**96; the sum is checked
        emit BountyPaid(node, bounty, rebate);
        if (bounty != 0) _send(tm, bounty);
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice The channel from `user` to `node`: total deposited, total redeemed, and when the
    ///         user may withdraw (0: no withdrawal requested).
    /// @param user The channel's user.
    /// @param node The channel's node.
    function channel(address user, address node)
        external
        view
        returns (uint256 deposited, uint256 redeemed, uint256 readyAt)
    {
        Channel storage c = _channels[user][node];
        return (c.deposit, c.redeemed, withdrawableAt[user][node]);
    }

    /// @notice A node's earnings (held ones included: {heldEarnings}) and its verification escrow.
    /// @param node The node.
    function account(address node) external view returns (uint256 earnings, uint256 escrow) {
        (NodeAccount memory a, NodeEarnings memory e) = _state(node);
        return (uint256(e.free) + e.previous + a.held, a.escrow);
    }

    /// @notice The part of `node`'s earnings not yet withdrawable, and when all of it will be
    ///         (0 when nothing is held).
    /// @param node The node.
    function heldEarnings(address node) external view returns (uint256 held, uint256 freeAt) {
        (NodeAccount memory a, NodeEarnings memory e) = _state(node);
        held = uint256(a.held) + e.previous;
        if (held != 0) freeAt = _freeAt(a);
    }

    /// @notice EIP-712 digest of `Decoy(node, requestHash)`: what a decoy account signs so that
    ///         the node can show a challenged receipt was a decoy it planted.
    /// @param node The node that planted the decoy.
    /// @param requestHash The decoy task's id.
    function hashDecoy(address node, bytes32 requestHash) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(DECOY_TYPEHASH, node, requestHash)));
    }

    /// @notice The EIP-712 domain separator (name "Supernet", version "1", this chain, this contract).
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @notice EIP-712 digest of a voucher (what its user signs).
    /// @param voucher The voucher.
    function hashVoucher(Voucher calldata voucher) external view returns (bytes32) {
        return _voucherDigest(_domainSeparatorV4(), voucher.user, voucher.node, voucher.cumulativeAmount);
    }

    /// @notice EIP-712 digest of a task request: the task id (`requestHash`).
    /// @param request The request.
    function hashTaskRequest(TaskRequest calldata request) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(TASK_REQUEST_TYPEHASH, request)));
    }

    /// @notice EIP-712 digest of a node's receipt promise (what the node signs).
    /// @param receiptPromise The promise.
    function hashReceiptPromise(ReceiptPromise calldata receiptPromise) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(RECEIPT_PROMISE_TYPEHASH, receiptPromise)));
    }

    /// @notice EIP-712 digest of an action confirmation.
    /// @param confirmation The confirmation.
    function hashConfirmation(Confirmation calldata confirmation) external view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(CONFIRMATION_TYPEHASH, confirmation)));
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    function _deposit(address user, address node) internal {
        if (msg.value == 0) revert ZeroAmount();
        if (node == address(0)) revert ZeroAddress();
        Channel storage c = _channels[user][node];
        uint256 total = c.deposit + msg.value;
        if (total > type(uint128).max) revert DepositTooLarge();
        // forge-lint: disable-next-line(unsafe-typecast)
        c.deposit = uint128(total);
        emit Deposited(user, node, msg.sender, msg.value);
    }

    /// @dev Moves `a` (in memory) to this block's hold period: the previous bucket is free once
    ///      a period has passed, the current one becomes the previous (or free too, after two).
    ///      Reads `node`'s earnings slot only when the period moved (`moved`; else `e` is empty and
    ///      must not be written): a redemption within a period writes its one slot alone.
    function _roll(address node, NodeAccount memory a) internal view returns (NodeEarnings memory e, bool moved) {
        uint64 hold = holdPeriod;
        if (hold == 0) return (e, false); // not wired: nothing was ever redeemed
        uint64 period = uint64(block.timestamp / hold);
        if (a.period == period) return (e, false);
        e = _earnings[node];
        if (a.period + 1 == period) {
            e.free += e.previous;
            e.previous = a.held; // uint96 into uint120
        } else {
            e.free += e.previous + a.held;
            e.previous = 0;
        }
        a.held = 0;
        a.period = period;
        moved = true;
    }

    /// @dev Both of `node`'s slots at this block's hold period (in memory).
    function _state(address node) internal view returns (NodeAccount memory a, NodeEarnings memory e) {
        a = _accounts[node];
        bool moved;
        (e, moved) = _roll(node, a);
        if (!moved) e = _earnings[node];
    }

    /// @dev Credits a redemption to `node`: `toEscrow` to its escrow, `earned` held (one write of
    ///      its account slot, two when a period rolled over).
    function _credit(address node, uint256 earned, uint256 toEscrow) internal {
        NodeAccount memory a = _accounts[node];
        (NodeEarnings memory e, bool moved) = _roll(node, a);
        uint256 escrow = a.escrow + toEscrow;
        uint256 held = a.held + earned;
        if (escrow > type(uint96).max || held > type(uint96).max) revert AccountOverflow();
        // forge-lint: disable-next-line(unsafe-typecast)
        a.escrow = uint96(escrow);
        // forge-lint: disable-next-line(unsafe-typecast)
        a.held = uint96(held);
        _accounts[node] = a;
        if (moved) _earnings[node] = e;
    }

    /// @dev When all of a rolled account's held fees are withdrawable: the start of the period two
    ///      after the one its newest non-empty bucket was credited in.
    function _freeAt(NodeAccount memory a) internal view returns (uint256) {
        uint256 credited = a.held != 0 ? a.period : a.period - 1;
        return (credited + 2) * holdPeriod;
    }

    /// @dev Checks every packed voucher of `node`'s channels, then pays `node` the total.
    function _redeemAll(address node, bytes calldata vouchers) internal returns (uint256 total) {
        if (holdPeriod == 0) revert TaskManagerNotSet();
        uint256 length = vouchers.length;
        if (length == 0) revert EmptyBatch();
        if (length % PACKED_VOUCHER_SIZE != 0) revert MalformedVouchers(length);
        uint256 count = length / PACKED_VOUCHER_SIZE;
        if (count > MAX_REDEEM_BATCH) revert BatchTooLarge(count, MAX_REDEEM_BATCH);
        bytes32 domain = _domainSeparatorV4();
        uint256 offset;
        assembly ("memory-safe") {
            offset := vouchers.offset
        }
        for (uint256 i; i < count;) {
            total += _redeemOne(node, offset, i, domain);
            unchecked {
                ++i;
                offset += PACKED_VOUCHER_SIZE;
            }
        }
        if (total != 0) {
            uint256 toEscrow = total * VERIFICATION_SHARE_BPS / BPS;
            _credit(node, total - toEscrow, toEscrow);
            emit Redeemed(node, count, total, toEscrow);
        } else {
            emit Redeemed(node, count, 0, 0);
        }
    }

    /// @dev Checks and pays the packed voucher at calldata offset `offset` (number `index`) to `node`:
    ///      one read and at most one write of the channel's slot. `domain` is the EIP-712 domain
    ///      separator, read once per call. The caller checked that the 96 bytes are in bounds.
    function _redeemOne(address node, uint256 offset, uint256 index, bytes32 domain) internal returns (uint256 paid) {
        address user;
        uint256 cumulative;
        {
            uint256 head;
            assembly ("memory-safe") {
                head := calldataload(offset)
            }
            user = address(uint160(head >> 96));
            cumulative = uint96(head);
        }
        Channel storage c = _channels[user][node];
        uint256 already = c.redeemed;
        if (cumulative <= already) revert StaleVoucher(user, cumulative, already);
        _checkSignature(_voucherDigest(domain, user, node, cumulative), offset, user, index);
        // Pay up to the channel's deposit; the same voucher pays the rest after a top-up.
        uint256 depositTotal = c.deposit;
        uint256 upTo = cumulative < depositTotal ? cumulative : depositTotal;
        if (upTo <= already) return 0;
        unchecked {
            paid = upTo - already;
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        c.redeemed = uint128(upTo); // upTo <= deposit < 2**128
    }

    /// @dev Reverts with InvalidSignature(index) unless the compact signature (EIP-2098) after
    ///      the record's first word at `offset` is `user`'s over `digest`. OpenZeppelin refuses an s in
    ///      the upper half, so a signature has one accepted form (no malleability).
    function _checkSignature(bytes32 digest, uint256 offset, address user, uint256 index) internal pure {
        bytes32 r;
        bytes32 vs;
        assembly ("memory-safe") {
            r := calldataload(add(offset, 0x20))
            vs := calldataload(add(offset, 0x40))
        }
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, r, vs);
        if (err != ECDSA.RecoverError.NoError || signer != user) revert InvalidSignature(index);
    }

    /// @dev EIP-712 digest of `Voucher(user, node, cumulativeAmount)` under `domain`; hashes in
    ///      scratch memory (nothing is allocated, so a long {redeem} does not grow memory).
    function _voucherDigest(bytes32 domain, address user, address node, uint256 cumulativeAmount)
        internal
        pure
        returns (bytes32 digest)
    {
        bytes32 typeHash = VOUCHER_TYPEHASH;
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, typeHash)
            mstore(add(ptr, 0x20), and(user, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(ptr, 0x40), and(node, 0xffffffffffffffffffffffffffffffffffffffff))
            mstore(add(ptr, 0x60), cumulativeAmount)
            let structHash := keccak256(ptr, 0x80)
            mstore(ptr, hex"1901")
            mstore(add(ptr, 0x02), domain)
            mstore(add(ptr, 0x22), structHash)
            digest := keccak256(ptr, 0x42)
        }
    }

    function _send(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
