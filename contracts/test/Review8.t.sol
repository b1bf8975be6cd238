// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 8: a fresh adversarial pass over the money and stake paths (Payments, ServiceManager,
/// OmissionManager, TaskManager, ModelRegistry), after Review3..7, Adversary*, Invariants and the
/// known limits of docs/security-parameters.md.
///
/// Tried, and what was found:
/// - Unbounded user data in a commit: `commitBatch` takes any `count` up to 2**32 - 1 for one
///   storage word, and every validator enumerates `range(count)` to find its sample.
///   FIXED: MAX_BATCH_COUNT (512) in `commitBatch` (test_defence_ABatchCountAboveMaxBatchCountIsRefused).
/// - Manifest answers of the largest batch a node may be configured to commit (1,024): the answer's
///   calldata is above the 128 KiB a geth/op-geth pool accepts, and anyone who claims the manifest
///   earns CHALLENGER_REWARD_BPS of the slash when it is not mined.
///   FIXED by the same cap (test_defence_AManifestAnswerOfTheLargestBatchFitsTheTxPool).
/// - Seeds: nothing in the node, the validator or the contracts seals a seed; one unread for its
///   blockhash lifetime (256 blocks, or 8,191 with EIP-2935: ~4.5 h of 2 s blocks) expires inside
///   the 1-day challenge window: the batch can no longer be sampled, a correct challenge earns no
///   reward (it burns), and the validator's step raises on it forever.
///   FIXED: expiry favours the checkers, an expired unsealed seed samples everyone
///   (test_defence_AnUnsealedExpiredSeedSamplesEveryCheckerAndPaysTheFinder).
/// - Bond versus answer at high base fee: the answer's cost is paid from the bond, capped at 90 %
///   of it, so the claimant risks at most the bond while the node's cost grows with the base fee;
///   above ~68 gwei answering a maximum trace costs more than the slash, and a sampled claimant
///   earns 20 % of it from an honest node.
///   FIXED: a claim's deposit covers its costliest answer at its block's base fee (ClaimBond)
///   (test_defence_AtAHighBaseFeeTheClaimantPaysTheAnswerItForces,
///   test_defence_AnAnswerOverTheTraceCapIsRefused); what stays:
///   test_known_limit_ABaseFeeThatRisesAfterTheClaimForTheWholeWindowUnderpaysTheNode.
/// - Same at base fee 0: a false claim costs its claimant the 10 % fee, the node is paid nothing
///   and pays no base fee; no party profits. holds
///   (test_defence_AtBaseFeeZeroAFalseClaimCostsItsClaimantTheFeeAndPaysTheNodeNothing).
/// - Slot reuse against promises: a node whose promise delay is above CHALLENGE_WINDOW (its startup
///   check allows up to UNBONDING_PERIOD / 2) reuses the slot of a batch that kept a promise before
///   the promise's claim can be answered; the user claims and the honest node is slashed.
///   FIXED: the node refuses promise_s above BATCH_RETENTION - CHALLENGE_WINDOW - VOTE_WINDOW
///   (test_defence_APromiseWithinTheAnswerableBoundIsAnsweredAfterTheLatestClaim).
/// - Freeze counters across the four dispute kinds (fraud, availability, omission, manifest),
///   closed in an interleaved order, each closing path tried twice, withdrawal tried in between,
///   slashes capped by the stake. holds (test_defence_FourDisputeKindsUnfreezeExactlyOnceEach).
/// - Vouchers replayed on a fork of the chain (same contract address, same state). holds
///   (test_defence_AVoucherSignedOnOneChainIsRefusedOnAFork).
/// - Re-entrancy from the receive hook of a channel withdrawal and of an earnings withdrawal into
///   every guarded Payments entry point. holds (test_defence_ReentryIntoPaymentsFromItsPayoutsPaysOnce).
/// - Also read and found sound (no test: the earlier reviews and the invariants cover them):
///   pool/bond arithmetic of resolve, claimVoteReward and revealDecoy (no division by zero, bonds
///   in = bonds out + burned); the half-open windows at every boundary; slash capped by stake plus
///   unbonding; withdrawUnbonded checks the freeze first; ModelRegistry holds no money (its list
///   only grows, reads are paged).

