// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {ModelRegistry} from "../../src/ModelRegistry.sol";
import {OmissionManager} from "../../src/OmissionManager.sol";
import {Payments} from "../../src/Payments.sol";
import {SeedBeacon} from "../../src/SeedBeacon.sol";
import {ServiceManager} from "../../src/ServiceManager.sol";
import {TaskManager} from "../../src/TaskManager.sol";
import {IPayments} from "../../src/interfaces/IPayments.sol";
import {IServiceManager} from "../../src/interfaces/IServiceManager.sol";
import {Receipt, ReceiptPromise, TaskRequest, Voucher} from "../../src/libraries/Types.sol";

import {FakeHeader} from "./FakeHeader.sol";
import {Merkle} from "./Merkle.sol";
import {Test, Vm} from "./Test.sol";

/// @notice Deploys the four contracts with the documented production defaults
///         (docs/security-parameters.md) and offers the helpers every suite shares.
abstract contract Base is Test {
    // ServiceManager
    uint256 internal constant MIN_NODE_STAKE = 1 ether;
    uint256 internal constant MIN_VALIDATOR_STAKE = 1 ether;
    uint256 internal constant UNBONDING_PERIOD = 7 days;
    uint256 internal constant MAX_MODELS = 16;
    // Payments
    uint256 internal constant WITHDRAWAL_DELAY = 1 days;
    uint256 internal constant MAX_REDEEM_BATCH = 256;
    uint256 internal constant VERIFICATION_SHARE_BPS = 2_000;
    // TaskManager
    uint256 internal constant SEED_DELAY_BLOCKS = 2;
    uint256 internal constant SAMPLE_RATE_PPM = 100_000;
    uint256 internal constant CHALLENGE_WINDOW = 1 days;
    uint256 internal constant VOTE_WINDOW = 1 days;
    uint256 internal constant CHALLENGE_BOND = 0.1 ether;
    uint256 internal constant QUORUM_BPS = 3_000;
    uint256 internal constant SLASH_AMOUNT = 1 ether;
    uint256 internal constant CHALLENGER_REWARD_BPS = 2_000;
    uint256 internal constant VOTER_REWARD_BPS = 2_000;
    uint256 internal constant DECOY_BOUNTY = 0.05 ether;
    uint256 internal constant DECOY_REBATE_BPS = 1_000;

    address internal constant BURN = 0x000000000000000000000000000000000000dEaD;
    /// @dev MIN_ANSWER_GAS_PRICE of the next deployment (0, the default; a test sets it first).
    uint256 internal minAnswerGasPrice;

    ServiceManager internal sm;
    ModelRegistry internal registry;
    Payments internal payments;
    TaskManager internal tm;
    SeedBeacon internal beacon;
    /// @dev SOURCE of the next deployment's beacon (the production default; a test sets it first).
    SeedBeacon.Source internal seedSource = SeedBeacon.Source.Prevrandao;
    OmissionManager internal om;

    address internal node;
    address internal node2;
    address internal validator1;
    address internal validator2;
    address internal validator3;
    address internal user;
    uint256 internal userKey;
    address internal user2;
    uint256 internal user2Key;
    address internal stranger;

    /// @dev The header of every batch committed through {_commitRoot}, by id.
    mapping(uint256 => TaskManager.BatchRef) internal _refs;
    /// @dev Slots each node used so far (a new slot per batch unless a test reuses one).
    mapping(address => uint32) internal _slotsUsed;

    bytes32 internal constant MODEL_ID = keccak256("smollm2-135m manifest");
    string internal constant ENDPOINT = "http://127.0.0.1:8000";

    function setUp() public virtual {
        node = makeAddr("node");
        node2 = makeAddr("node2");
        validator1 = makeAddr("validator1");
        validator2 = makeAddr("validator2");
        validator3 = makeAddr("validator3");
        user = makeAddr("user");
        userKey = privateKeyOf("user");
        user2 = makeAddr("user2");
        user2Key = privateKeyOf("user2");
        stranger = makeAddr("stranger");
        vm.warp(1_700_000_000);
        vm.roll(100);
        vm.prevrandao(keccak256("a RANDAO mix")); // a post-merge chain's (SeedBeacon checks it)
        _deploy();
    }

    function _deploy() internal {
        _deploy(MIN_NODE_STAKE);
    }

    /// @dev The production contracts with another MIN_NODE_STAKE (everything else as above).
    function _deploy(uint256 minNodeStake) internal {
        sm = new ServiceManager(minNodeStake, MIN_VALIDATOR_STAKE, UNBONDING_PERIOD, MAX_MODELS);
        registry = new ModelRegistry();
        payments =
            new Payments(WITHDRAWAL_DELAY, MAX_REDEEM_BATCH, VERIFICATION_SHARE_BPS, DECOY_BOUNTY, DECOY_REBATE_BPS);
        beacon = new SeedBeacon(seedSource, SEED_DELAY_BLOCKS);
        tm = new TaskManager(
            IServiceManager(address(sm)),
            IPayments(address(payments)),
            beacon,
            SAMPLE_RATE_PPM,
            CHALLENGE_WINDOW,
            VOTE_WINDOW,
            CHALLENGE_BOND,
            QUORUM_BPS,
            SLASH_AMOUNT,
            CHALLENGER_REWARD_BPS,
            VOTER_REWARD_BPS,
            minAnswerGasPrice
        );
        sm.setTaskManager(address(tm));
        payments.setTaskManager(address(tm));
        om = new OmissionManager(tm);
        sm.setOmissionManager(address(om));
    }

    /// @dev Rolls to `height` and seals the beacon's value of each block passed (the last 256),
    ///      as a validator does for the seed blocks it needs: under `Prevrandao` a seed is unknown
    ///      until its block is sealed.
    function _rollSealed(uint256 height) internal {
        uint256 from = block.number;
        vm.roll(height);
        for (uint256 b = from; b < height && b < from + 256; ++b) {
            _sealBlock(b);
        }
    }

    /// @dev Seals block `b` (mined) with a made-up header whose hash becomes the block's hash.
    function _sealBlock(uint256 b) internal {
        (bytes32 value,) = beacon.randomness(b);
        if (value != bytes32(0) && beacon.SOURCE() == SeedBeacon.Source.Prevrandao) return;
        if (beacon.SOURCE() == SeedBeacon.Source.Blockhash) {
            if (blockhash(b) == bytes32(0)) vm.setBlockhash(b, keccak256(abi.encode("block", b)));
            return;
        }
        bytes memory header = _header(b, keccak256(abi.encode("mix", b)));
        vm.setBlockhash(b, keccak256(header));
        beacon.seal(b, header);
    }

    /// @dev A made-up header of block `b` with `mix` as its mixHash (FakeHeader).
    function _header(uint256 b, bytes32 mix) internal pure returns (bytes memory) {
        return FakeHeader.build(b, mix);
    }

    /// @dev Redeploys with the devnet parameters (short windows, every receipt sampled).
    function _deployDevnet() internal {
        _deployDevnet(60);
    }

    /// @dev The devnet parameters with another unbonding period (seconds).
    function _deployDevnet(uint256 unbondingPeriod) internal {
        sm = new ServiceManager(MIN_NODE_STAKE, MIN_VALIDATOR_STAKE, unbondingPeriod, MAX_MODELS);
        payments = new Payments(60, MAX_REDEEM_BATCH, VERIFICATION_SHARE_BPS, DECOY_BOUNTY, DECOY_REBATE_BPS);
        beacon = new SeedBeacon(seedSource, 1);
        tm = new TaskManager(
            IServiceManager(address(sm)),
            IPayments(address(payments)),
            beacon,
            1_000_000,
            600,
            30,
            CHALLENGE_BOND,
            QUORUM_BPS,
            SLASH_AMOUNT,
            CHALLENGER_REWARD_BPS,
            VOTER_REWARD_BPS,
            minAnswerGasPrice
        );
        sm.setTaskManager(address(tm));
        payments.setTaskManager(address(tm));
        om = new OmissionManager(tm);
        sm.setOmissionManager(address(om));
    }

    /*//////////////////////////////////////////////////////////////
                               OPERATORS
    //////////////////////////////////////////////////////////////*/

    function _models() internal pure returns (bytes32[] memory ids) {
        ids = new bytes32[](1);
        ids[0] = MODEL_ID;
    }

    function _registerNode(address who, uint256 stake) internal {
        vm.deal(who, who.balance + stake);
        vm.prank(who);
        sm.registerNode{value: stake}(ENDPOINT, _models(), 1 gwei);
    }

    /// @dev Registers and lets one second pass: only stake older than a challenge votes on it.
    function _registerValidator(address who, uint256 stake) internal {
        vm.deal(who, who.balance + stake);
        vm.prank(who);
        sm.registerValidator{value: stake}();
        vm.warp(block.timestamp + 1);
    }

    /*//////////////////////////////////////////////////////////////
                                RECEIPTS
    //////////////////////////////////////////////////////////////*/

    function _receipt(uint256 i, address who, uint256 fee) internal pure returns (Receipt memory r) {
        r = Receipt({
            requestHash: keccak256(abi.encode("request", i)),
            user: who,
            modelId: MODEL_ID,
            inputHash: sha256(abi.encode("input", i)),
            outputHash: sha256(abi.encode("output", i)),
            traceHash: sha256(_trace(i)),
            fee: fee
        });
    }

    /// @dev Task request `i` of `who` to `forNode` (the preimage of a bound receipt's `requestHash`).
    function _request(uint256 i, address who, address forNode) internal pure returns (TaskRequest memory) {
        return TaskRequest({
            user: who,
            node: forNode,
            modelId: MODEL_ID,
            agentHash: keccak256(abi.encode("agent")),
            inputHash: keccak256(abi.encode("input", i)), // no precompile call: safe under vm.prank
            maxFee: 0.001 ether, // the fee of `_receipts`' receipts: a node charges the signed maxFee
            nonce: i,
            deadline: type(uint64).max
        });
    }

    /// @dev `_request(i, who, forNode)` signed for `maxFee` (the fee its node charges and writes in
    ///      the receipt; a fraud refund credits it, up to the cap held at the verdict).
    function _request(uint256 i, address who, address forNode, uint256 maxFee)
        internal
        pure
        returns (TaskRequest memory q)
    {
        q = _request(i, who, forNode);
        q.maxFee = maxFee;
    }

    /// @dev Receipt `i` of fee `fee` whose `requestHash` is the digest of `_request(i, who,
    ///      forNode, fee)`: the node charged the signed maxFee and wrote it as the receipt's fee.
    function _chargedReceipt(uint256 i, address who, address forNode, uint256 fee)
        internal
        view
        returns (Receipt memory r)
    {
        r = _receipt(i, who, fee);
        r.requestHash = payments.hashTaskRequest(_request(i, who, forNode, fee));
    }

    /// @dev Receipt `i` whose `requestHash` is the EIP-712 digest of `_request(i, who, forNode)`
    ///      (signed for 0.001 ether, whatever `fee` the receipt says).
    function _boundReceipt(uint256 i, address who, address forNode, uint256 fee)
        internal
        view
        returns (Receipt memory r)
    {
        r = _receipt(i, who, fee);
        r.requestHash = payments.hashTaskRequest(_request(i, who, forNode));
    }

    /// @dev The trace bytes receipt `i` commits to (`traceHash = sha256(trace)`).
    function _trace(uint256 i) internal pure returns (bytes memory) {
        return abi.encode("trace", i);
    }

    /// @dev The price the last availability answer paid its node (its AvailabilitySettled event's
    ///      answerCost): since Review11 an answer is priced by its metered execution and, sent
    ///      directly by an account, its calldata by EIP-7623's rule (ClaimBond.costOfAnswer).
    function _paidForLastAnswer() internal returns (uint256 answerCost) {
        Vm.Log[] memory logs = vm.getRecordedLogs();
        bytes32 topic = keccak256("AvailabilitySettled(uint256,uint256,uint256,uint256)");
        for (uint256 i = logs.length; i > 0; --i) {
            if (logs[i - 1].topics[0] == topic) {
                (answerCost,,) = abi.decode(logs[i - 1].data, (uint256, uint256, uint256));
                return answerCost;
            }
        }
        revert("no AvailabilitySettled recorded (call vm.recordLogs() before the answer)");
    }

    function _leaf(Receipt memory r) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(r))));
    }

    /// @dev `n` receipts of `user` to `node` (fee 0.001 ether each) and their leaves.
    function _receipts(uint256 n) internal view returns (Receipt[] memory rs, bytes32[] memory leaves) {
        rs = new Receipt[](n);
        leaves = new bytes32[](n);
        for (uint256 i; i < n; ++i) {
            rs[i] = _boundReceipt(i, user, node, 0.001 ether); // its request is `_request(i, user, node)`
            leaves[i] = _leaf(rs[i]);
        }
    }

    /// @dev Commits `n` receipts as `who`; returns the batch id, receipts and leaves.
    function _commit(address who, uint256 n)
        internal
        returns (uint256 batchId, Receipt[] memory rs, bytes32[] memory leaves)
    {
        (rs, leaves) = _receipts(n);
        // forge-lint: disable-next-line(unsafe-typecast)
        batchId = _commitRoot(who, Merkle.root(leaves), uint32(n));
    }

    /// @dev Commits `root` of `n` receipts as `who` into its next unused slot; records the header.
    function _commitRoot(address who, bytes32 root, uint32 n) internal returns (uint256 batchId) {
        uint32 slot = _slotsUsed[who]++;
        vm.prank(who);
        batchId = tm.commitBatch(slot, root, n, "bafybatchmanifest", "");
        _refs[batchId] = _refOf(batchId, who, slot, n, root);
    }

    /// @dev The header of a batch committed in this block by `who`.
    function _refOf(uint256 batchId, address who, uint32 slot, uint32 n, bytes32 root)
        internal
        view
        returns (TaskManager.BatchRef memory)
    {
        // forge-lint: disable-next-line(unsafe-typecast)
        return TaskManager.BatchRef(batchId, who, slot, n, uint32(block.number), uint32(block.timestamp), root);
    }

    /// @dev The recorded header of a batch (all zero for an unknown id).
    function _ref(uint256 batchId) internal view returns (TaskManager.BatchRef memory) {
        return _refs[batchId];
    }

    /// @dev node + 3 validators (1, 2 and 3 ether) + one 4-receipt batch challenged by validator1.
    function _openChallenge() internal returns (uint256 challengeId, uint256 batchId, Receipt memory r) {
        return _openChallengeOn(false);
    }

    /// @dev As {_openChallenge} on the devnet parameters, challenged once the seed exists, so the
    ///      challenger is sampled (the devnet samples every receipt) and earns the reward.
    function _openSampledChallenge() internal returns (uint256 challengeId, uint256 batchId, Receipt memory r) {
        _deployDevnet();
        return _openChallengeOn(true);
    }

    function _openChallengeOn(bool afterSeed)
        internal
        returns (uint256 challengeId, uint256 batchId, Receipt memory r)
    {
        return _openChallengeStaked(2 ether, afterSeed);
    }

    /// @dev {_openChallengeOn} with the node staking `nodeStake`.
    function _openChallengeStaked(uint256 nodeStake, bool afterSeed)
        internal
        returns (uint256 challengeId, uint256 batchId, Receipt memory r)
    {
        _registerNode(node, nodeStake);
        _registerValidator(validator1, 1 ether);
        _registerValidator(validator2, 2 ether);
        _registerValidator(validator3, 3 ether);
        Receipt[] memory rs;
        bytes32[] memory leaves;
        (batchId, rs, leaves) = _commit(node, 4);
        r = rs[1];
        if (afterSeed) _rollSealed(block.number + 2);
        challengeId = _challenge(validator1, batchId, 1, r, Merkle.proof(leaves, leaves[1]));
    }

    /// @dev `user` pays `node` `fee` by voucher for task `task`, whose request it signed with
    ///      `deadline` and maxFee `fee` (the receipt's fee); the node signs a promise to commit the
    ///      receipt by `commitBy`. Returns the request, the receipt, the promise and the node's
    ///      signature.
    function _paidTaskWithPromise(uint256 task, uint256 fee, uint256 deadline, uint256 commitBy)
        internal
        returns (TaskRequest memory q, Receipt memory r, ReceiptPromise memory p, bytes memory sig)
    {
        _deposit(user, fee);
        Voucher memory v = _voucher(user, node, fee);
        bytes memory packed = _pack(v, _signVoucher(userKey, v));
        q = _request(task, user, node, fee); // the node charges the signed maxFee
        q.deadline = deadline;
        r = _receipt(task, user, fee);
        r.requestHash = payments.hashTaskRequest(q);
        p = ReceiptPromise({requestHash: r.requestHash, leaf: _leaf(r), commitBy: commitBy});
        sig = _signPromise(privateKeyOf("node"), p);
        vm.prank(node);
        payments.redeem(packed);
    }

    /// @dev `key`'s EIP-712 signature of a `ReceiptPromise` (the node's, when honest).
    function _signPromise(uint256 key, ReceiptPromise memory p) internal view returns (bytes memory) {
        return signDigest(key, payments.hashReceiptPromise(p));
    }

    /// @dev `who` claims, with the bond, that the node broke promise `p` of receipt `r` (request `q`).
    function _claimOmission(
        address who,
        ReceiptPromise memory p,
        bytes memory sig,
        TaskRequest memory q,
        Receipt memory r
    ) internal returns (uint256) {
        uint256 bond = om.omissionBond(); // the bond plus the answer at this block's base fee
        vm.deal(who, who.balance + bond);
        vm.prank(who);
        return om.challengeOmission{value: bond}(p, sig, q, r);
    }

    function _challenge(address who, uint256 batchId, uint256 index, Receipt memory r, bytes32[] memory proof)
        internal
        returns (uint256)
    {
        vm.deal(who, who.balance + CHALLENGE_BOND);
        vm.prank(who);
        return tm.challenge{value: CHALLENGE_BOND}(_ref(batchId), index, r, proof, "bafyevidence");
    }

    /// @dev `who` claims entry `index` of `batchId` unavailable, with the least deposit (the bond
    ///      plus the costliest answer at this block's base fee).
    function _claimAvailability(address who, uint256 batchId, uint256 index) internal returns (uint256) {
        uint256 bond = tm.availabilityBond();
        vm.deal(who, who.balance + bond);
        vm.prank(who);
        return tm.challengeAvailability{value: bond}(_ref(batchId), index);
    }

    /// @dev Seals `who`'s vote now and opens it at the start of the reveal phase (time is put
    ///      back after), so that a test reads as if the vote were cast at once.
    function _vote(address who, uint256 challengeId, bool fraud) internal {
        _commitVote(who, challengeId, fraud);
        _revealVote(who, challengeId, fraud);
    }

    function _voteSalt(address who, uint256 challengeId) internal pure returns (bytes32) {
        return keccak256(abi.encode("salt", who, challengeId));
    }

    function _commitVote(address who, uint256 challengeId, bool fraud) internal {
        bytes32 commitment = keccak256(abi.encode(challengeId, who, fraud, _voteSalt(who, challengeId)));
        vm.deal(who, who.balance + CHALLENGE_BOND);
        vm.prank(who);
        tm.commitVote{value: CHALLENGE_BOND}(challengeId, commitment);
    }

    function _revealsAt(uint256 challengeId) internal view returns (uint256) {
        return tm.challenges(challengeId).voteDeadline - tm.REVEAL_WINDOW();
    }

    function _revealVote(address who, uint256 challengeId, bool fraud) internal {
        uint256 now_ = block.timestamp;
        uint256 revealsAt = _revealsAt(challengeId);
        if (now_ < revealsAt) vm.warp(revealsAt);
        vm.prank(who);
        tm.revealVote(challengeId, fraud, _voteSalt(who, challengeId));
        if (now_ < revealsAt) vm.warp(now_);
    }

    /*//////////////////////////////////////////////////////////////
                                VOUCHERS
    //////////////////////////////////////////////////////////////*/

    /// @dev Funds `who`'s channel to the default `node`.
    function _deposit(address who, uint256 amount) internal {
        _depositTo(who, node, amount);
    }

    function _depositTo(address who, address to, uint256 amount) internal {
        vm.deal(who, who.balance + amount);
        vm.prank(who);
        payments.deposit{value: amount}(to);
    }

    function _voucher(address from, address to, uint256 cumulative) internal pure returns (Voucher memory) {
        return Voucher({user: from, node: to, cumulativeAmount: cumulative});
    }

    function _signVoucher(uint256 key, Voucher memory v) internal view returns (bytes memory) {
        return signDigest(key, payments.hashVoucher(v));
    }

    /// @dev One packed voucher (Payments' 96-byte record) from a 65-byte signature.
    /// @dev Moves time to when all of `who`'s held earnings are withdrawable (Payments' hold).
    function _pastHold(address who) internal {
        (, uint256 freeAt) = payments.heldEarnings(who);
        if (freeAt > block.timestamp) vm.warp(freeAt);
    }

    function _pack(Voucher memory v, bytes memory sig) internal pure returns (bytes memory) {
        (bytes32 r, bytes32 vs) = _compact(sig);
        return abi.encodePacked(uint256(uint160(v.user)) << 96 | v.cumulativeAmount, r, vs);
    }

    /// @dev EIP-2098: `vs` = s with v's parity in its top bit.
    function _compact(bytes memory sig) internal pure returns (bytes32 r, bytes32 vs) {
        require(sig.length == 65, "65-byte signature");
        bytes32 s;
        uint8 v;
        assembly ("memory-safe") {
            r := mload(add(sig, 0x20))
            s := mload(add(sig, 0x40))
            v := byte(0, mload(add(sig, 0x60)))
        }
        vs = bytes32(uint256(s) | (uint256(v - 27) << 255));
    }

    /// @dev Several packed vouchers, in order.
    function _packAll(Voucher[] memory vs, bytes[] memory sigs) internal pure returns (bytes memory out) {
        for (uint256 i; i < vs.length; ++i) {
            out = bytes.concat(out, _pack(vs[i], sigs[i]));
        }
    }
}

/// @notice A contract account: forwards a call (and its revert data) as itself.
contract Caller {
    function call(address target, uint256 value, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 32), mload(ret))
            }
        }
        return ret;
    }
}

/// @notice Accepts or refuses ETH on demand; used to hit the TransferFailed paths.
contract Rejecter is Caller {
    bool public rejecting;

    function setRejecting(bool on) external {
        rejecting = on;
    }

    receive() external payable {
        require(!rejecting, "Rejecter: no ETH");
    }
}
