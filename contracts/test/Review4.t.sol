// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {OmissionManager} from "../src/OmissionManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, ReceiptPromise, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";

/// @notice Fourth adversarial review: the receipt promise bounded by the user's signed deadline
///         (commit 99eaea6: a claim opens at `min(commitBy, request.deadline + MAX_PROMISE_DELAY)`).
///         `test_rule_*`: what the chain does with a promise signed past the bound (the review found
///         the node signing such promises for tasks a user held past it; the node now never does,
///         tests/unit/test_review_promises.py); `test_defence_*`: an attack the contracts stop.
contract Review4Test is Base {
    uint256 internal constant TASK = 11;
    uint256 internal constant PROMISE_S = 600; // the node's default batch.promise_s
    uint256 internal constant MAX_AGE_S = 10; // the node's default batch.max_age_s

    /*//////////////////////////////////////////////////////////////
        H1. A task that ends past deadline + MAX_PROMISE_DELAY
    //////////////////////////////////////////////////////////////*/

    /// @notice A promise signed after its request's `deadline + MAX_PROMISE_DELAY` is due at that
    ///         bound, already past: the user can claim at once, and a batch committed after the
    ///         bound does not answer (`CommittedTooLate`). The review found the node signing such
    ///         promises: a user kept a task running past the bound (tool calls confirmed just before
    ///         each timeout, tasks queued behind its own) and got an honest node slashed. The chain
    ///         cannot see when a task ended, so the node keeps the rule: `TaskWorker` caps
    ///         `commitBy` at the bound, fails (unbilled) a task that ends within its commit margin
    ///         of it, and refuses a task whose slot comes after its deadline
    ///         (tests/unit/test_review_promises.py).
    function test_rule_PromiseSignedPastTheBoundIsDueAtTheBound() public {
        _registerNode(node, 2 ether);
        uint256 deadline = block.timestamp + 600; // what the SDK signs
        uint256 ended = deadline + om.MAX_PROMISE_DELAY() + 60; // the user kept the task running
        vm.warp(ended);
        uint256 commitBy = ended + PROMISE_S; // the honest node's promise
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(TASK, 0.01 ether, deadline, commitBy);

        uint256 id = _claimOmission(user, p, sig, q, r); // at once: the promise is already "due"
        uint64 due = om.omissionChallenges(id).commitBy;
        assertEq(due, deadline + om.MAX_PROMISE_DELAY());
        assertTrue(due < block.timestamp, "due before the node even signed its promise");

        vm.warp(ended + MAX_AGE_S); // the node's batcher cuts the batch, well before commitBy
        uint256 b = _commitRoot(node, _leaf(r), 1);
        TaskManager.BatchRef memory ref = _ref(b);
        assertTrue(ref.committedAt < commitBy, "the node kept its own promise");
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.CommittedTooLate.selector, ref.committedAt, due));
        om.answerOmission(id, ref, 0, r, new bytes32[](0));

        vm.warp(om.omissionChallenges(id).deadline);
        om.resolveOmission(id);
        assertEq(sm.getOperator(node).stake, 2 ether - SLASH_AMOUNT, "a node that signs past the bound is slashed");
        assertEq(om.claimable(user), CHALLENGE_BOND + SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000, "the user is paid");
    }

    /// @notice The same on the devnet chain (UNBONDING 3600 s, MAX_PROMISE_DELAY 1800 s): a promise
    ///         for a task that ran 40 minutes under the SDK's 10-minute deadline is past the bound
    ///         (the node fails such a task instead of signing it).
    function test_rule_DevnetBoundIsHalfTheUnbondingPeriod() public {
        _deployDevnet(3600);
        _registerNode(node, 2 ether);
        assertEq(om.MAX_PROMISE_DELAY(), 1800);
        uint256 deadline = block.timestamp + 600;
        uint256 ended = block.timestamp + 40 minutes;
        vm.warp(ended);
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(TASK, 0.01 ether, deadline, ended + PROMISE_S);
        uint256 id = _claimOmission(user, p, sig, q, r);
        vm.warp(ended + MAX_AGE_S);
        uint256 b = _commitRoot(node, _leaf(r), 1);
        vm.prank(node, node);
        vm.expectRevert(
            abi.encodeWithSelector(OmissionManager.CommittedTooLate.selector, ended + MAX_AGE_S, deadline + 1800)
        );
        om.answerOmission(id, _ref(b), 0, r, new bytes32[](0));
    }

    /*//////////////////////////////////////////////////////////////
                               DEFENCES
    //////////////////////////////////////////////////////////////*/

    /// @notice Grief through the earlier due time: a user claims at `deadline + MAX_PROMISE_DELAY`
    ///         (before the node's own `commitBy`) against an honest node whose batch landed
    ///         `max_age_s` after the task, inside the bound. The node answers; it is unfrozen and
    ///         paid the answer's gas, ANSWER_FEE_BPS of the bond burns: the griefer pays.
    function test_defence_EarlyClaimOnATaskCommittedInTimeCostsTheGriefer() public {
        _registerNode(node, 2 ether);
        uint256 deadline = block.timestamp + 600;
        uint256 ended = deadline + om.MAX_PROMISE_DELAY() - 1 hours; // long, but ends inside the bound
        vm.warp(ended);
        uint256 commitBy = ended + 2 hours; // a promise past the bound
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(TASK, 0.01 ether, deadline, commitBy);
        vm.warp(ended + MAX_AGE_S);
        uint256 b = _commitRoot(node, _leaf(r), 1);

        uint256 due = deadline + om.MAX_PROMISE_DELAY();
        vm.warp(due);
        uint256 id = _claimOmission(user, p, sig, q, r);
        vm.fee(10 gwei);
        vm.prank(node, node);
        om.answerOmission(id, _ref(b), 0, r, new bytes32[](0));
        assertEq(uint256(om.omissionChallenges(id).status), uint256(OmissionManager.OmissionStatus.Answered));
        assertEq(sm.getOperator(node).stake, 2 ether, "not slashed");
        assertEq(sm.getOperator(node).frozenCount, 0, "unfrozen");
        assertTrue(om.claimable(user) + user.balance < CHALLENGE_BOND, "the griefer loses part of its bond");
    }

    /// @notice Extreme deadlines and promises: no overflow, no early claim, no truncated due time.
    ///         A deadline just below `type(uint64).max` bounds the promise by a due time above 2**64
    ///         (computed in uint256); at and above `type(uint64).max` (and at `type(uint256).max`)
    ///         the deadline does not bound and `commitBy + CHALLENGE_WINDOW` is never computed for a
    ///         promise not yet due. A zero deadline makes a promise due at MAX_PROMISE_DELAY (1970):
    ///         past its window, so the claim is refused as expired, not opened.
    function test_defence_ExtremeDeadlinesNeitherOverflowNorOpenEarly() public {
        _registerNode(node, 2 ether);
        uint256 mpd = om.MAX_PROMISE_DELAY();
        uint256 edge = type(uint64).max;
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(TASK, 0.01 ether, edge - 1, type(uint256).max);
        vm.deal(user, 10 * CHALLENGE_BOND);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, edge - 1 + mpd));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);

        uint256[2] memory unbounded = [edge, type(uint256).max];
        for (uint256 i; i < 2; ++i) {
            q.deadline = unbounded[i];
            r.requestHash = payments.hashTaskRequest(q);
            p = ReceiptPromise({requestHash: r.requestHash, leaf: _leaf(r), commitBy: type(uint256).max});
            sig = _signPromise(privateKeyOf("node"), p);
            vm.prank(user);
            vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, type(uint256).max));
            om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);
        }

        q.deadline = 0;
        r.requestHash = payments.hashTaskRequest(q);
        p = ReceiptPromise({requestHash: r.requestHash, leaf: _leaf(r), commitBy: block.timestamp + 600});
        sig = _signPromise(privateKeyOf("node"), p);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseExpired.selector, mpd + CHALLENGE_WINDOW));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);
    }

    /// @notice The bound is the claim's window too: a claim opened more than CHALLENGE_WINDOW after
    ///         `deadline + MAX_PROMISE_DELAY` is refused even though the node's `commitBy` is later
    ///         (a user cannot hold a claim back until the node's stake is gone and then freeze a new
    ///         registration), and one second before the bound it is not due yet.
    function test_defence_WindowFollowsTheBoundNotTheFarCommitBy() public {
        _registerNode(node, 2 ether);
        uint256 deadline = block.timestamp + 600;
        uint256 due = deadline + om.MAX_PROMISE_DELAY();
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(TASK, 0.01 ether, deadline, due + 2 * CHALLENGE_WINDOW);
        vm.deal(user, 10 * CHALLENGE_BOND);
        vm.warp(due - 1);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, due));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);
        vm.warp(due + CHALLENGE_WINDOW);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseExpired.selector, due + CHALLENGE_WINDOW));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);
        vm.warp(p.commitBy);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseExpired.selector, due + CHALLENGE_WINDOW));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);
    }
}
