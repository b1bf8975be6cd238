// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// Review 11: the money and stake flows attacked by rational cheaters (nodes, users, validators,
/// allies and plain mempool searchers), after Review3..10, Adversary*, OmissionAdversary and the
/// known limits of docs/security-parameters.md.
///
/// Tried, and what was found (three of four fixed by design, one known limit):
/// - Copying a node's availability answer from the mempool. The answer's price went to
///   `msg.sender` (whoever lands the answer first), not to the node that owes the data: a
///   searcher that copied the node's calldata and landed first was paid the node's reimbursement
///   (more than its own transaction cost, so copying paid), and the node's identical answer
///   reverted after paying its calldata. FIXED: the price is owed to the accused node whoever
///   posts the data, in all three answers (test_defence_ACopiedAnswerPaysTheNodeNotTheCopier).
/// - Copying a finder's challenge from the mempool. The challenger reward and the decoy bounty
///   go to the challenge's sender if the seed picked it; the leaf has one open challenge. A
///   validator (or a searcher with a few validator addresses staked before the commit) copies a
///   finder's `challenge` calldata with whichever of its addresses the seed picked: it takes the
///   reward (fraud) or the bounty (decoy) without checking anything, the finder's transaction
///   reverts (LeafAlreadyChallenged). An ally of the node that is not picked burns the reward
///   instead. The same holds for availability claims (the reward) and manifest claims (whose
///   reward needs no pick at all). FOUND
///   (test_known_limit_ACopiedChallengeTakesTheFindersReward,
///   test_known_limit_ACopiedDecoyChallengeTakesTheFindersBounty).
/// - The answer's price against its real cost under EIP-7623: the transaction pays
///   `21000 + max(4 * tokens + execution, 10 * tokens)`, the model paid the fixed 200k of
///   execution ON TOP of the 40-per-byte floor: past ~11 KB of trace a node was paid ~160k gas
///   more than its answer cost, so every claim it baited by withholding paid it. FIXED: the price
///   is EIP-7623's rule over the answer's real (canonical) calldata and its metered execution,
///   `ClaimBond.costOfAnswer` (test_defence_TheAnswerPriceIsWhatEIP7623Charges,
///   test_defence_AnAnswerWithBytesAppendedIsRefused; on Anvil, to a few hundred gas of the
///   receipt's gasUsed: tests/integration/test_answer_prices.py).
/// - Sub-minimum validator stake: `requestUnbond` let a registered validator go to 0 and stay
///   registered, and `addStake` then accepted any amount: stake below MIN_VALIDATOR_STAKE that
///   counted in `totalValidatorStake` (the quorum base) but could never vote. FIXED: `addStake`
///   keeps a validator's stake 0 or at least the minimum (test_defence_ASubMinimumTopUpIsRefused).
/// - A challenger that leaves right after challenging (its weight is fixed at the challenge and
///   its stake lock is not moved by a vote extension): with an unbonding period shorter than the
///   extended vote it withdraws before the vote ends, but the ether cannot vote again on that
///   challenge under another name (stake newer than the challenge). holds
///   (test_defence_AChallengerThatLeavesMidVoteCannotVoteTheSameEtherAgain).
/// - Also read, no new finding: every payout path is pull-based and guarded (SM.withdrawUnbonded
///   zeroes before it sends; a slash during it hits the SM guard); bonds and pools add up in
///   resolve, revealDecoy and claimVoteReward (no division by zero: a verdict side always has
///   weight); slash at exactly the stake and at zero stake; fee 0 and fee max refunds
///   (`min(fee, rest / 2)`); the settled quorum base under same-second changes; half-open windows
///   against every stake lock; freeze counts; channel withdraw / redeem races.

import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, TaskRequest} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

