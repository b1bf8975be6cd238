// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @notice Made-up RLP block headers for sealing SeedBeacon values in forge tests.
library FakeHeader {
    /// @dev An RLP header whose fields 0-12 are 32-byte strings, then `mix` (mixHash), then an
    ///      8-byte nonce. Real headers have other field lengths: the Python devnet tests seal
    ///      Anvil's own headers.
    function build(uint256 b, bytes32 mix) internal pure returns (bytes memory) {
        bytes memory fields;
        for (uint256 i = 0; i < 13; ++i) {
            fields = abi.encodePacked(fields, bytes1(0xa0), keccak256(abi.encode("field", b, i)));
        }
        fields = abi.encodePacked(fields, bytes1(0xa0), mix, bytes1(0x88), bytes8(0));
        // forge-lint: disable-next-line(unsafe-typecast)
        return abi.encodePacked(bytes1(0xf9), uint16(fields.length), fields);
    }
}
