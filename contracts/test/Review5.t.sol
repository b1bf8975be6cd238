// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TaskManager} from "../src/TaskManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Review 5: the vote game seen from lazy and colluding validators.
contract Review5Test is Base {
    /// @notice Known limit (free-riding): votes are public the moment they are cast (`Voted`),
    ///         final, and a vote on the losing side costs nothing but gas. A lazy validator that
    ///         never re-executes anything waits for the last second of the vote window, copies the
    ///         side that is ahead, and is paid the same pro-rata share of the voter pool per unit
    ///         of stake as the validator that spent the compute to check the receipt. It dilutes
    ///         the checkers' reward (here it takes half of it) and adds no information: were every
    ///         validator to do so, nobody would check. Who profits: the copier; who pays: the
    ///         validators that verify.
    function test_knownLimit_CopyingVoterIsPaidLikeTheCheckerWithoutChecking() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether); // challenger
        _registerValidator(validator2, 2 ether); // re-executes, then votes
        _registerValidator(validator3, 2 ether); // lazy: copies the leading side at the deadline
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, true);
        TaskManager.Challenge memory c = tm.challenges(id);
        vm.warp(c.voteDeadline - 1);
        bool leading = tm.challenges(id).fraudStake > tm.challenges(id).honestStake;
        _vote(validator3, id, leading);
        vm.warp(c.voteDeadline);
        assertTrue(tm.resolve(id));
        vm.prank(validator2);
        uint256 checker = tm.claimVoteReward(id);
        vm.prank(validator3);
        uint256 copier = tm.claimVoteReward(id);
        assertGt(checker, 0);
        assertEq(copier, checker, "the copier earns exactly what the checker earns");
    }

    /// @notice Known limit (no cost to a wrong vote): a validator that votes "not fraud" on a real
    ///         fraud (lazy, or the node's friend) loses no stake: its stake is only locked until the
    ///         vote deadline, then free. So voting against the evidence is a free option for a
    ///         colluder: it wins the pool (and clears its friend, who is paid the challenger's bond)
    ///         whenever its side carries the vote, and costs nothing when it does not.
    function test_knownLimit_AWrongVoteCostsTheVoterNothing() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 2 ether); // the node's friend
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, true);
        _vote(validator3, id, false);
        vm.warp(block.timestamp + VOTE_WINDOW);
        assertTrue(tm.resolve(id), "fraud carried");
        assertEq(sm.validatorStake(validator3), 2 ether, "the wrong voter keeps all of its stake");
    }

    /// @notice Known limit (colluding majority): validators holding more stake than the honest
    ///         voters, and at least QUORUM_BPS of it, vote "not fraud" on a real fraud. The node
    ///         is cleared and paid the honest challenger's bond (less the cartel's voter pool):
    ///         the cartel and the node split the challenger's bond, the node is never slashed, and
    ///         nothing on chain records that the cartel voted against the evidence.
    function test_knownLimit_CartelClearsARealFraudAndTheNodeTakesTheBond() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether); // honest challenger
        _registerValidator(validator2, 3 ether); // cartel
        _registerValidator(validator3, 3 ether); // cartel
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2); // rs[0]: faulty
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, false);
        _vote(validator3, id, false);
        vm.warp(block.timestamp + VOTE_WINDOW);
        assertFalse(tm.resolve(id));
        uint256 pool = CHALLENGE_BOND * VOTER_REWARD_BPS / 10_000;
        assertEq(tm.claimable(node), CHALLENGE_BOND - pool, "the cheater is paid the honest bond");
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), pool / 2, "the cartel takes the pool");
        assertEq(tm.claimable(validator1), 0, "the honest challenger loses its bond");
    }

    /// @notice Defence: a validator cannot vote twice (a crash-and-resend, or a double vote to
    ///         double its weight), nor vote on its own challenge a second time.
    function test_defence_NoSecondVoteNorSecondVoteOnOwnChallenge() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether);
        _registerValidator(validator2, 2 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, true);
        vm.prank(validator2);
        vm.expectRevert(TaskManager.AlreadyVoted.selector);
        tm.vote(id, true);
        vm.prank(validator1);
        vm.expectRevert(TaskManager.AlreadyVoted.selector);
        tm.vote(id, true);
    }

    /// @notice Defence: the same receipt cannot be challenged a second time while a challenge on it
    ///         is open or after it was found fraudulent (no second slash, no second bond at risk).
    function test_defence_ALeafOpenOrProvenFraudCannotBeChallengedAgain() public {
        _deployDevnet(); // a vote window shorter than the challenge window
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether);
        _registerValidator(validator2, 2 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        bytes32[] memory proof = Merkle.proofAt(ls, 0);
        uint256 id = _challenge(validator1, b, 0, rs[0], proof);
        vm.deal(validator2, 1 ether);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(_ref(b), 0, rs[0], proof, "again");
        _vote(validator2, id, true);
        vm.warp(block.timestamp + 30);
        assertTrue(tm.resolve(id));
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(_ref(b), 0, rs[0], proof, "again");
    }

    /// @notice Defence (trace shown to the challenger alone): a voter that cannot read the
    ///         challenged entry claims it unavailable. The vote now lasts until VOTE_WINDOW after
    ///         the answer is due (`VoteExtended`). Unanswered: the node is slashed for withholding,
    ///         the fraud vote ends with no verdict and the challenger gets its bond back instead of
    ///         losing it. Control: a challenge with no availability claim that ends without a
    ///         verdict still burns its bond.
    function test_defence_WithheldFromVotersTheVoteWaitsAndTheBondIsRefunded() public {
        _deployDevnet(); // a vote window shorter than the challenge window, as deployed
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether); // challenger, alone below the quorum
        _registerValidator(validator2, 4 ether); // cannot read the trace
        _registerValidator(validator3, 4 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        uint64 before = tm.challenges(id).voteDeadline;
        vm.warp(block.timestamp + 10);
        uint256 claim = _claimAvailability(validator2, b, 0);
        uint64 extended = tm.challenges(id).voteDeadline;
        uint256 window = tm.VOTE_WINDOW();
        assertEq(extended, uint64(block.timestamp + 2 * window), "a vote window after the answer is due");
        assertTrue(extended > before);
        vm.warp(before); // the original vote would be over: still open
        vm.expectRevert(abi.encodeWithSelector(TaskManager.VoteWindowOpen.selector, extended));
        tm.resolve(id);
        vm.warp(extended);
        tm.resolveAvailability(claim); // never answered: the node is slashed for it
        uint256 burnedBefore = tm.totalBurned();
        assertFalse(tm.resolve(id));
        assertEq(tm.claimable(validator1), CHALLENGE_BOND, "the challenger's bond comes back");
        assertEq(tm.totalBurned(), burnedBefore, "nothing burned for the withholding");

        // control: entry 1, no availability claim, no votes: no verdict, the bond burns
        uint256 id2 = _challenge(validator1, b, 1, rs[1], Merkle.proofAt(ls, 1));
        vm.warp(block.timestamp + window);
        uint256 burned2 = tm.totalBurned();
        assertFalse(tm.resolve(id2));
        assertEq(tm.totalBurned() - burned2, CHALLENGE_BOND);
        assertEq(tm.claimable(validator1), CHALLENGE_BOND, "only the first bond was refunded");
    }

    /// @notice Defence: answered late, the posted trace reaches the voters while the vote is open,
    ///         and the real fraud is slashed (the node's last-second answer no longer outlasts the
    ///         vote). A fraud challenge opened while the entry's data is claimed waits the same way.
    function test_defence_AnsweredLateTheVotersStillJudgeIt() public {
        _deployDevnet();
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether);
        _registerValidator(validator2, 4 ether);
        _registerValidator(validator3, 4 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 window = tm.VOTE_WINDOW();
        // entry 1: a fraud challenge opened while the entry's data is claimed waits for the answer
        _claimAvailability(validator2, b, 1);
        uint256 early = _challenge(validator1, b, 1, rs[1], Merkle.proofAt(ls, 1));
        assertEq(tm.challenges(early).voteDeadline, uint64(block.timestamp + 2 * window));
        // entry 0: challenged, then claimed; the node answers at the last second of its window
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        uint256 claim = _claimAvailability(validator2, b, 0);
        vm.warp(block.timestamp + window - 1);
        vm.prank(node);
        tm.answerAvailability(claim, _ref(b), rs[0], Merkle.proofAt(ls, 0), _trace(0));
        assertTrue(tm.challenges(id).voteDeadline > block.timestamp, "the vote is still open");
        _vote(validator2, id, true); // read from the posted trace
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "slashed for the real fault");
    }
}
