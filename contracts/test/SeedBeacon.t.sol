// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {SeedBeacon} from "../src/SeedBeacon.sol";

import {FakeHeader} from "./utils/FakeHeader.sol";
import {Test} from "./utils/Test.sol";

/// @notice SeedBeacon: what a block's value is under each source, who can set it (nobody: only a
///         header that hashes to the block's hash is taken), and that the fields a block's
///         builder chooses do not move it.
contract SeedBeaconTest is Test {
    SeedBeacon internal beacon;
    bytes32 internal constant MIX = keccak256("the RANDAO mix of block 100");

    function setUp() public {
        vm.roll(100);
        vm.prevrandao(keccak256("a RANDAO mix"));
        beacon = new SeedBeacon(SeedBeacon.Source.Prevrandao, 2);
        vm.roll(101);
    }

    /// @dev Block 100 mined with `header` (its hash set to the header's).
    function _mine100(bytes memory header) internal {
        vm.setBlockhash(100, keccak256(header));
    }

    function test_Seal_StoresTheMixOfTheProvenHeader() public {
        bytes memory header = FakeHeader.build(100, MIX);
        _mine100(header);
        (bytes32 before, bool knownBefore) = beacon.randomness(100);
        assertEq(before, bytes32(0));
        assertFalse(knownBefore, "mined, unsealed: not known yet (and not 'gone')");
        vm.expectEmit(address(beacon));
        emit SeedBeacon.Sealed(100, MIX);
        assertEq(beacon.seal(100, header), MIX);
        (bytes32 value, bool known) = beacon.randomness(100);
        assertEq(value, MIX);
        assertTrue(known);
        vm.roll(100 + 100_000); // long after blockhash forgot the block
        (value, known) = beacon.randomness(100);
        assertEq(value, MIX, "a sealed value outlives the block hash");
        assertTrue(known);
    }

    /// @dev The attack a seed from the block hash allowed: the block's builder tries extra data,
    ///      fee recipients and transaction orders until the seed suits it. Here every field but
    ///      the mix differs and the value is the same.
    function test_Defence_TheBuildersFieldsDoNotMoveTheValue() public view {
        bytes memory a = FakeHeader.build(100, MIX);
        bytes memory b = FakeHeader.build(7_777, MIX); // other fields 0-12, same mix
        assertTrue(keccak256(a) != keccak256(b));
        assertEq(beacon.mixHashOf(a), beacon.mixHashOf(b));
    }

    /// @dev A node that would rather pick its own seed cannot seal a header of its making.
    function test_RevertWhen_TheHeaderIsNotTheBlocks() public {
        bytes memory real = FakeHeader.build(100, MIX);
        _mine100(real);
        bytes memory forged = FakeHeader.build(100, keccak256("a mix the node likes"));
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.NotTheHeader.selector, keccak256(real), keccak256(forged)));
        beacon.seal(100, forged);
        (, bool known) = beacon.randomness(100);
        assertFalse(known, "nothing stored");
    }

    function test_RevertWhen_SealedTwice() public {
        bytes memory header = FakeHeader.build(100, MIX);
        _mine100(header);
        beacon.seal(100, header);
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.BlockAlreadySealed.selector, 100));
        beacon.seal(100, header);
    }

    function test_RevertWhen_TheBlockIsNotMined() public {
        (bytes32 value, bool known) = beacon.randomness(101);
        assertEq(value, bytes32(0));
        assertFalse(known);
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.BlockNotMined.selector, 101));
        beacon.seal(101, FakeHeader.build(101, MIX));
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.BlockNotMined.selector, 500));
        beacon.seal(500, FakeHeader.build(500, MIX));
    }

    /// @dev Out of blockhash's reach unsealed: the value is gone for good (known, zero), which the
    ///      TaskManager reads as "every receipt sampled" (tests in TaskManager.t.sol).
    function test_RevertWhen_TheBlockHashIsGone() public {
        bytes memory header = FakeHeader.build(100, MIX);
        _mine100(header);
        vm.roll(100 + 8_192);
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.BlockHashGone.selector, 100));
        beacon.seal(100, header);
        (bytes32 value, bool known) = beacon.randomness(100);
        assertEq(value, bytes32(0));
        assertTrue(known, "gone for good");
    }

    /// @dev A chain whose prevrandao is zero gives no randomness: refused rather than stored.
    function test_RevertWhen_TheMixIsZero() public {
        bytes memory header = FakeHeader.build(100, bytes32(0));
        _mine100(header);
        vm.expectRevert(abi.encodeWithSelector(SeedBeacon.NoRandomness.selector, 100));
        beacon.seal(100, header);
    }

    /// @dev Malformed headers (reachable only through a block hash that is their hash, which a
    ///      real chain never gives; the parser still refuses them rather than read out of bounds).
    function test_RevertWhen_TheHeaderIsMalformed() public {
        bytes memory good = FakeHeader.build(100, MIX);
        bytes[] memory bad = new bytes[](6);
        bad[0] = "";
        bad[1] = hex"c0"; // a short list
        bad[2] = abi.encodePacked(bytes1(0xf9), uint16(good.length - 3 + 1), _slice(good, 3)); // length off by one
        bad[3] = _slice(good, 0, good.length - 40); // cut inside the mix (length prefix then also wrong)
        bytes memory listField = abi.encodePacked(hex"c180", _slice(good, 3 + 33)); // field 0 a list
        bad[4] = abi.encodePacked(bytes1(0xf9), uint16(listField.length), listField);
        bytes memory shortMix = _slice(good, 3, 3 + 13 * 33); // 13 fields, then a 20-byte "mix"
        shortMix = abi.encodePacked(shortMix, bytes1(0x94), bytes20(MIX));
        bad[5] = abi.encodePacked(bytes1(0xf9), uint16(shortMix.length), shortMix);
        for (uint256 i; i < bad.length; ++i) {
            vm.expectRevert(SeedBeacon.MalformedHeader.selector);
            beacon.mixHashOf(bad[i]);
        }
        assertEq(beacon.mixHashOf(good), MIX);
    }

    /// @dev Under `Blockhash` the value is the block hash, known without a seal; sealing keeps it
    ///      past blockhash's reach.
    function test_BlockhashSource() public {
        SeedBeacon byHash = new SeedBeacon(SeedBeacon.Source.Blockhash, 1);
        vm.setBlockhash(100, keccak256("block 100"));
        (bytes32 value, bool known) = byHash.randomness(100);
        assertEq(value, keccak256("block 100"));
        assertTrue(known);
        assertEq(byHash.seal(100, ""), keccak256("block 100"));
        vm.roll(100 + 100_000);
        (value, known) = byHash.randomness(100);
        assertEq(value, keccak256("block 100"));
        assertTrue(known);
    }

    function test_RevertWhen_DelayOutOfRange() public {
        vm.expectRevert(SeedBeacon.InvalidParameter.selector);
        new SeedBeacon(SeedBeacon.Source.Prevrandao, 0);
        vm.expectRevert(SeedBeacon.InvalidParameter.selector);
        new SeedBeacon(SeedBeacon.Source.Prevrandao, 257);
        assertEq(new SeedBeacon(SeedBeacon.Source.Prevrandao, 256).DELAY_BLOCKS(), 256);
    }

    function testFuzz_MixHashOfAnyMix(bytes32 mix, uint256 b) public view {
        assertEq(beacon.mixHashOf(FakeHeader.build(b, mix)), mix);
    }

    function _slice(bytes memory data, uint256 from) internal pure returns (bytes memory) {
        return _slice(data, from, data.length);
    }

    function _slice(bytes memory data, uint256 from, uint256 to) internal pure returns (bytes memory out) {
        out = new bytes(to - from);
        for (uint256 i = from; i < to; ++i) {
            out[i - from] = data[i];
        }
    }
}
