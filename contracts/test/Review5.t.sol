// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TaskManager} from "../src/TaskManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Review 5: the vote game seen from lazy and colluding validators.
contract Review5Test is Base {
    /// @notice Defence (free-riding), was a known limit: votes were public the moment they were
    ///         cast and a lazy validator copied the leading side at the last second, paid like the
    ///         validator that re-executed. Votes are now sealed (`commitVote`) until the last
    ///         REVEAL_WINDOW seconds and only opened then: at the end of the sealing phase the tally
    ///         shows nothing but the challenger's side, and no vote can be sealed once they open.
    function test_defence_ASealedVoteCannotBeCopied() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether); // challenger
        _registerValidator(validator2, 2 ether); // re-executes, then seals "not fraud"
        _registerValidator(validator3, 2 ether); // lazy: would copy the leading side
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _commitVote(validator2, id, false);
        vm.warp(_revealsAt(id) - 1); // the last second a vote can be sealed
        TaskManager.Challenge memory c = tm.challenges(id);
        assertEq(c.honestStake, 0, "a sealed vote shows no side");
        assertEq(c.fraudStake, 2 ether, "only the challenger's own vote is visible");
        vm.warp(_revealsAt(id)); // votes open: too late to seal one
        _revealVote(validator2, id, false);
        bytes32 copy = keccak256(abi.encode(id, validator3, false, bytes32(0)));
        vm.deal(validator3, CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongVotePhase.selector, _revealsAt(id)));
        tm.commitVote{value: CHALLENGE_BOND}(id, copy);
    }

    /// @notice Defence: what a lazy voter can still copy is the challenger's side, sealed blind.
    ///         When the challenge was wrong and the checkers clear the node, that vote loses its
    ///         bond to them: copying the challenger pays only as long as challenges are never
    ///         wrong, which is exactly when voting adds nothing.
    function test_defence_ABlindCopyOfTheChallengerLosesItsBondToTheCheckers() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // a wrong challenger
        _registerValidator(validator2, 3 ether); // re-executes: "not fraud"
        _registerValidator(validator3, 1 ether); // lazy: seals the challenger's side
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, false);
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertFalse(tm.resolve(id), "cleared");
        uint256 pool = CHALLENGE_BOND * VOTER_REWARD_BPS / 10_000 + CHALLENGE_BOND;
        assertEq(tm.challenges(id).rewardPool, pool, "the bond share plus the copier's vote bond");
        vm.prank(validator3);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND + pool, "its bond and the whole pool");
    }

    /// @notice Defence (no cost to a wrong vote), was a known limit: a validator that voted "not
    ///         fraud" on a real fraud lost nothing, so voting against the evidence was a free
    ///         option for the node's friend. A vote now carries VOTE_BOND (= CHALLENGE_BOND): on
    ///         the losing side of a verdict it goes to the winners' pool; never opened, it burns.
    function test_defence_AWrongOrUnopenedVoteLosesItsBond() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 2 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 2 ether); // the node's friend
        _registerValidator(stranger, 1 ether); // seals, then never opens its vote
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, true);
        _vote(validator3, id, false);
        _commitVote(stranger, id, false);
        vm.warp(block.timestamp + VOTE_WINDOW);
        uint256 burned = tm.totalBurned();
        assertTrue(tm.resolve(id), "fraud carried");
        uint256 slashPool = SLASH_AMOUNT * VOTER_REWARD_BPS / 10_000;
        assertEq(tm.challenges(id).rewardPool, slashPool + CHALLENGE_BOND, "the wrong vote's bond");
        uint256 challengerReward = tm.claimable(validator1) - CHALLENGE_BOND;
        uint256 slashBurn = SLASH_AMOUNT - slashPool - challengerReward - tm.challenges(id).refundDue;
        assertEq(tm.totalBurned() - burned, slashBurn + CHALLENGE_BOND, "the unopened vote's bond burns");
        for (uint256 i; i < 2; ++i) {
            address loser = i == 0 ? validator3 : stranger;
            vm.prank(loser);
            vm.expectRevert(TaskManager.NotWinningVoter.selector);
            tm.claimVoteReward(id);
        }
        vm.prank(validator2);
        uint256 paid = tm.claimVoteReward(id);
        assertEq(paid, CHALLENGE_BOND + (slashPool + CHALLENGE_BOND) / 2, "bond back, half the pool");
    }

    /// @notice Defence: without a verdict nobody's revealed vote is lost (honest voters who were
    ///         too few must not pay for it), but a vote sealed and never opened still burns.
    function test_defence_NoVerdictReturnsOpenedVoteBondsAndBurnsUnopenedOnes() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // challenger
        _registerValidator(validator2, 1 ether); // "not fraud": 1 of 10 ether is no quorum
        _registerValidator(validator3, 1 ether); // seals, never opens
        _registerValidator(stranger, 7 ether); // absent
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, false);
        _commitVote(validator3, id, true);
        uint256 burned = tm.totalBurned();
        vm.warp(block.timestamp + VOTE_WINDOW);
        assertFalse(tm.resolve(id));
        assertEq(tm.totalBurned() - burned, 2 * CHALLENGE_BOND, "the challenge bond and the unopened vote");
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);
    }

    /// @notice Known limit (colluding majority): validators holding more stake than the honest
    ///         voters, and at least QUORUM_BPS of it, vote "not fraud" on a real fraud. The node
    ///         is cleared and paid the honest challenger's bond (less the cartel's voter pool):
    ///         the cartel and the node split the challenger's bond, the node is never slashed, and
    ///         nothing on chain records that the cartel voted against the evidence. Sealed votes
    ///         and vote bonds do not change this: it is the protocol's trust assumption (more
    ///         honest stake votes than colluding stake; docs/validator.md, "Known limits"). What
    ///         does limit it: the leaf stays open to re-challenge by the honest validators unless
    ///         more than half of all stake cleared it (validator `ChallengeView.settled`).
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
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND + pool / 2, "the cartel takes the pool");
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
        vm.deal(validator2, validator2.balance + CHALLENGE_BOND);
        vm.prank(validator2);
        vm.expectRevert(TaskManager.AlreadyVoted.selector);
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, true)));
        vm.deal(validator1, validator1.balance + CHALLENGE_BOND);
        vm.prank(validator1);
        vm.expectRevert(TaskManager.AlreadyVoted.selector);
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, true)));
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
        vm.prank(node, node);
        tm.answerAvailability(claim, _ref(b), rs[0], Merkle.proofAt(ls, 0), _trace(0));
        assertTrue(tm.challenges(id).voteDeadline > block.timestamp, "the vote is still open");
        _vote(validator2, id, true); // read from the posted trace
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "slashed for the real fault");
    }
}
