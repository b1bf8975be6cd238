"""What a protocol party needs of its chain RPC, checked before it starts.

Two settings of an RPC change what a party concludes, not only whether it can conclude: the gas an
``eth_call`` really runs with (geth lowers a call's gas to its ``--rpc.gascap`` without a word, so
a read that fits the protocol's gas "runs out of gas" there), and how far back the RPC holds state
(full nodes keep recent states only). A validator judges recorded ``chain_read`` calls by re-reading
them (`supernet.validator.chain_check`): with a lower cap it would accuse an honest node of a value
"that runs out of gas"; without the states of its span it could never judge a read. So each is
measured against the chain itself, never taken from configuration:

* the gas: an ``eth_call`` *creating* `GAS_PROBE`, init code returning the gas it starts with.
  Every RPC runs creations, so no state override (an extension some RPCs lack) is needed;
* the states: the oldest block of the span, found by block timestamps (headers every RPC keeps),
  must have a balance to read.
"""

from __future__ import annotations

from typing import Any

from supernet.sdk.chain.errors import ChainError

GAS_PROBE = bytes.fromhex("5a60005260206000f3")
"""``GAS PUSH1 0 MSTORE PUSH1 32 PUSH1 0 RETURN``: returns the gas left at its first instruction."""

PROBE_OVERHEAD = 53_124
"""Gas a call creating `GAS_PROBE` spends before it reads what is left: a creation's 53,000, the
probe's 9 bytes of calldata (120), its one word of init code (2) and the ``GAS`` instruction (2)."""

PROBE_SLACK = 1_000
"""What the overhead may differ by in another fork's pricing before a shortfall is reported."""

ZERO_ADDRESS = "0x" + "00" * 20


class RpcRequirementError(ChainError):
    """The chain RPC lacks what this party needs of it (its message says what and how to fix it)."""


def call_gas_shortfall(w3: Any, gas: int) -> str | None:
    """Why calls over ``w3`` (a sync ``Web3``) do not run with ``gas``, or None when they do."""
    try:
        out = w3.eth.call({"data": "0x" + GAS_PROBE.hex(), "gas": gas}, "latest")
    except Exception as exc:
        return f"a call asking {gas} gas fails ({type(exc).__name__}: {exc})"
    ran = int.from_bytes(bytes(out), "big") + PROBE_OVERHEAD
    if len(out) != 32 or ran + PROBE_SLACK < gas:
        return (
            f"calls asking {gas} gas run with about {ran} (the RPC caps a call's gas: raise it, e.g. "
            "geth's --rpc.gascap, reth's --rpc.gascap)"
        )
    return None


def oldest_block_within(w3: Any, span_s: int) -> int:
    """The newest block at least ``span_s`` seconds older than the head (0 on a younger chain):
    the oldest whose state a party that looks ``span_s`` back can be asked for."""
    head = w3.eth.get_block("latest")
    cutoff = int(head["timestamp"]) - span_s
    low, high = 0, int(head["number"])  # invariant: the answer is in [low, high]
    if int(w3.eth.get_block(0)["timestamp"]) > cutoff:
        return 0
    while low < high:  # the last block with timestamp <= cutoff (timestamps never decrease)
        middle = (low + high + 1) // 2
        if int(w3.eth.get_block(middle)["timestamp"]) <= cutoff:
            low = middle
        else:
            high = middle - 1
    return low


def state_span_shortfall(w3: Any, span_s: int) -> str | None:
    """Why ``w3`` does not hold the chain's states of the last ``span_s`` seconds, or None."""
    oldest = oldest_block_within(w3, span_s)
    try:
        w3.eth.get_balance(ZERO_ADDRESS, block_identifier=oldest)
    except Exception as exc:
        return (
            f"no state at block {oldest}, {span_s} s before the head ({type(exc).__name__}: {exc}); "
            "use an RPC that keeps older states (an archive node, or a full node keeping this span)"
        )
    return None


def require_rpc(w3: Any, who: str, *, call_gas: int, state_span_s: int | None = None) -> None:
    """Raise `RpcRequirementError` naming every shortfall of ``w3`` for ``who`` (a party's role).

    ``call_gas``: the gas its calls must run with; ``state_span_s``: how far back it reads state
    (None: only recent state)."""
    shortfalls = [call_gas_shortfall(w3, call_gas)]
    if state_span_s is not None:
        shortfalls.append(state_span_shortfall(w3, state_span_s))
    found = [s for s in shortfalls if s is not None]
    if found:
        raise RpcRequirementError(f"the chain RPC cannot serve this {who}: " + "; ".join(found))
