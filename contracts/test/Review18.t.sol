// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 18: the game theory and the payments of the contracts (TaskManager, OmissionManager,
/// Payments, ServiceManager, SeedBeacon, ModelRegistry) with fresh eyes, after Review3..17,
/// Adversary*, DisputeRules, OmissionAdversary and the known limits of
/// docs/security-parameters.md (not repeated here). Looked at as: a node that wants to keep its
/// stake or its fees after cheating, a user who wants a refund, validators gaming quorums and
/// sealed votes, a griefer, rounding in every split, reentrancy and pull payments, loops over
/// user-sized data, and what each contract assumes about another's state.
///
/// Found:
/// - MEDIUM. The fraud refund is sized by the node's word. `_resolveFraud` holds
///   `min(c.fee, rest / 2)` for the request's signer (contracts/src/TaskManager.sol, `refund`
///   in `_resolveFraud`), with `c.fee` copied from the receipt's `fee` field at `challenge`, which
///   the node writes. Validators only refuse a fee *above* the signed `maxFee`
///   (validator/supernet/validator/consistency.py, "fee above the signed maxFee"), so a receipt
///   whose `fee` is 0 (and whose trace says 0) is no finding, while the node still charges the
///   signed `maxFee` through the user's cumulative voucher (README: "the fee charged is the signed
///   maxFee"). A cheating node that writes `fee = 0` into its faulty receipts is slashed exactly as
///   much when caught (the refund only splits what would otherwise burn), and every victim's
///   refund is 0: `claimRefund` reverts `NothingToWithdraw` though the user paid, the request
///   proving what it signed is in the call, and README's "every payout goes to a party the node
///   cannot choose" holds for the recipient but not the amount. The node gives up nothing, so
///   the user's refund, the one payout of the dispute game meant for the victim, is the cheater's
///   to void (was test_attack_ANodeThatWritesAZeroFeeVoidsItsVictimsRefundAtNoCost). Fix by design:
///   size the refund from the signed request when it is claimed: hold the cap (`rest / 2`) at the
///   verdict and let `claimRefund` credit `min(request.maxFee, cap)` (burning the remainder), so
///   the amount, like the recipient, comes from the user's signature; or have validators treat a
///   receipt `fee` other than the signed `maxFee` as a finding (that alone does not restore the
///   victim's refund when the zero fee rides on a receipt that is faulty anyway).
///   FIXED: the verdict holds the cap (`rest / 2`) and `claimRefund` credits the request's signer
///   `min(request.maxFee, cap)`, burning the rest, so the receipt's `fee` no longer sizes the
///   refund (test_defence_ANodeThatWritesAZeroFeeNoLongerVoidsItsVictimsRefund,
///   test_defence_AMaxFeeAboveTheCapIsRefundedTheCapAndNothingBurnsAtTheClaim,
///   test_defence_AMaxFeeBelowTheCapIsRefundedInFullAndTheRestOfTheCapBurns).
///
/// Checked and holding:
/// - A user cannot make its node's commit revert, and with it the node's promises fall due
///   unkept (each an omission slash with 20 % to the claimant): a voucher of a channel the user
///   emptied by `withdraw` just before the commit lands settles 0 instead of reverting
///   (`_redeemOne` caps at the deposit), and `redeemed` only moves by the node's own redemptions,
///   so no user action makes the node's voucher stale
///   (test_defence_AUserWhoEmptiesItsChannelBeforeTheCommitCannotRevertIt).
/// - Every split conserves ether (read, and the refund case run above): fraud (reward + pool +
///   refund + burn = slash + unopened bonds), cleared (node + pool = bond, the fraud voters' bonds
///   to the pool), no verdict (bond burned or refunded when withheld), decoy (bond + bounty +
///   rebate = bond + taken escrow), answered claims (cost + refund + 10 % burn = deposit).
///   Roundings: the escrow share rounds down (a node keeps < 1 wei a call: splitting its fees
///   into 1- or 2-wei redemptions to dodge the share gains less than one signature recovery
///   costs), voter shares round down (dust stays, known), the decoy rebate rounds down and the
///   bounty up; no split lets a party take more than was paid in.
/// - Reentrancy: every payout zeroes its balance before sending; the unguarded entry points
///   reachable from a payout (Payments.deposit / fundEscrow / requestWithdrawal, TaskManager
///   claimVoteReward / claimRefund) only add credits, and the guarded ones (redeem, settle,
///   seize, payBounty, withdraw*) are refused inside a send.
/// - Loops a party sizes are bounded: redeem/settle (MAX_REDEEM_BATCH), answerManifest
///   (MAX_BATCH_COUNT), reserveSlots (MAX_RESERVE), Merkle proofs (32), model lists (MAX_MODELS);
///   the node and validator lists only grow by a stake each and are read in pages.
/// - The hold (`holdPeriod`) covers the longest dispute chain on one entry: an availability
///   answer at the last second reopens the fraud window, a no-verdict vote reopens it once more
///   (`reopenedAt`), and a slot reused at BATCH_RETENTION stops any later opening; the last vote
///   ends by commit + 3 CW + 3 VW, inside MAX_REQUEST_AHEAD + UNBONDING/2 + BATCH_RETENTION + 2 VW
///   of the redemption (read).
/// - An honest node's omission answer always finds its slot: with `promise_s` at most
///   BATCH_RETENTION - CW - VW, the last answer second is before the slot is reusable (read).
/// - A third party cannot freeze or lock another operator's stake for free (fraud needs a
///   validator's bond, omission the request's user, availability and manifest claims a deposit
///   of which 10 % of the bond burns), nor reset a validator's `stakedAt` (only its own addStake).

