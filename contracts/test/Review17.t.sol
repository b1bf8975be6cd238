// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 17: the money of the dispute game (TaskManager, SeedBeacon, ServiceManager, Payments,
/// OmissionManager) against colluding rational parties: a node and a friendly validator, a user and
/// a validator, two validators. Looked at: the `Pick {None, BySeed, Everyone}` rule (a seed that
/// expired unsealed samples everyone; a decoy bounty needs `BySeed`), seals sent late or never, a
/// seal racing a challenge, decoy bounties, challenger rewards, vote quorums (stake added late,
/// stake leaving, one stake voting twice), stake locks against exits, ether left for good, loops a
/// party sizes. After Review3..16, Adversary*, DisputeRules and the known limits of
/// docs/security-parameters.md (not repeated here).
///
/// Found:
/// - MEDIUM. A node decides when a validator can check its batch, so it decides whether the seed is
///   still provable when the finder challenges, and with it whether a decoy it planted is ever
///   paid. docs/protocol.md ("Seeds", Review16) prices the `BySeed`-only bounty as "a validator
///   picked for a decoy that challenges only after the seed expired gets no bounty; a validator
///   checks a batch within minutes of its seed block, and its challenge seals it". Nobody seals
///   in the honest path (validators sample by the header), and the SDK seals only inside a
///   challenge or an availability claim (`_sealed_ref`), so a node that withholds the data past
///   the seed's horizon (8,191 blocks with EIP-2935: ~4.5 h of 2 s blocks; 256 blocks without) turns
///   every honest find into `Pick.Everyone` (FIXED off chain, by the next session: the validator
///   seals the seed block once its retries of an entry it cannot read are spent,
///   `Availability._seal`, and `seal_seed_block` seals a value `blockhash` alone holds; tests/integration/test_seed_beacon.py
///   tests both on Anvil, the two tests below model them and are now defences):
///   * withheld manifest: a validator waits for the manifest claim, sent near 40 % of the window
///     (`supernet.validator.manifests`: 9.6 h by default, no seal: `challengeManifest` is not a
///     per-entry claim) and its entries' availability claims wait for it (`_manifest_pending`);
///     the node answers the manifest at its deadline (paid its answer by the claimant); the finder
///     re-runs the decoy it was picked for and challenges: the seed is gone, the bounty is 0
///     (test_defence_AManifestWithheldPastTheSeedHorizonKeepsThePickedFindersBounty);
///   * `SOURCE = Blockhash` (the documented choice of OP-stack and Arbitrum chains): the value is
///     `known` without a seal while `blockhash` reaches it, so `seal_seed_block` never seals and an
///     availability claim does not either; the node answers the claim at the end of its window
///     (a day) and the finder's challenge is `Everyone`
///     (test_defence_UnderBlockhashAClaimSealsAndALateAnswerKeepsTheBounty).
///   The finder did the work (re-ran the decoy), paid the claim's fee and the node's answer, and is
///   paid nothing; the node pays no bounty and no claim's cost (its answers are paid by the
///   claimants). A node alone, with no friend and no cost, thus makes its decoys pay no honest
///   checker: the escrow (20 % of its fees) stops buying checks of its receipts (V1 of
///   docs/security-parameters.md), and the verifier's dilemma returns for exactly the node that
///   wants fewer checks; the premise of the documented price ("checks within minutes") is the
///   node's to break. (A friend that seals to collect its own picks seals for the finder too: the
///   withholding node gives up its friend's bounties on that seed block, or squats the rest, which
///   is Review11's known limit.) Fix by design: seal the seed block as soon as the validator finds
///   itself sampled for an entry it cannot read yet (one seal per seed block, ~55k gas; or always
///   when sampled, on chains whose horizon is shorter than a check), and in `seal_seed_block` seal
///   under `Blockhash` too while the value is only `known` through `blockhash` (a seal keeps it
///   past the horizon). On chain, alternatively: `challengeManifest` takes the seed block's header
///   and seals it (as a per-entry claim's SDK path does), and a fraud challenge by an entry's
///   availability claimant inherits the claim's recorded pick.
///
/// Checked and holding:
/// - Under `Prevrandao` the availability path keeps the pick: the SDK's claim seals the seed block
///   first, a sealed value outlives the horizon, and the finder's challenge after a late answer is
///   `BySeed` and paid (test_defence_APromptClaimsSealKeepsThePickPastALateAnswer).
/// - A seal racing a challenge: a challenge opened before the seed block is sealed is `None` for
///   good; sealing right after does not upgrade it at the reveal (the pick is recorded at the
///   challenge), so a friend cannot squat a decoy unsealed and be paid later
///   (test_defence_ThePickIsFixedWhenTheChallengeOpens).
/// - `Everyone` is for stake in place before the commit only: a validator that registers after the
///   commit (here before the seed expires) gets neither a fraud reward nor an availability reward
///   from an expired seed (test_defence_StakeAddedAfterTheCommitIsNeverPickedByAnExpiredSeed).
/// - `Everyone` never pays a decoy bounty, even to a validator the sealed seed would have picked
///   (the rule Review16 added; the other side of the finding above).
/// - Read, no test: ether conservation of every split (fraud: reward + pool + refund + burn =
///   slash + unopened bonds; not fraud: node + pool + burn = bond; availability/omission/manifest
///   answers: cost + refund + burn = deposit); every credit is written once per status change; the
///   quorum base is the settled stake at the challenge and a reveal weighs min(sealed, stake now),
///   the challenger's weight is fixed (Review11/13); loops are bounded by MAX_BATCH_COUNT,
///   MAX_RESERVE, MAX_REDEEM_BATCH and 32-level proofs; `calldataTokens` loops over the answer's own
///   calldata, paid by its sender. A node's escrow outlives the node by design ("no function returns
///   it"): test_known_limit_ADepartedNodesEscrowStaysInPaymentsForGood.
///
/// TaskManager's deployed size: 24,471 bytes, 105 under EIP-170 (`forge build --sizes`).

