// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {OmissionManager} from "../src/OmissionManager.sol";
import {Payments} from "../src/Payments.sol";
import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, ReceiptPromise, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {Base, Caller} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice A validator contract that, on the first ether it receives, tries to re-enter every
///         payout it could touch (both pull contracts, both claims) and counts what got through.
contract Review7Greedy is Caller {
    TaskManager internal immutable TM;
    ServiceManager internal immutable SM;
    uint256 public challengeId;
    uint256 public attempts;
    uint256 public tmWithdrawn;
    uint256 public rewardsReclaimed;
    uint256 public stakeRewithdrawn;

    constructor(TaskManager tm_, ServiceManager sm_) {
        TM = tm_;
        SM = sm_;
    }

    function setChallenge(uint256 id) external {
        challengeId = id;
    }

    receive() external payable {
        if (attempts != 0) return;
        attempts = 1;
        try TM.withdraw() {
            ++tmWithdrawn; // another contract's pull payment: legitimate, but only once
        } catch {}
        try TM.claimVoteReward(challengeId) {
            ++rewardsReclaimed;
        } catch {}
        try SM.withdrawUnbonded() {
            ++stakeRewithdrawn;
        } catch {}
    }
}

/// @notice Review 7: money flows across contract boundaries (ServiceManager stake, TaskManager
///         bonds and rewards, OmissionManager claims, Payments channels and escrow), attacked by
///         nodes, users, validators and their coalitions: conservation, exits while a claim is
///         pending, double claims, griefing, re-entrancy and window boundaries.
contract Review7Test is Base {
    uint256 internal constant PCT = 10_000;

    /*//////////////////////////////////////////////////////////////
          1. A PROMISE'S BOUND FOLLOWS THE DEADLINE, NOT THE STAKE
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a KNOWN LIMIT: stake escaped before an omission claim could open).
    ///         MAX_PROMISE_DELAY bounds a promise's due time by the *request's deadline* plus
    ///         UNBONDING_PERIOD / 2, which keeps the stake around only if the deadline is near when
    ///         the promise is given. A user who signed a generous deadline (here 4 days, a queued
    ///         task) let the node fake the task, redeem the voucher, deregister at once and
    ///         withdraw its whole stake on day 7; the claim opened on day 7.5 and slashed nothing.
    ///         Now a promise also falls due CHALLENGE_WINDOW before the node's stake may drop below
    ///         SLASH_AMOUNT (`ServiceManager.stakeLeavesAt`; a node that left can no longer commit,
    ///         so nothing it had not committed can still be kept): the claim opens then, freezes
    ///         the stake, and the node is slashed.
    function test_defence_AFarDeadlinePromiseFallsDueBeforeTheStakeOfALeavingNodeIsFree() public {
        _registerNode(node, 2 ether);
        uint256 g = block.timestamp;
        uint256 mpd = om.MAX_PROMISE_DELAY();
        uint256 deadline = g + 4 days; // more than UNBONDING_PERIOD / 2 - CHALLENGE_WINDOW ahead
        (TaskRequest memory q, Receipt memory faked, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(11, 0.01 ether, deadline, deadline + mpd);
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), 0, "an active node's stake is not leaving");
        vm.prank(node, node);
        sm.deregister(); // leaves right after serving: no batch, so no lock
        uint256 readyAt = g + UNBONDING_PERIOD;
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), readyAt);
        uint256 due = readyAt - CHALLENGE_WINDOW;
        vm.assertLt(due, deadline + mpd, "earlier than the deadline's bound");

        vm.warp(due - 1);
        uint256 bond = om.omissionBond();
        vm.deal(user, bond);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, due));
        om.challengeOmission{value: bond}(p, sig, q, faked);
        vm.warp(due);
        uint256 id = _claimOmission(user, p, sig, q, faked);
        assertEq(om.omissionChallenges(id).commitBy, deadline + mpd, "the answer's bound is the promise's own");

        vm.warp(readyAt);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, 1));
        sm.withdrawUnbonded();
        vm.warp(om.omissionChallenges(id).deadline);
        om.resolveOmission(id);
        assertEq(om.totalBurned(), SLASH_AMOUNT - SLASH_AMOUNT * CHALLENGER_REWARD_BPS / PCT, "slashed");
        assertEq(sm.getOperator(node).unbonding, 2 ether - SLASH_AMOUNT);
    }

    /// @notice Defence (the acceleration frames no honest node): a node that committed the receipt
    ///         before it left answers the earlier claim with that batch and keeps its stake; the
    ///         bound follows the node's stake lock too (a batch's lock can outlast the unbonding),
    ///         and a node that keeps SLASH_AMOUNT active is not hurried at all.
    function test_defence_ALeavingNodeThatCommittedAnswersTheEarlierClaim() public {
        _registerNode(node, 2 ether);
        uint256 g = block.timestamp;
        uint256 deadline = g + 4 days;
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(13, 0.01 ether, deadline, deadline + om.MAX_PROMISE_DELAY());
        uint256 b = _commitRoot(node, _leaf(r), 1);
        vm.prank(node, node);
        sm.requestUnbond(2 ether - SLASH_AMOUNT); // keeps one slash active: not leaving
        assertEq(sm.stakeLeavesAt(node, SLASH_AMOUNT), 0);
        vm.prank(node, node);
        sm.deregister();
        uint64 locked = sm.getOperator(node).lockedUntil;
        uint256 leaves = sm.stakeLeavesAt(node, SLASH_AMOUNT);
        assertEq(leaves, g + UNBONDING_PERIOD > locked ? g + UNBONDING_PERIOD : locked);

        vm.warp(leaves - CHALLENGE_WINDOW);
        uint256 id = _claimOmission(user, p, sig, q, r);
        TaskManager.BatchRef memory ref = _ref(b);
        vm.prank(node, node);
        om.answerOmission(id, ref, 0, r, new bytes32[](0));
        vm.warp(leaves);
        uint256 before = node.balance;
        vm.prank(node, node);
        sm.withdrawUnbonded();
        assertEq(node.balance - before, 2 ether, "the whole stake leaves");
    }

    /// @notice Defence (the tightest deadline the bound covers): with `deadline = g +
    ///         UNBONDING_PERIOD / 2 - CHALLENGE_WINDOW` the claim window of a node that deregistered
    ///         at `g` ends exactly one second before its unbonding is ready. At that last second the
    ///         node cannot withdraw yet (UnbondingNotReady), the user's claim freezes it, and from
    ///         `readyAt` on the freeze holds the stake until the claim is resolved and slashed.
    function test_defence_ANearDeadlinePromiseIsClaimableUntilTheSecondBeforeTheStakeIsFree() public {
        _registerNode(node, 2 ether);
        uint256 g = block.timestamp;
        uint256 mpd = om.MAX_PROMISE_DELAY();
        uint256 deadline = g + mpd - CHALLENGE_WINDOW;
        (TaskRequest memory q, Receipt memory faked, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(12, 0.01 ether, deadline, type(uint256).max);
        vm.prank(node, node);
        sm.deregister();
        uint64 readyAt = sm.getOperator(node).unbondingReadyAt;
        assertEq(readyAt, g + UNBONDING_PERIOD);

        uint256 lastClaimSecond = deadline + mpd + CHALLENGE_WINDOW - 1;
        assertEq(lastClaimSecond, uint256(readyAt) - 1, "the window ends one second before the exit");
        vm.warp(lastClaimSecond);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.UnbondingNotReady.selector, readyAt));
        sm.withdrawUnbonded();
        uint256 id = _claimOmission(user, p, sig, q, faked);

        vm.warp(readyAt);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, uint32(1)));
        sm.withdrawUnbonded();
        vm.warp(om.omissionChallenges(id).deadline);
        om.resolveOmission(id);
        assertEq(sm.getOperator(node).unbonding, 2 ether - SLASH_AMOUNT, "the slash found the stake");
        assertEq(om.claimable(user), CHALLENGE_BOND + SLASH_AMOUNT * CHALLENGER_REWARD_BPS / PCT);
        vm.prank(node, node);
        sm.withdrawUnbonded();
        assertEq(sm.getOperator(node).unbonding, 0);
    }

    /*//////////////////////////////////////////////////////////////
          2. COMPETING SLASHES: A MANIFEST CLAIM NEEDS NO TASK AT ALL
    //////////////////////////////////////////////////////////////*/

    /// @notice KNOWN LIMIT (a new, cheaper route to the documented "competing slashes" limit). A
    ///         node whose stake covers one SLASH_AMOUNT (at the Base minimum of 1 ether here; at the
    ///         documented 2-ether default, a node already slashed once) faces a sampled, correct
    ///         fraud challenge. Its ally claims the *manifest* of the very batch under challenge
    ///         (OmissionManager.challengeManifest, src/OmissionManager.sol:329-360: anyone may, in
    ///         the first half of the batch's window, with no request, promise, payment or user role
    ///         needed, unlike the omission route of test_KnownLimit_SelfOmissionDivertsFraudSlash),
    ///         the node does not answer, and the ally resolves it in the second the vote ends,
    ///         before the verdict (src/OmissionManager.sol:399-411). The manifest slash takes the
    ///         whole stake; the fraud verdict then slashes 0.
    ///         Who profits how much: the coalition recovers 20 % of the stake (0.2 ether) that
    ///         would have gone to the honest challenger (its 0.2 ether reward), the honest voters
    ///         (the 0.2 ether pool) and the user (its refund); the honest side gets bonds only.
    ///         Fix: settle competing slashes of one node in the order their disputes opened: let
    ///         `ServiceManager.slash` reserve SLASH_AMOUNT per open dispute at `freeze` time
    ///         (a per-dispute reservation released by `unfreeze`), so a later claim cannot take
    ///         stake an earlier dispute is owed; or pay rewards only from stake not reserved.
    function test_knownLimit_AnAllysManifestClaimDivertsTheLastStakeFromAFraudVerdict() public {
        _deployDevnet(); // every receipt sampled: the honest challenger earns the reward
        (uint256 cid, uint256 b,) = _openChallengeStaked(1 ether, true);
        assertTrue((tm.challenges(cid).sampled != TaskManager.Pick.None));
        _vote(validator2, cid, true);
        _vote(validator3, cid, true);
        address ally = makeAddr("ally");
        vm.deal(ally, CHALLENGE_BOND);
        vm.prank(ally);
        uint256 mid = om.challengeManifest{value: CHALLENGE_BOND}(_ref(b));
        uint64 voteEnd = tm.challenges(cid).voteDeadline;
        vm.assertLe(uint256(om.manifestChallenges(mid).deadline), uint256(voteEnd), "due no later than the verdict");
        vm.warp(voteEnd);

        uint256 snap = vm.snapshotState();
        assertTrue(tm.resolve(cid));
        assertEq(tm.challenges(cid).slashed, SLASH_AMOUNT, "baseline: the verdict takes the stake");
        assertEq(tm.claimable(validator1), CHALLENGE_BOND + SLASH_AMOUNT * CHALLENGER_REWARD_BPS / PCT);
        vm.revertToState(snap);

        vm.prank(ally);
        om.resolveManifest(mid);
        assertTrue(tm.resolve(cid), "still a fraud verdict");
        TaskManager.Challenge memory c = tm.challenges(cid);
        assertEq(c.slashed, 0, "the verdict slashes nothing");
        assertEq(c.rewardPool, 0, "no voter pool");
        assertEq(c.refundDue, 0, "no user refund");
        assertEq(tm.claimable(validator1), CHALLENGE_BOND, "the honest challenger: its bond only");
        assertEq(om.claimable(ally), CHALLENGE_BOND + SLASH_AMOUNT * CHALLENGER_REWARD_BPS / PCT, "ally: 20 %");
        assertEq(sm.getOperator(node).stake, 0);
    }

    /*//////////////////////////////////////////////////////////////
          3. A FALSE CHALLENGER CANNOT RESCUE ITS BOND THROUGH _withheld
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (a griefer's bond refund through its own availability claim). A validator
    ///         falsely challenges an honest node's receipts and nobody votes: without a verdict
    ///         its bond burns, unless the node withheld the entry (`_withheld`). The griefer claims
    ///         the same entries unavailable itself: (a) during sealing, which extends the vote, and
    ///         (b) once votes are open, timed so that the claim is still within its answer window
    ///         when the vote ends. The honest node answers both; in (b) the vote is resolved while
    ///         the claim is open but not yet due, which is not "withheld". Both challenge bonds
    ///         burn, and each claim cost the griefer the 10 % fee and the answer on top.
    function test_defence_AFalseChallengerCannotRescueItsBondWithItsOwnAvailabilityClaim() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // the griefer: alone, below the quorum
        _registerValidator(validator2, 4 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 4);
        uint256 c1 = _challenge(validator1, b, 1, rs[1], Merkle.proofAt(ls, 1));
        uint256 c2 = _challenge(validator1, b, 2, rs[2], Merkle.proofAt(ls, 2));
        uint256 a1 = _claimAvailability(validator1, b, 1); // (a) during sealing: extends c1
        assertEq(tm.challenges(c1).voteDeadline, tm.availabilityChallenges(a1).deadline + VOTE_WINDOW);
        vm.fee(1 gwei);
        vm.prank(node, node);
        tm.answerAvailability(a1, _ref(b), rs[1], Merkle.proofAt(ls, 1), _trace(1));

        vm.warp(_revealsAt(c2));
        uint256 a2 = _claimAvailability(validator1, b, 2); // (b) votes open: no extension
        uint64 c2End = tm.challenges(c2).voteDeadline;
        vm.assertGt(uint256(tm.availabilityChallenges(a2).deadline), uint256(c2End), "still answerable at the end");
        vm.warp(c2End);
        assertFalse(tm.resolve(c2));
        vm.prank(node, node);
        tm.answerAvailability(a2, _ref(b), rs[2], Merkle.proofAt(ls, 2), _trace(2));
        vm.warp(tm.challenges(c1).voteDeadline);
        assertFalse(tm.resolve(c1));

        uint256 fee = CHALLENGE_BOND * tm.AVAILABILITY_FEE_BPS() / PCT;
        uint256 deposits = tm.availabilityChallenges(a1).deposit + tm.availabilityChallenges(a2).deposit;
        uint256 answers = tm.claimable(node); // both answers' prices (ClaimBond.costOfAnswer)
        vm.assertGt(answers, 2 * 21_000 * 1 gwei, "the node is paid for both answers");
        uint256 refunds = deposits - 2 * fee - answers;
        assertEq(tm.claimable(validator1), refunds, "only what the availability answers left: no challenge bond");
        assertEq(tm.totalBurned(), 2 * CHALLENGE_BOND + 2 * fee, "both challenge bonds and both fees burned");
        assertEq(sm.getNode(node).frozenCount, 0);
        assertEq(sm.getOperator(node).stake, 2 ether, "the honest node loses nothing");
    }

    /*//////////////////////////////////////////////////////////////
          4. A LATE AVAILABILITY ANSWER AND THE EXIT, TO THE SECOND
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (exit between a last-second availability answer and the fraud window it
    ///         reopens). On devnet timing (unbonding 60 s, shorter than every window) a node
    ///         deregisters right after its commit; a claim on an entry comes in the last second of
    ///         the batch's window and the node answers in the last second of the claim. The answer
    ///         reopens fraud challenges for CHALLENGE_WINDOW and locks the stake for exactly as
    ///         long: one second before, the stake is locked and a challenge still opens (and
    ///         freezes it); at the lock's end the challenge is refused and the withdrawal allowed.
    function test_defence_ALateAnswerLocksTheStakeExactlyUntilTheLastFraudSecond() public {
        _deployDevnet(60);
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        vm.prank(node, node);
        sm.deregister();
        uint256 cw = tm.CHALLENGE_WINDOW();
        vm.warp(_ref(b).committedAt + cw - 1);
        uint256 aid = _claimAvailability(stranger, b, 0);
        vm.warp(tm.availabilityChallenges(aid).deadline - 1);
        vm.prank(node, node);
        tm.answerAvailability(aid, _ref(b), rs[0], Merkle.proofAt(ls, 0), _trace(0));
        uint256 lockEnd = block.timestamp + cw;
        assertEq(sm.getOperator(node).lockedUntil, lockEnd, "locked exactly as long as the reopened window");

        vm.warp(lockEnd - 1);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.StakeIsLocked.selector, uint64(lockEnd)));
        sm.withdrawUnbonded();
        uint256 snap = vm.snapshotState();
        uint256 cid = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        vm.warp(lockEnd);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, uint32(1)));
        sm.withdrawUnbonded();
        vm.warp(tm.challenges(cid).voteDeadline);
        assertTrue(tm.resolve(cid), "the challenger's vote carries: the stake it froze is slashed");
        assertEq(sm.getOperator(node).unbonding, 2 ether - SLASH_AMOUNT);
        vm.revertToState(snap);

        vm.warp(lockEnd);
        vm.deal(validator1, CHALLENGE_BOND);
        vm.prank(validator1);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.ChallengeWindowClosed.selector, uint256(_ref(b).committedAt) + cw)
        );
        tm.challenge{value: CHALLENGE_BOND}(_ref(b), 0, rs[0], Merkle.proofAt(ls, 0), "");
        uint256 before = node.balance;
        vm.prank(node, node);
        sm.withdrawUnbonded();
        assertEq(node.balance - before, 2 ether, "free exactly when nothing can be opened any more");
    }

    /*//////////////////////////////////////////////////////////////
          5. RE-ENTRANCY THROUGH THE PULL PAYMENTS OF TWO CONTRACTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (cross-contract re-entrancy). A contract validator wins a vote, claims its
    ///         reward, deregisters and, once its unbonding is over, withdraws its stake; the
    ///         ServiceManager's payment enters its `receive`, which re-enters TaskManager.withdraw
    ///         (a different contract: it is owed, so that pays once), claimVoteReward again and
    ///         ServiceManager.withdrawUnbonded again. It ends with exactly its stake and what the
    ///         vote earned; the re-claims fail and both contracts hold nothing more for it.
    function test_defence_ReentrancyAcrossTwoPullContractsPaysEachDebtOnce() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        Review7Greedy g = new Review7Greedy(tm, sm);
        vm.deal(address(g), 2 ether + CHALLENGE_BOND);
        g.call(address(sm), 2 ether, abi.encodeCall(ServiceManager.registerValidator, ()));
        vm.warp(block.timestamp + 1);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        g.setChallenge(id);
        bytes32 salt = keccak256("greedy salt");
        g.call(
            address(tm),
            CHALLENGE_BOND,
            abi.encodeCall(TaskManager.commitVote, (id, keccak256(abi.encode(id, address(g), true, salt))))
        );
        vm.warp(_revealsAt(id));
        g.call(address(tm), 0, abi.encodeCall(TaskManager.revealVote, (id, true, salt)));
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
        g.call(address(tm), 0, abi.encodeCall(TaskManager.claimVoteReward, (id)));
        uint256 owedByTm = tm.claimable(address(g));
        assertEq(owedByTm, CHALLENGE_BOND + tm.challenges(id).rewardPool * 2 / 3, "bond + 2/3 of the pool");
        g.call(address(sm), 0, abi.encodeCall(ServiceManager.deregister, ()));
        vm.warp(block.timestamp + UNBONDING_PERIOD);

        uint256 before = address(g).balance;
        uint256 tmBefore = address(tm).balance;
        uint256 smBefore = address(sm).balance;
        g.call(address(sm), 0, abi.encodeCall(ServiceManager.withdrawUnbonded, ()));
        assertEq(g.attempts(), 1, "it re-entered");
        assertEq(g.tmWithdrawn(), 1, "TaskManager paid its own debt once");
        assertEq(g.rewardsReclaimed(), 0, "no second reward");
        assertEq(g.stakeRewithdrawn(), 0, "no second stake payment");
        assertEq(address(g).balance - before, 2 ether + owedByTm, "exactly the stake and the vote's earnings");
        assertEq(tmBefore - address(tm).balance, owedByTm);
        assertEq(smBefore - address(sm).balance, 2 ether);
        assertEq(tm.claimable(address(g)), 0);
        assertEq(sm.getOperator(address(g)).unbonding, 0);
        vm.expectRevert(ServiceManager.NothingToWithdraw.selector);
        g.call(address(sm), 0, abi.encodeCall(ServiceManager.withdrawUnbonded, ()));
        vm.expectRevert(TaskManager.NothingToWithdraw.selector);
        g.call(address(tm), 0, abi.encodeCall(TaskManager.withdraw, ()));
    }

    /*//////////////////////////////////////////////////////////////
          6. CONSERVATION AND DOUBLE CLAIMS OVER A WHOLE LIFECYCLE
    //////////////////////////////////////////////////////////////*/

    struct Life {
        uint256 b;
        uint256 cid;
        uint256 aid;
        uint256 injected; // wei the test minted into the actors, all of it spent into the contracts
        Receipt r1;
        TaskRequest q1;
        bytes voucher;
        address v4;
        uint256 answerPaid; // the availability answer's price, paid to the node
    }

    /// @dev One batch settled in its commit (0.004 ether of vouchers), a sampled fraud challenge on
    ///      entry 1 with a winning voter (validator2, 3 ether), a losing voter (validator3, 2 ether)
    ///      and a sealed vote never opened (v4), and an answered availability claim on entry 2.
    function _lifecycle() internal returns (Life memory L) {
        L.v4 = makeAddr("v4");
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 3 ether);
        _registerValidator(validator3, 2 ether);
        _registerValidator(L.v4, 1 ether);
        _deposit(user, 1 ether);
        L.injected = 2 ether + 7 ether + 1 ether;
        (Receipt[] memory rs, bytes32[] memory ls) = _receipts(4);
        Voucher memory v = _voucher(user, node, 0.004 ether);
        L.voucher = _pack(v, _signVoucher(userKey, v));
        bytes32 root = Merkle.root(ls);
        vm.prank(node, node);
        L.b = tm.commitBatch(0, root, 4, "bafymanifest", L.voucher);
        _refs[L.b] = _refOf(L.b, node, 0, 4, root);
        _rollSealed(block.number + SEED_DELAY_BLOCKS + 1);

        L.cid = _challenge(validator1, L.b, 1, rs[1], Merkle.proofAt(ls, 1));
        _commitVote(validator2, L.cid, true);
        _commitVote(validator3, L.cid, false);
        _commitVote(L.v4, L.cid, true);
        L.aid = _claimAvailability(stranger, L.b, 2);
        L.injected += 5 * CHALLENGE_BOND;
        vm.fee(1 gwei);
        vm.recordLogs();
        vm.prank(node, node);
        tm.answerAvailability(L.aid, _ref(L.b), rs[2], Merkle.proofAt(ls, 2), _trace(2));
        L.answerPaid = _paidForLastAnswer();
        _revealVote(validator2, L.cid, true);
        _revealVote(validator3, L.cid, false);
        vm.warp(tm.challenges(L.cid).voteDeadline);
        assertTrue(tm.resolve(L.cid), "fraud: 4 of 7 ether against 2");
        L.r1 = rs[1];
        L.q1 = _request(1, user, node);
    }

    function _withdrawTm(address who) internal {
        if (tm.claimable(who) == 0) return;
        vm.prank(who);
        tm.withdraw();
    }

    function _exit(address who) internal {
        vm.prank(who);
        sm.deregister();
    }

    /// @notice Defence (conservation across the four contracts). After a lifecycle with fees
    ///         settled in a commit, a fraud verdict (winning, losing and unopened votes), a refund
    ///         and an answered availability claim, every party pulls everything it can from every
    ///         contract and every operator leaves. Every wei minted is then in exactly one place:
    ///         an actor's balance, the burn address (exactly the two contracts' `totalBurned`), the
    ///         node's verification escrow (only decoy bounties spend it) or the vote pool's
    ///         rounding dust. The losing voter ends with its stake less its bond, the unopened
    ///         voter likewise, and the user with its deposit less the fees plus its refund.
    function test_defence_EveryWeiEndsWithExactlyOneOwnerOrBurned() public {
        Life memory L = _lifecycle();
        TaskManager.Challenge memory c = tm.challenges(L.cid);
        assertEq(c.refundDue, 0.3 ether, "the cap, half the rest, is held for the request's user");
        uint256 refund = L.q1.maxFee;
        assertEq(refund, 0.001 ether, "the signed maxFee (the fee charged): below the cap");
        uint256 burnedBefore = tm.totalBurned();
        assertEq(tm.claimRefund(L.cid, L.r1, L.q1), refund);
        assertEq(tm.totalBurned() - burnedBefore, c.refundDue - refund, "the rest of the cap burns at the claim");
        vm.prank(validator1);
        tm.claimVoteReward(L.cid);
        vm.prank(validator2);
        tm.claimVoteReward(L.cid);

        address[7] memory actors = [node, validator1, validator2, validator3, L.v4, user, stranger];
        for (uint256 i; i < actors.length; ++i) {
            _withdrawTm(actors[i]);
        }
        _pastHold(node);
        vm.prank(node, node);
        payments.withdrawEarnings();
        vm.prank(user);
        payments.requestWithdrawal(node);
        for (uint256 i; i < 5; ++i) {
            _exit(actors[i]);
        }
        vm.warp(block.timestamp + UNBONDING_PERIOD + WITHDRAWAL_DELAY);
        for (uint256 i; i < 5; ++i) {
            vm.prank(actors[i]);
            sm.withdrawUnbonded();
        }
        vm.prank(user);
        payments.withdraw(node);

        uint256 escrow = 0.004 ether * VERIFICATION_SHARE_BPS / PCT;
        (, uint256 held) = payments.account(node);
        assertEq(held, escrow);
        c = tm.challenges(L.cid);
        uint256 dust = c.rewardPool - c.rewardClaimed;
        vm.assertLe(dust, 2, "at most a wei per winner");
        assertEq(address(payments).balance, escrow, "Payments holds the escrow only");
        assertEq(address(tm).balance, dust, "TaskManager holds the dust only");
        assertEq(address(sm).balance, 0, "ServiceManager holds nothing");
        assertEq(address(om).balance, 0, "OmissionManager holds nothing");
        assertEq(BURN.balance, tm.totalBurned() + om.totalBurned(), "burned on purpose, and counted");

        uint256 total = BURN.balance + escrow + dust;
        for (uint256 i; i < actors.length; ++i) {
            total += actors[i].balance;
        }
        assertEq(total, L.injected, "not a wei created or lost");
        assertEq(validator3.balance, 2 ether, "the losing voter: stake back, bond to the winners");
        assertEq(L.v4.balance, 1 ether, "the unopened voter: stake back, bond burned");
        assertEq(user.balance, 1 ether - 0.004 ether + refund, "the user: deposit - fees + refund");
        assertEq(node.balance, 1 ether + 0.004 ether - escrow + L.answerPaid, "node");
    }

    /// @notice Defence (double claims across contracts). After the same lifecycle: the refund,
    ///         a vote reward, a resolution, an availability answer or resolution, a TaskManager
    ///         withdrawal, earnings, a channel withdrawal and the voucher settled in the commit
    ///         (again through `redeem`, or in the next commit's `settle`) each pay once; a losing
    ///         or unopened vote and the challenger's implicit vote pay nothing extra.
    function test_defence_NoPayoutCanBeTakenTwiceThroughAnyContract() public {
        Life memory L = _lifecycle();
        tm.claimRefund(L.cid, L.r1, L.q1);
        vm.expectRevert(TaskManager.NothingToWithdraw.selector);
        tm.claimRefund(L.cid, L.r1, L.q1);

        vm.startPrank(validator2);
        tm.claimVoteReward(L.cid);
        vm.expectRevert(TaskManager.RewardAlreadyClaimed.selector);
        tm.claimVoteReward(L.cid);
        tm.withdraw();
        vm.expectRevert(TaskManager.NothingToWithdraw.selector);
        tm.withdraw();
        vm.stopPrank();
        vm.prank(validator3);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(L.cid);
        vm.prank(L.v4);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(L.cid);
        vm.prank(validator1);
        uint256 share = tm.claimVoteReward(L.cid);
        assertEq(share, tm.challenges(L.cid).rewardPool / 4, "the challenger: its share, no bond twice");

        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, L.cid));
        tm.resolve(L.cid);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityNotOpen.selector, L.aid));
        tm.resolveAvailability(L.aid);

        // The voucher settled in the commit cannot be redeemed again, directly or in a commit.
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user, 0.004 ether, 0.004 ether));
        payments.redeem(L.voucher);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.StaleVoucher.selector, user, 0.004 ether, 0.004 ether));
        tm.commitBatch(1, keccak256("next"), 1, "", L.voucher);

        _pastHold(node);
        vm.startPrank(node, node);
        payments.withdrawEarnings();
        vm.expectRevert(Payments.NothingToWithdraw.selector);
        payments.withdrawEarnings();
        vm.stopPrank();
        vm.startPrank(user);
        payments.requestWithdrawal(node);
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        payments.withdraw(node);
        vm.expectRevert(Payments.NoWithdrawalRequested.selector);
        payments.withdraw(node);
        vm.expectRevert(Payments.NothingToWithdraw.selector);
        payments.requestWithdrawal(node);
        vm.stopPrank();
        (uint256 deposited, uint256 redeemed,) = payments.channel(user, node);
        assertEq(deposited, redeemed, "the channel paid out exactly its deposit");
    }

    /*//////////////////////////////////////////////////////////////
          7. TWO ROLES: THE USER OF A TASK DOUBLE-DIPS ONE FAULT
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (a node's own "user" collects twice for one receipt). The node pays a task
    ///         of its ally's account, breaks the promise by committing the (faulty) receipt late,
    ///         and the ally collects both the omission reward (20 % of a slash) and, when an allied
    ///         validator's challenge of the late receipt wins, the refund. Both slashes come out of
    ///         the node's stake: the coalition gets back the omission reward, the refund and the
    ///         (unsampled, so zero) challenger reward, far less than the 2 ether the node loses.
    function test_defence_OmissionRewardPlusRefundStaysFarBelowTheTwoSlashes() public {
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether); // the node's ally validator
        _registerValidator(validator2, 1 ether);
        uint256 fee = 0.5 ether;
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(21, fee, block.timestamp + 600, block.timestamp + 600);
        vm.warp(p.commitBy + 1); // too late
        uint256 b = _commitRoot(node, _leaf(r), 1);
        uint256 oid = _claimOmission(user, p, sig, q, r);
        uint256 cid = _challenge(validator1, b, 0, r, new bytes32[](0));
        assertFalse(
            (tm.challenges(cid).sampled != TaskManager.Pick.None), "the seed is not out yet: no challenger reward"
        );
        vm.expectRevert(
            abi.encodeWithSelector(OmissionManager.CommittedTooLate.selector, uint256(_ref(b).committedAt), p.commitBy)
        );
        om.answerOmission(oid, _ref(b), 0, r, new bytes32[](0));
        vm.warp(om.omissionChallenges(oid).deadline);
        om.resolveOmission(oid);
        vm.warp(tm.challenges(cid).voteDeadline);
        assertTrue(tm.resolve(cid), "the ally's vote is a third of the stake: a quorum");
        assertEq(q.maxFee, fee, "the user signed the fee it paid");
        uint256 burnedBefore = tm.totalBurned();
        assertEq(tm.claimRefund(cid, r, q), 0.3 ether, "the signed maxFee, capped at the 0.3 ether held");
        assertEq(tm.totalBurned(), burnedBefore, "the whole cap refunded: nothing burns at the claim");
        vm.prank(validator1);
        tm.claimVoteReward(cid);

        uint256 back =
            om.claimable(user) - CHALLENGE_BOND + tm.claimable(user) + tm.claimable(validator1) - CHALLENGE_BOND;
        uint256 lost = 3 ether - sm.getOperator(node).stake;
        assertEq(lost, 2 * SLASH_AMOUNT, "two slashes");
        // omission 0.2 + refund min(maxFee, 0.3) + the voter pool 0.2 (the ally's vote is all of it)
        assertEq(back, 0.2 ether + 0.3 ether + 0.2 ether, "what the coalition recovers");
        vm.assertLt(back, lost / 2, "the double dip recovers well under half of what the node loses");
        vm.assertGt(fee, 0.3 ether, "the refund is capped at half the rest, not the maxFee signed");
    }
}
