// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Payments} from "../src/Payments.sol";
import {ServiceManager} from "../src/ServiceManager.sol";
import {SeedBeacon} from "../src/SeedBeacon.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt, TaskRequest, Voucher} from "../src/libraries/Types.sol";

import {FakeHeader} from "./utils/FakeHeader.sol";
import {Merkle} from "./utils/Merkle.sol";
import {Test} from "./utils/Test.sol";
import {Base} from "./utils/Base.sol";

/// @notice Drives all three ETH-holding contracts with a fixed cast of actors and keeps ghost
///         totals of the ETH that went in and came out.
contract ProtocolHandler is Test {
    ServiceManager internal immutable sm;
    Payments internal immutable payments;
    TaskManager internal immutable tm;

    address[] public nodes;
    address[] public validators;
    address[] public users;
    uint256[] internal userKeys;

    /// @notice The first property a handler step saw broken ("" while none). A failed assertion in a
    ///         handler only reverts that call, which the campaign ignores (fail_on_revert = false),
    ///         so steps record here and `invariant_HandlerChecksHold` fails the campaign (review 20).
    string public violation;

    uint256 public ghostIn; // ETH the actors sent to the contracts
    uint256 public ghostOut; // ETH the contracts paid to the actors
    mapping(bytes4 => uint256) public calls;

    mapping(uint256 => Receipt[]) internal _batchReceipts;
    mapping(uint256 => bytes32[]) internal _batchLeaves;
    mapping(uint256 => bytes[]) internal _batchTraces;
    mapping(uint256 => TaskManager.BatchRef) internal _refs;
    /// @dev Entry 0 of every batch is a decoy of its node, from this account.
    address public decoyUser;
    uint256 internal _decoyKey;
    /// @dev challenge id => (batch id, entry index) + 1 (0: not opened here).
    mapping(uint256 => uint256[2]) internal _challenged;

    constructor(ServiceManager sm_, Payments payments_, TaskManager tm_) {
        sm = sm_;
        payments = payments_;
        tm = tm_;
        for (uint256 i; i < 3; ++i) {
            nodes.push(makeAddr(string.concat("inv-node", _digit(i))));
            validators.push(makeAddr(string.concat("inv-validator", _digit(i))));
            string memory name = string.concat("inv-user", _digit(i));
            users.push(makeAddr(name));
            userKeys.push(privateKeyOf(name));
        }
        decoyUser = makeAddr("inv-decoy");
        _decoyKey = privateKeyOf("inv-decoy");
    }

    /*//////////////////////////////////////////////////////////////
                               OPERATORS
    //////////////////////////////////////////////////////////////*/

    function registerNode(uint256 seed, uint256 stake) external {
        address who = nodes[seed % 3];
        stake = bound(stake, 1 ether, 5 ether);
        vm.deal(who, who.balance + stake);
        vm.prank(who);
        try sm.registerNode{value: stake}("http://node", new bytes32[](0), 1) {
            ghostIn += stake;
            ++calls[this.registerNode.selector];
        } catch {}
    }

    function registerValidator(uint256 seed, uint256 stake) external {
        address who = validators[seed % 3];
        stake = bound(stake, 1 ether, 5 ether);
        vm.deal(who, who.balance + stake);
        vm.prank(who);
        try sm.registerValidator{value: stake}() {
            ghostIn += stake;
            ++calls[this.registerValidator.selector];
        } catch {}
    }

    function addStake(uint256 seed, uint256 amount) external {
        address who = _operator(seed);
        amount = bound(amount, 1, 3 ether);
        vm.deal(who, who.balance + amount);
        vm.prank(who);
        try sm.addStake{value: amount}() {
            ghostIn += amount;
            ++calls[this.addStake.selector];
        } catch {}
    }

    function requestUnbond(uint256 seed, uint256 amount) external {
        address who = _operator(seed);
        amount = bound(amount, 1, sm.getOperator(who).stake + 1);
        vm.prank(who);
        try sm.requestUnbond(amount) {
            ++calls[this.requestUnbond.selector];
        } catch {}
    }

    function deregister(uint256 seed) external {
        vm.prank(_operator(seed));
        try sm.deregister() {
            ++calls[this.deregister.selector];
        } catch {}
    }

    function withdrawUnbonded(uint256 seed) external {
        address who = _operator(seed);
        uint256 before = who.balance;
        vm.prank(who);
        try sm.withdrawUnbonded() {
            ghostOut += who.balance - before;
            ++calls[this.withdrawUnbonded.selector];
        } catch {}
    }

    /*//////////////////////////////////////////////////////////////
                                PAYMENTS
    //////////////////////////////////////////////////////////////*/

    function deposit(uint256 seed, uint256 nodeSeed, uint256 amount) external {
        address who = users[seed % 3];
        amount = bound(amount, 1, 10 ether);
        vm.deal(who, who.balance + amount);
        vm.prank(who);
        payments.deposit{value: amount}(nodes[nodeSeed % 3]);
        ghostIn += amount;
        ++calls[this.deposit.selector];
    }

    function requestWithdrawal(uint256 seed, uint256 nodeSeed) external {
        vm.prank(users[seed % 3]);
        try payments.requestWithdrawal(nodes[nodeSeed % 3]) {
            ++calls[this.requestWithdrawal.selector];
        } catch {}
    }

    function cancelWithdrawal(uint256 seed, uint256 nodeSeed) external {
        vm.prank(users[seed % 3]);
        try payments.cancelWithdrawal(nodes[nodeSeed % 3]) {
            ++calls[this.cancelWithdrawal.selector];
        } catch {}
    }

    function withdrawDeposit(uint256 seed, uint256 nodeSeed) external {
        address who = users[seed % 3];
        uint256 before = who.balance;
        vm.prank(who);
        try payments.withdraw(nodes[nodeSeed % 3]) {
            ghostOut += who.balance - before;
            ++calls[this.withdrawDeposit.selector];
        } catch {}
    }

    /// @dev A node redeems a voucher above what it was paid; never more than the channel holds,
    ///      all of it into the node's account (earnings + escrow).
    function redeem(uint256 nodeSeed, uint256 userSeed, uint256 amount) external {
        address to = nodes[nodeSeed % 3];
        uint256 u = userSeed % 3;
        amount = bound(amount, 1, 3 ether);
        (uint256 deposited, uint256 redeemedBefore,) = payments.channel(users[u], to);
        Voucher[] memory vs = new Voucher[](1);
        vs[0] = Voucher({user: users[u], node: to, cumulativeAmount: redeemedBefore + amount});
        (uint256 e0, uint256 s0) = payments.account(to);
        // Packed before the prank: signing calls Payments, which would use up the prank.
        bytes memory packed = _packed(u, vs[0]);
        vm.prank(to);
        uint256 paid = payments.redeem(packed);
        _expect(paid <= deposited - redeemedBefore, "paid beyond the channel");
        (uint256 e1, uint256 s1) = payments.account(to);
        _expect(e1 + s1 - e0 - s0 == paid, "credited to the node's account");
        ++calls[this.redeem.selector];
    }

    function withdrawEarnings(uint256 nodeSeed) external {
        address who = nodes[nodeSeed % 3];
        uint256 before = who.balance;
        vm.prank(who);
        try payments.withdrawEarnings() {
            ghostOut += who.balance - before;
            ++calls[this.withdrawEarnings.selector];
        } catch {}
    }

    function fundEscrow(uint256 seed, uint256 nodeSeed, uint256 amount) external {
        address who = _anyActor(seed);
        amount = bound(amount, 1, 0.1 ether);
        vm.deal(who, who.balance + amount);
        vm.prank(who);
        payments.fundEscrow{value: amount}(nodes[nodeSeed % 3]);
        ghostIn += amount;
        ++calls[this.fundEscrow.selector];
    }

    /// @dev A voucher of user `u` in Payments' packed form.
    function _packed(uint256 u, Voucher memory v) internal view returns (bytes memory) {
        (uint8 pv, bytes32 r, bytes32 ps) = vm.sign(userKeys[u], payments.hashVoucher(v));
        bytes32 vs = bytes32(uint256(ps) | (uint256(pv - 27) << 255));
        return abi.encodePacked(uint256(uint160(v.user)) << 96 | v.cumulativeAmount, r, vs);
    }

    /*//////////////////////////////////////////////////////////////
                                DISPUTES
    //////////////////////////////////////////////////////////////*/

    /// @dev A node commits into one of 4 slots (reused once retained long enough) and, for an odd
    ///      `settleSeed`, settles a voucher of one of its channels in the same transaction.
    function commitBatch(uint256 seed, uint256 n, uint256 fee, uint256 settleSeed) external {
        address who = nodes[seed % 3];
        // forge-lint: disable-next-line(unsafe-typecast)
        uint32 slot = uint32((seed / 3) % 4);
        bytes memory vouchers;
        if (settleSeed % 2 == 1) {
            uint256 u = (settleSeed / 2) % 3;
            (, uint256 redeemedBefore,) = payments.channel(users[u], who);
            uint256 amount = bound(settleSeed / 6, 1, 3 ether);
            vouchers = _packed(u, Voucher({user: users[u], node: who, cumulativeAmount: redeemedBefore + amount}));
        }
        n = bound(n, 1, 4);
        fee = bound(fee, 0, 2 ether);
        uint256 nextId = tm.batchCount() + 1;
        bytes32[] memory leaves = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            bytes memory trace = abi.encode("trace", nextId, i);
            Receipt memory r = _entryReceipt(nextId, i, who, fee, trace);
            leaves[i] = keccak256(bytes.concat(keccak256(abi.encode(r))));
            _batchReceipts[nextId].push(r);
            _batchLeaves[nextId].push(leaves[i]);
            _batchTraces[nextId].push(trace);
        }
        bytes32 root = Merkle.root(leaves);
        vm.prank(who);
        // forge-lint: disable-next-line(unsafe-typecast)
        try tm.commitBatch(slot, root, uint32(n), "", vouchers) returns (uint256) {
            // forge-lint: disable-next-line(unsafe-typecast)
            _refs[nextId] =
                TaskManager.BatchRef(nextId, who, slot, uint32(n), uint32(block.number), uint32(block.timestamp), root);
            ++calls[this.commitBatch.selector];
        } catch {
            delete _batchReceipts[nextId];
            delete _batchLeaves[nextId];
            delete _batchTraces[nextId];
        }
    }

    /// @dev A validator or user claims an entry unavailable (bonded).
    function challengeAvailability(uint256 seed, uint256 batchSeed, uint256 indexSeed) external {
        uint256 count = tm.batchCount();
        if (count == 0) return;
        uint256 batchId = bound(batchSeed, 1, count);
        uint256 n = _batchLeaves[batchId].length;
        if (n == 0) return;
        address who = seed % 2 == 0 ? validators[(seed / 2) % 3] : users[(seed / 2) % 3];
        uint256 bond = tm.CHALLENGE_BOND();
        vm.deal(who, who.balance + bond);
        vm.prank(who);
        try tm.challengeAvailability{value: bond}(_refs[batchId], indexSeed % n) {
            ghostIn += bond;
            ++calls[this.challengeAvailability.selector];
        } catch {}
    }

    /// @dev Anyone posts the entry (sometimes with a wrong trace, which must be refused).
    function answerAvailability(uint256 seed, uint256 idSeed, bool wrongTrace) external {
        uint256 count = tm.availabilityCount();
        if (count == 0) return;
        uint256 id = bound(idSeed, 1, count);
        TaskManager.AvailabilityChallenge memory a = tm.availabilityChallenges(id);
        uint256 i = a.index;
        bytes memory trace = wrongTrace ? bytes("not the trace") : _batchTraces[a.batchId][i];
        address actor = _anyActor(seed);
        vm.prank(actor, actor); // an answer is a transaction of its own (ClaimBond.costOfAnswer)
        try tm.answerAvailability(
            id, _refs[a.batchId], _batchReceipts[a.batchId][i], Merkle.proofAt(_batchLeaves[a.batchId], i), trace
        ) {
            _expect(!wrongTrace, "a trace that is not the committed one answered a challenge");
            ++calls[this.answerAvailability.selector];
        } catch {}
    }

    function resolveAvailability(uint256 idSeed) external {
        uint256 count = tm.availabilityCount();
        if (count == 0) return;
        try tm.resolveAvailability(bound(idSeed, 1, count)) {
            ++calls[this.resolveAvailability.selector];
        } catch {}
    }

    function challenge(uint256 seed, uint256 batchSeed, uint256 leafSeed) external {
        uint256 count = tm.batchCount();
        if (count == 0) return;
        uint256 batchId = bound(batchSeed, 1, count);
        bytes32[] memory leaves = _batchLeaves[batchId];
        if (leaves.length == 0) return;
        uint256 i = leafSeed % leaves.length;
        bytes32[] memory proof = Merkle.proofAt(leaves, i);
        Receipt memory r = _batchReceipts[batchId][i];
        address who = validators[seed % 3];
        uint256 bond = tm.CHALLENGE_BOND();
        vm.deal(who, who.balance + bond);
        vm.prank(who);
        try tm.challenge{value: bond}(_refs[batchId], i, r, proof, "") returns (uint256 id) {
            ghostIn += bond;
            _challenged[id] = [batchId, i + 1];
            ++calls[this.challenge.selector];
        } catch {}
    }

    /// @dev Entry `i` of batch `batchId` by node `who`: the decoy account's at 0, else a user's.
    function _entryReceipt(uint256 batchId, uint256 i, address who, uint256 fee, bytes memory trace)
        internal
        view
        returns (Receipt memory)
    {
        address entryUser = i == 0 ? decoyUser : users[i % 3];
        return Receipt({
            requestHash: payments.hashTaskRequest(_entryRequest(batchId, i, entryUser, who, fee)),
            user: entryUser,
            modelId: bytes32(0),
            inputHash: bytes32(i),
            outputHash: bytes32(batchId),
            traceHash: sha256(trace),
            fee: fee
        });
    }

    /// @dev The request of entry `i` of batch `batchId` (its receipt's `requestHash` preimage),
    ///      signed for `maxFee` (the fee its node charged and wrote in the receipt).
    function _entryRequest(uint256 batchId, uint256 i, address entryUser, address forNode, uint256 maxFee)
        internal
        pure
        returns (TaskRequest memory)
    {
        return TaskRequest({
            user: entryUser,
            node: forNode,
            modelId: bytes32(0),
            agentHash: bytes32(0),
            inputHash: bytes32(i),
            maxFee: maxFee,
            nonce: batchId * 16 + i,
            deadline: type(uint64).max
        });
    }

    /// @dev A caller reveals a challenged entry as a decoy with the decoy account's signature: only
    ///      the node may (anyone else is refused), and only entry 0 of a batch is one.
    function revealDecoy(uint256 seed, uint256 challengeSeed) external {
        uint256 count = tm.challengeCount();
        if (count == 0) return;
        uint256 id = bound(challengeSeed, 1, count);
        uint256[2] memory entry = _challenged[id];
        if (entry[1] == 0) return;
        Receipt memory r = _batchReceipts[entry[0]][entry[1] - 1];
        TaskManager.Challenge memory c = tm.challenges(id);
        (uint8 v, bytes32 rr, bytes32 ss) = vm.sign(_decoyKey, payments.hashDecoy(c.node, r.requestHash));
        address caller = seed % 4 == 3 ? _anyActor(seed / 4) : c.node;
        vm.prank(caller);
        try tm.revealDecoy(
            id, r, _entryRequest(entry[0], entry[1] - 1, r.user, c.node, r.fee), abi.encodePacked(rr, ss, v)
        ) {
            _expect(r.user == decoyUser, "a receipt of a real user was revealed as a decoy");
            _expect(caller == c.node, "a decoy revealed by someone other than its node");
            ++calls[this.revealDecoy.selector];
        } catch {}
    }

    /// @dev Seals a vote (salt 0); {reveal} opens it, with the side it was sealed with or not.
    function vote(uint256 seed, uint256 challengeSeed, bool fraud) external {
        uint256 count = tm.challengeCount();
        if (count == 0) return;
        address who = validators[seed % 3];
        uint256 id = bound(challengeSeed, 1, count);
        uint256 bond = tm.CHALLENGE_BOND();
        vm.deal(who, who.balance + bond);
        vm.prank(who);
        try tm.commitVote{value: bond}(id, keccak256(abi.encode(id, who, fraud, bytes32(0)))) {
            ghostIn += bond;
            ++calls[this.vote.selector];
        } catch {}
    }

    function reveal(uint256 seed, uint256 challengeSeed, bool fraud) external {
        uint256 count = tm.challengeCount();
        if (count == 0) return;
        vm.prank(validators[seed % 3]);
        try tm.revealVote(bound(challengeSeed, 1, count), fraud, bytes32(0)) {
            ++calls[this.reveal.selector];
        } catch {}
    }

    function resolve(uint256 challengeSeed) external {
        uint256 count = tm.challengeCount();
        if (count == 0) return;
        try tm.resolve(bound(challengeSeed, 1, count)) {
            ++calls[this.resolve.selector];
        } catch {}
    }

    /// @dev Anyone shows a request for a fraud verdict's refund: the entry's real request (credited
    ///      its signed maxFee up to the cap held, the rest burned) or one naming the caller
    ///      (refused: not the receipt's request).
    function claimRefund(uint256 seed, uint256 challengeSeed) external {
        uint256 count = tm.challengeCount();
        if (count == 0) return;
        uint256 id = bound(challengeSeed, 1, count);
        uint256[2] memory entry = _challenged[id];
        if (entry[1] == 0) return;
        Receipt memory r = _batchReceipts[entry[0]][entry[1] - 1];
        address caller = _anyActor(seed / 2);
        address named = seed % 2 == 0 ? r.user : caller;
        TaskRequest memory request = _entryRequest(entry[0], entry[1] - 1, named, tm.challenges(id).node, r.fee);
        uint256 before = tm.claimable(r.user);
        uint256 held = tm.challenges(id).refundDue;
        uint256 burnedBefore = tm.totalBurned();
        vm.prank(caller);
        try tm.claimRefund(id, r, request) returns (uint256 amount) {
            _expect(named == r.user, "a refund paid on a request that is not the receipt's");
            _expect(tm.claimable(r.user) == before + amount, "the refund went to the request's user");
            _expect(amount == (request.maxFee < held ? request.maxFee : held), "the signed maxFee, up to the cap");
            _expect(tm.totalBurned() - burnedBefore == held - amount, "the rest of the cap burned");
            ++calls[this.claimRefund.selector];
        } catch {}
    }

    function claimVoteReward(uint256 seed, uint256 challengeSeed) external {
        uint256 count = tm.challengeCount();
        if (count == 0) return;
        vm.prank(validators[seed % 3]);
        try tm.claimVoteReward(bound(challengeSeed, 1, count)) {
            ++calls[this.claimVoteReward.selector];
        } catch {}
    }

    function withdrawClaimable(uint256 seed) external {
        address who = _anyActor(seed);
        uint256 before = who.balance;
        vm.prank(who);
        try tm.withdraw() {
            ghostOut += who.balance - before;
            ++calls[this.withdrawClaimable.selector];
        } catch {}
    }

    function warp(uint256 secondsAhead) external {
        vm.warp(block.timestamp + bound(secondsAhead, 1, 700));
        vm.roll(block.number + 1);
        // a validator seals each block's prevrandao (SeedBeacon), so the seeds of batches become known
        uint256 mined = block.number - 1;
        bytes memory header = FakeHeader.build(mined, keccak256(abi.encode("mix", mined)));
        vm.setBlockhash(mined, keccak256(header));
        SeedBeacon beacon = tm.SEED_BEACON();
        (bytes32 value,) = beacon.randomness(mined);
        if (value == bytes32(0)) beacon.seal(mined, header);
    }

    /*//////////////////////////////////////////////////////////////
                                HELPERS
    //////////////////////////////////////////////////////////////*/

    /// @dev Records `what` as the handler's `violation` unless `ok` (the first one is kept).
    function _expect(bool ok, string memory what) internal {
        if (!ok && bytes(violation).length == 0) violation = what;
    }

    function _operator(uint256 seed) internal view returns (address) {
        return seed % 2 == 0 ? nodes[(seed / 2) % 3] : validators[(seed / 2) % 3];
    }

    function _anyActor(uint256 seed) internal view returns (address) {
        uint256 group = seed % 3;
        uint256 i = (seed / 3) % 3;
        return group == 0 ? nodes[i] : group == 1 ? validators[i] : users[i];
    }

    function _digit(uint256 i) internal pure returns (string memory) {
        return string(abi.encodePacked(bytes1(uint8(48 + i))));
    }
}

