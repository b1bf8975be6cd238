// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 14: held earnings (f95b940). Every fee a node redeems is held in Payments for
/// `holdPeriod = BATCH_RETENTION + CHALLENGE_WINDOW` (two rolling buckets), `withdrawEarnings` pays
/// only what is past its hold, and `ServiceManager.slash`, past the stake and unbonding stake, takes
/// the rest from the held fees (`Payments.seize` -> `ServiceManager.receive` -> the slasher). Looked
/// for, as a rational node, user, validator or colluders: fees out before the disputes over them
/// end (period boundaries, redeem before commit, vote extensions, a second address, rebates,
/// re-registration); held fees seized for the wrong reason, by the wrong caller, twice, or credited
/// twice (ether across Payments, ServiceManager, TaskManager, OmissionManager); an honest node's
/// earnings held past 2 x holdPeriod by a griefer; a slash that reverts (a node contract that
/// refuses ether, the OmissionManager's path); the per-window bound (stake + held fees >= what the
/// verdicts of a window can take).
///
/// Found:
/// - HIGH, FIXED. The hold does not cover a fee redeemed with its request: a node, alone, takes its fees
///   out before the fraud verdicts on the receipts they paid, and the verdicts find only its stake
///   (the closed known limit "Fees past the stake" is open again, on the default parameters).
///   `holdPeriod` assumes "a voucher can be redeemed up to a promise delay, at most
///   CHALLENGE_WINDOW, before its receipt's commit" (docs/security-parameters.md, `holdPeriod`;
///   Payments.sol's contract comment). Nothing on chain bounds that delay by CHALLENGE_WINDOW: a
///   voucher is signed with the request and redeemable at once, before the work; the promise falls
///   due at `min(commitBy, request.deadline + MAX_PROMISE_DELAY)` (OmissionManager._checkPromise,
///   MAX_PROMISE_DELAY = UNBONDING_PERIOD / 2 = 3.5 days), and the user's client accepts any
///   promise due before `now + UNBONDING_PERIOD - 1 day` (supernet.sdk.chain.promises.
///   promise_horizon); only an honest node's own config keeps `promise_s <= CHALLENGE_WINDOW`. So the
///   node redeems in the last second of a hold period (held one period and one second, not two:
///   Payments._rolled/_freeAt), commits the faked receipts 3.5 days later (its promise kept), and
///   stretches each fraud vote with an availability claim of its own on the challenged entry,
///   opened the second before the reveal phase and answered at once (TaskManager.
///   challengeAvailability has no caller rule, `_extendVote` moves the vote to two VOTE_WINDOWs
///   from the claim; the claim costs the node 10 % of one bond). The verdicts come at commit + 2 d
///   17 h, the fees were free at commit + 2 d 11 h 50 min: with 1 ether staked and 3 faked answers at
///   1 ether, the node withdraws 2.4 ether and the three fraud verdicts slash 1 ether, not 3.
///   (test_defence_AFeeRedeemedWithItsRequestIsHeldPastTheVerdictsOnItsReceipt)
///   Root causes: Payments.sol:261 (hold = BATCH_RETENTION + CHALLENGE_WINDOW) against
///   OmissionManager.sol:240/525 (a promise due up to MAX_PROMISE_DELAY = UNBONDING_PERIOD / 2
///   after the request's deadline, unrelated to either window), and TaskManager.sol:958 (anyone,
///   the node included, stretches a sealed vote to two VOTE_WINDOWs from its claim). Also, not
///   tested separately: BATCH_RETENTION bounds when the last dispute can *open*; its verdict comes
///   a VOTE_WINDOW later, so even with promises within CHALLENGE_WINDOW the formula is a
///   VOTE_WINDOW short at the worst case (a late availability answer, a vote without verdict, a
///   re-challenge at the end of the reopened window: validators acting at the ends of their
///   windows).
///   Fixed as the first suggestion: `holdPeriod = MAX_REQUEST_AHEAD (1 h) + UNBONDING_PERIOD / 2
///   + BATCH_RETENTION + 2 * VOTE_WINDOW`, read from the TaskManager and the ServiceManager when
///   Payments is wired (a client signing a deadline later than MAX_REQUEST_AHEAD gives its node
///   the difference: the SDK signs 600 s).
///   Fix by design: size the hold from what the chain enforces, not from an honest node's config:
///   `holdPeriod >= MAX_PROMISE_DELAY + (the longest request deadline a client signs, or a cap on
///   it enforced by the OmissionManager) + BATCH_RETENTION + 2 * VOTE_WINDOW`, the OmissionManager
///   and the TaskManager exposing the numbers Payments reads; or bound the delay on chain instead
///   (the OmissionManager's due at `min(commitBy, request.deadline + CHALLENGE_WINDOW)`, with a
///   request deadline capped at signing + a constant, and clients refusing later ones), keeping
///   the hold short. Either way the hold must hold every fee until the last verdict any receipt it
///   paid can still receive, vote extensions included.
///
/// Checked and holding:
/// - The control of the finding: the same late commit with votes the node does not stretch ends
///   within the hold; the withdrawal is refused and the verdicts take the stake, then held fees
///   (test_defence_APromptVoteOnALateCommitStillFindsTheHeldFees).
/// - An omission verdict past the stake takes held fees once, through the OmissionManager's path:
///   Payments' balance drops by what was seized, the ServiceManager keeps nothing, the claimant's
///   reward and the burn add up to the slash, the node's account and held word drop by it, and the
///   node later withdraws exactly the rest (test_defence_AnOmissionSlashPastTheStakeTakesHeldFeesOnce).
/// - A node contract whose `receive` reverts cannot block a slash that reaches its held fees (the
///   seized ether goes to the ServiceManager, never to the node)
///   (test_defence_ANodeThatRefusesEtherCannotBlockTheSeizure).
/// - Nobody but the node adds to its hold: a stranger's deposits to its channels, escrow funding,
///   a replayed or re-addressed voucher, `settle` and `payBounty` from anyone but the TaskManager,
///   all leave `heldEarnings` and its `freeAt` as they were, and the node withdraws everything at
///   `freeAt` (test_defence_NobodyButTheNodeCanExtendItsHold).
/// - Read, no test: `seize` checks its caller against the TaskManager's SERVICE_MANAGER and the
///   ServiceManager's `receive` against the TaskManager's PAYMENTS (one address each, no copy);
///   `slash` seizes only for Role.Node (a role is for life, so deregistering and registering again
///   keeps the address's held fees slashable and releases nothing); `earnings >= held` holds at
///   every write (redeem adds to both, withdraw sets earnings to held, seize takes from both, a
///   rebate adds to earnings only), so `withdrawEarnings` cannot underflow or pay a held wei;
///   buckets are uint96 (7.9e10 ether, past any fee); fees land only in the redeeming address's
///   account (a voucher names its node), so a second address gains nothing. The rebate of a found
///   decoy is not held (by design: it comes from the escrow after a verdict), and the self-slash
///   drain through an ally's claims (docs, "Competing slashes") now reaches held fees after the
///   stake exactly as it reached the stake: the same known limit, no new route.
import {Payments} from "../src/Payments.sol";
import {Receipt, ReceiptPromise, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {Base, Rejecter} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

contract Review14Test is Base {
    uint256 internal constant FEE = 1 ether;

    /// @dev Moves to the last second of the current hold period (a credit now is held least).
    function _toLastSecondOfPeriod() internal {
        uint256 hold = payments.holdPeriod();
        vm.warp((block.timestamp / hold + 1) * hold - 1);
    }

    /// @dev `n` receipts of `user`'s requests to `node` with request deadline `deadline`, fee FEE.
    function _receiptsDue(uint256 n, uint256 deadline)
        internal
        view
        returns (Receipt[] memory rs, bytes32[] memory ls)
    {
        rs = new Receipt[](n);
        ls = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            TaskRequest memory q = _request(i, user, node);
            q.deadline = deadline;
            rs[i] = _receipt(i, user, FEE);
            rs[i].requestHash = payments.hashTaskRequest(q);
            ls[i] = _leaf(rs[i]);
        }
    }

    /*//////////////////////////////////////////////////////////////
          1. A FEE REDEEMED WITH ITS REQUEST OUTLIVES ITS HOLD
    //////////////////////////////////////////////////////////////*/

    /// @notice Attack (fees out before the verdicts on what they paid). The node (1 ether staked)
    ///         takes 3 requests at 1 ether from a user whose client signs them with a 600 s
    ///         deadline, as the SDK's does, and redeems their voucher at once, in the last second
    ///         of a hold period, without running them. It promises to commit the receipts by the
    ///         request's deadline plus MAX_PROMISE_DELAY (3.5 days; the client accepts any promise
    ///         due within UNBONDING_PERIOD less a day) and commits its 3 faked receipts a second
    ///         before that: its promise kept. The honest finder challenges all 3 an hour later and
    ///         the other validators vote fraud. The second before the votes' reveal phase the node
    ///         claims each challenged entry unavailable itself and answers at once: each vote now
    ///         ends two VOTE_WINDOWs from the claim. The fees were free before that; the node
    ///         withdraws them in the verdicts' second. SAFE: the 3 fraud verdicts take their full
    ///         SLASH_AMOUNT (stake 1 ether + held fees 2.4 ether cover 3 ether), the per-window
    ///         bound the hold exists for. Before the fix: the node withdrew 2.4 ether and the
    ///         verdicts slashed 1 ether.
    function test_defence_AFeeRedeemedWithItsRequestIsHeldPastTheVerdictsOnItsReceipt() public {
        _registerNode(node, MIN_NODE_STAKE);
        _registerValidator(validator1, 1 ether); // the honest finder
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);
        uint256 n = 3;
        uint256 deadline = _redeemWithTheRequests(n);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commitAtTheDueTime(n, deadline);
        uint256 committedAt = block.timestamp;

        _rollSealed(block.number + SEED_DELAY_BLOCKS + 1);
        vm.warp(committedAt + 1 hours); // the finder re-ran them: prompt
        uint256[] memory ids = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            ids[i] = _challenge(validator1, b, i, rs[i], Merkle.proofAt(ls, i));
        }
        // The node's own availability claims, while the votes are sealed: each extends its vote.
        vm.warp(_revealsAt(ids[0]) - 1);
        for (uint256 i; i < n; ++i) {
            uint256 a = _claimAvailability(node, b, i);
            vm.prank(node, node);
            tm.answerAvailability(a, _ref(b), rs[i], Merkle.proofAt(ls, i), _trace(i));
        }
        for (uint256 i; i < n; ++i) {
            _vote(validator2, ids[i], true);
            _vote(validator3, ids[i], true);
        }

        // fees free at commit + 2 d 11 h 50 min, verdicts at commit + 2 d 17 h (default windows)
        vm.warp(tm.challenges(ids[0]).voteDeadline); // the verdicts' second: the node moves first
        vm.prank(node, node);
        (bool withdrew,) = address(payments).call(abi.encodeCall(Payments.withdrawEarnings, ()));
        uint256 slashed;
        for (uint256 i; i < n; ++i) {
            assertTrue(tm.resolve(ids[i]), "fraud");
            slashed += tm.challenges(ids[i]).slashed;
        }
        assertEq(slashed, n * SLASH_AMOUNT, "the window's verdicts found only the stake: held fees escaped");
        assertFalse(withdrew, "the fees of the faked receipts left before their fraud verdicts");
    }

    /// @notice Control of the finding: the same node, redemption and late commit, without its own
    ///         availability claims. The votes end a VOTE_WINDOW after the prompt challenges, within
    ///         the hold: the node's withdrawal is refused and the 3 verdicts take 3 ether (the
    ///         stake, then 2 ether of the held fees). The hold covers a prompt vote; what it misses
    ///         is the vote the node stretches.
    function test_defence_APromptVoteOnALateCommitStillFindsTheHeldFees() public {
        _registerNode(node, MIN_NODE_STAKE);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);
        uint256 n = 3;
        uint256 deadline = _redeemWithTheRequests(n);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commitAtTheDueTime(n, deadline);
        _rollSealed(block.number + SEED_DELAY_BLOCKS + 1);
        vm.warp(block.timestamp + 1 hours);
        uint256[] memory ids = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            ids[i] = _challenge(validator1, b, i, rs[i], Merkle.proofAt(ls, i));
            _vote(validator2, ids[i], true);
            _vote(validator3, ids[i], true);
        }
        vm.warp(tm.challenges(ids[0]).voteDeadline);
        vm.prank(node, node);
        (bool withdrew,) = address(payments).call(abi.encodeCall(Payments.withdrawEarnings, ()));
        assertFalse(withdrew, "held");
        uint256 slashed;
        for (uint256 i; i < n; ++i) {
            assertTrue(tm.resolve(ids[i]));
            slashed += tm.challenges(ids[i]).slashed;
        }
        assertEq(slashed, n * SLASH_AMOUNT);
    }

    /// @dev In the last second of a hold period the node redeems the voucher of `n` requests at
    ///      FEE, signed with a 600 s deadline (the SDK client's, ladder.py), before any work.
    function _redeemWithTheRequests(uint256 n) internal returns (uint256 deadline) {
        _toLastSecondOfPeriod();
        deadline = block.timestamp + 600;
        _deposit(user, n * FEE);
        Voucher memory v = _voucher(user, node, n * FEE);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        vm.prank(node, node);
        payments.redeem(packed);
        (uint256 held,) = payments.heldEarnings(node);
        assertEq(held, n * FEE * (10_000 - VERIFICATION_SHARE_BPS) / 10_000);
    }

    /// @dev The promise falls due at the request's deadline + MAX_PROMISE_DELAY (the chain's
    ///      bound; the client accepts it); the node commits its faked receipts a second before, so
    ///      the user's omission claim could only be answered.
    function _commitAtTheDueTime(uint256 n, uint256 deadline)
        internal
        returns (uint256 b, Receipt[] memory rs, bytes32[] memory ls)
    {
        vm.warp(deadline + om.MAX_PROMISE_DELAY() - 1);
        (rs, ls) = _receiptsDue(n, deadline);
        // forge-lint: disable-next-line(unsafe-typecast)
        b = _commitRoot(node, Merkle.root(ls), uint32(n));
    }

    /*//////////////////////////////////////////////////////////////
                     2. DEFENCES THAT HELD
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (a seizure through the OmissionManager's path, once, ether conserved). The
    ///         node (1 ether) takes two paid tasks (1 ether, then 1 ether more: 1.6 ether held) and
    ///         breaks both promises. The first omission verdict takes the stake, the second 1 ether
    ///         of the held fees: Payments sends exactly that, the ServiceManager keeps nothing, the
    ///         claimant's reward and the burn are the slash, and after its hold the node withdraws
    ///         the 0.6 ether left, no more.
    function test_defence_AnOmissionSlashPastTheStakeTakesHeldFeesOnce() public {
        _registerNode(node, MIN_NODE_STAKE);
        uint256 deadline = block.timestamp + 600;
        uint256 commitBy = block.timestamp + 1 hours;
        (TaskRequest memory q1, Receipt memory r1, ReceiptPromise memory p1, bytes memory s1) =
            _paidTaskWithPromise(1, 1 ether, deadline, commitBy);
        (TaskRequest memory q2, Receipt memory r2, ReceiptPromise memory p2, bytes memory s2) =
            _paidTaskWithPromise(2, 2 ether, deadline, commitBy); // cumulative: 1 ether more
        (uint256 held,) = payments.heldEarnings(node);
        assertEq(held, 1.6 ether);

        vm.warp(commitBy);
        uint256 bond = om.omissionBond();
        uint256 o1 = _claimOmission(user, p1, s1, q1, r1);
        uint256 o2 = _claimOmission(user, p2, s2, q2, r2);
        vm.warp(block.timestamp + VOTE_WINDOW);

        uint256 paymentsBefore = address(payments).balance;
        uint256 smBefore = address(sm).balance;
        uint256 omBefore = address(om).balance;
        uint256 burnBefore = BURN.balance;
        uint256 claimBefore = om.claimable(user);
        om.resolveOmission(o1);
        om.resolveOmission(o2);

        assertEq(paymentsBefore - address(payments).balance, 1 ether, "one slash's worth seized, once");
        assertEq(smBefore - address(sm).balance, MIN_NODE_STAKE, "the stake left; nothing stays behind");
        uint256 reward = 2 ether * CHALLENGER_REWARD_BPS / 10_000;
        assertEq(om.claimable(user) - claimBefore, 2 * bond + reward, "bonds back, 20 % of both slashes");
        assertEq(address(om).balance - omBefore, reward, "the OmissionManager holds the reward only");
        assertEq(BURN.balance - burnBefore, 2 ether - reward, "the rest burned");
        (uint256 earnings,) = payments.account(node);
        (held,) = payments.heldEarnings(node);
        assertEq(earnings, 0.6 ether);
        assertEq(held, 0.6 ether);

        _pastHold(node);
        vm.prank(node, node);
        payments.withdrawEarnings();
        assertEq(node.balance, 0.6 ether, "the node gets what was not seized, no more");
        (earnings,) = payments.account(node);
        assertEq(earnings, 0);
    }

    /// @notice Defence (a slash blocked by its node). A node contract that refuses ether has held
    ///         fees; a slash past its stake still takes them (they go to the ServiceManager, then
    ///         the slasher, never through the node).
    function test_defence_ANodeThatRefusesEtherCannotBlockTheSeizure() public {
        Rejecter nodeContract = new Rejecter();
        address who = address(nodeContract);
        vm.deal(who, MIN_NODE_STAKE);
        vm.prank(who);
        sm.registerNode{value: MIN_NODE_STAKE}(ENDPOINT, _models(), 1 gwei);
        _depositTo(user, who, 1 ether);
        Voucher memory v = _voucher(user, who, 1 ether);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        vm.prank(who);
        payments.redeem(packed);
        nodeContract.setRejecting(true);

        uint256 tmBefore = address(tm).balance;
        vm.prank(address(tm));
        uint256 slashed = sm.slash(who, MIN_NODE_STAKE + 0.5 ether);
        assertEq(slashed, MIN_NODE_STAKE + 0.5 ether);
        assertEq(address(tm).balance - tmBefore, slashed);
        (uint256 held,) = payments.heldEarnings(who);
        assertEq(held, 0.3 ether);
    }

    /// @notice Defence (a griefer holding an honest node's fees longer). Nothing a stranger can
    ///         call adds to the node's held word or moves its `freeAt`; the node withdraws all of
    ///         it at `freeAt`, at most two periods after its last redemption.
    function test_defence_NobodyButTheNodeCanExtendItsHold() public {
        _registerNode(node, MIN_NODE_STAKE);
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 1 ether);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        vm.prank(node, node);
        payments.redeem(packed);
        (uint256 held, uint256 freeAt) = payments.heldEarnings(node);
        assertEq(held, 0.8 ether);
        assertLe(freeAt, block.timestamp + 2 * uint256(payments.holdPeriod()));

        vm.warp(freeAt - 1); // the griefer acts in the last second
        _depositTo(stranger, node, 5 ether); // a deposit is nobody's fee until redeemed
        vm.deal(stranger, stranger.balance + 1 ether);
        vm.startPrank(stranger);
        payments.fundEscrow{value: 1 ether}(node); // escrow, never held
        vm.expectRevert(Payments.OnlyTaskManager.selector);
        payments.settle(node, packed);
        vm.expectRevert(Payments.OnlyTaskManager.selector);
        payments.payBounty(node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        payments.redeem(packed); // the voucher names the node: the stranger cannot redeem it
        vm.stopPrank();
        (uint256 heldAfter, uint256 freeAtAfter) = payments.heldEarnings(node);
        assertEq(heldAfter, held);
        assertEq(freeAtAfter, freeAt);

        vm.warp(freeAt);
        vm.prank(node, node);
        payments.withdrawEarnings();
        assertEq(node.balance, 0.8 ether);
    }
}
