// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, ReceiptPromise, TaskRequest} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// Review 21: the stake and quorum boundaries of ServiceManager, TaskManager, OmissionManager,
/// Payments and SeedBeacon with fresh eyes, after Review3..20, Adversary*, DisputeRules,
/// OmissionAdversary, Invariants and the known limits of docs/security-parameters.md (not repeated
/// here). Looked at as: a node that wants its stake out before a pending or still-openable dispute
/// slashes it (unbond and withdraw timing against the commit, answer and reopen locks, a vote
/// extended by an availability claim, re-registration, top-ups, partial unbonds, slash order,
/// `stakeLeavesAt`); validators gaming a quorum or a weight (stake entering or leaving in the
/// challenge's own second, stake topped up or slashed mid-vote, the challenger's fixed weight,
/// the validator-only and node-only roles, OmissionManager slashing an address that is a
/// validator); anyone making an honest party's funds stuck (push payments between the four
/// ether-holding contracts, freeze counters, sub-minimum stakes that cannot move).
///
/// Found:
/// - LOW. An OmissionManager slash can leave a registered validator with stake in
///   (0, MIN_VALIDATOR_STAKE): the only slash a validator address can suffer (a promise it signed
///   as a request's `node`, claimed by the request's user) goes through `ServiceManager.slash`,
///   which takes the stake and lowers `totalValidatorStake` by it, but keeps the validator
///   registered with the remainder. That remainder counts in every later challenge's quorum base
///   (`settledValidatorStake`) and can never vote (`isActiveValidator` needs the minimum), the state
///   `addStake`'s rule "a validator holds 0 or at least the minimum" exists to prevent (Review11).
///   Only the validator's own key can cause it (its signed promise), and it costs more than staking
///   the minimum and abstaining, which weighs the same against a fraud verdict: no one profits,
///   hence LOW. FIXED: `slash` moves such a remainder to unbonding and out of the total, so a
///   registered validator holds 0 or at least the minimum on every path
///   (test_defence_ASlashedValidatorKeepsSubMinimumStakeInTheQuorumBase).
/// - LOW (the documented rule, its cost made precise). A validator that adds stake after a
///   challenge opened cannot seal a vote on it at all (`votingStake`: none of the stake may be
///   newer than the challenge), though its older stake stays in that challenge's quorum base:
///   its whole pre-challenge stake turns into an abstention. Here an honest 3-ether validator
///   that tops up by 1 ether turns a fraud verdict (4 against 2) into the node being CLEARED by its
///   2-ether ally, which takes the finder's bond. Only the validator itself can add to its stake,
///   so it is self-inflicted; the node daemon tops up automatically (nodes do not vote), a
///   validator operator must not while a vote is open
///   (test_known_limit_ATopUpMidVoteTurnsTheOldStakeIntoAnAbstention).
///
/// Checked and holding:
/// - Stake that leaves and stake that enters in the challenge's own second (before the challenge
///   lands) leave the quorum base at the total as it stood when the second began: the leaver's
///   stake is counted and cannot vote, the newcomer's neither counts nor votes, and the same ether
///   leaving and coming back under a second address is counted once
///   (test_defence_ExitAndEntryInTheChallengesSecondLeaveTheBaseAtTheSecondsStart).
/// - A vote extended by an availability claim and ending without a verdict reopens the leaf from
///   its extended end and locks the stake to the end of that window (not to the original end, nor
///   only to the answer's window): with an unbonding period shorter than every window the node
///   still cannot withdraw before the re-challenge, whose verdict slashes the unbonding stake
///   (test_defence_AnExtendedVotesReopenIsAnchoredAtItsExtendedEndAndHoldsTheStake).
/// - A role is for life: the node's address can never become a validator (even after leaving and
///   withdrawing), so it can neither vote on its own challenges nor move its stake into the
///   quorum; a validator can never register as a node
///   (test_defence_ARoleIsForLifeSoANodeNeverVotesOnItsOwnLeaf).
/// - Read, no test (earlier reviews or the invariants hold them): every stake increase sets
///   `stakedAt` and every change of the validator total goes through `_setTotal`, so the base is
///   never below the stake that may vote on it and a challenger's weight never exceeds the base;
///   a reveal weighs min(sealed, stake now), so stake that leaves or is slashed mid-vote only ever
///   lowers a weight; the challenger's weight is fixed but its stake is locked to the vote's end
///   and validators are never slashed by TaskManager, so leaving changes nothing; every
///   push of ether goes to a contract that accepts it from exactly that sender (SM -> TM/OM on a
///   slash, Payments -> SM on a seizure, Payments -> TM on a bounty, the burn address has no
///   code), so no party can make a resolve revert; freeze and unfreeze pair per dispute across TM
///   and OM, and an `unfreeze` without a freeze cannot be reached; every uint32 counter
///   (frozenCount, slashCount, committed) needs one bonded dispute or vote per step; a slash takes
///   active stake first, so a node whose active stake is exactly one slash and whose unbonding has
///   matured keeps the unbonding after a verdict: stake it could have withdrawn before the dispute
///   froze it (the "Competing slashes" known limit, not a new escape).
contract Review21Test is Base {
    /*//////////////////////////////////////////////////////////////
                                 HELPERS
    //////////////////////////////////////////////////////////////*/

    /// @dev `who` tries `withdrawUnbonded`; returns whether it paid and the revert data.
    function _tryWithdraw(address who) internal returns (bool ok, bytes memory ret) {
        vm.prank(who);
        (ok, ret) = address(sm).call(abi.encodeCall(ServiceManager.withdrawUnbonded, ()));
    }

    /// @dev `who` tries to seal a vote on `id`; returns the revert data (empty when it sealed).
    function _trySeal(address who, uint256 id) internal returns (bytes memory ret) {
        vm.deal(who, who.balance + CHALLENGE_BOND);
        vm.prank(who);
        bool ok;
        (ok, ret) = address(tm).call{value: CHALLENGE_BOND}(
            abi.encodeCall(TaskManager.commitVote, (id, keccak256(abi.encode(id, who, true, bytes32(0)))))
        );
        if (ok) ret = "";
    }

    /*//////////////////////////////////////////////////////////////
                1. THE QUORUM BASE IN THE CHALLENGE'S SECOND
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. In the very second a challenge lands (ahead of it in the block), the node's
    ///         friend validator3 (3 ether) deregisters, hoping to shrink the base to the finder's
    ///         advantage or (as an ally) to free its ether while still counting; a newcomer registers
    ///         3 fresh ether, hoping to inflate the base; validator3 also registers its 3 ether of
    ///         fresh ether again under a second address. The base is the total at the start of the
    ///         second (6 ether: 1 + 2 + 3), the leaver cannot vote, the newcomers cannot vote, and
    ///         the verdict is the one the settled stake gives.
    function test_defence_ExitAndEntryInTheChallengesSecondLeaveTheBaseAtTheSecondsStart() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 4);
        vm.warp(block.timestamp + 1);
        assertEq(sm.settledValidatorStake(), 6 ether);

        // the same second, ahead of the challenge
        vm.prank(validator3);
        sm.deregister();
        address second = makeAddr("validator3-second-address");
        vm.deal(second, 3 ether);
        vm.prank(second);
        sm.registerValidator{value: 3 ether}();
        vm.deal(stranger, 3 ether);
        vm.prank(stranger);
        sm.registerValidator{value: 3 ether}();
        assertEq(sm.totalValidatorStake(), 9 ether, "3 + 3 + 3 active now");

        uint256 id = _challenge(validator1, b, 1, rs[1], Merkle.proofAt(ls, 1));
        assertEq(tm.challenges(id).quorumBase, 6 ether, "the base is the total when the second began");
        assertEq(bytes4(_trySeal(validator3, id)), TaskManager.NotActiveValidator.selector, "the leaver cannot vote");
        assertEq(bytes4(_trySeal(second, id)), TaskManager.StakeTooRecent.selector, "its ether again: no vote");
        assertEq(bytes4(_trySeal(stranger, id)), TaskManager.StakeTooRecent.selector, "the newcomer: no vote");

        _vote(validator2, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "3 of a 6-ether base is over the 30 % quorum");
        assertEq(tm.challenges(id).fraudStake, 3 ether);
    }

    /*//////////////////////////////////////////////////////////////
           2. A VALIDATOR SLASHED BELOW THE MINIMUM (OMISSION)
    //////////////////////////////////////////////////////////////*/

    /// @notice FIXED (LOW). validator1 (1.5 ether) signs a ReceiptPromise as the `node` of a
    ///         request of its own second address (`user`), never commits (it cannot: it is no
    ///         node), and the user claims the promise broken. The slash takes 1 ether. It left the
    ///         validator registered with 0.5 ether: counted in `totalValidatorStake`, and so in the
    ///         quorum base of every later challenge, but below MIN_VALIDATOR_STAKE, so it could
    ///         never vote. Now the 0.5 ether starts unbonding (out of the total, still slashable)
    ///         and leaves after the unbonding period; the base holds only stake that can vote.
    function test_defence_ASlashedValidatorKeepsSubMinimumStakeInTheQuorumBase() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1.5 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);

        TaskRequest memory q = _request(42, user, validator1, 0.001 ether);
        Receipt memory r = _receipt(42, user, 0.001 ether);
        r.requestHash = payments.hashTaskRequest(q);
        ReceiptPromise memory p =
            ReceiptPromise({requestHash: r.requestHash, leaf: _leaf(r), commitBy: block.timestamp + 1 hours});
        bytes memory sig = _signPromise(privateKeyOf("validator1"), p);
        vm.warp(p.commitBy);
        uint256 oid = _claimOmission(user, p, sig, q, r);
        assertEq(sm.getOperator(validator1).frozenCount, 1, "a validator can be frozen by its own promise");
        vm.warp(om.omissionChallenges(oid).deadline);
        om.resolveOmission(oid);

        ServiceManager.Operator memory op = sm.getOperator(validator1);
        assertTrue(op.registered, "still registered");
        assertEq(op.stake, 0, "no stake under MIN_VALIDATOR_STAKE stays active");
        assertEq(op.unbonding, 0.5 ether, "the remainder unbonds");
        assertEq(op.frozenCount, 0);
        assertFalse(sm.isActiveValidator(validator1));
        assertEq(sm.totalValidatorStake(), 5 ether, "only stake that can vote is in the total");

        vm.warp(block.timestamp + 1);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 4);
        uint256 id = _challenge(validator2, b, 1, rs[1], Merkle.proofAt(ls, 1));
        assertEq(tm.challenges(id).quorumBase, 5 ether, "the base holds only stake that can vote");
        assertEq(bytes4(_trySeal(validator1, id)), TaskManager.NotActiveValidator.selector, "and cannot vote");

        // not stuck: the remainder leaves after the unbonding period
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        uint256 before = validator1.balance;
        (bool ok,) = _tryWithdraw(validator1);
        assertTrue(ok, "it leaves");
        assertEq(validator1.balance - before, 0.5 ether);
    }

    /*//////////////////////////////////////////////////////////////
                 3. A TOP-UP DURING A VOTE (WEIGHT TIMING)
    //////////////////////////////////////////////////////////////*/

    /// @notice Known limit (LOW; the documented "only stake older than the challenge votes", its
    ///         cost made precise). A faulty receipt; the finder validator1 (1 ether) challenges;
    ///         the node's friend validator2 (2 ether) seals "not fraud"; honest validator3 (3 ether)
    ///         would seal "fraud". Had it not topped up, fraud wins 4 to 2 (control, from a
    ///         snapshot). It tops up 1 ether first: its whole stake (3 ether, in the base) cannot
    ///         seal any more, the friend's 2 ether alone reach the 30 % quorum and are at least the
    ///         fraud side, the node is CLEARED and takes the finder's bond. A vote sealed before the
    ///         top-up keeps its sealed weight (min(sealed, now)), so only an unsealed validator is
    ///         silenced. Today's behaviour is asserted.
    function test_known_limit_ATopUpMidVoteTurnsTheOldStakeIntoAnAbstention() public {
        (uint256 id,,) = _openChallenge(); // node 2, validators 1 / 2 / 3 ether, validator1 challenges
        assertEq(tm.challenges(id).quorumBase, 6 ether);
        vm.warp(block.timestamp + 1 hours);
        _vote(validator2, id, false);

        uint256 snap = vm.snapshotState();
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "control: without the top-up the fraud verdict stands");
        vm.revertToState(snap);

        vm.deal(validator3, 1 ether);
        vm.prank(validator3);
        sm.addStake{value: 1 ether}();
        assertEq(
            bytes4(_trySeal(validator3, id)),
            TaskManager.StakeTooRecent.selector,
            "KNOWN LIMIT: the 3 ether that are in the base can no longer vote"
        );
        uint256 nodeOwed = tm.claimable(node);
        vm.warp(tm.challenges(id).voteDeadline);
        assertFalse(tm.resolve(id));
        TaskManager.Challenge memory c = tm.challenges(id);
        assertEq(c.honestStake, 2 ether);
        assertEq(c.fraudStake, 1 ether);
        vm.assertGt(tm.claimable(node), nodeOwed, "cleared: the node takes the finder's bond");
    }

    /*//////////////////////////////////////////////////////////////
          4. A REOPEN AFTER AN EXTENDED VOTE (STAKE LOCK TIMING)
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. Devnet windows (CHALLENGE_WINDOW 600 s, VOTE_WINDOW 30 s) with a 60 s
    ///         unbonding period, shorter than every window that matters. The node commits a faulty
    ///         receipt and deregisters at once. The finder challenges; an availability claim on the
    ///         entry (the node's own friend's, answered by the node in its last second) extends the
    ///         vote by a vote window; nobody else votes, so it ends without a verdict. The answer's
    ///         window, the original vote end and the commit's lock all end before the reopened
    ///         window does, and the node tries to leave in the last second of it: the reopen is
    ///         anchored at the EXTENDED end and locks to it, the withdrawal is refused, and the
    ///         re-challenge's verdict slashes the unbonding stake.
    function test_defence_AnExtendedVotesReopenIsAnchoredAtItsExtendedEndAndHoldsTheStake() public {
        _deployDevnet(60);
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 4);
        uint256 t0 = block.timestamp;
        vm.prank(node);
        sm.deregister();

        vm.warp(t0 + 10);
        uint256 id = _challenge(validator1, b, 1, rs[1], Merkle.proofAt(ls, 1));
        assertEq(tm.challenges(id).voteDeadline, t0 + 40);
        vm.warp(t0 + 20); // still sealing (reveals open at t0 + 30)
        uint256 aid = _claimAvailability(stranger, b, 1);
        uint64 extended = tm.challenges(id).voteDeadline;
        assertEq(extended, t0 + 80, "extended to a vote window after the answer is due");
        vm.warp(t0 + 49);
        vm.prank(node, node);
        tm.answerAvailability(aid, _ref(b), rs[1], Merkle.proofAt(ls, 1), _trace(1));

        vm.warp(extended);
        assertFalse(tm.resolve(id), "no verdict: the finder's 1 ether is below the quorum");
        assertEq(tm.reopenedAt(keccak256(abi.encode(b, uint256(1)))), extended, "anchored at the extended end");

        uint256 last = uint256(extended) + 600 - 1; // the reopened window's last second
        vm.assertGt(last, t0 + 49 + 600, "past the answer's window");
        vm.assertGt(last, uint256(sm.getOperator(node).unbondingReadyAt), "past the unbonding period");
        vm.warp(last);
        (bool left, bytes memory ret) = _tryWithdraw(node);
        assertFalse(left, "the reopened window holds the stake");
        assertEq(bytes4(ret), ServiceManager.StakeIsLocked.selector);

        uint256 id2 = _challenge(validator1, b, 1, rs[1], Merkle.proofAt(ls, 1));
        _vote(validator3, id2, true);
        vm.warp(tm.challenges(id2).voteDeadline);
        assertTrue(tm.resolve(id2));
        assertEq(tm.challenges(id2).slashed, SLASH_AMOUNT, "the verdict reaches the unbonding stake");
        assertEq(sm.getOperator(node).unbonding, 1 ether);
    }

    /*//////////////////////////////////////////////////////////////
                 5. ROLES: THE NODE IS NEVER A VALIDATOR
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. A node that left and withdrew everything tries to come back as a validator
    ///         (to vote on its own leaves, or just to add its ether to the quorum): refused for
    ///         life (RoleMismatch), as a validator registering as a node is.
    function test_defence_ARoleIsForLifeSoANodeNeverVotesOnItsOwnLeaf() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        vm.prank(node);
        sm.deregister();
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        (bool ok,) = _tryWithdraw(node);
        assertTrue(ok);

        vm.deal(node, 5 ether);
        vm.prank(node);
        vm.expectRevert(ServiceManager.RoleMismatch.selector);
        sm.registerValidator{value: 5 ether}();
        vm.deal(validator1, 5 ether);
        vm.prank(validator1);
        vm.expectRevert(ServiceManager.AlreadyRegistered.selector);
        sm.registerNode{value: 5 ether}(ENDPOINT, _models(), 1 gwei);
        vm.prank(validator1);
        sm.deregister();
        vm.prank(validator1);
        vm.expectRevert(ServiceManager.RoleMismatch.selector);
        sm.registerNode{value: 5 ether}(ENDPOINT, _models(), 1 gwei);
        assertEq(sm.validatorStake(node), 0);
    }
}
