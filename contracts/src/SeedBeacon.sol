// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

import {Blockhash} from "@openzeppelin/contracts/utils/Blockhash.sol";

/// @title SeedBeacon
/// @notice One random value per block number, from which the TaskManager derives each batch's
///         sampling seed (`keccak256(abi.encode(value(commitBlock + SEED_DELAY_BLOCKS), batchId))`).
///         Its own contract so that where randomness comes from is one decision, made once per
///         deployment, and the TaskManager holds no randomness code (docs/protocol.md, "Seeds").
/// @dev Two sources (`SOURCE`, fixed at deployment):
///
///      - `Prevrandao` (the default): the block's `mixHash`, which post-merge is the beacon
///        chain's RANDAO mix (`block.prevrandao` of that block). A block's builder does not set it
///        and a proposer can only withhold its block, so nobody can try seeds until one samples
///        none of their receipts. The EVM reads `prevrandao` only for the block it runs in, so the
///        value is proven after the fact: anyone passes the block's RLP header to {seal}, which
///        checks it against `blockhash` and stores its mix. Until sealed the value is unknown
///        ({randomness} says so); once the header is out of `blockhash`'s reach unsealed, the value
///        is zero for good, which the TaskManager reads as "every receipt sampled": a party that
///        would rather nobody sealed (the node) gains nothing by it.
///        A beacon refuses to deploy with this source where `block.prevrandao` is no RANDAO mix
///        (EIP-4399: at most 2**64). Block n's prevrandao is the mix after block n - 1: its
///        proposer knows it first and could withhold that block (one bit).
///      - `Blockhash`: the block's hash, readable without a seal while `blockhash` reaches it. For
///        chains whose `prevrandao` is a constant or known in advance (Arbitrum returns 1; an
///        OP-stack chain's is its L1 origin's, shared by several L2 blocks); a block's builder can
///        grind it (docs/security-parameters.md, "Known limits").
contract SeedBeacon {
    /// @notice Where a block's value comes from.
    enum Source {
        Blockhash,
        Prevrandao
    }

    /// @notice The source of every value of this beacon.
    Source public immutable SOURCE;
    /// @notice Blocks between a commit at block B and its seed block B + DELAY_BLOCKS, 1..256: the
    ///         TaskManager's SEED_DELAY_BLOCKS (2 by default, so that at the commit even the
    ///         proposer of block B does not know the seed block's prevrandao; 1 on the devnet).
    uint256 public immutable DELAY_BLOCKS;

    /// @dev Index of `mixHash` in an Ethereum block header (the same in every fork since London).
    uint256 private constant MIX_HASH_FIELD = 13;

    mapping(uint256 blockNumber => bytes32) internal _sealed;

    /// @notice The value of `blockNumber` was stored for good.
    event Sealed(uint256 indexed blockNumber, bytes32 value);

    /// @notice The block is not mined yet.
    error BlockNotMined(uint256 blockNumber);
    /// @notice The block's hash is out of `blockhash`'s reach; its value can no longer be proven.
    error BlockHashGone(uint256 blockNumber);
    /// @notice The block's value is already sealed.
    error BlockAlreadySealed(uint256 blockNumber);
    /// @notice The header passed does not hash to the block's hash.
    error NotTheHeader(bytes32 expected, bytes32 given);
    /// @notice The header is not an RLP list with a 32-byte mixHash at its place.
    error MalformedHeader();
    /// @notice The block's mixHash is zero, or at deployment `block.prevrandao` is no RANDAO mix:
    ///         this chain gives no randomness through `prevrandao` (use `Blockhash`).
    error NoRandomness(uint256 blockNumber);

    /// @notice A constructor parameter is out of range.
    error InvalidParameter();

    /// @param source Where values come from (see the contract's notes).
    /// @param delayBlocks DELAY_BLOCKS.
    constructor(Source source, uint256 delayBlocks) {
        if (delayBlocks == 0 || delayBlocks > 256) revert InvalidParameter();
        // EIP-4399: a prevrandao above 2**64 is a RANDAO mix; at or below it, the chain's
        // difficulty or a constant (Arbitrum: 1), which would make every seed known in advance.
        if (source == Source.Prevrandao && block.prevrandao <= 2 ** 64) revert NoRandomness(block.number);
        SOURCE = source;
        DELAY_BLOCKS = delayBlocks;
    }

    /// @notice Stores the value of a mined block whose hash is still readable. Anyone may call it;
    ///         the validators do for the seed blocks of the batches they check.
    /// @param blockNumber The block.
    /// @param header The block's RLP-encoded header (`Prevrandao`); ignored under `Blockhash`.
    /// @return value The stored value.
    function seal(uint256 blockNumber, bytes calldata header) external returns (bytes32 value) {
        if (_sealed[blockNumber] != bytes32(0)) revert BlockAlreadySealed(blockNumber);
        if (blockNumber >= block.number) revert BlockNotMined(blockNumber);
        bytes32 hash = Blockhash.blockHash(blockNumber);
        if (hash == bytes32(0)) revert BlockHashGone(blockNumber);
        if (SOURCE == Source.Blockhash) {
            value = hash;
        } else {
            bytes32 given = keccak256(header);
            if (given != hash) revert NotTheHeader(hash, given);
            value = mixHashOf(header);
            if (value == bytes32(0)) revert NoRandomness(blockNumber);
        }
        _sealed[blockNumber] = value;
        emit Sealed(blockNumber, value);
    }

    /// @notice The value of `blockNumber`. `known` is false while it may still become known (the
    ///         block is not mined, or under `Prevrandao` it is not sealed yet and its header can
    ///         still be proven); a known zero value means it is gone for good (not sealed in time).
    /// @param blockNumber The block.
    function randomness(uint256 blockNumber) external view returns (bytes32 value, bool known) {
        value = _sealed[blockNumber];
        if (value != bytes32(0)) return (value, true);
        if (blockNumber >= block.number) return (bytes32(0), false);
        bytes32 hash = Blockhash.blockHash(blockNumber);
        if (hash == bytes32(0)) return (bytes32(0), true);
        if (SOURCE == Source.Blockhash) return (hash, true);
        return (bytes32(0), false);
    }

    /// @notice The `mixHash` field of an RLP-encoded block header.
    /// @param header The header.
    function mixHashOf(bytes calldata header) public pure returns (bytes32) {
        uint256 offset = _listBody(header);
        for (uint256 i = 0; i < MIX_HASH_FIELD; ++i) {
            offset = _skip(header, offset);
        }
        if (offset + 33 > header.length || uint8(header[offset]) != 0xa0) revert MalformedHeader();
        return bytes32(header[offset + 1:offset + 33]);
    }

    /// @dev Offset of the first item of a long RLP list spanning all of `rlp` (a header is always
    ///      longer than 55 bytes: its logs bloom alone is 256).
    function _listBody(bytes calldata rlp) private pure returns (uint256) {
        if (rlp.length == 0 || uint8(rlp[0]) < 0xf8) revert MalformedHeader();
        uint256 lengthBytes = uint8(rlp[0]) - 0xf7;
        if (1 + lengthBytes > rlp.length) revert MalformedHeader();
        if (1 + lengthBytes + _bigEndian(rlp[1:1 + lengthBytes]) != rlp.length) revert MalformedHeader();
        return 1 + lengthBytes;
    }

    /// @dev Offset just past the RLP string offset `offset` (a header's fields before mixHash are strings).
    function _skip(bytes calldata rlp, uint256 offset) private pure returns (uint256 next) {
        if (offset >= rlp.length) revert MalformedHeader();
        uint256 prefix = uint8(rlp[offset]);
        if (prefix < 0x80) {
            next = offset + 1;
        } else if (prefix <= 0xb7) {
            next = offset + 1 + prefix - 0x80;
        } else if (prefix <= 0xbf) {
            uint256 lengthBytes = prefix - 0xb7;
            if (offset + 1 + lengthBytes > rlp.length) revert MalformedHeader();
            next = offset + 1 + lengthBytes + _bigEndian(rlp[offset + 1:offset + 1 + lengthBytes]);
        } else {
            revert MalformedHeader();
        }
        if (next > rlp.length) revert MalformedHeader();
    }

    /// @dev A big-endian integer of 1 to 8 bytes (an RLP length; longer would exceed any header).
    function _bigEndian(bytes calldata word) private pure returns (uint256) {
        if (word.length > 8) revert MalformedHeader();
        return uint256(bytes32(word)) >> (256 - 8 * word.length);
    }
}
