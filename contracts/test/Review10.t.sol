// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {OmissionManager} from "../src/OmissionManager.sol";
import {ServiceManager} from "../src/ServiceManager.sol";
import {Receipt, ReceiptPromise, TaskRequest} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Review 10: "a leaving node's promises fall due a challenge window before its stake may
///         drop below one slash" (ServiceManager.stakeLeavesAt, OmissionManager._checkPromise),
///         attacked by nodes, users and their allies.
///
///         Tried, and what was found:
///         - FIXED (was a known limit): the acceleration also moved the claim window's END to
///           `stakeLeavesAt`: after a slash, with an old unbonding's ready time passed, every other
///           promise was PromiseExpired at once and the rest of the stake escaped. Now only the
///           opening moves; the window closes CHALLENGE_WINDOW after the promise's own due time
///           (test_defence_AStaleDustUnbondingNoLongerClosesTheClaimsAfterTheFirstSlash).
///         - FIXED (was a known limit): with MIN_NODE_STAKE below SLASH_AMOUNT an ACTIVE node could
///           be "leaving" and its user claim before the honest commit. `stakeLeavesAt` is now 0
///           while the node is active (it can still commit)
///           (test_defence_AnActiveNodeIsNeverHurriedWhateverItsStake).
///         - FIXED (was a known limit): a slashed node's in-flight promises were claimable in the
///           block of the slash and unanswerable, since the answer had to show a batch committed
///           by the hurried time. The answer's bound is now the promise's own due time: a node
///           that tops up and commits within its promise answers the early claims
///           (test_defence_ASlashedNodeThatTopsUpAnswersItsInFlightPromises).
///         - holds: a receipt committed before the node became "leaving" is always answerable,
///           on every path (deregister, partial unbond, slash with a stale unbonding): the
///           commit's lock keeps `stakeLeavesAt - CHALLENGE_WINDOW >= committedAt` (fuzzed,
///           test_defence_AReceiptCommittedBeforeLeavingIsAlwaysAnswerable).
///         - holds: re-registering or topping up during the window only closes it with fresh
///           stake behind the promise; repeated unbond requests only delay the node's own exit;
///           no sequence gets the last slash out without a window in which the claim opens and
///           freezes it (test_defence_ReRegisteringOrUnbondingAgainNeverGetsTheStakeOutWithoutAWindow).
///         - holds: many promises of one leaving node all fall due at once; every claimant gets its
///           bond back, the stake pays as many slashes as it covers (a general capacity bound, not
///           this change's) (test_defence_ManyPromisesOfALeavingNodeAllLandWhileItsStakeIsFrozen).
///         - holds: `leaves > CHALLENGE_WINDOW` and the uint64 casts cannot be reached with real
///           timestamps (stakeLeavesAt is a uint64 of a time >= block.timestamp at an unbond).
contract Review10Test is Base {
    uint256 internal constant PCT = 10_000;

    /*//////////////////////////////////////////////////////////////
                                 HELPERS
    //////////////////////////////////////////////////////////////*/

    struct Task {
        TaskRequest q;
        Receipt r;
        ReceiptPromise p;
        bytes sig;
    }

    /// @dev Task `i` of `who` to `node` (request deadline `deadline`); the node signs a promise to
    ///      commit its receipt by `commitBy`. (Payment is not needed for the claim: omitted.)
    function _task(uint256 i, address who, uint256 deadline, uint256 commitBy) internal view returns (Task memory t) {
        t.q = _request(i, who, node);
        t.q.deadline = deadline;
        t.r = _receipt(i, who, 0.01 ether);
        t.r.requestHash = payments.hashTaskRequest(t.q);
        t.p = ReceiptPromise({requestHash: t.r.requestHash, leaf: _leaf(t.r), commitBy: commitBy});
        t.sig = _signPromise(privateKeyOf("node"), t.p);
    }

    function _claim(address who, Task memory t) internal returns (uint256) {
        return _claimOmission(who, t.p, t.sig, t.q, t.r);
    }

    /// @dev Expects `who`'s claim on `t` to revert with `err`.
    function _claimReverts(address who, Task memory t, bytes memory err) internal {
        uint256 bond = om.omissionBond();
        vm.deal(who, who.balance + bond);
        vm.prank(who);
        vm.expectRevert(err);
        om.challengeOmission{value: bond}(t.p, t.sig, t.q, t.r);
    }

    /// @dev Tries `who`'s claim on `t`; returns its id, or 0 if the contract refused it.
    function _tryClaim(address who, Task memory t) internal returns (uint256) {
        uint256 bond = om.omissionBond();
        vm.deal(who, who.balance + bond);
        vm.prank(who);
        try om.challengeOmission{value: bond}(t.p, t.sig, t.q, t.r) returns (uint256 id) {
            return id;
        } catch {
            return 0;
        }
    }

    /// @dev Resolves claim `id` unanswered at its deadline; returns what the node lost.
    function _resolve(uint256 id) internal returns (uint256 slashed) {
        uint64 deadline = om.omissionChallenges(id).deadline;
        if (block.timestamp < deadline) vm.warp(deadline);
        ServiceManager.Operator memory before = sm.getOperator(node);
        om.resolveOmission(id);
        ServiceManager.Operator memory afterwards = sm.getOperator(node);
        slashed = before.stake + before.unbonding - afterwards.stake - afterwards.unbonding;
    }

    /*//////////////////////////////////////////////////////////////
                 1. THE WINDOW'S END MOVES TO stakeLeavesAt
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a KNOWN LIMIT: a cheater shielded the rest of its stake from every claim
    ///         after the first). The acceleration moved BOTH ends of the claim window, and a slash
    ///         lowers the active stake without touching `unbondingReadyAt`: a node keeping 1 wei
    ///         unbonding from long ago became "leaving" with `stakeLeavesAt` in the past as soon as
    ///         one claim slashed it below SLASH_AMOUNT, and every other promise was PromiseExpired
    ///         while its remaining active stake sat there. Now only the opening moves: the window
    ///         closes CHALLENGE_WINDOW after each promise's own due time, so the next claim lands
    ///         and slashes the rest.
    function test_defence_AStaleDustUnbondingNoLongerClosesTheClaimsAfterTheFirstSlash() public {
        _registerNode(node, 1.5 ether);
        vm.prank(node, node);
        sm.requestUnbond(1); // 1 wei, never withdrawn
        uint256 dustReady = block.timestamp + UNBONDING_PERIOD;
        vm.warp(dustReady + 1);
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), 0, "an active node: not leaving");

        uint256 g = block.timestamp;
        Task memory a = _task(31, user, g + 1 hours, g + 600); // faked, never committed
        Task memory b = _task(32, user2, g + 1 days + 1 hours, g + 1 days + 1200); // faked too

        vm.warp(g + 600);
        uint256 idA = _claim(user, a);
        assertEq(_resolve(idA), SLASH_AMOUNT, "the first claim slashes one slash");
        assertEq(sm.getOperator(node).stake, 0.5 ether - 1, "half a slash still active");
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), dustReady, "leaving, with a ready time long past");

        vm.warp(b.p.commitBy + CHALLENGE_WINDOW / 2); // inside b's own window
        uint256 idB = _claim(user2, b);
        assertEq(om.omissionChallenges(idB).commitBy, b.p.commitBy);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, 1));
        sm.withdrawUnbonded();
        _claimReverts(user2, b, abi.encodeWithSelector(OmissionManager.PromiseAlreadyChallenged.selector, idB));
        assertEq(_resolve(idB), 0.5 ether - 1 + 1, "the remainder (and the dust) is slashed");
    }

    /*//////////////////////////////////////////////////////////////
              2. AN ACTIVE NODE MUST NEVER BE "LEAVING"
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a KNOWN LIMIT: the acceleration was harmless to an honest node only if
    ///         SLASH_AMOUNT <= MIN_NODE_STAKE, which nothing enforces). Deployed with MIN_NODE_STAKE
    ///         = 0.5 ether and SLASH_AMOUNT = 1 ether, a node with 0.8 ether active and 0.7 ether
    ///         unbonding was active and "leaving" at once: a fresh promise was due the moment it
    ///         was signed and its user claimed before the honest commit. Now an active node is never
    ///         leaving (`stakeLeavesAt` is 0 while it can commit): the claim waits for the promise,
    ///         and the node commits within it.
    function test_defence_AnActiveNodeIsNeverHurriedWhateverItsStake() public {
        _deploy(0.5 ether);
        assertLt(sm.MIN_NODE_STAKE(), om.SLASH_AMOUNT());
        _registerNode(node, 1.5 ether);
        vm.prank(node, node);
        sm.requestUnbond(0.7 ether); // takes profits, stays active
        uint256 readyAt = block.timestamp + UNBONDING_PERIOD;
        assertTrue(sm.isActiveNode(node), "can commit");
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), 0, "so it is not leaving");

        vm.warp(readyAt - CHALLENGE_WINDOW + 1 hours);
        Task memory t = _task(41, user, block.timestamp + 1 hours, block.timestamp + 600);
        _claimReverts(user, t, abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, t.p.commitBy));
        vm.warp(block.timestamp + 60);
        uint256 b = _commitRoot(node, _leaf(t.r), 1); // honest: 540 s before its promise
        vm.warp(t.p.commitBy);
        uint256 id = _claim(user, t); // a claim on a kept promise is answered
        vm.prank(node, node);
        om.answerOmission(id, _ref(b), 0, t.r, new bytes32[](0));
        assertEq(sm.getOperator(node).slashCount, 0, "never slashed");
    }

    /*//////////////////////////////////////////////////////////////
           3. A SLASH BELOW ONE SLASH HURRIES EVERY PROMISE AT ONCE
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a KNOWN LIMIT: no grace at all). A node with one slash of active stake
    ///         and profits unbonding misses one answer and is slashed to 0 active; it has just
    ///         served two tasks whose receipts it would commit within its 600 s promise. The users
    ///         may claim at once (the node, inactive, is leaving): the claims open early. Before,
    ///         the answer had to show a batch committed by that hurried time, so the node, topping
    ///         up a block later and committing within its promise, was slashed twice more. Now the
    ///         answer's bound is the promise's own due time: it answers both and loses nothing more.
    function test_defence_ASlashedNodeThatTopsUpAnswersItsInFlightPromises() public {
        _registerNode(node, 2 ether);
        vm.prank(node, node);
        sm.requestUnbond(1 ether); // profits, long ago
        vm.warp(block.timestamp + UNBONDING_PERIOD + 1);
        uint256 g = block.timestamp;
        Task memory lost = _task(51, user, g + 1 hours, g + 600); // the one fault
        vm.warp(g + 600);
        uint256 idLost = _claim(user, lost);
        uint64 answerBy = om.omissionChallenges(idLost).deadline;
        vm.warp(answerBy - 5460);
        _commitRoot(node, keccak256("other receipts"), 1); // it keeps serving and committing
        vm.warp(answerBy - 60);
        Task memory t1 = _task(52, user2, block.timestamp + 1 hours, block.timestamp + 600);
        Task memory t2 = _task(53, stranger, block.timestamp + 1 hours, block.timestamp + 600);

        vm.warp(answerBy);
        om.resolveOmission(idLost);
        assertEq(sm.getOperator(node).stake, 0, "slashed below one slash");
        uint256 id1 = _claim(user2, t1); // early: the node is leaving
        uint256 id2 = _claim(stranger, t2);
        assertEq(om.omissionChallenges(id1).commitBy, t1.p.commitBy, "answerable by the promise's own time");

        vm.warp(block.timestamp + 12);
        vm.deal(node, node.balance + 1 ether);
        vm.prank(node, node);
        sm.addStake{value: 1 ether}();
        bytes32[] memory leaves = new bytes32[](2);
        leaves[0] = _leaf(t1.r);
        leaves[1] = _leaf(t2.r);
        uint256 b = _commitRoot(node, Merkle.root(leaves), 2);
        vm.startPrank(node, node);
        om.answerOmission(id1, _ref(b), 0, t1.r, Merkle.proofAt(leaves, 0));
        om.answerOmission(id2, _ref(b), 1, t2.r, Merkle.proofAt(leaves, 1));
        vm.stopPrank();
        ServiceManager.Operator memory op = sm.getOperator(node);
        assertEq(op.stake + op.unbonding, 2 ether, "the top-up and the profits are kept");
        assertEq(op.slashCount, 1, "only the real fault");
    }

    /*//////////////////////////////////////////////////////////////
            4. A RECEIPT COMMITTED BEFORE LEAVING IS ANSWERABLE
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (fuzzed): whatever the path to "leaving" — deregistering, a partial unbond
    ///         below one slash, or a slash with an old unbonding whose ready time passed — a
    ///         receipt committed while the node was active answers every claim the contract
    ///         accepts: the commit locks the stake until `committedAt + CHALLENGE_WINDOW` (rounded
    ///         up), `stakeLeavesAt` is at least that lock, so the accelerated due time is never
    ///         before the commit.
    function test_defence_AReceiptCommittedBeforeLeavingIsAlwaysAnswerable(
        uint8 path,
        uint256 unbondAt,
        uint256 commitAt,
        uint256 leaveAt,
        uint256 claimAt
    ) public {
        path = uint8(bound(path, 0, 2));
        _registerNode(node, 2 ether);
        uint256 t0 = block.timestamp;
        // profits unbonding from some time before the commit (possibly long ready)
        vm.warp(t0 + bound(unbondAt, 0, 20 days));
        vm.prank(node, node);
        sm.requestUnbond(0.5 ether);
        vm.warp(block.timestamp + bound(commitAt, 0, 20 days));
        uint256 c = block.timestamp;
        Task memory t = _task(61, user, type(uint64).max, c + 600); // honest: committed at c
        uint256 b = _commitRoot(node, _leaf(t.r), 1);
        vm.warp(c + bound(leaveAt, 0, 3 days));
        if (path == 0) {
            vm.prank(node, node);
            sm.deregister();
        } else if (path == 1) {
            vm.prank(node, node);
            sm.requestUnbond(1.2 ether); // 0.3 ether active: below one slash
        } else {
            Task memory lost = _task(62, user2, type(uint64).max, block.timestamp);
            uint256 idLost = _claim(user2, lost);
            _resolve(idLost); // 1.5 -> 0.5 active, the 0.5 unbonding possibly long ready
        }
        vm.assertGt(sm.stakeLeavesAt(node, SLASH_AMOUNT), 0, "leaving");
        vm.assertGe(sm.stakeLeavesAt(node, SLASH_AMOUNT), c + CHALLENGE_WINDOW, "the commit's lock");
        uint256 leaves = sm.stakeLeavesAt(node, SLASH_AMOUNT);
        uint256 open = leaves - CHALLENGE_WINDOW < c + 600 ? leaves - CHALLENGE_WINDOW : c + 600;
        uint256 close = leaves < c + 600 + CHALLENGE_WINDOW ? leaves : c + 600 + CHALLENGE_WINDOW;
        vm.warp((block.timestamp > open ? block.timestamp : open) + bound(claimAt, 0, CHALLENGE_WINDOW));
        uint256 id = _tryClaim(user, t);
        if (block.timestamp < close) assertTrue(id != 0, "the user's claim lands in the window");
        if (id != 0) {
            vm.prank(node, node);
            om.answerOmission(id, _ref(b), 0, t.r, new bytes32[](0));
            assertEq(uint256(om.omissionChallenges(id).status), uint256(OmissionManager.OmissionStatus.Answered));
        }
    }

    /*//////////////////////////////////////////////////////////////
             5. NO SEQUENCE GETS THE LAST SLASH OUT UNCLAIMED
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence: a cheater with a far-deadline promise (due on day 33.5) deregisters, then
    ///         (a) re-registers with fresh stake a second before the window opens, so the user's
    ///         claim is refused (PromiseNotDue), and withdraws the old stake; (b) unbonds the fresh
    ///         stake below one slash and, a second before that window opens, pushes its exit with
    ///         a 1-wei unbond request. Each move only replaces the stake behind the promise or
    ///         delays the node's own exit: a slash stays at every moment until a window opens, and
    ///         the claim in that window freezes and slashes it. (The user's cost: claiming again.)
    function test_defence_ReRegisteringOrUnbondingAgainNeverGetsTheStakeOutWithoutAWindow() public {
        _registerNode(node, 2 ether);
        uint256 g = block.timestamp;
        uint256 deadline = g + 30 days;
        Task memory t = _task(71, user, deadline, deadline + om.MAX_PROMISE_DELAY());
        vm.prank(node, node);
        sm.deregister();
        uint256 l1 = g + UNBONDING_PERIOD;
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), l1);

        // (a) a second before the window: fresh stake, the window closes
        vm.warp(l1 - CHALLENGE_WINDOW - 1);
        _registerNode(node, 1 ether);
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), 0);
        vm.warp(l1 - CHALLENGE_WINDOW);
        _claimReverts(user, t, abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, t.p.commitBy));
        vm.warp(l1);
        vm.prank(node, node);
        sm.withdrawUnbonded(); // the old 2 ether leave...
        ServiceManager.Operator memory op = sm.getOperator(node);
        vm.assertGe(op.stake + op.unbonding, SLASH_AMOUNT, "...but a slash stays behind the promise");

        // (b) a top-up keeps it "not leaving"; unbonding below a slash restarts the clock
        vm.prank(node, node);
        sm.requestUnbond(0.5 ether);
        uint256 l2 = block.timestamp + UNBONDING_PERIOD;
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), l2);
        vm.warp(l2 - CHALLENGE_WINDOW - 1);
        vm.prank(node, node);
        sm.requestUnbond(1); // pushes its own exit a whole period away
        uint256 l3 = block.timestamp + UNBONDING_PERIOD;
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), l3);
        vm.warp(l2);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.UnbondingNotReady.selector, uint64(l3)));
        sm.withdrawUnbonded();

        // (c) it cannot get out without passing the window: the claim opens and freezes it
        vm.warp(l3 - CHALLENGE_WINDOW);
        uint256 id = _claim(user, t);
        vm.warp(l3);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, 1));
        sm.withdrawUnbonded();
        assertEq(_resolve(id), SLASH_AMOUNT, "slashed");
    }

    /*//////////////////////////////////////////////////////////////
                6. MANY PROMISES, ONE STAKE, ONE MOMENT
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (bounded by the stake, a general limit): a leaving node with 2 ether faked
    ///         three far-deadline tasks. All three promises fall due at `stakeLeavesAt - CW`; the
    ///         three claims land while the stake is frozen, the stake pays the two slashes it
    ///         covers, the third claimant gets its bond back (no loss for claiming), and nothing is
    ///         left for the node to withdraw.
    function test_defence_ManyPromisesOfALeavingNodeAllLandWhileItsStakeIsFrozen() public {
        _registerNode(node, 2 ether);
        uint256 g = block.timestamp;
        Task memory t1 = _task(81, user, g + 20 days, g + 30 days);
        Task memory t2 = _task(82, user2, g + 20 days, g + 30 days);
        Task memory t3 = _task(83, stranger, g + 20 days, g + 30 days);
        vm.prank(node, node);
        sm.deregister();
        uint256 due = sm.stakeLeavesAt(node, SLASH_AMOUNT) - CHALLENGE_WINDOW;
        vm.warp(due);
        uint256 bond = om.omissionBond();
        uint256 id1 = _claim(user, t1);
        uint256 id2 = _claim(user2, t2);
        uint256 id3 = _claim(stranger, t3);
        assertEq(sm.getOperator(node).frozenCount, 3);
        assertEq(_resolve(id1) + _resolve(id2), 2 ether, "the two slashes it covers");
        assertEq(_resolve(id3), 0, "nothing left for the third");
        assertEq(om.claimable(stranger), bond, "its bond back");
        assertEq(sm.getOperator(node).unbonding, 0, "nothing leaves with the node");
    }
}
