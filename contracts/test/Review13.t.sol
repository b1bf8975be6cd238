// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 13: the game theory of ServiceManager, TaskManager and OmissionManager, with fresh eyes
/// (Payments out of scope: it is being changed). Looked for, as a rational cheater: stake that
/// escapes a slash (unbonding and withdrawal timing against the stake locks and freeze counts, the
/// leaf reopened after a vote without a fraud verdict, `reopenedAt`, re-registration, roles);
/// quorum games (sealed votes, vote bonds, the settled-stake snapshot, validators joining, leaving
/// or unbonding mid-vote, ties); bond and reward accounting (a pull-payment credited twice, funds
/// locked for good, loops over user data); data claims (availability, manifest, omission) on a leaf
/// under a fraud challenge. After Review3..12, Adversary*, OmissionAdversary, DisputeRules and the
/// known limits of docs/security-parameters.md (not repeated here).
///
/// Found:
/// - MEDIUM, FIXED. A leaf reopened after a vote without a fraud verdict (`reopenedAt`) does not lock the
///   node's stake, so the stake its re-challenge would slash can leave first. The commit locks the
///   stake until CHALLENGE_WINDOW after the commit; a fraud challenge freezes it until it resolves;
///   an availability answer, the other way a leaf becomes challengeable after its window
///   (`answeredAt`), locks it for CHALLENGE_WINDOW from the answer
///   (`TaskManager.answerAvailability`: `lockStake(node, now + CHALLENGE_WINDOW)`). `resolve`'s
///   "not fraud" branch sets `reopenedAt[entry] = voteDeadline` and unfreezes the node, but locks
///   nothing, and on the production windows (VOTE_WINDOW = CHALLENGE_WINDOW) the commit's lock has
///   already expired when any vote ends. A node that unbonded stake above its minimum a week
///   earlier (its unbonding matured, slashable while locked) commits faulty receipts; the honest
///   finder's challenges end without a verdict (the node's ally ties them with as much stake,
///   for free, or the other validators do not vote in time); the moment they resolve the node
///   withdraws the matured unbonding, and the re-challenges the reopen exists for find only its
///   active stake: here 4 fraud verdicts slash 2 ether of the 5 the node held at the commit.
///   docs/security-parameters.md ("Stake locks", "Half-open windows") promises that a node cannot
///   leave before its receipts can be challenged "whatever UNBONDING_PERIOD is"; with an unbonding
///   period shorter than the reopened window (DisputeRules' setting) the whole stake leaves the
///   same way. (test_defence_AReopenedLeafHoldsTheStakeItsReChallengeWouldSlash)
///   Fix by design: lock as the availability answer does: in `resolve`'s not-fraud branch, when
///   `reopenedAt` is written, `SERVICE_MANAGER.lockStake(c.node, voteDeadline + CHALLENGE_WINDOW)`
///   (rounded with `_lockUntil` if bytes are short; `stakeLeavesAt` then reads the reopened window
///   too). TaskManager is near EIP-170, but the call is one external call.
///   Fixed that way, without a new call: `IServiceManager.unfreeze(node, lockUntil)` closes the
///   dispute and locks in one call, so `resolve` locks to `_lockUntil(voteDeadline +
///   CHALLENGE_WINDOW)` when it reopens the leaf, and `answerAvailability` merges its two calls.
///
/// Checked and holding:
/// - The control of the finding: a leaf reopened by a late availability answer holds the stake
///   for its window (StakeIsLocked), and the re-challenge slashes the matured unbonding
///   (test_defence_ALateAnswerHoldsTheStakeForTheWindowItReopens).
/// - An omission claim and a fraud challenge on the same leaf: the node answers the omission with
///   the batch the fraud challenge is on (one freeze each, paired across the two contracts), the
///   fraud verdict still slashes, and neither dispute pays a credit the other already paid
///   (test_defence_AnOmissionAnswerDoesNotShieldTheLeafFromItsFraudVerdict).
/// - A node that deregisters and registers again while a fraud challenge is open keeps its old
///   stake unbonding, frozen and slashable; the verdict takes the fresh stake first, and the old
///   stake cannot be withdrawn while the dispute is open
///   (test_defence_ReRegisteringMidChallengeFreesNothing).
/// - A challenger that deregisters mid-vote keeps its fraud weight (it is the challenge itself)
///   but its ether cannot vote again from a new address on the same challenge, and every vote
///   bond and pool share is credited once (test_defence_TheChallengersStakeVotesOnce).
/// - Read, no test: every TaskManager credit is written once per status change (resolve,
///   revealDecoy, claimVoteReward's `rewardClaimed`, claimRefund's `refundDue = 0`, availability
///   Answered/Unanswered), every OmissionManager credit likewise; freeze and unfreeze pair per
///   dispute in both contracts; the quorum base is snapshotted at the challenge and a vote weighs
///   min(sealed, stake now), so joining, leaving, unbonding or a self-inflicted omission slash of a
///   validator mid-vote moves neither the base nor a weight upward; ties go to the accused by the
///   documented rule; `_extendVote` acts once per entry and only while votes are sealed; every
///   loop is bounded (MAX_BATCH_COUNT, MAX_RESERVE, 32-level proofs, paged views).

