// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Review 6: the sealed (commit-reveal) vote with its vote bond, attacked by copiers,
///         hedgers, vote extenders, exiting voters and the accounting of bonds and pools.
contract Review6Test is Base {
    uint256 internal constant PCT = 10_000;

    /*//////////////////////////////////////////////////////////////
                               COPYING
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (copier re-uses another validator's commitment hash): a lazy validator
    ///         seals the very hash a checker sealed, hoping to open it once the checker's reveal
    ///         shows (side, salt). The hash binds the voter's address, so the copy can never be
    ///         opened by anyone but the checker: the copier's vote stays unopened and its bond
    ///         burns. The copier pays.
    function test_defence_ACopiedCommitmentHashCannotBeOpenedByTheCopier() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // challenger
        _registerValidator(validator2, 3 ether); // checker
        _registerValidator(validator3, 1 ether); // copier
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _commitVote(validator2, id, true);
        bytes32 salt2 = _voteSalt(validator2, id);
        bytes32 copied = keccak256(abi.encode(id, validator2, true, salt2));
        vm.deal(validator3, CHALLENGE_BOND);
        vm.prank(validator3);
        tm.commitVote{value: CHALLENGE_BOND}(id, copied); // accepted: a hash is a hash
        vm.warp(_revealsAt(id));
        _revealVote(validator2, id, true); // (true, salt2) now public
        for (uint256 i; i < 2; ++i) {
            vm.prank(validator3);
            vm.expectRevert(TaskManager.NotTheCommittedVote.selector);
            tm.revealVote(id, i == 0, salt2);
        }
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
        uint256 pool = SLASH_AMOUNT * VOTER_REWARD_BPS / PCT;
        assertEq(tm.challenges(id).rewardPool, pool, "the copier's unopened bond burns, not in the pool");
        vm.prank(validator3);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND + pool * 3 / 4, "checker: bond + 3/4 of the pool");
    }

    /// @notice Defence (front-running a reveal): a watcher sees a checker's `revealVote(id, side,
    ///         salt)` in the mempool. It cannot replay it as its own (no commitment of its own
    ///         matches: the hash binds msg.sender), cannot seal a copy any more (the sealing phase
    ///         is over), and the front-run does not block the checker's reveal nor let it reveal twice.
    function test_defence_AFrontRunRevealCanBeNeitherReplayedNorSealed() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 3 ether);
        _registerValidator(stranger, 3 ether); // the watcher
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _commitVote(validator2, id, true);
        vm.warp(_revealsAt(id));
        bytes32 salt2 = _voteSalt(validator2, id);
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotTheCommittedVote.selector);
        tm.revealVote(id, true, salt2);
        vm.deal(stranger, CHALLENGE_BOND);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongVotePhase.selector, uint64(_revealsAt(id))));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, stranger, true, salt2)));
        vm.prank(validator2);
        tm.revealVote(id, true, salt2);
        assertEq(tm.challenges(id).fraudStake, 4 ether, "the checker's reveal counted once");
        vm.prank(validator2);
        vm.expectRevert(TaskManager.NotTheCommittedVote.selector);
        tm.revealVote(id, true, salt2);
        assertEq(tm.challenges(id).fraudStake, 4 ether);
    }

    /*//////////////////////////////////////////////////////////////
                                HEDGING
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (split-stake hedge, last revealer), was a known limit: a validator that
    ///         never checks splits 6 ether over two identities (validator3, stranger: 3 each),
    ///         seals "fraud" with one and "not fraud" with the other, waits for the checkers'
    ///         reveals and at the last second opens only the side that is winning. The unopened
    ///         identity's bond went into the pool the hedger then shared: +0.05 ether without
    ///         checking (defaults, a real fraud; challenger 1, checker 2, hedger 3+3 ether).
    ///         Unopened bonds now burn: the hedge gets 0.1 + 0.2*3/6 back for 0.2 posted, nothing
    ///         gained; the same 6 ether checking honestly earn +0.133 ether. In general a hedge
    ///         pays when P * s / W > b (P: voter pool, b: vote bond, s/W: its share of the winning
    ///         stake): more than half of the winning stake on a 1-ether fraud slash, more than 5
    ///         times it on a "cleared" verdict (P = 0.02), i.e. only to a voter that is itself the
    ///         majority of the side it picks (the cartel case, Review5's known limit).
    function test_defence_SplitStakeHedgeOpensOnlyTheWinningSide() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // challenger
        _registerValidator(validator2, 2 ether); // checker
        _registerValidator(validator3, 3 ether); // hedger, identity A
        _registerValidator(stranger, 3 ether); // hedger, identity B
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        uint256 snap = vm.snapshotState();

        // hedge: both sides sealed, only the winning one opened at the last second
        _vote(validator2, id, true); // the checker opens at the start of the reveal phase
        _commitVote(validator3, id, true);
        _commitVote(stranger, id, false);
        vm.warp(tm.challenges(id).voteDeadline - 1);
        TaskManager.Challenge memory c = tm.challenges(id);
        assertTrue(c.fraudStake > c.honestStake, "the hedger reads the tally: fraud leads");
        _revealVote(validator3, id, true);
        vm.warp(block.timestamp + 1);
        assertTrue(tm.resolve(id));
        vm.prank(validator3);
        uint256 back = tm.claimVoteReward(id);
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);
        assertEq(back, 0.2 ether, "0.1 bond + 0.2 * 3/6: the unopened bond burned, not pooled");
        assertEq(back, 2 * CHALLENGE_BOND, "the hedge breaks even at half the winning stake");

        // control: the same 6 ether check and both vote "fraud"
        vm.revertToState(snap);
        _vote(validator2, id, true);
        _vote(validator3, id, true);
        _vote(stranger, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
        vm.prank(validator3);
        uint256 a = tm.claimVoteReward(id);
        vm.prank(stranger);
        uint256 bb = tm.claimVoteReward(id);
        uint256 checkNet = a + bb - 2 * CHALLENGE_BOND;
        uint256 third = 0.2 ether;
        assertEq(checkNet, 2 * (third * 3 / 9));
        assertTrue(checkNet > 0, "checking pays where hedging does not");
    }

    /*//////////////////////////////////////////////////////////////
                           VOTE EXTENSIONS
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (extension reopens sealing), was a known limit: at the defaults (CHALLENGE_WINDOW =
    ///         VOTE_WINDOW = 1 day) a challenge opened in the first third of its batch's challenge
    ///         window is still open to an availability claim during its reveal phase. A lazy
    ///         validator that sealed nothing waits for the checker's reveal, claims the entry
    ///         unavailable (anyone may), which moves the vote's end to 2 days from now and so
    ///         re-opens sealing, then seals the side it just read. The node answers.
    ///         Cost of the claim: AVAILABILITY_FEE_BPS of the bond (0.01 ether) plus the answer's
    ///         cost at the base fee (~0.002 ether at 10 gwei); gain: its bond back plus half the
    ///         pool (0.1 ether). Net about +0.088 ether without checking. Who pays: the checker
    ///         (its share fell from 0.15 to 0.075 ether) and the challenger (0.05 to 0.025). A vote
    ///         is now extended only while it is sealed, so the claim leaves the schedule as it is.
    function test_defence_AClaimOnceVotesAreOpenDoesNotReopenSealing() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // challenger
        _registerValidator(validator2, 3 ether); // checker
        _registerValidator(validator3, 4 ether); // copier: seals nothing in time
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _commitVote(validator2, id, true);
        vm.warp(_revealsAt(id));
        _revealVote(validator2, id, true); // the checker's side is public now
        // sealing is closed ...
        vm.deal(validator3, CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongVotePhase.selector, uint64(_revealsAt(id))));
        tm.commitVote{value: CHALLENGE_BOND}(id, bytes32(0));
        // ... until the copier claims the entry unavailable
        uint64 deadline = tm.challenges(id).voteDeadline;
        uint256 claim = _claimAvailability(validator3, b, 0);
        assertEq(tm.challenges(id).voteDeadline, deadline, "not extended");
        vm.deal(validator3, CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongVotePhase.selector, uint64(_revealsAt(id))));
        tm.commitVote{value: CHALLENGE_BOND}(id, bytes32(0));
        vm.prank(node, node);
        tm.answerAvailability(claim, _ref(b), rs[0], Merkle.proofAt(ls, 0), _trace(0));
        vm.warp(deadline);
        assertTrue(tm.resolve(id));
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND + 0.2 ether * 3 / 4, "the checker's share, undiluted");
    }

    /// @notice Defence (a finished but unresolved vote reopens), was a known limit: on a deployment whose
    ///         VOTE_WINDOW is shorter than its CHALLENGE_WINDOW (devnet: 30 s vs 600 s), the vote
    ///         is over at its deadline only once someone calls `resolve`. Until then the accused
    ///         node (or anyone) can claim the entry unavailable (0.01 ether net to the node, which
    ///         answers itself), pushing the deadline VOTE_WINDOW past the answer's due time: resolve
    ///         reverts, sealing reopens with the whole tally public, and late sealers join the side
    ///         they read (here a copier dilutes the checker's share; a node's ally with stake >=
    ///         the fraud side could equally seal "not fraud" only now that it knows exactly how
    ///         much is needed). A vote is now extended only while it is sealed: a claim at the
    ///         deadline moves nothing and the verdict is resolved as it stood.
    function test_defence_ANodeCannotReopenAFinishedButUnresolvedVote() public {
        _deployDevnet();
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // challenger
        _registerValidator(validator2, 3 ether); // checker
        _registerValidator(validator3, 4 ether); // late copier
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, true);
        uint64 deadline = tm.challenges(id).voteDeadline;
        vm.warp(deadline); // the vote is over: fraud 4 of 8 ether, a verdict anyone can resolve
        _claimAvailability(node, b, 0); // the accused node front-runs resolve
        assertEq(tm.challenges(id).voteDeadline, deadline, "not extended");
        vm.deal(validator3, CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongVotePhase.selector, uint64(_revealsAt(id))));
        tm.commitVote{value: CHALLENGE_BOND}(id, bytes32(0));
        assertTrue(tm.resolve(id), "resolved as it stood");
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND + 0.2 ether * 3 / 4, "the checker's share, undiluted");
    }

    /// @notice Known limit (griefing honest voters through the schedule): the accused node claims
    ///         its own entry unavailable just before the reveal phase (0.01 ether net, it answers
    ///         itself), which moves the reveal phase ~1.7 days later. A checker whose client opens
    ///         its vote on the schedule it sealed with gets WrongVotePhase; if it does not follow
    ///         `VoteExtended` and retry, its vote stays unopened: its bond and the challenger's burn
    ///         and the node escapes the slash (no quorum). Retrying in the new phase works (control).
    function test_knownLimit_AnExtensionStrandsAVoterOnTheOldSchedule() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // challenger
        _registerValidator(validator2, 3 ether); // checker
        _registerValidator(stranger, 6 ether); // absent
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _commitVote(validator2, id, true);
        uint256 oldReveal = _revealsAt(id);
        vm.warp(oldReveal - 1);
        uint256 claim = _claimAvailability(node, b, 0);
        vm.prank(node, node);
        tm.answerAvailability(claim, _ref(b), rs[0], Merkle.proofAt(ls, 0), _trace(0));
        assertEq(tm.claimable(node), CHALLENGE_BOND - CHALLENGE_BOND / 10, "the node's cost: 0.01 ether");
        vm.warp(oldReveal);
        bytes32 salt = _voteSalt(validator2, id);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongVotePhase.selector, uint64(_revealsAt(id))));
        tm.revealVote(id, true, salt);
        uint256 snap = vm.snapshotState();

        // stranded: the checker never retries
        vm.warp(tm.challenges(id).voteDeadline);
        uint256 burned = tm.totalBurned();
        assertFalse(tm.resolve(id), "no verdict: the real fraud is not slashed");
        assertEq(tm.totalBurned() - burned, 2 * CHALLENGE_BOND, "challenger's and checker's bonds burn");

        // control: retried in the moved phase, the vote counts
        vm.revertToState(snap);
        _revealVote(validator2, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
    }

    /*//////////////////////////////////////////////////////////////
                          STAKE LEAVING A VOTE
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (stake leaves between commit and reveal): even with an unbonding period
    ///         of 1 s, a voter that seals and then deregisters cannot withdraw before the vote ends
    ///         (the commit locked its stake to the deadline); and its vote, opened after it left,
    ///         weighs only the stake still staked (none): a leaving voter risks nothing, so it
    ///         decides nothing.
    function test_defence_SealedStakeIsHeldUntilTheVoteEnds() public {
        _deployDevnet(1);
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator3, 4 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _commitVote(validator3, id, true);
        vm.prank(validator3);
        sm.deregister();
        uint64 deadline = tm.challenges(id).voteDeadline;
        vm.warp(_revealsAt(id));
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.StakeIsLocked.selector, deadline));
        sm.withdrawUnbonded();
        _revealVote(validator3, id, true);
        assertEq(tm.challenges(id).fraudStake, 1 ether, "only the challenger's stake");
        vm.warp(deadline);
        vm.prank(validator3);
        sm.withdrawUnbonded(); // released once the vote is over
        assertEq(sm.getOperator(validator3).unbonding, 0);
    }

    /// @notice Defence (an extension outlives the commit's stake lock), was a known limit: the
    ///         commit locks the voter's stake to the deadline of that moment; an availability claim
    ///         then moves the deadline, and the sealed voter's lock is not moved (a loop over the
    ///         voters would be unbounded). With an UNBONDING_PERIOD shorter than the extended vote
    ///         (devnet: 60 s), the voter deregistered after sealing, withdrew all its stake and then
    ///         opened its vote with the full sealed weight. A reveal now weighs
    ///         min(sealed weight, stake still staked): the stake that left decides nothing.
    function test_defence_AnExtendedVoteDoesNotCountStakeAlreadyWithdrawn() public {
        _deployDevnet(); // unbonding 60 s, vote 30 s
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether); // absent
        _registerValidator(validator3, 4 ether); // seals, exits, opens
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        uint256 t0 = block.timestamp;
        _commitVote(validator3, id, true); // locked until t0 + 30
        vm.prank(validator3);
        sm.deregister(); // ready at t0 + 60
        vm.warp(t0 + 1);
        uint256 claim = _claimAvailability(stranger, b, 0); // deadline moves to t0 + 61
        vm.prank(node, node);
        tm.answerAvailability(claim, _ref(b), rs[0], Merkle.proofAt(ls, 0), _trace(0));
        assertEq(tm.challenges(id).voteDeadline, t0 + 61);
        vm.warp(t0 + 60);
        uint256 before = validator3.balance;
        vm.prank(validator3);
        sm.withdrawUnbonded();
        assertEq(validator3.balance - before, 4 ether, "the whole stake is gone");
        assertEq(sm.getOperator(validator3).stake + sm.getOperator(validator3).unbonding, 0);
        _revealVote(validator3, id, true); // still inside [t0 + 51, t0 + 61)
        assertEq(tm.challenges(id).fraudStake, 1 ether, "withdrawn stake does not count");
        vm.warp(t0 + 61);
        assertFalse(tm.resolve(id), "1 of 7 ether: no quorum");
    }

    /*//////////////////////////////////////////////////////////////
                              ACCOUNTING
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (decoy during the sealing phase): the node reveals a decoy while votes are
    ///         still sealed. Every sealed voter gets exactly its bond back (once), the challenger
    ///         its bond (no bounty: not sampled) and no vote reward; nobody can seal or open a vote
    ///         or resolve afterwards, and the contract ends where it started.
    function test_defence_ADecoyDuringSealingReturnsEveryBondOnce() public {
        address decoyUser = makeAddr("decoy");
        uint256 decoyKey = privateKeyOf("decoy");
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 2 ether);
        _registerValidator(stranger, 2 ether);
        bytes32[] memory ls = new bytes32[](2);
        Receipt memory r0 = _boundReceipt(0, decoyUser, node, 0.001 ether);
        ls[0] = _leaf(r0);
        ls[1] = _leaf(_boundReceipt(1, user, node, 0.001 ether));
        uint256 b = _commitRoot(node, Merkle.root(ls), 2);
        uint256 start = address(tm).balance;
        uint256 id = _challenge(validator1, b, 0, r0, Merkle.proofAt(ls, 0));
        _commitVote(validator2, id, true);
        _commitVote(validator3, id, false);
        bytes memory sig = signDigest(decoyKey, payments.hashDecoy(node, r0.requestHash));
        vm.prank(node, node);
        tm.revealDecoy(id, r0, _request(0, decoyUser, node), sig);

        vm.deal(stranger, CHALLENGE_BOND);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.commitVote{value: CHALLENGE_BOND}(id, bytes32(uint256(1)));
        vm.warp(_revealsAt(id));
        bytes32 salt = _voteSalt(validator2, id);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.revealVote(id, true, salt);
        vm.warp(tm.challenges(id).voteDeadline);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.resolve(id);

        address[2] memory voters = [validator2, validator3];
        for (uint256 i; i < 2; ++i) {
            vm.prank(voters[i]);
            assertEq(tm.claimVoteReward(id), CHALLENGE_BOND);
            vm.prank(voters[i]);
            vm.expectRevert(TaskManager.RewardAlreadyClaimed.selector);
            tm.claimVoteReward(id);
        }
        vm.prank(validator1);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);
        assertEq(tm.claimable(validator1), CHALLENGE_BOND);
        _withdraw(validator1);
        _withdraw(validator2);
        _withdraw(validator3);
        assertEq(address(tm).balance, start, "every bond out, nothing more");
    }

    /// @notice Defence (resolve with zero reveals): a challenger holding the quorum alone wins
    ///         while every sealed vote stays unopened; the unopened bonds burn, the pool goes to
    ///         the challenger (the whole fraud side) exactly once; the contract keeps nothing but
    ///         the user's held refund.
    function test_defence_ZeroRevealsPayTheChallengerTheForfeitedBondsExactly() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 3 ether); // 3 of 7 ether: the quorum alone
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 2 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 start = address(tm).balance;
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _commitVote(validator2, id, true);
        _commitVote(validator3, id, false);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
        uint256 pool = SLASH_AMOUNT * VOTER_REWARD_BPS / PCT;
        assertEq(tm.challenges(id).rewardPool, pool, "unopened bonds are not in the pool");
        for (uint256 i; i < 2; ++i) {
            vm.prank(i == 0 ? validator2 : validator3);
            vm.expectRevert(TaskManager.NotWinningVoter.selector);
            tm.claimVoteReward(id);
        }
        vm.prank(validator1);
        assertEq(tm.claimVoteReward(id), pool, "the whole pool, no vote bond (it posted none)");
        vm.prank(validator1);
        vm.expectRevert(TaskManager.RewardAlreadyClaimed.selector);
        tm.claimVoteReward(id);
        _withdraw(validator1);
        assertEq(address(tm).balance, start + tm.challenges(id).refundDue, "only the refund is held");
    }

    /// @notice Defence (accounting across verdicts, re-challenge of a cleared leaf, a voter that
    ///         exits between commit and reveal): a cleared challenge, a fraud re-challenge of the
    ///         same leaf and a no-verdict challenge, with votes opened on both sides and votes
    ///         never opened. Every vote that can claim does so once, everyone withdraws: the
    ///         contract holds exactly the unclaimed refund plus the rounding dust of the pools (a
    ///         few wei), never less; no claim pays twice and no bond is stuck.
    function test_defence_ClaimsNeverExceedWhatTheChallengesTookIn() public {
        _deployDevnet();
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 3 ether);
        _registerValidator(validator3, 3 ether);
        _registerValidator(stranger, 1 ether);
        _registerValidator(user2, 1 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 start = address(tm).balance;

        // A: a wrong challenge, cleared; stranger's "fraud" loses
        uint256 a = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, a, false);
        _vote(validator3, a, false);
        _vote(stranger, a, true);
        vm.warp(tm.challenges(a).voteDeadline);
        assertFalse(tm.resolve(a));
        assertEq(tm.challenges(a).rewardPool, CHALLENGE_BOND * VOTER_REWARD_BPS / PCT + CHALLENGE_BOND);

        // B: the cleared leaf re-challenged, fraud; stranger seals and exits, never opens
        uint256 bId = _challenge(validator2, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator3, bId, true);
        _vote(validator1, bId, false);
        _commitVote(stranger, bId, true);
        vm.prank(stranger);
        sm.deregister();
        vm.warp(tm.challenges(bId).voteDeadline);
        assertTrue(tm.resolve(bId));
        assertEq(tm.challenges(bId).rewardPool, SLASH_AMOUNT * VOTER_REWARD_BPS / PCT + CHALLENGE_BOND);

        // C: no verdict (1 vs 1 ether of 8); user2 opens "not fraud", validator2 never opens
        uint256 cId = _challenge(validator1, b, 1, rs[1], Merkle.proofAt(ls, 1));
        _commitVote(validator2, cId, true);
        _vote(user2, cId, false);
        vm.warp(tm.challenges(cId).voteDeadline);
        uint256 burned = tm.totalBurned();
        assertFalse(tm.resolve(cId));
        assertEq(tm.totalBurned() - burned, 2 * CHALLENGE_BOND, "the challenge bond and the unopened vote");

        address[6] memory who = [validator1, validator2, validator3, stranger, user2, node];
        uint256[3] memory ids = [a, bId, cId];
        for (uint256 k; k < 3; ++k) {
            for (uint256 i; i < 5; ++i) {
                vm.prank(who[i]);
                try tm.claimVoteReward(ids[k]) returns (uint256) {
                    vm.prank(who[i]);
                    vm.expectRevert(TaskManager.RewardAlreadyClaimed.selector);
                    tm.claimVoteReward(ids[k]);
                } catch {}
            }
        }
        uint256 dust;
        for (uint256 k; k < 3; ++k) {
            TaskManager.Challenge memory c = tm.challenges(ids[k]);
            assertTrue(c.rewardClaimed <= c.rewardPool, "no pool pays out more than it holds");
            dust += c.rewardPool - c.rewardClaimed;
        }
        assertEq(tm.claimable(user2), CHALLENGE_BOND, "an opened vote without a verdict gets its bond back");
        for (uint256 i; i < 6; ++i) {
            if (tm.claimable(who[i]) != 0) _withdraw(who[i]);
        }
        assertEq(address(tm).balance, start + tm.challenges(bId).refundDue + dust, "solvent, nothing extra");
        assertTrue(dust <= 10, "dust only");
    }

    /// @notice Known limit (rounding dust, negligible): the pool is split `pool * weight /
    ///         winningStake` rounded down, and the remainder has no owner and no sweep: here 2 wei
    ///         of a 0.2 ether pool split three ways stay in the contract forever.
    function test_knownLimit_RoundingDustStaysInTheContract() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 1 ether);
        _registerValidator(validator3, 1 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 start = address(tm).balance;
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        _vote(validator2, id, true);
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
        address[3] memory v = [validator1, validator2, validator3];
        for (uint256 i; i < 3; ++i) {
            vm.prank(v[i]);
            tm.claimVoteReward(id);
            _withdraw(v[i]);
        }
        assertEq(address(tm).balance - start - tm.challenges(id).refundDue, 2, "2 wei nobody can claim");
    }

    function _withdraw(address who) internal {
        vm.prank(who);
        tm.withdraw();
    }
}
