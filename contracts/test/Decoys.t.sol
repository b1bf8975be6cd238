// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Payments} from "../src/Payments.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, TaskRequest} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Validators paid for honest work (docs/security-parameters.md, "Paying validators"):
///         a node's decoys, found by a sampled validator, pay that validator a bounty from the
///         node's verification escrow instead of slashing anyone; a node cannot dress up a
///         faulty answer it served to a real user as a decoy, nor keep the bounty from the
///         validator that found it.
contract DecoysTest is Base {
    address internal decoyUser;
    uint256 internal decoyKey;
    uint256 internal batchId;
    Receipt[] internal rs;
    bytes32[] internal leaves;

    uint256 internal constant DECOY_INDEX = 2;
    uint256 internal constant REAL_INDEX = 1;
    uint256 internal constant ESCROW = 5 * DECOY_BOUNTY;

    function setUp() public override {
        super.setUp();
        _deployDevnet(); // every receipt sampled for every validator, seed one block after the commit
        decoyUser = makeAddr("decoy");
        decoyKey = privateKeyOf("decoy");
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        vm.deal(node, node.balance + ESCROW);
        vm.prank(node, node);
        payments.fundEscrow{value: ESCROW}(node);

        for (uint256 i; i < 4; ++i) {
            Receipt memory r = _boundReceipt(i, i == DECOY_INDEX ? decoyUser : user, node, 0.001 ether);
            rs.push(r);
            leaves.push(_leaf(r));
        }
        batchId = _commitRoot(node, Merkle.root(leaves), 4);
        _rollSealed(block.number + 2); // the seed block is mined: sampling is known
    }

    function _challengeAt(address who, uint256 index) internal returns (uint256) {
        return _challenge(who, batchId, index, rs[index], Merkle.proofAt(leaves, index));
    }

    /// @dev The request of entry `i` of the setUp batch.
    function _req(uint256 i) internal view returns (TaskRequest memory) {
        return _request(i, i == DECOY_INDEX ? decoyUser : user, node);
    }

    function _decoySig(uint256 key, address forNode, bytes32 requestHash) internal view returns (bytes memory) {
        return signDigest(key, payments.hashDecoy(forNode, requestHash));
    }

    function _bountySplit() internal pure returns (uint256 bounty, uint256 rebate) {
        rebate = DECOY_BOUNTY * DECOY_REBATE_BPS / 10_000;
        bounty = DECOY_BOUNTY - rebate;
    }

    function test_Decoy_FoundBySampledValidatorPaysTheBountyAndSlashesNobody() public {
        uint256 id = _challengeAt(validator1, DECOY_INDEX);
        assertTrue((tm.challenges(id).sampled != TaskManager.Pick.None), "the devnet samples every receipt");
        _vote(validator2, id, true); // another checker agrees before the reveal
        (uint256 bounty, uint256 rebate) = _bountySplit();

        vm.expectEmit(address(tm));
        emit TaskManager.DecoyRevealed(id, node, validator1, bounty, rebate);
        bytes memory decoySig1 = _decoySig(decoyKey, node, rs[DECOY_INDEX].requestHash);
        vm.prank(node, node);
        tm.revealDecoy(id, rs[DECOY_INDEX], _req(DECOY_INDEX), decoySig1);

        assertTrue(tm.challenges(id).status == TaskManager.ChallengeStatus.Decoy);
        assertEq(tm.claimable(validator1), CHALLENGE_BOND + bounty, "bond back plus the bounty");
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings, rebate, "the node's rebate");
        assertEq(escrow, ESCROW - DECOY_BOUNTY);
        assertEq(sm.getOperator(node).stake, 2 ether, "nobody is slashed");
        assertEq(sm.getNode(node).frozenCount, 0, "unfrozen");
        assertEq(address(tm).balance, 2 * CHALLENGE_BOND + bounty, "with validator2's vote bond");

        // The challenge is closed: no vote, no resolution, no voter pool (a voter gets its vote
        // bond back, nothing more), no second challenge.
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.resolve(id);
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND, "the vote bond back");
        vm.expectRevert(TaskManager.RewardAlreadyClaimed.selector);
        vm.prank(validator2);
        tm.claimVoteReward(id);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        vm.prank(validator3);
        tm.claimVoteReward(id);
        vm.deal(validator2, CHALLENGE_BOND);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(
            _ref(batchId), DECOY_INDEX, rs[DECOY_INDEX], Merkle.proofAt(leaves, DECOY_INDEX), ""
        );

        uint256 before = validator1.balance;
        vm.prank(validator1);
        tm.withdraw();
        assertEq(validator1.balance - before, CHALLENGE_BOND + bounty);
    }

    /// @dev A voter whose stake left after it sealed opens a vote that weighs nothing; when the
    ///      challenge then turns out a decoy, its vote bond still comes back (it was stuck: the
    ///      decoy rule read a zero weight as "never voted"; review of the vote client).
    function test_Decoy_AVoterWhoseStakeLeftStillGetsItsVoteBondBack() public {
        uint256 id = _challengeAt(validator1, DECOY_INDEX);
        _commitVote(validator2, id, true);
        vm.prank(validator2);
        sm.deregister();
        vm.warp(_revealsAt(id));
        _revealVote(validator2, id, true);
        assertEq(tm.getVote(id, validator2).weight, 0, "its stake left: its opened vote weighs nothing");
        bytes memory sig = _decoySig(decoyKey, node, rs[DECOY_INDEX].requestHash);
        vm.prank(node, node);
        tm.revealDecoy(id, rs[DECOY_INDEX], _req(DECOY_INDEX), sig);
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND, "its vote bond back");
    }

    /// @dev The attack the Decoy signature stops: the node served a faulty answer to `user` and,
    ///      caught, claims the receipt was a decoy. Only the receipt's user can sign a Decoy, so the
    ///      claim fails with any other key (the node's, its decoy account's) and the vote slashes.
    function test_RevertWhen_NodeCallsARealUsersReceiptADecoy() public {
        uint256 id = _challengeAt(validator1, REAL_INDEX);
        bytes32 requestHash = rs[REAL_INDEX].requestHash;
        uint256 nodeKey = privateKeyOf("node");
        uint256[2] memory keys = [decoyKey, nodeKey];
        for (uint256 i; i < keys.length; ++i) {
            bytes memory sig = _decoySig(keys[i], node, requestHash);
            vm.prank(node, node);
            vm.expectRevert(TaskManager.NotADecoy.selector);
            tm.revealDecoy(id, rs[REAL_INDEX], _req(REAL_INDEX), sig);
        }
        // Nor by pairing the challenge with the decoy's receipt and signature.
        bytes memory decoySig = _decoySig(decoyKey, node, rs[DECOY_INDEX].requestHash);
        vm.prank(node, node);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.NotChallengedReceipt.selector, leaves[REAL_INDEX], leaves[DECOY_INDEX])
        );
        tm.revealDecoy(id, rs[DECOY_INDEX], _req(DECOY_INDEX), decoySig);
        // Malformed signatures are refused the same way.
        vm.prank(node, node);
        vm.expectRevert(TaskManager.NotADecoy.selector);
        tm.revealDecoy(id, rs[REAL_INDEX], _req(REAL_INDEX), hex"1234");

        _vote(validator2, id, true);
        vm.warp(block.timestamp + 30);
        assertTrue(tm.resolve(id), "fraud");
        assertEq(sm.getOperator(node).stake, 2 ether - SLASH_AMOUNT);
        (, uint256 escrow) = payments.account(node);
        assertEq(escrow, ESCROW, "no bounty on a real fraud");
    }

    /// @dev A Decoy signature names its node: one signed for another node (or on another
    ///      deployment: the EIP-712 domain) does not count here.
    function test_RevertWhen_DecoySignedForAnotherNode() public {
        uint256 id = _challengeAt(validator1, DECOY_INDEX);
        bytes memory sig = _decoySig(decoyKey, node2, rs[DECOY_INDEX].requestHash);
        vm.prank(node, node);
        vm.expectRevert(TaskManager.NotADecoy.selector);
        tm.revealDecoy(id, rs[DECOY_INDEX], _req(DECOY_INDEX), sig);
    }

    function test_RevertWhen_RevealLateTwiceOrUnknown() public {
        uint256 id = _challengeAt(validator1, DECOY_INDEX);
        bytes memory sig = _decoySig(decoyKey, node, rs[DECOY_INDEX].requestHash);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownChallenge.selector, id + 1));
        tm.revealDecoy(id + 1, rs[DECOY_INDEX], _req(DECOY_INDEX), sig);

        uint256 snapshot = vm.snapshotState();
        _vote(validator2, id, true);
        vm.warp(block.timestamp + 30); // the vote window is [opened, deadline)
        vm.expectRevert(abi.encodeWithSelector(TaskManager.VoteWindowClosed.selector, tm.challenges(id).voteDeadline));
        tm.revealDecoy(id, rs[DECOY_INDEX], _req(DECOY_INDEX), sig);
        // Unrevealed, the decoy is judged as any receipt: the node that kept quiet is slashed.
        assertTrue(tm.resolve(id));
        vm.revertToState(snapshot);

        // Only the node reveals: not the decoy account, not anyone else holding the signature.
        address[2] memory others = [decoyUser, stranger];
        for (uint256 i; i < others.length; ++i) {
            vm.prank(others[i]);
            vm.expectRevert(TaskManager.OnlyChallengedNode.selector);
            tm.revealDecoy(id, rs[DECOY_INDEX], _req(DECOY_INDEX), sig);
        }
        vm.prank(node, node);
        tm.revealDecoy(id, rs[DECOY_INDEX], _req(DECOY_INDEX), sig);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.revealDecoy(id, rs[DECOY_INDEX], _req(DECOY_INDEX), sig);
    }

    /// @dev A friend the node told where its decoys are collects only where it was sampled: a
    ///      challenge before the seed is known (or by a validator not sampled) gets its bond back
    ///      and nothing from the escrow.
    function test_Decoy_UnsampledChallengerGetsOnlyItsBond() public {
        Receipt[] memory batch = new Receipt[](2);
        bytes32[] memory ls = new bytes32[](2);
        batch[0] = _boundReceipt(10, decoyUser, node, 0.001 ether);
        batch[1] = _receipt(11, user, 0.001 ether);
        ls[0] = _leaf(batch[0]);
        ls[1] = _leaf(batch[1]);
        uint256 early = _commitRoot(node, Merkle.root(ls), 2);
        uint256 id = _challenge(validator1, early, 0, batch[0], Merkle.proofAt(ls, 0)); // same block: no seed yet
        assertFalse((tm.challenges(id).sampled != TaskManager.Pick.None));
        bytes memory decoySig2 = _decoySig(decoyKey, node, batch[0].requestHash);
        vm.prank(node, node);
        tm.revealDecoy(id, batch[0], _request(10, decoyUser, node), decoySig2);
        assertEq(tm.claimable(validator1), CHALLENGE_BOND);
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings, 0);
        assertEq(escrow, ESCROW);
    }

    /// @dev An empty escrow pays no bounty: the reveal still returns the bond and frees the node.
    function test_Decoy_EmptyEscrowPaysOnlyTheBond() public {
        for (uint256 i; i < 5; ++i) {
            Receipt memory r = _boundReceipt(100 + i, decoyUser, node, 0.001 ether);
            bytes32[] memory one = new bytes32[](1);
            one[0] = _leaf(r);
            uint256 b = _commitRoot(node, one[0], 1);
            _rollSealed(block.number + 2);
            uint256 id = _challenge(validator1, b, 0, r, new bytes32[](0));
            bytes memory decoySig3 = _decoySig(decoyKey, node, r.requestHash);
            vm.prank(node, node);
            tm.revealDecoy(id, r, _request(100 + i, decoyUser, node), decoySig3);
        }
        (, uint256 escrow) = payments.account(node);
        assertEq(escrow, 0, "the escrow covered exactly five bounties");
        (uint256 bounty,) = _bountySplit();
        assertEq(tm.claimable(validator1), 5 * (CHALLENGE_BOND + bounty));

        uint256 id2 = _challengeAt(validator1, DECOY_INDEX);
        bytes memory decoySig4 = _decoySig(decoyKey, node, rs[DECOY_INDEX].requestHash);
        vm.prank(node, node);
        tm.revealDecoy(id2, rs[DECOY_INDEX], _req(DECOY_INDEX), decoySig4);
        assertEq(tm.claimable(validator1), 5 * (CHALLENGE_BOND + bounty) + CHALLENGE_BOND);
    }

    /// @dev Only the TaskManager moves escrow, and only Payments and the ServiceManager send it ETH.
    function test_RevertWhen_EthFromOthersOrBountyFromOthers() public {
        vm.prank(node, node);
        vm.expectRevert(Payments.OnlyTaskManager.selector);
        payments.payBounty(node);
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        (bool ok,) = address(tm).call{value: 1}("");
        assertFalse(ok);
    }
}