import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

contract Review18Test is Base {
    /// @dev The signed fee of the victim's task (what the node charges: the request's maxFee).
    uint256 internal constant PAID = 0.01 ether;
    /// @dev The victim's task number.
    uint256 internal constant TASK = 7;

    /*//////////////////////////////////////////////////////////////
                                HELPERS
    //////////////////////////////////////////////////////////////*/

    /// @dev The refund's cap a fraud verdict holds for the request's signer: half of the slash
    ///      left after the challenger's reward and the voters' pool (0.3 ether at the defaults).
    uint256 internal constant CAP =
        (SLASH_AMOUNT - SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000 - SLASH_AMOUNT * VOTER_REWARD_BPS / 10_000) / 2;

    /// @dev The victim's signed request: maxFee `paid`, a 600 s deadline (as the SDK signs).
    function _victimRequest(uint256 paid) internal view returns (TaskRequest memory q) {
        q = _request(TASK, user, node);
        q.maxFee = paid;
        q.deadline = block.timestamp + 600;
    }

    /// @dev {_caughtCheatPaying} with the victim's task signed for (and charged) PAID.
    function _caughtCheat(uint256 writtenFee) internal returns (uint256 id, Receipt memory r, TaskRequest memory q) {
        return _caughtCheatPaying(PAID, writtenFee);
    }

    /// @dev The user pays the node `paid` by voucher (the node redeems it), the node commits a
    ///      faulty receipt of that task whose `fee` field says `writtenFee`, validator1 challenges
    ///      it, validators 2 and 3 vote fraud and the challenge resolves. Returns the challenge, the
    ///      receipt and its request.
    function _caughtCheatPaying(uint256 paid, uint256 writtenFee)
        internal
        returns (uint256 id, Receipt memory r, TaskRequest memory q)
    {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);

        q = _victimRequest(paid);
        _deposit(user, paid);
        Voucher memory v = _voucher(user, node, paid);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        vm.prank(node);
        assertEq(payments.redeem(packed), paid, "the user paid the signed fee");

        r = _receipt(TASK, user, writtenFee);
        r.requestHash = payments.hashTaskRequest(q);
        (, bytes32[] memory otherLeaves) = _receipts(3); // the batch's other, honest receipts
        bytes32[] memory leaves = new bytes32[](4);
        leaves[0] = _leaf(r);
        for (uint256 i; i < 3; ++i) {
            leaves[i + 1] = otherLeaves[i];
        }
        uint256 batchId = _commitRoot(node, Merkle.root(leaves), 4);
        _rollSealed(block.number + SEED_DELAY_BLOCKS);

        id = _challenge(validator1, batchId, 0, r, Merkle.proofAt(leaves, 0));
        _vote(validator2, id, true);
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "fraud");
    }

    /// @dev Calls claimRefund for the victim (anyone may); returns what the user was credited.
    function _claimRefund(uint256 id, Receipt memory r, TaskRequest memory q) internal returns (uint256 credited) {
        uint256 before = tm.claimable(user);
        vm.prank(stranger);
        (bool ok,) = address(tm).call(abi.encodeCall(TaskManager.claimRefund, (id, r, q)));
        ok; // a claim that reverts (nothing held) credits the user nothing
        credited = tm.claimable(user) - before;
    }

    /*//////////////////////////////////////////////////////////////
                                FINDING
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was an attack, MEDIUM): the refund a fraud verdict held for the request's
    ///         signer was `min(receipt.fee, rest / 2)`, and the receipt's `fee` is the node's word
    ///         (validators refuse only a fee above the signed maxFee). The same cheat, caught the
    ///         same way, with `fee = 0` in its receipt instead of the fee it charged: the node is
    ///         slashed the same, and the victim, who paid the signed maxFee by voucher, was
    ///         refunded nothing. Now the verdict holds the cap and `claimRefund` credits the
    ///         request's maxFee out of it: the refund follows what the user signed (and paid), not
    ///         what the node wrote.
    function test_defence_ANodeThatWritesAZeroFeeNoLongerVoidsItsVictimsRefund() public {
        uint256 snap = vm.snapshotState();
        (uint256 idHonestFee, Receipt memory r1, TaskRequest memory q1) = _caughtCheat(PAID);
        uint256 slashedHonestFee = tm.challenges(idHonestFee).slashed;
        uint256 refundHonestFee = _claimRefund(idHonestFee, r1, q1);
        assertEq(refundHonestFee, PAID, "with its real fee in the receipt the victim is refunded what it paid");
        vm.revertToState(snap);

        (uint256 idZeroFee, Receipt memory r0, TaskRequest memory q0) = _caughtCheat(0);
        assertTrue(r0.fee <= q0.maxFee, "a fee of 0 is within the signed maxFee: no validator finding");
        uint256 slashedZeroFee = tm.challenges(idZeroFee).slashed;
        assertEq(slashedZeroFee, slashedHonestFee, "the zero fee costs the caught node nothing more");
        assertEq(slashedZeroFee, SLASH_AMOUNT, "slashed in full either way");

        uint256 refundZeroFee = _claimRefund(idZeroFee, r0, q0);
        assertEq(
            refundZeroFee,
            PAID,
            "the victim paid the signed maxFee and its request is shown: its refund must not be the node's to zero"
        );
    }

    /*//////////////////////////////////////////////////////////////
                                DEFENCES
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (the fix, above the cap): a victim that signed (and paid) a maxFee larger
    ///         than the cap held at the verdict is refunded exactly the cap, and nothing burns at
    ///         the claim; the receipt's `fee` (here 0) plays no part.
    function test_defence_AMaxFeeAboveTheCapIsRefundedTheCapAndNothingBurnsAtTheClaim() public {
        uint256 paid = 1 ether;
        (uint256 id, Receipt memory r, TaskRequest memory q) = _caughtCheatPaying(paid, 0);
        vm.assertGt(q.maxFee, CAP, "the signed maxFee exceeds the cap");
        assertEq(tm.challenges(id).refundDue, CAP, "the verdict holds the cap");
        uint256 burnedBefore = tm.totalBurned();
        uint256 burnBalanceBefore = BURN.balance;

        vm.expectEmit(address(tm));
        emit TaskManager.RefundClaimed(id, user, CAP, 0);
        vm.prank(stranger);
        assertEq(tm.claimRefund(id, r, q), CAP, "exactly the cap");
        assertEq(tm.claimable(user), CAP);
        assertEq(tm.challenges(id).refundDue, 0, "claimed once");
        assertEq(tm.totalBurned(), burnedBefore, "nothing burns at the claim");
        assertEq(BURN.balance, burnBalanceBefore, "nothing sent to the burn address");
    }

    /// @notice Defence (the fix, below the cap): a victim that signed (and paid) a maxFee smaller
    ///         than the cap is refunded exactly its maxFee, and the rest of the cap burns at the
    ///         claim (counted in `totalBurned` and sent to the burn address); the receipt's `fee`
    ///         (here 0) plays no part.
    function test_defence_AMaxFeeBelowTheCapIsRefundedInFullAndTheRestOfTheCapBurns() public {
        (uint256 id, Receipt memory r, TaskRequest memory q) = _caughtCheatPaying(PAID, 0);
        vm.assertLt(q.maxFee, CAP, "the signed maxFee is below the cap");
        assertEq(tm.challenges(id).refundDue, CAP, "the verdict holds the cap");
        uint256 burnedBefore = tm.totalBurned();
        uint256 burnBalanceBefore = BURN.balance;
        uint256 tmBalanceBefore = address(tm).balance;

        vm.expectEmit(address(tm));
        emit TaskManager.RefundClaimed(id, user, PAID, CAP - PAID);
        vm.prank(stranger);
        assertEq(tm.claimRefund(id, r, q), PAID, "exactly the signed maxFee");
        assertEq(tm.claimable(user), PAID);
        assertEq(tm.challenges(id).refundDue, 0, "claimed once");
        assertEq(tm.totalBurned() - burnedBefore, CAP - PAID, "the rest of the cap is counted burned");
        assertEq(BURN.balance - burnBalanceBefore, CAP - PAID, "and sent to the burn address");
        assertEq(tmBalanceBefore - address(tm).balance, CAP - PAID, "only the burn leaves TaskManager");
    }

    /// @notice Defence: a user cannot make its node's batch commit revert (and so turn the node's
    ///         promises into omission slashes that pay the claimant 20 %): it empties its channel
    ///         (requestWithdrawal, the delay, withdraw) just before the commit that carries its
    ///         voucher lands; the voucher settles 0 and the commit goes through. `redeemed` moves
    ///         only by the node's own redemptions, so no user action makes that voucher stale.
    function test_defence_AUserWhoEmptiesItsChannelBeforeTheCommitCannotRevertIt() public {
        _registerNode(node, 2 ether);
        _deposit(user, PAID);
        Voucher memory v = _voucher(user, node, PAID);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));

        vm.prank(user);
        payments.requestWithdrawal(node);
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        uint256 balanceBefore = user.balance;
        vm.prank(user);
        payments.withdraw(node); // lands just before the node's commit
        assertEq(user.balance - balanceBefore, PAID, "the user took its deposit back");

        (, bytes32[] memory leaves) = _receipts(2);
        bytes32 root = Merkle.root(leaves);
        vm.prank(node);
        uint256 batchId = tm.commitBatch(0, root, 2, "bafybatchmanifest", packed);
        assertEq(batchId, 1, "the commit landed");
        assertTrue(tm.isCommitted(_refOf(batchId, node, 0, 2, root)), "its receipts are committed in time");
        (uint256 deposited, uint256 redeemed,) = payments.channel(user, node);
        assertEq(deposited, redeemed, "the voucher settled what was left: nothing");
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings + escrow, 0, "and paid the node nothing");
    }
}
