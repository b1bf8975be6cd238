// SPDX-License-Identifier: MIT
pragma solidity 0.8.37;

/// @title ClaimBond
/// @notice The one rule for what a data claim (availability, manifest, omission) posts and how its
///         deposit is split when it is answered.
/// @dev A claim forces the node to post data on chain, so its deposit covers the costliest answer
///      the claim can force at the base fee of the block it is opened in, on top of the fixed
///      bond. With the bond alone (the node paid its cost capped at 90 % of the bond) a claim at a
///      high base fee cost the honest node more than the slash it avoided by answering, so its
///      best reply was to be slashed (contracts/test/Review8.t.sol). The node can answer at any
///      time in its window, so it answers at a base fee near the claim's and is paid in full.
library ClaimBond {
    /// @dev Transient slot holding `gasleft()` at the start of an answer (`start`).
    uint256 private constant _START_SLOT = 0x5c1a1b0d0000000000000000000000000000000000000000000000000000a75e;

    /// @notice The least `msg.value` of a claim whose costliest answer takes `worstGas`.
    /// @param bond The fixed part (CHALLENGE_BOND): what a false claim risks beyond the answer.
    /// @param worstGas Gas of the costliest answer the claim can force.
    function required(uint256 bond, uint256 worstGas) internal view returns (uint256) {
        return bond + worstGas * block.basefee;
    }

    /// @notice Marks the start of an answer, for {costOfAnswer} to meter one that came through a
    ///         contract. The answer's first statement.
    function start() internal {
        assembly ("memory-safe") {
            tstore(_START_SLOT, gas())
        }
    }

    /// @notice What an answer cost, at this block's base fee: `modelGas` (the answer with its data
    ///         as the transaction's own calldata) where the answerer is an account without code that
    ///         sent it directly; otherwise only the gas metered since {start}, at most `modelGas`.
    /// @dev A contract can build the data in memory (a node controls its traces: one made from a
    ///      seed looks random) and call the answer with 32 bytes of calldata: paid the calldata
    ///      price, it earned ~1.8x its cost from every claim it baited by withholding
    ///      (contracts/test/Review9.t.sol). `tx.origin` is used for pricing only, never for
    ///      authorisation; an EIP-7702 account has code and is metered.
    function costOfAnswer(uint256 modelGas) internal view returns (uint256) {
        // forge-lint: disable-next-line(tx-origin)
        if (msg.sender == tx.origin && tx.origin.code.length == 0) return modelGas * block.basefee;
        uint256 begun;
        assembly ("memory-safe") {
            begun := tload(_START_SLOT)
        }
        uint256 used = begun - gasleft();
        return (used < modelGas ? used : modelGas) * block.basefee;
    }

    /// @notice Splits an answered claim's deposit: `burned` first, then the answer's `cost` to the
    ///         answerer (capped by what is left), the rest back to the claimant.
    /// @param deposit What the claimant posted.
    /// @param burned The fee that burns (a share of the fixed bond, always below `deposit`).
    /// @param cost What the answer cost at the base fee of its block.
    function split(uint256 deposit, uint256 burned, uint256 cost)
        internal
        pure
        returns (uint256 answerCost, uint256 refunded)
    {
        uint256 left = deposit - burned;
        answerCost = cost < left ? cost : left;
        refunded = left - answerCost;
    }
}