import {SeedBeacon} from "../src/SeedBeacon.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

contract Review17Test is Base {
    /// @dev Receipts in the decoy batch: the finder is picked for at least one of them.
    uint256 internal constant N = 32;
    /// @dev Block time of the chains the finding is about (OP-stack, Base).
    uint256 internal constant BLOCK_S = 2;
    /// @dev EIP-2935's reach: past it an unsealed seed block's value is gone.
    uint256 internal constant HORIZON = 8_192;

    address internal decoyUser;
    uint256 internal decoyKey;
    address internal finder;
    address internal friend;

    Receipt[] internal _decoys;
    bytes32[] internal _decoyLeaves;

    function setUp() public override {
        super.setUp();
        decoyUser = makeAddr("decoy");
        decoyKey = privateKeyOf("decoy");
        finder = validator1;
        friend = validator2;
    }

    /*//////////////////////////////////////////////////////////////
                                HELPERS
    //////////////////////////////////////////////////////////////*/

    /// @dev Node (2 ether, escrow for every decoy), the finder (1 ether) and the friend (2 ether),
    ///      all staked before the commit; a batch of N decoys of the node's own account.
    function _plantDecoys() internal returns (uint256 batchId) {
        _registerNode(node, 2 ether);
        _registerValidator(finder, 1 ether);
        _registerValidator(friend, 2 ether);
        vm.deal(node, node.balance + N * DECOY_BOUNTY);
        vm.prank(node, node);
        payments.fundEscrow{value: N * DECOY_BOUNTY}(node);
        for (uint256 i; i < N; ++i) {
            _decoys.push(_boundReceipt(i, decoyUser, node, 0.001 ether));
            _decoyLeaves.push(_leaf(_decoys[i]));
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        batchId = _commitRoot(node, Merkle.root(_decoyLeaves), uint32(N));
    }

    /// @dev The value the beacon holds (or would hold once sealed) for `b` in this suite: the
    ///      FakeHeader mix `_sealBlock` seals under Prevrandao, the block hash it sets under Blockhash.
    function _valueOf(uint256 b) internal view returns (bytes32) {
        return beacon.SOURCE() == SeedBeacon.Source.Prevrandao
            ? keccak256(abi.encode("mix", b))
            : keccak256(abi.encode("block", b));
    }

    /// @dev The first entry the seed block's value picks `who` for (what a validator computes from
    ///      the header, no transaction): `TaskManager._picks` with the seed `_seed` will hold.
    function _firstPick(uint256 batchId, address who) internal view returns (uint256) {
        TaskManager.BatchRef memory ref = _ref(batchId);
        bytes32 seed = keccak256(abi.encode(_valueOf(uint256(ref.commitBlock) + SEED_DELAY_BLOCKS), batchId));
        for (uint256 i; i < N; ++i) {
            if (uint256(keccak256(abi.encode(seed, who, i))) % 1_000_000 < SAMPLE_RATE_PPM) return i;
        }
        revert("not picked for any entry: change N");
    }

    /// @dev Moves `blocks` blocks of BLOCK_S seconds ahead.
    function _advance(uint256 blocks) internal {
        vm.roll(block.number + blocks);
        vm.warp(block.timestamp + blocks * BLOCK_S);
    }

    /// @dev Makes the seed block of `batchId` mined with its hash readable (no seal).
    function _mineSeedBlock(uint256 batchId) internal returns (uint256 seedBlock) {
        seedBlock = uint256(_ref(batchId).commitBlock) + SEED_DELAY_BLOCKS;
        _advance(SEED_DELAY_BLOCKS + 1);
        if (beacon.SOURCE() == SeedBeacon.Source.Blockhash) {
            vm.setBlockhash(seedBlock, _valueOf(seedBlock));
        } else {
            vm.setBlockhash(seedBlock, keccak256(_header(seedBlock, _valueOf(seedBlock))));
        }
    }

    /// @dev What the SDK's `seal_seed_block` does (before a challenge or an availability claim,
    ///      and once a validator's retries of an entry it cannot read are spent): seal the seed block
    ///      unless its value is stored or gone; under Blockhash a value readable through
    ///      `blockhash` is sealed too (a failed seal is logged and the dispute goes on).
    function _sdkSeal(uint256 seedBlock) internal {
        (bytes32 value, bool known) = beacon.randomness(seedBlock);
        if (known && value == bytes32(0)) return; // gone: the seed expired
        if (known && beacon.SOURCE() == SeedBeacon.Source.Prevrandao) return; // sealed
        try beacon.seal(seedBlock, _header(seedBlock, _valueOf(seedBlock))) {} catch {}
    }

    function _challengeDecoy(address who, uint256 batchId, uint256 i) internal returns (uint256) {
        return _challenge(who, batchId, i, _decoys[i], Merkle.proofAt(_decoyLeaves, i));
    }

    /// @dev The node shows the challenged receipt is its decoy; returns the bounty the challenger
    ///      was credited (its `claimable` grows by its bond plus the bounty).
    function _reveal(uint256 id, uint256 i) internal returns (uint256 bounty) {
        address challenger = tm.challenges(id).challenger;
        uint256 before = tm.claimable(challenger);
        bytes memory sig = signDigest(decoyKey, payments.hashDecoy(node, _decoys[i].requestHash));
        vm.prank(node, node);
        tm.revealDecoy(id, _decoys[i], _request(i, decoyUser, node), sig);
        bounty = tm.claimable(challenger) - before - CHALLENGE_BOND;
    }

    /// @dev The bounty a picked finder is owed (DECOY_BOUNTY less the node's rebate).
    function _owed() internal pure returns (uint256) {
        return DECOY_BOUNTY - DECOY_BOUNTY * DECOY_REBATE_BPS / 10_000;
    }

    /*//////////////////////////////////////////////////////////////
        1. A NODE THAT DELAYS ITS DATA PAST THE SEED'S HORIZON
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was an attack, MEDIUM; FIXED off chain, modelled here). Production windows,
    ///         2 s blocks with EIP-2935 (Base, OP). The node
    ///         (alone: no friend, no cost) plants N decoys and withholds the batch's manifest. The
    ///         finder computes its sample from the seed block's header (no transaction) and is
    ///         picked for decoy `i`, but cannot tell which receipt entry `i` is: it retries and
    ///         claims the manifest near 40 % of the window (9.6 h, as `supernet.validator.manifests`
    ///         does; a manifest claim seals nothing, and the entries' availability claims wait for
    ///         it). The node answers at the claim's deadline (three quarters into the window), paid
    ///         its answer by the claim. The finder re-runs decoy `i`, finds it faulty and challenges
    ///         through the SDK (whose seal found the value known: expired): the pick was
    ///         `Everyone` and the reveal paid no bounty. Now the finder seals the seed block once
    ///         its retries of the unreadable manifest are spent (`Availability._seal`, ~30 s),
    ///         and the validator the seed picked for the decoy is paid its bounty.
    function test_defence_AManifestWithheldPastTheSeedHorizonKeepsThePickedFindersBounty() public {
        uint256 batchId = _plantDecoys();
        TaskManager.BatchRef memory ref = _ref(batchId);
        uint256 i = _firstPick(batchId, finder);
        uint256 seedBlock = _mineSeedBlock(batchId);
        _advance(1);
        _sdkSeal(seedBlock); // the spent retries of the unreadable manifest seal it

        // The finder waits for the manifest: its claim near 40 % of the window.
        uint256 claimAt = uint256(ref.committedAt) + CHALLENGE_WINDOW / 2 - CHALLENGE_WINDOW / 10;
        _advance((claimAt - block.timestamp) / BLOCK_S);
        vm.assertGt(block.number, seedBlock + HORIZON, "the seed block's hash is gone");
        uint256 bond = om.manifestBond();
        vm.deal(finder, finder.balance + bond);
        vm.prank(finder);
        uint256 mid = om.challengeManifest{value: bond}(ref);
        // The node answers at the claim's deadline.
        uint64 due = om.manifestChallenges(mid).deadline;
        _advance((due - 1 - block.timestamp) / BLOCK_S);
        vm.prank(node, node);
        om.answerManifest(mid, ref, _decoys);

        // The finder re-runs entry i (a decoy: faulty) and challenges through the SDK.
        _sdkSeal(seedBlock);
        uint256 id = _challengeDecoy(finder, batchId, i);
        emit log_named_uint(
            "pick of the finder's challenge (0 None, 1 BySeed, 2 Everyone)", uint256(tm.challenges(id).sampled)
        );
        uint256 bounty = _reveal(id, i);
        emit log_named_uint("bounty paid to the finder the seed picked (wei)", bounty);
        assertEq(bounty, _owed(), "the validator the seed picked for the decoy is paid its bounty");
    }

    /// @notice Defence (was an attack, MEDIUM, FIXED in the SDK: the same finding on a
    ///         `SOURCE = Blockhash` beacon, the documented
    ///         choice of chains without a usable prevrandao). The value of a seed block is `known`
    ///         while `blockhash` reaches it, so neither sampling nor the SDK's claim seals it
    ///         (`seal_seed_block` returned when `known`). The finder is picked for decoy `i`, cannot
    ///         fetch its trace and claims availability within a minute; the node answers at the end
    ///         of the claim's window (a day later, long past the 4.5 h horizon of 2 s blocks). The
    ///         finder re-ran the posted trace and challenged: `Everyone`, no bounty, after it paid
    ///         the claim's fee and the answer. Now `seal_seed_block` seals a value `blockhash`
    ///         alone holds, and the finder the seed picked is paid.
    function test_defence_UnderBlockhashAClaimSealsAndALateAnswerKeepsTheBounty() public {
        seedSource = SeedBeacon.Source.Blockhash;
        _deploy();
        uint256 batchId = _plantDecoys();
        TaskManager.BatchRef memory ref = _ref(batchId);
        uint256 i = _firstPick(batchId, finder);
        uint256 seedBlock = _mineSeedBlock(batchId);
        vm.assertTrue(tm.isSampled(ref, finder, i), "picked by the seed, readable without a seal");

        _advance(30); // a minute of retries
        _sdkSeal(seedBlock); // readable through blockhash alone: sealed
        uint256 aid = _claimAvailability(finder, batchId, i);
        assertTrue(tm.availabilityChallenges(aid).sampled, "the claim itself was picked");

        // The node answers at the end of the claim's window.
        _advance((tm.availabilityChallenges(aid).deadline - 1 - block.timestamp) / BLOCK_S);
        vm.assertGt(block.number, seedBlock + HORIZON, "the seed block's hash is gone");
        vm.prank(node, node);
        tm.answerAvailability(aid, ref, _decoys[i], Merkle.proofAt(_decoyLeaves, i), _trace(i));

        _sdkSeal(seedBlock); // sealed already: nothing to do
        uint256 id = _challengeDecoy(finder, batchId, i);
        emit log_named_uint(
            "pick of the finder's challenge (0 None, 1 BySeed, 2 Everyone)", uint256(tm.challenges(id).sampled)
        );
        uint256 bounty = _reveal(id, i);
        emit log_named_uint("bounty paid to the finder the seed picked (wei)", bounty);
        assertEq(bounty, _owed(), "the validator the seed picked for the decoy is paid its bounty");
    }

    /// @notice Defence (the control of the finding). Under `Prevrandao` the same late answer on
    ///         an availability claim keeps the pick: the SDK's claim seals the seed block first
    ///         (unknown until sealed), the sealed value outlives the horizon, and the finder's
    ///         challenge after the answer is `BySeed` and paid.
    function test_defence_APromptClaimsSealKeepsThePickPastALateAnswer() public {
        uint256 batchId = _plantDecoys();
        TaskManager.BatchRef memory ref = _ref(batchId);
        uint256 i = _firstPick(batchId, finder);
        uint256 seedBlock = _mineSeedBlock(batchId);
        _advance(30);
        _sdkSeal(seedBlock); // unknown: sealed
        uint256 aid = _claimAvailability(finder, batchId, i);
        _advance((tm.availabilityChallenges(aid).deadline - 1 - block.timestamp) / BLOCK_S);
        vm.assertGt(block.number, seedBlock + HORIZON, "past the horizon");
        vm.prank(node, node);
        tm.answerAvailability(aid, ref, _decoys[i], Merkle.proofAt(_decoyLeaves, i), _trace(i));
        uint256 id = _challengeDecoy(finder, batchId, i);
        assertEq(uint256(tm.challenges(id).sampled), uint256(TaskManager.Pick.BySeed));
        assertEq(_reveal(id, i), _owed(), "paid");
    }

    /*//////////////////////////////////////////////////////////////
                     2. A SEAL RACING A CHALLENGE
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. The friend squats a decoy it is picked for before anyone sealed (the
    ///         challenge is `None`), then seals in the next transaction, hoping the bounty is
    ///         judged at the reveal: it is not; the pick is the one recorded at the challenge. An
    ///         honest finder's challenge of the same leaf is refused either way
    ///         (LeafAlreadyChallenged: the squat is Review11's copied-challenge known limit).
    function test_defence_ThePickIsFixedWhenTheChallengeOpens() public {
        uint256 batchId = _plantDecoys();
        uint256 j = _firstPick(batchId, friend);
        uint256 seedBlock = _mineSeedBlock(batchId);
        uint256 id = _challengeDecoy(friend, batchId, j);
        assertEq(uint256(tm.challenges(id).sampled), uint256(TaskManager.Pick.None), "unsealed: None");
        _sdkSeal(seedBlock);
        (, bool known) = beacon.randomness(seedBlock);
        assertTrue(known, "sealed right after");
        assertTrue(tm.isSampled(_ref(batchId), friend, j), "the sealed seed picks the friend");
        assertEq(_reveal(id, j), 0, "the pick stays the challenge's: no bounty");
    }

    /*//////////////////////////////////////////////////////////////
               3. EVERYONE IS STAKE FROM BEFORE THE COMMIT
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. A seed that expired unsealed picks everyone, but only stake in place before
    ///         the commit: a validator registered after the commit, before the expiry (an address
    ///         ground after the fact, or stake bought to collect), challenges a real fault and claims an entry
    ///         unavailable once the seed is gone: the fraud verdict and the unanswered claim slash
    ///         the node, and both rewards burn.
    function test_defence_StakeAddedAfterTheCommitIsNeverPickedByAnExpiredSeed() public {
        _registerNode(node, 4 ether);
        _registerValidator(validator3, 3 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _commit(node, 4);
        address late = makeAddr("late");
        _registerValidator(late, 2 ether); // after the commit
        _mineSeedBlock(batchId);
        _advance(HORIZON + 1);
        assertEq(tm.batchSeed(_ref(batchId)), bytes32(0), "expired unsealed");
        assertTrue(tm.isSampled(_ref(batchId), late, 0), "every address is sampled");

        uint256 id = _challenge(late, batchId, 0, rs[0], Merkle.proofAt(leaves, 0));
        assertEq(uint256(tm.challenges(id).sampled), uint256(TaskManager.Pick.None), "late stake: None");
        uint256 aid = _claimAvailability(late, batchId, 1);
        assertFalse(tm.availabilityChallenges(aid).sampled, "late stake: not picked");
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "fraud");
        tm.resolveAvailability(aid);
        // bond back, deposit back, no reward from either slash
        assertEq(tm.claimable(late), CHALLENGE_BOND + tm.availabilityChallenges(aid).deposit, "no reward");

        // The control: validator3's stake predates the commit, so an expired seed picks it.
        (uint256 b2, Receipt[] memory rs2, bytes32[] memory l2) = _commit(node, 2);
        _mineSeedBlock(b2);
        _advance(HORIZON + 1);
        uint256 id2 = _challenge(validator3, b2, 0, rs2[0], Merkle.proofAt(l2, 0));
        assertEq(uint256(tm.challenges(id2).sampled), uint256(TaskManager.Pick.Everyone), "old stake: Everyone");
    }

    /*//////////////////////////////////////////////////////////////
                     4. ETHER LEFT IN A CONTRACT
    //////////////////////////////////////////////////////////////*/

    /// @notice Known limit (by design: docs/protocol.md "Decoys", "Nothing returns it to the
    ///         node"). A node's verification escrow leaves only as decoy bounties: a node that
    ///         deregisters and withdraws its stake leaves its escrow in Payments for good (it is
    ///         the verification share, spent whether or not validators find decoys; in effect
    ///         burned, but counted in Payments' balance, not in a burn total).
    function test_known_limit_ADepartedNodesEscrowStaysInPaymentsForGood() public {
        _registerNode(node, 2 ether);
        vm.deal(node, node.balance + 1 ether);
        vm.prank(node, node);
        payments.fundEscrow{value: 1 ether}(node);
        vm.prank(node);
        sm.deregister();
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        vm.prank(node);
        sm.withdrawUnbonded();
        (, uint256 escrow) = payments.account(node);
        assertEq(escrow, 1 ether, "the escrow stays");
        assertEq(address(payments).balance, 1 ether, "held by Payments with no way out but a bounty");
    }

    event log_named_uint(string key, uint256 val);
}
