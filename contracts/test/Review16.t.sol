// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {SeedBeacon} from "../src/SeedBeacon.sol";
import {TaskManager} from "../src/TaskManager.sol";
import {Receipt} from "../src/libraries/Types.sol";

import {Base} from "./utils/Base.sol";
import {Merkle} from "./utils/Merkle.sol";

/// Review 16: the SeedBeacon (commits d1986f8, 4e46028): seeds from the seed block's RANDAO mix,
/// proven by its RLP header; validators sample by the header and only a challenger seals.
///
/// Found:
/// - MEDIUM. Nobody seals in the honest path any more (4e46028: "sampling costs no transaction"),
///   so every seed block that no challenge touched expires unsealed, and an expired seed samples
///   every validator for every entry, decoy bounties included. A friend the node told where its
///   decoys are waits out the seed (256 blocks, or 8,191 with EIP-2935: 4.5 h of 2 s blocks,
///   inside the 1-day window) and collects the bounty of every decoy, which drains the
///   verification escrow back to the node (bounty to the friend, rebate to the node), the thing
///   "a friend told where the decoys are is paid only for those it was sampled for" rules out
///   (test_defence_AFriendWaitsOutTheUnsealedSeedAndCollectsEveryDecoyBounty).
///   FIXED by design: a challenge records how the seed picked its challenger (`Pick.BySeed`, or
///   `Pick.Everyone` once the seed expired unsealed); rewards paid from a slash go to either, a
///   decoy bounty (the node's own escrow) only to `BySeed`. Sampling stays free of transactions.
/// - LOW. `SOURCE = Prevrandao` deploys on a chain whose prevrandao is not randomness (Arbitrum:
///   prevrandao 1, its headers' mixHash the L2-to-L1 send root, the same for block after block),
///   and `seal` takes any non-zero mix: the seed is known before the commit
///   (test_defence_APrevrandaoBeaconOnAChainWithoutRandaoIsRefused).
///   FIXED: the constructor refuses `Prevrandao` where `block.prevrandao <= 2**64` (EIP-4399's
///   test; `NoRandomness`); OP-stack chains (a mix known ahead) are documented as `Blockhash` ones.
///
/// Checked and holding:
/// - mixHashOf on headers laid out as real ones are (20-byte coinbase, 256-byte bloom: a long
///   string, one-byte and empty integers, empty / 32-byte / 97-byte extraData, the Prague tail),
///   which FakeHeader's all-32-byte fields never exercise (test_defence_RealisticHeadersParseAndSeal).
/// - mixHashOf on truncated, bit-flipped or arbitrary bytes only ever reverts MalformedHeader (no
///   panic, no out-of-bounds read), and seal checks the hash first anyway
///   (testFuzz_defence_MixHashOfNeverPanics*).
/// - A seal cannot be replaced, nor front-run to another value: one header hashes to the block's
///   hash, a second seal reverts, and another block's header is refused
///   (test_defence_ASealCannotBeReplacedOrRedirected).
contract Review16Test is Base {
    address internal decoyUser;
    uint256 internal decoyKey;

    function setUp() public override {
        super.setUp();
        decoyUser = makeAddr("decoy");
        decoyKey = privateKeyOf("decoy");
    }

    /*//////////////////////////////////////////////////////////////
                 1. AN UNSEALED SEED PAYS A FRIEND EVERY DECOY
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was an attack, MEDIUM). Production parameters (q = 10 %). The node plants 8 decoys in
    ///         one batch and funds its escrow; honest validators sample by the seed block's header
    ///         (no transaction) and, finding nothing they were picked for, seal nothing. The node's
    ///         friend (a validator whose stake predates the commit) waits until the seed block's
    ///         hash is gone, then challenges all 8: each is "sampled" (an expired seed picks
    ///         everyone), so each reveal pays it the bounty from the escrow. Safe: the friend is
    ///         paid only for the decoys the seed (had it been sealed) picked it for.
    function test_defence_AFriendWaitsOutTheUnsealedSeedAndCollectsEveryDecoyBounty() public {
        address friend = validator1;
        _registerNode(node, 2 ether);
        _registerValidator(friend, 1 ether);
        _registerValidator(validator2, 2 ether);
        vm.deal(node, node.balance + DECOYS * DECOY_BOUNTY);
        vm.prank(node, node);
        payments.fundEscrow{value: DECOYS * DECOY_BOUNTY}(node);
        uint256 batchId = _commitDecoys();
        TaskManager.BatchRef memory ref = _ref(batchId);
        uint256 seedBlock = uint256(ref.commitBlock) + SEED_DELAY_BLOCKS;
        uint256 t0 = block.timestamp;

        // What the seed picks the friend for, had anyone sealed its block (looked at in a snapshot).
        vm.roll(seedBlock + 1);
        uint256 unsealed = vm.snapshotState();
        _sealBlock(seedBlock);
        uint256 picked;
        for (uint256 i; i < DECOYS; ++i) {
            if (tm.isSampled(ref, friend, i)) ++picked;
        }
        vm.revertToState(unsealed);

        // Nobody sealed (validators sample by the header): 8,192 blocks of 2 s later, still in the window.
        vm.roll(seedBlock + 8_192);
        vm.warp(t0 + 8_192 * 2);
        vm.assertLt(block.timestamp, ref.committedAt + CHALLENGE_WINDOW, "still challengeable");
        for (uint256 i; i < DECOYS; ++i) {
            _challengeAndReveal(friend, batchId, i);
        }
        uint256 paid = tm.claimable(friend) - DECOYS * CHALLENGE_BOND;
        emit log_named_uint("decoys the sealed seed picks the friend for", picked);
        emit log_named_uint("bounties paid to the friend (wei)", paid);
        uint256 bounty = DECOY_BOUNTY - DECOY_BOUNTY * DECOY_REBATE_BPS / 10_000;
        assertEq(paid, picked * bounty, "the friend is paid only for the decoys it was sampled for");
    }

    uint256 internal constant DECOYS = 8;
    Receipt[] internal _decoys;
    bytes32[] internal _decoyLeaves;

    function _commitDecoys() internal returns (uint256) {
        for (uint256 i; i < DECOYS; ++i) {
            _decoys.push(_boundReceipt(i, decoyUser, node, 0.001 ether));
            _decoyLeaves.push(_leaf(_decoys[i]));
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        return _commitRoot(node, Merkle.root(_decoyLeaves), uint32(DECOYS));
    }

    function _challengeAndReveal(address who, uint256 batchId, uint256 i) internal {
        uint256 id = _challenge(who, batchId, i, _decoys[i], Merkle.proofAt(_decoyLeaves, i));
        bytes memory sig = signDigest(decoyKey, payments.hashDecoy(node, _decoys[i].requestHash));
        vm.prank(node, node);
        tm.revealDecoy(id, _decoys[i], _request(i, decoyUser, node), sig);
    }

    /*//////////////////////////////////////////////////////////////
            2. PREVRANDAO ON A CHAIN WHOSE PREVRANDAO IS NOT RANDAO
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence (was an attack, LOW). On Arbitrum `block.prevrandao` is 1 and every header's mixHash is the
    ///         chain's L2-to-L1 send root, unchanged from block to block until a message is sent
    ///         (on an OP-stack chain it is the L1 origin's mix, the same for its ~6 L2 blocks).
    ///         The default `SOURCE = Prevrandao` deploys there and `seal` accepts that mix (it
    ///         refuses only zero), so the node computes its batch's seed before it commits and
    ///         puts its cheats where nobody samples. Safe: a Prevrandao beacon refuses to deploy
    ///         where `block.prevrandao` is not randomness (EIP-4399: above 2**64), or the seed is
    ///         not knowable at the commit.
    function test_defence_APrevrandaoBeaconOnAChainWithoutRandaoIsRefused() public {
        vm.prevrandao(bytes32(uint256(1))); // Arbitrum's
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.NoRandomness.selector, block.number));
        new SeedBeacon(SeedBeacon.Source.Prevrandao, SEED_DELAY_BLOCKS);
        vm.prevrandao(bytes32(uint256(2 ** 64))); // a pre-merge difficulty's range: still refused
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.NoRandomness.selector, block.number));
        new SeedBeacon(SeedBeacon.Source.Prevrandao, SEED_DELAY_BLOCKS);
        new SeedBeacon(SeedBeacon.Source.Blockhash, SEED_DELAY_BLOCKS); // what such a chain deploys
        vm.prevrandao(keccak256("a RANDAO mix"));
        assertEq(new SeedBeacon(SeedBeacon.Source.Prevrandao, SEED_DELAY_BLOCKS).DELAY_BLOCKS(), SEED_DELAY_BLOCKS);
    }

    /*//////////////////////////////////////////////////////////////
                       3. THE PARSER ON REAL LAYOUTS
    //////////////////////////////////////////////////////////////*/

    function _rlpUint(uint256 x) internal pure returns (bytes memory) {
        if (x == 0) return hex"80";
        // forge-lint: disable-next-line(unsafe-typecast)
        if (x < 0x80) return abi.encodePacked(uint8(x));
        uint256 len;
        for (uint256 y = x; y != 0; y >>= 8) {
            ++len;
        }
        bytes memory out = new bytes(len);
        for (uint256 i; i < len; ++i) {
            // forge-lint: disable-next-line(unsafe-typecast)
            out[len - 1 - i] = bytes1(uint8(x >> (8 * i)));
        }
        // forge-lint: disable-next-line(unsafe-typecast)
        return abi.encodePacked(uint8(0x80 + len), out);
    }

    function _rlpBytes(bytes memory b) internal pure returns (bytes memory) {
        if (b.length == 1 && uint8(b[0]) < 0x80) return b;
        // forge-lint: disable-next-line(unsafe-typecast)
        if (b.length <= 55) return abi.encodePacked(uint8(0x80 + b.length), b);
        // forge-lint: disable-next-line(unsafe-typecast)
        if (b.length < 256) return abi.encodePacked(uint8(0xb8), uint8(b.length), b);
        // forge-lint: disable-next-line(unsafe-typecast)
        return abi.encodePacked(uint8(0xb9), uint16(b.length), b);
    }

    /// @dev A header laid out as a Prague block's is: real field lengths, short integers.
    function _realHeader(uint256 number, bytes32 mix, bytes memory extra, uint256 gasUsed)
        internal
        pure
        returns (bytes memory)
    {
        bytes memory a = abi.encodePacked(
            _rlpBytes(abi.encodePacked(keccak256(abi.encode("parent", number)))),
            _rlpBytes(abi.encodePacked(keccak256(hex"c0"))), // sha3Uncles of no uncles
            _rlpBytes(abi.encodePacked(address(0x388C818CA8B9251b393131C08a736A67ccB19297))) // coinbase
        );
        a = abi.encodePacked(
            a,
            _rlpBytes(abi.encodePacked(keccak256("state"))),
            _rlpBytes(abi.encodePacked(keccak256("txs"))),
            _rlpBytes(abi.encodePacked(keccak256("receipts")))
        );
        a = abi.encodePacked(a, _rlpBytes(new bytes(256)), _rlpUint(0)); // logsBloom (a long string), difficulty
        bytes memory b = abi.encodePacked(_rlpUint(number), _rlpUint(30_000_000), _rlpUint(gasUsed));
        b = abi.encodePacked(b, _rlpUint(1_700_000_000), _rlpBytes(extra));
        b = abi.encodePacked(b, _rlpBytes(abi.encodePacked(mix)), _rlpBytes(new bytes(8))); // mixHash, nonce
        b = abi.encodePacked(
            b,
            _rlpUint(7), // baseFeePerGas
            _rlpBytes(abi.encodePacked(keccak256("withdrawals"))),
            _rlpUint(0), // blobGasUsed
            _rlpUint(0) // excessBlobGas
        );
        b = abi.encodePacked(
            b, _rlpBytes(abi.encodePacked(keccak256("beacon root"))), _rlpBytes(abi.encodePacked(keccak256("requests")))
        );
        bytes memory payload = abi.encodePacked(a, b);
        // forge-lint: disable-next-line(unsafe-typecast)
        return abi.encodePacked(uint8(0xf9), uint16(payload.length), payload);
    }

    /// @notice Defence. Headers with a real block's field lengths (block numbers below 0x80 are
    ///         one byte, a zero gasUsed is 0x80, extraData empty, 32 bytes like geth's or 97 like
    ///         a Clique seal: a long string) give their mixHash and seal.
    function test_defence_RealisticHeadersParseAndSeal() public {
        bytes[3] memory extras = [bytes(""), abi.encodePacked(keccak256("geth")), new bytes(97)];
        uint256[3] memory numbers = [uint256(5), 0x7f, 300];
        for (uint256 e; e < 3; ++e) {
            for (uint256 k; k < 3; ++k) {
                bytes32 mix = keccak256(abi.encode("mix", e, k));
                bytes memory h = _realHeader(numbers[k], mix, extras[e], k == 0 ? 0 : 21_000);
                assertEq(beacon.mixHashOf(h), mix, "field 13 of a real layout");
            }
        }
        vm.roll(400);
        bytes32 m = keccak256("sealed mix");
        bytes memory header = _realHeader(300, m, "", 0);
        vm.setBlockhash(300, keccak256(header));
        assertEq(beacon.seal(300, header), m);
        (bytes32 value, bool known) = beacon.randomness(300);
        assertTrue(known);
        assertEq(value, m);
    }

    function _mustBeMalformed(bytes memory data) internal view {
        try beacon.mixHashOf(data) returns (bytes32) {}
        catch (bytes memory err) {
            assertEq(bytes32(bytes4(err)), bytes32(SeedBeacon.MalformedHeader.selector), "only MalformedHeader");
        }
    }

    /// @notice Defence. A real layout cut anywhere or with any byte changed: a value or
    ///         MalformedHeader, never a panic or an out-of-bounds read.
    function testFuzz_defence_MixHashOfNeverPanicsOnACutOrFlippedHeader(uint256 cut, uint256 pos, uint8 to)
        public
        view
    {
        bytes memory h = _realHeader(300, keccak256("m"), new bytes(97), 21_000);
        cut = bound(cut, 0, h.length);
        bytes memory c = new bytes(cut);
        for (uint256 i; i < cut; ++i) {
            c[i] = h[i];
        }
        _mustBeMalformed(c);
        h[bound(pos, 0, h.length - 1)] = bytes1(to);
        _mustBeMalformed(h);
    }

    /// @notice Defence. Arbitrary bytes behind a long-list prefix: the same.
    function testFuzz_defence_MixHashOfNeverPanicsOnArbitraryBytes(bytes memory body) public view {
        _mustBeMalformed(body);
        // forge-lint: disable-next-line(unsafe-typecast)
        _mustBeMalformed(abi.encodePacked(uint8(0xf9), uint16(body.length), body));
    }

    /*//////////////////////////////////////////////////////////////
                         4. ONE VALUE PER BLOCK
    //////////////////////////////////////////////////////////////*/

    /// @notice Defence. Whoever seals first (the node, a front-runner) can only store the block's
    ///         own mix: a second seal reverts, another block's header is refused.
    function test_defence_ASealCannotBeReplacedOrRedirected() public {
        vm.roll(500);
        bytes memory h1 = _realHeader(400, keccak256("mix 400"), "", 0);
        bytes memory h2 = _realHeader(401, keccak256("mix 401"), "", 0);
        vm.setBlockhash(400, keccak256(h1));
        vm.setBlockhash(401, keccak256(h2));
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.NotTheHeader.selector, keccak256(h1), keccak256(h2)));
        beacon.seal(400, h2);
        vm.prank(node);
        beacon.seal(400, h1);
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.BlockAlreadySealed.selector, 400));
        beacon.seal(400, h1);
        (bytes32 value,) = beacon.randomness(400);
        assertEq(value, keccak256("mix 400"));
    }

    event log_named_uint(string key, uint256 val);
}
