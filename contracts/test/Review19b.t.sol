// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 19b: Payments and OmissionManager with fresh eyes, and their boundaries with the
/// TaskManager (commit, settle, isCommitted, payBounty) and the ServiceManager (freeze, slash,
/// seize, stakeLeavesAt). After Review3..18, Adversary*, DisputeRules, Omission*, Invariants and the
/// known limits of docs/security-parameters.md (not repeated here). Looked at as: a user who wants
/// its work for free (vouchers, a channel withdrawal timed against the redemption, deposits, the
/// escrow share), a node that wants to redeem more than it earned or keep a decoy bounty, a node
/// that wants to escape an omission claim (promise times, slots, commit timing, answers), a
/// claimant that wants to profit from an honest node (deposits against the answer's cost, claims
/// timed to the second of a commit), rounding and dust, loops a party sizes, pull payments and
/// re-entrancy, and what each contract assumes about the other's state.
///
/// Found:
/// - LOW (documentation against behaviour; by design in the code). docs/protocol.md ("Payments",
///   Close) and `Payments.withdraw`'s natspec say a withdrawal sets `deposit = redeemed` "so older
///   vouchers pay nothing afterwards". They pay nothing only until the next deposit: `redeemed` is
///   not moved by a withdrawal, so a voucher the node held unredeemed through the whole
///   WITHDRAWAL_DELAY (its node offline, or one of the known limit's vouchers of a task it never
///   ran) takes its full amount out of whatever the user deposits to that node later, ahead of the
///   user's new tasks. No new loss beyond the known limit "A node can redeem the voucher of a task
///   it never runs" (one fee per request in flight), but a user's withdrawal does not end that
///   exposure, which the docs suggest it does
///   (test_known_limit_AWithdrawalDoesNotVoidAnUnredeemedVoucherAgainstALaterDeposit). Fix by
///   design: either say so in the docs (the SDK's ladder already re-bases on what the node proves),
///   or bind vouchers to a channel epoch that `withdraw` bumps (`Voucher(user, node, epoch,
///   cumulativeAmount)`, the epoch in the channel's slot), so that a withdrawal voids every voucher
///   signed before it.
/// - LOW (known limit class, made precise). A node may sign a `ReceiptPromise` whose `commitBy` is
///   already more than CHALLENGE_WINDOW in the past: the chain cannot tell when a promise was given,
///   so `challengeOmission` refuses it (`PromiseExpired`) and the node keeps the fee of a task it
///   never committed. Bounded like the known limit above (one fee per request; the SDK's
///   `verify` fails "commit promise kept" at once for such a receipt, so the user stops there)
///   (test_known_limit_APromiseSignedAlreadyPastItsWindowBindsNothing). Fix by design, with the
///   node-signed acceptance the known limit proposes: the claim's window bounded below by the
///   request's signed deadline (`due >= request.deadline` unless the receipt is committed).
///
/// Checked and holding:
/// - One channel is paid once however the node packs its vouchers: a voucher twice, a higher one
///   before a lower one (StaleVoucher, the whole call reverts, nothing paid), ascending ones (the
///   top amount once), and a voucher twice in an underfunded channel (the second pays 0, never the
///   deposit twice); a top-up later pays exactly the rest
///   (test_defence_OneChannelIsPaidOnceHoweverItsVouchersArePacked).
/// - A user contract that re-enters Payments from the ether of its channel withdrawal (deposit,
///   requestWithdrawal, a second withdraw, cancelWithdrawal) cannot take a deposit out before a
///   full WITHDRAWAL_DELAY: a second withdraw is refused by the guard, and a re-requested
///   withdrawal starts its own delay (the node's time to redeem)
///   (test_defence_ReenteringFromAChannelWithdrawalCannotSkipTheDelay).
/// - A claim opened in the very second a promise falls due, before the node's commit lands in
///   that same second, is answered with that commit (committedAt == commitBy is kept); a commit
///   one second later is CommittedTooLate and the claim slashes. A claimant gains nothing by
///   racing the due second (test_defence_AClaimOpenedInTheSecondOfTheCommitIsAnswered).
/// - The longest omission schedule the chain allows (the voucher redeemed in the last second of a
///   hold period, the request's deadline MAX_REQUEST_AHEAD ahead, the promise clipped to
///   `deadline + MAX_PROMISE_DELAY`, the claim in the last second of its window, resolved at its
///   deadline) ends while the faked fee is still held: with the stake already gone to an earlier
///   claim the verdict takes SLASH_AMOUNT from the held fees
///   (test_defence_AnOmissionVerdictOnTheLatestScheduleFindsTheFakedFeeStillHeld).
/// - Read, no test (earlier reviews or the invariants hold them): packed records cannot alias
///   (160 bits of user and 96 of amount fill the word; the signature binds the same uint96);
///   `_redeemOne` reads `redeemed` from storage per record, so a batch sees its own writes; the
///   escrow share rounds down by under one wei per call (a call costs > 30k gas); `seize` takes only
///   held buckets (previous, then current), never `free` or the escrow, and `_roll` cannot overflow
///   with real ether; `payBounty` adds the rebate to `free` in storage without rolling, which a
///   later roll adds to, not overwrites; `fundEscrow` never re-dates a held fee (Review15);
///   OmissionManager's ether: answered (cost + refund + burn = deposit), unanswered (deposit +
///   reward back, the rest burned), each credited once per status change; every answer and resolve
///   pairs one unfreeze with its claim's freeze; a promise can only be claimed by the signer of the
///   request whose digest is the promise's and the receipt's, one claim per (node, leaf); the
///   answer must show the promised leaf in the node's own batch still in its slot and committed by
///   the stored due time; EIP-712 type hashes of the five messages differ, so no signature of one
///   verifies as another; loops are bounded (MAX_REDEEM_BATCH, MAX_BATCH_COUNT, 32-level proofs).
///   Off chain (node/supernet/node/service/worker.py): the node signs a promise at the task's end
///   and serves the stored one, so a user fetching its receipt late cannot stretch `commitBy`
///   past the batch's retention.

