// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

import {Confirmation, TaskRequest, Voucher} from "./libraries/Types.sol";

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
contract Payments is EIP712, ReentrancyGuardTransient {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice One (user, node) channel in one slot: wei deposited in total, wei redeemed in total.
    struct Channel {
        uint128 deposit;
        uint128 redeemed;
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

    /*//////////////////////////////////////////////////////////////
                               IMMUTABLES
    //////////////////////////////////////////////////////////////*/

    /// @notice Seconds between {requestWithdrawal} and {withdraw}: the node's time to redeem.
    uint256 public immutable WITHDRAWAL_DELAY;
    /// @notice Most vouchers in one {redeem} call.
    uint256 public immutable MAX_REDEEM_BATCH;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    mapping(address user => mapping(address node => Channel)) internal _channels;
    /// @notice When the user may {withdraw} a channel (0: no withdrawal requested).
    mapping(address user => mapping(address node => uint256)) public withdrawableAt;
    /// @notice Redeemed wei a node has not withdrawn yet.
    mapping(address => uint256) public earnings;

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
    /// @notice `node` redeemed `vouchers` vouchers in one call and was credited `total`.
    event Redeemed(address indexed node, uint256 vouchers, uint256 total);
    /// @notice `node` received its earnings.
    event EarningsWithdrawn(address indexed node, uint256 amount);

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
    /// @notice `vouchers` and `signatures` differ in length.
    error LengthMismatch(uint256 vouchers, uint256 signatures);
    /// @notice No vouchers given.
    error EmptyBatch();
    /// @notice More than MAX_REDEEM_BATCH vouchers.
    error BatchTooLarge(uint256 count, uint256 maximum);
    /// @notice Voucher `index` names another node than the caller.
    error NotVoucherNode(uint256 index);
    /// @notice Voucher `index` is not signed by its user.
    error InvalidSignature(uint256 index);
    /// @notice The voucher's cumulative amount is not above what was already redeemed (replay).
    error StaleVoucher(address user, uint256 cumulativeAmount, uint256 alreadyRedeemed);
    /// @notice An ETH transfer failed.
    error TransferFailed();

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param withdrawalDelay WITHDRAWAL_DELAY in seconds, > 0 (default 1 days; devnet 60).
    /// @param maxRedeemBatch MAX_REDEEM_BATCH, > 0 (default 256).
    constructor(uint256 withdrawalDelay, uint256 maxRedeemBatch) EIP712("Supernet", "1") {
        if (maxRedeemBatch == 0 || withdrawalDelay == 0 || withdrawalDelay > type(uint32).max) {
            revert InvalidParameter();
        }
        WITHDRAWAL_DELAY = withdrawalDelay;
        MAX_REDEEM_BATCH = maxRedeemBatch;
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
    ///         afterwards (the channel's deposit then equals its redeemed amount).
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

    /// @notice Redeems vouchers addressed to the caller; credits the total to `earnings[caller]`.
    /// @dev Reverts as a whole on any bad voucher (wrong node, bad signature, stale amount).
    ///      Moves no ETH out (earnings are pulled with {withdrawEarnings}). Per voucher: one
    ///      signature recovery and one write of an existing slot; one event per call.
    /// @param vouchers Signed cumulative vouchers, each with `node == msg.sender`.
    /// @param signatures 65-byte ECDSA signatures of each voucher's EIP-712 digest by its user.
    /// @return total Wei credited by this call.
    function redeem(Voucher[] calldata vouchers, bytes[] calldata signatures) external returns (uint256 total) {
        uint256 count = vouchers.length;
        if (count == 0) revert EmptyBatch();
        if (count > MAX_REDEEM_BATCH) revert BatchTooLarge(count, MAX_REDEEM_BATCH);
        if (count != signatures.length) revert LengthMismatch(count, signatures.length);
        bytes32 domain = _domainSeparatorV4();
        for (uint256 i; i < count;) {
            Voucher calldata v = vouchers[i];
            address user;
            address voucherNode;
            uint256 cumulative;
            // The array's bounds were checked on entry (count * 96 bytes of calldata); the two
            // addresses must be clean 20-byte values, as the ABI decoder would require.
            assembly ("memory-safe") {
                user := calldataload(v)
                voucherNode := calldataload(add(v, 0x20))
                cumulative := calldataload(add(v, 0x40))
                if shr(160, or(user, voucherNode)) { revert(0, 0) }
            }
            if (voucherNode != msg.sender) revert NotVoucherNode(i);
            total += _redeemOne(user, cumulative, signatures[i], i, domain);
            unchecked {
                ++i;
            }
        }
        // One credit and one event for the whole call (never per voucher).
        if (total != 0) earnings[msg.sender] += total;
        emit Redeemed(msg.sender, count, total);
    }

    /// @notice Pays the caller its earnings.
    function withdrawEarnings() external nonReentrant {
        uint256 amount = earnings[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        earnings[msg.sender] = 0;
        emit EarningsWithdrawn(msg.sender, amount);
        _send(msg.sender, amount);
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

    /// @dev Checks and pays one voucher of `user` to the caller: one read and at most one write
    ///      of the channel's slot. `domain` is the EIP-712 domain separator, read once per call.
    function _redeemOne(address user, uint256 cumulative, bytes calldata signature, uint256 index, bytes32 domain)
        internal
        returns (uint256 paid)
    {
        Channel storage c = _channels[user][msg.sender];
        uint256 depositTotal = c.deposit;
        uint256 already = c.redeemed;
        if (cumulative <= already) revert StaleVoucher(user, cumulative, already);
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecoverCalldata(_voucherDigest(domain, user, msg.sender, cumulative), signature);
        if (err != ECDSA.RecoverError.NoError || signer != user) revert InvalidSignature(index);
        // Pay up to the channel's deposit; the same voucher pays the rest after a top-up.
        uint256 upTo = cumulative < depositTotal ? cumulative : depositTotal;
        if (upTo <= already) return 0;
        unchecked {
            paid = upTo - already;
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        c.redeemed = uint128(upTo); // upTo <= deposit < 2**128
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
