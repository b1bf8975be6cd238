// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Attacks on the dispute rules that used to succeed, each refused by design:
///         half-open windows (no second in which stake both leaves and stays accountable), a quorum
///         base snapshotted when a challenge opens, and votes only from stake older than the challenge.
contract DisputeRulesTest is Base {
    uint256 internal constant SHORT_UNBONDING = 10; // below the 30 s vote window: the setting the attacks need

    function setUp() public override {
        super.setUp();
        _deployDevnet(SHORT_UNBONDING); // vote window 30 s, challenge window 600 s
    }

    /// A node cannot withdraw its stake in the last second of a batch's challenge window and leave
    /// the challenge that lands in that second with nothing to slash.
    function test_NoSecondToWithdrawAndStillBeChallengeable() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        uint256 deadline = block.timestamp + 600;
        vm.prank(node, node);
        sm.requestUnbond(2 ether); // unbonding ready long before the window ends
        bytes32[] memory proof = Merkle.proofAt(leaves, 0);

        // The lock is the window's end rounded up to LOCK_STEP: never earlier than the deadline.
        uint64 lockedUntil = sm.getNode(node).lockedUntil;
        assertGe(lockedUntil, deadline);
        vm.warp(deadline - 1); // inside the window: challengeable, and the stake cannot leave
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.StakeIsLocked.selector, lockedUntil));
        sm.withdrawUnbonded();

        vm.warp(deadline); // the window is over: no challenge is accepted (and the stake may leave)
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeWindowClosed.selector, deadline));
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 0, rs[0], proof, "");
        vm.warp(lockedUntil);
        vm.prank(node, node);
        sm.withdrawUnbonded();
    }

    /// The same ether cannot vote, leave at the vote deadline, and vote again from another address.
    function test_VoterStakeCannotLeaveWhileItCanStillVote() public {
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 5 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        uint256 id = _challenge(validator1, batchId, 0, rs[0], Merkle.proofAt(leaves, 0));
        uint64 deadline = tm.challenges(id).voteDeadline;
        _vote(validator2, id, false);
        vm.prank(validator2);
        sm.requestUnbond(5 ether);
        vm.warp(deadline - 1);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.StakeIsLocked.selector, deadline));
        sm.withdrawUnbonded();
        vm.warp(deadline);
        // at the deadline nobody votes any more (neither seals nor opens), so the freed ether votes nowhere
        vm.deal(validator3, validator3.balance + CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongVotePhase.selector, _revealsAt(id)));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, true)));
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.VoteWindowClosed.selector, deadline));
        tm.revealVote(id, true, bytes32(0));
        vm.prank(validator2);
        sm.withdrawUnbonded(); // from the deadline on, the stake is free
    }

    /// Stake registered after the vote cannot dilute a fraud that reached quorum.
    function test_QuorumBaseIsFixedWhenTheChallengeOpens() public {
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        uint256 id = _challenge(validator1, batchId, 0, rs[0], Merkle.proofAt(leaves, 0));
        _vote(validator2, id, true); // 3 of 3 ether: fraud
        assertEq(tm.challenges(id).quorumBase, 3 ether);
        vm.warp(tm.challenges(id).voteDeadline);
        _registerValidator(validator3, 100 ether); // joins after the vote, never at risk
        assertTrue(tm.resolve(id), "the late whale does not clear the fraud");
    }

    /// Voters who did not vote cannot leave to turn a minority accusation into a quorum.
    function test_LeavingDoesNotShrinkTheQuorumBase() public {
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        uint256 id = _challenge(validator1, batchId, 0, rs[0], Merkle.proofAt(leaves, 0)); // 1 of 6 ether
        vm.prank(validator2);
        sm.deregister();
        vm.prank(validator3);
        sm.deregister();
        vm.warp(tm.challenges(id).voteDeadline);
        assertFalse(tm.resolve(id), "1 of 6 ether is no quorum, whoever left since");
        assertEq(sm.getNode(node).slashCount, 0);
    }

    /// Stake that joins (or grows) after a challenge opened cannot vote on it.
    function test_StakeJoiningAfterTheChallengeCannotVote() public {
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 1 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        uint256 id = _challenge(validator1, batchId, 0, rs[0], Merkle.proofAt(leaves, 0));
        uint64 openedAt = tm.challenges(id).openedAt;
        vm.warp(block.timestamp + 1);
        _registerValidator(validator3, 50 ether);
        vm.deal(validator3, validator3.balance + CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.StakeTooRecent.selector, openedAt));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, false)));
        vm.deal(validator2, 50 ether);
        vm.prank(validator2);
        sm.addStake{value: 50 ether}();
        vm.deal(validator2, validator2.balance + CHALLENGE_BOND);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.StakeTooRecent.selector, openedAt));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, false)));
        assertEq(sm.votingStake(validator1, openedAt + 1), 1 ether);
        assertEq(sm.votingStake(validator3, openedAt + 1), 0);
    }

    /// A node that slashes itself through an allied challenger (the only voter) and its own second
    /// address as the receipt's user must lose money, not recover the whole slash. Worst case for
    /// the protocol: the seed picked the ally (every validator is sampled on the devnet) and the
    /// "user" signed the request, so it claims the refund.
    function test_SelfChallengeThroughAnAllyIsANetLoss() public {
        _deployDevnet();
        address ally = validator1;
        address sockpuppet = user2;
        _registerNode(node, 2 ether);
        _registerValidator(ally, 1 ether); // all the stake there is: quorum alone
        Receipt memory r = _chargedReceipt(0, sockpuppet, node, 1000 ether); // a huge maxFee to "refund" to itself
        uint256 batchId = _commitRoot(node, _leaf(r), 1);
        _rollSealed(block.number + 2);
        uint256 id = _challenge(ally, batchId, 0, r, new bytes32[](0));
        assertTrue((tm.challenges(id).sampled != TaskManager.Pick.None));
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
        vm.prank(ally);
        tm.claimVoteReward(id);
        uint256 cap = (SLASH_AMOUNT - SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000 - tm.challenges(id).rewardPool) / 2;
        assertEq(tm.claimRefund(id, r, _request(0, sockpuppet, node, 1000 ether)), cap, "the whole cap, no more");
        uint256 slashed = tm.challenges(id).slashed;
        uint256 recovered = tm.claimable(ally) - CHALLENGE_BOND + tm.claimable(sockpuppet);
        assertEq(slashed, SLASH_AMOUNT);
        assertEq(slashed - recovered, tm.totalBurned());
        assertGe(tm.totalBurned(), slashed * 3 / 10); // at least 30 % of a self-slash is lost
    }
}
