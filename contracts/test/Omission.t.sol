// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ServiceManager} from "../src/ServiceManager.sol";
import {OmissionManager} from "../src/OmissionManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, ReceiptPromise, TaskRequest} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Omission challenges: a node signs, with each receipt, a promise to commit it by a
///         time; a promise not kept is slashable, so a receipt left out of every batch (paid by
///         the voucher, never sampled) no longer escapes for free.
contract OmissionTest is Base {
    uint256 internal nodeKey;
    uint256 internal constant TASK = 7;

    function setUp() public override {
        super.setUp();
        nodeKey = privateKeyOf("node");
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
    }

    function _promise(Receipt memory r, uint256 commitBy) internal pure returns (ReceiptPromise memory p) {
        p = ReceiptPromise({requestHash: r.requestHash, leaf: _leaf(r), commitBy: commitBy});
    }

    /// The attack it closes: the node fakes the user's task, redeems the voucher, leaves the
    /// receipt out of its batches. At `commitBy` the user shows the promise; the node cannot show
    /// the receipt in any batch and is slashed; the user gets its bond and the challenger reward.
    function test_Omission_ABrokenPromiseIsSlashed() public {
        Receipt memory faked = _boundReceipt(TASK, user, node, 0.01 ether);
        uint256 commitBy = block.timestamp + 600;
        ReceiptPromise memory p = _promise(faked, commitBy);
        bytes memory sig = _signPromise(nodeKey, p);
        _commit(node, 2); // its other receipts

        vm.warp(commitBy);
        uint256 id = _claimOmission(user, p, sig, _request(TASK, user, node), faked);
        assertEq(sm.getNode(node).frozenCount, 1, "frozen until settled");
        OmissionManager.OmissionChallenge memory o = om.omissionChallenges(id);
        assertEq(o.node, node);
        assertEq(o.leaf, _leaf(faked));

        vm.warp(o.deadline - 1);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.AnswerWindowOpen.selector, o.deadline));
        om.resolveOmission(id);
        vm.warp(o.deadline);
        vm.prank(stranger); // anyone may resolve
        om.resolveOmission(id);
        uint256 reward = SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000;
        assertEq(sm.getOperator(node).stake, 2 ether - SLASH_AMOUNT, "slashed");
        assertEq(om.claimable(user), CHALLENGE_BOND + reward, "the user: bond + reward");
        assertEq(om.totalBurned(), SLASH_AMOUNT - reward);
        assertEq(sm.getNode(node).frozenCount, 0);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.OmissionNotOpen.selector, id));
        om.resolveOmission(id);
    }

    /// An honest node shows the receipt in a batch committed by `commitBy`: it keeps its stake
    /// and is paid what answering costs; the claim cannot be repeated.
    function test_Omission_AKeptPromiseIsAnswered() public {
        Receipt[] memory rs = new Receipt[](3);
        bytes32[] memory ls = new bytes32[](3);
        for (uint256 i; i < 3; ++i) {
            rs[i] = _boundReceipt(TASK + i, user, node, 0.001 ether);
            ls[i] = _leaf(rs[i]);
        }
        uint256 commitBy = block.timestamp + 600;
        ReceiptPromise memory p = _promise(rs[1], commitBy);
        bytes memory sig = _signPromise(nodeKey, p);
        uint256 b = _commitRoot(node, Merkle.root(ls), 3);

        vm.warp(commitBy + 10);
        uint256 id = _claimOmission(user, p, sig, _request(TASK + 1, user, node), rs[1]);
        bytes32[] memory proof = Merkle.proofAt(ls, 1);
        TaskManager.BatchRef memory ref = _ref(b);
        bytes32[] memory wrongProof = Merkle.proofAt(ls, 0);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.NotChallengedReceipt.selector, ls[1], ls[0]));
        om.answerOmission(id, ref, 0, rs[0], wrongProof); // another receipt of the batch
        vm.fee(10 gwei);
        vm.prank(node, node);
        om.answerOmission(id, ref, 1, rs[1], proof);
        uint256 cost = om.claimable(node); // its price: ClaimBond.costOfAnswer
        vm.assertGt(cost, 21_000 * 10 gwei, "the answer is paid");
        vm.assertLt(cost, om.ANSWER_GAS() * 10 gwei, "its own cost, below the worst the deposit covers");
        assertEq(om.claimable(user), CHALLENGE_BOND * 9 / 10 - cost, "the rest back, the fee burned");
        assertEq(sm.getOperator(node).stake, 2 ether);
        assertEq(sm.getNode(node).frozenCount, 0);
        assertTrue(om.omissionChallenges(id).status == OmissionManager.OmissionStatus.Answered);
        _claimAgainRefused(p, sig, _request(TASK + 1, user, node), rs[1], id);
    }

    function _claimAgainRefused(
        ReceiptPromise memory p,
        bytes memory sig,
        TaskRequest memory q,
        Receipt memory r,
        uint256 id
    ) internal {
        uint256 bond = om.omissionBond();
        vm.deal(user, bond);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseAlreadyChallenged.selector, id));
        om.challengeOmission{value: bond}(p, sig, q, r);
    }

    /// Committing after the promised time does not keep the promise: the answer is refused and
    /// the node is slashed (a node that commits late can be told from one that never commits only
    /// by trusting it).
    function test_Omission_CommittingLateBreaksThePromise() public {
        Receipt memory r = _boundReceipt(TASK, user, node, 0.001 ether);
        uint256 commitBy = block.timestamp + 600;
        ReceiptPromise memory p = _promise(r, commitBy);
        bytes memory sig = _signPromise(nodeKey, p);
        vm.warp(commitBy + 1);
        uint256 b = _commitRoot(node, _leaf(r), 1);
        uint256 id = _claimOmission(user, p, sig, _request(TASK, user, node), r);
        TaskManager.BatchRef memory ref = _ref(b);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.CommittedTooLate.selector, commitBy + 1, commitBy));
        om.answerOmission(id, ref, 0, r, new bytes32[](0));
        vm.warp(om.omissionChallenges(id).deadline);
        om.resolveOmission(id);
        assertEq(sm.getOperator(node).slashCount, 1);
    }

    /// Another node's batch holding the same leaf is not this node's commitment.
    function test_RevertWhen_AnsweredWithAnotherNodesBatch() public {
        _registerNode(node2, 2 ether);
        Receipt memory r = _boundReceipt(TASK, user, node, 0.001 ether);
        ReceiptPromise memory p = _promise(r, block.timestamp + 600);
        bytes memory sig = _signPromise(nodeKey, p);
        uint256 b = _commitRoot(node2, _leaf(r), 1);
        vm.warp(p.commitBy);
        uint256 id = _claimOmission(user, p, sig, _request(TASK, user, node), r);
        TaskManager.BatchRef memory ref = _ref(b);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.UnknownBatch.selector, b));
        om.answerOmission(id, ref, 0, r, new bytes32[](0));
    }

    /// Only the request's own user, with the node's real signature, within the window after
    /// `commitBy`, with the exact bond: anything else is refused and changes nothing.
    function test_RevertWhen_ChallengeOmissionBadInput() public {
        Receipt memory r = _boundReceipt(TASK, user, node, 0.001 ether);
        uint256 commitBy = block.timestamp + 600;
        ReceiptPromise memory p = _promise(r, commitBy);
        bytes memory sig = _signPromise(nodeKey, p);
        TaskRequest memory q = _request(TASK, user, node);
        vm.deal(user, 1 ether);
        vm.deal(stranger, 1 ether);

        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseNotDue.selector, commitBy));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);

        vm.warp(commitBy);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.WrongBond.selector, 1, CHALLENGE_BOND));
        om.challengeOmission{value: 1}(p, sig, q, r);

        // a node's ally (or anyone) cannot claim a real user's promise and take the reward
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.NotTheRequestsUser.selector, user));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);

        // a promise signed by someone else than the request's node
        bytes memory forged = _signPromise(userKey, p);
        vm.prank(user);
        vm.expectRevert(OmissionManager.NotTheNodesPromise.selector);
        om.challengeOmission{value: CHALLENGE_BOND}(p, forged, q, r);

        // a receipt other than the promised one (another leaf), or of another request
        Receipt memory otherReceipt = _boundReceipt(TASK + 1, user, node, 0.001 ether);
        vm.prank(user);
        vm.expectRevert(OmissionManager.NotThePromisedReceipt.selector);
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, otherReceipt);

        // another request than the promise's
        TaskRequest memory other = _request(TASK + 1, user, node);
        bytes32 otherHash = payments.hashTaskRequest(other);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.NotTheRequest.selector, p.requestHash, otherHash));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, other, r);

        vm.warp(commitBy + CHALLENGE_WINDOW);
        vm.prank(user);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.PromiseExpired.selector, commitBy + CHALLENGE_WINDOW));
        om.challengeOmission{value: CHALLENGE_BOND}(p, sig, q, r);

        assertEq(om.omissionCount(), 0);
        assertEq(sm.getNode(node).frozenCount, 0);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.UnknownOmission.selector, 1));
        om.omissionChallenges(1);
    }

    /// A frozen node cannot withdraw unbonded stake while the claim is open, so it cannot leave
    /// before the verdict.
    function test_Omission_WithdrawalBlockedWhileOpen() public {
        Receipt memory r = _boundReceipt(TASK, user, node, 0.001 ether);
        ReceiptPromise memory p = _promise(r, block.timestamp + 600);
        bytes memory sig = _signPromise(nodeKey, p);
        vm.prank(node, node);
        sm.requestUnbond(1 ether);
        vm.warp(p.commitBy);
        _claimOmission(user, p, sig, _request(TASK, user, node), r);
        vm.warp(block.timestamp + UNBONDING_PERIOD); // unbonded, but frozen until resolved
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, uint32(1)));
        sm.withdrawUnbonded();
    }
}
