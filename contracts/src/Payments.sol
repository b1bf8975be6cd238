// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

import {Confirmation, TaskRequest, Voucher} from "./libraries/Types.sol";

/// @title Payments
/// @notice User deposits (native ETH) paid to nodes through EIP-712 cumulative vouchers.
/// @dev This contract is the `verifyingContract` of the one EIP-712 domain of the protocol
///      (name "Supernet", version "1"), for `TaskRequest`, `Voucher` and `Confirmation`.
///
///      Vouchers are cumulative per (user, node): the node redeems `cumulativeAmount` minus what it
///      already received. A voucher whose amount is not above what was already redeemed reverts
///      with {StaleVoucher} (replays are rejected, never silently skipped). If the user's funds do
///      not cover the difference, the node receives what there is and `redeemed` grows by exactly
///      that, so the same voucher pays the rest after a later deposit.
///
///      Withdrawals are delayed by WITHDRAWAL_DELAY: funds pending withdrawal stay redeemable
///      (redemption takes from the available deposit first, then from the pending withdrawal), so
///      a node that redeems within the delay always gets what it was signed, up to the funds.
contract Payments is EIP712, ReentrancyGuardTransient {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice A user's withdrawal in progress.
    struct PendingWithdrawal {
        uint256 amount;
        uint64 readyAt;
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

    /// @notice Seconds between {requestWithdrawal} and {withdraw}.
    uint256 public immutable WITHDRAWAL_DELAY;
    /// @notice Most vouchers in one {redeem} call.
    uint256 public immutable MAX_REDEEM_BATCH;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @notice Available (not pending withdrawal) deposit of each user.
    mapping(address => uint256) public deposits;
    /// @notice Wei already paid from `user` to `node` through vouchers.
    mapping(address user => mapping(address node => uint256)) public redeemed;
    /// @notice Redeemed wei a node has not withdrawn yet.
    mapping(address => uint256) public earnings;
    mapping(address => PendingWithdrawal) internal _pending;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice `from` added `amount` to `user`'s deposit.
    event Deposited(address indexed user, address indexed from, uint256 amount);
    /// @notice `user` started withdrawing; `totalPending` is withdrawable from `readyAt`.
    event WithdrawalRequested(address indexed user, uint256 amount, uint256 totalPending, uint64 readyAt);
    /// @notice `user` moved its pending withdrawal back into its deposit.
    event WithdrawalCancelled(address indexed user, uint256 amount);
    /// @notice `user` received its pending withdrawal.
    event Withdrawn(address indexed user, uint256 amount);
    /// @notice `node` redeemed a voucher of `user` and was credited `paid`.
    event VoucherRedeemed(address indexed user, address indexed node, uint256 cumulativeAmount, uint256 paid);
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
    /// @notice Amount exceeds the available deposit.
    error InsufficientDeposit(uint256 amount, uint256 available);
    /// @notice Nothing to withdraw / cancel.
    error NothingToWithdraw();
    /// @notice WITHDRAWAL_DELAY has not passed.
    error WithdrawalNotReady(uint64 readyAt);
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

    /// @param withdrawalDelay WITHDRAWAL_DELAY in seconds (default 1 days; devnet 60).
    /// @param maxRedeemBatch MAX_REDEEM_BATCH, > 0 (default 256).
    constructor(uint256 withdrawalDelay, uint256 maxRedeemBatch) EIP712("Supernet", "1") {
        if (maxRedeemBatch == 0 || withdrawalDelay > type(uint32).max) revert InvalidParameter();
        WITHDRAWAL_DELAY = withdrawalDelay;
        MAX_REDEEM_BATCH = maxRedeemBatch;
    }

    /*//////////////////////////////////////////////////////////////
                                DEPOSITS
    //////////////////////////////////////////////////////////////*/

    /// @notice Adds `msg.value` to the caller's deposit.
    function deposit() external payable {
        _deposit(msg.sender);
    }

    /// @notice Adds `msg.value` to `user`'s deposit.
    /// @param user The account credited.
    function depositFor(address user) external payable {
        if (user == address(0)) revert ZeroAddress();
        _deposit(user);
    }

    /// @notice Moves `amount` from the caller's deposit to its pending withdrawal and restarts
    ///         the WITHDRAWAL_DELAY clock for the whole pending amount.
    /// @param amount Wei to withdraw (<= available deposit).
    function requestWithdrawal(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 available = deposits[msg.sender];
        if (amount > available) revert InsufficientDeposit(amount, available);
        unchecked {
            deposits[msg.sender] = available - amount;
        }
        PendingWithdrawal storage p = _pending[msg.sender];
        uint256 total = p.amount + amount;
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 readyAt = uint64(block.timestamp + WITHDRAWAL_DELAY);
        p.amount = total;
        p.readyAt = readyAt;
        emit WithdrawalRequested(msg.sender, amount, total, readyAt);
    }

    /// @notice Moves the caller's whole pending withdrawal back into its deposit.
    function cancelWithdrawal() external {
        PendingWithdrawal storage p = _pending[msg.sender];
        uint256 amount = p.amount;
        if (amount == 0) revert NothingToWithdraw();
        p.amount = 0;
        p.readyAt = 0;
        deposits[msg.sender] += amount;
        emit WithdrawalCancelled(msg.sender, amount);
    }

    /// @notice Pays the caller its pending withdrawal once WITHDRAWAL_DELAY has passed (what is
    ///         left of it after redemptions).
    function withdraw() external nonReentrant {
        PendingWithdrawal storage p = _pending[msg.sender];
        uint256 amount = p.amount;
        if (amount == 0) revert NothingToWithdraw();
        if (block.timestamp < p.readyAt) revert WithdrawalNotReady(p.readyAt);
        p.amount = 0;
        p.readyAt = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////
                               REDEMPTION
    //////////////////////////////////////////////////////////////*/

    /// @notice Redeems vouchers addressed to the caller; credits the total to `earnings[caller]`.
    /// @dev Reverts as a whole on any bad voucher (wrong node, bad signature, stale amount).
    ///      Moves no ETH out (earnings are pulled with {withdrawEarnings}).
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
        // One credit for the whole call (never per voucher).
        if (total != 0) earnings[msg.sender] += total;
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

    /// @notice `user`'s pending withdrawal: amount and the time it becomes withdrawable.
    /// @param user The account.
    function pendingWithdrawal(address user) external view returns (uint256 amount, uint64 readyAt) {
        PendingWithdrawal storage p = _pending[user];
        return (p.amount, p.readyAt);
    }

    /// @notice What nodes can count on redeeming from `user`: the deposit, plus a pending withdrawal
    ///         only while it has not matured (once it has, the user can pull it at any moment, so
    ///         a node admitting work against it could be paid nothing).
    /// @param user The account.
    function redeemableBalance(address user) external view returns (uint256) {
        PendingWithdrawal storage p = _pending[user];
        return deposits[user] + (block.timestamp < p.readyAt ? p.amount : 0);
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

    function _deposit(address user) internal {
        if (msg.value == 0) revert ZeroAmount();
        deposits[user] += msg.value;
        emit Deposited(user, msg.sender, msg.value);
    }

    /// @dev Checks and pays one voucher of `user` to the caller. `domain` is the EIP-712 domain
    ///      separator, read once per call.
    function _redeemOne(address user, uint256 cumulative, bytes calldata signature, uint256 index, bytes32 domain)
        internal
        returns (uint256 paid)
    {
        // redeemed[user][msg.sender], computed once for the read and the write.
        uint256 redeemedSlot;
        assembly ("memory-safe") {
            mstore(0x00, user)
            mstore(0x20, redeemed.slot)
            mstore(0x20, keccak256(0x00, 0x40))
            mstore(0x00, caller())
            redeemedSlot := keccak256(0x00, 0x40)
        }
        uint256 already;
        assembly ("memory-safe") {
            already := sload(redeemedSlot)
        }
        if (cumulative <= already) revert StaleVoucher(user, cumulative, already);
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecoverCalldata(_voucherDigest(domain, user, msg.sender, cumulative), signature);
        if (err != ECDSA.RecoverError.NoError || signer != user) revert InvalidSignature(index);
        unchecked {
            // cumulative > already, and paid <= cumulative - already.
            paid = _debit(user, cumulative - already);
            uint256 newRedeemed = already + paid;
            assembly ("memory-safe") {
                sstore(redeemedSlot, newRedeemed)
            }
        }
        emit VoucherRedeemed(user, msg.sender, cumulative, paid);
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

    /// @dev Takes up to `owed` from the deposit, then from the pending withdrawal.
    function _debit(address user, uint256 owed) internal returns (uint256 paid) {
        uint256 available = deposits[user];
        if (available >= owed) {
            unchecked {
                deposits[user] = available - owed;
            }
            return owed;
        }
        if (available != 0) deposits[user] = 0;
        uint256 rest = owed - available;
        PendingWithdrawal storage p = _pending[user];
        uint256 pending = p.amount;
        uint256 fromPending = rest < pending ? rest : pending;
        if (fromPending != 0) p.amount = pending - fromPending;
        return available + fromPending;
    }

    function _send(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
