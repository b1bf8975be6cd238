// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {IServiceManager} from "../src/interfaces/IServiceManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base, Rejecter} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

contract TaskManagerTest is Base {
    bytes32 internal constant SEED_HASH = keccak256("block 102");

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    function test_Constructor_SetsParameters() public view {
        assertEq(address(tm.SERVICE_MANAGER()), address(sm));
        assertEq(tm.SEED_DELAY_BLOCKS(), SEED_DELAY_BLOCKS);
        assertEq(tm.SAMPLE_RATE_PPM(), SAMPLE_RATE_PPM);
        assertEq(tm.CHALLENGE_WINDOW(), CHALLENGE_WINDOW);
        assertEq(tm.VOTE_WINDOW(), VOTE_WINDOW);
        assertEq(tm.CHALLENGE_BOND(), CHALLENGE_BOND);
        assertEq(tm.QUORUM_BPS(), QUORUM_BPS);
        assertEq(tm.SLASH_AMOUNT(), SLASH_AMOUNT);
        assertEq(tm.CHALLENGER_REWARD_BPS(), CHALLENGER_REWARD_BPS);
        assertEq(tm.VOTER_REWARD_BPS(), VOTER_REWARD_BPS);
    }

    function _newTm(uint256 seedDelay, uint256 rate, uint256 quorum, uint256 cr, uint256 vr)
        internal
        returns (TaskManager)
    {
        return new TaskManager(IServiceManager(address(sm)), seedDelay, rate, 1, 1, 1, quorum, 1, cr, vr);
    }

    function test_RevertWhen_ConstructorParameterInvalid() public {
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(0, 1, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(257, 1, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1, 0, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1, 1_000_001, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1, 1, 0, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1, 1, 10_001, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1, 1, 1, 6_000, 4_001);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(IServiceManager(address(0)), 1, 1, 1, 1, 1, 1, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(IServiceManager(address(sm)), 1, 1, 0, 1, 1, 1, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(IServiceManager(address(sm)), 1, 1, 1, 0, 1, 1, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(IServiceManager(address(sm)), 1, 1, 1, 1, 0, 1, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(IServiceManager(address(sm)), 1, 1, 1, 1, 1, 1, 0, 0, 0);
    }

    function test_RevertWhen_EthFromOthers() public {
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        (bool ok, bytes memory ret) = address(tm).call{value: 1 ether}("");
        assertFalse(ok);
        assertEq(bytes4(ret), TaskManager.OnlyServiceManager.selector);
    }

    /*//////////////////////////////////////////////////////////////
                                BATCHES
    //////////////////////////////////////////////////////////////*/

    function test_CommitBatch() public {
        _registerNode(node, 1 ether);
        (, bytes32[] memory leaves) = _receipts(3);
        bytes32 root = Merkle.root(leaves);
        vm.expectEmit(address(tm));
        emit TaskManager.BatchCommitted(1, node, root, 3, block.number, "bafymanifest");
        vm.prank(node);
        uint256 id = tm.commitBatch(root, 3, "bafymanifest");
        assertEq(id, 1);
        assertEq(tm.batchCount(), 1);
        TaskManager.Batch memory b = tm.batches(1);
        assertEq(b.node, node);
        assertEq(b.root, root);
        assertEq(b.count, 3);
        assertEq(b.commitBlock, block.number);
        assertEq(b.committedAt, block.timestamp);
        assertEq(sm.getNode(node).lockedUntil, block.timestamp + CHALLENGE_WINDOW);

        vm.prank(node);
        assertEq(tm.commitBatch(root, 3, ""), 2, "sequential ids");
    }

    function test_BatchCount_StartsAtZero() public view {
        assertEq(tm.batchCount(), 0);
    }

    /// @dev commitBatch writes the first slot of a Batch in one packed word: every field must
    ///      read back exactly, whatever the bit patterns.
    function testFuzz_CommitBatch_PacksFields(bytes32 root, uint32 count, uint32 blockNo, uint32 time) public {
        vm.assume(root != bytes32(0) && count != 0);
        _registerNode(node, 1 ether);
        vm.roll(blockNo);
        vm.warp(time);
        vm.prank(node);
        uint256 id = tm.commitBatch(root, count, "bafymanifest");
        TaskManager.Batch memory b = tm.batches(id);
        assertEq(b.node, node);
        assertEq(b.count, count);
        assertEq(b.commitBlock, blockNo);
        assertEq(b.committedAt, time);
        assertEq(b.root, root);
        assertEq(tm.batchCount(), id);
        assertEq(sm.getNode(node).lockedUntil, uint256(time) + CHALLENGE_WINDOW);
    }

    function test_RevertWhen_CommitBatchBeforeWiring() public {
        ServiceManager unwired = new ServiceManager(MIN_NODE_STAKE, MIN_VALIDATOR_STAKE, UNBONDING_PERIOD, MAX_MODELS);
        TaskManager lone = new TaskManager(
            IServiceManager(address(unwired)), 2, 100_000, 1 days, 1 days, 0.1 ether, 3_000, 1 ether, 2_000, 2_000
        );
        vm.deal(node, 1 ether);
        vm.prank(node);
        unwired.registerNode{value: 1 ether}(ENDPOINT, _models(), 1);
        vm.prank(node);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        lone.commitBatch(keccak256("r"), 1, "");
        assertEq(lone.batchCount(), 0);
    }

    function test_RevertWhen_CommitBatchEmpty() public {
        _registerNode(node, 1 ether);
        vm.startPrank(node);
        vm.expectRevert(TaskManager.EmptyBatch.selector);
        tm.commitBatch(keccak256("r"), 0, "");
        vm.expectRevert(TaskManager.EmptyBatch.selector);
        tm.commitBatch(bytes32(0), 1, "");
        vm.stopPrank();
    }

    function test_RevertWhen_CommitBatchNotActiveNode() public {
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotActiveNode.selector);
        tm.commitBatch(keccak256("r"), 1, "");

        _registerNode(node, 1 ether);
        vm.prank(node);
        sm.requestUnbond(0.5 ether);
        vm.prank(node);
        vm.expectRevert(TaskManager.NotActiveNode.selector);
        tm.commitBatch(keccak256("r"), 1, "");
    }

    function test_RevertWhen_BatchesUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownBatch.selector, 1));
        tm.batches(1);
    }

    /*//////////////////////////////////////////////////////////////
                                SAMPLING
    //////////////////////////////////////////////////////////////*/

    function _committedBatch() internal returns (uint256 batchId) {
        _registerNode(node, 1 ether);
        (batchId,,) = _commit(node, 4); // block 100, seed block 102
    }

    /// @dev Mines up to `height` (> 102) with SEED_HASH as the hash of block 102.
    function _rollPastSeed(uint256 height) internal {
        vm.roll(height);
        vm.setBlockhash(102, SEED_HASH);
    }

    function test_BatchSeed_FollowsProtocol() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        assertEq(tm.batchSeed(batchId), keccak256(abi.encode(SEED_HASH, batchId)));
    }

    function test_RevertWhen_BatchSeedNotReady() public {
        uint256 batchId = _committedBatch();
        vm.roll(102);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SeedNotReady.selector, 102));
        tm.batchSeed(batchId);
    }

    function test_RevertWhen_BatchSeedExpired() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(102 + 8192);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SeedExpired.selector, 102));
        tm.batchSeed(batchId);
    }

    function test_RevertWhen_BatchSeedUnknownBatch() public {
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownBatch.selector, 9));
        tm.batchSeed(9);
    }

    function test_SealSeed_SurvivesExpiry() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        bytes32 expected = keccak256(abi.encode(SEED_HASH, batchId));
        vm.expectEmit(address(tm));
        emit TaskManager.SeedSealed(batchId, expected);
        assertEq(tm.sealSeed(batchId), expected);
        vm.roll(102 + 100_000);
        assertEq(tm.batchSeed(batchId), expected);
    }

    function test_RevertWhen_SealSeedTwice() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        tm.sealSeed(batchId);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SeedAlreadySealed.selector, batchId));
        tm.sealSeed(batchId);
    }

    function test_RevertWhen_SealSeedNotReady() public {
        uint256 batchId = _committedBatch();
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SeedNotReady.selector, 102));
        tm.sealSeed(batchId);
    }

    function test_IsSampled_FollowsProtocol() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        bytes32 seed = keccak256(abi.encode(SEED_HASH, batchId));
        uint256 hits;
        for (uint256 i; i < 4; ++i) {
            bool expected = uint256(keccak256(abi.encode(seed, validator1, i))) % 1_000_000 < SAMPLE_RATE_PPM;
            assertEq(tm.isSampled(batchId, validator1, i), expected);
            if (expected) ++hits;
        }
        hits;
    }

    function test_RevertWhen_IsSampledIndexOutOfRange() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.IndexOutOfRange.selector, 4, 4));
        tm.isSampled(batchId, validator1, 4);
    }

    function test_IsSampled_DevnetSamplesEverything() public {
        _deployDevnet();
        _registerNode(node, 1 ether);
        (uint256 batchId,,) = _commit(node, 4);
        vm.roll(102);
        vm.setBlockhash(101, SEED_HASH);
        for (uint256 i; i < 4; ++i) {
            assertTrue(tm.isSampled(batchId, validator1, i));
        }
    }

    /*//////////////////////////////////////////////////////////////
                               CHALLENGES
    //////////////////////////////////////////////////////////////*/

    function test_HashReceipt_MatchesProtocol() public view {
        Receipt memory r = _receipt(1, user, 5);
        assertEq(tm.hashReceipt(r), keccak256(bytes.concat(keccak256(abi.encode(r)))));
    }

    function test_Challenge_OpensFreezesAndVotes() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 4);
        bytes32[] memory proof = Merkle.proof(leaves, leaves[2]);
        uint64 deadline = uint64(block.timestamp + VOTE_WINDOW);

        vm.deal(validator1, CHALLENGE_BOND);
        vm.expectEmit(address(tm));
        emit TaskManager.Voted(1, validator1, true, 1 ether);
        vm.expectEmit(address(tm));
        emit TaskManager.ChallengeOpened(1, batchId, validator1, node, leaves[2], rs[2].requestHash, deadline, "ev");
        vm.prank(validator1);
        uint256 id = tm.challenge{value: CHALLENGE_BOND}(batchId, 2, rs[2], proof, "ev");

        assertEq(id, 1);
        assertEq(tm.challengeCount(), 1);
        TaskManager.Challenge memory c = tm.challenges(id);
        assertEq(c.batchId, batchId);
        assertEq(c.challenger, validator1);
        assertEq(c.node, node);
        assertEq(c.user, user);
        assertEq(c.fee, rs[2].fee);
        assertEq(c.leaf, leaves[2]);
        assertEq(c.fraudStake, 1 ether);
        assertEq(c.voteDeadline, deadline);
        assertTrue(c.status == TaskManager.ChallengeStatus.Open);
        TaskManager.VoteRecord memory rec = tm.getVote(id, validator1);
        assertEq(rec.weight, 1 ether);
        assertTrue(rec.fraud);
        assertEq(sm.getNode(node).frozenCount, 1);
        assertEq(sm.getOperator(validator1).lockedUntil, deadline);
        assertEq(tm.leafChallenge(keccak256(abi.encode(batchId, leaves[2]))), id);
        assertEq(address(tm).balance, CHALLENGE_BOND);
    }

    function test_Challenge_SingleLeafBatch() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs,) = _commit(node, 1);
        assertEq(tm.batches(batchId).root, _leaf(rs[0]), "root = leaf");
        _challenge(validator1, batchId, 0, rs[0], new bytes32[](0));
        assertEq(tm.challengeCount(), 1);
    }

    function test_RevertWhen_ChallengeWrongBond() public {
        Receipt memory r = _receipt(0, user, 0); // sha256 is a call: build it before expectRevert
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongBond.selector, 1 wei, CHALLENGE_BOND));
        tm.challenge{value: 1 wei}(1, 0, r, new bytes32[](0), "");
    }

    function test_RevertWhen_ChallengeUnknownBatch() public {
        Receipt memory r = _receipt(0, user, 0);
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownBatch.selector, 1));
        tm.challenge{value: CHALLENGE_BOND}(1, 0, r, new bytes32[](0), "");
    }

    function test_RevertWhen_ChallengeWindowClosed() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        uint256 deadline = block.timestamp + CHALLENGE_WINDOW;
        vm.warp(deadline + 1);
        bytes32[] memory proof = Merkle.proof(leaves, leaves[0]);
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeWindowClosed.selector, deadline));
        tm.challenge{value: CHALLENGE_BOND}(batchId, 0, rs[0], proof, "");
    }

    function test_RevertWhen_ChallengeNotValidator() public {
        _registerNode(node, 2 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        bytes32[] memory proof = Merkle.proof(leaves, leaves[0]);
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotActiveValidator.selector);
        tm.challenge{value: CHALLENGE_BOND}(batchId, 0, rs[0], proof, "");
    }

    function test_RevertWhen_ChallengeProofTooLong() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs,) = _commit(node, 2);
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ProofTooLong.selector, 33));
        tm.challenge{value: CHALLENGE_BOND}(batchId, 0, rs[0], new bytes32[](33), "");
    }

    function test_RevertWhen_ChallengeInvalidProof() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 4);
        bytes32[] memory proof = Merkle.proof(leaves, leaves[0]);
        Receipt memory forged = rs[0];
        forged.fee = 1000 ether; // not what the node committed
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(TaskManager.InvalidProof.selector);
        tm.challenge{value: CHALLENGE_BOND}(batchId, 0, forged, proof, "");
    }

    function test_RevertWhen_ChallengeLeafAlreadyOpen() public {
        (uint256 id, uint256 batchId, Receipt memory r) = _openChallenge();
        (, bytes32[] memory leaves) = _receipts(4);
        bytes32[] memory proof = Merkle.proof(leaves, leaves[1]);
        vm.deal(validator2, 1 ether);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(batchId, 1, r, proof, "");
    }

    function test_Rechallenge_AfterNotFraud_ButNotAfterFraud() public {
        _deployDevnet(); // challenge window 600 s, vote window 30 s
        _registerNode(node, 3 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 3);
        bytes32[] memory proof = Merkle.proof(leaves, leaves[0]);

        uint256 first = _challenge(validator1, batchId, 0, rs[0], proof);
        _vote(validator2, first, false);
        vm.warp(block.timestamp + 31);
        assertFalse(tm.resolve(first));

        uint256 second = _challenge(validator2, batchId, 0, rs[0], proof);
        vm.warp(block.timestamp + 31);
        assertTrue(tm.resolve(second), "2 of 3 ether voted fraud");

        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, second));
        tm.challenge{value: CHALLENGE_BOND}(batchId, 0, rs[0], proof, "");
    }

    /*//////////////////////////////////////////////////////////////
                                 VOTES
    //////////////////////////////////////////////////////////////*/

    function test_Vote_WeightedByStake() public {
        (uint256 id,,) = _openChallenge();
        vm.expectEmit(address(tm));
        emit TaskManager.Voted(id, validator3, false, 3 ether);
        _vote(validator3, id, false);
        _vote(validator2, id, true);
        TaskManager.Challenge memory c = tm.challenges(id);
        assertEq(c.fraudStake, 3 ether);
        assertEq(c.honestStake, 3 ether);
        assertEq(sm.getOperator(validator3).lockedUntil, c.voteDeadline);
    }

    function test_RevertWhen_VoteUnknownChallenge() public {
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownChallenge.selector, 5));
        tm.vote(5, true);
    }

    function test_RevertWhen_VoteAfterWindow() public {
        (uint256 id,,) = _openChallenge();
        uint64 deadline = tm.challenges(id).voteDeadline;
        vm.warp(deadline + 1);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.VoteWindowClosed.selector, deadline));
        tm.vote(id, true);
    }

    function test_RevertWhen_VoteOnResolved() public {
        (uint256 id,,) = _openChallenge();
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(id);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.vote(id, true);
    }

    function test_RevertWhen_VoteByAccused() public {
        (uint256 id,,) = _openChallenge();
        vm.prank(node);
        vm.expectRevert(TaskManager.AccusedCannotVote.selector);
        tm.vote(id, false);
    }

    function test_RevertWhen_VoteTwice() public {
        (uint256 id,,) = _openChallenge();
        vm.prank(validator1);
        vm.expectRevert(TaskManager.AlreadyVoted.selector);
        tm.vote(id, false);
    }

    function test_RevertWhen_VoteNotValidator() public {
        (uint256 id,,) = _openChallenge();
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotActiveValidator.selector);
        tm.vote(id, true);
    }

    /*//////////////////////////////////////////////////////////////
                               RESOLUTION
    //////////////////////////////////////////////////////////////*/

    /// @dev The whole dispute: challenge -> votes -> resolve -> slash -> payouts -> withdrawals.
    function test_Flow_FraudSlashesAndPays() public {
        (uint256 id,, Receipt memory r) = _openChallenge(); // v1 (1 ether) challenged
        _vote(validator2, id, true); // 2 ether
        // validator3 (3 ether) abstains: voted 3 of 6 ether >= 30 %, fraud 3 > 3/2
        vm.warp(block.timestamp + VOTE_WINDOW + 1);

        uint256 slashed = SLASH_AMOUNT;
        uint256 challengerReward = slashed * CHALLENGER_REWARD_BPS / 10_000; // 0.2 ether
        uint256 pool = slashed * VOTER_REWARD_BPS / 10_000; // 0.2 ether
        uint256 refund = r.fee; // 0.001 ether
        uint256 burned = slashed - challengerReward - pool - refund;

        vm.expectEmit(address(tm));
        emit TaskManager.ChallengeResolved(id, true, 3 ether, 0, slashed, refund, challengerReward, pool, burned);
        vm.prank(stranger);
        assertTrue(tm.resolve(id));

        ServiceManager.NodeView memory nv = sm.getNode(node);
        assertEq(nv.stake, 1 ether, "2 - 1 slashed");
        assertEq(nv.frozenCount, 0, "unfrozen");
        assertEq(nv.slashCount, 1);
        assertEq(tm.claimable(validator1), CHALLENGE_BOND + challengerReward);
        assertEq(tm.claimable(user), refund);
        assertEq(tm.totalBurned(), burned);
        assertEq(BURN.balance, burned);
        TaskManager.Challenge memory c = tm.challenges(id);
        assertTrue(c.status == TaskManager.ChallengeStatus.Fraud);
        assertEq(c.slashed, slashed);
        assertEq(c.rewardPool, pool);

        vm.prank(validator1);
        uint256 share1 = tm.claimVoteReward(id);
        vm.expectEmit(address(tm));
        emit TaskManager.VoteRewardClaimed(id, validator2, pool * 2 / 3);
        vm.prank(validator2);
        uint256 share2 = tm.claimVoteReward(id);
        assertEq(share1, pool / 3);
        assertEq(share2, pool * 2 / 3);

        uint256 before = validator1.balance;
        vm.expectEmit(address(tm));
        emit TaskManager.Withdrawn(validator1, CHALLENGE_BOND + challengerReward + share1);
        vm.prank(validator1);
        tm.withdraw();
        assertEq(validator1.balance, before + CHALLENGE_BOND + challengerReward + share1);
        vm.prank(user);
        tm.withdraw();
        assertEq(user.balance, refund);
        assertEq(address(tm).balance, tm.claimable(validator2) + pool - share1 - share2);
    }

    function test_Flow_FalseAccusationPaysNode() public {
        (uint256 id,,) = _openChallenge();
        _vote(validator2, id, false);
        _vote(validator3, id, false);
        vm.warp(block.timestamp + VOTE_WINDOW + 1);

        uint256 pool = CHALLENGE_BOND * VOTER_REWARD_BPS / 10_000;
        vm.expectEmit(address(tm));
        emit TaskManager.ChallengeResolved(id, false, 1 ether, 5 ether, 0, 0, 0, pool, 0);
        assertFalse(tm.resolve(id));

        assertEq(sm.getNode(node).stake, 2 ether, "not slashed");
        assertEq(sm.getNode(node).frozenCount, 0);
        assertEq(tm.claimable(node), CHALLENGE_BOND - pool);
        assertEq(tm.claimable(validator1), 0, "bond lost");
        vm.prank(validator2);
        assertEq(tm.claimVoteReward(id), pool * 2 / 5);
        vm.prank(validator3);
        assertEq(tm.claimVoteReward(id), pool * 3 / 5);
        vm.prank(validator1);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);

        vm.prank(node);
        tm.withdraw();
        assertEq(node.balance, CHALLENGE_BOND - pool);
    }

    function test_Resolve_NoQuorumClearsNode() public {
        (uint256 id,,) = _openChallenge(); // only the challenger's 1 of 6 ether voted
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertFalse(tm.resolve(id));
        assertEq(tm.claimable(node), CHALLENGE_BOND, "no honest voters: whole bond to node");
        assertEq(tm.challenges(id).rewardPool, 0);
    }

    function test_Resolve_TieIsNotFraud() public {
        (uint256 id,,) = _openChallenge();
        _vote(validator2, id, true); // fraud 3
        _vote(validator3, id, false); // honest 3
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertFalse(tm.resolve(id));
    }

    function test_Flow_UnbondBlockedWhileFrozenThenSlashedFromUnbonding() public {
        (uint256 id,,) = _openChallenge();
        _vote(validator2, id, true);
        vm.prank(node);
        sm.requestUnbond(2 ether); // tries to run with the stake
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        vm.prank(node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, 1));
        sm.withdrawUnbonded();

        assertTrue(tm.resolve(id));
        assertEq(sm.getNode(node).unbonding, 1 ether, "slash came out of unbonding stake");

        vm.prank(node);
        sm.withdrawUnbonded();
        assertEq(node.balance, 1 ether);
    }

    function test_Resolve_RefundCappedAndZeroUser() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        Receipt[] memory rs = new Receipt[](2);
        bytes32[] memory leaves = new bytes32[](2);
        rs[0] = _receipt(0, user, 50 ether); // fee larger than the slash
        rs[1] = _receipt(1, address(0), 1 ether);
        leaves[0] = _leaf(rs[0]);
        leaves[1] = _leaf(rs[1]);
        vm.prank(node);
        uint256 batchId = tm.commitBatch(Merkle.root(leaves), 2, "");
        uint256 a = _challenge(validator1, batchId, 0, rs[0], Merkle.proof(leaves, leaves[0]));
        uint256 b = _challenge(validator1, batchId, 1, rs[1], Merkle.proof(leaves, leaves[1]));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(a);
        assertEq(tm.claimable(user), 0.3 ether, "refund capped at half of what is left after rewards");
        tm.resolve(b);
        TaskManager.Challenge memory c = tm.challenges(b);
        assertEq(c.slashed, 1 ether);
        assertEq(tm.totalBurned(), 0.3 ether + 0.6 ether, "the other half burned; zero user: all burned");
        assertEq(sm.getNode(node).stake, 0);
    }

    function test_RevertWhen_ResolveDuringVoteWindow() public {
        (uint256 id,,) = _openChallenge();
        uint64 deadline = tm.challenges(id).voteDeadline;
        vm.warp(deadline - 1); // the window is [opened, deadline): resolvable from `deadline` on
        vm.expectRevert(abi.encodeWithSelector(TaskManager.VoteWindowOpen.selector, deadline));
        tm.resolve(id);
    }

    function test_RevertWhen_ResolveTwice() public {
        (uint256 id,,) = _openChallenge();
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(id);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.resolve(id);
    }

    function test_RevertWhen_ResolveUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownChallenge.selector, 1));
        tm.resolve(1);
    }

    function test_RevertWhen_ChallengesUnknown() public {
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownChallenge.selector, 1));
        tm.challenges(1);
    }

    function test_RevertWhen_ClaimVoteRewardUnresolved() public {
        (uint256 id,,) = _openChallenge();
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotResolved.selector, id));
        tm.claimVoteReward(id);
    }

    function test_RevertWhen_ClaimVoteRewardTwice() public {
        (uint256 id,,) = _openChallenge();
        _vote(validator2, id, true);
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(id);
        vm.startPrank(validator2);
        tm.claimVoteReward(id);
        vm.expectRevert(TaskManager.RewardAlreadyClaimed.selector);
        tm.claimVoteReward(id);
        vm.stopPrank();
    }

    function test_RevertWhen_ClaimVoteRewardNonVoter() public {
        (uint256 id,,) = _openChallenge();
        _vote(validator2, id, true);
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(id);
        vm.prank(validator3);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);
    }

    function test_RevertWhen_WithdrawNothing() public {
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NothingToWithdraw.selector);
        tm.withdraw();
    }

    function test_RevertWhen_WithdrawTransferFails() public {
        Rejecter r = new Rejecter();
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        Receipt[] memory rs = new Receipt[](1);
        rs[0] = _receipt(0, address(r), 0.01 ether);
        vm.prank(node);
        uint256 batchId = tm.commitBatch(_leaf(rs[0]), 1, "");
        uint256 id = _challenge(validator1, batchId, 0, rs[0], new bytes32[](0));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(id);
        assertEq(tm.claimable(address(r)), 0.01 ether);
        r.setRejecting(true);
        vm.expectRevert(TaskManager.TransferFailed.selector);
        r.call(address(tm), 0, abi.encodeCall(TaskManager.withdraw, ()));
    }

    /*//////////////////////////////////////////////////////////////
                                  FUZZ
    //////////////////////////////////////////////////////////////*/

    function testFuzz_ChallengeAnyLeafOfAnyBatch(uint256 n, uint256 index) public {
        n = bound(n, 1, 12);
        index = bound(index, 0, n - 1);
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, n);
        uint256 id = _challenge(validator1, batchId, index, rs[index], Merkle.proof(leaves, leaves[index]));
        assertEq(tm.challenges(id).leaf, leaves[index]);
    }

    function testFuzz_SlashReachesUnbondingStake(uint256 nodeStake, uint256 unbond) public {
        nodeStake = bound(nodeStake, MIN_NODE_STAKE, 5 ether);
        unbond = bound(unbond, 1, nodeStake);
        _registerNode(node, nodeStake);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        vm.prank(node);
        sm.requestUnbond(unbond); // after the commit: must stay slashable
        uint256 id = _challenge(validator1, batchId, 0, rs[0], Merkle.proof(leaves, leaves[0]));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertTrue(tm.resolve(id));
        ServiceManager.NodeView memory v = sm.getNode(node);
        uint256 slashed = nodeStake < SLASH_AMOUNT ? nodeStake : SLASH_AMOUNT;
        assertEq(v.stake + v.unbonding, nodeStake - slashed);
        assertEq(address(sm).balance, nodeStake - slashed + 1 ether);
    }

    function testFuzz_FraudSplit(uint256 nodeStake, uint256 fee) public {
        nodeStake = bound(nodeStake, MIN_NODE_STAKE, 5 ether);
        fee = bound(fee, 0, 10 ether);
        _registerNode(node, nodeStake);
        _registerValidator(validator1, 1 ether);
        Receipt[] memory rs = new Receipt[](1);
        rs[0] = _receipt(0, user, fee);
        vm.prank(node);
        uint256 batchId = tm.commitBatch(_leaf(rs[0]), 1, "");
        uint256 id = _challenge(validator1, batchId, 0, rs[0], new bytes32[](0));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertTrue(tm.resolve(id));

        uint256 slashed = nodeStake < SLASH_AMOUNT ? nodeStake : SLASH_AMOUNT;
        TaskManager.Challenge memory c = tm.challenges(id);
        assertEq(c.slashed, slashed);
        uint256 challengerReward = tm.claimable(validator1) - CHALLENGE_BOND;
        assertEq(challengerReward + c.rewardPool + tm.claimable(user) + tm.totalBurned(), slashed);
        assertLe(tm.claimable(user), fee);
        assertEq(address(tm).balance, tm.claimable(validator1) + tm.claimable(user) + c.rewardPool);
    }

    function testFuzz_IsSampledMatchesFormula(address validator, uint256 index, bytes32 blockHash) public {
        vm.assume(blockHash != bytes32(0));
        _registerNode(node, 1 ether);
        (uint256 batchId,,) = _commit(node, 16);
        index = bound(index, 0, 15);
        vm.roll(103);
        vm.setBlockhash(102, blockHash);
        bytes32 seed = keccak256(abi.encode(blockHash, batchId));
        assertEq(
            tm.isSampled(batchId, validator, index),
            uint256(keccak256(abi.encode(seed, validator, index))) % 1_000_000 < SAMPLE_RATE_PPM
        );
    }
}