import {ClaimBond} from "../src/libraries/ClaimBond.sol";
import {OmissionManager} from "../src/OmissionManager.sol";
import {Payments} from "../src/Payments.sol";
import {ServiceManager} from "../src/ServiceManager.sol";
import {SeedBeacon} from "../src/SeedBeacon.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {IPayments} from "../src/interfaces/IPayments.sol";
import {IServiceManager} from "../src/interfaces/IServiceManager.sol";
import {Receipt, ReceiptPromise, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {Base, Caller} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice The one cheatcode this file needs beyond utils/Test.sol's Vm.
interface Review8Vm {
    function chainId(uint256 newChainId) external;
}

/// @notice A contract account whose `receive` re-enters a list of calls once, counting the ones
///         that went through.
contract Review8Reenterer is Caller {
    address[] internal _targets;
    bytes[] internal _calls;
    bool internal _armed;
    uint256 public attempts;
    uint256 public successes;

    function arm(address target, bytes calldata data) external {
        _targets.push(target);
        _calls.push(data);
        _armed = true;
    }

    receive() external payable {
        if (!_armed) return;
        _armed = false;
        for (uint256 i; i < _targets.length; ++i) {
            ++attempts;
            (bool ok,) = _targets[i].call(_calls[i]);
            if (ok) ++successes;
        }
    }
}

contract Review8Test is Base {
    /// @dev geth's (and op-geth's) txpool refuses a transaction above 4 x 32 KiB (`txMaxSize`).
    uint256 internal constant TXPOOL_MAX_BYTES = 128 * 1024;
    /// @dev supernet.sdk.formats.trace.MAX_TRACE_BYTES: the largest trace a kernel saves.
    uint256 internal constant MAX_TRACE_BYTES = 384 * 1024;

    /// @dev The production defaults, except: the seed one block after the commit and every
    ///      validator sampled for every receipt (so that a challenger's `sampled` flag shows only
    ///      what the seed's readability does to it), and `unbonding` as given.
    function _deploySampledAll(uint256 unbonding) internal {
        sm = new ServiceManager(MIN_NODE_STAKE, MIN_VALIDATOR_STAKE, unbonding, MAX_MODELS);
        (uint256 delay, uint256 share) = (WITHDRAWAL_DELAY, VERIFICATION_SHARE_BPS);
        payments = new Payments(delay, MAX_REDEEM_BATCH, share, DECOY_BOUNTY, DECOY_REBATE_BPS);
        beacon = new SeedBeacon(seedSource, 1);
        tm = new TaskManager(
            IServiceManager(address(sm)),
            IPayments(address(payments)),
            beacon,
            1_000_000,
            CHALLENGE_WINDOW,
            VOTE_WINDOW,
            CHALLENGE_BOND,
            QUORUM_BPS,
            SLASH_AMOUNT,
            CHALLENGER_REWARD_BPS,
            VOTER_REWARD_BPS,
            minAnswerGasPrice
        );
        sm.setTaskManager(address(tm));
        payments.setTaskManager(address(tm));
        om = new OmissionManager(tm);
        sm.setOmissionManager(address(om));
    }

    /// @dev A paid task of `user` with a promise due in 60 s, and the leaves of a two-receipt batch
    ///      that holds its receipt first (the claims of the base fee 0 tests).
    function _promisedTask()
        internal
        returns (
            TaskRequest memory q,
            Receipt memory r,
            ReceiptPromise memory p,
            bytes memory sig,
            bytes32[] memory leaves
        )
    {
        (q, r, p, sig) = _paidTaskWithPromise(9, 0.001 ether, type(uint64).max, block.timestamp + 60);
        leaves = new bytes32[](2);
        leaves[0] = _leaf(r);
        leaves[1] = _leaf(_receipt(10, user, 0.001 ether));
    }

    /// @dev `n` bytes, none of them zero (the costliest trace of that size to answer).
    function _denseTrace(uint256 n, bytes1 last) internal pure returns (bytes memory t) {
        t = new bytes(n);
        assembly ("memory-safe") {
            let p := add(t, 32)
            for { let end := add(p, n) } lt(p, end) { p := add(p, 32) } { mstore(p, not(0)) }
        }
        t[n - 1] = last;
    }

    /*//////////////////////////////////////////////////////////////
                    1. UNBOUNDED USER DATA IN A COMMIT
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a known limit: a validator-wide stall for one storage word).
    ///         `commitBatch` took any `count` in 1..2**32-1 while validators enumerate a batch's
    ///         range to find their sample: one commit of `count = 2**32 - 1` (one word and an
    ///         event) made every validator hash 4.3e9 entries and build ~4.3e8 indexes. Now a batch
    ///         holds at most MAX_BATCH_COUNT (512) receipts (`BatchTooLarge`), the bound of
    ///         everything a count sizes: a validator's sample, a manifest (the SDK's
    ///         MAX_MANIFEST_ENTRIES) and a manifest answer.
    function test_defence_ABatchCountAboveMaxBatchCountIsRefused() public {
        _registerNode(node, 2 ether);
        uint256 max = tm.MAX_BATCH_COUNT();
        assertEq(max, 512);
        bytes32 fakeRoot = keccak256("no receipts behind this root");
        uint32[2] memory tooMany = [uint32(max + 1), type(uint32).max];
        for (uint256 i; i < tooMany.length; ++i) {
            vm.prank(node, node);
            vm.expectRevert(abi.encodeWithSelector(TaskManager.BatchTooLarge.selector, uint256(tooMany[i])));
            tm.commitBatch(0, fakeRoot, tooMany[i], "bafyfake", "");
        }
        vm.prank(node, node);
        // forge-lint: disable-next-line(unsafe-typecast)
        uint256 batchId = tm.commitBatch(0, fakeRoot, uint32(max), "bafyfake", "");
        assertTrue(tm.isCommitted(_refOf(batchId, node, 0, uint32(max), fakeRoot)), "the largest batch");
    }

    /// @notice Defence (was a known limit: an honest node at its allowed batch size could not
    ///         answer through the public pool). A manifest answer posts every receipt of the
    ///         batch, 324 + 224 bytes each: at the 1,024 receipts a node could be configured for,
    ///         ~230 KB, above the 128 KiB geth and op-geth accept, so anyone could claim an honest
    ///         node's manifest and be paid when the answer was never mined. At MAX_BATCH_COUNT
    ///         (512) the answer is ~115 KB: it fits, and the honest node keeps its stake.
    function test_defence_AManifestAnswerOfTheLargestBatchFitsTheTxPool() public {
        _registerNode(node, 2 ether);
        uint256 max = tm.MAX_BATCH_COUNT();
        (uint256 batchId, Receipt[] memory rs,) = _commit(node, max);
        TaskManager.BatchRef memory ref = _ref(batchId);
        vm.deal(stranger, CHALLENGE_BOND);
        vm.prank(stranger); // no stake, no role
        uint256 id = om.challengeManifest{value: CHALLENGE_BOND}(ref);

        bytes memory answer = abi.encodeCall(OmissionManager.answerManifest, (id, ref, rs));
        assertEq(answer.length, 324 + 224 * max, "the answer's calldata");
        vm.assertLt(answer.length, TXPOOL_MAX_BYTES, "accepted by a geth/op-geth pool");
        vm.prank(node, node);
        om.answerManifest(id, ref, rs);
        assertEq(sm.getOperator(node).stake, 2 ether, "the honest node keeps its stake");
    }

    /*//////////////////////////////////////////////////////////////
                  2. A SEED NOBODY SEALS EXPIRES IN THE WINDOW
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a known limit: checking stopped, and the finder's reward burned, when a
    ///         seed was not read in time). A batch's seed is `blockhash(commitBlock +
    ///         SEED_DELAY_BLOCKS)`, readable for 256 blocks (8,191 with EIP-2935) unless sealed,
    ///         while the challenge window is a day: once it expired, `isSampled` reverted (no
    ///         validator could learn its sample) and a correct challenge was never `sampled` (the
    ///         finder's reward burned). Now expiry favours the checkers: an expired unsealed seed
    ///         samples every validator for every entry (`isSampled` true) and a finder whose stake
    ///         predates the commit is paid (the validator checks the whole batch on a zero seed).
    function test_defence_AnUnsealedExpiredSeedSamplesEveryCheckerAndPaysTheFinder() public {
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 8);
        TaskManager.BatchRef memory ref = _ref(batchId);
        uint256 t0 = block.timestamp;
        uint256 seedBlock = uint256(ref.commitBlock) + SEED_DELAY_BLOCKS;

        // While the seed is readable it picks ~10 % of the entries for validator1: find one it skips.
        // (Under Prevrandao, had a validator sealed the seed block: looked at in a snapshot.)
        uint256 unsealed = vm.snapshotState();
        _rollSealed(seedBlock + 1);
        uint256 skipped = type(uint256).max;
        for (uint256 i; i < 8; ++i) {
            if (!tm.isSampled(ref, validator1, i)) skipped = i;
        }
        assertTrue(skipped != type(uint256).max, "the readable seed leaves some entry to others");
        vm.revertToState(unsealed);

        // 8,192 blocks of 2 s later (4.55 h, well inside the 1-day window) nobody sealed it.
        vm.roll(seedBlock + 8_192);
        vm.warp(t0 + 8_192 * 2);
        vm.assertLt(block.timestamp, ref.committedAt + CHALLENGE_WINDOW, "still challengeable");
        assertEq(tm.batchSeed(ref), bytes32(0)); // the seed itself is gone ...
        for (uint256 i; i < 8; ++i) {
            assertTrue(tm.isSampled(ref, validator1, i), "... so every entry is every checker's");
        }
        uint256 late = _challenge(validator1, batchId, skipped, rs[skipped], Merkle.proofAt(leaves, skipped));
        assertTrue(
            tm.challenges(late).sampled == TaskManager.Pick.Everyone,
            "the finder of a batch nobody read in time is paid"
        );

        _vote(validator2, late, true);
        vm.warp(tm.challenges(late).voteDeadline);
        assertTrue(tm.resolve(late));
        uint256 reward = SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000;
        assertEq(tm.claimable(validator1), CHALLENGE_BOND + reward, "bond and reward");
    }

    /*//////////////////////////////////////////////////////////////
                   3. BOND VERSUS ANSWER, BY BASE FEE
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a known limit: griefing cost asymmetry at a high base fee). An
    ///         answered claim paid the node `(ANSWER_FIXED_GAS + 40 * bytes) * basefee` capped at
    ///         90 % of the bond, so a claimant risked at most CHALLENGE_BOND while a trace of
    ///         MAX_TRACE_BYTES (~15.9 M gas) cost the node more than the cap from 5.7 gwei and more
    ///         than the slash plus the cap from 68.4 gwei: at a spike the honest node's best reply
    ///         was to be slashed, and a sampled claimant earned 20 % of the slash. Now a claim's
    ///         deposit covers its costliest answer at its block's base fee (ClaimBond,
    ///         `availabilityBond`, `manifestBond`, `omissionBond`): the same claims at 70 gwei
    ///         cost the claimant the answers it forced, and the node is paid in full.
    /// @dev EIP-7623's floor for calldata `cd` counted as if no byte were zero (an upper bound).
    function _denseFloor(bytes memory cd) internal pure returns (uint256) {
        return 21_000 + 10 * 4 * cd.length;
    }

    function test_defence_AtAHighBaseFeeTheClaimantPaysTheAnswerItForces() public {
        _deploySampledAll(UNBONDING_PERIOD);
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether); // stake in place before the commit: sampled
        bytes memory trace0 = _denseTrace(MAX_TRACE_BYTES, 0xfe);
        bytes memory trace1 = _denseTrace(MAX_TRACE_BYTES, 0xfd);
        Receipt[] memory rs = new Receipt[](2);
        rs[0] = _boundReceipt(0, user, node, 0.001 ether);
        rs[0].traceHash = sha256(trace0);
        rs[1] = _boundReceipt(1, user, node, 0.001 ether);
        rs[1].traceHash = sha256(trace1);
        bytes32[] memory leaves = new bytes32[](2);
        leaves[0] = _leaf(rs[0]);
        leaves[1] = _leaf(rs[1]);
        uint256 batchId = _commitRoot(node, Merkle.root(leaves), 2);
        _rollSealed(block.number + 2);

        uint256 basefee = 70 gwei;
        vm.fee(basefee);
        uint256 worst = tm.AVAILABILITY_WORST_GAS();
        assertEq(worst, tm.ANSWER_FIXED_GAS() + MAX_TRACE_BYTES * tm.ANSWER_GAS_PER_BYTE());
        assertEq(tm.MAX_TRACE_BYTES(), MAX_TRACE_BYTES, "the SDK's cap");
        vm.deal(validator1, 10 ether);
        vm.prank(validator1); // the old bond alone no longer opens a claim
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.WrongBond.selector, CHALLENGE_BOND, CHALLENGE_BOND + worst * basefee)
        );
        tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(batchId), 0);
        uint256 a0 = _claimAvailability(validator1, batchId, 0);
        uint256 a1 = _claimAvailability(validator1, batchId, 1);
        assertEq(tm.availabilityChallenges(a0).deposit, CHALLENGE_BOND + worst * basefee);

        // a dense trace's answer costs EIP-7623's calldata floor, which is its price (Review11)
        uint256 floor = _denseFloor(
            abi.encodeCall(
                TaskManager.answerAvailability, (a0, _ref(batchId), rs[0], Merkle.proofAt(leaves, 0), trace0)
            )
        ) * basefee;
        vm.startPrank(node, node); // answering costs the node nothing it is not paid back
        tm.answerAvailability(a0, _ref(batchId), rs[0], Merkle.proofAt(leaves, 0), trace0);
        tm.answerAvailability(a1, _ref(batchId), rs[1], Merkle.proofAt(leaves, 1), trace1);
        vm.stopPrank();
        uint256 paid = tm.claimable(node);
        vm.assertLe(paid, 2 * floor, "paid each answer in full, at its floor");
        vm.assertGt(paid, 2 * floor * 99 / 100, "(less the zero bytes of the encoding's words)");
        uint256 fee = CHALLENGE_BOND * tm.AVAILABILITY_FEE_BPS() / 10_000;
        assertEq(
            tm.claimable(validator1), 2 * (CHALLENGE_BOND + worst * basefee - fee) - paid, "the claimant bore both"
        );
        assertEq(sm.getOperator(node).stake, 3 ether, "the honest node keeps its stake");

        _manifestAtTheSpike(batchId, rs, basefee, fee);
    }

    /// @dev A manifest claim at the spike covers MAX_BATCH_COUNT receipts the same way.
    function _manifestAtTheSpike(uint256 batchId, Receipt[] memory rs, uint256 basefee, uint256 fee) internal {
        uint256 mworst = om.MANIFEST_WORST_GAS();
        assertEq(mworst, om.ANSWER_GAS() + tm.MAX_BATCH_COUNT() * om.MANIFEST_RECEIPT_GAS());
        vm.deal(stranger, 10 ether);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                OmissionManager.WrongBond.selector, CHALLENGE_BOND, CHALLENGE_BOND + mworst * basefee
            )
        );
        om.challengeManifest{value: CHALLENGE_BOND}(_ref(batchId));
        uint256 deposit = om.manifestBond();
        vm.prank(stranger);
        uint256 mid = om.challengeManifest{value: deposit}(_ref(batchId));
        vm.prank(node, node);
        om.answerManifest(mid, _ref(batchId), rs);
        uint256 cost = om.claimable(node); // its price: ClaimBond.costOfAnswer
        vm.assertGt(cost, 21_000 * basefee, "paid");
        vm.assertLt(cost, (om.ANSWER_GAS() + 2 * om.MANIFEST_RECEIPT_GAS()) * basefee, "its own cost, below the worst");
        assertEq(om.claimable(stranger), deposit - fee - cost, "what the answer did not cost comes back");
        assertEq(address(tm).balance, tm.claimable(node) + tm.claimable(validator1), "TaskManager holds what it owes");
    }

    /// @notice KNOWN LIMIT (what stays of the base-fee asymmetry). The deposit is priced at the
    ///         claim's block: a base fee that rises after the claim and stays up for the whole
    ///         answer window (VOTE_WINDOW, a day by default) still pays the node only the deposit
    ///         less the fee. Nobody chooses that: a claimant cannot hold the base fee up for a day,
    ///         and the node answers at any moment of the window. Here: claimed at 1 gwei,
    ///         answered at 70 gwei.
    function test_known_limit_ABaseFeeThatRisesAfterTheClaimForTheWholeWindowUnderpaysTheNode() public {
        _deploySampledAll(UNBONDING_PERIOD);
        _registerNode(node, 3 ether);
        bytes memory trace0 = _denseTrace(MAX_TRACE_BYTES, 0xfe);
        Receipt memory r0 = _boundReceipt(0, user, node, 0.001 ether);
        r0.traceHash = sha256(trace0);
        bytes32[] memory leaves = new bytes32[](2);
        leaves[0] = _leaf(r0);
        leaves[1] = _leaf(_boundReceipt(1, user, node, 0.001 ether));
        uint256 batchId = _commitRoot(node, Merkle.root(leaves), 2);
        _rollSealed(block.number + 2);
        vm.fee(1 gwei);
        uint256 a0 = _claimAvailability(validator1, batchId, 0);
        uint256 deposit = tm.availabilityChallenges(a0).deposit;
        vm.fee(70 gwei);
        vm.prank(node, node);
        tm.answerAvailability(a0, _ref(batchId), r0, Merkle.proofAt(leaves, 0), trace0);
        uint256 fee = CHALLENGE_BOND * tm.AVAILABILITY_FEE_BPS() / 10_000;
        assertEq(tm.claimable(node), deposit - fee, "capped at the deposit less the fee");
        vm.assertGt(tm.AVAILABILITY_WORST_GAS() * 70 gwei, deposit - fee, "below the answer's cost");
    }

    /// @notice Defence: an answer never posts more than the deposit was priced for. A trace over
    ///         MAX_TRACE_BYTES (which no kernel saves; a committed one is its node's fault) is
    ///         refused, so the costliest answer is the one AVAILABILITY_WORST_GAS prices.
    function test_defence_AnAnswerOverTheTraceCapIsRefused() public {
        _registerNode(node, 2 ether);
        bytes memory big = _denseTrace(MAX_TRACE_BYTES + 1, 0xfe);
        Receipt memory r0 = _boundReceipt(0, user, node, 0.001 ether);
        r0.traceHash = sha256(big);
        bytes32[] memory leaves = new bytes32[](2);
        leaves[0] = _leaf(r0);
        leaves[1] = _leaf(_boundReceipt(1, user, node, 0.001 ether));
        uint256 batchId = _commitRoot(node, Merkle.root(leaves), 2);
        uint256 a0 = _claimAvailability(validator1, batchId, 0);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TraceTooLarge.selector, MAX_TRACE_BYTES + 1));
        tm.answerAvailability(a0, _ref(batchId), r0, Merkle.proofAt(leaves, 0), big);
    }

    /// @notice Defence (the other end: base fee 0). An answered false claim of each kind
    ///         (availability, omission, manifest) pays the node nothing (its answer paid no base
    ///         fee), burns the 10 % fee and returns the rest to the claimant; a claimant that
    ///         answers its own claim gets back no more. Opening a claim is never free and never
    ///         pays, and both contracts hold exactly what they owe.
    function test_defence_AtBaseFeeZeroAFalseClaimCostsItsClaimantTheFeeAndPaysTheNodeNothing() public {
        _registerNode(node, 2 ether);
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig, bytes32[] memory leaves) =
            _promisedTask();
        uint256 batchId = _commitRoot(node, Merkle.root(leaves), 2);
        vm.fee(0);

        uint256 fee = CHALLENGE_BOND / 10;
        uint256 av = _claimAvailability(stranger, batchId, 0);
        vm.prank(stranger, stranger); // the claimant answers its own claim
        tm.answerAvailability(av, _ref(batchId), r, Merkle.proofAt(leaves, 0), _trace(9));
        assertEq(tm.claimable(stranger), CHALLENGE_BOND - fee, "availability: the fee, no more");

        vm.deal(user2, CHALLENGE_BOND);
        vm.prank(user2);
        uint256 mid = om.challengeManifest{value: CHALLENGE_BOND}(_ref(batchId));
        Receipt[] memory rs = new Receipt[](2);
        rs[0] = r;
        rs[1] = _receipt(10, user, 0.001 ether);
        vm.prank(node, node);
        om.answerManifest(mid, _ref(batchId), rs);
        assertEq(om.claimable(user2), CHALLENGE_BOND - fee, "manifest: the fee, no more");

        vm.warp(p.commitBy);
        uint256 oid = _claimOmission(user, p, sig, q, r);
        vm.prank(node, node);
        om.answerOmission(oid, _ref(batchId), 0, r, Merkle.proofAt(leaves, 0));
        assertEq(om.claimable(user), CHALLENGE_BOND - fee, "omission: the fee, no more");

        assertEq(tm.claimable(node) + om.claimable(node), 0, "the node is paid nothing at base fee 0");
        assertEq(sm.getOperator(node).frozenCount, 0);
        assertEq(BURN.balance, 3 * fee, "three fees burned");
        assertEq(address(tm).balance, tm.claimable(stranger), "TaskManager holds what it owes");
        assertEq(address(om).balance, om.claimable(user2) + om.claimable(user), "OmissionManager too");
    }

    /// @notice Defence (was a known limit: at base fee 0 the node paid its answer and was paid
    ///         nothing, Review8's asymmetry back in full; tests/integration/test_review_answer_prices2.py).
    ///         A deployment for such a chain sets MIN_ANSWER_GAS_PRICE to the chain's least accepted
    ///         gas price: every claim then posts its costliest answer at that price, and an answer
    ///         is paid its cost at it, in both contracts; where the base fee is higher, it rules.
    function test_defence_AtBaseFeeZeroTheAnswerGasPriceFloorPaysTheNode() public {
        minAnswerGasPrice = 1 gwei;
        _deploy(MIN_NODE_STAKE);
        assertEq(om.MIN_ANSWER_GAS_PRICE(), 1 gwei, "the OmissionManager reads the TaskManager's");
        _registerNode(node, 2 ether);
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig, bytes32[] memory leaves) =
            _promisedTask();
        uint256 batchId = _commitRoot(node, Merkle.root(leaves), 2);
        vm.fee(0);
        vm.txGasPrice(1 gwei); // answers pay at least the floor
        assertEq(tm.availabilityBond(), CHALLENGE_BOND + tm.AVAILABILITY_WORST_GAS() * 1 gwei);
        assertEq(om.omissionBond(), CHALLENGE_BOND + om.ANSWER_GAS() * 1 gwei);
        assertEq(om.manifestBond(), CHALLENGE_BOND + om.MANIFEST_WORST_GAS() * 1 gwei);
        vm.expectRevert(); // the bare bond no longer opens a claim
        vm.prank(stranger);
        tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(batchId), 0);

        uint256 fee = CHALLENGE_BOND / 10;
        uint256 av = _claimAvailability(stranger, batchId, 0);
        vm.txGasPrice(0.5 gwei); // an answer paying less than the floor is not paid the floor
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ClaimBond.AnswerBelowPrice.selector, 0.5 gwei, 1 gwei));
        tm.answerAvailability(av, _ref(batchId), r, Merkle.proofAt(leaves, 0), _trace(9));
        vm.txGasPrice(1 gwei);
        vm.prank(node, node);
        tm.answerAvailability(av, _ref(batchId), r, Merkle.proofAt(leaves, 0), _trace(9));
        uint256 paid = tm.claimable(node);
        // its price at the floor (against the mined gasUsed on Anvil: test_review_answer_prices2.py)
        vm.assertGt(paid, 100_000 * 1 gwei, "the answer is paid at the floor");
        assertEq(paid + tm.claimable(stranger) + fee, tm.availabilityBond(), "the deposit split in full");

        vm.warp(p.commitBy);
        uint256 oid = _claimOmission(user, p, sig, q, r);
        vm.prank(node, node);
        om.answerOmission(oid, _ref(batchId), 0, r, Merkle.proofAt(leaves, 0));
        vm.assertGt(om.claimable(node), 21_000 * 1 gwei, "the omission answer too");
        assertEq(address(om).balance, om.claimable(node) + om.claimable(user), "OmissionManager holds what it owes");

        vm.fee(3 gwei); // a base fee above the floor rules
        assertEq(tm.availabilityBond(), CHALLENGE_BOND + tm.AVAILABILITY_WORST_GAS() * 3 gwei);
        assertEq(om.omissionBond(), CHALLENGE_BOND + om.ANSWER_GAS() * 3 gwei);
    }

    /*//////////////////////////////////////////////////////////////
             4. A KEPT PROMISE, UNPROVABLE AFTER SLOT REUSE
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a known limit: a kept promise became unprovable once the node reused
    ///         its slot). An omission answer needs the batch still in its slot, reusable
    ///         BATCH_RETENTION after the commit; a claim opens at `commitBy` at the latest, may be
    ///         opened CHALLENGE_WINDOW after it and answered VOTE_WINDOW after that. The node's
    ///         startup check allowed `promise_s` up to UNBONDING_PERIOD / 2 (3.5 days), so a user
    ///         could wait for the slot's reuse and get the honest node slashed. Now the node also
    ///         refuses a `promise_s` above BATCH_RETENTION - CHALLENGE_WINDOW - VOTE_WINDOW
    ///         (`answerable_promise_delay`, sdk/supernet/sdk/chain/promises.py): here a promise of
    ///         that bound, committed at once and claimed at the last moment, is still answered.
    function test_defence_APromiseWithinTheAnswerableBoundIsAnsweredAfterTheLatestClaim() public {
        _registerNode(node, 2 ether);
        uint256 promiseS = tm.BATCH_RETENTION() - CHALLENGE_WINDOW - VOTE_WINDOW;
        assertEq(promiseS, 2 * CHALLENGE_WINDOW + VOTE_WINDOW, "the bound the node enforces");
        uint256 t0 = block.timestamp;
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(5, 0.001 ether, t0 + 1 hours, t0 + promiseS);
        bytes32[] memory leaves = new bytes32[](2);
        leaves[0] = _leaf(r);
        leaves[1] = _leaf(_receipt(6, user, 0.001 ether));
        uint256 batchId = _commitRoot(node, Merkle.root(leaves), 2); // slot 0, at once: promise kept
        TaskManager.BatchRef memory kept = _ref(batchId);

        vm.warp(p.commitBy + CHALLENGE_WINDOW - 1); // the last second a claim can open
        uint256 oid = _claimOmission(user, p, sig, q, r);
        vm.warp(om.omissionChallenges(oid).deadline - 1); // the node answers at the last second
        vm.assertLt(block.timestamp, kept.committedAt + tm.BATCH_RETENTION(), "the slot is not reusable yet");
        vm.prank(node, node);
        om.answerOmission(oid, kept, 0, r, Merkle.proofAt(leaves, 0));
        assertEq(sm.getOperator(node).stake, 2 ether, "the honest node keeps its stake");
    }

    /*//////////////////////////////////////////////////////////////
                   5. FREEZES, VOUCHERS, RE-ENTRANCY (HOLD)
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (freeze counters cannot be unbalanced). One node faces a fraud challenge,
    ///         an availability claim, a manifest claim and an omission claim at once (4 freezes
    ///         from two contracts). Closed in an interleaved order (manifest answered, availability
    ///         answered, fraud resolved, omission resolved), each close takes exactly one freeze
    ///         off, a second close of the same dispute by any path reverts, and the deregistered
    ///         stake stays behind OperatorFrozen until the last one; two slashes take 2 of 3 ether
    ///         and the node then withdraws exactly the rest.
    function test_defence_FourDisputeKindsUnfreezeExactlyOnceEach() public {
        _deployDevnet(60); // windows of seconds, unbonding 60 s
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig) =
            _paidTaskWithPromise(50, 0.001 ether, block.timestamp, block.timestamp + 5); // never committed
        (uint256 b, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 4);
        uint256 cid = _challenge(validator1, b, 1, rs[1], Merkle.proofAt(leaves, 1));
        uint256 aid = _claimAvailability(stranger, b, 2);
        vm.deal(user2, CHALLENGE_BOND);
        vm.prank(user2);
        uint256 mid = om.challengeManifest{value: CHALLENGE_BOND}(_ref(b));
        vm.warp(block.timestamp + 5);
        uint256 oid = _claimOmission(user, p, sig, q, r);
        vm.prank(node, node);
        sm.deregister();
        _assertFrozen(4);

        vm.prank(node, node);
        om.answerManifest(mid, _ref(b), rs);
        _assertFrozen(3);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.ManifestChallengeNotOpen.selector, mid));
        om.resolveManifest(mid);

        vm.prank(node, node);
        tm.answerAvailability(aid, _ref(b), rs[2], Merkle.proofAt(leaves, 2), _trace(2));
        _assertFrozen(2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityNotOpen.selector, aid));
        tm.resolveAvailability(aid);

        _vote(validator2, cid, true);
        vm.warp(tm.challenges(cid).voteDeadline);
        assertTrue(tm.resolve(cid));
        _assertFrozen(1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, cid));
        tm.resolve(cid);

        vm.warp(om.omissionChallenges(oid).deadline);
        om.resolveOmission(oid);
        assertEq(sm.getOperator(node).frozenCount, 0);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.OmissionNotOpen.selector, oid));
        om.resolveOmission(oid);

        assertEq(sm.getOperator(node).unbonding, 3 ether - 2 * SLASH_AMOUNT, "two slashes, within the stake");
        vm.warp(sm.getOperator(node).lockedUntil);
        uint256 before = node.balance;
        vm.prank(node, node);
        sm.withdrawUnbonded();
        assertEq(node.balance - before, 1 ether, "exactly the rest");
        assertEq(address(sm).balance, 3 ether, "the validators' stake, no more");
    }

    function _assertFrozen(uint32 count) internal {
        assertEq(sm.getOperator(node).frozenCount, count);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, count));
        sm.withdrawUnbonded();
    }

    /// @notice Defence (a voucher replayed on a fork). After a chain split the same Payments, at
    ///         the same address with the same channels, exists on both chains; OpenZeppelin's
    ///         EIP712 rebuilds the domain separator when `block.chainid` changes, so a voucher
    ///         signed on one chain is refused on the other and the channel there is untouched.
    function test_defence_AVoucherSignedOnOneChainIsRefusedOnAFork() public {
        _deposit(user, 1 ether);
        Voucher memory v = _voucher(user, node, 0.3 ether);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        uint256 home = block.chainid;

        Review8Vm(address(vm)).chainId(home + 1);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        payments.redeem(packed);
        (, uint256 redeemed,) = payments.channel(user, node);
        assertEq(redeemed, 0, "the fork's channel is untouched");

        Review8Vm(address(vm)).chainId(home);
        vm.prank(node, node);
        assertEq(payments.redeem(packed), 0.3 ether, "the voucher pays on its own chain");
    }

    /// @notice Defence (re-entrancy through pull payments). A contract user withdrawing its channel
    ///         and a contract node withdrawing its earnings each re-enter, from `receive`, every
    ///         guarded Payments entry point (withdraw, redeem, withdrawEarnings): none goes through,
    ///         each is paid exactly once, the voucher the node tried to redeem inside pays
    ///         normally afterwards, and Payments holds exactly the channels' rest plus the
    ///         accounts.
    function test_defence_ReentryIntoPaymentsFromItsPayoutsPaysOnce() public {
        // A contract user: deposits, closes, withdraws with a re-entering receive.
        Review8Reenterer u = new Review8Reenterer();
        vm.deal(address(u), 1 ether);
        u.call(address(payments), 1 ether, abi.encodeCall(Payments.deposit, (node)));
        u.call(address(payments), 0, abi.encodeCall(Payments.requestWithdrawal, (node)));
        vm.warp(block.timestamp + WITHDRAWAL_DELAY);
        u.arm(address(payments), abi.encodeCall(Payments.withdraw, (node)));
        u.arm(address(payments), abi.encodeCall(Payments.withdrawEarnings, ()));
        u.call(address(payments), 0, abi.encodeCall(Payments.withdraw, (node)));
        assertEq(u.attempts(), 2);
        assertEq(u.successes(), 0, "no re-entry went through");
        assertEq(address(u).balance, 1 ether, "paid once");

        // A contract node: redeems a voucher, withdraws its earnings with a re-entering receive.
        Review8Reenterer n = new Review8Reenterer();
        _depositTo(user, address(n), 1 ether);
        Voucher memory v1 = _voucher(user, address(n), 0.5 ether);
        Voucher memory v2 = _voucher(user, address(n), 0.8 ether);
        bytes memory p1 = _pack(v1, _signVoucher(userKey, v1));
        bytes memory p2 = _pack(v2, _signVoucher(userKey, v2));
        n.call(address(payments), 0, abi.encodeCall(Payments.redeem, (p1)));
        (uint256 earnings,) = payments.account(address(n));
        _pastHold(address(n));
        n.arm(address(payments), abi.encodeCall(Payments.withdrawEarnings, ()));
        n.arm(address(payments), abi.encodeCall(Payments.redeem, (p2)));
        n.call(address(payments), 0, abi.encodeCall(Payments.withdrawEarnings, ()));
        assertEq(n.attempts(), 2);
        assertEq(n.successes(), 0, "no re-entry went through");
        assertEq(address(n).balance, earnings, "earnings paid once");
        n.call(address(payments), 0, abi.encodeCall(Payments.redeem, (p2)));
        (, uint256 redeemed,) = payments.channel(user, address(n));
        assertEq(redeemed, 0.8 ether, "the voucher pays normally outside the payout");

        (uint256 earningsLeft, uint256 escrow) = payments.account(address(n));
        uint256 owed = (1 ether - 0.8 ether) + earningsLeft + escrow;
        assertEq(address(payments).balance, owed, "holds what it owes");
    }
}
