// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ServiceManager} from "../src/ServiceManager.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, TaskRequest} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// @notice Attacks found by an adversarial review of the contracts, each replayed against the
///         fix that removes its class (docs/protocol.md, "Disputes" and "Decoys"): every test
///         asserts the attack now fails. `test_KnownLimit_*` pins a limit that stays, as documented.
contract AdversaryTest is Base {
    address internal decoyUser;
    uint256 internal decoyKey;

    function setUp() public override {
        super.setUp();
        decoyUser = makeAddr("decoy");
        decoyKey = privateKeyOf("decoy");
    }

    function _decoySig(uint256 key, address forNode, bytes32 requestHash) internal view returns (bytes memory) {
        return signDigest(key, payments.hashDecoy(forNode, requestHash));
    }

    /// @dev A real `from` request to `to` (a real receipt's requestHash is its EIP-712 digest).
    function _realRequest(address from, address to, uint256 nonce) internal view returns (TaskRequest memory) {
        return TaskRequest({
            user: from,
            node: to,
            modelId: MODEL_ID,
            agentHash: keccak256("agent"),
            inputHash: sha256(abi.encode("input", nonce)),
            maxFee: 1 ether,
            nonce: nonce,
            deadline: block.timestamp + 1 days
        });
    }

    function _one(Receipt memory r) internal returns (uint256 batchId) {
        batchId = _commitRoot(node, _leaf(r), 1);
    }

    /*//////////////////////////////////////////////////////////////
       A1. Node relabels a real user's task as its decoy account's
    //////////////////////////////////////////////////////////////*/

    /// A node serves a faulty answer to a REAL user (requestHash = the user's signed TaskRequest),
    /// but writes its own decoy account into `receipt.user`, then, caught, tries to reveal the
    /// receipt as a decoy with that account's signature. The reveal must show the request behind
    /// `requestHash`, whose user never signed a Decoy: refused, and the vote slashes.
    function test_Attack_DecoyMislabelCannotEscapeSlash() public {
        _deployDevnet();
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        vm.deal(node, node.balance + 1 ether);
        vm.prank(node, node);
        payments.fundEscrow{value: 1 ether}(node);

        TaskRequest memory real = _realRequest(user, node, 7);
        bytes32 realRequest = payments.hashTaskRequest(real); // signed by `user`, names `user`
        Receipt memory r = Receipt({
            requestHash: realRequest,
            user: decoyUser, // node-chosen field: not bound to the request's signer
            modelId: MODEL_ID,
            inputHash: sha256(abi.encode("input", uint256(7))),
            outputHash: sha256("garbage the real user was served"),
            traceHash: sha256(_trace(7)),
            fee: 0.01 ether
        });
        uint256 b = _one(r);
        _rollSealed(block.number + 2);
        uint256 id = _challenge(validator1, b, 0, r, new bytes32[](0));
        _vote(validator2, id, true); // 3 of 3 ether say fraud: a certain slash... unless "decoy"

        bytes memory sig = _decoySig(decoyKey, node, realRequest);
        // The real request: its user is not the decoy account.
        vm.prank(node, node);
        vm.expectRevert(TaskManager.NotADecoy.selector);
        tm.revealDecoy(id, r, real, sig);
        // A made-up request naming the decoy account does not hash to the receipt's requestHash.
        TaskRequest memory forged = _realRequest(decoyUser, node, 7);
        vm.prank(node, node);
        vm.expectRevert(TaskManager.NotADecoy.selector);
        tm.revealDecoy(id, r, forged, sig);

        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "fraud");
        assertEq(sm.getOperator(node).stake, 2 ether - SLASH_AMOUNT, "the node is slashed");
    }

    /// Same mislabel, without a reveal: the node names its own account in `receipt.user` of a
    /// real user's faulty task, hoping to steer the fraud refund. The refund is held for whoever
    /// signed the receipt's request: the node's account cannot claim it with any request of its
    /// own making (its digest is not the receipt's `requestHash`), and the real user claims it
    /// with its own request. (Formerly a known limit: the refund followed the `user` field.)
    function test_Attack_RefundGoesToTheRequestsSignerNotTheUserField() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        TaskRequest memory real = _realRequest(user, node, 9);
        real.maxFee = 0.1 ether; // the fee the node charged, and wrote in the receipt
        bytes32 realRequest = payments.hashTaskRequest(real);
        Receipt memory r = Receipt({
            requestHash: realRequest,
            user: decoyUser,
            modelId: MODEL_ID,
            inputHash: sha256(abi.encode("input", uint256(9))),
            outputHash: sha256("bad"),
            traceHash: sha256(_trace(9)),
            fee: 0.1 ether
        });
        uint256 b = _one(r);
        uint256 id = _challenge(validator1, b, 0, r, new bytes32[](0));
        _vote(validator2, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id));
        assertEq(sm.getOperator(node).stake, 2 ether - SLASH_AMOUNT, "slashed in full");
        assertEq(tm.claimable(decoyUser), 0, "nothing paid to the receipt's user field");

        // the node's account tries with a request of its own: not the receipt's request
        TaskRequest memory forged = _realRequest(decoyUser, node, 9);
        bytes32 forgedHash = payments.hashTaskRequest(forged);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotTheRequest.selector, realRequest, forgedHash));
        tm.claimRefund(id, r, forged);
        // nor with the real request against another receipt (the leaf binds it)
        Receipt memory other = Receipt({
            requestHash: r.requestHash,
            user: user,
            modelId: r.modelId,
            inputHash: r.inputHash,
            outputHash: r.outputHash,
            traceHash: r.traceHash,
            fee: r.fee
        });
        bytes32 leaf = _leaf(r);
        bytes32 otherLeaf = _leaf(other);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.NotChallengedReceipt.selector, leaf, otherLeaf));
        tm.claimRefund(id, other, real);

        // anyone may submit the real request; the refund (its signed maxFee, under the 0.3 ether
        // held) goes to its signer, once; the rest of what was held burns
        uint256 burnedBefore = tm.totalBurned();
        vm.prank(decoyUser);
        assertEq(tm.claimRefund(id, r, real), 0.1 ether);
        assertEq(tm.claimable(user), 0.1 ether, "the real user got the refund");
        assertEq(tm.totalBurned() - burnedBefore, 0.3 ether - 0.1 ether, "the held cap less the refund");
        assertEq(tm.claimable(decoyUser), 0);
        vm.expectRevert(TaskManager.NothingToWithdraw.selector);
        tm.claimRefund(id, r, real);
    }

    /*//////////////////////////////////////////////////////////////
       A2. A validator that is also a user drains a node's escrow
    //////////////////////////////////////////////////////////////*/

    /// A validator sends its own (honestly served) tasks to a node, challenges the receipts it is
    /// sampled for, and tries to "reveal" them as decoys with its own Decoy signature, to collect
    /// the node's escrow without checking anything. Only the node may reveal: refused, the escrow
    /// stays, and the challenges of honest receipts cost the validator its bonds.
    function test_Attack_SelfSignedDecoyCannotDrainEscrow() public {
        _deployDevnet(); // every receipt sampled (production: 10 %, i.e. ~10 tiny tasks per bounty)
        uint256 vKey = privateKeyOf("validator1");
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        uint256 escrow0 = 5 * DECOY_BOUNTY;
        vm.deal(node, node.balance + escrow0);
        vm.prank(node, node);
        payments.fundEscrow{value: escrow0}(node);

        uint256 fees;
        for (uint256 i; i < 5; ++i) {
            // An honest receipt of a task validator1 itself requested (fee 1 gwei).
            Receipt memory r = _receipt(500 + i, validator1, 1 gwei);
            TaskRequest memory req = _realRequest(validator1, node, 500 + i);
            r.requestHash = payments.hashTaskRequest(req);
            fees += r.fee;
            uint256 b = _one(r);
            _rollSealed(block.number + 2);
            uint256 id = _challenge(validator1, b, 0, r, new bytes32[](0));
            bytes memory decoySig1 = _decoySig(vKey, node, r.requestHash);
            vm.prank(validator1);
            vm.expectRevert(TaskManager.OnlyChallengedNode.selector);
            tm.revealDecoy(id, r, req, decoySig1);
            assertTrue(tm.challenges(id).status == TaskManager.ChallengeStatus.Open);
        }
        (, uint256 escrow) = payments.account(node);
        assertEq(escrow, escrow0, "the escrow is untouched");
        assertEq(tm.claimable(validator1), 0);
        assertGt(fees, 0);
    }

    /*//////////////////////////////////////////////////////////////
       A3. Decoy as a bond trap: reveal only when a quorum formed
    //////////////////////////////////////////////////////////////*/

    /// A sampled, honest validator correctly challenges a (faulty) decoy. The node watches the
    /// votes: if a quorum forms it reveals (pays the bounty, no slash); if not, it stays silent
    /// hoping the no-quorum verdict hands it the finder's bond. Now a challenge nobody cleared
    /// burns the bond: keeping quiet earns the node nothing, revealing earns it the rebate.
    function test_Attack_DecoyTrapGainsTheNodeNothing() public {
        _deployDevnet();
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether); // the honest finder
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);
        vm.deal(node, node.balance + 1 ether);
        vm.prank(node, node);
        payments.fundEscrow{value: 1 ether}(node);
        Receipt memory r = _boundReceipt(42, decoyUser, node, 0.001 ether); // a planted (faulty) decoy
        uint256 b = _one(r);
        _rollSealed(block.number + 2);
        uint256 id = _challenge(validator1, b, 0, r, new bytes32[](0));
        assertTrue((tm.challenges(id).sampled != TaskManager.Pick.None));

        // Branch 1: a quorum forms -> the node reveals in the last second, is never slashed.
        uint256 snap = vm.snapshotState();
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline - 1);
        bytes memory decoySig2 = _decoySig(decoyKey, node, r.requestHash);
        vm.prank(node, node);
        tm.revealDecoy(id, r, _request(42, decoyUser, node), decoySig2);
        assertEq(sm.getOperator(node).stake, 2 ether, "quorum: node reveals, no slash");
        (uint256 rebate,) = payments.account(node);
        assertTrue(rebate > 0, "revealing earns the rebate");
        vm.revertToState(snap);

        // Branch 2: no quorum (1 of 6 ether) -> the node keeps quiet; the bond burns.
        uint256 burnedBefore = tm.totalBurned();
        vm.warp(tm.challenges(id).voteDeadline);
        assertFalse(tm.resolve(id));
        assertEq(tm.claimable(node), 0, "the node gets nothing for keeping quiet");
        assertEq(tm.totalBurned() - burnedBefore, CHALLENGE_BOND, "no verdict: the bond burns");
        (, uint256 escrow) = payments.account(node);
        assertEq(escrow, 1 ether, "no bounty paid");
    }

    /*//////////////////////////////////////////////////////////////
       A4. Honest "not fraud" votes create the quorum that slashes
    //////////////////////////////////////////////////////////////*/

    /// A 20 % cartel accuses an honest node. Alone it is below the 30 % quorum. When an honest
    /// 15 % validator votes "not fraud", the votes together pass 30 %, and under the old rule the
    /// cartel's majority of them slashed the honest node. Now fraud needs a quorum of fraud votes
    /// by themselves: an honest vote can never carry a cartel over it.
    function test_Attack_HonestVotesCannotCompleteCartelQuorum() public {
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 20 ether); // cartel
        _registerValidator(validator2, 15 ether); // honest
        _registerValidator(validator3, 65 ether); // passive
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2); // honest receipts
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));

        uint256 snap = vm.snapshotState();
        vm.warp(tm.challenges(id).voteDeadline);
        assertFalse(tm.resolve(id), "cartel alone: no quorum, node cleared");
        vm.revertToState(snap);

        _vote(validator2, id, false); // the honest validator does its job
        vm.warp(tm.challenges(id).voteDeadline);
        assertFalse(tm.resolve(id), "an honest vote never makes a fraud quorum");
        assertEq(sm.getOperator(node).stake, 2 ether, "the honest node keeps its stake");
    }

    /*//////////////////////////////////////////////////////////////
       A5. Availability griefing: the claimant answers itself
    //////////////////////////////////////////////////////////////*/

    /// A node that asked to unbond 1 ether long ago commits its last batch: its ether is free once
    /// that batch's window ends. Anyone (no stake needed) opens an availability challenge in the
    /// window's last second and answers it itself in the answer window's last second (the data is
    /// public, or copied from the node's own pending answer), hoping for its bond back. The bond
    /// pays the node what the answer costs whoever answers (the node, since Review11), and
    /// AVAILABILITY_FEE_BPS burns, so the delay the griefer causes costs it the answer's price,
    /// its own gas and the fee (not the whole bond: that
    /// paid the node for baiting, test_Attack_BaitingAvailabilityChallengesPaysOnlyTheAnswersCost).
    function test_Attack_AvailabilityGriefingCostsTheAnswerAndTheFee() public {
        _registerNode(node, 3 ether);
        vm.prank(node, node);
        sm.requestUnbond(1 ether);
        vm.warp(block.timestamp + UNBONDING_PERIOD);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 4);
        uint256 committedAt = block.timestamp;
        uint256 normalExit = sm.getNode(node).lockedUntil; // ~ committedAt + CHALLENGE_WINDOW

        vm.warp(committedAt + CHALLENGE_WINDOW - 1);
        vm.deal(stranger, CHALLENGE_BOND);
        vm.prank(stranger);
        uint256 aid = tm.challengeAvailability{value: CHALLENGE_BOND}(_ref(b), 2);
        vm.warp(tm.availabilityChallenges(aid).deadline - 1);
        vm.fee(10 gwei);
        bytes memory trace = _trace(2);
        vm.recordLogs();
        vm.prank(stranger, stranger); // an answer is a transaction of its own (ClaimBond.costOfAnswer)
        tm.answerAvailability(aid, _ref(b), rs[2], Merkle.proofAt(ls, 2), trace);
        uint256 cost = _paidForLastAnswer();

        // the node owes the data, so it is paid for the answer whoever sends it (Review11)
        assertEq(tm.claimable(node), cost, "the answer's price goes to the node");
        assertEq(tm.claimable(stranger), CHALLENGE_BOND * 9 / 10 - cost, "the griefer loses the fee and the answer");
        vm.assertLe(cost, CHALLENGE_BOND * 9 / 10, "the answer fit the deposit");
        uint256 lockedUntil = sm.getNode(node).lockedUntil;
        assertGe(lockedUntil, normalExit + CHALLENGE_WINDOW + VOTE_WINDOW - LOCK_STEP_SLACK);
        vm.warp(normalExit + VOTE_WINDOW + 1);
        vm.prank(node, node);
        vm.expectRevert(abi.encodeWithSelector(ServiceManager.StakeIsLocked.selector, uint64(lockedUntil)));
        sm.withdrawUnbonded();
    }

    /*//////////////////////////////////////////////////////////////
       A6. Same-second stake inflates the quorum base but cannot vote
    //////////////////////////////////////////////////////////////*/

    /// A node's ally sandwiches the challenge on the node's fraud: it registers a large validator
    /// stake in the same second (counted in quorumBase, but `votingStake` refuses it as too recent),
    /// and deregisters right after, so that the unanimous fraud vote of every eligible validator
    /// misses the quorum. The quorum base is now the stake settled before the challenge's second
    /// (`settledValidatorStake`), which the same-second stake is not part of: the fraud is slashed.
    function test_Attack_SameSecondStakeDoesNotInflateQuorumBase() public {
        address ally = makeAddr("ally");
        _registerNode(node, 2 ether);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2); // rs[0] is a fraud

        vm.deal(ally, 20 ether);
        vm.prank(ally);
        sm.registerValidator{value: 20 ether}(); // front-run, same block/second
        uint256 id = _challenge(validator1, b, 0, rs[0], Merkle.proofAt(ls, 0));
        vm.deal(ally, ally.balance + CHALLENGE_BOND);
        vm.prank(ally);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.StakeTooRecent.selector, uint64(block.timestamp)));
        tm.commitVote{value: CHALLENGE_BOND}(id, keccak256(abi.encode(id, false))); // it cannot vote (it does not need to)
        vm.prank(ally);
        sm.deregister(); // back-run
        assertEq(tm.challenges(id).quorumBase, 6 ether, "only the stake that can vote");

        _vote(validator2, id, true);
        _vote(validator3, id, true); // 6 of 6 eligible ether: unanimous fraud
        vm.warp(tm.challenges(id).voteDeadline);
        assertTrue(tm.resolve(id), "unanimous fraud is fraud");
        assertEq(sm.getOperator(node).stake, 2 ether - SLASH_AMOUNT, "the node is slashed");
    }

    /// @dev The checkpoint is per second: stake that settled in an earlier second counts, and
    ///      stake that leaves in the challenge's second still counts (it could have voted; leaving
    ///      is the same as abstaining, which any staked validator may do).
    function test_SettledValidatorStakeIsTheTotalBeforeThisSecond() public {
        vm.warp(block.timestamp + 1);
        uint256 base = sm.totalValidatorStake(); // whatever the fixture staked earlier
        _stakeNow(validator1, 1 ether);
        assertEq(sm.settledValidatorStake(), base, "registered this second");
        vm.warp(block.timestamp + 1);
        assertEq(sm.settledValidatorStake(), base + 1 ether);
        _stakeNow(validator2, 2 ether);
        vm.prank(validator1);
        sm.deregister();
        assertEq(sm.totalValidatorStake(), base + 2 ether);
        assertEq(sm.settledValidatorStake(), base + 1 ether, "the total at the start of this second");
        vm.warp(block.timestamp + 1);
        assertEq(sm.settledValidatorStake(), base + 2 ether);
    }

    /*//////////////////////////////////////////////////////////////
       A7. Ally squats the leaf: captures the challenger reward
    //////////////////////////////////////////////////////////////*/

    /// The node's ally challenges the node's own faulty receipt in the commit block (before the
    /// seed exists). The honest sampled finder can no longer challenge (leaf occupied until the
    /// vote ends, which with CHALLENGE_WINDOW == VOTE_WINDOW is exactly the window's end); it can
    /// only vote. The ally was not picked by the seed (none existed), so its challenger reward
    /// burns: the coalition recovers only the ally's bond and its pro-rata voter share, and the
    /// node loses more than if an honest finder had challenged. (Formerly a known limit: the
    /// ally took the full challenger reward, a quarter of the slash with its voter share.)
    function test_Attack_AllySquattingTheLeafRecoversNoChallengerReward() public {
        address ally = makeAddr("ally");
        _registerNode(node, 2 ether);
        _registerValidator(ally, 1 ether);
        _registerValidator(validator3, 3 ether); // honest finder
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 2);
        uint256 id = _challenge(ally, b, 0, rs[0], Merkle.proofAt(ls, 0)); // same block as commit
        assertFalse((tm.challenges(id).sampled != TaskManager.Pick.None), "no seed yet: nobody is sampled");
        _rollSealed(block.number + 3);
        vm.deal(validator3, CHALLENGE_BOND);
        vm.prank(validator3);
        vm.expectRevert(abi.encodeWithSelector(TaskManager.LeafAlreadyChallenged.selector, id));
        tm.challenge{value: CHALLENGE_BOND}(_ref(b), 0, rs[0], Merkle.proofAt(ls, 0), "");
        _vote(validator3, id, true);
        vm.warp(tm.challenges(id).voteDeadline);
        uint256 burnedBefore = tm.totalBurned();
        assertTrue(tm.resolve(id));
        vm.prank(ally);
        tm.claimVoteReward(id);
        uint256 pool = SLASH_AMOUNT * 2_000 / 10_000;
        uint256 coalitionBack = tm.claimable(ally) - CHALLENGE_BOND;
        assertEq(coalitionBack, pool / 4, "only the ally's voter share (1 of 4 ether voted)");
        uint256 reward = SLASH_AMOUNT * 2_000 / 10_000;
        uint256 held = (SLASH_AMOUNT - reward - pool) / 2; // the refund's cap, held for the request's user
        assertEq(tm.totalBurned() - burnedBefore, SLASH_AMOUNT - pool - held, "the reward burned");
        assertGt(tm.totalBurned() - burnedBefore, SLASH_AMOUNT - reward - pool - held);
        uint256 refund = _request(0, user, node).maxFee; // 0.001 ether, what the user signed and paid
        assertEq(tm.claimRefund(id, rs[0], _request(0, user, node)), refund, "the user gets its maxFee");
        assertEq(tm.totalBurned() - burnedBefore, SLASH_AMOUNT - pool - refund, "the rest of the cap burns too");
        assertEq(CHALLENGE_WINDOW, VOTE_WINDOW); // so no re-challenge is ever possible after it
    }

    /// The same ally waits for the seed: it earns the reward only where the seed picked it (10 %
    /// per receipt and per validator address here), like any honest finder.
    function test_Attack_AllyEarnsTheRewardOnlyWhereSampled() public {
        address ally = makeAddr("ally");
        _registerNode(node, 2 ether);
        _registerValidator(ally, 1 ether);
        (uint256 b, Receipt[] memory rs, bytes32[] memory ls) = _commit(node, 16);
        _rollSealed(block.number + SEED_DELAY_BLOCKS + 1);
        uint256 sampledCount;
        for (uint256 i; i < 16; ++i) {
            bool picked = tm.isSampled(_ref(b), ally, i);
            if (picked) ++sampledCount;
            bytes32[] memory proof = Merkle.proofAt(ls, i);
            uint256 id = _challenge(ally, b, i, rs[i], proof);
            assertTrue(
                (tm.challenges(id).sampled != TaskManager.Pick.None) == picked, "reward eligibility is the seed's pick"
            );
        }
        assertLt(sampledCount, 16); // the seed does not pick the ally everywhere
    }

    /// @dev Registers a validator without moving the clock (`_registerValidator` steps a second).
    function _stakeNow(address who, uint256 stake) internal {
        vm.deal(who, who.balance + stake);
        vm.prank(who);
        sm.registerValidator{value: stake}();
    }

    uint256 internal constant LOCK_STEP_SLACK = CHALLENGE_WINDOW / 16 + 2;
}
