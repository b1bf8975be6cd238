// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {OmissionManager} from "../src/OmissionManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Manifest challenges: a node that withholds a batch's manifest must post the batch's
///         receipts (the contract recomputes the root) or be slashed, so no check that has to find
///         a receipt by its task (the writer a memory root names) can be stalled by withholding.
contract ManifestTest is Base {
    function setUp() public override {
        super.setUp();
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
    }

    function _challengeManifest(address who, uint256 batchId) internal returns (uint256 id) {
        uint256 bond = om.manifestBond(); // the bond plus the costliest answer at this base fee
        vm.deal(who, bond);
        vm.prank(who);
        id = om.challengeManifest{value: bond}(_ref(batchId));
    }

    /// An honest node posts its receipts: it keeps its stake, is paid the answer's cost, and the
    /// receipts are in the event, in order. Each odd size checks the carried-up last node.
    function test_Manifest_AnsweredWithEveryReceipt() public {
        for (uint256 n = 1; n <= 7; ++n) {
            (uint256 b, Receipt[] memory rs,) = _commit(node, n);
            uint256 id = _challengeManifest(stranger, b);
            assertEq(sm.getNode(node).frozenCount, 1, "frozen until answered");
            assertEq(om.batchManifest(b), id);
            vm.fee(10 gwei);
            uint256 burned = CHALLENGE_BOND / 10;
            uint256 deposit = om.manifestChallenges(id).deposit;
            vm.expectEmit(address(om)); // the receipts, in order, for every validator to index
            emit OmissionManager.ManifestAnswered(id, b, rs);
            vm.prank(node, node);
            om.answerManifest(id, _ref(b), rs);
            uint256 cost = om.claimable(node); // its price: ClaimBond.costOfAnswer
            vm.assertGt(cost, 21_000 * 10 gwei, "the answer is paid");
            vm.assertLt(cost, (om.ANSWER_GAS() + n * om.MANIFEST_RECEIPT_GAS()) * 10 gwei, "within the worst");
            assertTrue(om.manifestChallenges(id).status == OmissionManager.ManifestStatus.Answered);
            assertEq(sm.getNode(node).frozenCount, 0);
            assertEq(om.claimable(node), cost, "the answer's cost");
            assertEq(om.claimable(stranger), deposit - burned - cost, "the rest back, the fee burned");
            vm.prank(node, node);
            om.withdraw();
            vm.prank(stranger);
            om.withdraw();
        }
        assertEq(sm.getOperator(node).stake, 2 ether, "never slashed");
    }

    /// A node cannot answer with another list: one receipt left out, one added, two swapped, one
    /// altered. Each is refused and, left at that, the node is slashed.
    function test_Manifest_OnlyTheCommittedListAnswers() public {
        (uint256 b, Receipt[] memory rs,) = _commit(node, 4);
        uint256 id = _challengeManifest(validator1, b);
        TaskManager.BatchRef memory ref = _ref(b);

        Receipt[] memory fewer = new Receipt[](3);
        Receipt[] memory more = new Receipt[](5);
        Receipt[] memory swapped = new Receipt[](4);
        Receipt[] memory altered = new Receipt[](4);
        for (uint256 i; i < 4; ++i) {
            if (i < 3) fewer[i] = rs[i];
            more[i] = rs[i];
            swapped[i] = rs[i];
            altered[i] = rs[i];
        }
        more[4] = rs[0];
        (swapped[1], swapped[2]) = (rs[2], rs[1]);
        altered[3].fee += 1;

        vm.startPrank(node, node);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.WrongReceiptCount.selector, 3, 4));
        om.answerManifest(id, ref, fewer);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.WrongReceiptCount.selector, 5, 4));
        om.answerManifest(id, ref, more);
        vm.expectRevert(OmissionManager.NotTheManifest.selector);
        om.answerManifest(id, ref, swapped);
        vm.expectRevert(OmissionManager.NotTheManifest.selector);
        om.answerManifest(id, ref, altered);
        TaskManager.BatchRef memory forged = _ref(b); // a copy (memory assignment aliases)
        forged.root = Merkle.root(_leaves(swapped)); // a header the TaskManager never stored
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.UnknownBatch.selector, b));
        om.answerManifest(id, forged, swapped);
        vm.stopPrank();

        OmissionManager.ManifestChallenge memory m = om.manifestChallenges(id);
        vm.warp(m.deadline - 1);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.AnswerWindowOpen.selector, m.deadline));
        om.resolveManifest(id);
        vm.warp(m.deadline);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.AnswerWindowClosed.selector, m.deadline));
        om.answerManifest(id, ref, rs); // too late even with the right list
        vm.prank(stranger); // anyone may resolve
        om.resolveManifest(id);
        uint256 reward = SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000;
        assertEq(sm.getOperator(node).stake, 2 ether - SLASH_AMOUNT, "slashed");
        assertEq(om.claimable(validator1), CHALLENGE_BOND + reward, "bond back + reward");
        assertEq(sm.getNode(node).frozenCount, 0);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.ManifestChallengeNotOpen.selector, id));
        om.resolveManifest(id);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.ManifestChallengeNotOpen.selector, id));
        om.answerManifest(id, ref, rs);
    }

    /// Once per batch, within its challenge window, with the exact bond, on a committed header:
    /// a node cannot be challenged twice for one manifest, nor for a batch it never committed.
    function test_Manifest_ChallengeRules() public {
        (uint256 b, Receipt[] memory rs,) = _commit(node, 2);
        TaskManager.BatchRef memory ref = _ref(b);
        vm.deal(stranger, 1 ether);
        vm.startPrank(stranger);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.WrongBond.selector, CHALLENGE_BOND - 1, CHALLENGE_BOND));
        om.challengeManifest{value: CHALLENGE_BOND - 1}(ref);
        TaskManager.BatchRef memory forged = _ref(b); // a copy (memory assignment aliases)
        forged.count = 3;
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.UnknownBatch.selector, b));
        om.challengeManifest{value: CHALLENGE_BOND}(forged);
        uint256 id = om.challengeManifest{value: CHALLENGE_BOND}(ref);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.ManifestAlreadyChallenged.selector, id));
        om.challengeManifest{value: CHALLENGE_BOND}(ref);
        vm.stopPrank();
        vm.prank(node, node);
        om.answerManifest(id, ref, rs);
        vm.deal(validator1, CHALLENGE_BOND);
        vm.prank(validator1); // answered: the receipts are public for good, no second claim
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.ManifestAlreadyChallenged.selector, id));
        om.challengeManifest{value: CHALLENGE_BOND}(ref);

        (uint256 late,,) = _commit(node, 1);
        vm.warp(block.timestamp + CHALLENGE_WINDOW / 2);
        vm.deal(stranger, CHALLENGE_BOND);
        vm.prank(stranger);
        vm.expectRevert(
            abi.encodeWithSelector(
                OmissionManager.ManifestWindowClosed.selector, _ref(late).committedAt + CHALLENGE_WINDOW / 2
            )
        );
        om.challengeManifest{value: CHALLENGE_BOND}(_ref(late));
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.UnknownManifestChallenge.selector, 99));
        om.manifestChallenges(99);
    }

    /// A claim opened late is due three quarters into the batch's window (not VOTE_WINDOW after
    /// the claim): the entries the answer lists can then still be claimed for availability, which
    /// closes with the window, so a node answering at the last moment cannot carry them past it.
    function test_Manifest_TheAnswerIsDueWhileTheEntriesCanStillBeClaimed() public {
        (uint256 b, Receipt[] memory rs,) = _commit(node, 3);
        uint256 committedAt = _ref(b).committedAt;
        vm.warp(committedAt + CHALLENGE_WINDOW / 2 - 1);
        uint256 id = _challengeManifest(validator1, b);
        uint256 deadline = om.manifestChallenges(id).deadline;
        assertEq(deadline, committedAt + CHALLENGE_WINDOW * 3 / 4, "due at three quarters, not a day later");
        vm.warp(deadline - 1);
        vm.prank(node, node);
        om.answerManifest(id, _ref(b), rs); // the last moment still answers
        vm.deal(validator1, CHALLENGE_BOND);
        vm.prank(validator1); // and an entry it listed can still be claimed for availability
        tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(b), 2);
        // an early claim has its full VOTE_WINDOW when that ends sooner
        (uint256 early,,) = _commit(node, 1);
        uint256 id2 = _challengeManifest(stranger, early);
        uint256 due = block.timestamp + VOTE_WINDOW;
        uint256 cap = _ref(early).committedAt + CHALLENGE_WINDOW * 3 / 4;
        assertEq(om.manifestChallenges(id2).deadline, due < cap ? due : cap);
    }

    /// The answer's cost is capped so the fee always burns: a huge batch cannot drain more than
    /// the bond from the claimant, and the claimant never gets back more than it posted.
    function testFuzz_Manifest_BondSplitBounded(uint8 size, uint64 basefee) public {
        uint256 n = bound(size, 1, 40);
        (uint256 b, Receipt[] memory rs,) = _commit(node, n);
        uint256 id = _challengeManifest(stranger, b);
        vm.fee(bound(basefee, 0, 1_000 gwei));
        vm.prank(node, node);
        om.answerManifest(id, _ref(b), rs);
        uint256 burned = CHALLENGE_BOND / 10;
        assertEq(om.claimable(node) + om.claimable(stranger) + burned, CHALLENGE_BOND, "the bond, no more");
        assertLe(om.claimable(node), CHALLENGE_BOND - burned);
    }

    /// The largest batch a node may commit (`TaskManager.MAX_BATCH_COUNT`, 512) is answerable in
    /// one transaction well inside a block, under the 128 KiB a public pool accepts, and the
    /// per-receipt gas the bond pays covers the work.
    function test_Manifest_ALargestBatchAnswerFitsABlock() public {
        uint256 n = tm.MAX_BATCH_COUNT();
        (uint256 b, Receipt[] memory rs,) = _commit(node, n);
        uint256 id = _challengeManifest(stranger, b);
        TaskManager.BatchRef memory ref = _ref(b);
        vm.prank(node, node);
        uint256 before = gasleft();
        om.answerManifest(id, ref, rs);
        uint256 used = before - gasleft();
        assertTrue(used < 15_000_000, "half a 30M block at most");
        bytes memory answer = abi.encodeCall(OmissionManager.answerManifest, (id, ref, rs));
        vm.assertLt(answer.length, 128 * 1024, "a transaction a geth or op-geth pool accepts");
        // execution only: the worst the deposit covers holds it and the calldata, at the floor too
        uint256 tokens = answer.length * 4; // at most 4 tokens a byte
        uint256 worst = used + 4 * tokens > 10 * tokens ? used + 4 * tokens : 10 * tokens;
        assertTrue(21_000 + worst < om.MANIFEST_WORST_GAS(), "the deposit covers the largest answer");
    }

    function _leaves(Receipt[] memory rs) internal pure returns (bytes32[] memory ls) {
        ls = new bytes32[](rs.length);
        for (uint256 i; i < rs.length; ++i) {
            ls[i] = _leaf(rs[i]);
        }
    }
}
