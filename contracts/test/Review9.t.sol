// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 9: claim deposits (ClaimBond). The three data claims now post at least CHALLENGE_BOND +
/// worstGas * block.basefee; on answer 10 % of the bond burns, the node is paid the answer's cost
/// at the answer block's base fee capped by `deposit - burned`, the rest goes back; unanswered, the
/// claimant gets its deposit back plus the reward.
///
/// Tried, and what was found:
/// - A node answers through a contract that builds the trace in memory (from a 32-byte seed) and
///   calls `answerAvailability`: the node is paid ANSWER_GAS_PER_BYTE (40, EIP-7623's calldata
///   floor) per trace byte for calldata its transaction never carried; its real cost is memory,
///   the event and the hashing (~1.8x less). A node whose sybil user's tasks leave seed-generated
///   traces withholds them and earns ~45 % of every claim's answer price. Before this change the
///   payment was capped at 90 % of the bond, so above ~10 gwei baiting lost money; now the cap is
///   the deposit, which grows with the base fee, and baiting pays at every base fee.
///   FIXED: the calldata price is paid only for an answer an account without code sent directly
///   (its trace was the transaction's calldata); any other answer is paid the gas metered in the
///   answer, and the answerer is paid, not the node (ClaimBond.costOfAnswer)
///   (test_defence_AContractAnswerIsPaidOnlyTheGasItSpentInTheAnswer). Since Review11 an answer
///   through a contract is refused altogether, and the node is paid whoever answers.
/// - The fixed price of an omission answer (ANSWER_GAS = ANSWER_FIXED_GAS, 200k, measured for an
///   availability answer) against what an omission answer costs: ~165k at most with its calldata at
///   the floor. holds (within the margin; no test).
/// - Money: claims of all three kinds with exact, overpaid and absurd (1e30 wei) deposits, at base
///   fees 0 / 10 / 1,000 gwei, answered at a higher or lower base fee than the claim's, or left
///   unanswered; every settlement tried twice; everything withdrawn. holds: each deposit is paid
///   out once, an overpaying claimant gets its excess back on both paths, the node never gets more
///   than `deposit - fee`, and both contracts end at zero
///   (test_defence_EveryDepositIsPaidOutOnceAndTheContractsEndEmpty).
/// - A node that is its own claimant (claims itself at a high base fee, answers itself, by a
///   contract or not): it gets back less than it posted; a claim never mints money.
///   holds (test_defence_ANodeThatClaimsItselfGetsBackLessThanItPosted).
/// - Fraud challenges: an availability claim's deposit and a fraud challenge on the same entry
///   (vote extended, the claim left unanswered: `_withheld`); the fraud pools never touch the
///   deposit and the counters of the freeze return to zero. holds
///   (test_defence_ADepositBesideAFraudChallengeIsSettledApart).
/// - The least deposit at its edges: one wei less refused for each kind, base fee 0 (the least is
///   the bond), a zero-length trace paid its fixed gas only. holds
///   (test_defence_TheLeastDepositIsExactAndAnEmptyTraceIsPaidItsFixedGas).
/// - Not tested here (see tests/unit/test_review_claim_deposits.py): the SDK's fee cap and value.
/// - Read, not tested: on a rollup (OP Stack) `block.basefee` is the L2 fee while most of an
///   answer's cost is the L1 data fee of its calldata, which neither the deposit nor the payment
///   counts: there the old asymmetry of Review8 stays whole.

import {OmissionManager} from "../src/OmissionManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {ClaimBond} from "../src/libraries/ClaimBond.sol";
import {Receipt, ReceiptPromise, TaskRequest} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice A node's answering contract: the trace is generated in memory from a seed (a keccak
///         chain: it looks random, has few zero bytes, and costs ~1 gas a byte to make), so the
///         transaction that answers carries 32 bytes of it, not 384 KiB.
contract Review9Answerer {
    /// @notice The trace of `seed`, `len` bytes: word i is keccak256(seed, i).
    function trace(bytes32 seed, uint256 len) public pure returns (bytes memory t) {
        t = new bytes(len);
        assembly ("memory-safe") {
            let p := add(t, 32)
            mstore(0, seed)
            for { let i := 0 } lt(mul(i, 32), len) { i := add(i, 1) } {
                mstore(32, i)
                mstore(add(p, mul(i, 32)), keccak256(0, 64))
            }
            mstore(add(p, len), 0) // clear what the last word wrote past the end
        }
    }

    function answer(
        TaskManager tm,
        uint256 id,
        TaskManager.BatchRef calldata ref,
        Receipt calldata r,
        bytes32[] calldata proof,
        bytes32 seed,
        uint256 len
    ) external {
        tm.answerAvailability(id, ref, r, proof, trace(seed, len));
    }
}