/// @notice Solvency of the protocol: every wei the contracts hold is owed to someone.
contract InvariantsTest is Base {
    ProtocolHandler internal handler;

    function setUp() public override {
        super.setUp();
        _deployDevnet();
        handler = new ProtocolHandler(sm, payments, tm);
        targetContract(address(handler));
    }

    /// @dev No handler step saw one of its properties broken (`ProtocolHandler.violation`).
    function invariant_HandlerChecksHold() public view {
        assertTrue(bytes(handler.violation()).length == 0, string.concat("a handler step saw: ", handler.violation()));
    }

    /// @dev ServiceManager: balance == Σ (active stake + unbonding stake).
    function invariant_ServiceManagerHoldsAllStake() public view {
        uint256 sum;
        for (uint256 i; i < 3; ++i) {
            ServiceManager.Operator memory n = sm.getOperator(handler.nodes(i));
            ServiceManager.Operator memory v = sm.getOperator(handler.validators(i));
            sum += n.stake + n.unbonding + v.stake + v.unbonding;
        }
        assertEq(address(sm).balance, sum, "sm balance");
    }

    /// @dev totalValidatorStake == Σ active stake of registered validators.
    function invariant_TotalValidatorStake() public view {
        uint256 sum;
        for (uint256 i; i < 3; ++i) {
            ServiceManager.Operator memory v = sm.getOperator(handler.validators(i));
            if (v.registered) sum += v.stake;
        }
        assertEq(sm.totalValidatorStake(), sum, "total validator stake");
    }

    /// @dev Payments: balance == Σ over channels (deposit - redeemed) + Σ over nodes (earnings +
    ///      escrow), and no channel ever redeemed more than was deposited into it.
    function invariant_PaymentsHoldsDeposits() public view {
        uint256 sum;
        for (uint256 i; i < 3; ++i) {
            for (uint256 j; j < 3; ++j) {
                (uint256 deposited, uint256 redeemed,) = payments.channel(handler.users(i), handler.nodes(j));
                assertTrue(redeemed <= deposited, "redeemed beyond the channel's deposit");
                sum += deposited - redeemed;
            }
            (uint256 earnings, uint256 escrow) = payments.account(handler.nodes(i));
            sum += earnings + escrow;
        }
        assertEq(address(payments).balance, sum, "payments balance");
    }

    /// @dev TaskManager: balance == open bonds (fraud and availability) + Σ claimable + unclaimed
    ///      voter pools; each node's freeze count == its open challenges of both kinds.
    function invariant_TaskManagerHoldsBondsAndRewards() public view {
        uint256 sum;
        uint256[3] memory open;
        uint256 count = tm.challengeCount();
        for (uint256 id = 1; id <= count; ++id) {
            TaskManager.Challenge memory c = tm.challenges(id);
            if (c.status == TaskManager.ChallengeStatus.Open) {
                sum += tm.CHALLENGE_BOND() * (1 + c.committed); // the challenge's and the votes' bonds
                for (uint256 i; i < 3; ++i) {
                    if (c.node == handler.nodes(i)) ++open[i];
                }
            } else {
                sum += c.rewardPool - c.rewardClaimed + c.refundDue; // refunds held until claimed
                sum += _voteBondsOwed(id, c);
            }
        }
        uint256 available = tm.availabilityCount();
        for (uint256 id = 1; id <= available; ++id) {
            TaskManager.AvailabilityChallenge memory a = tm.availabilityChallenges(id);
            if (a.status != TaskManager.AvailabilityStatus.Open) continue;
            sum += tm.CHALLENGE_BOND();
            address node = a.node;
            for (uint256 i; i < 3; ++i) {
                if (node == handler.nodes(i)) ++open[i];
            }
        }
        for (uint256 i; i < 3; ++i) {
            sum += tm.claimable(handler.nodes(i)) + tm.claimable(handler.validators(i)) + tm.claimable(handler.users(i));
            assertEq(sm.getOperator(handler.nodes(i)).frozenCount, open[i], "frozen == open challenges");
        }
        sum += tm.claimable(handler.decoyUser()); // refunded when a node kept its decoy quiet
        assertEq(address(tm).balance, sum, "tm balance");
    }

    /// @dev Vote bonds of a resolved challenge still to be claimed back: votes on the side of a
    ///      verdict, revealed votes without one, sealed votes on a decoy.
    function _voteBondsOwed(uint256 id, TaskManager.Challenge memory c) internal view returns (uint256 owed) {
        bool fraudWon = c.status == TaskManager.ChallengeStatus.Fraud;
        bool cleared = c.status == TaskManager.ChallengeStatus.NotFraud && c.honestStake >= c.fraudStake
            && c.honestStake * 10_000 >= c.quorumBase * tm.QUORUM_BPS();
        for (uint256 i; i < 3; ++i) {
            address v = handler.validators(i);
            TaskManager.VoteRecord memory r = tm.getVote(id, v);
            if (v == c.challenger || (r.weight == 0 && !r.revealed) || r.rewardClaimed) continue;
            bool owed_;
            if (c.status == TaskManager.ChallengeStatus.Decoy) owed_ = true;
            else if (fraudWon || cleared) owed_ = r.revealed && r.fraud == fraudWon;
            else owed_ = r.revealed;
            if (owed_) owed += tm.CHALLENGE_BOND();
        }
    }

    /// @dev Ghost totals: what went in minus what came out is held or burned, nothing else.
    function invariant_GhostConservation() public view {
        uint256 held = address(sm).balance + address(payments).balance + address(tm).balance;
        assertEq(handler.ghostIn() - handler.ghostOut(), held + tm.totalBurned(), "ghost in - out");
        assertEq(BURN.balance, tm.totalBurned(), "burned");
    }
}