contract Review11Test is Base {
    /// @dev Generous allowance for the cold storage and account accesses a test keeps warm.
    uint256 internal constant COLD_SLACK = 100_000;

    /*//////////////////////////////////////////////////////////////
                                HELPERS
    //////////////////////////////////////////////////////////////*/

    /// @dev `n` bytes with no zero byte (a compressed or random-looking trace).
    function _denseTrace(uint256 n) internal pure returns (bytes memory t) {
        t = new bytes(n);
        for (uint256 i; i < n; ++i) {
            t[i] = bytes1(uint8(0x41 + (i % 26)));
        }
    }

    /// @dev EIP-7623 tokens of calldata: 1 per zero byte, 4 per other byte.
    function _tokens(bytes memory cd) internal pure returns (uint256 tokens) {
        for (uint256 i; i < cd.length; ++i) {
            tokens += cd[i] == 0 ? 1 : 4;
        }
    }

    /// @dev Gas a transaction with calldata `cd` and `exec` execution gas is charged (EIP-7623).
    function _txGas(bytes memory cd, uint256 exec) internal pure returns (uint256) {
        uint256 tokens = _tokens(cd);
        uint256 standard = 21_000 + 4 * tokens + exec;
        uint256 floor = 21_000 + 10 * tokens;
        return standard > floor ? standard : floor;
    }

    /// @dev Sends `cd` to the TaskManager as the EOA `who` (its own transaction); returns whether it
    ///      succeeded and its execution gas (measured, plus COLD_SLACK).
    function _send(address who, bytes memory cd) internal returns (bool ok, uint256 exec) {
        vm.prank(who, who);
        uint256 g = gasleft();
        (ok,) = address(tm).call(cd);
        exec = g - gasleft() + COLD_SLACK;
    }

    /// @dev One committed entry of `node` whose trace is `trace`; returns the header and receipt.
    function _oneEntry(bytes memory trace) internal returns (TaskManager.BatchRef memory ref, Receipt memory r) {
        r = _boundReceipt(1, user, node, 0.001 ether);
        r.traceHash = sha256(trace);
        ref = _ref(_commitRoot(node, _leaf(r), 1));
    }

    /*//////////////////////////////////////////////////////////////
           1. The answer's reimbursement goes to whoever lands first
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a known limit). An honest node answers an availability claim by
    ///         broadcasting `answerAvailability(id, ref, receipt, proof, trace)`. A searcher copied
    ///         that calldata and landed first: `_splitAnswerBond` credited the answer's price to
    ///         `msg.sender`, so the searcher was paid `(200k + 40 / byte) * basefee`, more than its
    ///         own transaction cost (finding 3), and the node's identical answer reverted with
    ///         AvailabilityNotOpen after paying its calldata (EIP-7623 floor: 10 gas per token,
    ///         reverted or not): the node paid the whole answer the deposit was sized to pay it for
    ///         (a 100 KB trace at 20 gwei: ~0.08 ether per claim), and copying paid any searcher.
    ///         The same held for `answerManifest` and `answerOmission`. Now the answer's price is
    ///         owed to the accused node whoever posts the data: the copier is paid nothing, and the
    ///         node is paid at least what its reverted copy cost it.
    function test_defence_ACopiedAnswerPaysTheNodeNotTheCopier() public {
        _registerNode(node, 2 ether);
        bytes memory trace = _denseTrace(100_000);
        (TaskManager.BatchRef memory ref, Receipt memory r) = _oneEntry(trace);
        uint256 basefee = 20 gwei;
        vm.fee(basefee);
        uint256 aid = _claimAvailability(validator1, ref.batchId, 0);
        bytes memory answer = abi.encodeCall(TaskManager.answerAvailability, (aid, ref, r, new bytes32[](0), trace));

        address searcher = makeAddr("searcher");
        (bool copied,) = _send(searcher, answer);
        assertTrue(copied, "the copy is a valid answer");
        assertEq(tm.claimable(searcher), 0, "the copier is paid nothing");
        uint256 price = tm.claimable(node);

        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.AvailabilityNotOpen.selector, aid));
        (bool ok,) = address(tm).call(answer);
        ok; // (expectRevert makes the low-level call report success)
        uint256 nodeWasted = (21_000 + 10 * _tokens(answer)) * basefee; // a reverted tx pays the floor
        assertGt(nodeWasted, 0.07 ether);
        vm.assertGe(price, nodeWasted, "the node is paid at least what its own copy cost");
    }

    /*//////////////////////////////////////////////////////////////
        2. The finder's reward goes to whoever lands the challenge first
    //////////////////////////////////////////////////////////////*/

    /// @notice Known limit (FOUND). A finder V re-runs its sampled receipt, finds it faulty and
    ///         broadcasts `challenge(ref, i, receipt, proof, cid)`. A searcher holding a few
    ///         validator addresses (1 ether each, staked before the commit, as `_pick`
    ///         asks) reads the calldata, picks one of its addresses the seed picked for entry i
    ///         (`isSampled` is public) and sends the same arguments first. Its challenge is
    ///         `sampled`, the fraud verdict pays it CHALLENGER_REWARD_BPS of the slash, and V's
    ///         transaction reverts (LeafAlreadyChallenged): V is left a voter's share for the work
    ///         the reward was meant to pay. With k addresses the copier matches a picked finder
    ///         with probability 1 - (1 - q)^k (57 % for k = 8 at q = 10 %), having checked nothing;
    ///         a node's ally that is not picked burns the reward instead (it loses nothing: its
    ///         bond comes back on the verdict). The reward term R of the incentive inequality is
    ///         then the copier's, not the checker's. Availability claims (reward if picked) and
    ///         manifest claims (reward for anyone) are copied the same way.
    ///         Fix (by design): seal challenges like votes, commit
    ///         `keccak256(challenger, batchId, index, leaf, salt)` with the bond, open it after the
    ///         commitment's block (within the window), first commitment wins the leaf; or pay the
    ///         reward to every validator the seed picked for the entry that voted fraud, pro rata,
    ///         so that being first is worth nothing.
    function test_known_limit_ACopiedChallengeTakesTheFindersReward() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 3 ether); // the finder
        address[] memory bots = new address[](8);
        for (uint256 k; k < bots.length; ++k) {
            bots[k] = makeAddr(string(abi.encodePacked("copier", bytes1(uint8(0x30 + k)))));
            _registerValidator(bots[k], 1 ether);
        }
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 64);
        _rollSealed(block.number + SEED_DELAY_BLOCKS + 1);
        (uint256 i, address copier) = _findCopier(b, bots, 64);

        bytes32[] memory proof = Merkle.proofAt(ls, i);
        TaskManager.BatchRef memory ref = _ref(b);
        vm.deal(copier, copier.balance + CHALLENGE_BOND);
        vm.prank(copier);
        uint256 id = tm.challenge{value: CHALLENGE_BOND}(ref, i, rs[i], proof, "bafyevidence"); // the copy
        assertTrue((tm.challenges(id).sampled != TaskManager.Pick.None), "the copier's address was picked");

        vm.deal(validator1, validator1.balance + CHALLENGE_BOND);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(ref, i, rs[i], proof, "bafyevidence");

        _vote(validator1, id, true); // the finder can only vote
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "fraud: the node is slashed as it should be");
        uint256 reward = SLASH_AMOUNT * 2_000 / 10_000;
        assertEq(tm.claimable(copier), CHALLENGE_BOND + reward, "the copier takes the finder's reward");
        vm.prank(validator1);
        uint256 finder = tm.claimVoteReward(id);
        uint256 pool = SLASH_AMOUNT * 2_000 / 10_000;
        assertEq(finder, CHALLENGE_BOND + pool * 3 / 4, "the finder: a voter's share only");
    }

    /// @dev An entry the seed picked both the finder and one of the copier's addresses for.
    function _findCopier(uint256 b, address[] memory bots, uint256 n) internal view returns (uint256, address) {
        TaskManager.BatchRef memory ref = _ref(b);
        for (uint256 i; i < n; ++i) {
            if (!tm.isSampled(ref, validator1, i)) continue;
            for (uint256 k; k < bots.length; ++k) {
                if (tm.isSampled(ref, bots[k], i)) return (i, bots[k]);
            }
        }
        revert("no entry picked for both");
    }

    /// @notice Known limit (FOUND), the same copy on a decoy: decoy bounties are what pays checking
    ///         in an honest network (docs/security-parameters.md, "Paying validators"). The finder
    ///         re-scored the decoy; the copier sends its challenge first; the node reveals the decoy
    ///         and the bounty goes to the copier, the finder gets nothing at all (its challenge
    ///         reverted, and a vote on a decoy earns nothing). On the devnet parameters every
    ///         validator is picked for every entry, so any validator can copy any finder.
    ///         Fix: as above (sealed challenges, or the bounty split among the picked validators
    ///         that sealed a fraud vote).
    function test_known_limit_ACopiedDecoyChallengeTakesTheFindersBounty() public {
        _deployDevnet();
        address decoyUser = makeAddr("decoy");
        _registerNode(node, 2 ether);
        vm.deal(node, node.balance + 1 ether);
        vm.prank(node);
        payments.fundEscrow{value: 1 ether}(node);
        _registerValidator(validator1, 1 ether); // the finder
        address copier = makeAddr("copier");
        _registerValidator(copier, 1 ether);
        Receipt memory r = _boundReceipt(7, decoyUser, node, 0.001 ether);
        TaskManager.BatchRef memory ref = _ref(_commitRoot(node, _leaf(r), 1));
        _rollSealed(block.number + 2);

        vm.deal(copier, CHALLENGE_BOND);
        vm.prank(copier);
        uint256 id = tm.challenge{value: CHALLENGE_BOND}(ref, 0, r, new bytes32[](0), "bafyevidence");
        vm.deal(validator1, CHALLENGE_BOND);
        vm.prank(validator1);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(ref, 0, r, new bytes32[](0), "bafyevidence");

        TaskRequest memory q = _request(7, decoyUser, node);
        bytes memory sig = signDigest(privateKeyOf("decoy"), payments.hashDecoy(node, r.requestHash));
        vm.prank(node);
        tm.revealDecoy(id, r, q, sig);
        uint256 bounty = DECOY_BOUNTY - DECOY_BOUNTY * DECOY_REBATE_BPS / 10_000;
        assertEq(tm.claimable(copier), CHALLENGE_BOND + bounty, "the copier takes the bounty");
        assertEq(tm.claimable(validator1), 0, "the finder: nothing");
    }

    /*//////////////////////////////////////////////////////////////
           3. The answer's price adds execution on top of the floor
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a known limit). An answer an EOA sent directly was paid
    ///         `(ANSWER_FIXED_GAS + 40 * nonZero + 12 * zero) * basefee`: 200k for execution (+21k)
    ///         PLUS calldata at the EIP-7623 floor. EIP-7623 charges the LARGER of `4 * tokens +
    ///         execution` and `10 * tokens`, not their sum: from ~11 KB of trace on, the floor alone
    ///         is the cost, and the node was paid ~160k gas more than its transaction cost (a 100 KB
    ///         trace at 20 gwei: ~0.0033 ether), so withholding an entry to bait claims paid it
    ///         (docs/protocol.md: "the node never profits from being challenged"), and copying
    ///         answers paid a searcher. The fixed ANSWER_GAS of omission and manifest answers had
    ///         the same surplus. Now an answer is priced by EIP-7623's own rule over its real
    ///         calldata and its metered execution (ClaimBond.costOfAnswer): where the floor decides
    ///         (a dense trace) the price is exactly the floor; where the standard cost decides (a
    ///         sparse one) it is within the unmetered allowance of the transaction's cost.
    function test_defence_TheAnswerPriceIsWhatEIP7623Charges() public {
        _registerNode(node, 2 ether);
        uint256 basefee = 20 gwei;
        vm.fee(basefee);
        bytes memory dense = _denseTrace(100_000);
        (TaskManager.BatchRef memory ref, Receipt memory r) = _oneEntry(dense);
        uint256 aid = _claimAvailability(validator1, ref.batchId, 0);
        bytes memory answer = abi.encodeCall(TaskManager.answerAvailability, (aid, ref, r, new bytes32[](0), dense));
        (bool ok, uint256 exec) = _send(node, answer);
        assertTrue(ok);
        uint256 tokens = _tokens(answer);
        vm.assertGt(10 * tokens, 4 * tokens + exec, "the floor is what the transaction pays");
        assertEq(tm.claimable(node), (21_000 + 10 * tokens) * basefee, "paid the floor, exactly");

        bytes memory sparse = new bytes(100_000); // all zeros but one: the standard cost decides
        sparse[7] = 0x01;
        (ref, r) = _oneEntry(sparse);
        aid = _claimAvailability(validator1, ref.batchId, 0);
        answer = abi.encodeCall(TaskManager.answerAvailability, (aid, ref, r, new bytes32[](0), sparse));
        uint256 before = tm.claimable(node);
        (ok, exec) = _send(node, answer);
        assertTrue(ok);
        tokens = _tokens(answer);
        uint256 paid = tm.claimable(node) - before;
        vm.assertGt(4 * tokens + exec - COLD_SLACK, 10 * tokens, "the standard cost decides");
        // at least the calldata and the trace's log data (8 gas a byte); the exact comparison with
        // a real transaction's gasUsed is tests/integration/test_answer_prices.py (on Anvil)
        vm.assertGe(paid, (21_000 + 4 * tokens + 8 * 100_000) * basefee, "never less than the transaction cost");
        vm.assertLe(paid, (21_000 + 4 * tokens + exec) * basefee, "within what this test measured");
    }

    /// @notice Defence: calldata that is not the canonical encoding of the answer (bytes appended,
    ///         which the decoder ignores) would be paid for as calldata: it is refused.
    function test_defence_AnAnswerWithBytesAppendedIsRefused() public {
        _registerNode(node, 2 ether);
        bytes memory trace = _denseTrace(1_000);
        (TaskManager.BatchRef memory ref, Receipt memory r) = _oneEntry(trace);
        uint256 aid = _claimAvailability(validator1, ref.batchId, 0);
        bytes memory answer = abi.encodeCall(TaskManager.answerAvailability, (aid, ref, r, new bytes32[](0), trace));
        bytes memory padded = bytes.concat(answer, _denseTrace(50_000));
        vm.prank(node, node);
        (bool ok,) = address(tm).call(padded);
        assertFalse(ok, "appended bytes are refused");
        vm.prank(node, node);
        (ok,) = address(tm).call(answer);
        assertTrue(ok, "the canonical answer is accepted");
    }

    /*//////////////////////////////////////////////////////////////
            4. Stake below the validator minimum in the quorum base
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was a known limit, low). docs/security-parameters.md: "a validator keeps
    ///         either 0 or at least [MIN_VALIDATOR_STAKE], so every wei of `totalValidatorStake` can
    ///         vote". But `requestUnbond` let a registered validator go to 0 and stay registered, and
    ///         `addStake` then took any amount: 0.99 ether that counted in the quorum base of every
    ///         challenge, could never vote and was invisible to the SDK's coverage; an ally's three
    ///         such addresses turned a real fraud into "no verdict". Now `addStake` keeps the
    ///         invariant: a validator's stake reaches the minimum or the top-up is refused.
    function test_defence_ASubMinimumTopUpIsRefused() public {
        _registerValidator(validator1, 1 ether);
        address sock = makeAddr("sock");
        _registerValidator(sock, 1 ether);
        vm.prank(sock);
        sm.requestUnbond(1 ether); // to 0, still registered
        vm.deal(sock, 1 ether);
        vm.prank(sock);
        vm.expectRevert(
            abi.encodeWithSelector(ServiceManager.InsufficientStake.selector, 0.99 ether, MIN_VALIDATOR_STAKE)
        );
        sm.addStake{value: 0.99 ether}();
        assertEq(sm.totalValidatorStake(), 1 ether, "nothing below the minimum in the quorum base");
        vm.prank(sock);
        sm.addStake{value: 1 ether}(); // the minimum itself is accepted
        assertTrue(sm.isActiveValidator(sock));
        assertEq(sm.totalValidatorStake(), 2 ether);
    }

    /*//////////////////////////////////////////////////////////////
                 5. A challenger's stake that leaves mid-vote
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (holds). A challenger's weight is fixed when it challenges, and its stake
    ///         lock (`lockStake(challenger, voteDeadline)`) is not moved when an availability
    ///         claim extends the vote (voters are re-locked when they reveal; the challenger never
    ///         reveals). With an unbonding period shorter than the extended vote the challenger
    ///         deregisters at once and withdraws before the vote ends. The ether cannot vote on the
    ///         challenge a second time: staked again under another name it is newer than the
    ///         challenge (StakeTooRecent), and validators are never slashed, so nothing else rides
    ///         on it being there.
    function test_defence_AChallengerThatLeavesMidVoteCannotVoteTheSameEtherAgain() public {
        _deployDevnet(30); // unbonding 30 s = VOTE_WINDOW
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        _rollSealed(block.number + 2);
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        uint64 firstDeadline = tm.challenges(id).voteDeadline;
        vm.prank(validator1);
        sm.deregister();
        vm.warp(block.timestamp + 1);
        _claimAvailability(stranger, b, 0); // extends the vote (still sealing)
        vm.assertGt(tm.challenges(id).voteDeadline, firstDeadline + 20, "the vote was extended");

        vm.warp(firstDeadline);
        vm.prank(validator1);
        sm.withdrawUnbonded(); // the challenger's ether leaves before the vote ends
        assertEq(validator1.balance, 1 ether);
        vm.assertLt(block.timestamp, tm.challenges(id).voteDeadline - tm.REVEAL_WINDOW(), "still sealing");

        address sock = makeAddr("sock");
        vm.prank(validator1);
        (bool sent,) = sock.call{value: 1 ether}("");
        assertTrue(sent);
        vm.prank(sock);
        sm.registerValidator{value: 1 ether}();
        vm.warp(block.timestamp + 1);
        uint64 openedAt = tm.challenges(id).openedAt;
        vm.deal(sock, CHALLENGE_BOND);
        vm.prank(sock);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.StakeTooRecent.selector, openedAt));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256("sealed"));
        assertEq(tm.challenges(id).fraudStake, 1 ether, "the ether counts once, as the challenge");
    }
}