contract Review9Test is Base {
    uint256 internal constant FEE = CHALLENGE_BOND / 10; // AVAILABILITY_FEE_BPS of the bond
    /// @dev The seed of a sybil task's trace, and its length (TaskManager.MAX_TRACE_BYTES).
    bytes32 internal constant SEED = keccak256("the node's sybil task: write a 384 KiB file of noise");
    uint256 internal constant LEN = 393_216;

    /// @dev A batch of `n` receipts of `user` to `node` whose receipt 0 commits to `trace0`.
    function _batchWithTrace(bytes memory trace0, uint256 n)
        internal
        returns (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves)
    {
        (rs, leaves) = _receipts(n);
        rs[0].traceHash = sha256(trace0);
        leaves[0] = _leaf(rs[0]);
        // forge-lint: disable-next-line(unsafe-typecast)
        batchId = _commitRoot(node, Merkle.root(leaves), uint32(n));
    }

    /// @dev `who` claims entry `index` of `batchId` with `value` wei.
    function _claimWith(address who, uint256 batchId, uint256 index, uint256 value) internal returns (uint256) {
        vm.deal(who, who.balance + value);
        vm.prank(who);
        return tm.challengeAvailability{value: value}(_ref(batchId), index);
    }

    /*//////////////////////////////////////////////////////////////
                    1. THE NODE'S PRICE AGAINST ITS COST
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a known limit: a node earned from claims against it). The answer was
    ///         paid `(ANSWER_FIXED_GAS + 40 * bytes - 28 * zeroBytes) * basefee`, the price of the
    ///         trace as the answering transaction's calldata at EIP-7623's floor, whoever answered
    ///         and however. A contract that builds the trace in memory (the node controls its
    ///         traces: its own sybil user's tasks, e.g. an agent that writes a seed-generated file)
    ///         buys no calldata for it: each validator that claimed such a withheld entry paid the
    ///         node ~1.8x its cost (15.9 M gas paid, at most 8.9 M spent), ~0.14 ether per claim at
    ///         20 gwei. Now (`ClaimBond.costOfAnswer`) the calldata price is paid only where an
    ///         account without code sent the answer directly; an answer through a contract is paid
    ///         the gas metered in the answer itself (to the node, which owes the data, Review11).
    function test_defence_AContractAnswerIsPaidOnlyTheGasItSpentInTheAnswer() public {
        _registerNode(node, 3 ether);
        Review9Answerer answerer = new Review9Answerer();
        bytes memory trace0 = answerer.trace(SEED, LEN);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _batchWithTrace(trace0, 2);
        bytes32[] memory proof = Merkle.proofAt(leaves, 0);
        vm.fee(20 gwei);
        uint256 aid = _claimAvailability(validator1, batchId, 0);

        // since Review11 an answer through a contract is refused: the price is the answer's own
        // transaction, which a contract's call is not (a copy relayed that way paid the node
        // metered execution alone while its own transaction reverted after paying the calldata)
        TaskManager.BatchRef memory ref = _ref(batchId);
        vm.expectRevert(ClaimBond.AnswerNotDirect.selector);
        answerer.answer(tm, aid, ref, rs[0], proof, SEED, LEN);
        assertEq(uint8(tm.availabilityChallenges(aid).status), uint8(TaskManager.AvailabilityStatus.Open));
        vm.prank(node, node); // the node's own transaction: paid its calldata and execution
        tm.answerAvailability(aid, ref, rs[0], proof, trace0);
        assertEq(tm.claimable(address(answerer)), 0, "the contract is paid nothing");
        vm.assertGt(tm.claimable(node), (21_000 + 10 * LEN) * 20 gwei, "the node is paid its answer");
    }

    /*//////////////////////////////////////////////////////////////
                 2. EVERY DEPOSIT PAID OUT ONCE, IN FULL
    //////////////////////////////////////////////////////////////*/

    /// @dev Withdraws everything `who` can pull from both contracts.
    function _withdrawAll(address who) internal {
        if (tm.claimable(who) != 0) {
            vm.prank(who);
            tm.withdraw();
        }
        if (om.claimable(who) != 0) {
            vm.prank(who);
            om.withdraw();
        }
    }

    /// @dev The claims of {test_defence_EveryDepositIsPaidOutOnceAndTheContractsEndEmpty}.
    struct Six {
        uint256 batchA;
        uint256 batchB;
        uint256 av1;
        uint256 av2;
        uint256 av3;
        uint256 m4;
        uint256 o5;
        uint256 m6;
        uint256 dep3;
        uint256 dep4;
        uint256 dep5;
        uint256 dep6;
    }

    Six internal _six;
    Receipt[] internal _rsA;
    bytes32[] internal _leavesA;

    /// @dev Opens the six claims (see the test) and returns the omission's promised receipt.
    function _openSix() internal returns (Receipt memory r) {
        TaskRequest memory q;
        ReceiptPromise memory p;
        bytes memory sig;
        (q, r, p, sig) = _paidTaskWithPromise(9, 0.001 ether, type(uint64).max, block.timestamp + 60);
        for (uint256 k; k < 4; ++k) {
            _rsA.push(k == 0 ? r : _receipt(9 + k, user, 0.001 ether)); // entry k > 0: trace _trace(9 + k)
            _leavesA.push(_leaf(_rsA[k]));
        }
        Six storage x = _six;
        x.batchA = _commitRoot(node, Merkle.root(_leavesA), 4);
        (x.batchB,,) = _commit(node, 2);
        _rollSealed(block.number + 3);
        vm.warp(p.commitBy);

        // 1. availability, claimed at 10 gwei with 1e30 wei (answered at 50 gwei)
        vm.fee(10 gwei);
        x.av1 = _claimWith(stranger, x.batchA, 1, 1e30);
        // 2. availability, claimed at base fee 0 with the least, the bond (answered at 1,000 gwei)
        vm.fee(0);
        x.av2 = _claimWith(user2, x.batchA, 2, tm.availabilityBond());
        assertEq(tm.availabilityChallenges(x.av2).deposit, CHALLENGE_BOND);
        // 3. availability, claimed at 10 gwei with three times the least (never answered)
        vm.fee(10 gwei);
        x.dep3 = CHALLENGE_BOND + 3 * tm.AVAILABILITY_WORST_GAS() * 10 gwei;
        x.av3 = _claimWith(validator1, x.batchA, 3, x.dep3);
        // 4. manifest of A, claimed at 10 gwei with twice the least (answered at 5 gwei)
        x.dep4 = 2 * om.manifestBond();
        vm.deal(user2, user2.balance + x.dep4);
        vm.prank(user2);
        x.m4 = om.challengeManifest{value: x.dep4}(_ref(x.batchA));
        // 5. omission, claimed at 10 gwei with the least (answered at 12 gwei)
        x.dep5 = om.omissionBond();
        x.o5 = _claimOmission(user, p, sig, q, r);
        // 6. manifest of B, claimed at 1,000 gwei with the least plus 1 wei (never answered)
        vm.fee(1_000 gwei);
        x.dep6 = om.manifestBond() + 1;
        vm.deal(stranger, stranger.balance + x.dep6);
        vm.prank(stranger);
        x.m6 = om.challengeManifest{value: x.dep6}(_ref(x.batchB));
    }

    /// @notice Defence. Claims of the three kinds with exact, overpaid and absurd (1e30 wei)
    ///         deposits, opened at base fees 0, 10 and 1,000 gwei, answered at a higher or lower base
    ///         fee than their own or left unanswered: each claimant gets back exactly its deposit
    ///         less the fee and the answer's cost (capped by the deposit) or its deposit plus the
    ///         reward; the node never gets more than the deposit less the fee; a second settlement
    ///         of any of them reverts; the contracts hold exactly what they owe, and nothing once
    ///         everyone withdrew.
    function test_defence_EveryDepositIsPaidOutOnceAndTheContractsEndEmpty() public {
        _registerNode(node, 5 ether);
        _registerValidator(validator1, 1 ether);
        Receipt memory r = _openSix();
        Six memory x = _six;
        Receipt[] memory rs = _rsA;
        bytes32[] memory leaves = _leavesA;

        // each answer's price (ClaimBond.costOfAnswer), read off what the node is credited
        vm.fee(50 gwei);
        vm.startPrank(node, node);
        tm.answerAvailability(x.av1, _ref(x.batchA), rs[1], Merkle.proofAt(leaves, 1), _trace(10));
        uint256 cost1 = tm.claimable(node);
        vm.fee(1_000 gwei);
        tm.answerAvailability(x.av2, _ref(x.batchA), rs[2], Merkle.proofAt(leaves, 2), _trace(11));
        vm.fee(12 gwei);
        om.answerOmission(x.o5, _ref(x.batchA), 0, r, Merkle.proofAt(leaves, 0));
        uint256 cost5 = om.claimable(node);
        vm.fee(5 gwei);
        om.answerManifest(x.m4, _ref(x.batchA), rs);
        uint256 cost4 = om.claimable(node) - cost5;
        vm.stopPrank();
        vm.assertGt(cost1 * cost4 * cost5, 0, "every answer is paid");

        vm.warp(block.timestamp + VOTE_WINDOW);
        tm.resolveAvailability(x.av3);
        om.resolveManifest(x.m6);

        // every settlement is final
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityNotOpen.selector, x.av1));
        tm.resolveAvailability(x.av1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityNotOpen.selector, x.av3));
        tm.resolveAvailability(x.av3);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityNotOpen.selector, x.av2));
        tm.answerAvailability(x.av2, _ref(x.batchA), rs[2], Merkle.proofAt(leaves, 2), _trace(11));
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.ManifestChallengeNotOpen.selector, x.m4));
        om.resolveManifest(x.m4);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.ManifestChallengeNotOpen.selector, x.m6));
        om.resolveManifest(x.m6);
        vm.expectRevert();
        om.resolveOmission(x.o5);

        // what each is owed
        uint256 reward = SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000;
        assertEq(tm.claimable(stranger), 1e30 - FEE - cost1, "the absurd overpayment comes back");
        assertEq(tm.claimable(user2), 0, "the least deposit, answered at 1,000 gwei: all spent");
        uint256 reward3 = tm.availabilityChallenges(x.av3).sampled ? reward : 0;
        assertEq(tm.claimable(validator1), x.dep3 + reward3, "unanswered: the whole deposit back");
        assertEq(tm.claimable(node), cost1 + CHALLENGE_BOND - FEE, "paid in full, or the deposit less the fee");
        assertEq(om.claimable(user2), x.dep4 - FEE - cost4, "overpaid manifest: the excess back");
        assertEq(om.claimable(user), x.dep5 - FEE - cost5, "omission at a higher base fee: still covered");
        assertEq(om.claimable(stranger), x.dep6 + reward, "unanswered manifest: deposit and reward");
        assertEq(om.claimable(node), cost4 + cost5);
        assertEq(sm.getOperator(node).frozenCount, 0, "every freeze lifted once");

        assertEq(
            address(tm).balance,
            tm.claimable(stranger) + tm.claimable(user2) + tm.claimable(validator1) + tm.claimable(node),
            "TaskManager holds what it owes"
        );
        assertEq(
            address(om).balance,
            om.claimable(user2) + om.claimable(user) + om.claimable(stranger) + om.claimable(node),
            "OmissionManager holds what it owes"
        );
        _withdrawAll(stranger);
        _withdrawAll(user2);
        _withdrawAll(user);
        _withdrawAll(validator1);
        _withdrawAll(node);
        assertEq(address(tm).balance, 0, "TaskManager empty");
        assertEq(address(om).balance, 0, "OmissionManager empty");
        assertEq(BURN.balance, tm.totalBurned() + om.totalBurned(), "the rest burned");
    }

    /// @notice Defence. A node that is its own claimant (a second address of its operator) claims
    ///         its own entry at 1,000 gwei and answers it, directly or through its contract: the
    ///         two addresses get back the deposit less the fee between them, no more; the answer's
    ///         gas and the fee are its loss, so a self-claim mints nothing (the contract answer's
    ///         answer is paid the gas it metered, to the contract).
    function test_defence_ANodeThatClaimsItselfGetsBackLessThanItPosted() public {
        _registerNode(node, 3 ether);
        address alter = makeAddr("node's other address");
        Review9Answerer answerer = new Review9Answerer();
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _batchWithTrace(answerer.trace(SEED, LEN), 2);
        vm.fee(1_000 gwei);
        uint256 least = tm.availabilityBond();
        uint256 a0 = _claimWith(alter, batchId, 0, least);
        uint256 a1 = _claimWith(alter, batchId, 1, least);
        bytes memory trace0 = answerer.trace(SEED, LEN);
        vm.prank(node, node); // (through its contract the answer is refused since Review11)
        tm.answerAvailability(a0, _ref(batchId), rs[0], Merkle.proofAt(leaves, 0), trace0);
        vm.prank(node, node);
        tm.answerAvailability(a1, _ref(batchId), rs[1], Merkle.proofAt(leaves, 1), _trace(1));
        uint256 back = tm.claimable(node) + tm.claimable(alter) + tm.claimable(address(answerer));
        assertEq(back, 2 * (least - FEE), "the deposits less the fees (and it paid both answers' gas)");
        assertEq(address(tm).balance, back, "nothing else owed");
    }

    /// @notice Defence. An availability claim with an overpaid deposit on the entry of an open fraud
    ///         challenge (the vote is extended, the claim left unanswered: `_withheld`) and the
    ///         fraud challenge settle apart: the fraud challenger gets its bond back (withheld), the
    ///         availability claimant its whole deposit plus its reward, the vote pools never reach
    ///         the deposit, every freeze lifts, and TaskManager holds exactly what it owes.
    function test_defence_ADepositBesideAFraudChallengeIsSettledApart() public {
        (uint256 challengeId, uint256 batchId,) = _openChallenge();
        uint64 voteDeadline = tm.challenges(challengeId).voteDeadline;
        vm.fee(30 gwei);
        uint256 deposit = tm.availabilityBond() * 3;
        uint256 aid = _claimWith(validator2, batchId, 1, deposit);
        vm.assertGt(tm.challenges(challengeId).voteDeadline, voteDeadline, "the vote waits for the answer");
        assertEq(sm.getOperator(node).frozenCount, 2);

        vm.warp(tm.challenges(challengeId).voteDeadline); // nobody voted, nobody answered
        tm.resolveAvailability(aid);
        assertFalse(tm.resolve(challengeId), "no verdict");
        uint256 reward = tm.availabilityChallenges(aid).sampled ? SLASH_AMOUNT * CHALLENGER_REWARD_BPS / 10_000 : 0;
        assertEq(tm.claimable(validator2), deposit + reward, "the claimant: its deposit and reward");
        assertEq(tm.claimable(validator1), CHALLENGE_BOND, "the fraud challenger: its bond (withheld)");
        assertEq(sm.getOperator(node).frozenCount, 0);
        assertEq(address(tm).balance, tm.claimable(validator1) + tm.claimable(validator2), "holds what it owes");
    }

    /*//////////////////////////////////////////////////////////////
                    3. THE LEAST DEPOSIT, AT ITS EDGES
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. At 100 gwei each kind takes exactly its least deposit and refuses one wei
    ///         less (`WrongBond` with the figure), at base fee 0 the least is the bond itself; an
    ///         answer posting a zero-length trace is paid its own gas at its base fee, within
    ///         ANSWER_FIXED_GAS, and the claimant gets the rest.
    function test_defence_TheLeastDepositIsExactAndAnEmptyTraceIsPaidItsFixedGas() public {
        _registerNode(node, 2 ether);
        (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves) = _batchWithTrace("", 2);
        uint256 basefee = 100 gwei;
        vm.fee(basefee);
        uint256 least = CHALLENGE_BOND + tm.AVAILABILITY_WORST_GAS() * basefee;
        assertEq(tm.availabilityBond(), least);
        vm.deal(stranger, 100 ether);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.WrongBond.selector, least - 1, least));
        tm.challengeAvailability{value: least - 1}(_ref(batchId), 0);
        uint256 mLeast = CHALLENGE_BOND + om.MANIFEST_WORST_GAS() * basefee;
        assertEq(om.manifestBond(), mLeast);
        vm.prank(stranger);
        vm.expectRevert(abi.encodeWithSelector(OmissionManager.WrongBond.selector, mLeast - 1, mLeast));
        om.challengeManifest{value: mLeast - 1}(_ref(batchId));
        assertEq(om.omissionBond(), CHALLENGE_BOND + om.ANSWER_GAS() * basefee);

        uint256 aid = _claimWith(stranger, batchId, 0, least);
        vm.prank(node, node);
        tm.answerAvailability(aid, _ref(batchId), rs[0], Merkle.proofAt(leaves, 0), "");
        uint256 paid = tm.claimable(node); // its own gas (ClaimBond.costOfAnswer), no byte terms
        vm.assertGt(paid, 21_000 * basefee, "paid");
        vm.assertLe(paid, tm.ANSWER_FIXED_GAS() * basefee, "within the fixed part");
        assertEq(tm.claimable(stranger), least - FEE - paid);

        vm.fee(0);
        assertEq(tm.availabilityBond(), CHALLENGE_BOND);
        assertEq(om.manifestBond(), CHALLENGE_BOND);
        assertEq(om.omissionBond(), CHALLENGE_BOND);
    }
}
