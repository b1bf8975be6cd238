// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {IPayments} from "./interfaces/IPayments.sol";
import {IServiceManager} from "./interfaces/IServiceManager.sol";
import {ClaimBond} from "./libraries/ClaimBond.sol";
import {MerkleLib} from "./libraries/MerkleLib.sol";
import {ReceiptLib} from "./libraries/ReceiptLib.sol";
import {Receipt, TaskRequest} from "./libraries/Types.sol";
import {SeedBeacon} from "./SeedBeacon.sol";

/// @title TaskManager
/// @notice Batch commitments of task receipts, the sampling seed, and disputes: bonded
///         challenges with a Merkle proof, stake-weighted validator votes, resolution and the
///         slashing split. Parameters and their defaults: docs/security-parameters.md.
/// @dev Ids of batches and challenges start at 1 (0 means "none").
///
///      Batch records (docs/protocol.md, "Batches"): a commit writes one storage word, in a slot of
///      the committing node's own that the node picks, holding the batch's commit time and a
///      216-bit digest of its header ({BatchRef}). Everything that needs the batch later
///      (challenges, availability, seeds) passes the header, which is checked against that word.
///      A node reuses a slot once the batch in it can no longer be disputed (BATCH_RETENTION after
///      its commit), so a node's steady state rewrites its own existing slots instead of creating
///      one per batch (5,000 instead of 22,100 gas), and batch data lives in calldata and events.
///      The same transaction can settle the node's vouchers (Payments.settle): one transaction per
///      batch commits the receipts and collects their fees.
///
///      Time windows are half-open, [opened, deadline): an action *within* a window needs
///      `now < deadline`, an action *after* it `now >= deadline`, and a stake lock until `deadline`
///      releases at `now >= deadline`. So there is no second in which stake can leave and still be
///      challenged, or be withdrawn and still vote, whatever UNBONDING_PERIOD and the windows are.
///
///      Resolution rule (exact): with `base = ServiceManager.settledValidatorStake()` when the
///      challenge opened (stake added in that second cannot vote, so it does not count either),
///      fraud  <=>  fraudStake * 10_000 >= base * QUORUM_BPS  &&  fraudStake > honestStake.
///      The node is cleared iff honestStake >= fraudStake and honestStake alone reaches the quorum
///      (the mirror of the fraud rule: a fraud vote never carries "not fraud" over the quorum);
///      anything else is no verdict.
///
///      Fraud: `slashed = min(SLASH_AMOUNT, node stake + unbonding)` moves here; the challenger
///      gets its bond back plus, if the seed picked it for the receipt, CHALLENGER_REWARD_BPS of
///      `slashed`; VOTER_REWARD_BPS of `slashed` becomes a pool for the fraud voters (challenger
///      included), claimed pro rata to vote weight with {claimVoteReward}; `rest / 2` is held for
///      the user who signed the receipt's request, who gets its signed `maxFee` out of it
///      ({claimRefund}, the rest of it burned then); the remainder is burned (sent to 0x…dEaD, counted in `totalBurned`). Rewards come before the
///      refund so that a node cannot cancel its own slash by committing a fake receipt with a
///      huge fee paid to itself.
///
///      Not fraud: cleared, VOTER_REWARD_BPS of the bond is a pool for the honest voters (if any
///      voted) and the rest of the bond goes to the accused node; no verdict, the bond burns.
///
///      Decoy (docs/security-parameters.md, "Paying validators"): a node plants decoys, faulty
///      receipts of tasks it ran for accounts of its own, so that checking pays in an honest
///      network. When a challenged receipt is one, the node shows it with the receipt's user's
///      `Decoy(node, requestHash)` signature ({revealDecoy}) within the vote window: nobody is
///      slashed, the challenger gets its bond back and, if it was sampled for that receipt, the
///      decoy bounty from the node's verification escrow (Payments.payBounty: DECOY_BOUNTY less
///      the DECOY_REBATE_BPS that goes back to the node's earnings). A real user never signs a
///      Decoy, so a node cannot pass off a faulty answer it served to someone else as a decoy.
///
///      Every payout is credited to `claimable` and pulled with {withdraw}.
contract TaskManager is ReentrancyGuardTransient {
    /*//////////////////////////////////////////////////////////////
                                 TYPES
    //////////////////////////////////////////////////////////////*/

    /// @notice The header of one committed batch, as emitted in {BatchCommitted} and passed back
    ///         by whoever acts on the batch. Block number and timestamp are uint32: valid until
    ///         block 4_294_967_295 and the year 2106.
    struct BatchRef {
        uint256 batchId;
        address node;
        uint32 slot;
        uint32 count;
        uint32 commitBlock;
        uint32 committedAt;
        bytes32 root;
    }

    /// @notice Lifecycle of a challenge.
    enum ChallengeStatus {
        None,
        Open,
        Fraud,
        NotFraud,
        Decoy
    }

    /// @notice Whether the seed picked a challenger for the entry it challenged: `BySeed`, or
    ///         `Everyone` once the seed expired unsealed (fraud and availability rewards, paid from
    ///         a slash, go to any such finder; a decoy bounty, paid from the node's escrow, never:
    ///         a friend told where the decoys are would wait out the seed and take them all).
    enum Pick {
        None,
        BySeed,
        Everyone
    }

    /// @notice One challenge on one receipt leaf.
    struct Challenge {
        uint256 batchId;
        address challenger;
        uint64 openedAt;
        uint64 voteDeadline;
        ChallengeStatus status;
        address node;
        Pick sampled; // whether the seed picked the challenger (its reward and bounties need it)
        address user; // the receipt's `user` field (written by the node: shown, never paid)
        uint256 fee;
        bytes32 leaf;
        uint256 fraudStake;
        uint256 honestStake;
        uint256 slashed;
        uint256 rewardPool; // for the winning side's voters
        uint256 rewardClaimed;
        uint256 quorumBase; // totalValidatorStake when the challenge opened
        uint256 refundDue; // fraud: held for the request's user until {claimRefund}
        uint32 committed; // sealed votes (each with its VOTE_BOND), the challenger's not counted
        uint32 fraudVoters; // revealed "fraud" votes, the challenger's not counted
        uint32 honestVoters; // revealed "not fraud" votes
    }

    /// @notice Lifecycle of an availability challenge (docs/protocol.md, "Availability").
    enum AvailabilityStatus {
        None,
        Open,
        Answered,
        Unanswered
    }

    /// @notice A bonded claim that entry `index` of a batch (its receipt, or the trace the
    ///         receipt commits to) cannot be fetched. The node answers by posting both on chain.
    struct AvailabilityChallenge {
        uint256 batchId;
        address challenger;
        uint32 index;
        uint64 deadline;
        AvailabilityStatus status;
        address node;
        bool sampled; // the challenger was sampled for the entry (its reward needs it)
        uint256 deposit; // what the claimant posted (ClaimBond): the bond and the answer's cover
    }

    /// @notice One validator's vote on one challenge: sealed with {commitVote}, opened with
    ///         {revealVote}.
    struct VoteRecord {
        uint128 weight; // 0 = did not vote
        bool fraud; // meaningful once revealed
        bool rewardClaimed;
        bool revealed;
    }

    /*//////////////////////////////////////////////////////////////
                               CONSTANTS
    //////////////////////////////////////////////////////////////*/

    /// @notice Basis-point denominator.
    uint256 public constant BPS = 10_000;
    /// @notice Parts-per-million denominator of the sampling rate.
    uint256 public constant PPM = 1_000_000;
    /// @notice Longest Merkle proof accepted (a batch has at most 2**32 leaves).
    uint256 public constant MAX_PROOF_LENGTH = 32;
    /// @notice Where burned ETH goes.
    address public constant BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD;
    /// @notice Low bits of a batch slot word that hold the commit time (the rest is the digest).
    uint256 internal constant TIME_BITS = 40;
    /// @notice Most slots one {reserveSlots} call reserves.
    uint256 public constant MAX_RESERVE = 256;
    /// @notice Most receipts in one batch. Everything a batch's count sizes is bounded by it: a
    ///         validator's sample (it enumerates the entries), a manifest (MAX_MANIFEST_ENTRIES in
    ///         the SDK) and a manifest answer, which posts every receipt (324 + 224 bytes each:
    ///         ~115 KB at 512, under the 128 KiB a geth or op-geth pool accepts). Without it one
    ///         commit of count 2**32 - 1 cost a node one word and stalled every validator.
    uint256 public constant MAX_BATCH_COUNT = 512;
    /// @notice The word of a reserved, never used slot: commit time 1 (long past), no digest.
    uint256 internal constant RESERVED = 1;
    /// @notice Share (bps) of an answered availability challenge's bond that burns: what a false
    ///         claim costs its claimant beyond the answer it forced (and nobody's income).
    uint256 public constant AVAILABILITY_FEE_BPS = 1_000;
    /// @notice Gas of an availability answer besides its trace bytes (receipt, proof, storage): the
    ///         fixed part of the costliest answer a claim's deposit covers.
    uint256 public constant ANSWER_FIXED_GAS = 200_000; // measured: ~175k to execute + 21k + calldata
    /// @notice Gas per trace byte of the costliest answer: non-zero calldata at the EIP-7623 floor.
    uint256 public constant ANSWER_GAS_PER_BYTE = 40;
    /// @notice What an answer spends outside the span it meters (ClaimBond.costOfAnswer): the call's
    ///         dispatch and guard before it, the deposit's split and the burn after it (a credit to
    ///         a zero balance adds ClaimBond.NEW_SLOT_GAS; the stake lock and the unfreeze are
    ///         metered); measured on Anvil, tests/integration/test_answer_prices.py.
    uint256 public constant ANSWER_UNMETERED_GAS = 23_650;
    /// @notice Largest trace an answer may post (the SDK's MAX_TRACE_BYTES, 384 KiB): a kernel
    ///         saves none larger, and a committed larger one is its node's fault.
    uint256 public constant MAX_TRACE_BYTES = 393_216;
    /// @notice Gas of the costliest availability answer: what a claim's deposit covers at its
    ///         block's base fee on top of CHALLENGE_BOND (ClaimBond).
    uint256 public constant AVAILABILITY_WORST_GAS = ANSWER_FIXED_GAS + MAX_TRACE_BYTES * ANSWER_GAS_PER_BYTE;

    /*//////////////////////////////////////////////////////////////
                               IMMUTABLES
    //////////////////////////////////////////////////////////////*/

    /// @notice The operator registry.
    IServiceManager public immutable SERVICE_MANAGER;
    /// @notice The payment channels, settled in the commit's transaction.
    IPayments public immutable PAYMENTS;
    /// @notice Where each seed block's random value comes from (prevrandao through a header proof,
    ///         or the block hash; docs/protocol.md, "Seeds").
    SeedBeacon public immutable SEED_BEACON;
    /// @notice Blocks between a commit at block B and its seed block B + SEED_DELAY_BLOCKS (>= 1).
    uint256 public immutable SEED_DELAY_BLOCKS;
    /// @notice Probability, in ppm, that a given validator checks a given receipt.
    uint256 public immutable SAMPLE_RATE_PPM;
    /// @notice Seconds after a commit during which its receipts can be challenged.
    uint256 public immutable CHALLENGE_WINDOW;
    /// @notice Seconds after a challenge opens during which validators vote.
    uint256 public immutable VOTE_WINDOW;
    /// @notice The last REVEAL_WINDOW seconds of a vote (a third of VOTE_WINDOW, rounded up), when
    ///         sealed votes are opened; before them votes are only sealed ({commitVote}).
    uint256 public immutable REVEAL_WINDOW;
    /// @notice Exact wei a challenger posts.
    uint256 public immutable CHALLENGE_BOND;
    /// @notice Share (bps) of total validator stake that must vote for a fraud verdict.
    uint256 public immutable QUORUM_BPS;
    /// @notice Wei slashed from a node found cheating (capped at what it has).
    uint256 public immutable SLASH_AMOUNT;
    /// @notice Share (bps) of the slash paid to the challenger.
    uint256 public immutable CHALLENGER_REWARD_BPS;
    /// @notice Share (bps) of the slash (fraud) or of the bond (not fraud) for the winning voters.
    uint256 public immutable VOTER_REWARD_BPS;
    /// @notice The least gas price data claims' answers are priced at (ClaimBond.gasPrice): 0 where
    ///         the chain's base fee carries the price of gas (Ethereum and its rollups), the chain's
    ///         least accepted gas price where it does not (a zero or negligible base fee).
    uint256 public immutable MIN_ANSWER_GAS_PRICE;
    /// @notice Seconds after a commit until its slot can hold another batch:
    ///         2 * CHALLENGE_WINDOW + VOTE_WINDOW, the latest a dispute on it can still open (an
    ///         availability challenge at the end of the window, answered at the end of its vote
    ///         window, reopens the fraud window for CHALLENGE_WINDOW).
    uint256 public immutable BATCH_RETENTION;
    /// @notice A commit locks the node's stake until the end of its challenge window rounded up
    ///         to a multiple of LOCK_STEP (CHALLENGE_WINDOW / 16), so that the commits of one step
    ///         write the lock once: the stake stays locked at most LOCK_STEP longer.
    uint256 public immutable LOCK_STEP;

    /*//////////////////////////////////////////////////////////////
                                STORAGE
    //////////////////////////////////////////////////////////////*/

    /// @dev Id the next batch gets. Starts at 1 (set by the constructor), so the slot is never
    ///      written from zero: {batchCount} is `_nextBatchId - 1`.
    uint256 internal _nextBatchId = 1;
    /// @notice Id of the last challenge (= number of challenges).
    uint256 public challengeCount;
    /// @notice Wei each address can pull with {withdraw}.
    mapping(address => uint256) public claimable;
    /// @notice Wei burned so far.
    uint256 public totalBurned;
    /// @notice Latest challenge of keccak256(abi.encode(batchId, leaf)).
    mapping(bytes32 => uint256) public leafChallenge;

    /// @dev node => slot => (216-bit digest of the BatchRef << 40 | committedAt).
    mapping(address => mapping(uint256 => uint256)) internal _slots;
    mapping(uint256 => Challenge) internal _challenges;
    mapping(uint256 => mapping(address => VoteRecord)) internal _votes;
    /// @dev challengeId => validator => keccak256(abi.encode(challengeId, validator, fraud, salt)).
    mapping(uint256 => mapping(address => bytes32)) internal _commitments;
    /// @notice Availability challenges opened so far (ids 1..availabilityCount).
    uint256 public availabilityCount;
    mapping(uint256 => AvailabilityChallenge) internal _availability;
    /// @notice keccak256(abi.encode(batchId, index)) => the entry's latest availability challenge.
    mapping(bytes32 => uint256) public entryAvailability;
    /// @notice keccak256(abi.encode(batchId, index)) => when its data was posted on chain: a fraud
    ///         challenge on that entry stays possible for CHALLENGE_WINDOW after this time.
    mapping(bytes32 => uint256) public answeredAt;
    /// @notice keccak256(abi.encode(batchId, index)) => the end of the vote of the entry's first
    ///         fraud challenge that closed without a fraud verdict: a fraud challenge on that entry
    ///         stays possible for CHALLENGE_WINDOW after this time, once. A vote ends at least
    ///         VOTE_WINDOW after its challenge, so with VOTE_WINDOW >= CHALLENGE_WINDOW (the
    ///         defaults) a leaf a tie or a minority cleared could never be challenged again
    ///         (contracts/test/Review12.t.sol).
    mapping(bytes32 => uint256) public reopenedAt;
    /// @dev keccak256(abi.encode(batchId, index)) => the entry's latest fraud challenge, and back:
    ///      an availability challenge on the entry extends that challenge's vote (`_extendVote`).
    mapping(bytes32 => uint256) internal _entryChallenge;
    mapping(uint256 => bytes32) internal _challengeEntry;

    /*//////////////////////////////////////////////////////////////
                                 EVENTS
    //////////////////////////////////////////////////////////////*/

    /// @notice A node committed a batch of `count` receipts into its slot `slot`; the other
    ///         fields with `batchId` and `node` are the batch's {BatchRef}.
    event BatchCommitted(
        uint256 indexed batchId,
        address indexed node,
        uint32 slot,
        bytes32 root,
        uint32 count,
        uint32 commitBlock,
        uint32 committedAt,
        string manifestCid
    );
    /// @notice `node` reserved its empty slots `first` .. `first + count - 1`.
    event SlotsReserved(address indexed node, uint32 first, uint32 count);
    /// @notice A validator challenged one receipt of a batch.
    event ChallengeOpened(
        uint256 indexed challengeId,
        uint256 indexed batchId,
        address indexed challenger,
        address node,
        bytes32 leaf,
        bytes32 requestHash,
        uint64 voteDeadline,
        string evidenceCid
    );
    /// @notice An availability challenge on the challenged entry moved the vote's end to
    ///         `voteDeadline` (VOTE_WINDOW after the answer is due): voters who could not read the
    ///         trace vote once it is posted.
    event VoteExtended(uint256 indexed challengeId, uint64 voteDeadline);
    /// @notice A validator sealed its vote (and posted VOTE_BOND); the side shows at {Voted}.
    event VoteCommitted(uint256 indexed challengeId, address indexed validator, uint256 weight);
    /// @notice A validator's vote was opened (the challenger's implicit fraud vote included).
    event Voted(uint256 indexed challengeId, address indexed validator, bool fraud, uint256 weight);
    /// @notice A challenge was resolved, with the payout split (`refund`: held for the request's
    ///         user until {claimRefund}, which burns what exceeds its `maxFee`;
    ///         `challengerReward`: 0 for a challenger not sampled).
    event ChallengeResolved(
        uint256 indexed challengeId,
        bool fraud,
        uint256 fraudStake,
        uint256 honestStake,
        uint256 slashed,
        uint256 refund,
        uint256 challengerReward,
        uint256 voterPool,
        uint256 burned
    );
    /// @notice The challenged receipt was a decoy its node planted: the challenger got its bond
    ///         back plus `bounty`, the node's earnings `rebate` (both 0 if the challenger was not
    ///         sampled).
    event DecoyRevealed(
        uint256 indexed challengeId, address indexed node, address indexed challenger, uint256 bounty, uint256 rebate
    );
    /// @notice A winning voter's reward share was credited to `claimable`.
    /// @notice A fraud verdict's refund was credited to the user who signed the request: its
    ///         `maxFee` up to what the verdict held; `burned`, the rest of what was held.
    event RefundClaimed(uint256 indexed challengeId, address indexed user, uint256 amount, uint256 burned);
    event VoteRewardClaimed(uint256 indexed challengeId, address indexed validator, uint256 amount);
    /// @notice `account` pulled `amount` from `claimable`.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice Someone claims entry `index` of a batch cannot be fetched; the node must answer
    ///         by `deadline` or be slashed.
    event AvailabilityChallenged(
        uint256 indexed availabilityId,
        uint256 indexed batchId,
        address indexed challenger,
        address node,
        uint256 index,
        uint64 deadline
    );
    /// @notice The entry's receipt (with its proof) and the trace it commits to, posted on chain.
    event AvailabilityAnswered(
        uint256 indexed availabilityId,
        uint256 indexed batchId,
        uint256 index,
        Receipt receipt,
        bytes32[] proof,
        bytes trace
    );
    /// @notice An answered availability challenge's bond was split: `answerCost` (what posting the
    ///         trace costs at the block's base fee, capped) to the node, `refunded` to the
    ///         claimant, `burned` (AVAILABILITY_FEE_BPS of the bond) burned.
    event AvailabilitySettled(uint256 indexed availabilityId, uint256 answerCost, uint256 refunded, uint256 burned);
    /// @notice An availability challenge expired unanswered: the node was slashed.
    event AvailabilityResolved(
        uint256 indexed availabilityId, uint256 slashed, uint256 challengerReward, uint256 burned
    );

    /*//////////////////////////////////////////////////////////////
                                 ERRORS
    //////////////////////////////////////////////////////////////*/

    /// @notice A constructor argument is out of range.
    error InvalidParameter();
    /// @notice The caller is not an active node.
    error NotActiveNode();
    /// @notice The caller is not an active validator.
    error NotActiveValidator();
    /// @notice A batch needs at least one receipt and a non-zero root.
    error EmptyBatch();
    /// @notice More receipts than MAX_BATCH_COUNT.
    error BatchTooLarge(uint256 count);
    /// @notice The header is not the batch its node's slot holds (wrong field, or the slot was
    ///         reused after BATCH_RETENTION).
    error UnknownBatch(uint256 batchId);
    /// @notice The node's slot holds a batch that can still be disputed until `reusableAt`.
    error SlotInUse(uint32 slot, uint256 reusableAt);
    /// @notice A reservation of 0 or more than MAX_RESERVE slots, or past the last slot.
    error BadReservation(uint256 count);
    /// @notice The seed block has not been mined yet.
    error SeedNotReady(uint256 seedBlock);
    /// @notice Receipt index past the batch's count.
    error IndexOutOfRange(uint256 index, uint256 count);
    /// @notice `msg.value` is not CHALLENGE_BOND (a challenge, a vote) or below an availability
    ///         claim's {availabilityBond}.
    error WrongBond(uint256 sent, uint256 required);
    /// @notice CHALLENGE_WINDOW after the commit has passed.
    error ChallengeWindowClosed(uint256 deadline);
    /// @notice The Merkle proof does not lead to the batch root.
    error InvalidProof();
    /// @notice The proof is longer than MAX_PROOF_LENGTH.
    error ProofTooLong(uint256 length);
    /// @notice This leaf already has an open challenge or was proven fraudulent.
    error LeafAlreadyChallenged(uint256 challengeId);
    /// @notice No challenge with this id.
    error UnknownChallenge(uint256 challengeId);
    /// @notice The challenge is not open.
    error ChallengeNotOpen(uint256 challengeId);
    /// @notice VOTE_WINDOW has passed.
    error VoteWindowClosed(uint64 deadline);
    /// @notice VOTE_WINDOW has not passed yet.
    error VoteWindowOpen(uint64 deadline);
    /// @notice The accused node cannot vote on its own challenge.
    error AccusedCannotVote();
    /// @notice The validator already voted on this challenge.
    error AlreadyVoted();
    /// @notice Votes are sealed until `revealsAt` and only opened from then on.
    error WrongVotePhase(uint64 revealsAt);
    /// @notice The revealed vote is not the one the caller sealed (or it sealed none).
    error NotTheCommittedVote();
    /// @notice The challenge is not resolved yet.
    error ChallengeNotResolved(uint256 challengeId);
    /// @notice The caller did not vote on the winning side.
    error NotWinningVoter();
    /// @notice The caller already claimed its reward for this challenge.
    error RewardAlreadyClaimed();
    /// @notice Nothing to withdraw.
    error NothingToWithdraw();
    /// @notice Only the ServiceManager sends ETH here (slashed stake).
    error OnlyServiceManager();
    /// @notice An ETH transfer failed.
    error TransferFailed();
    /// @notice The caller's stake (or part of it) was added after the challenge opened.
    error StakeTooRecent(uint64 openedAt);
    /// @notice No availability challenge with this id.
    error UnknownAvailabilityChallenge(uint256 availabilityId);
    /// @notice The availability challenge is not open.
    error AvailabilityNotOpen(uint256 availabilityId);
    /// @notice An availability challenge of this entry is already open.
    error AvailabilityAlreadyOpen(uint256 availabilityId);
    /// @notice The entry's data is already on chain.
    error AlreadyAnswered(uint256 batchId, uint256 index);
    /// @notice The answer window has passed.
    error AnswerWindowClosed(uint64 deadline);
    /// @notice The answer window has not passed yet.
    error AnswerWindowOpen(uint64 deadline);
    /// @notice The posted trace is not the one the receipt commits to (sha256 mismatch).
    error TraceMismatch(bytes32 expected, bytes32 posted);
    /// @notice A posted trace is over MAX_TRACE_BYTES.
    error TraceTooLarge(uint256 length);
    /// @notice The receipt given is not the challenged one.
    error NotChallengedReceipt(bytes32 expected, bytes32 given);
    /// @notice The request is not the receipt's, or the Decoy signature is not its user's.
    error NotADecoy();
    /// @notice Only the challenged node may reveal a decoy.
    error OnlyChallengedNode();
    /// @notice The request's EIP-712 digest is not the receipt's `requestHash`.
    error NotTheRequest(bytes32 expected, bytes32 given);

    /*//////////////////////////////////////////////////////////////
                              CONSTRUCTOR
    //////////////////////////////////////////////////////////////*/

    /// @param serviceManager The ServiceManager (which must then be wired with setTaskManager).
    /// @param payments The Payments contract (which must then be wired with setTaskManager).
    /// @param seedBeacon The source of the seed blocks' values (SEED_BEACON); SEED_DELAY_BLOCKS is
    ///        its DELAY_BLOCKS (1..256, default 2; devnet 1).
    /// @param sampleRatePpm SAMPLE_RATE_PPM, 1..1_000_000 (default 100_000 = 10 %; devnet 1_000_000).
    /// @param challengeWindow CHALLENGE_WINDOW seconds, > 0 (default 1 days; devnet 600).
    /// @param voteWindow VOTE_WINDOW seconds, > 0 (default 1 days; devnet 30).
    /// @param challengeBond CHALLENGE_BOND wei, > 0 (default 0.1 ether).
    /// @param quorumBps QUORUM_BPS, 1..10_000 (default 3_000).
    /// @param slashAmount SLASH_AMOUNT wei, > 0 (default 1 ether).
    /// @param challengerRewardBps CHALLENGER_REWARD_BPS (default 2_000).
    /// @param voterRewardBps VOTER_REWARD_BPS; challenger + voter <= 10_000 (default 2_000).
    /// @param minAnswerGasPrice MIN_ANSWER_GAS_PRICE wei (default 0).
    ///      The decoy bounty is a Payments parameter (it is paid from the escrow there) and must be
    ///      below the bond: a bounty at or above it would make challenging a node's receipts
    ///      blindly pay whenever that node plants many decoys.
    constructor(
        IServiceManager serviceManager,
        IPayments payments,
        SeedBeacon seedBeacon,
        uint256 sampleRatePpm,
        uint256 challengeWindow,
        uint256 voteWindow,
        uint256 challengeBond,
        uint256 quorumBps,
        uint256 slashAmount,
        uint256 challengerRewardBps,
        uint256 voterRewardBps,
        uint256 minAnswerGasPrice
    ) {
        if (
            address(serviceManager) == address(0) || address(payments) == address(0)
                || address(seedBeacon) == address(0)
        ) {
            revert InvalidParameter();
        }
        if (sampleRatePpm == 0 || sampleRatePpm > PPM) revert InvalidParameter();
        if (challengeWindow == 0 || challengeWindow > type(uint32).max) revert InvalidParameter();
        if (voteWindow < 2 || voteWindow > type(uint32).max) revert InvalidParameter();
        if (challengeBond == 0 || slashAmount == 0) revert InvalidParameter();
        if (quorumBps == 0 || quorumBps > BPS) revert InvalidParameter();
        if (challengerRewardBps + voterRewardBps > BPS) revert InvalidParameter();
        if (payments.DECOY_BOUNTY() >= challengeBond) revert InvalidParameter();
        SERVICE_MANAGER = serviceManager;
        PAYMENTS = payments;
        SEED_BEACON = seedBeacon;
        SEED_DELAY_BLOCKS = seedBeacon.DELAY_BLOCKS();
        SAMPLE_RATE_PPM = sampleRatePpm;
        CHALLENGE_WINDOW = challengeWindow;
        VOTE_WINDOW = voteWindow;
        REVEAL_WINDOW = (voteWindow + 2) / 3;
        CHALLENGE_BOND = challengeBond;
        QUORUM_BPS = quorumBps;
        SLASH_AMOUNT = slashAmount;
        CHALLENGER_REWARD_BPS = challengerRewardBps;
        VOTER_REWARD_BPS = voterRewardBps;
        MIN_ANSWER_GAS_PRICE = minAnswerGasPrice;
        BATCH_RETENTION = 3 * challengeWindow + 2 * voteWindow;
        LOCK_STEP = challengeWindow >= 16 ? challengeWindow / 16 : 1;
    }

    /// @notice Accepts slashed stake from the ServiceManager and decoy bounties from Payments only.
    receive() external payable {
        if (msg.sender != address(SERVICE_MANAGER) && msg.sender != address(PAYMENTS)) revert OnlyServiceManager();
    }

    /*//////////////////////////////////////////////////////////////
                                BATCHES
    //////////////////////////////////////////////////////////////*/

    /// @notice Commits a batch of receipts into the caller's slot `slot`, and settles the given
    ///         vouchers in the same transaction; the caller must be an active node. Its stake
    ///         stays locked until CHALLENGE_WINDOW after this commit (rounded up to LOCK_STEP).
    /// @param slot Any slot of the caller's that is empty or whose batch is past BATCH_RETENTION.
    /// @param root Merkle root of the receipt leaves (docs/protocol.md).
    /// @param count Number of receipts (> 0).
    /// @param manifestCid CID of the batch manifest (only emitted, not stored).
    /// @param vouchers Packed vouchers to redeem now (Payments.settle), or empty.
    /// @return batchId The new batch id (sequential from 1).
    function commitBatch(uint32 slot, bytes32 root, uint32 count, string calldata manifestCid, bytes calldata vouchers)
        external
        nonReentrant
        returns (uint256 batchId)
    {
        if (count == 0 || root == bytes32(0)) revert EmptyBatch();
        if (count > MAX_BATCH_COUNT) revert BatchTooLarge(count);
        // One call checks that the caller is an active node and locks its stake until the
        // challenge window of this batch ends (reverted with the rest if anything below fails).
        if (!SERVICE_MANAGER.lockActiveNode(msg.sender, _lockUntil(block.timestamp + CHALLENGE_WINDOW))) {
            revert NotActiveNode();
        }
        batchId = _store(slot, count, root);
        // forge-lint: disable-next-line(unsafe-typecast)
        emit BatchCommitted(
            batchId, msg.sender, slot, root, count, uint32(block.number), uint32(block.timestamp), manifestCid
        );
        if (vouchers.length != 0) PAYMENTS.settle(msg.sender, vouchers);
    }

    /// @notice Writes the caller's empty slots `first` .. `first + count - 1` once, so that its
    ///         commits into them rewrite an existing word (5,000 gas) instead of creating one
    ///         (22,100): a node pays for its slots when it sets up, not in its first batches.
    ///         Slots already written are left as they are.
    /// @param first The first slot.
    /// @param count How many (1..MAX_RESERVE).
    function reserveSlots(uint32 first, uint32 count) external {
        if (count == 0 || count > MAX_RESERVE || uint256(first) + count > type(uint32).max) {
            revert BadReservation(count);
        }
        mapping(uint256 => uint256) storage slots = _slots[msg.sender];
        uint256 end = uint256(first) + count;
        for (uint256 slot = first; slot < end; ++slot) {
            if (slots[slot] == 0) slots[slot] = RESERVED;
        }
        emit SlotsReserved(msg.sender, first, count);
    }

    /// @notice `keccak256(abi.encode(value, batchId))` with `value` the SEED_BEACON's value of the
    ///         seed block `commitBlock + SEED_DELAY_BLOCKS`. Reverts with SeedNotReady while that
    ///         value is unknown (the block is not mined, or its prevrandao not sealed yet); zero
    ///         once it is gone for good (nobody sealed it in time: then every validator is sampled
    ///         for every entry, {isSampled}).
    /// @param ref The batch's header.
    function batchSeed(BatchRef calldata ref) external view returns (bytes32) {
        return _knownSeed(ref);
    }

    /// @notice True iff `validator` must check receipt `index` of the batch:
    ///         `uint256(keccak256(abi.encode(seed, validator, index))) % 1_000_000 < SAMPLE_RATE_PPM`,
    ///         and true for every validator and entry once the seed expired unsealed: expiry
    ///         favours the checkers, so a batch nobody read in time is checked in full, never
    ///         left unchecked (sealing the seed block in time, SeedBeacon.seal, keeps the sample
    ///         small). Reverts with SeedNotReady while the seed is unknown.
    /// @param ref The batch's header.
    /// @param validator The validator address.
    /// @param index Receipt position in the manifest (< count).
    function isSampled(BatchRef calldata ref, address validator, uint256 index) external view returns (bool) {
        if (index >= ref.count) revert IndexOutOfRange(index, ref.count);
        return _picks(_knownSeed(ref), validator, index);
    }

    /*//////////////////////////////////////////////////////////////
                                DISPUTES
    //////////////////////////////////////////////////////////////*/

    /// @notice Challenges one receipt of a batch. The caller must be an active validator, send
    ///         exactly CHALLENGE_BOND and act within CHALLENGE_WINDOW of the commit. Freezes the
    ///         node and counts as the caller's fraud vote.
    /// @param ref The batch's header.
    /// @param index The receipt's position in the batch (< count).
    /// @param receipt The receipt (its leaf must be at `index` of the batch's tree).
    /// @param proof Merkle proof of the leaf at `index` (at most MAX_PROOF_LENGTH hashes).
    /// @param evidenceCid CID of the challenger's evidence (only emitted).
    /// @return challengeId The new challenge id (sequential from 1).
    function challenge(
        BatchRef calldata ref,
        uint256 index,
        Receipt calldata receipt,
        bytes32[] calldata proof,
        string calldata evidenceCid
    ) external payable nonReentrant returns (uint256 challengeId) {
        if (msg.value != CHALLENGE_BOND) revert WrongBond(msg.value, CHALLENGE_BOND);
        bytes32 leaf = _checkChallengeable(ref, index, receipt, proof);
        address node = ref.node;
        uint64 voteDeadline;
        (challengeId, voteDeadline) = _openChallenge(ref.batchId, node, receipt.user, receipt.fee, leaf);
        // Recorded now, while the seed is surely readable: the challenger reward and a decoy
        // bounty are paid only to a validator the seed picked for this receipt, so a friend of
        // the node who knows which receipts are faulty (or decoys) collects only where it was
        // sampled, not wherever it is first.
        _challenges[challengeId].sampled = _pick(ref, index);
        emit ChallengeOpened(
            challengeId, ref.batchId, msg.sender, node, leaf, receipt.requestHash, voteDeadline, evidenceCid
        );
        SERVICE_MANAGER.freeze(node);
        SERVICE_MANAGER.lockStake(msg.sender, voteDeadline);
        _bindEntry(challengeId, ref.batchId, index);
    }

    /// @notice Seals a vote on an open challenge: `commitment` is
    ///         `keccak256(abi.encode(challengeId, msg.sender, fraud, salt))` for a secret `salt`,
    ///         sent with VOTE_BOND (= CHALLENGE_BOND) before the last REVEAL_WINDOW seconds of the
    ///         vote. Once per validator; the accused node cannot vote; the weight is the caller's
    ///         validator stake now, locked until the vote ends. Sealed, a vote cannot be copied: a
    ///         validator that has not checked the receipt has only the challenger's side to go by.
    ///         The bond comes back with a vote on the side that wins a verdict (with a share of the
    ///         pool) or when there is no verdict; it goes to the winners' pool when the vote loses a
    ///         verdict or is never revealed, so a wrong or unopened vote costs what a wrong
    ///         challenge does.
    /// @param challengeId The challenge.
    /// @param commitment The sealed vote.
    function commitVote(uint256 challengeId, bytes32 commitment) external payable {
        Challenge storage c = _challenge(challengeId);
        if (c.status != ChallengeStatus.Open) revert ChallengeNotOpen(challengeId);
        uint64 revealsAt = c.voteDeadline - uint64(REVEAL_WINDOW);
        if (block.timestamp >= revealsAt) revert WrongVotePhase(revealsAt);
        if (msg.value != CHALLENGE_BOND) revert WrongBond(msg.value, CHALLENGE_BOND);
        if (msg.sender == c.node) revert AccusedCannotVote();
        VoteRecord storage record = _votes[challengeId][msg.sender];
        if (record.weight != 0 || record.revealed) revert AlreadyVoted();
        uint256 weight = SERVICE_MANAGER.votingStake(msg.sender, c.openedAt);
        if (weight == 0) {
            if (SERVICE_MANAGER.validatorStake(msg.sender) != 0) revert StakeTooRecent(c.openedAt);
            revert NotActiveValidator();
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        record.weight = uint128(weight);
        _commitments[challengeId][msg.sender] = commitment;
        ++c.committed;
        emit VoteCommitted(challengeId, msg.sender, weight);
        SERVICE_MANAGER.lockStake(msg.sender, c.voteDeadline);
    }

    /// @notice Opens the caller's sealed vote in the last REVEAL_WINDOW seconds of the vote and
    ///         counts it with the weight it was sealed with.
    /// @param challengeId The challenge.
    /// @param fraud The side sealed.
    /// @param salt The salt sealed.
    function revealVote(uint256 challengeId, bool fraud, bytes32 salt) external {
        Challenge storage c = _challenge(challengeId);
        if (c.status != ChallengeStatus.Open) revert ChallengeNotOpen(challengeId);
        uint64 deadline = c.voteDeadline;
        uint64 revealsAt = deadline - uint64(REVEAL_WINDOW);
        if (block.timestamp < revealsAt) revert WrongVotePhase(revealsAt);
        if (block.timestamp >= deadline) revert VoteWindowClosed(deadline);
        VoteRecord storage record = _votes[challengeId][msg.sender];
        if (
            record.revealed
                || _commitments[challengeId][msg.sender] != keccak256(abi.encode(challengeId, msg.sender, fraud, salt))
        ) revert NotTheCommittedVote();
        record.revealed = true;
        record.fraud = fraud;
        // the sealed weight, or less if stake left since (only the stake still here is at risk)
        uint256 weight = SERVICE_MANAGER.validatorStake(msg.sender);
        if (weight > record.weight) weight = record.weight;
        // forge-lint: disable-next-line(unsafe-typecast)
        record.weight = uint128(weight);
        if (fraud) {
            c.fraudStake += weight;
            ++c.fraudVoters;
        } else {
            c.honestStake += weight;
            ++c.honestVoters;
        }
        emit Voted(challengeId, msg.sender, fraud, weight);
        SERVICE_MANAGER.lockStake(msg.sender, deadline); // an extended vote locks to its new end
    }

    /// @notice Resolves a challenge after its vote window (anyone may call): applies the verdict,
    ///         slashes on fraud, credits every payout and unfreezes the node.
    /// @param challengeId The challenge.
    /// @return fraud The verdict.
    function resolve(uint256 challengeId) external nonReentrant returns (bool fraud) {
        Challenge storage c = _challenge(challengeId);
        if (c.status != ChallengeStatus.Open) revert ChallengeNotOpen(challengeId);
        if (block.timestamp < c.voteDeadline) revert VoteWindowOpen(c.voteDeadline);

        uint256 fraudStake = c.fraudStake;
        uint256 honestStake = c.honestStake;
        uint256 quorum = c.quorumBase * QUORUM_BPS;
        // Monotone in the honest side: fraud needs a quorum of fraud votes by themselves, so a
        // "not fraud" vote can never be what carries a cartel's challenge over the quorum.
        fraud = fraudStake * BPS >= quorum && fraudStake > honestStake;

        uint64 lockUntil;
        if (fraud) {
            c.status = ChallengeStatus.Fraud;
            _resolveFraud(challengeId, c);
        } else {
            c.status = ChallengeStatus.NotFraud;
            // the leaf stays open to one more challenge for a window from the vote's end (anchored
            // there, not at this call: the window must end within BATCH_RETENTION)
            // ... and holds the stake that challenge could slash until it ends, as a late
            // availability answer does (contracts/test/Review13.t.sol)
            bytes32 entry = _challengeEntry[challengeId];
            if (reopenedAt[entry] == 0) {
                reopenedAt[entry] = c.voteDeadline;
                lockUntil = _lockUntil(c.voteDeadline + CHALLENGE_WINDOW);
            }
            // The node earns the bond only when the validators cleared it (a quorum of "not
            // fraud" votes by themselves, at least the fraud side). Without such a verdict the
            // bond burns: were it paid to the node, a node could let a correct challenge of its
            // own decoy fail for lack of votes and pocket the finder's bond instead of revealing;
            // were the challenger's own vote counted toward clearing, a node's sock identity
            // could tie it and take the honest challenger's bond (contracts/test/Review3.t.sol).
            bool cleared = _cleared(c);
            uint256 pool = cleared ? CHALLENGE_BOND * VOTER_REWARD_BPS / BPS : 0;
            // No verdict because the node withheld the entry's data from the voters (an
            // availability claim on it left unanswered, for which the node is slashed): the
            // challenger, who had read it, gets its bond back instead of losing it to the withholding.
            bool withheld = !cleared && _withheld(challengeId);
            uint256 burned = cleared || withheld ? 0 : CHALLENGE_BOND;
            if (cleared) claimable[c.node] += CHALLENGE_BOND - pool;
            else if (withheld) claimable[c.challenger] += CHALLENGE_BOND;
            // The bonds of votes that lost the verdict go to the winners' pool; those of votes
            // never opened burn (in the pool, a voter sealing both sides under two identities
            // would win back the bond of the side it did not open; _unopened).
            if (cleared) pool += CHALLENGE_BOND * c.fraudVoters;
            burned += _unopened(c);
            c.rewardPool = pool;
            totalBurned += burned;
            emit ChallengeResolved(challengeId, false, fraudStake, honestStake, 0, 0, 0, pool, burned);
            if (burned != 0) _send(BURN_ADDRESS, burned);
        }
        SERVICE_MANAGER.unfreeze(c.node, lockUntil);
    }

    /// @notice The node shows that a challenged receipt is a decoy it planted: the receipt's
    ///         request (whose EIP-712 digest must be the receipt's `requestHash` and whose `node`
    ///         the challenged node) and that request's user's EIP-712 `Decoy(node, requestHash)`
    ///         signature, within the vote window. Closes the challenge without a vote: nobody is
    ///         slashed, the challenger gets its bond back and, if it was sampled for the receipt,
    ///         the bounty Payments.payBounty sends from the node's escrow. Votes already cast earn
    ///         nothing. Only the node may reveal (a user who signs Decoy messages for its own
    ///         honest tasks cannot spend the node's escrow), and the signer is the request's user,
    ///         not the receipt's `user` field (which the node writes): a real user never signs a
    ///         Decoy, so a real user's task cannot be passed off as one.
    /// @param challengeId The open challenge.
    /// @param receipt The challenged receipt (its leaf must be the challenge's).
    /// @param request The receipt's task request.
    /// @param signature The request's user's signature of `Payments.hashDecoy(node, requestHash)`.
    function revealDecoy(
        uint256 challengeId,
        Receipt calldata receipt,
        TaskRequest calldata request,
        bytes calldata signature
    ) external nonReentrant {
        Challenge storage c = _challenge(challengeId);
        if (c.status != ChallengeStatus.Open) revert ChallengeNotOpen(challengeId);
        if (block.timestamp >= c.voteDeadline) revert VoteWindowClosed(c.voteDeadline);
        address node = c.node;
        if (msg.sender != node) revert OnlyChallengedNode();
        bytes32 leaf = ReceiptLib.leaf(receipt);
        if (leaf != c.leaf) revert NotChallengedReceipt(c.leaf, leaf);
        if (request.node != node || PAYMENTS.hashTaskRequest(request) != receipt.requestHash) revert NotADecoy();
        (address signer, ECDSA.RecoverError err,) =
            ECDSA.tryRecover(PAYMENTS.hashDecoy(node, receipt.requestHash), signature);
        if (err != ECDSA.RecoverError.NoError || signer != request.user) revert NotADecoy();

        c.status = ChallengeStatus.Decoy;
        uint256 bounty;
        uint256 rebate;
        if (c.sampled == Pick.BySeed) (bounty, rebate) = PAYMENTS.payBounty(node);
        address challenger = c.challenger;
        claimable[challenger] += CHALLENGE_BOND + bounty;
        emit DecoyRevealed(challengeId, node, challenger, bounty, rebate);
        SERVICE_MANAGER.unfreeze(node, 0);
    }

    /// @notice Credits a fraud verdict's refund to the user who signed the challenged receipt's
    ///         request: `request` must be the one whose EIP-712 digest is the receipt's
    ///         `requestHash`. Anyone may call it (the refund goes to `request.user` whoever calls),
    ///         once. The refund is the request's `maxFee` (the fee the user was charged) up to the
    ///         amount held at the verdict (`refundDue`); what is held beyond it burns. The
    ///         receipt's `user` and `fee` fields play no part: a node that writes its own account
    ///         or a zero fee there steers neither the refund's payee nor its amount, and a receipt
    ///         whose request nobody can show refunds nobody (the refund stays held).
    /// @param challengeId A challenge resolved as fraud.
    /// @param receipt The challenged receipt (its leaf must be the challenge's).
    /// @param request The receipt's task request.
    /// @return amount Wei credited to `request.user`'s `claimable`.
    function claimRefund(uint256 challengeId, Receipt calldata receipt, TaskRequest calldata request)
        external
        returns (uint256 amount)
    {
        Challenge storage c = _challenge(challengeId);
        if (c.status != ChallengeStatus.Fraud) revert ChallengeNotResolved(challengeId);
        amount = c.refundDue;
        if (amount == 0) revert NothingToWithdraw();
        bytes32 leaf = ReceiptLib.leaf(receipt);
        if (leaf != c.leaf) revert NotChallengedReceipt(c.leaf, leaf);
        bytes32 digest = PAYMENTS.hashTaskRequest(request);
        if (digest != receipt.requestHash) revert NotTheRequest(receipt.requestHash, digest);
        c.refundDue = 0;
        uint256 burned;
        if (request.maxFee < amount) (amount, burned) = (request.maxFee, amount - request.maxFee);
        address user = request.user;
        claimable[user] += amount;
        emit RefundClaimed(challengeId, user, amount, burned);
        if (burned != 0) {
            totalBurned += burned;
            _send(BURN_ADDRESS, burned);
        }
    }

    /// @notice Credits what the caller's vote on a resolved challenge earned: on the side of a
    ///         verdict (fraud, or cleared), its VOTE_BOND back plus `rewardPool * weight /
    ///         winningStake` (rounded down; the dust stays in the contract; the challenger, whose
    ///         vote is its challenge, gets the share only); a revealed vote without a verdict, or
    ///         any sealed vote on a decoy, its bond back. A vote that lost a verdict or was never
    ///         revealed earns nothing: its bond went to the pool (or burned without a verdict).
    /// @param challengeId The challenge.
    /// @return amount Wei credited to `claimable`.
    function claimVoteReward(uint256 challengeId) external returns (uint256 amount) {
        Challenge storage c = _challenge(challengeId);
        ChallengeStatus status = c.status;
        if (status == ChallengeStatus.Open) revert ChallengeNotResolved(challengeId);
        VoteRecord storage record = _votes[challengeId][msg.sender];
        if (record.rewardClaimed) revert RewardAlreadyClaimed();
        bool bonded = msg.sender != c.challenger;
        bool fraudWon = status == ChallengeStatus.Fraud;
        bool verdict = fraudWon || (status == ChallengeStatus.NotFraud && _cleared(c));
        if (status == ChallengeStatus.Decoy) {
            // sealed (an opened vote may weigh 0: its stake left before it was opened)
            if ((record.weight == 0 && !record.revealed) || !bonded) revert NotWinningVoter();
            amount = CHALLENGE_BOND;
        } else if (!record.revealed || (verdict && record.fraud != fraudWon) || (!verdict && !bonded)) {
            revert NotWinningVoter();
        } else {
            if (verdict) {
                uint256 share = c.rewardPool * record.weight / (fraudWon ? c.fraudStake : c.honestStake);
                c.rewardClaimed += share;
                amount = share;
            }
            if (bonded) amount += CHALLENGE_BOND;
        }
        record.rewardClaimed = true;
        claimable[msg.sender] += amount;
        emit VoteRewardClaimed(challengeId, msg.sender, amount);
    }

    /// @notice Pays the caller its `claimable` balance (bonds, rewards, refunds).
    function withdraw() external nonReentrant {
        uint256 amount = claimable[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        claimable[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /*//////////////////////////////////////////////////////////////
                              AVAILABILITY
    //////////////////////////////////////////////////////////////*/

    /// @notice Claims that entry `index` of a batch (its receipt, or the trace the receipt commits
    ///         to) cannot be fetched. Anyone may open it, with at least {availabilityBond} (the
    ///         bond plus the costliest answer at this block's base fee), while the batch can
    ///         be challenged; the node is frozen until it is answered or resolved. After the OP
    ///         Stack's DataAvailabilityChallenge: the data goes on chain, or the node is slashed.
    /// @param ref The batch's header.
    /// @param index The entry's position (< count).
    /// @return availabilityId The new availability challenge.
    function challengeAvailability(BatchRef calldata ref, uint256 index)
        external
        payable
        nonReentrant
        returns (uint256 availabilityId)
    {
        _checkDeposit();
        _checkRef(ref);
        uint256 batchId = ref.batchId;
        if (index >= ref.count) revert IndexOutOfRange(index, ref.count);
        bytes32 key = keccak256(abi.encode(batchId, index));
        if (answeredAt[key] != 0) revert AlreadyAnswered(batchId, index);
        uint256 prior = entryAvailability[key];
        if (prior != 0) revert AvailabilityAlreadyOpen(prior); // open, or already slashed for
        uint256 deadline = uint256(ref.committedAt) + CHALLENGE_WINDOW;
        if (block.timestamp >= deadline) revert ChallengeWindowClosed(deadline);
        unchecked {
            availabilityId = ++availabilityCount;
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 answerBy = uint64(block.timestamp + VOTE_WINDOW);
        _availability[availabilityId] = AvailabilityChallenge({
            batchId: batchId,
            challenger: msg.sender,
            // forge-lint: disable-next-line(unsafe-typecast)
            index: uint32(index),
            deadline: answerBy,
            status: AvailabilityStatus.Open,
            node: ref.node,
            sampled: _pick(ref, index) != Pick.None,
            deposit: 0
        });
        _availability[availabilityId].deposit = msg.value; // (a field of its own: stack depth)
        entryAvailability[key] = availabilityId;
        address node = ref.node;
        emit AvailabilityChallenged(availabilityId, batchId, msg.sender, node, index, answerBy);
        SERVICE_MANAGER.freeze(node);
        _extendVote(key, answerBy);
    }

    /// @dev Records which entry a fraud challenge is on; while the entry's data is claimed
    ///      unavailable (an open availability challenge) its vote lasts until voters can read it.
    function _bindEntry(uint256 challengeId, uint256 batchId, uint256 index) internal {
        bytes32 entry = keccak256(abi.encode(batchId, index));
        _entryChallenge[entry] = challengeId;
        _challengeEntry[challengeId] = entry;
        uint256 claim = entryAvailability[entry];
        if (claim != 0 && _availability[claim].status == AvailabilityStatus.Open) {
            _extendVote(entry, _availability[claim].deadline);
        }
    }

    /// @dev A node that shows an entry's trace to its challenger alone would let the fraud vote
    ///      end for want of voters who can check it (the challenger's bond burned, the node never
    ///      slashed). So an availability challenge on an entry under an open fraud challenge moves
    ///      that vote's end to VOTE_WINDOW after the answer is due: answered, every voter reads the
    ///      posted trace in time; unanswered, the node is slashed and the bond refunded (`resolve`).
    ///      Once per entry (an entry has one availability challenge), so the vote stays bounded.
    function _extendVote(bytes32 entry, uint64 answerBy) internal {
        uint256 challengeId = _entryChallenge[entry];
        if (challengeId == 0) return;
        Challenge storage c = _challenges[challengeId];
        uint64 until = answerBy + uint64(VOTE_WINDOW);
        // Only while votes are sealed: extended once they open, a vote would reopen sealing with
        // its tally public (or, past its deadline, with the final tally) for copiers to seal.
        if (
            c.status != ChallengeStatus.Open || block.timestamp >= c.voteDeadline - REVEAL_WINDOW
                || until <= c.voteDeadline
        ) return;
        c.voteDeadline = until;
        emit VoteExtended(challengeId, until);
    }

    /// @dev Whether the challenge's entry was claimed unavailable and never answered: the node
    ///      kept the data from the voters (`resolveAvailability` slashes it for that). A claim
    ///      still open when the vote ends is past its answer deadline (`_extendVote`).
    function _withheld(uint256 challengeId) internal view returns (bool) {
        AvailabilityChallenge storage a = _availability[entryAvailability[_challengeEntry[challengeId]]];
        // past its answer deadline: a claim made after the votes opened (which extends nothing)
        // and not yet due must not save a challenger's bond from a vote that found no verdict
        return a.status == AvailabilityStatus.Unanswered
            || (a.status == AvailabilityStatus.Open && block.timestamp >= a.deadline);
    }

    /// @notice Answers an availability challenge by posting the entry's receipt (with its proof
    ///         at the challenged position) and the trace, whose sha256 must be the receipt's
    ///         `traceHash`. Anyone holding the data may answer; the bond pays the node what the
    ///         answer costs (AvailabilitySettled), burns AVAILABILITY_FEE_BPS, and the rest goes
    ///         back to the claimant.
    ///         A fraud challenge on the entry stays open for CHALLENGE_WINDOW from now.
    /// @param availabilityId The availability challenge.
    /// @param ref The header of the challenged batch.
    /// @param receipt The entry's receipt.
    /// @param proof Merkle proof of its leaf at the challenged position.
    /// @param trace The dag-cbor trace block (emitted in AvailabilityAnswered).
    function answerAvailability(
        uint256 availabilityId,
        BatchRef calldata ref,
        Receipt calldata receipt,
        bytes32[] calldata proof,
        bytes calldata trace
    ) external nonReentrant {
        ClaimBond.start();
        ClaimBond.requireCanonical(19 + proof.length + (trace.length + 31) / 32);
        AvailabilityChallenge storage a = _openAvailability(availabilityId);
        if (block.timestamp >= a.deadline) revert AnswerWindowClosed(a.deadline);
        uint256 batchId = a.batchId;
        uint256 index = a.index;
        if (ref.batchId != batchId) revert UnknownBatch(ref.batchId);
        _checkRef(ref);
        _checkEntry(ref, index, receipt, proof);
        if (trace.length > MAX_TRACE_BYTES) revert TraceTooLarge(trace.length);
        bytes32 posted = sha256(trace);
        if (posted != receipt.traceHash) revert TraceMismatch(receipt.traceHash, posted);
        a.status = AvailabilityStatus.Answered;
        answeredAt[keccak256(abi.encode(batchId, index))] = block.timestamp;
        emit AvailabilityAnswered(availabilityId, batchId, index, receipt, proof, trace);
        address node = a.node;
        // before the price: inside its metered span (a lock that moves writes a slot)
        // forge-lint: disable-next-line(unsafe-typecast)
        SERVICE_MANAGER.unfreeze(node, uint64(block.timestamp + CHALLENGE_WINDOW));
        _send(BURN_ADDRESS, _splitAnswerBond(availabilityId, a, node));
    }

    /// @notice Slashes the node of an availability challenge left unanswered past its deadline
    ///         (anyone may call): the challenger gets its bond back plus CHALLENGER_REWARD_BPS of
    ///         the slash, the rest is burned (nobody voted, and the user is unknown on chain).
    /// @param availabilityId The availability challenge.
    function resolveAvailability(uint256 availabilityId) external nonReentrant {
        AvailabilityChallenge storage a = _openAvailability(availabilityId);
        if (block.timestamp < a.deadline) revert AnswerWindowOpen(a.deadline);
        a.status = AvailabilityStatus.Unanswered;
        address node = a.node;
        uint256 slashed = SERVICE_MANAGER.slash(node, SLASH_AMOUNT);
        // Only a challenger the seed picked for the entry earns the reward (as for fraud).
        uint256 reward = a.sampled ? slashed * CHALLENGER_REWARD_BPS / BPS : 0;
        uint256 burned = slashed - reward;
        claimable[a.challenger] += a.deposit + reward;
        totalBurned += burned;
        emit AvailabilityResolved(availabilityId, slashed, reward, burned);
        SERVICE_MANAGER.unfreeze(node, 0);
        if (burned != 0) _send(BURN_ADDRESS, burned);
    }

    /// @notice The least an availability claim posts in this block: CHALLENGE_BOND plus the
    ///         costliest answer at its base fee (ClaimBond). A transaction cannot know the base fee
    ///         of the block it lands in, so send `CHALLENGE_BOND + AVAILABILITY_WORST_GAS *
    ///         maxFeePerGas`; what the answer does not cost comes back.
    function availabilityBond() public view returns (uint256) {
        return ClaimBond.required(CHALLENGE_BOND, AVAILABILITY_WORST_GAS, ClaimBond.gasPrice(MIN_ANSWER_GAS_PRICE));
    }

    /// @notice An availability challenge.
    /// @param availabilityId The availability challenge.
    function availabilityChallenges(uint256 availabilityId) external view returns (AvailabilityChallenge memory) {
        AvailabilityChallenge storage a = _availability[availabilityId];
        if (a.status == AvailabilityStatus.None) revert UnknownAvailabilityChallenge(availabilityId);
        return a;
    }

    /*//////////////////////////////////////////////////////////////
                                 VIEWS
    //////////////////////////////////////////////////////////////*/

    /// @notice Id of the last batch (= number of batches).
    function batchCount() external view returns (uint256) {
        unchecked {
            return _nextBatchId - 1;
        }
    }

    /// @notice What a node's batch slot holds: the commit time of its batch (0: never used) and
    ///         the top 216 bits of the batch header's digest.
    /// @param node The node.
    /// @param slot The slot.
    function batchSlot(address node, uint32 slot) external view returns (uint256 committedAt, bytes32 digest) {
        uint256 held = _slots[node][slot];
        return (uint40(held), bytes32(held >> TIME_BITS << TIME_BITS));
    }

    /// @notice True iff `ref` is the batch its node's slot holds now.
    /// @param ref The batch's header.
    function isCommitted(BatchRef calldata ref) external view returns (bool) {
        return _holds(ref);
    }

    /// @notice A challenge (reverts with UnknownChallenge if none).
    /// @param challengeId The challenge.
    function challenges(uint256 challengeId) external view returns (Challenge memory) {
        return _challenge(challengeId);
    }

    /// @notice How `validator` voted on a challenge (weight 0 = did not vote).
    /// @param challengeId The challenge.
    /// @param validator The validator.
    function getVote(uint256 challengeId, address validator) external view returns (VoteRecord memory) {
        return _votes[challengeId][validator];
    }

    /// @notice The Merkle leaf of a receipt (docs/protocol.md), for clients to test against.
    /// @param receipt The receipt.
    function hashReceipt(Receipt calldata receipt) external pure returns (bytes32) {
        return ReceiptLib.leaf(receipt);
    }

    /*//////////////////////////////////////////////////////////////
                                INTERNAL
    //////////////////////////////////////////////////////////////*/

    /// @dev Checks the header, the window, the proof and that the leaf is free; returns the leaf.
    function _checkChallengeable(
        BatchRef calldata ref,
        uint256 index,
        Receipt calldata receipt,
        bytes32[] calldata proof
    ) internal view returns (bytes32 leaf) {
        _checkRef(ref);
        uint256 batchId = ref.batchId;
        uint256 deadline = uint256(ref.committedAt) + CHALLENGE_WINDOW;
        if (block.timestamp >= deadline) {
            // Data posted late (an availability answer) gets a full window of its own: a node
            // must not escape a fraud challenge by answering at the last moment. So does a leaf
            // whose first challenge closed without a fraud verdict (`reopenedAt`).
            bytes32 entry = keccak256(abi.encode(batchId, index));
            if (!_inWindow(answeredAt[entry]) && !_inWindow(reopenedAt[entry])) revert ChallengeWindowClosed(deadline);
        }
        leaf = _checkEntry(ref, index, receipt, proof);
        uint256 prior = leafChallenge[keccak256(abi.encode(batchId, leaf))];
        if (prior != 0 && _challenges[prior].status != ChallengeStatus.NotFraud) revert LeafAlreadyChallenged(prior);
    }

    /// @dev Whether a window that opened at `from` (0: never) is still open.
    function _inWindow(uint256 from) internal view returns (bool) {
        return from != 0 && block.timestamp < from + CHALLENGE_WINDOW;
    }

    /// @dev The leaf of `receipt`, proven to sit at `index` of the (checked) batch `ref`'s tree.
    function _checkEntry(BatchRef calldata ref, uint256 index, Receipt calldata receipt, bytes32[] calldata proof)
        internal
        pure
        returns (bytes32 leaf)
    {
        if (proof.length > MAX_PROOF_LENGTH) revert ProofTooLong(proof.length);
        leaf = ReceiptLib.leaf(receipt);
        (bytes32 root, bool ok) = MerkleLib.rootAt(leaf, index, ref.count, proof);
        if (!ok || root != ref.root) revert InvalidProof();
    }

    /// @dev Stores a new challenge with the caller's fraud vote.
    function _openChallenge(uint256 batchId, address node, address user, uint256 fee, bytes32 leaf)
        internal
        returns (uint256 challengeId, uint64 voteDeadline)
    {
        // The challenge is the challenger's fraud vote, so it weighs what a vote would: stake added
        // in this second neither counts in the quorum base (settledValidatorStake) nor votes.
        uint256 weight = SERVICE_MANAGER.votingStake(msg.sender, block.timestamp);
        if (weight == 0) {
            if (SERVICE_MANAGER.validatorStake(msg.sender) != 0) revert StakeTooRecent(uint64(block.timestamp));
            revert NotActiveValidator();
        }
        unchecked {
            challengeId = ++challengeCount;
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        voteDeadline = uint64(block.timestamp + VOTE_WINDOW);
        Challenge storage c = _challenges[challengeId];
        c.batchId = batchId;
        c.challenger = msg.sender;
        c.openedAt = uint64(block.timestamp);
        c.voteDeadline = voteDeadline;
        c.status = ChallengeStatus.Open;
        c.node = node;
        c.user = user;
        c.fee = fee;
        c.leaf = leaf;
        c.fraudStake = weight;
        c.quorumBase = SERVICE_MANAGER.settledValidatorStake();
        leafChallenge[keccak256(abi.encode(batchId, leaf))] = challengeId;
        // forge-lint: disable-next-line(unsafe-typecast)
        _votes[challengeId][msg.sender] =
            VoteRecord({weight: uint128(weight), fraud: true, rewardClaimed: false, revealed: true});
        emit Voted(challengeId, msg.sender, true, weight);
    }

    /// @dev The validators cleared the node: "not fraud" votes reach the quorum by themselves and
    ///      are at least the fraud side.
    function _cleared(Challenge storage c) internal view returns (bool) {
        return c.honestStake >= c.fraudStake && c.honestStake * BPS >= c.quorumBase * QUORUM_BPS;
    }

    /// @dev The vote bonds of the votes sealed and never opened (they burn).
    function _unopened(Challenge storage c) internal view returns (uint256) {
        return CHALLENGE_BOND * (c.committed - c.fraudVoters - c.honestVoters);
    }

    function _resolveFraud(uint256 challengeId, Challenge storage c) internal {
        uint256 slashed = SERVICE_MANAGER.slash(c.node, SLASH_AMOUNT);
        uint256 fullReward = slashed * CHALLENGER_REWARD_BPS / BPS;
        uint256 voterPool = slashed * VOTER_REWARD_BPS / BPS;
        uint256 rest = slashed - fullReward - voterPool;
        // The reward of a challenger the seed did not pick burns: an ally of the node who takes
        // the leaf first (in the commit block, before the seed) recovers none of the slash.
        uint256 challengerReward = c.sampled != Pick.None ? fullReward : 0;
        // At most half of the rest refunds the user: the other half always burns, so a node that
        // slashes itself through an allied challenger and its own "user" address loses at least
        // (1 - CR - VR) / 2 of the slash (30 % at the defaults) instead of recovering it all. The
        // cap is held for whoever signed the receipt's request; {claimRefund} credits it the
        // signed maxFee out of it and burns the rest. Neither who nor how much is the node's word:
        // a receipt's `user` and `fee` fields are written by the node (review 18: a faulty receipt
        // saying `fee = 0` voided its victim's refund at no cost to the node).
        uint256 refund = rest / 2;
        uint256 burned = slashed - challengerReward - voterPool - refund + _unopened(c);
        voterPool += CHALLENGE_BOND * c.honestVoters; // the bonds of the votes that lost

        c.slashed = slashed;
        c.rewardPool = voterPool;
        c.refundDue = refund;
        claimable[c.challenger] += CHALLENGE_BOND + challengerReward;
        totalBurned += burned;
        emit ChallengeResolved(
            challengeId, true, c.fraudStake, c.honestStake, slashed, refund, challengerReward, voterPool, burned
        );
        if (burned != 0) _send(BURN_ADDRESS, burned);
    }

    /// @dev The deposit of an answered availability challenge pays for the answer it forced, after
    ///      the OP Stack's DataAvailabilityChallenge: AVAILABILITY_FEE_BPS of the bond burns, the
    ///      answerer (whoever posts the trace; the node when it answers itself) gets what posting
    ///      cost at the block's base fee (not the sender's gas price, which it would choose; the
    ///      calldata price only for a trace that was the transaction's own calldata,
    ///      `ClaimBond.costOfAnswer`), in full while the deposit lasts; the claimant gets the rest.
    ///      The node never earns more
    ///      than its cost: when it was paid the whole bond, withholding data on purpose to bait
    ///      availability challenges paid it a bond per validator it baited (and taught validators
    ///      to stop asking). A false claim still costs the claimant the answer and the fee, even
    ///      if it answers itself. Returns the wei to burn.
    function _splitAnswerBond(uint256 availabilityId, AvailabilityChallenge storage a, address node)
        internal
        returns (uint256 burned)
    {
        burned = CHALLENGE_BOND * AVAILABILITY_FEE_BPS / BPS;
        address claimant = a.challenger;
        uint256 unmetered =
            ClaimBond.tail(ANSWER_UNMETERED_GAS, claimant == node, claimable[node], claimable[claimant], totalBurned);
        (uint256 answerCost, uint256 refunded) = ClaimBond.split(
            a.deposit, burned, ClaimBond.costOfAnswer(unmetered, ClaimBond.gasPrice(MIN_ANSWER_GAS_PRICE))
        );
        // The node owes the data, so the node is paid for posting it, whoever sends the answer: paid
        // to the sender, a copy of the node's answer from the mempool landed first took the price
        // and left the node's own transaction to revert after paying its calldata (Review11).
        claimable[node] += answerCost;
        claimable[claimant] += refunded;
        totalBurned += burned;
        emit AvailabilitySettled(availabilityId, answerCost, refunded, burned);
    }

    /// @dev Reverts unless the claim's deposit covers {availabilityBond}.
    function _checkDeposit() internal view {
        uint256 least = availabilityBond();
        if (msg.value < least) revert WrongBond(msg.value, least);
    }

    function _openAvailability(uint256 availabilityId) internal view returns (AvailabilityChallenge storage a) {
        a = _availability[availabilityId];
        if (a.status == AvailabilityStatus.None) revert UnknownAvailabilityChallenge(availabilityId);
        if (a.status != AvailabilityStatus.Open) revert AvailabilityNotOpen(availabilityId);
    }

    /// @dev Gives the caller's batch the next id and writes its header's word into `slot`, which
    ///      must be empty or past BATCH_RETENTION.
    function _store(uint32 slot, uint32 count, bytes32 root) internal returns (uint256 batchId) {
        mapping(uint256 => uint256) storage slots = _slots[msg.sender];
        uint256 held = slots[slot];
        if (held != 0) {
            uint256 reusableAt = uint256(uint40(held)) + BATCH_RETENTION;
            if (block.timestamp < reusableAt) revert SlotInUse(slot, reusableAt);
        }
        unchecked {
            batchId = _nextBatchId++;
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        uint32 committedAt = uint32(block.timestamp);
        // forge-lint: disable-next-line(unsafe-typecast)
        slots[slot] =
            _word(_digest(batchId, msg.sender, slot, count, uint32(block.number), committedAt, root), committedAt);
    }

    /// @dev Reverts unless `ref` is the batch its node's slot holds.
    function _checkRef(BatchRef calldata ref) internal view {
        if (!_holds(ref)) revert UnknownBatch(ref.batchId);
    }

    /// @dev Whether `ref` is the batch its node's slot holds now (a header never committed has
    ///      committedAt 0, which no stored word carries).
    function _holds(BatchRef calldata ref) internal view returns (bool) {
        if (ref.committedAt == 0) return false;
        bytes32 digest = _digest(ref.batchId, ref.node, ref.slot, ref.count, ref.commitBlock, ref.committedAt, ref.root);
        return _slots[ref.node][ref.slot] == _word(digest, ref.committedAt);
    }

    /// @dev The digest of a batch header: the one encoding both the commit (from its own values)
    ///      and every later check (from the header passed back) hash.
    function _digest(
        uint256 batchId,
        address node,
        uint32 slot,
        uint32 count,
        uint32 commitBlock,
        uint32 committedAt,
        bytes32 root
    ) internal pure returns (bytes32) {
        return keccak256(abi.encode(batchId, node, slot, count, commitBlock, committedAt, root));
    }

    /// @dev 216 bits of digest (collisions need ~2**108 work) above 40 bits of commit time.
    function _word(bytes32 digest, uint32 committedAt) internal pure returns (uint256) {
        return (uint256(digest) >> TIME_BITS << TIME_BITS) | committedAt;
    }

    /// @dev The batch's seed and whether it is known: unknown while the beacon's value of the seed
    ///      block may still become known; known and zero once it is gone for good. `ref` must be
    ///      checked by the caller.
    function _seed(BatchRef calldata ref) internal view returns (bytes32 seed, bool known) {
        bytes32 value;
        (value, known) = SEED_BEACON.randomness(uint256(ref.commitBlock) + SEED_DELAY_BLOCKS);
        if (value != bytes32(0)) seed = keccak256(abi.encode(value, ref.batchId));
    }

    /// @dev The seed of `ref` (checked here), zero once it expired; reverts SeedNotReady while unknown.
    function _knownSeed(BatchRef calldata ref) internal view returns (bytes32 seed) {
        _checkRef(ref);
        bool known;
        (seed, known) = _seed(ref);
        if (!known) revert SeedNotReady(uint256(ref.commitBlock) + SEED_DELAY_BLOCKS);
    }

    /// @dev Whether the caller earns a challenger reward or a decoy bounty on entry `index` of
    ///      `ref` (checked by the caller): the seed is readable now and picks it, and it is an
    ///      active validator none of whose stake was added at or after the batch's commit. An
    ///      address picked by the seed costs nothing to find (an ally grinds keys until one is
    ///      picked, then registers it): only stake that was in place before anyone could know the
    ///      seed makes the pick worth paying.
    ///      A seed that expired unsealed picks everyone (as in {isSampled}: `Pick.Everyone`): a
    ///      batch nobody read in time pays whoever finds fraud in it, instead of burning the
    ///      finder's reward (decoy bounties excepted: {Pick}).
    function _pick(BatchRef calldata ref, uint256 index) internal view returns (Pick) {
        (bytes32 seed, bool known) = _seed(ref);
        if (!known || !_picks(seed, msg.sender, index) || SERVICE_MANAGER.votingStake(msg.sender, ref.committedAt) == 0)
        {
            return Pick.None;
        }
        return seed == bytes32(0) ? Pick.Everyone : Pick.BySeed;
    }

    /// @dev Whether a readable `seed` picks `validator` for receipt `index`; a zero seed (the seed
    ///      block is past and its hash gone, unsealed) picks everyone.
    function _picks(bytes32 seed, address validator, uint256 index) internal view returns (bool) {
        return seed == bytes32(0) || uint256(keccak256(abi.encode(seed, validator, index))) % PPM < SAMPLE_RATE_PPM;
    }

    /// @dev `until` rounded up to a multiple of LOCK_STEP.
    function _lockUntil(uint256 until) internal view returns (uint64) {
        uint256 step = LOCK_STEP;
        // forge-lint: disable-next-line(unsafe-typecast)
        return uint64((until + step - 1) / step * step);
    }

    function _challenge(uint256 challengeId) internal view returns (Challenge storage c) {
        c = _challenges[challengeId];
        if (c.status == ChallengeStatus.None) revert UnknownChallenge(challengeId);
    }

    function _send(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