import {OmissionManager} from "../src/OmissionManager.sol";
import {Payments} from "../src/Payments.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, ReceiptPromise, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice A user's contract wallet that, when its channel withdrawal pays it, re-enters Payments:
///         a fresh deposit and withdrawal request, then a second withdraw (caught), and records
///         what happened.
contract ReenteringUser {
    Payments internal immutable PAYMENTS;
    address internal immutable NODE;
    bool internal armed;
    bool public secondWithdrawRefused;
    uint256 public reDeposit;

    constructor(Payments payments, address node) payable {
        PAYMENTS = payments;
        NODE = node;
    }

    function deposit(uint256 amount) external {
        PAYMENTS.deposit{value: amount}(NODE);
    }

    function requestWithdrawal() external {
        PAYMENTS.requestWithdrawal(NODE);
    }

    function withdrawArmed(uint256 again) external {
        armed = true;
        reDeposit = again;
        PAYMENTS.withdraw(NODE);
    }

    function withdraw() external {
        PAYMENTS.withdraw(NODE);
    }

    receive() external payable {
        if (!armed) return;
        armed = false;
        PAYMENTS.deposit{value: reDeposit}(NODE);
        PAYMENTS.requestWithdrawal(NODE);
        try PAYMENTS.withdraw(NODE) {}
        catch {
            secondWithdrawRefused = true;
        }
    }
}

