// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {TaskManager} from "../src/TaskManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Availability challenges: a node that withholds an entry's receipt or trace is slashed
///         unless the data goes on chain; a node that answers keeps its stake and is paid the bond;
///         answering late cannot shorten the fraud-challenge window; proofs bind positions.
contract AvailabilityTest is Base {
    uint256 internal batchId;
    Receipt[] internal rs;
    bytes32[] internal leaves;

    function setUp() public override {
        super.setUp();
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 id, Receipt[] memory receipts, bytes32[] memory ls) = _commit(node, 5);
        batchId = id;
        for (uint256 i; i < receipts.length; ++i) {
            rs.push(receipts[i]);
            leaves.push(ls[i]);
        }
    }

    function _challengeAvailability(address who, uint256 index) internal returns (uint256) {
        return _claimAvailability(who, batchId, index);
    }

    function _answer(uint256 id, uint256 index) internal {
        vm.prank(node, node);
        tm.answerAvailability(id, _ref(batchId), rs[index], Merkle.proofAt(leaves, index), _trace(index));
    }

    function test_Availability_AnsweredNodeKeepsStakeAndIsPaidItsCost() public {
        uint256 id = _challengeAvailability(stranger, 3); // anyone may ask, users too
        assertEq(sm.getNode(node).frozenCount, 1, "frozen while open");
        vm.fee(10 gwei); // the block's base fee prices the answer
        uint256 burned = CHALLENGE_BOND / 10;
        vm.expectEmit(address(tm));
        emit TaskManager.AvailabilityAnswered(id, batchId, 3, rs[3], Merkle.proofAt(leaves, 3), _trace(3));
        vm.txGasPrice(1000 gwei); // a gas price the node picks changes nothing
        vm.recordLogs();
        _answer(id, 3);
        uint256 cost = _paidForLastAnswer();
        vm.assertGt(cost, 21_000 * 10 gwei, "at least the transaction's base cost, at the base fee");
        vm.assertLt(cost, 400_000 * 10 gwei, "a small trace's answer, priced by its own gas");
        assertTrue(tm.availabilityChallenges(id).status == TaskManager.AvailabilityStatus.Answered);
        assertEq(tm.claimable(node), cost, "the false claim pays for the answer, no more");
        assertEq(tm.claimable(stranger), CHALLENGE_BOND - burned - cost, "the claimant gets the rest back");
        assertEq(BURN.balance, burned);
        assertEq(sm.getNode(node).frozenCount, 0);
        assertEq(sm.getOperator(node).stake, 2 ether);
        assertEq(tm.answeredAt(keccak256(abi.encode(batchId, uint256(3)))), block.timestamp);
    }

    function test_Availability_UnansweredIsSlashed() public {
        uint256 id = _challengeAvailability(validator1, 0);
        vm.warp(block.timestamp + VOTE_WINDOW - 1); // the answer window is [opened, deadline)
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.AnswerWindowOpen.selector, tm.availabilityChallenges(id).deadline)
        );
        tm.resolveAvailability(id);
        vm.warp(block.timestamp + 1);
        uint256 burnedBefore = BURN.balance;
        vm.prank(stranger); // anyone may resolve
        tm.resolveAvailability(id);
        assertEq(sm.getOperator(node).stake, 2 ether - SLASH_AMOUNT);
        assertEq(sm.getNode(node).slashCount, 1);
        // opened in the commit block, before the seed: nobody was sampled, so no reward
        assertFalse(tm.availabilityChallenges(id).sampled);
        assertEq(tm.claimable(validator1), CHALLENGE_BOND, "bond back, no reward");
        assertEq(BURN.balance - burnedBefore, SLASH_AMOUNT, "the whole slash burns");
        assertEq(sm.getNode(node).frozenCount, 0);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityNotOpen.selector, id));
        tm.resolveAvailability(id);
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityAlreadyOpen.selector, id));
        tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(batchId), 0); // one slash per withheld entry
    }

    /// The challenger reward goes only to a challenger the seed picked for the entry: an ally of
    /// a node that withholds a faked trace cannot recover part of the slash by claiming first.
    function test_Availability_OnlyASampledChallengerEarnsTheReward() public {
        _deployDevnet(); // every entry sampled for every validator once the seed exists
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 b,,) = _commit(node, 2);
        _rollSealed(block.number + 2); // the seed block (devnet: commit + 1) is mined
        vm.deal(validator1, validator1.balance + CHALLENGE_BOND);
        vm.prank(validator1);
        uint256 id = tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(b), 1);
        assertTrue(tm.availabilityChallenges(id).sampled);
        vm.warp(tm.availabilityChallenges(id).deadline);
        tm.resolveAvailability(id);
        uint256 reward = SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000;
        assertEq(tm.claimable(validator1), CHALLENGE_BOND + reward);
        assertEq(tm.totalBurned(), SLASH_AMOUNT - reward);
    }

    /// A node that withholds data to bait availability challenges, then answers, gains nothing: it
    /// is paid what answering cost, never more, however high the base fee (the cost is capped so
    /// the claimant never pays more than its deposit: the bond plus the costliest answer at the
    /// claim's base fee). When it was paid the whole bond, each validator it baited paid it
    /// 0.1 ether.
    function test_Attack_BaitingAvailabilityChallengesPaysOnlyTheAnswersCost() public {
        uint256 id = _challengeAvailability(validator1, 1);
        vm.fee(1 gwei);
        uint256 nodeGas = 300_000 + _trace(1).length * 40; // generous: the answer's real gas
        uint256 before = tm.claimable(node);
        _answer(id, 1);
        uint256 paid = tm.claimable(node) - before;
        assertLe(paid, nodeGas * 1 gwei); // no profit over the answer's cost
        assertGe(CHALLENGE_BOND - tm.claimable(validator1), paid); // the claimant covered it

        uint256 id2 = _challengeAvailability(validator1, 2);
        uint256 deposit = tm.availabilityChallenges(id2).deposit;
        assertEq(deposit, CHALLENGE_BOND + tm.AVAILABILITY_WORST_GAS() * 1 gwei, "priced at the claim's base fee");
        vm.fee(1_000_000 gwei); // an absurd base fee: the cost is capped
        _answer(id2, 2);
        assertEq(
            tm.claimable(node) - before - paid, deposit - CHALLENGE_BOND / 10, "capped at the deposit less the fee"
        );
    }

    function test_RevertWhen_AnswerIsNotTheCommittedData() public {
        uint256 id = _challengeAvailability(validator1, 2);
        bytes32[] memory proof = Merkle.proofAt(leaves, 2);
        bytes memory wrongTrace = _trace(7);
        vm.startPrank(node, node);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.TraceMismatch.selector, rs[2].traceHash, sha256(wrongTrace)));
        tm.answerAvailability(id, _ref(batchId), rs[2], proof, wrongTrace);
        bytes memory trace1 = _trace(1);
        bytes32[] memory proof1 = Merkle.proofAt(leaves, 1);
        vm.expectRevert(TaskManager.InvalidProof.selector); // another entry's data, however valid
        tm.answerAvailability(id, _ref(batchId), rs[1], proof1, trace1);
        vm.stopPrank();
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        uint64 deadline = tm.availabilityChallenges(id).deadline;
        bytes memory trace2 = _trace(2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AnswerWindowClosed.selector, deadline));
        vm.prank(node, node);
        tm.answerAvailability(id, _ref(batchId), rs[2], proof, trace2);
    }

    function test_RevertWhen_ChallengeAvailabilityBadInput() public {
        vm.deal(validator1, 1 ether);
        vm.startPrank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongBond.selector, 1 wei, CHALLENGE_BOND));
        tm.challengeAvailability{value: 1 wei}(_ref(batchId), 0);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.IndexOutOfRange.selector, 5, 5));
        tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(batchId), 5);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownBatch.selector, 99));
        tm.challengeAvailability{value: CHALLENGE_BOND}(_refOf(99, node, 0, 1, keccak256("no such batch")), 0);
        uint256 id = tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(batchId), 1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityAlreadyOpen.selector, id));
        tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(batchId), 1);
        vm.stopPrank();
        _answer(id, 1);
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AlreadyAnswered.selector, batchId, 1));
        tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(batchId), 1);
        uint256 deadline = block.timestamp + CHALLENGE_WINDOW;
        vm.warp(deadline + 1);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeWindowClosed.selector, deadline));
        tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(batchId), 2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownAvailabilityChallenge.selector, 42));
        tm.availabilityChallenges(42);
    }

    function test_Availability_WithdrawalBlockedWhileOpen() public {
        vm.prank(node, node);
        sm.requestUnbond(2 ether);
        _challengeAvailability(validator1, 4);
        vm.warp(block.timestamp + UNBONDING_PERIOD + 1);
        vm.prank(node, node);
        vm.expectRevert();
        sm.withdrawUnbonded();
    }

    function test_LateAnswerKeepsAFullFraudWindow() public {
        uint256 committedAt = block.timestamp;
        vm.warp(committedAt + CHALLENGE_WINDOW - 1); // the last second of the batch's window
        uint256 id = _challengeAvailability(validator1, 2);
        vm.warp(block.timestamp + VOTE_WINDOW - 1); // the node answers at the last moment
        _answer(id, 2);
        uint256 answered = block.timestamp;
        assertGe(sm.getOperator(node).lockedUntil, answered + CHALLENGE_WINDOW);
        bytes32[] memory proof = Merkle.proofAt(leaves, 2);
        vm.warp(answered + CHALLENGE_WINDOW - 1);
        _challenge(validator1, batchId, 2, rs[2], proof); // the posted entry is still challengeable
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.ChallengeWindowClosed.selector, committedAt + CHALLENGE_WINDOW)
        );
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 3, rs[3], Merkle.proofAt(leaves, 3), ""); // others are not
    }

    function test_RevertWhen_FraudChallengeNamesAnotherPosition() public {
        bytes32[] memory proof = Merkle.proofAt(leaves, 1);
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(TaskManager.InvalidProof.selector);
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 2, rs[1], proof, "");
    }
}
