// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {TaskManager} from "./TaskManager.sol";
import {IPayments} from "./interfaces/IPayments.sol";
import {IServiceManager} from "./interfaces/IServiceManager.sol";
import {ClaimBond} from "./libraries/ClaimBond.sol";
import {MerkleLib} from "./libraries/MerkleLib.sol";
import {ReceiptLib} from "./libraries/ReceiptLib.sol";
import {Receipt, ReceiptPromise, TaskRequest} from "./libraries/Types.sol";

/// @title OmissionManager
/// @notice Omission challenges: a node signs, with each receipt, a `ReceiptPromise` to commit it
///         in one of its batches by `commitBy`. Sampling, fraud and availability challenges all
///         start from a committed leaf while payment rides on vouchers bound to no receipt, so
///         without this a node could fake a task, be paid and leave the receipt out of its
///         batches for free. A user shows the broken promise with a bond; the node shows the
///         receipt in a batch committed by then, or is slashed.
///         Manifest challenges: anyone claims, with a bond, that a committed batch's manifest
///         cannot be fetched; the node posts every receipt of the batch (the contract recomputes
///         the batch root from them), or is slashed. Which receipts a batch holds is then public,
///         so no check that must find a receipt by its task (a root's writer) can be stalled by a
///         manifest withheld: the receipt found, its entry can be challenged for availability.
/// @dev Its own contract (not a part of TaskManager, which is at the EIP-170 size limit): it reads
///      batches through `TaskManager.isCommitted`, takes its parameters from the TaskManager, and
///      the ServiceManager lets it freeze, unfreeze and slash (`setOmissionManager`). Payouts are
///      pulled from here ({withdraw}). Parameters: docs/security-parameters.md, "Omission".
contract OmissionManager is ReentrancyGuardTransient {
    /// @notice Lifecycle of an omission challenge.
    enum OmissionStatus {
        None,
        Open,
        Answered,
        Unanswered
    }

    /// @notice A user's claim that its node did not commit a receipt it promised
    ///         (`ReceiptPromise`) by `commitBy`. The node answers with the receipt's inclusion in a
    ///         batch committed by then, or is slashed.
    struct OmissionChallenge {
        address challenger;
        uint64 deadline;
        OmissionStatus status;
        address node;
        uint64 commitBy;
        bytes32 leaf;
        uint256 deposit; // what the claimant posted (ClaimBond)
    }

    /// @notice Lifecycle of a manifest challenge.
    enum ManifestStatus {
        None,
        Open,
        Answered,
        Unanswered
    }

    /// @notice A claim that batch `batchId`'s manifest cannot be fetched. The node answers by
    ///         posting the batch's receipts, or is slashed.
    struct ManifestChallenge {
        address challenger;
        uint64 deadline;
        ManifestStatus status;
        address node;
        uint256 batchId;
        uint256 deposit; // what the claimant posted (ClaimBond)
    }

    /// @notice Basis-point denominator.
    uint256 public constant BPS = 10_000;
    /// @notice Longest Merkle proof accepted.
    uint256 public constant MAX_PROOF_LENGTH = 32;
    /// @notice Where burned ETH goes.
    address public constant BURN_ADDRESS = 0x000000000000000000000000000000000000dEaD;

    /// @notice The operator registry (which lets this contract freeze, unfreeze and slash).
    IServiceManager public immutable SERVICE_MANAGER;
    /// @notice The EIP-712 domain (request and promise digests).
    IPayments public immutable PAYMENTS;
    /// @notice The batches (and the dispute parameters, read once at deployment).
    TaskManager public immutable TASK_MANAGER;
    /// @notice The fixed part of what a claimant posts (TaskManager's CHALLENGE_BOND); a claim
    ///         also covers its costliest answer at its block's base fee ({omissionBond},
    ///         {manifestBond}).
    uint256 public immutable CHALLENGE_BOND;
    /// @notice The least gas price answers are priced at (TaskManager's MIN_ANSWER_GAS_PRICE).
    uint256 public immutable MIN_ANSWER_GAS_PRICE;
    /// @notice Seconds after `commitBy` during which a promise can be claimed broken.
    uint256 public immutable CHALLENGE_WINDOW;
    /// @notice Seconds the node has to answer (TaskManager's VOTE_WINDOW).
    uint256 public immutable VOTE_WINDOW;
    /// @notice Wei slashed from a node that broke its promise.
    uint256 public immutable SLASH_AMOUNT;
    /// @notice Share (bps) of the slash paid to the claimant.
    uint256 public immutable CHALLENGER_REWARD_BPS;
    /// @notice Share (bps) of an answered claim's bond that burns.
    uint256 public immutable ANSWER_FEE_BPS;
    /// @notice Gas of an answer, paid to the node at the base fee.
    uint256 public immutable ANSWER_GAS;
    /// @notice Gas of the costliest manifest answer (MAX_BATCH_COUNT receipts).
    uint256 public immutable MANIFEST_WORST_GAS;
    /// @notice Longest a promise may run past its request's `deadline`: half the ServiceManager's
    ///         UNBONDING_PERIOD. A promise is due at `min(commitBy, deadline + MAX_PROMISE_DELAY)`,
    ///         so a node that promises a `commitBy` beyond the time its stake could leave (and
    ///         deregisters) is still claimable while the stake is there (contracts/test/Review3.t.sol);
    ///         a leaving node's claims may open earlier still (`_checkPromise`).
    uint256 public immutable MAX_PROMISE_DELAY;

    /// @notice Omission challenges opened so far (ids 1..omissionCount).
    uint256 public omissionCount;
    mapping(uint256 => OmissionChallenge) internal _omissions;
    /// @notice keccak256(abi.encode(node, leaf)) => the omission challenge of that promise (one ever).
    mapping(bytes32 => uint256) public promiseOmission;
    /// @notice Gas of a manifest answer per receipt posted, paid to the node at the base fee on
    ///         top of ANSWER_GAS: ~7,300 of execution (decoding, leaf hash, tree; measured at 512
    ///         receipts in test/Manifest.t.sol) and 224 calldata bytes (~3,600).
    uint256 public constant MANIFEST_RECEIPT_GAS = 11_000;
    /// @notice What an answer spends outside the span it meters (ClaimBond.costOfAnswer): dispatch
    ///         and guard before it, the split, its settle event and the burn after it (a credit to a
    ///         zero balance adds ClaimBond.NEW_SLOT_GAS; the unfreeze is metered); the same code for
    ///         both answers, measured on Anvil for each, tests/integration/test_answer_prices.py.
    uint256 public constant ANSWER_UNMETERED_GAS = 23_500;
    /// @notice Manifest challenges opened so far (ids 1..manifestCount).
    uint256 public manifestCount;
    mapping(uint256 => ManifestChallenge) internal _manifestChallenges;
    /// @notice batchId => its manifest challenge (one per batch ever: once answered the receipts
    ///         are on chain for good; once unanswered the node was slashed for it).
    mapping(uint256 => uint256) public batchManifest;
    /// @notice Wei each address can pull with {withdraw}.
    mapping(address => uint256) public claimable;
    /// @notice Wei burned so far.
    uint256 public totalBurned;

    /// @notice A user claims its node did not keep the promise to commit receipt `leaf` by `commitBy`.
    event OmissionChallenged(
        uint256 indexed omissionId,
        address indexed node,
        address indexed challenger,
        bytes32 leaf,
        bytes32 requestHash,
        uint64 commitBy,
        uint64 deadline
    );
    /// @notice The node showed the promised receipt at `index` of batch `batchId`.
    event OmissionAnswered(uint256 indexed omissionId, uint256 batchId, uint256 index);
    /// @notice An answered omission challenge's bond was split as for an availability answer
    ///         (emitted after OmissionAnswered, which the answer's price meters). Every answer's
    ///         unmetered tail is the same code: the split, one settle event of this shape, the burn;
    ///         what differs between answers is metered (an omission answer priced with the allowance
    ///         measured on manifest answers was paid 192 gas below its cost while its answered event,
    ///         five words, was emitted after the price: test_review_answer_prices2.py).
    event OmissionSettled(uint256 indexed omissionId, uint256 answerCost, uint256 refunded, uint256 burned);
    /// @notice An omission challenge expired unanswered: the node was slashed.
    event OmissionResolved(uint256 indexed omissionId, uint256 slashed, uint256 challengerReward, uint256 burned);
    /// @notice A manifest challenge on batch `batchId` of `node`, to be answered by `deadline`.
    event ManifestChallenged(
        uint256 indexed manifestId, uint256 indexed batchId, address indexed node, address challenger, uint64 deadline
    );
    /// @notice The node posted every receipt of batch `batchId`, in manifest order.
    event ManifestAnswered(uint256 indexed manifestId, uint256 indexed batchId, Receipt[] receipts);
    /// @notice An answered manifest challenge's bond was split as for an availability answer
    ///         (emitted after ManifestAnswered, whose receipts the answer's price meters).
    event ManifestSettled(uint256 indexed manifestId, uint256 answerCost, uint256 refunded, uint256 burned);
    /// @notice A manifest challenge expired unanswered: the node was slashed.
    event ManifestResolved(uint256 indexed manifestId, uint256 slashed, uint256 challengerReward, uint256 burned);
    /// @notice Someone pulled its claimable balance.
    event Withdrawn(address indexed account, uint256 amount);

    /// @notice The request's EIP-712 digest is not the promise's `requestHash`.
    error NotTheRequest(bytes32 expected, bytes32 given);
    /// @notice Less than the claim's bond ({omissionBond}, {manifestBond}).
    error WrongBond(uint256 sent, uint256 required);
    /// @notice The batch is not the node's committed batch.
    error UnknownBatch(uint256 batchId);
    /// @notice The Merkle proof does not prove the leaf at the index.
    error InvalidProof();
    /// @notice Longer than MAX_PROOF_LENGTH.
    error ProofTooLong(uint256 length);
    /// @notice The receipt shown is not the promised one.
    error NotChallengedReceipt(bytes32 expected, bytes32 given);
    /// @notice The answer window is over.
    error AnswerWindowClosed(uint64 deadline);
    /// @notice The answer window is still open.
    error AnswerWindowOpen(uint64 deadline);
    /// @notice Nothing to withdraw.
    error NothingToWithdraw();
    /// @notice A transfer failed.
    error TransferFailed();
    /// @notice Only the ServiceManager sends ETH here (slashed stake).
    error OnlyServiceManager();
    /// @notice The promise is not signed by the node the request names.
    error NotTheNodesPromise();
    /// @notice Only the request's user may claim its promise was broken.
    error NotTheRequestsUser(address user);
    /// @notice The promise's claim does not open before `opensAt` (its due time, or earlier for a
    ///         leaving node: `_checkPromise`).
    error PromiseNotDue(uint256 opensAt);
    /// @notice The promise can be challenged only within CHALLENGE_WINDOW after `commitBy`.
    error PromiseExpired(uint256 until);
    /// @notice This promise was already challenged.
    error PromiseAlreadyChallenged(uint256 omissionId);
    /// @notice No omission challenge with this id.
    error UnknownOmission(uint256 omissionId);
    /// @notice The omission challenge is not open.
    error OmissionNotOpen(uint256 omissionId);
    /// @notice The batch's manifest can no longer be claimed (half its challenge window is over).
    error ManifestWindowClosed(uint256 until);
    /// @notice This batch's manifest was already challenged.
    error ManifestAlreadyChallenged(uint256 manifestId);
    /// @notice No manifest challenge with this id.
    error UnknownManifestChallenge(uint256 manifestId);
    /// @notice The manifest challenge is not open.
    error ManifestChallengeNotOpen(uint256 manifestId);
    /// @notice A manifest answer must post exactly the batch's `count` receipts.
    error WrongReceiptCount(uint256 given, uint256 count);
    /// @notice The receipts posted do not hash to the batch's root.
    error NotTheManifest();
    /// @notice The batch shown was committed after the promise's `commitBy`.
    error CommittedTooLate(uint256 committedAt, uint256 commitBy);
    /// @notice The receipt is not the promised one (its leaf), or not of the request.
    error NotThePromisedReceipt();

    /// @param taskManager The TaskManager (its parameters are read here once).
    constructor(TaskManager taskManager) {
        TASK_MANAGER = taskManager;
        SERVICE_MANAGER = taskManager.SERVICE_MANAGER();
        PAYMENTS = taskManager.PAYMENTS();
        CHALLENGE_BOND = taskManager.CHALLENGE_BOND();
        MIN_ANSWER_GAS_PRICE = taskManager.MIN_ANSWER_GAS_PRICE();
        CHALLENGE_WINDOW = taskManager.CHALLENGE_WINDOW();
        VOTE_WINDOW = taskManager.VOTE_WINDOW();
        SLASH_AMOUNT = taskManager.SLASH_AMOUNT();
        CHALLENGER_REWARD_BPS = taskManager.CHALLENGER_REWARD_BPS();
        ANSWER_FEE_BPS = taskManager.AVAILABILITY_FEE_BPS();
        ANSWER_GAS = taskManager.ANSWER_FIXED_GAS();
        MANIFEST_WORST_GAS = ANSWER_GAS + taskManager.MAX_BATCH_COUNT() * MANIFEST_RECEIPT_GAS;
        MAX_PROMISE_DELAY = SERVICE_MANAGER.UNBONDING_PERIOD() / 2;
    }

    /// @notice Accepts slashed stake from the ServiceManager only.
    receive() external payable {
        if (msg.sender != address(SERVICE_MANAGER)) revert OnlyServiceManager();
    }

    /// @notice The user of a task claims its node broke the signed promise to commit the task's
    ///         receipt (leaf `pledge.leaf`) in one of its batches by `pledge.commitBy`: a receipt
    ///         never committed can be neither sampled nor challenged, so without this a node could
    ///         fake a task, be paid by the voucher and leave the receipt out for free. With at
    ///         least {omissionBond}, from the promise's due time (`commitBy`, bounded by the
    ///         request's deadline; earlier for a leaving node: `_checkPromise`) until CHALLENGE_WINDOW
    ///         after it, once per promise;
    ///         the node is frozen until it answers ({answerOmission}) or the deadline passes
    ///         ({resolveOmission}: slashed). Only the request's user may open it (the request's
    ///         digest must be the promise's `requestHash`), and only on the receipt of that
    ///         request: the promised leaf must be the receipt's, and the receipt's `requestHash`
    ///         the request's. A node signs promises of any leaf it likes, so without the receipt an
    ///         ally's claim on a promise made for the ally's own request could name a real user's
    ///         leaf and use up its one claim (keyed by node and leaf): the ally took the reward, or
    ///         the node answered with a late batch and escaped the user's claim.
    /// @dev A node keeps `commitBy` within CHALLENGE_WINDOW of its commit (its own promise),
    ///      so the batch's slot is still retained (BATCH_RETENTION) when the answer is due.
    /// @param pledge The node's promise (a `ReceiptPromise`).
    /// @param signature The node's EIP-712 signature of the promise.
    /// @param request The task's request (its user is the caller; its node signed the promise).
    /// @param receipt The receipt the node gave for the task (its leaf is the promise's).
    /// @return omissionId The new omission challenge.
    function challengeOmission(
        ReceiptPromise calldata pledge,
        bytes calldata signature,
        TaskRequest calldata request,
        Receipt calldata receipt
    ) external payable nonReentrant returns (uint256 omissionId) {
        _checkDeposit(ANSWER_GAS);
        if (ReceiptLib.leaf(receipt) != pledge.leaf || receipt.requestHash != pledge.requestHash) {
            revert NotThePromisedReceipt();
        }
        (address node, uint64 commitBy) = _checkPromise(pledge, signature, request);
        bytes32 key = keccak256(abi.encode(node, pledge.leaf));
        uint256 prior = promiseOmission[key];
        if (prior != 0) revert PromiseAlreadyChallenged(prior);
        unchecked {
            omissionId = ++omissionCount;
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 deadline = uint64(block.timestamp + VOTE_WINDOW);
        _omissions[omissionId] = OmissionChallenge({
            challenger: msg.sender,
            deadline: deadline,
            status: OmissionStatus.Open,
            node: node,
            commitBy: commitBy,
            leaf: pledge.leaf,
            deposit: 0
        });
        _omissions[omissionId].deposit = msg.value; // (a field of its own: stack depth)
        promiseOmission[key] = omissionId;
        emit OmissionChallenged(omissionId, node, msg.sender, pledge.leaf, pledge.requestHash, commitBy, deadline);
        SERVICE_MANAGER.freeze(node);
    }

    /// @notice The node (or anyone) shows the promised receipt in a batch of the node's committed
    ///         by `commitBy`: the receipt's leaf must be the promise's and sit at `index` of the
    ///         batch's tree. The bond pays the node what the answer costs at the base fee
    ///         (ANSWER_GAS), ANSWER_FEE_BPS burns, the claimant gets the rest.
    /// @param omissionId The open omission challenge.
    /// @param ref The header of the batch holding the receipt.
    /// @param index The receipt's position in the batch.
    /// @param receipt The receipt.
    /// @param proof Its Merkle proof at `index`.
    function answerOmission(
        uint256 omissionId,
        TaskManager.BatchRef calldata ref,
        uint256 index,
        Receipt calldata receipt,
        bytes32[] calldata proof
    ) external nonReentrant {
        ClaimBond.start();
        ClaimBond.requireCanonical(18 + proof.length);
        OmissionChallenge storage o = _openOmission(omissionId);
        if (block.timestamp >= o.deadline) revert AnswerWindowClosed(o.deadline);
        address node = o.node;
        if (ref.node != node || !TASK_MANAGER.isCommitted(ref)) revert UnknownBatch(ref.batchId);
        if (ref.committedAt > o.commitBy) revert CommittedTooLate(ref.committedAt, o.commitBy);
        if (proof.length > MAX_PROOF_LENGTH) revert ProofTooLong(proof.length);
        {
            bytes32 leaf = ReceiptLib.leaf(receipt);
            (bytes32 root, bool ok) = MerkleLib.rootAt(leaf, index, ref.count, proof);
            if (!ok || root != ref.root) revert InvalidProof();
            if (leaf != o.leaf) revert NotChallengedReceipt(o.leaf, leaf);
        }
        o.status = OmissionStatus.Answered;
        emit OmissionAnswered(omissionId, ref.batchId, index); // inside the metered span
        SERVICE_MANAGER.unfreeze(node, 0); // before the price: inside its metered span
        (uint256 answerCost, uint256 refunded, uint256 burned) =
            _splitBond(node, o.challenger, o.deposit, ANSWER_UNMETERED_GAS);
        emit OmissionSettled(omissionId, answerCost, refunded, burned);
        _send(BURN_ADDRESS, burned);
    }

    /// @notice Slashes the node of an omission challenge left unanswered past its deadline (anyone
    ///         may call): the user who claimed it gets its bond back plus CHALLENGER_REWARD_BPS of
    ///         the slash; the rest is burned.
    /// @param omissionId The omission challenge.
    function resolveOmission(uint256 omissionId) external nonReentrant {
        OmissionChallenge storage o = _openOmission(omissionId);
        if (block.timestamp < o.deadline) revert AnswerWindowOpen(o.deadline);
        o.status = OmissionStatus.Unanswered;
        address node = o.node;
        uint256 slashed = SERVICE_MANAGER.slash(node, SLASH_AMOUNT);
        uint256 reward = slashed * CHALLENGER_REWARD_BPS / BPS;
        uint256 burned = slashed - reward;
        claimable[o.challenger] += o.deposit + reward;
        totalBurned += burned;
        emit OmissionResolved(omissionId, slashed, reward, burned);
        SERVICE_MANAGER.unfreeze(node, 0);
        if (burned != 0) _send(BURN_ADDRESS, burned);
    }

    /// @notice Claims that the manifest of a committed batch cannot be fetched. Anyone may open it,
    ///         with at least {manifestBond}, in the first half of the batch's challenge window, once per
    ///         batch; the node is frozen until it answers ({answerManifest}) or the deadline passes
    ///         ({resolveManifest}: slashed). Per-entry availability challenges need an index, and
    ///         a check that must find a receipt by its task (the writer a memory or file root
    ///         names) cannot know it without the manifest: this makes the list itself public.
    ///         The answer is due by VOTE_WINDOW from the claim and at the latest three quarters
    ///         into the batch's window, so the entries it lists can still be claimed for
    ///         availability (which closes with the window): a node answering at the last moment
    ///         must not carry its traces past the window.
    /// @param ref The batch's header (checked against the TaskManager's slot).
    /// @return manifestId The new manifest challenge.
    function challengeManifest(TaskManager.BatchRef calldata ref)
        external
        payable
        nonReentrant
        returns (uint256 manifestId)
    {
        _checkDeposit(MANIFEST_WORST_GAS);
        if (!TASK_MANAGER.isCommitted(ref)) revert UnknownBatch(ref.batchId);
        uint256 until = uint256(ref.committedAt) + CHALLENGE_WINDOW / 2;
        if (block.timestamp >= until) revert ManifestWindowClosed(until);
        uint256 prior = batchManifest[ref.batchId];
        if (prior != 0) revert ManifestAlreadyChallenged(prior);
        unchecked {
            manifestId = ++manifestCount;
        }
        uint256 answerBy = uint256(ref.committedAt) + CHALLENGE_WINDOW * 3 / 4;
        uint256 due = block.timestamp + VOTE_WINDOW;
        // forge-lint: disable-next-line(unsafe-typecast)
        uint64 deadline = uint64(due < answerBy ? due : answerBy);
        address node = ref.node;
        _manifestChallenges[manifestId] = ManifestChallenge({
            challenger: msg.sender,
            deadline: deadline,
            status: ManifestStatus.Open,
            node: node,
            batchId: ref.batchId,
            deposit: msg.value
        });
        batchManifest[ref.batchId] = manifestId;
        emit ManifestChallenged(manifestId, ref.batchId, node, msg.sender, deadline);
        SERVICE_MANAGER.freeze(node);
    }

    /// @notice The node (or anyone) posts every receipt of the challenged batch in manifest
    ///         order; their leaves must hash to the batch's root (so no receipt can be left out,
    ///         added or moved). The bond pays the node what the answer costs at the base fee
    ///         (ANSWER_GAS plus MANIFEST_RECEIPT_GAS per receipt), ANSWER_FEE_BPS burns, the
    ///         claimant gets the rest. The receipts are in the ManifestAnswered event.
    /// @param manifestId The open manifest challenge.
    /// @param ref The challenged batch's header.
    /// @param receipts All of the batch's receipts, in order.
    function answerManifest(uint256 manifestId, TaskManager.BatchRef calldata ref, Receipt[] calldata receipts)
        external
        nonReentrant
    {
        ClaimBond.start();
        ClaimBond.requireCanonical(10 + 7 * receipts.length);
        ManifestChallenge storage m = _openManifest(manifestId);
        if (block.timestamp >= m.deadline) revert AnswerWindowClosed(m.deadline);
        if (ref.batchId != m.batchId || !TASK_MANAGER.isCommitted(ref)) revert UnknownBatch(ref.batchId);
        uint256 n = receipts.length;
        if (n != ref.count) revert WrongReceiptCount(n, ref.count);
        {
            bytes32[] memory leaves = new bytes32[](n);
            for (uint256 i; i < n; ++i) {
                leaves[i] = ReceiptLib.leaf(receipts[i]);
            }
            if (MerkleLib.rootOf(leaves) != ref.root) revert NotTheManifest();
        }
        m.status = ManifestStatus.Answered;
        address node = m.node;
        emit ManifestAnswered(manifestId, ref.batchId, receipts); // inside the metered span
        SERVICE_MANAGER.unfreeze(node, 0);
        (uint256 answerCost, uint256 refunded, uint256 burned) =
            _splitBond(node, m.challenger, m.deposit, ANSWER_UNMETERED_GAS);
        emit ManifestSettled(manifestId, answerCost, refunded, burned);
        _send(BURN_ADDRESS, burned);
    }

    /// @notice Slashes the node of a manifest challenge left unanswered past its deadline (anyone
    ///         may call): the claimant gets its bond back plus CHALLENGER_REWARD_BPS of the slash;
    ///         the rest is burned.
    /// @param manifestId The manifest challenge.
    function resolveManifest(uint256 manifestId) external nonReentrant {
        ManifestChallenge storage m = _openManifest(manifestId);
        if (block.timestamp < m.deadline) revert AnswerWindowOpen(m.deadline);
        m.status = ManifestStatus.Unanswered;
        address node = m.node;
        uint256 slashed = SERVICE_MANAGER.slash(node, SLASH_AMOUNT);
        uint256 reward = slashed * CHALLENGER_REWARD_BPS / BPS;
        uint256 burned = slashed - reward;
        claimable[m.challenger] += m.deposit + reward;
        totalBurned += burned;
        emit ManifestResolved(manifestId, slashed, reward, burned);
        SERVICE_MANAGER.unfreeze(node, 0);
        if (burned != 0) _send(BURN_ADDRESS, burned);
    }

    /// @notice The least an omission claim posts in this block: CHALLENGE_BOND plus its answer at
    ///         this block's base fee (ClaimBond). Send `CHALLENGE_BOND + ANSWER_GAS *
    ///         maxFeePerGas`; what the answer does not cost comes back.
    function omissionBond() external view returns (uint256) {
        return _least(ANSWER_GAS);
    }

    /// @notice The least a manifest claim posts in this block: CHALLENGE_BOND plus the costliest
    ///         answer (MAX_BATCH_COUNT receipts) at this block's base fee. Send `CHALLENGE_BOND +
    ///         MANIFEST_WORST_GAS * maxFeePerGas`; what the answer does not cost comes back.
    function manifestBond() external view returns (uint256) {
        return _least(MANIFEST_WORST_GAS);
    }

    /// @notice A manifest challenge.
    /// @param manifestId The manifest challenge.
    function manifestChallenges(uint256 manifestId) external view returns (ManifestChallenge memory) {
        ManifestChallenge storage m = _manifestChallenges[manifestId];
        if (m.status == ManifestStatus.None) revert UnknownManifestChallenge(manifestId);
        return m;
    }

    /// @notice Pays the caller its `claimable` balance (bonds back, rewards).
    function withdraw() external nonReentrant {
        uint256 amount = claimable[msg.sender];
        if (amount == 0) revert NothingToWithdraw();
        claimable[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    /// @notice An omission challenge.
    /// @param omissionId The omission challenge.
    function omissionChallenges(uint256 omissionId) external view returns (OmissionChallenge memory) {
        OmissionChallenge storage o = _omissions[omissionId];
        if (o.status == OmissionStatus.None) revert UnknownOmission(omissionId);
        return o;
    }

    /// @dev Checks that the caller may claim `pledge` broken now; returns the node that signed it
    ///      and the time the promise falls due: `commitBy`, or the request's `deadline` plus
    ///      MAX_PROMISE_DELAY if that is earlier (a user-signed bound the node cannot stretch). The
    ///      claim may be opened from then until CHALLENGE_WINDOW after it, or from earlier still,
    ///      CHALLENGE_WINDOW before a leaving node's stake may drop below SLASH_AMOUNT
    ///      (`stakeLeavesAt`: a node that is not active cannot commit, so its claim must be able to
    ///      open while the stake it would slash is still there; without it a far request deadline
    ///      let a node take the fee, deregister and withdraw before the claim opened). Only the
    ///      opening moves: the window still closes CHALLENGE_WINDOW after the due time, and the
    ///      answer needs a batch committed by the due time, so a node that comes back (tops up,
    ///      registers again) and commits within its promise answers an early claim (within
    ///      VOTE_WINDOW of the claim, as any answer).
    function _checkPromise(ReceiptPromise calldata pledge, bytes calldata signature, TaskRequest calldata request)
        internal
        view
        returns (address node, uint64 dueAt)
    {
        bytes32 digest = PAYMENTS.hashTaskRequest(request);
        if (digest != pledge.requestHash) revert NotTheRequest(pledge.requestHash, digest);
        if (msg.sender != request.user) revert NotTheRequestsUser(request.user);
        node = request.node;
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(PAYMENTS.hashReceiptPromise(pledge), signature);
        if (err != ECDSA.RecoverError.NoError || signer != node) revert NotTheNodesPromise();
        uint256 due = pledge.commitBy;
        if (request.deadline < type(uint64).max && request.deadline + MAX_PROMISE_DELAY < due) {
            due = request.deadline + MAX_PROMISE_DELAY;
        }
        uint256 opens = due;
        uint256 leaves = SERVICE_MANAGER.stakeLeavesAt(node, SLASH_AMOUNT);
        if (leaves > CHALLENGE_WINDOW && leaves - CHALLENGE_WINDOW < opens) opens = leaves - CHALLENGE_WINDOW;
        if (block.timestamp < opens) revert PromiseNotDue(opens);
        dueAt = type(uint64).max; // a due time past uint64 (no deadline bound) never closes
        if (due < type(uint64).max) {
            if (block.timestamp >= due + CHALLENGE_WINDOW) revert PromiseExpired(due + CHALLENGE_WINDOW);
            // forge-lint: disable-next-line(unsafe-typecast)
            dueAt = uint64(due);
        }
    }

    /// @dev Reverts unless the claim's deposit covers its costliest answer (ClaimBond).
    function _checkDeposit(uint256 worstGas) internal view {
        uint256 least = _least(worstGas);
        if (msg.value < least) revert WrongBond(msg.value, least);
    }

    /// @dev The least deposit of a claim whose costliest answer takes `worstGas` (ClaimBond).
    function _least(uint256 worstGas) internal view returns (uint256) {
        return ClaimBond.required(CHALLENGE_BOND, worstGas, ClaimBond.gasPrice(MIN_ANSWER_GAS_PRICE));
    }

    function _openOmission(uint256 omissionId) internal view returns (OmissionChallenge storage o) {
        o = _omissions[omissionId];
        if (o.status == OmissionStatus.None) revert UnknownOmission(omissionId);
        if (o.status != OmissionStatus.Open) revert OmissionNotOpen(omissionId);
    }

    function _openManifest(uint256 manifestId) internal view returns (ManifestChallenge storage m) {
        m = _manifestChallenges[manifestId];
        if (m.status == ManifestStatus.None) revert UnknownManifestChallenge(manifestId);
        if (m.status != ManifestStatus.Open) revert ManifestChallengeNotOpen(manifestId);
    }

    /// @dev Splits an answered claim's deposit (ClaimBond): ANSWER_FEE_BPS of the bond burned
    ///      (returned, for the caller to send), the answer's price (ClaimBond.costOfAnswer, with
    ///      `unmetered` for what runs outside its span) to the node (it owes the data, whoever posts
    ///      it: paid to the sender, a copy of its answer from the mempool took the price, Review11)
    ///      while the deposit lasts, the rest back to the claimant.
    function _splitBond(address node, address challenger, uint256 deposit, uint256 unmetered)
        internal
        returns (uint256 answerCost, uint256 refunded, uint256 burned)
    {
        burned = CHALLENGE_BOND * ANSWER_FEE_BPS / BPS;
        uint256 cost = ClaimBond.costOfAnswer(
            ClaimBond.tail(unmetered, challenger == node, claimable[node], claimable[challenger], totalBurned),
            ClaimBond.gasPrice(MIN_ANSWER_GAS_PRICE)
        );
        (answerCost, refunded) = ClaimBond.split(deposit, burned, cost);
        claimable[node] += answerCost;
        claimable[challenger] += refunded;
        totalBurned += burned;
    }

    function _send(address to, uint256 amount) internal {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed();
    }
}
