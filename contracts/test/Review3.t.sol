// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {OmissionManager} from "../src/OmissionManager.sol";
import {Payments} from "../src/Payments.sol";
import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, ReceiptPromise, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {Base, Caller} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice A contract operator that tries to re-enter `TaskManager.withdraw` from its `receive`.
contract Reenterer is Caller {
    TaskManager internal immutable TM;
    bool public tried;
    bool public reentered;

    constructor(TaskManager tm_) {
        TM = tm_;
    }

    receive() external payable {
        if (msg.sender == address(TM) && !tried) {
            tried = true;
            try TM.withdraw() {
                reentered = true;
            } catch {}
        }
    }
}

/// @notice Third adversarial review. `test_defence_*`: an attack the contracts stop, the two holes
///         it found included (each was first a test of the bad outcome; both are fixed).
contract Review3Test is Base {
    uint256 internal constant TASK = 7;

    /*//////////////////////////////////////////////////////////////
        H1. An omitted receipt's promise falling due after the stake left
    //////////////////////////////////////////////////////////////*/

    /// @notice Attack (exit scam through omission): a node that has stopped committing serves a
    ///         fake answer, redeems the user's voucher, signs the receipt's `ReceiptPromise` with a
    ///         `commitBy` later than UNBONDING_PERIOD from now, and deregisters at once. Nothing
    ///         locks stake for a receipt never committed, and a claim used to open only at
    ///         `commitBy`, when the stake was already withdrawn: the slash took nothing.
    /// @dev Now a claim opens at `min(commitBy, request.deadline + MAX_PROMISE_DELAY)`, with
    ///      MAX_PROMISE_DELAY = UNBONDING_PERIOD / 2 and the deadline the user's signed one: the
    ///      claim freezes the node while its stake is still unbonding, and the answer must show the
    ///      receipt committed by that earlier time. (The user's client also refuses such a promise
    ///      at once: `supernet.sdk.chain.promises`.)
    function test_defence_PromiseBeyondUnbondingIsClaimableWhileTheStakeIsThere() public {
        _registerNode(node, 2 ether);
        uint256 commitBy = block.timestamp + UNBONDING_PERIOD + 1 hours;
        (TaskRequest memory q, Receipt memory faked, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(TASK, 0.01 ether, block.timestamp + 600, commitBy);
        uint256 due = q.deadline + om.MAX_PROMISE_DELAY();
        assertEq(om.MAX_PROMISE_DELAY(), UNBONDING_PERIOD / 2);
        assertLt(due, commitBy);

        vm.prank(node, node);
        sm.deregister(); // leaves right after serving: never locked
        vm.warp(due - 1);
        vm.deal(user, CHALLENGE_BOND);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, due));
        vm.prank(user);
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, faked);
        vm.warp(due);
        uint256 id = _claimOmission(user, p, sig, q, faked);
        assertEq(om.omissionChallenges(id).commitBy, due, "the claim holds the node to the earlier time");

        vm.warp(block.timestamp + UNBONDING_PERIOD); // unbonding is over, but the claim froze the node
        vm.prank(node, node);
        vm.expectRevert();
        sm.withdrawUnbonded();
        vm.warp(om.omissionChallenges(id).deadline);
        om.resolveOmission(id);
        assertTrue(om.claimable(user) > CHALLENGE_BOND, "the user is rewarded from the slash");
        assertEq(sm.getOperator(node).unbonding, 2 ether - SLASH_AMOUNT, "the slash found the stake");
    }

    /// @notice Control: an honest promise (ten minutes, well inside the bound) is due at its own
    ///         `commitBy`, and a batch committed by then answers the claim.
    function test_defence_HonestPromiseIsDueAtItsCommitBy() public {
        _registerNode(node, 2 ether);
        uint256 commitBy = block.timestamp + 600;
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(TASK, 0.01 ether, block.timestamp + 600, commitBy);
        vm.warp(commitBy - 1);
        vm.deal(user, CHALLENGE_BOND);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, commitBy));
        vm.prank(user);
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);
        vm.warp(commitBy);
        uint256 id = _claimOmission(user, p, sig, q, r);
        assertEq(om.omissionChallenges(id).commitBy, commitBy);
    }

    /*//////////////////////////////////////////////////////////////
       H2. "Cleared" counts the challenger's own fraud vote
    //////////////////////////////////////////////////////////////*/

    /// @notice Attack: a node runs a validator identity (`validator2`, 2 ether, staked long before).
    ///         An honest, sampled validator (2 ether) challenges a faulty receipt; the other honest
    ///         stake (6 ether) does not vote in time. Fraud stake (2) is below the 30 % quorum (3),
    ///         so there is no slash either way. The sock votes "not fraud" (2 >= 2, a tie). The old
    ///         *cleared* rule `honest >= fraud && (fraud + honest) >= quorum` counted the
    ///         challenger's own fraud weight towards clearing: the node was declared cleared, paid
    ///         80 % of the honest challenger's bond, and its sock took the 20 % voter pool.
    /// @dev Now `TaskManager.resolve` clears only on a quorum of "not fraud" votes by themselves
    ///      (the mirror of the fraud rule): no verdict, the bond burns, the coalition gets nothing.
    function test_defence_ChallengersOwnVoteCannotClearTheNode() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether); // honest challenger
        _registerValidator(validator2, 2 ether); // the node's own validator identity
        _registerValidator(validator3, 6 ether); // honest, did not vote in time
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2); // rs[0]: faulty
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, false);
        vm.warp(block.timestamp + VOTE_WINDOW);
        assertFalse(tm.resolve(id));

        TaskManager.Challenge memory c = tm.challenges(id);
        uint256 quorum = c.quorumBase * QUORUM_BPS;
        assertTrue(c.honestStake * 10_000 < quorum, "the not-fraud side alone is no quorum");
        assertTrue((c.honestStake + c.fraudStake) * 10_000 >= quorum, "with the challenger weight it would be");
        assertEq(tm.claimable(node), 0, "the node is not paid the honest bond");
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND, "its sock takes nothing but its own vote bond");
        assertEq(tm.totalBurned(), CHALLENGE_BOND, "no verdict: the bond burns");
    }

    /// @notice Control: a quorum of "not fraud" votes by themselves still clears the node, which
    ///         is paid the bond less the honest voters' pool.
    function test_defence_NotFraudQuorumStillClears() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether); // a wrong challenger
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 6 ether); // honest: votes "not fraud"
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator3, id, false);
        vm.warp(block.timestamp + VOTE_WINDOW);
        assertFalse(tm.resolve(id));
        uint256 pool = CHALLENGE_BOND * VOTER_REWARD_BPS / 10_000;
        assertEq(tm.claimable(node), CHALLENGE_BOND - pool, "cleared: the node is paid");
        assertEq(tm.totalBurned(), 0);
    }

    /*//////////////////////////////////////////////////////////////
                               DEFENCES
    //////////////////////////////////////////////////////////////*/

    /// @notice A voucher signed for one deployment (EIP-712 domain: chain id and verifying
    ///         contract) cannot be redeemed on another deployment holding a channel from the
    ///         same user to the same node.
    function test_defence_VoucherCannotBeReplayedOnAnotherDeployment() public {
        Payments other =
            new Payments(WITHDRAWAL_DELAY, MAX_REDEEM_BATCH, VERIFICATION_SHARE_BPS, DECOY_BOUNTY, DECOY_REBATE_BPS);
        other.setTaskManager(address(tm)); // wired (a Payments redeems nothing before)
        vm.deal(user, 1 ether);
        vm.prank(user);
        other.deposit{value: 1 ether}(node);
        Voucher memory v = _voucher(user, node, 0.5 ether);
        bytes memory packed = _pack(v, _signVoucher(userKey, v)); // signed for `payments`
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        other.redeem(packed);
        (, uint256 redeemed,) = other.channel(user, node);
        assertEq(redeemed, 0);
    }

    /// @notice A user withdraws while the node holds an unredeemed voucher, then funds the channel
    ///         again. The old voucher still pays (it is a debt the user signed), but never more
    ///         than its signed cumulative amount: the node is paid at most the largest amount the
    ///         user ever signed, and the rest of the new deposit goes back to the user.
    function test_defence_RedepositPaysAnOldVoucherOnlyUpToItsSignedAmount() public {
        _deposit(user, 1 ether);
        Voucher memory v1 = _voucher(user, node, 0.2 ether);
        Voucher memory v2 = _voucher(user, node, 0.6 ether);
        bytes memory p1 = _pack(v1, _signVoucher(userKey, v1));
        bytes memory p2 = _pack(v2, _signVoucher(userKey, v2));
        vm.prank(node, node);
        payments.redeem(p1);

        vm.prank(user);
        payments.requestWithdrawal(node);
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        uint256 before = user.balance;
        vm.prank(user);
        payments.withdraw(node);
        assertEq(user.balance - before, 0.8 ether);

        _deposit(user, 1 ether);
        vm.prank(node, node);
        assertEq(payments.redeem(p2), 0.4 ether, "the old voucher pays up to 0.6 cumulative");
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user, 0.6 ether, 0.6 ether));
        payments.redeem(p2);

        vm.prank(user);
        payments.requestWithdrawal(node);
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        before = user.balance;
        vm.prank(user);
        payments.withdraw(node);
        assertEq(user.balance - before, 0.6 ether, "the rest of the new deposit comes back");
        (uint256 deposited, uint256 redeemed,) = payments.channel(user, node);
        assertEq(redeemed, 0.6 ether, "paid in total: the largest signed amount, no more");
        assertEq(deposited, redeemed);
    }

    /// @notice A contract challenger re-enters `TaskManager.withdraw` from its `receive`: the
    ///         guard (and the zeroing before the transfer) pays it its balance exactly once.
    function test_defence_ReentrantWithdrawPaysOnce() public {
        Reenterer r = new Reenterer(tm);
        vm.deal(address(r), 2 ether + CHALLENGE_BOND);
        _registerNode(node, 2 ether);
        r.call(address(sm), 2 ether, abi.encodeCall(ServiceManager.registerValidator, ()));
        _registerValidator(validator2, 2 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        bytes memory data = abi.encodeCall(TaskManager.challenge, (_ref(b), 0, rs[0], Merkle.proofAt(ls, 0), ""));
        uint256 id = abi.decode(r.call(address(tm), CHALLENGE_BOND, data), (uint256));
        _vote(validator2, id, true);
        vm.warp(block.timestamp + VOTE_WINDOW);
        assertTrue(tm.resolve(id));
        r.call(address(tm), 0, abi.encodeCall(TaskManager.claimVoteReward, (id)));

        uint256 owed = tm.claimable(address(r));
        assertGt(owed, CHALLENGE_BOND);
        uint256 before = address(r).balance;
        uint256 tmBefore = address(tm).balance;
        r.call(address(tm), 0, abi.encodeCall(TaskManager.withdraw, ()));
        assertTrue(r.tried(), "it tried to re-enter");
        assertFalse(r.reentered(), "the re-entry failed");
        assertEq(address(r).balance - before, owed, "paid once");
        assertEq(tmBefore - address(tm).balance, owed);
        assertEq(tm.claimable(address(r)), 0);
    }

    /// @notice A receipt committed twice in one batch (same leaf at two positions) is one task:
    ///         once proven fraudulent it cannot be slashed again through its other position, so
    ///         a griefer cannot multiply one fault into several slashes.
    function test_defence_DuplicateLeafIsSlashedOnce() public {
        _deployDevnet(); // challenge window 600 s, vote window 30 s: both attempts inside the window
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 2 ether);
        _registerValidator(validator2, 2 ether);
        (Receipt[] memory rs, bytes32[] memory ls) = _receipts(2);
        bytes32[] memory leaves = new bytes32[](3);
        leaves[0] = ls[0];
        leaves[1] = ls[1];
        leaves[2] = ls[0]; // the same receipt again
        uint256 b = _commitRoot(node, Merkle.root(leaves), 3);

        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(leaves, 0));
        _vote(validator2, id, true);
        vm.warp(block.timestamp + 30 - 1);
        vm.deal(validator2, CHALLENGE_BOND);
        bytes32[] memory proof2 = Merkle.proofAt(leaves, 2);
        TaskManager.BatchRef memory ref = _ref(b);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(ref, 2, rs[0], proof2, ""); // while open
        vm.warp(block.timestamp + 1);
        assertTrue(tm.resolve(id));
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(ref, 2, rs[0], proof2, ""); // after the verdict
        assertEq(sm.getOperator(node).stake, 3 ether - SLASH_AMOUNT, "slashed once");
    }

    /// @notice Timing attack on an omission claim: a user cannot claim one second before
    ///         `commitBy` nor in the second the claim window ends (half-open window), and a node
    ///         cannot answer with a batch committed one second after `commitBy`.
    function test_defence_OmissionBoundariesAreHalfOpen() public {
        _registerNode(node, 2 ether);
        uint256 commitBy = block.timestamp + 600;
        Receipt memory a = _boundReceipt(TASK, user, node, 0.01 ether);
        ReceiptPromise memory pa = ReceiptPromise({requestHash: a.requestHash, leaf: _leaf(a), commitBy: commitBy});
        bytes memory sigA = _signPromise(privateKeyOf("node"), pa);
        Receipt memory b = _boundReceipt(TASK + 1, user, node, 0.01 ether);
        ReceiptPromise memory pb = ReceiptPromise({requestHash: b.requestHash, leaf: _leaf(b), commitBy: commitBy});
        bytes memory sigB = _signPromise(privateKeyOf("node"), pb);

        vm.warp(commitBy - 1);
        vm.deal(user, CHALLENGE_BOND);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, commitBy));
        om.challengeOmission{value: CHALLENGE_BOND}(pa, sigA, _request(TASK, user, node), a);

        // B committed one second late does not keep the promise.
        vm.warp(commitBy + 1);
        uint256 late = _commitRoot(node, _leaf(b), 1);
        uint256 id = _claimOmission(user, pb, sigB, _request(TASK + 1, user, node), b);
        TaskManager.BatchRef memory lateRef = _ref(late);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.CommittedTooLate.selector, commitBy + 1, commitBy));
        om.answerOmission(id, lateRef, 0, b, new bytes32[](0));

        vm.warp(commitBy + CHALLENGE_WINDOW);
        vm.deal(user, CHALLENGE_BOND);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseExpired.selector, commitBy + CHALLENGE_WINDOW));
        om.challengeOmission{value: CHALLENGE_BOND}(pa, sigA, _request(TASK, user, node), a);
    }
}