import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, ReceiptPromise, TaskRequest} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

contract Review13Test is Base {
    address internal ally;

    function setUp() public override {
        super.setUp();
        ally = makeAddr("ally");
        _deploy(2 ether); // the documented default MIN_NODE_STAKE (Base uses 1 ether)
    }

    /// @dev The node stakes `active + matured`, unbonds `matured` and waits UNBONDING_PERIOD: it
    ///      stays active with `active`, and `matured` is slashable until it withdraws it.
    function _nodeWithMaturedUnbonding(uint256 active, uint256 matured) internal {
        _registerNode(node, active + matured);
        vm.prank(node);
        sm.requestUnbond(matured);
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        assertTrue(sm.isActiveNode(node));
    }

    /// @dev The node tries to withdraw its unbonding stake; returns whether it left.
    function _tryWithdraw() internal returns (bool ok, bytes memory ret) {
        vm.prank(node);
        (ok, ret) = address(sm).call(abi.encodeCall(ServiceManager.withdrawUnbonded, ()));
    }

    /*//////////////////////////////////////////////////////////////
          1. A REOPENED LEAF DOES NOT HOLD THE STAKE IT WOULD SLASH
    //////////////////////////////////////////////////////////////*/

    /// @notice Attack (stake leaves between a vote without a verdict and the re-challenge the
    ///         reopen exists for). The node holds 2 ether active and 3 ether of unbonding that
    ///         matured (requested a week before, slashable while locked). It commits 4 faulty
    ///         receipts. The honest finder (1 ether) challenges each once it has re-run them; the
    ///         node's ally (1 ether, as much as the finder) seals "not fraud" on each; the largest
    ///         validator (3 ether) is away. The votes end without a verdict and reopen the 4 leaves
    ///         for CHALLENGE_WINDOW (`reopenedAt`). The node resolves them and withdraws the 3 ether
    ///         in the same second: the commit's lock expired during the vote and nothing else holds
    ///         it. The large validator re-challenges the 4 leaves and wins 4 fraud verdicts.
    ///         SAFE: the reopened windows hold the stake (StakeIsLocked), the 4 verdicts slash
    ///         4 ether. Before the fix the 3 ether left and the verdicts slashed the 2 ether of active stake.
    function test_defence_AReopenedLeafHoldsTheStakeItsReChallengeWouldSlash() public {
        _nodeWithMaturedUnbonding(2 ether, 3 ether);
        _registerValidator(validator1, 1 ether); // honest finder
        _registerValidator(ally, 1 ether); // the node's friend
        _registerValidator(validator3, 3 ether); // honest, away during the first votes
        uint256 n = 4;
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, n); // all faulty
        _rollSealed(block.number + SEED_DELAY_BLOCKS + 1);
        vm.warp(block.timestamp + 2 hours); // the finder re-ran them

        uint256[] memory first = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            first[i] = _challenge(validator1, b, i, rs[i], Merkle.proofAt(ls, i));
            _vote(ally, first[i], false); // a tie: no verdict, the ally's bond comes back
        }
        uint64 end = tm.challenges(first[n - 1]).voteDeadline;
        vm.assertGt(end, sm.getOperator(node).lockedUntil, "the commit's lock expired during the vote");
        vm.warp(end);
        for (uint256 i; i < n; ++i) {
            assertFalse(tm.resolve(first[i]), "no verdict");
        }
        assertEq(tm.reopenedAt(keccak256(abi.encode(b, uint256(0)))), tm.challenges(first[0]).voteDeadline);

        (bool left, bytes memory ret) = _tryWithdraw(); // the same second the leaves reopen

        uint256[] memory again = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            again[i] = _challenge(validator3, b, i, rs[i], Merkle.proofAt(ls, i)); // the reopen works
            _vote(validator1, again[i], true);
        }
        vm.warp(tm.challenges(again[n - 1]).voteDeadline);
        uint256 slashed;
        for (uint256 i; i < n; ++i) {
            assertTrue(tm.resolve(again[i]), "the re-challenge is a fraud verdict");
            slashed += tm.challenges(again[i]).slashed;
        }
        assertEq(
            slashed,
            n * SLASH_AMOUNT,
            "the reopened leaves' verdicts must find the stake the node held when they reopened: the "
            "3 ether of matured unbonding left in the reopened window, which locks nothing"
        );
        assertFalse(left, "a reopened leaf must hold the stake its re-challenge would slash");
        assertGt(ret.length, 0);
    }

    /// @notice Defence (the control): the other way a leaf becomes challengeable after its window,
    ///         a late availability answer (`answeredAt`), locks the stake for the window it opens.
    ///         The same node (2 active, 3 matured) answers a claim on its faulty entry in the
    ///         claim's last second; the commit's lock is over, yet the 3 ether cannot leave, and
    ///         the late challenge's verdict (with another one's) slashes past the active stake.
    function test_defence_ALateAnswerHoldsTheStakeForTheWindowItReopens() public {
        _nodeWithMaturedUnbonding(2 ether, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator3, 3 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 4);
        uint64 committedAt = _ref(b).committedAt;
        _rollSealed(block.number + SEED_DELAY_BLOCKS + 1);
        vm.warp(committedAt + CHALLENGE_WINDOW - 1);
        uint256[] memory aids = new uint256[](3);
        for (uint256 i; i < 3; ++i) {
            aids[i] = _claimAvailability(validator1, b, i);
        }
        vm.warp(block.timestamp + VOTE_WINDOW - 1);
        vm.startPrank(node, node);
        for (uint256 i; i < 3; ++i) {
            tm.answerAvailability(aids[i], _ref(b), rs[i], Merkle.proofAt(ls, i), _trace(i));
        }
        vm.stopPrank();
        vm.assertGt(block.timestamp, uint256(committedAt) + CHALLENGE_WINDOW + LOCK_STEP_MAX, "past the commit's lock");
        (bool left, bytes memory ret) = _tryWithdraw();
        assertFalse(left, "held by the answer's window");
        assertEq(bytes4(ret), ServiceManager.StakeIsLocked.selector);

        uint256[] memory ids = new uint256[](3);
        for (uint256 i; i < 3; ++i) {
            ids[i] = _challenge(validator3, b, i, rs[i], Merkle.proofAt(ls, i)); // in the answer's window
            _vote(validator1, ids[i], true);
        }
        vm.warp(tm.challenges(ids[2]).voteDeadline);
        uint256 slashed;
        for (uint256 i; i < 3; ++i) {
            assertTrue(tm.resolve(ids[i]));
            slashed += tm.challenges(ids[i]).slashed;
        }
        assertEq(slashed, 3 * SLASH_AMOUNT, "the verdicts reach the unbonding stake");
    }

    /// @dev A bound on LOCK_STEP at the defaults (CHALLENGE_WINDOW / 16 = 1.5 h).
    uint256 internal constant LOCK_STEP_MAX = CHALLENGE_WINDOW / 16;

    /*//////////////////////////////////////////////////////////////
            2. AN OMISSION CLAIM AND A FRAUD CHALLENGE ON ONE LEAF
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. The node commits a faulty receipt it promised; a validator challenges it
    ///         for fraud; its user, not knowing, also claims the promise broken once it is due. The
    ///         node answers the omission with the very batch under challenge (it did commit it):
    ///         the claim is settled, one of the two freezes is lifted, the other stays to the
    ///         vote's end, and the fraud verdict still slashes and refunds the user. Each credit is
    ///         paid once: a second claim and a second resolve are refused.
    function test_defence_AnOmissionAnswerDoesNotShieldTheLeafFromItsFraudVerdict() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator3, 3 ether);
        uint256 commitBy = block.timestamp + 1 hours;
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(7, 0.001 ether, type(uint64).max, commitBy);
        bytes32[] memory ls = new bytes32[](2);
        ls[0] = _leaf(r);
        ls[1] = _leaf(_receipt(8, user, 0.001 ether));
        uint256 b = _commitRoot(node, Merkle.root(ls), 2);
        _rollSealed(block.number + SEED_DELAY_BLOCKS + 1);
        uint256 id = _challenge(validator1, b, 0, r, Merkle.proofAt(ls, 0));
        _commitVote(validator3, id, true);

        vm.warp(commitBy);
        uint256 oid = _claimOmission(user, p, sig, q, r);
        assertEq(sm.getOperator(node).frozenCount, 2, "one freeze per dispute");
        vm.prank(node, node);
        om.answerOmission(oid, _ref(b), 0, r, Merkle.proofAt(ls, 0));
        assertEq(sm.getOperator(node).frozenCount, 1, "the fraud challenge still holds the stake");
        vm.expectRevert(); // one claim per promise
        this.claimAgain(p, sig, q, r);

        _revealVote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "the committed leaf is still judged");
        assertEq(tm.challenges(id).slashed, SLASH_AMOUNT);
        assertEq(sm.getOperator(node).frozenCount, 0);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.resolve(id);
        assertEq(tm.claimRefund(id, r, q), 0.001 ether, "the user is refunded its fee");
        vm.expectRevert(TaskManager.NothingToWithdraw.selector);
        tm.claimRefund(id, r, q);
    }

    /// @dev A second omission claim on the same promise, from the user (an external call, for expectRevert).
    function claimAgain(ReceiptPromise memory p, bytes memory sig, TaskRequest memory q, Receipt memory r) external {
        _claimOmission(user, p, sig, q, r);
    }

    /*//////////////////////////////////////////////////////////////
                 3. RE-REGISTERING AND LEAVING MID-DISPUTE
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. Challenged, the node deregisters (its 2 ether start unbonding) and
    ///         registers again with 2 fresh ether, hoping the verdict finds an empty record or the
    ///         old stake a way out. The old stake stays frozen (no withdrawal while the dispute is
    ///         open, whatever the unbonding period), and the verdict slashes.
    function test_defence_ReRegisteringMidChallengeFreesNothing() public {
        (uint256 id,,) = _openChallenge(); // node 2 ether; validator1 challenges
        vm.startPrank(node);
        sm.deregister();
        vm.stopPrank();
        _registerNode(node, 2 ether);
        assertEq(sm.getOperator(node).unbonding, 2 ether);
        (bool left, bytes memory ret) = _tryWithdraw();
        assertFalse(left, "frozen");
        assertEq(bytes4(ret), ServiceManager.OperatorFrozen.selector);
        _vote(validator2, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
        assertEq(tm.challenges(id).slashed, SLASH_AMOUNT);
        assertEq(sm.getOperator(node).stake + sm.getOperator(node).unbonding, 3 ether);
    }

    /// @notice Defence. The challenger deregisters at once after challenging (its fraud weight is
    ///         the challenge and stays), registers its ether again under a new address and tries
    ///         to seal a second fraud vote with it: StakeTooRecent. After the verdict every vote
    ///         bond and pool share is credited once.
    function test_defence_TheChallengersStakeVotesOnce() public {
        (uint256 id,,) = _openChallenge(); // validator1 (1 ether) challenges; 1, 2, 3 ether staked
        vm.prank(validator1);
        sm.deregister();
        address again = makeAddr("validator1-again");
        vm.deal(again, 1 ether + CHALLENGE_BOND);
        vm.prank(again);
        sm.registerValidator{value: 1 ether}();
        vm.warp(block.timestamp + 1);
        uint64 openedAt = tm.challenges(id).openedAt;
        vm.prank(again);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.StakeTooRecent.selector, openedAt));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256("second vote"));

        _vote(validator2, id, true);
        _vote(validator3, id, false);
        vm.warp(tm.challenges(id).voteDeadline);
        assertFalse(tm.resolve(id), "3 fraud : 3 not fraud, fraud needs more: cleared (3 >= 30 % of 6)");
        vm.prank(validator3);
        uint256 won = tm.claimVoteReward(id);
        assertEq(won, CHALLENGE_BOND + CHALLENGE_BOND * VOTER_REWARD_BPS / 10_000 + CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(TaskManager.RewardAlreadyClaimed.selector);
        tm.claimVoteReward(id);
        vm.prank(validator2);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);
    }
}