contract Review19bTest is Base {
    /*//////////////////////////////////////////////////////////////
                                HELPERS
    //////////////////////////////////////////////////////////////*/

    /// @dev `user`'s packed voucher to `node` for `cumulative`.
    function _packed(uint256 cumulative) internal view returns (bytes memory) {
        Voucher memory v = _voucher(user, node, cumulative);
        return _pack(v, _signVoucher(userKey, v));
    }

    function _redeemAs(address who, bytes memory packed) internal returns (uint256) {
        vm.prank(who);
        return payments.redeem(packed);
    }

    /// @dev Commits `leaves` as `node` now; returns the batch header.
    function _commitLeaves(bytes32[] memory leaves) internal returns (TaskManager.BatchRef memory) {
        // forge-lint: disable-next-line(unsafe-typecast)
        uint256 b = _commitRoot(node, Merkle.root(leaves), uint32(leaves.length));
        return _ref(b);
    }

    /*//////////////////////////////////////////////////////////////
                        1. PACKING, ONE CHANNEL
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (a node redeeming more than the channel owes it by packing). The node holds
    ///         the user's vouchers for 0.3 and 0.5 ether. It packs them in every order it can: a
    ///         voucher twice, the higher one first, both ascending; then in a channel funded
    ///         short of the voucher, the same voucher twice. SAFE: the channel pays its top
    ///         voucher once, a repeated or lower record reverts the whole call, a repeat in an
    ///         underfunded channel pays 0, and a top-up pays exactly the rest.
    function test_defence_OneChannelIsPaidOnceHoweverItsVouchersArePacked() public {
        _registerNode(node, 2 ether);
        _deposit(user, 1 ether);
        bytes memory v3 = _packed(0.3 ether);
        bytes memory v5 = _packed(0.5 ether);

        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user, 0.5 ether, 0.5 ether));
        payments.redeem(bytes.concat(v5, v5));
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user, 0.3 ether, 0.5 ether));
        payments.redeem(bytes.concat(v5, v3));
        (, uint256 redeemed,) = payments.channel(user, node);
        assertEq(redeemed, 0, "a refused call pays nothing");

        assertEq(_redeemAs(node, bytes.concat(v3, v5)), 0.5 ether, "ascending: the top voucher, once");
        (, redeemed,) = payments.channel(user, node);
        assertEq(redeemed, 0.5 ether);

        // an underfunded channel: user2 funds 0.4 and signs 0.5
        _depositTo(user2, node, 0.4 ether);
        Voucher memory w = _voucher(user2, node, 0.5 ether);
        bytes memory w5 = _pack(w, _signVoucher(user2Key, w));
        assertEq(_redeemAs(node, bytes.concat(w5, w5)), 0.4 ether, "the deposit once, the repeat pays 0");
        _depositTo(user2, node, 1 ether);
        assertEq(_redeemAs(node, w5), 0.1 ether, "after a top-up: the rest of the voucher, no more");
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user2, 0.5 ether, 0.5 ether));
        payments.redeem(w5);

        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings + escrow, 1 ether, "0.5 from each channel, nothing twice");
    }

    /*//////////////////////////////////////////////////////////////
               2. A WITHDRAWAL DOES NOT VOID A SIGNED VOUCHER
    //////////////////////////////////////////////////////////////*/

    /// @notice Known limit (LOW, the docs say otherwise). The user deposits 1 ether and signs a
    ///         1-ether voucher with a request the node never serves (the known limit "A node can
    ///         redeem the voucher of a task it never runs"); the node does not redeem it. The user
    ///         closes the channel and, after WITHDRAWAL_DELAY, withdraws its ether, as
    ///         docs/protocol.md says "so older vouchers pay nothing afterwards". A month later it
    ///         deposits 0.05 ether to use the node again and signs a 0.01-ether voucher for a new
    ///         task (its ladder restarts at what the chain shows redeemed, 0). The node redeems the
    ///         old voucher first and takes the whole new deposit; the new task's voucher is then
    ///         stale. By design in the code ("the same voucher pays the rest after a top-up"),
    ///         bounded by the known limit's one fee per request; what it adds is that a withdrawal
    ///         does not end the exposure, against the docs' wording.
    function test_known_limit_AWithdrawalDoesNotVoidAnUnredeemedVoucherAgainstALaterDeposit() public {
        _registerNode(node, 2 ether);
        _deposit(user, 1 ether);
        bytes memory dead = _packed(1 ether); // signed with a request the node dropped

        vm.prank(user);
        payments.requestWithdrawal(node);
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        vm.prank(user);
        payments.withdraw(node);
        assertEq(user.balance, 1 ether, "the user got its deposit back");
        (uint256 deposited, uint256 redeemed,) = payments.channel(user, node);
        assertEq(deposited, redeemed, "deposit = redeemed: 'older vouchers pay nothing afterwards'");

        vm.warp(block.timestamp + 30 days);
        _deposit(user, 0.05 ether);
        bytes memory fresh = _packed(0.01 ether); // the user's next task
        uint256 taken = _redeemAs(node, dead);
        assertEq(taken, 0.05 ether, "the withdrawn voucher takes the whole new deposit");
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user, 0.01 ether, 0.05 ether));
        payments.redeem(fresh);
        // and it keeps taking every later deposit up to its 1 ether
        _deposit(user, 0.5 ether);
        assertEq(_redeemAs(node, dead), 0.5 ether);
    }

    /*//////////////////////////////////////////////////////////////
                 3. RE-ENTERING FROM A CHANNEL WITHDRAWAL
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (free work by a fast exit). A user's contract wallet withdraws its channel
    ///         and, from the ether's receive, deposits again, requests a withdrawal and tries a
    ///         second withdraw in the same call (to take a deposit its node has just admitted work
    ///         against, with no delay). SAFE: the second withdraw is refused by the guard, and the
    ///         new request starts a full WITHDRAWAL_DELAY, the node's time to redeem.
    function test_defence_ReenteringFromAChannelWithdrawalCannotSkipTheDelay() public {
        _registerNode(node, 2 ether);
        ReenteringUser wallet = new ReenteringUser{value: 2 ether}(payments, node);
        wallet.deposit(0.5 ether);
        wallet.requestWithdrawal();
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        wallet.withdrawArmed(0.7 ether);
        assertTrue(wallet.secondWithdrawRefused(), "a second withdraw inside the first is refused");

        (uint256 deposited, uint256 redeemed, uint256 readyAt) = payments.channel(address(wallet), node);
        assertEq(deposited - redeemed, 0.7 ether, "the re-deposit stays in the channel");
        assertEq(readyAt, block.timestamp + WITHDRAWAL_DELAY, "its withdrawal waits a full delay");
        vm.expectRevert(abi.encodeWithSelector(Payments.WithdrawalNotReady.selector, readyAt));
        wallet.withdraw();

        // (the node's redemption during that delay is Payments.t.sol's
        // test_RequestWithdrawal_NodeStillRedeemsDuringTheDelay: a contract wallet signs no voucher)
        vm.warp(readyAt);
        uint256 before = address(wallet).balance;
        wallet.withdraw();
        assertEq(address(wallet).balance - before, 0.7 ether, "only after the delay");
    }

    /*//////////////////////////////////////////////////////////////
                4. A CLAIM RACING THE COMMIT'S SECOND
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (a claimant profiting from an honest node by racing the due second). The
    ///         node promises two receipts by `commitBy`. The user claims both in the very second
    ///         `commitBy`, ordered before the node's commit of the first in that same second; the
    ///         second receipt the node commits one second late. SAFE: the first claim is answered
    ///         with the commit of its due second (committedAt == commitBy keeps the promise) and
    ///         the node keeps its stake; the second is CommittedTooLate and slashes, as a late
    ///         commit must.
    function test_defence_AClaimOpenedInTheSecondOfTheCommitIsAnswered() public {
        _registerNode(node, 2 ether);
        uint256 commitBy = block.timestamp + 300;
        (uint256 o1, Receipt memory r1) = _paidAndClaimedAt(1, 0.01 ether, commitBy);
        (uint256 o2, Receipt memory r2) = _paidAndClaimedAt(2, 0.02 ether, commitBy);
        assertEq(block.timestamp, commitBy, "both claims in the due second");

        (TaskManager.BatchRef memory ref, bytes32[] memory proof) = _commitFirstOf(r1, 99);
        assertEq(ref.committedAt, commitBy, "the commit lands after the claims, in the same second");
        vm.prank(node, node);
        om.answerOmission(o1, ref, 0, r1, proof);
        assertTrue(om.omissionChallenges(o1).status == OmissionManager.OmissionStatus.Answered);

        vm.warp(commitBy + 1);
        (ref, proof) = _commitFirstOf(r2, 98);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.CommittedTooLate.selector, commitBy + 1, commitBy));
        om.answerOmission(o2, ref, 0, r2, proof);
        vm.warp(om.omissionChallenges(o2).deadline);
        om.resolveOmission(o2);
        assertEq(sm.getOperator(node).stake, 1 ether, "one slash: the late commit's, not the racing claim's");
        assertEq(sm.getNode(node).frozenCount, 0);
    }

    /// @dev The user pays task `task` (its request due in 600 s), the node promises it by
    ///      `commitBy`; at `commitBy` the user claims it. Returns the claim and the receipt.
    function _paidAndClaimedAt(uint256 task, uint256 cumulative, uint256 commitBy)
        internal
        returns (uint256 omissionId, Receipt memory r)
    {
        TaskRequest memory q;
        ReceiptPromise memory p;
        bytes memory s;
        (q, r, p, s) = _paidTaskWithPromise(task, cumulative, block.timestamp + 600, commitBy);
        if (block.timestamp < commitBy) vm.warp(commitBy);
        omissionId = _claimOmission(user, p, s, q, r);
    }

    /// @dev Commits `r` at index 0 of a 2-receipt batch now; returns the header and `r`'s proof.
    function _commitFirstOf(Receipt memory r, uint256 other)
        internal
        returns (TaskManager.BatchRef memory ref, bytes32[] memory proof)
    {
        bytes32[] memory ls = new bytes32[](2);
        ls[0] = _leaf(r);
        ls[1] = _leaf(_receipt(other, user, 0.001 ether));
        ref = _commitLeaves(ls);
        proof = Merkle.proofAt(ls, 0);
    }

    /*//////////////////////////////////////////////////////////////
              5. A PROMISE SIGNED ALREADY PAST ITS WINDOW
    //////////////////////////////////////////////////////////////*/

    /// @notice Known limit (LOW). The node takes the fee of a request, never commits the receipt,
    ///         and signs its promise with a `commitBy` more than CHALLENGE_WINDOW in the past. The
    ///         chain cannot tell when the promise was given: the user's claim is PromiseExpired
    ///         the moment it holds the promise, and the node keeps the fee. Bounded by the known
    ///         limit "A node can redeem the voucher of a task it never runs" (one fee per request;
    ///         the SDK fails "commit promise kept" at once for such a receipt).
    function test_known_limit_APromiseSignedAlreadyPastItsWindowBindsNothing() public {
        _registerNode(node, 2 ether);
        uint256 stale = block.timestamp - CHALLENGE_WINDOW - 1;
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory s) =
            _paidTaskWithPromise(1, 0.01 ether, block.timestamp + 600, stale);
        uint256 bond = om.omissionBond();
        vm.deal(user, user.balance + bond);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseExpired.selector, stale + CHALLENGE_WINDOW));
        om.challengeOmission{value: bond}(p, s, q, r);
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings + escrow, 0.01 ether, "the node keeps the fee of a receipt it never committed");
    }

    /*//////////////////////////////////////////////////////////////
           6. THE LATEST OMISSION SCHEDULE AGAINST THE HOLD
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (fees out before the omission verdict). The node (MIN_NODE_STAKE) takes two
    ///         requests it never runs: a small one promised soon, and a 2-ether one whose voucher
    ///         it redeems in the last second of a hold period, whose request deadline is
    ///         MAX_REQUEST_AHEAD away and whose promise it signs with the latest `commitBy` (the
    ///         chain clips it to `deadline + MAX_PROMISE_DELAY`). The first claim takes the stake.
    ///         The second user claims in the last second of its window and the claim is resolved
    ///         at its deadline. SAFE: the 2-ether fee is still held then, and the verdict takes
    ///         its SLASH_AMOUNT from it.
    function test_defence_AnOmissionVerdictOnTheLatestScheduleFindsTheFakedFeeStillHeld() public {
        _registerNode(node, MIN_NODE_STAKE);
        uint256 hold = payments.holdPeriod();
        vm.warp((block.timestamp / hold + 1) * hold - 1); // the last second of a hold period
        uint256 t = block.timestamp;
        (TaskRequest memory q1, Receipt memory r1, ReceiptPromise memory p1, bytes memory s1) =
            _paidTaskWithPromise(1, 0.01 ether, t + 600, t + 600);
        (TaskRequest memory q2, Receipt memory r2, ReceiptPromise memory p2, bytes memory s2) =
            _paidTaskWithPromise(2, 2 ether, t + payments.MAX_REQUEST_AHEAD(), type(uint64).max - 1);
        (uint256 held, uint256 freeAt) = payments.heldEarnings(node);
        assertEq(freeAt, t + 1 + hold, "held one period and one second: the least hold");

        vm.warp(t + 600);
        uint256 o1 = _claimOmission(user, p1, s1, q1, r1);
        vm.warp(block.timestamp + VOTE_WINDOW);
        om.resolveOmission(o1);
        assertEq(sm.getOperator(node).stake, 0, "the first verdict took the stake");

        uint256 due = t + payments.MAX_REQUEST_AHEAD() + om.MAX_PROMISE_DELAY();
        vm.warp(due + CHALLENGE_WINDOW - 1); // the last second of the claim window
        uint256 o2 = _claimOmission(user, p2, s2, q2, r2);
        assertEq(om.omissionChallenges(o2).commitBy, due, "the promise is clipped to the deadline's bound");
        vm.warp(om.omissionChallenges(o2).deadline);
        vm.assertLt(block.timestamp, freeAt, "the verdict comes before the fee is free");
        uint256 before;
        (before,) = payments.heldEarnings(node);
        om.resolveOmission(o2);
        (held,) = payments.heldEarnings(node);
        assertEq(before - held, SLASH_AMOUNT, "the verdict's full slash, from the faked fee");
    }
}
