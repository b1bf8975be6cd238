// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {SeedBeacon} from "../src/SeedBeacon.sol";
import {Payments} from "../src/Payments.sol";
import {IPayments} from "../src/interfaces/IPayments.sol";
import {IServiceManager} from "../src/interfaces/IServiceManager.sol";
import {Receipt, TaskRequest, Voucher} from "../src/libraries/Types.sol";

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

    function _newTm(uint256 rate, uint256 quorum, uint256 cr, uint256 vr) internal returns (TaskManager) {
        return new TaskManager(
            IServiceManager(address(sm)),
            IPayments(address(payments)),
            beacon,
            rate,
            1,
            2,
            1 ether,
            quorum,
            1,
            cr,
            vr,
            0
        );
    }

    function test_RevertWhen_ConstructorParameterInvalid() public {
        vm.expectRevert(SeedBeacon.InvalidParameter.selector);
        new SeedBeacon(seedSource, 0);
        vm.expectRevert(SeedBeacon.InvalidParameter.selector);
        new SeedBeacon(seedSource, 257);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(
            IServiceManager(address(sm)),
            IPayments(address(payments)),
            SeedBeacon(address(0)),
            1,
            1,
            2,
            1 ether,
            1,
            1,
            0,
            0,
            0
        );
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(0, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1_000_001, 1, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1, 0, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1, 10_001, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        _newTm(1, 1, 6_000, 4_001);
        // The decoy bounty (a Payments parameter, paid from the node's escrow) must be below the bond.
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(
            IServiceManager(address(sm)), IPayments(address(payments)), beacon, 1, 1, 2, DECOY_BOUNTY, 1, 1, 0, 0, 0
        );
        new TaskManager(
            IServiceManager(address(sm)), IPayments(address(payments)), beacon, 1, 1, 2, DECOY_BOUNTY + 1, 1, 1, 0, 0, 0
        );
        // A vote needs a sealing phase and a reveal phase: at least 2 seconds.
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(
            IServiceManager(address(sm)), IPayments(address(payments)), beacon, 1, 1, 1, 1 ether, 1, 1, 0, 0, 0
        );
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(
            IServiceManager(address(0)), IPayments(address(payments)), beacon, 1, 1, 1, 1 ether, 1, 1, 0, 0, 0
        );
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(
            IServiceManager(address(sm)), IPayments(address(payments)), beacon, 1, 0, 1, 1 ether, 1, 1, 0, 0, 0
        );
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(
            IServiceManager(address(sm)), IPayments(address(payments)), beacon, 1, 1, 0, 1 ether, 1, 1, 0, 0, 0
        );
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(IServiceManager(address(sm)), IPayments(address(payments)), beacon, 1, 1, 1, 0, 1, 1, 0, 0, 0);
        vm.expectRevert(TaskManager.InvalidParameter.selector);
        new TaskManager(
            IServiceManager(address(sm)), IPayments(address(payments)), beacon, 1, 1, 1, 1 ether, 1, 0, 0, 0, 0
        );
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
        emit TaskManager.BatchCommitted(
            1, node, 7, root, 3, uint32(block.number), uint32(block.timestamp), "bafymanifest"
        );
        vm.prank(node, node);
        uint256 id = tm.commitBatch(7, root, 3, "bafymanifest", "");
        assertEq(id, 1);
        assertEq(tm.batchCount(), 1);
        TaskManager.BatchRef memory ref = _refOf(id, node, 7, 3, root);
        assertTrue(tm.isCommitted(ref));
        (uint256 committedAt, bytes32 digest) = tm.batchSlot(node, 7);
        assertEq(committedAt, block.timestamp);
        assertEq(
            digest,
            bytes32(uint256(keccak256(abi.encode(1, node, 7, 3, block.number, block.timestamp, root))) >> 40 << 40)
        );
        uint256 step = tm.LOCK_STEP();
        assertEq(step, CHALLENGE_WINDOW / 16);
        uint256 until = sm.getNode(node).lockedUntil;
        assertGe(until, block.timestamp + CHALLENGE_WINDOW);
        assertLt(until, block.timestamp + CHALLENGE_WINDOW + step);
        assertEq(until % step, 0);

        vm.prank(node, node);
        assertEq(tm.commitBatch(8, root, 3, "", ""), 2, "sequential ids");
    }

    function test_BatchCount_StartsAtZero() public view {
        assertEq(tm.batchCount(), 0);
    }

    /// @dev Every field of the header is bound by the slot's digest, whatever the bit patterns.
    function testFuzz_CommitBatch_BindsEveryField(bytes32 root, uint32 count, uint32 blockNo, uint32 time, uint32 slot)
        public
    {
        vm.assume(root != bytes32(0) && time != 0);
        // forge-lint: disable-next-line(unsafe-typecast)
        count = uint32(bound(count, 1, tm.MAX_BATCH_COUNT()));
        _registerNode(node, 1 ether);
        vm.roll(blockNo);
        vm.warp(time);
        vm.prank(node, node);
        uint256 id = tm.commitBatch(slot, root, count, "", "");
        TaskManager.BatchRef memory ref = _refOf(id, node, slot, count, root);
        assertTrue(tm.isCommitted(ref));
        assertEq(tm.batchCount(), id);
        for (uint256 field; field < 7; ++field) {
            TaskManager.BatchRef memory forged = _refOf(id, node, slot, count, root);
            if (field == 0) forged.batchId += 1;
            if (field == 1) forged.node = node2;
            if (field == 2) forged.slot ^= 1;
            if (field == 3) forged.count ^= 1;
            if (field == 4) forged.commitBlock ^= 1;
            if (field == 5) forged.committedAt ^= 1;
            if (field == 6) forged.root ^= bytes32(uint256(1));
            assertFalse(tm.isCommitted(forged), "a changed field is another batch");
        }
    }

    /// @dev Commits of one LOCK_STEP write the lock once; the lock still covers every window.
    function test_CommitsOfOneStepWriteTheLockOnce() public {
        _registerNode(node, 1 ether);
        uint256 step = tm.LOCK_STEP();
        vm.warp((block.timestamp / step + 1) * step + 1); // just after a step boundary
        _commit(node, 1);
        uint256 until = sm.getNode(node).lockedUntil;
        vm.warp(block.timestamp + step - 2);
        _commit(node, 1);
        assertEq(sm.getNode(node).lockedUntil, until, "same step: the lock is not rewritten");
        assertGe(until, block.timestamp + CHALLENGE_WINDOW);
        vm.warp(block.timestamp + 2); // next step
        _commit(node, 1);
        assertEq(sm.getNode(node).lockedUntil, until + step);
    }

    /// @dev A slot holds a batch until nothing can dispute it any more; then the node reuses it,
    ///      and the old header no longer names a batch (nor a seed: a seed is read with its batch).
    function test_SlotIsReusedOnlyAfterRetention() public {
        _registerNode(node, 1 ether);
        (uint256 first,,) = _commit(node, 2); // slot 0
        TaskManager.BatchRef memory old = _ref(first);
        uint256 retention = tm.BATCH_RETENTION();
        assertEq(retention, 3 * CHALLENGE_WINDOW + 2 * VOTE_WINDOW);
        _rollSealed(block.number + 3);
        bytes32 seed = tm.batchSeed(old);
        uint256 reusableAt = old.committedAt + retention;
        vm.warp(reusableAt - 1);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SlotInUse.selector, 0, reusableAt));
        tm.commitBatch(0, keccak256("r"), 1, "", "");
        // another node's slot 0 is its own
        _registerNode(node2, 1 ether);
        vm.prank(node2);
        tm.commitBatch(0, keccak256("r"), 1, "", "");

        vm.warp(reusableAt);
        vm.prank(node, node);
        uint256 second = tm.commitBatch(0, keccak256("r2"), 1, "", "");
        assertEq(second, first + 2);
        assertFalse(tm.isCommitted(old));
        assertTrue(tm.isCommitted(_refOf(second, node, 0, 1, keccak256("r2"))));
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownBatch.selector, first));
        tm.batchSeed(old);
        assertTrue(seed != bytes32(0));
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownBatch.selector, first));
        tm.challengeAvailability{value: CHALLENGE_BOND}(old, 0);
    }

    /// @dev The latest moment a dispute can reach a batch is inside its retention: an
    ///      availability challenge at the last second of the window, answered at the last second
    ///      of its vote window, leaves a fraud challenge possible until just before reuse.
    function test_RetentionCoversTheLatestPossibleDispute() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 9 ether); // never votes: the challenger alone is no quorum
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        TaskManager.BatchRef memory ref = _ref(batchId);
        vm.warp(ref.committedAt + CHALLENGE_WINDOW - 1);
        vm.deal(stranger, CHALLENGE_BOND);
        vm.prank(stranger);
        uint256 a = tm.challengeAvailability{value: CHALLENGE_BOND}(ref, 1);
        vm.warp(block.timestamp + VOTE_WINDOW - 1);
        vm.prank(node, node);
        tm.answerAvailability(a, ref, rs[1], Merkle.proofAt(leaves, 1), _trace(1));
        vm.warp(block.timestamp + CHALLENGE_WINDOW - 1);
        assertLt(block.timestamp, ref.committedAt + tm.BATCH_RETENTION());
        _challenge(validator1, batchId, 1, rs[1], Merkle.proofAt(leaves, 1));
        assertEq(tm.challengeCount(), 1);
        // that challenge closes with no verdict (nobody votes): the leaf reopens for a window from
        // the vote's end, the latest dispute of all, and still inside the retention
        uint64 voteDeadline = tm.challenges(1).voteDeadline;
        vm.warp(voteDeadline);
        tm.resolve(1);
        assertEq(tm.reopenedAt(keccak256(abi.encode(batchId, uint256(1)))), voteDeadline);
        vm.warp(uint256(voteDeadline) + CHALLENGE_WINDOW - 1);
        assertLt(block.timestamp, ref.committedAt + tm.BATCH_RETENTION());
        _challenge(validator1, batchId, 1, rs[1], Merkle.proofAt(leaves, 1));
        assertEq(tm.challengeCount(), 2);
        // once: the second one closing without a verdict reopens nothing more
        voteDeadline = tm.challenges(2).voteDeadline;
        vm.warp(voteDeadline);
        tm.resolve(2);
        vm.warp(uint256(voteDeadline) + 1);
        vm.deal(validator1, CHALLENGE_BOND);
        vm.prank(validator1);
        vm.expectRevert(
            abi.encodeWithSelector(TaskManager.ChallengeWindowClosed.selector, ref.committedAt + CHALLENGE_WINDOW)
        );
        tm.challenge{value: CHALLENGE_BOND}(ref, 1, rs[1], Merkle.proofAt(leaves, 1), "bafyevidence");
    }

    /// @dev Reserved slots are free to commit into, hold no batch, and are the caller's own.
    function test_ReserveSlots() public {
        _registerNode(node, 1 ether);
        _commit(node, 1); // slot 0 holds a batch
        vm.expectEmit(address(tm));
        emit TaskManager.SlotsReserved(node, 0, 3);
        vm.prank(node, node);
        tm.reserveSlots(0, 3);
        (uint256 at0,) = tm.batchSlot(node, 0);
        (uint256 at1, bytes32 digest1) = tm.batchSlot(node, 1);
        assertEq(at0, block.timestamp, "a used slot is left as it is");
        assertEq(at1, 1);
        assertEq(digest1, bytes32(0));
        (uint256 other,) = tm.batchSlot(node2, 1);
        assertEq(other, 0, "only the caller's slots");
        vm.prank(node, node);
        tm.commitBatch(1, keccak256("r"), 1, "", "");
        uint256 reusableAt = block.timestamp + tm.BATCH_RETENTION();
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SlotInUse.selector, 0, reusableAt));
        tm.commitBatch(0, keccak256("r"), 1, "", "");
        // a reserved word never passes for a batch header
        assertFalse(tm.isCommitted(TaskManager.BatchRef(0, node, 2, 0, 0, 1, bytes32(0))));
    }

    function test_RevertWhen_ReserveSlotsBadCount() public {
        vm.startPrank(node, node);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.BadReservation.selector, 0));
        tm.reserveSlots(0, 0);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.BadReservation.selector, 257));
        tm.reserveSlots(0, 257);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.BadReservation.selector, 2));
        tm.reserveSlots(type(uint32).max - 1, 2);
        vm.stopPrank();
    }

    /// @dev One transaction commits the batch and settles vouchers: the node is paid in it.
    function test_CommitBatchSettlesVouchers() public {
        _registerNode(node, 1 ether);
        _deposit(user, 1 ether);
        _deposit(user2, 1 ether);
        Voucher[] memory vs = new Voucher[](2);
        bytes[] memory sigs = new bytes[](2);
        vs[0] = _voucher(user, node, 0.1 ether);
        vs[1] = _voucher(user2, node, 0.2 ether);
        sigs[0] = _signVoucher(userKey, vs[0]);
        sigs[1] = _signVoucher(user2Key, vs[1]);
        vm.expectEmit(address(payments));
        emit Payments.Redeemed(node, 2, 0.3 ether, 0.06 ether);
        vm.prank(node, node);
        tm.commitBatch(0, keccak256("r"), 1, "", _packAll(vs, sigs));
        (uint256 earnings, uint256 escrow) = payments.account(node);
        assertEq(earnings, 0.24 ether);
        assertEq(escrow, 0.06 ether);
        // a bad voucher reverts the commit with it (the node retries without it)
        vs[0] = _voucher(user, node, 0.5 ether);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(Payments.InvalidSignature.selector, 0));
        tm.commitBatch(1, keccak256("r"), 1, "", _packAll(vs, sigs));
        assertEq(tm.batchCount(), 1);
    }

    function test_RevertWhen_CommitBatchBeforeWiring() public {
        ServiceManager unwired = new ServiceManager(MIN_NODE_STAKE, MIN_VALIDATOR_STAKE, UNBONDING_PERIOD, MAX_MODELS);
        TaskManager lone = new TaskManager(
            IServiceManager(address(unwired)),
            IPayments(address(payments)),
            beacon,
            100_000,
            1 days,
            1 days,
            0.1 ether,
            3_000,
            1 ether,
            2_000,
            2_000,
            0
        );
        vm.deal(node, 1 ether);
        vm.prank(node, node);
        unwired.registerNode{value: 1 ether}(ENDPOINT, _models(), 1);
        vm.prank(node, node);
        vm.expectRevert(ServiceManager.OnlyTaskManager.selector);
        lone.commitBatch(0, keccak256("r"), 1, "", "");
        assertEq(lone.batchCount(), 0);
    }

    function test_RevertWhen_CommitBatchEmpty() public {
        _registerNode(node, 1 ether);
        vm.startPrank(node, node);
        vm.expectRevert(TaskManager.EmptyBatch.selector);
        tm.commitBatch(0, keccak256("r"), 0, "", "");
        vm.expectRevert(TaskManager.EmptyBatch.selector);
        tm.commitBatch(0, bytes32(0), 1, "", "");
        vm.stopPrank();
    }

    function test_RevertWhen_CommitBatchNotActiveNode() public {
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotActiveNode.selector);
        tm.commitBatch(0, keccak256("r"), 1, "", "");

        _registerNode(node, 1 ether);
        vm.prank(node, node);
        sm.requestUnbond(0.5 ether);
        vm.prank(node, node);
        vm.expectRevert(TaskManager.NotActiveNode.selector);
        tm.commitBatch(0, keccak256("r"), 1, "", "");
    }

    function test_IsCommitted_UnknownIsFalse() public view {
        assertFalse(tm.isCommitted(_ref(1)));
    }

    /*//////////////////////////////////////////////////////////////
                                SAMPLING
    //////////////////////////////////////////////////////////////*/

    function _committedBatch() internal returns (uint256 batchId) {
        _registerNode(node, 1 ether);
        (batchId,,) = _commit(node, 4); // block 100, seed block 102
    }

    /// @dev Mines up to `height` (> 102) and seals block 102 with SEED_HASH as its prevrandao.
    function _rollPastSeed(uint256 height) internal {
        vm.roll(height);
        bytes memory header = _header(102, SEED_HASH);
        vm.setBlockhash(102, keccak256(header));
        beacon.seal(102, header);
    }

    function test_BatchSeed_FollowsProtocol() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        assertEq(tm.batchSeed(_ref(batchId)), keccak256(abi.encode(SEED_HASH, batchId)));
    }

    function test_RevertWhen_BatchSeedNotReady() public {
        uint256 batchId = _committedBatch();
        vm.roll(102);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SeedNotReady.selector, 102));
        tm.batchSeed(_ref(batchId));
    }

    /// @dev Mined but not sealed: the prevrandao is not known on chain yet, so neither is the seed
    ///      (a zero seed here would sample everyone and pay any challenger).
    function test_RevertWhen_BatchSeedUnsealed() public {
        uint256 batchId = _committedBatch();
        vm.roll(110);
        vm.setBlockhash(102, keccak256("a header"));
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SeedNotReady.selector, 102));
        tm.batchSeed(_ref(batchId));
        vm.expectRevert(abi.encodeWithSelector(TaskManager.SeedNotReady.selector, 102));
        tm.isSampled(_ref(batchId), validator1, 0);
    }

    function test_BatchSeed_ZeroOnceExpired() public {
        uint256 batchId = _committedBatch();
        vm.roll(102 + 8192);
        assertEq(tm.batchSeed(_ref(batchId)), bytes32(0));
    }

    /// @dev Expired unsealed, the seed samples every entry for every validator.
    function test_IsSampled_ExpiredUnsealedSamplesEverything() public {
        uint256 batchId = _committedBatch();
        vm.roll(102 + 8192);
        for (uint256 i; i < 4; ++i) {
            assertTrue(tm.isSampled(_ref(batchId), validator1, i));
        }
    }

    function test_RevertWhen_BatchSeedUnknownBatch() public {
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownBatch.selector, 9));
        tm.batchSeed(_refOf(9, node, 0, 1, keccak256("no such batch")));
    }

    function test_SealedSeed_SurvivesExpiry() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        bytes32 expected = keccak256(abi.encode(SEED_HASH, batchId));
        vm.roll(102 + 100_000);
        assertEq(tm.batchSeed(_ref(batchId)), expected);
    }

    /// @dev Under `Blockhash` the seed needs no seal while the hash is readable.
    function test_BatchSeed_FromTheBlockHash() public {
        seedSource = SeedBeacon.Source.Blockhash;
        _deploy();
        uint256 batchId = _committedBatch();
        vm.roll(103);
        vm.setBlockhash(102, SEED_HASH);
        assertEq(tm.batchSeed(_ref(batchId)), keccak256(abi.encode(SEED_HASH, batchId)));
    }

    function test_IsSampled_FollowsProtocol() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        bytes32 seed = keccak256(abi.encode(SEED_HASH, batchId));
        uint256 hits;
        for (uint256 i; i < 4; ++i) {
            bool expected = uint256(keccak256(abi.encode(seed, validator1, i))) % 1_000_000 < SAMPLE_RATE_PPM;
            assertEq(tm.isSampled(_ref(batchId), validator1, i), expected);
            if (expected) ++hits;
        }
        hits;
    }

    function test_RevertWhen_IsSampledIndexOutOfRange() public {
        uint256 batchId = _committedBatch();
        _rollPastSeed(103);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.IndexOutOfRange.selector, 4, 4));
        tm.isSampled(_ref(batchId), validator1, 4);
    }

    function test_IsSampled_DevnetSamplesEverything() public {
        _deployDevnet();
        _registerNode(node, 1 ether);
        (uint256 batchId,,) = _commit(node, 4);
        _rollSealed(102);
        for (uint256 i; i < 4; ++i) {
            assertTrue(tm.isSampled(_ref(batchId), validator1, i));
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
        uint256 id = tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 2, rs[2], proof, "ev");

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
        assertEq(_ref(batchId).root, _leaf(rs[0]), "root = leaf");
        assertTrue(tm.isCommitted(_ref(batchId)));
        _challenge(validator1, batchId, 0, rs[0], new bytes32[](0));
        assertEq(tm.challengeCount(), 1);
    }

    function test_RevertWhen_ChallengeWrongBond() public {
        Receipt memory r = _receipt(0, user, 0); // sha256 is a call: build it before expectRevert
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongBond.selector, 1 wei, CHALLENGE_BOND));
        tm.challenge{value: 1 wei}(_refOf(1, node, 0, 1, keccak256("no such batch")), 0, r, new bytes32[](0), "");
    }

    function test_RevertWhen_ChallengeUnknownBatch() public {
        Receipt memory r = _receipt(0, user, 0);
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownBatch.selector, 1));
        tm.challenge{value: CHALLENGE_BOND}(
            _refOf(1, node, 0, 1, keccak256("no such batch")), 0, r, new bytes32[](0), ""
        );
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
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 0, rs[0], proof, "");
    }

    function test_RevertWhen_ChallengeNotValidator() public {
        _registerNode(node, 2 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 2);
        bytes32[] memory proof = Merkle.proof(leaves, leaves[0]);
        vm.deal(stranger, 1 ether);
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotActiveValidator.selector);
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 0, rs[0], proof, "");
    }

    function test_RevertWhen_ChallengeProofTooLong() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        (uint256 batchId, Receipt[] memory rs,) = _commit(node, 2);
        vm.deal(validator1, 1 ether);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ProofTooLong.selector, 33));
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 0, rs[0], new bytes32[](33), "");
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
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 0, forged, proof, "");
    }

    function test_RevertWhen_ChallengeLeafAlreadyOpen() public {
        (uint256 id, uint256 batchId, Receipt memory r) = _openChallenge();
        (, bytes32[] memory leaves) = _receipts(4);
        bytes32[] memory proof = Merkle.proof(leaves, leaves[1]);
        vm.deal(validator2, 1 ether);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 1, r, proof, "");
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
        tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), 0, rs[0], proof, "");
    }

    /*//////////////////////////////////////////////////////////////
                                 VOTES
    //////////////////////////////////////////////////////////////*/

    function test_Vote_WeightedByStake() public {
        (uint256 id,,) = _openChallenge();
        vm.expectEmit(address(tm));
        emit TaskManager.VoteCommitted(id, validator3, 3 ether);
        _commitVote(validator3, id, false);
        assertEq(tm.challenges(id).honestStake, 0, "a sealed vote counts once opened");
        _commitVote(validator2, id, true);
        vm.warp(_revealsAt(id));
        vm.expectEmit(address(tm));
        emit TaskManager.Voted(id, validator3, false, 3 ether);
        vm.prank(validator3);
        tm.revealVote(id, false, _voteSalt(validator3, id));
        _revealVote(validator2, id, true);
        TaskManager.Challenge memory c = tm.challenges(id);
        assertEq(c.fraudStake, 3 ether);
        assertEq(c.honestStake, 3 ether);
        assertEq(sm.getOperator(validator3).lockedUntil, c.voteDeadline);
    }

    function test_RevertWhen_VoteUnknownChallenge() public {
        vm.deal(validator1, validator1.balance + CHALLENGE_BOND);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.UnknownChallenge.selector, 5));
        tm.commitVote{value: CHALLENGE_BOND}(5, keccak256(abi.encode(5, true)));
    }

    function test_RevertWhen_VoteAfterWindow() public {
        (uint256 id,,) = _openChallenge();
        uint64 deadline = tm.challenges(id).voteDeadline;
        vm.warp(deadline + 1);
        vm.deal(validator2, validator2.balance + CHALLENGE_BOND);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongVotePhase.selector, _revealsAt(id)));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, true)));
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.VoteWindowClosed.selector, deadline));
        tm.revealVote(id, true, bytes32(0));
    }

    function test_RevertWhen_VoteOnResolved() public {
        (uint256 id,,) = _openChallenge();
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(id);
        vm.deal(validator2, validator2.balance + CHALLENGE_BOND);
        vm.prank(validator2);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotOpen.selector, id));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, true)));
    }

    function test_RevertWhen_VoteByAccused() public {
        (uint256 id,,) = _openChallenge();
        vm.deal(node, node.balance + CHALLENGE_BOND);
        vm.prank(node, node);
        vm.expectRevert(TaskManager.AccusedCannotVote.selector);
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, false)));
    }

    function test_RevertWhen_VoteTwice() public {
        (uint256 id,,) = _openChallenge();
        vm.deal(validator1, validator1.balance + CHALLENGE_BOND);
        vm.prank(validator1);
        vm.expectRevert(TaskManager.AlreadyVoted.selector);
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, false)));
    }

    function test_RevertWhen_VoteNotValidator() public {
        (uint256 id,,) = _openChallenge();
        vm.deal(stranger, stranger.balance + CHALLENGE_BOND);
        vm.prank(stranger);
        vm.expectRevert(TaskManager.NotActiveValidator.selector);
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, true)));
    }

    /*//////////////////////////////////////////////////////////////
                               RESOLUTION
    //////////////////////////////////////////////////////////////*/

    /// @dev The whole dispute: challenge -> votes -> resolve -> slash -> payouts -> withdrawals.
    function test_Flow_FraudSlashesAndPays() public {
        (uint256 id,, Receipt memory r) = _openSampledChallenge(); // v1 (1 ether), sampled, challenged
        assertTrue((tm.challenges(id).sampled != TaskManager.Pick.None));
        _vote(validator2, id, true); // 2 ether
        // validator3 (3 ether) abstains: voted 3 of 6 ether >= 30 %, fraud 3 > 3/2
        vm.warp(block.timestamp + VOTE_WINDOW + 1);

        uint256 slashed = SLASH_AMOUNT;
        uint256 challengerReward = slashed * CHALLENGER_REWARD_BPS / 10_000; // 0.2 ether
        uint256 pool = slashed * VOTER_REWARD_BPS / 10_000; // 0.2 ether
        uint256 held = (slashed - challengerReward - pool) / 2; // 0.3 ether: the cap, held for the signer
        uint256 refund = _request(1, user, node).maxFee; // 0.001 ether: the fee the user signed (and paid)
        assertEq(refund, r.fee, "the node charged the signed maxFee");
        uint256 burned = slashed - challengerReward - pool - held; // at the verdict
        uint256 burnedAtClaim = held - refund; // what the held cap exceeds the signed maxFee by

        vm.expectEmit(address(tm));
        emit TaskManager.ChallengeResolved(id, true, 3 ether, 0, slashed, held, challengerReward, pool, burned);
        vm.prank(stranger);
        assertTrue(tm.resolve(id));

        ServiceManager.NodeView memory nv = sm.getNode(node);
        assertEq(nv.stake, 1 ether, "2 - 1 slashed");
        assertEq(nv.frozenCount, 0, "unfrozen");
        assertEq(nv.slashCount, 1);
        assertEq(tm.claimable(validator1), CHALLENGE_BOND + challengerReward);
        assertEq(tm.claimable(user), 0, "the refund is held until the request is shown");
        assertEq(tm.totalBurned(), burned);
        assertEq(BURN.balance, burned);
        assertEq(tm.challenges(id).refundDue, held);
        vm.expectEmit(address(tm));
        emit TaskManager.RefundClaimed(id, user, refund, burnedAtClaim);
        vm.prank(stranger); // anyone may show it: the refund goes to the request's signer
        assertEq(tm.claimRefund(id, r, _request(1, user, node)), refund);
        assertEq(tm.claimable(user), refund);
        assertEq(tm.challenges(id).refundDue, 0);
        assertEq(tm.totalBurned(), burned + burnedAtClaim);
        assertEq(BURN.balance, burned + burnedAtClaim);
        assertEq(refund + burnedAtClaim + burned + challengerReward + pool, slashed, "every wei of the slash");
        TaskManager.Challenge memory c = tm.challenges(id);
        assertTrue(c.status == TaskManager.ChallengeStatus.Fraud);
        assertEq(c.slashed, slashed);
        assertEq(c.rewardPool, pool);

        vm.prank(validator1);
        uint256 share1 = tm.claimVoteReward(id);
        vm.expectEmit(address(tm));
        emit TaskManager.VoteRewardClaimed(id, validator2, pool * 2 / 3 + CHALLENGE_BOND);
        vm.prank(validator2);
        uint256 share2 = tm.claimVoteReward(id) - CHALLENGE_BOND; // its vote bond back, and its share
        assertEq(share1, pool / 3, "the challenger's share (its vote is its challenge: no vote bond)");
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
        assertEq(tm.claimable(validator2), CHALLENGE_BOND + share2);
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
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND + pool * 2 / 5, "vote bond back and the share");
        vm.prank(validator3);
        assertEq(tm.claimVoteReward(id), CHALLENGE_BOND + pool * 3 / 5);
        vm.prank(validator1);
        vm.expectRevert(TaskManager.NotWinningVoter.selector);
        tm.claimVoteReward(id);

        vm.prank(node, node);
        tm.withdraw();
        assertEq(node.balance, CHALLENGE_BOND - pool);
    }

    /// @dev No quorum is no verdict: the node is not slashed, and the bond burns rather than go to
    ///      the node (which could otherwise let a correct challenge of its own decoy starve of
    ///      votes and pocket the finder's bond; test/Adversary.t.sol).
    function test_Resolve_NoQuorumBurnsTheBond() public {
        (uint256 id,,) = _openChallenge(); // only the challenger's 1 of 6 ether voted
        uint256 burnedBefore = tm.totalBurned();
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertFalse(tm.resolve(id));
        assertEq(tm.claimable(node), 0, "no verdict: nothing to the node");
        assertEq(tm.claimable(validator1), 0, "nor back to the challenger");
        assertEq(tm.totalBurned() - burnedBefore, CHALLENGE_BOND);
        assertEq(tm.challenges(id).rewardPool, 0);
    }

    /// @dev Cleared by a quorum: the node gets the bond less the honest voters' pool.
    function test_Resolve_ClearedByQuorumPaysTheNode() public {
        (uint256 id,,) = _openChallenge();
        _vote(validator3, id, false); // honest 3 of 6 ether against the challenger's 1
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertFalse(tm.resolve(id));
        uint256 pool = CHALLENGE_BOND * VOTER_REWARD_BPS / 10_000;
        assertEq(tm.claimable(node), CHALLENGE_BOND - pool);
        assertEq(tm.challenges(id).rewardPool, pool);
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
        vm.prank(node, node);
        sm.requestUnbond(2 ether); // tries to run with the stake
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.OperatorFrozen.selector, 1));
        sm.withdrawUnbonded();

        assertTrue(tm.resolve(id));
        assertEq(sm.getNode(node).unbonding, 1 ether, "slash came out of unbonding stake");

        vm.prank(node, node);
        sm.withdrawUnbonded();
        assertEq(node.balance, 1 ether);
    }

    function test_Resolve_RefundCappedAndHeldForTheRequest() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        Receipt[] memory rs = new Receipt[](2);
        bytes32[] memory leaves = new bytes32[](2);
        rs[0] = _chargedReceipt(0, user, node, 50 ether); // a signed maxFee larger than the slash
        rs[1] = _receipt(1, user, 1 ether); // a requestHash nobody can show the request of
        leaves[0] = _leaf(rs[0]);
        leaves[1] = _leaf(rs[1]);
        uint256 batchId = _commitRoot(node, Merkle.root(leaves), 2);
        uint256 a = _challenge(validator1, batchId, 0, rs[0], Merkle.proof(leaves, leaves[0]));
        uint256 b = _challenge(validator1, batchId, 1, rs[1], Merkle.proof(leaves, leaves[1]));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(a);
        // the challenger was not sampled (no seed yet): its reward burns with the other half
        assertEq(tm.totalBurned(), 1 ether - 0.2 ether - 0.3 ether, "slash - pool - held refund");
        assertEq(tm.challenges(a).refundDue, 0.3 ether, "the cap, half the rest, is held");
        assertEq(
            tm.claimRefund(a, rs[0], _request(0, user, node, 50 ether)), 0.3 ether, "the maxFee capped at half the rest"
        );
        assertEq(tm.claimable(user), 0.3 ether);
        assertEq(tm.totalBurned(), 0.5 ether, "the whole cap refunded: nothing more burns");
        tm.resolve(b);
        TaskManager.Challenge memory c = tm.challenges(b);
        assertEq(c.slashed, 1 ether);
        assertEq(c.refundDue, 0.3 ether, "held: no request hashes to this requestHash");
        TaskRequest memory guess = _request(1, user, node);
        bytes32 guessHash = payments.hashTaskRequest(guess);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotTheRequest.selector, rs[1].requestHash, guessHash));
        tm.claimRefund(b, rs[1], guess);
        assertEq(tm.claimable(user), 0.3 ether, "the user field alone earns nothing");
        assertEq(sm.getNode(node).stake, 0);
    }

    function test_RevertWhen_RefundClaimedBeforeAFraudVerdict() public {
        (uint256 id,, Receipt memory r) = _openChallenge();
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotResolved.selector, id));
        tm.claimRefund(id, r, _request(1, user, node));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertFalse(tm.resolve(id), "1 of 6 ether: no quorum");
        vm.expectRevert(abi.encodeWithSelector(TaskManager.ChallengeNotResolved.selector, id));
        tm.claimRefund(id, r, _request(1, user, node));
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
        rs[0] = _chargedReceipt(0, address(r), node, 0.01 ether);
        uint256 batchId = _commitRoot(node, _leaf(rs[0]), 1);
        uint256 id = _challenge(validator1, batchId, 0, rs[0], new bytes32[](0));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        tm.resolve(id);
        tm.claimRefund(id, rs[0], _request(0, address(r), node, 0.01 ether));
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
        vm.prank(node, node);
        sm.requestUnbond(unbond); // after the commit: must stay slashable
        uint256 id = _challenge(validator1, batchId, 0, rs[0], Merkle.proof(leaves, leaves[0]));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertTrue(tm.resolve(id));
        ServiceManager.NodeView memory v = sm.getNode(node);
        uint256 slashed = nodeStake < SLASH_AMOUNT ? nodeStake : SLASH_AMOUNT;
        assertEq(v.stake + v.unbonding, nodeStake - slashed);
        assertEq(address(sm).balance, nodeStake - slashed + 1 ether);
    }

    /// @dev Claims the refund of fraud verdict `id` (`held` held) with `request`; checks that what
    ///      the claim credits and burns add up to `held`, the burn counted and sent; returns the
    ///      credit.
    function _claimRefundChecked(uint256 id, Receipt memory r, TaskRequest memory request, uint256 held)
        internal
        returns (uint256 refund)
    {
        uint256 burnedBefore = tm.totalBurned();
        uint256 burnBalanceBefore = BURN.balance;
        refund = tm.claimRefund(id, r, request);
        assertEq(tm.totalBurned() - burnedBefore, held - refund, "the rest of the cap burns at the claim");
        assertEq(BURN.balance - burnBalanceBefore, held - refund, "sent to the burn address");
    }

    function testFuzz_FraudSplit(uint256 nodeStake, uint256 fee, bool sampled) public {
        if (sampled) _deployDevnet(); // every receipt sampled once the seed exists
        nodeStake = bound(nodeStake, MIN_NODE_STAKE, 5 ether);
        fee = bound(fee, 0, 10 ether);
        _registerNode(node, nodeStake);
        _registerValidator(validator1, 1 ether);
        Receipt memory r = _chargedReceipt(0, user, node, fee); // the user signed maxFee `fee`
        uint256 batchId = _commitRoot(node, _leaf(r), 1);
        if (sampled) _rollSealed(block.number + 2); // else: challenged before the seed exists
        uint256 id = _challenge(validator1, batchId, 0, r, new bytes32[](0));
        vm.warp(block.timestamp + VOTE_WINDOW + 1);
        assertTrue(tm.resolve(id));

        uint256 slashed = nodeStake < SLASH_AMOUNT ? nodeStake : SLASH_AMOUNT;
        uint256 cap = (slashed - slashed * CHALLENGER_REWARD_BPS / 10_000 - slashed * VOTER_REWARD_BPS / 10_000) / 2;
        TaskManager.Challenge memory c = tm.challenges(id);
        assertTrue((c.sampled != TaskManager.Pick.None) == sampled);
        assertEq(c.slashed, slashed);
        assertEq(c.refundDue, cap, "half the rest is held, whatever the fee");
        assertEq(address(tm).balance, tm.claimable(validator1) + c.refundDue + c.rewardPool, "refund held");
        uint256 refund = _claimRefundChecked(id, r, _request(0, user, node, fee), cap);
        assertEq(refund, fee < cap ? fee : cap, "the signed maxFee, up to the cap");
        uint256 challengerReward = tm.claimable(validator1) - CHALLENGE_BOND;
        if (!sampled) assertEq(challengerReward, 0, "no reward without the seed's pick");
        assertEq(challengerReward + c.rewardPool + tm.claimable(user) + tm.totalBurned(), slashed);
        assertEq(tm.claimable(user), refund);
        assertEq(address(tm).balance, tm.claimable(validator1) + tm.claimable(user) + c.rewardPool);
    }

    function testFuzz_IsSampledMatchesFormula(address validator, uint256 index, bytes32 blockHash) public {
        vm.assume(blockHash != bytes32(0));
        _registerNode(node, 1 ether);
        (uint256 batchId,,) = _commit(node, 16);
        index = bound(index, 0, 15);
        vm.roll(103);
        bytes memory header = _header(102, blockHash);
        vm.setBlockhash(102, keccak256(header));
        beacon.seal(102, header);
        bytes32 seed = keccak256(abi.encode(blockHash, batchId));
        assertEq(
            tm.isSampled(_ref(batchId), validator, index),
            uint256(keccak256(abi.encode(seed, validator, index))) % 1_000_000 < SAMPLE_RATE_PPM
        );
    }
}
