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
    /// @notice The answer's calldata is not the canonical encoding of its arguments.
    error NonCanonicalCalldata(uint256 length, uint256 canonical);
    /// @notice An answer must be its own transaction, sent by an account without code.
    error AnswerNotDirect();
    /// @notice An answer must pay at least the gas price it is paid at ({gasPrice}).
    error AnswerBelowPrice(uint256 paid, uint256 price);

    /// @dev Transient slot holding `gasleft()` at the start of an answer (`start`).
    uint256 private constant _START_SLOT = 0x5c1a1b0d0000000000000000000000000000000000000000000000000000a75e;

    /// @notice The gas price answers are priced at in this block: its base fee, or `floor` (the
    ///         deployment's MIN_ANSWER_GAS_PRICE) where that is higher.
    /// @dev On a chain whose base fee is 0 (BNB Chain since BEP-226, an app chain, a devnet at
    ///      `--base-fee 0`) every gas price is a tip: priced at the base fee alone, a claim posted
    ///      the bare bond and an answer was paid nothing, so a claim cost the claimant less than
    ///      the answer it forced (Review8's asymmetry; tests/integration/test_review_answer_prices2.py).
    ///      The claimant's own `tx.gasprice` is no floor (a claimant paying no tip pins it at 0);
    ///      the chain's least accepted gas price is, and a node pays at least that for its answer.
    function gasPrice(uint256 floor) internal view returns (uint256) {
        return block.basefee > floor ? block.basefee : floor;
    }

    /// @notice The least `msg.value` of a claim whose costliest answer takes `worstGas`.
    /// @param bond The fixed part (CHALLENGE_BOND): what a false claim risks beyond the answer.
    /// @param worstGas Gas of the costliest answer the claim can force.
    /// @param price The block's answer gas price ({gasPrice}).
    function required(uint256 bond, uint256 worstGas, uint256 price) internal pure returns (uint256) {
        return bond + worstGas * price;
    }

    /// @notice Marks the start of an answer, for {costOfAnswer} to meter one that came through a
    ///         contract. The answer's first statement.
    function start() internal {
        assembly ("memory-safe") {
            tstore(_START_SLOT, gas())
        }
    }

    /// @notice What the answer's transaction is charged at `price` ({gasPrice}), by EIP-7623's
    ///         rule: `21000 + max(4 * tokens + execution, 10 * tokens)`, `tokens` those of its
    ///         calldata (1 per zero byte, 4 per other), `execution` metered since {start} plus
    ///         `unmetered` (what runs before {start} and after this call: a measured allowance).
    ///         Reverts unless the answer is a transaction of its own, sent by an account without
    ///         code (`AnswerNotDirect`), so that this is its whole cost.
    /// @dev The answer's price used to be a model (a fixed part plus 40 gas per byte) that added
    ///      the fixed execution on top of the calldata floor: past ~11 KB the floor is the whole
    ///      cost and a node was paid ~165k gas more than its answer cost, so every claim it baited by
    ///      withholding paid it (contracts/test/Review11.t.sol). The node is paid for an answer
    ///      whoever sends it (it owes the data), so the price must be what the answer's own
    ///      transaction cost. Through a contract (or an EIP-7702 account, which has code) a claimant
    ///      copied the node's pending answer and landed it priced as metered execution only: the
    ///      node's own transaction reverted after paying the calldata floor, a loss of ~3M gas a
    ///      claim; and a node batching its answers in one transaction was paid each answer's cold
    ///      tail while spending it once (tests/integration/test_review_answer_prices.py). A
    ///      contract building the data in memory and calling with 32 bytes of calldata
    ///      (Review9.t.sol) is refused as well. `tx.origin` decides pricing only, never who may
    ///      answer for whom. An answer paying less than `price` a gas (possible only where the
    ///      floor is above the base fee: a 0-price transaction on a zero-base-fee chain) is refused
    ///      (`AnswerBelowPrice`): paid the floor, it paid a node to bait claims
    ///      (tests/integration/test_review_answer_floor.py).
    function costOfAnswer(uint256 unmetered, uint256 price) internal view returns (uint256) {
        // forge-lint: disable-next-line(tx-origin)
        if (msg.sender != tx.origin || tx.origin.code.length != 0) revert AnswerNotDirect();
        // only where the floor is above the base fee: every transaction pays the base fee
        if (price > block.basefee && tx.gasprice < price) revert AnswerBelowPrice(tx.gasprice, price);
        uint256 tokens = calldataTokens(); // counted inside the metered span (~3 gas a byte)
        uint256 begun;
        assembly ("memory-safe") {
            begun := tload(_START_SLOT)
        }
        uint256 standard = 4 * tokens + begun - gasleft() + unmetered;
        uint256 floor = 10 * tokens;
        return (21_000 + (standard > floor ? standard : floor)) * price;
    }

    /// @notice EIP-7623 tokens of this call's calldata: 1 per zero byte, 4 per other byte, counted a
    ///         32-byte word at a time (~1 gas per byte): each byte folded onto its lowest bit, then
    ///         the 32 bits summed by one multiplication.
    function calldataTokens() internal pure returns (uint256) {
        uint256 ones = 0x0101010101010101010101010101010101010101010101010101010101010101;
        uint256 nonZero;
        uint256 n = msg.data.length;
        assembly ("memory-safe") {
            for { let p := 0 } lt(p, n) { p := add(p, 32) } {
                // past the end calldataload reads zeros: a last partial word counts its own bytes
                let w := calldataload(p)
                w := or(w, shr(4, w))
                w := or(w, shr(2, w))
                w := or(w, shr(1, w))
                w := and(w, ones)
                nonZero := add(nonZero, shr(248, mul(w, ones)))
            }
        }
        return n + 3 * nonZero;
    }

    /// @notice Reverts unless this call's calldata is exactly `words` 32-byte words after the
    ///         selector: the canonical encoding of an answer whose dynamic parts the caller sized
    ///         (bytes appended, or laid out loosely, would be paid for as calldata, {costOfAnswer}).
    function requireCanonical(uint256 words) internal pure {
        if (msg.data.length != 4 + 32 * words) revert NonCanonicalCalldata(msg.data.length, 4 + 32 * words);
    }

    /// @notice What setting a zero storage slot costs beyond changing a set one (EIP-2200/2929:
    ///         20,000 against 2,900 for a slot already read, as `tail`'s caller has read them): an
    ///         answer's price adds it for each slot its split sets from 0.
    uint256 internal constant NEW_SLOT_GAS = 17_100;

    /// @notice `unmetered` plus NEW_SLOT_GAS for each distinct slot of an answer's split that is 0
    ///         now: the node's and the claimant's claimable balances (one slot where the node claimed
    ///         itself) and the total burned. (A refund of 0 writes no slot, but then the price is past
    ///         the deposit and capped by it.)
    function tail(uint256 unmetered, bool selfClaim, uint256 nodeOwed, uint256 claimantOwed, uint256 burnedSoFar)
        internal
        pure
        returns (uint256)
    {
        uint256 zeros = (nodeOwed == 0 ? 1 : 0) + (burnedSoFar == 0 ? 1 : 0);
        if (selfClaim) return unmetered + zeros * NEW_SLOT_GAS - 2_800; // its 2nd write: 100, not 2,900
        if (claimantOwed == 0) ++zeros;
        return unmetered + zeros * NEW_SLOT_GAS;
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