/// @notice The handler is not vacuous: each availability flow succeeds when driven on purpose
///         (its try/catch would otherwise hide a handler that always reverts).
contract InvariantHandlerTest is Base {
    ProtocolHandler internal handler;

    function setUp() public override {
        super.setUp();
        _deployDevnet();
        handler = new ProtocolHandler(sm, payments, tm);
    }

    function test_AvailabilityFlowsSucceedThroughTheHandler() public {
        handler.registerNode(0, 2 ether);
        handler.commitBatch(0, 3, 1 ether, 0);
        handler.challengeAvailability(0, 1, 0); // entry 0
        handler.answerAvailability(0, 1, true); // the wrong trace is refused
        assertEq(handler.calls(handler.answerAvailability.selector), 0, "a wrong trace answered");
        handler.answerAvailability(0, 1, false);
        handler.challengeAvailability(2, 1, 1); // entry 1, left unanswered
        handler.warp(700);
        handler.resolveAvailability(2);
        assertEq(handler.calls(handler.commitBatch.selector), 1, "commit");
        assertEq(handler.calls(handler.challengeAvailability.selector), 2, "challenges");
        assertEq(handler.calls(handler.answerAvailability.selector), 1, "answer");
        assertEq(handler.calls(handler.resolveAvailability.selector), 1, "resolve");
    }

    /// @dev A commit that settles a voucher credits the node's account (earnings + escrow), and a
    ///      slot is reused once its batch is past retention.
    function test_CommitSettlesAndReusesSlotsThroughTheHandler() public {
        handler.registerNode(0, 2 ether); // nodes[0]
        handler.deposit(0, 0, 1 ether); // users[0] -> nodes[0]
        handler.commitBatch(0, 2, 1 ether, 1 + 6 * 0.5 ether); // slot 0, settles 0.5 ether of users[0]
        assertEq(handler.calls(handler.commitBatch.selector), 1, "commit");
        (uint256 earnings, uint256 escrow) = payments.account(handler.nodes(0));
        assertEq(earnings + escrow, 0.5 ether, "the node was credited in the commit");
        uint256 outBefore = handler.ghostOut();
        handler.withdrawEarnings(0);
        assertEq(handler.ghostOut(), outBefore, "nothing is withdrawable within the hold");
        handler.commitBatch(0, 2, 1 ether, 0); // slot 0 again: still retained
        assertEq(handler.calls(handler.commitBatch.selector), 1, "a retained slot is refused");
        vm.warp(block.timestamp + tm.BATCH_RETENTION());
        handler.commitBatch(0, 2, 1 ether, 0);
        assertEq(handler.calls(handler.commitBatch.selector), 2, "reused after retention");
        _pastHold(handler.nodes(0));
        handler.withdrawEarnings(0);
        assertEq(handler.ghostOut() - outBefore, earnings, "and pulls its earnings after the hold");
    }

    /// @dev The decoy flow through the handler: a real user's entry is refused, the decoy is paid.
    function test_DecoyFlowsThroughTheHandler() public {
        handler.registerNode(0, 2 ether);
        handler.registerValidator(0, 1 ether);
        handler.fundEscrow(0, 0, 0.05 ether);
        handler.warp(1); // the validator's stake predates the commit (a bounty needs it)
        handler.commitBatch(0, 2, 0, 0); // entry 0: the decoy account's; entry 1: users[1]
        handler.warp(1);
        handler.warp(1); // the seed block is mined and readable
        handler.challenge(0, 1, 1); // the real entry
        handler.challenge(0, 1, 0); // the decoy
        assertEq(handler.calls(handler.challenge.selector), 2, "challenges");
        handler.revealDecoy(0, 1);
        assertEq(handler.calls(handler.revealDecoy.selector), 0, "a real user's entry revealed as a decoy");
        handler.revealDecoy(0, 2);
        assertEq(handler.calls(handler.revealDecoy.selector), 1, "the decoy");
        assertTrue(tm.claimable(handler.validators(0)) > tm.CHALLENGE_BOND(), "bond back plus the bounty");
    }
}
