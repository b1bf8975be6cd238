"""The ``chain_read`` tool: reads of the protocol's chain that every validator can check.

A read is pinned to a *final* block (the chain's ``finalized`` head, or a number at or below it)
and its result names the block it was read at::

    {"block": 1234, "block_hash": "0x…", "value": "1000"}       # balance, call, block_number
    {"block": 1234, "block_hash": "0x…", "reverted": "0x…"}     # a call that reverted there

So the result is a pure function of the chain and the pin: a validator following the same chain
re-reads it at ``block_hash`` (`read_at`) after checking that hash is its own block ``block``
(`supernet.validator.chain_check`). Final blocks do not reorganise, so an honest node's pin never
turns out wrong. ``latest`` (the default) means the finalized head: an agent sees state a little
old, never state that can still change.

Failures a node cannot be held to (the RPC is down, the block asked for is not final yet) are
`ToolUnavailableError` in the words below, the only words a validator accepts for them; a
malformed ``block`` is a `ToolError` any validator derives from the arguments alone (`pin_target`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

from supernet.node.kernel.errors import ToolError, ToolUnavailableError

BLOCK_TAGS = ("latest", "safe", "finalized")
"""``block`` values meaning "the chain's finalized head" (the default)."""

NOT_FINAL = "block {block} is not final on this chain yet"
"""A ``block`` above the finalized head (its state could still change)."""

CHAIN_UNREACHABLE = "the chain cannot be read now"
"""The chain RPC failed (down, timed out, or without the block's state)."""

MAX_PIN_AGE_S = 6 * 3600
"""The protocol's oldest pin for a read of the finalized head (a tag): its block's timestamp at
most this many seconds before the block its batch was committed in. A node pins the head final at
its read and commits within minutes; a pin far older would name state that validators' RPCs no
longer hold (full nodes keep recent states only), and the read could never be judged. So an older
pin is a finding (`supernet.validator.chain_check`), and a validator's RPC must hold the states of
this span plus a check window (docs/validator.md). A node must commit a receipt within it: its
batcher commits every few seconds; a node down for longer than this with such receipts sealed is
accused of them."""

STALE_FINAL_S = MAX_PIN_AGE_S // 2
"""How far the finalized head may lag the chain's latest block (by timestamps) for a read of the
head: beyond it the read is refused (`STALE_FINAL`), so a finality stall cannot make an honest pin
old; the other half of `MAX_PIN_AGE_S` bounds the node's commit delay (the node's batch settings
are held to it)."""

STALE_FINAL = "the chain's finalized head lags its latest block by more than {seconds} s"
"""A read of the head refused while finality stalls (`STALE_FINAL_S`)."""

CHAIN_READ_GAS = 10_000_000
"""The gas every ``call`` is run with, node and validator alike (well below the caps RPCs set for
calls, geth's and reth's 50M, so that none lowers it; a validator's RPC must allow it):
the outcome is the chain's, not an RPC's setting. A call that runs out of it fails the read
(`CHAIN_UNREACHABLE` where the node reads), and a validator's re-read failing so shows a recorded
value to be made up (`OUT_OF_GAS`)."""

OUT_OF_GAS = ("out of gas", "outofgas")
"""How RPCs word an ``eth_call`` that ran out of gas (geth, reth, besu: "out of gas"; anvil,
nethermind: "OutOfGas"), lowercased: the only RPC error a validator takes as the chain's answer."""

EVM_HALTS = (
    *OUT_OF_GAS,
    "invalid opcode",  # geth's INVALID (0xfe: an old Solidity `assert`, SafeMath) and unknown opcodes
    "invalidfeopcode",  # anvil (revm)
    "opcodenotfound",
    "invalid jump",  # geth "invalid jump destination", anvil "InvalidJump"
    "invalidjump",
    "stack underflow",
    "stackunderflow",
    "stack limit reached",  # geth's stack overflow
    "stackoverflow",
    "write protection",  # a state change inside the static call
    "statechangeduringstaticcall",
    "return data out of bounds",
    "outofoffset",
)
"""How RPCs word an ``eth_call`` that halts exceptionally (out of gas included), lowercased: the
EVM's own outcome at that block, the same on every client that reaches it, so a validator takes
it as the chain's answer (a value recorded for such a call is a finding). A wording not listed here
stays this validator's own failure, never an accusation (a review found a value for an ``INVALID``
call never judged: tests/unit/test_review_rational_node3.py)."""

BAD_BLOCK = "block must be a block number or one of latest, safe, finalized"
BAD_ADDRESS = "address must be a 20-byte hex address"


_HASH = re.compile(r"^0x[0-9a-f]{64}$")


def pin_target(args: Mapping[str, Any]) -> int | None:
    """The block number ``args`` ask for (None: the finalized head).

    Raises:
        ToolError: ``block`` is neither a number nor a tag of `BLOCK_TAGS` (deterministic: a
            validator derives it from the arguments alone).
    """
    block = args.get("block", "latest")
    if isinstance(block, str) and block in BLOCK_TAGS:
        return None
    if isinstance(block, int) and not isinstance(block, bool) and block >= 0:
        return block
    raise ToolError(BAD_BLOCK)


def check_arguments(args: Mapping[str, Any]) -> None:
    """Refuse what no chain could answer, before the network (a validator derives the same error
    from the arguments alone).

    Raises:
        ToolError: a malformed ``block`` (`BAD_BLOCK`), or an address that is not one.
    """
    from web3 import AsyncWeb3  # web3 is heavy: import on first use

    pin_target(args)
    if args.get("method") != "block_number":
        try:
            AsyncWeb3.to_checksum_address(str(args.get("address", "")))
        except ValueError:
            raise ToolError(BAD_ADDRESS) from None


async def pin(w3: Any, args: Mapping[str, Any]) -> tuple[int, str]:
    """The final block the read of ``args`` is made at: (number, ``0x`` hash).

    Raises:
        ToolError: a malformed ``block``.
        ToolUnavailableError: ``block`` above the finalized head (`NOT_FINAL`), or a read of the
            head while it lags the latest block by more than `STALE_FINAL_S` (`STALE_FINAL`).
    """
    target = pin_target(args)
    final_block = await w3.eth.get_block("finalized")
    final = block_ref(final_block)
    if target is None:
        lag = int((await w3.eth.get_block("latest"))["timestamp"]) - int(final_block["timestamp"])
        if lag > STALE_FINAL_S:  # a pin this old could pass MAX_PIN_AGE_S before its commit
            raise ToolUnavailableError(STALE_FINAL.format(seconds=STALE_FINAL_S))
        return final
    if target > final[0]:
        raise ToolUnavailableError(NOT_FINAL.format(block=target))
    return block_ref(await w3.eth.get_block(target))


def block_ref(block: Mapping[str, Any]) -> tuple[int, str]:
    """A block as a read is pinned to it: (number, ``0x`` hash)."""
    return int(block["number"]), "0x" + bytes(block["hash"]).hex()


@contextlib.asynccontextmanager
async def connected(rpc_url: str) -> AsyncIterator[Any]:
    """An ``AsyncWeb3`` on ``rpc_url`` (the node's read, a validator's re-read), its HTTP session
    closed on exit."""
    from web3 import AsyncHTTPProvider, AsyncWeb3  # web3 is heavy: import on first use

    w3 = AsyncWeb3(AsyncHTTPProvider(rpc_url))
    try:
        yield w3
    finally:
        await w3.provider.disconnect()


async def read_at(w3: Any, args: Mapping[str, Any], number: int, block_hash: str) -> dict[str, Any]:
    """The result of the read ``args`` at the pinned block (see the module docstring).

    Arguments `check_arguments` accepted; raises the RPC's own failures (`chain_read` words them
    as `CHAIN_UNREACHABLE`).
    """
    from web3 import AsyncWeb3  # web3 is heavy: import on first use
    from web3.exceptions import ContractLogicError

    out: dict[str, Any] = {"block": number, "block_hash": block_hash}
    method = args["method"]
    if method == "block_number":
        return {**out, "value": number}
    address = AsyncWeb3.to_checksum_address(str(args.get("address", "")))
    at = block_hash  # EIP-1898: that block, not whatever holds its number now
    if method == "balance":
        return {**out, "value": str(await w3.eth.get_balance(address, block_identifier=at))}
    try:
        # no EIP-3668 off-chain lookup (web3's default): the answer would be a server's the contract
        # names, not the chain's, and a validator asking that server may be told otherwise
        call = {"to": address, "data": args.get("data", "0x"), "gas": CHAIN_READ_GAS}
        data = await w3.eth.call(call, block_identifier=at, ccip_read_enabled=False)
    except ContractLogicError as exc:  # a revert at a pinned block is as final as a value
        reason = exc.data if isinstance(exc.data, str) else "0x"
        return {**out, "reverted": reason if reason.startswith("0x") else "0x"}
    return {**out, "value": "0x" + bytes(data).hex()}


def chain_read(rpc_url: str | None) -> Any:
    """The tool function over the chain at ``rpc_url`` (None: every call fails, no chain here)."""

    async def read(args: Mapping[str, Any]) -> Any:
        if not rpc_url:
            raise ToolError("this node has no chain RPC configured")
        check_arguments(args)  # before the network: every validator derives the same error
        try:
            async with connected(rpc_url) as w3:
                number, block_hash = await pin(w3, args)
                return await read_at(w3, args, number, block_hash)
        except (ToolError, ToolUnavailableError):
            raise
        except Exception as exc:  # the RPC's moment, not the arguments': in the tool's own words
            raise ToolUnavailableError(CHAIN_UNREACHABLE) from exc

    return read


def pinned_result(result: Any) -> tuple[int, str] | None:
    """The (block, hash) a recorded ``chain_read`` result names, or None if it is not one of the
    two shapes the tool returns."""
    if not isinstance(result, Mapping) or set(result) not in (
        {"block", "block_hash", "value"},
        {"block", "block_hash", "reverted"},
    ):
        return None
    block, block_hash = result["block"], result["block_hash"]
    if not isinstance(block, int) or isinstance(block, bool) or block < 0:
        return None
    if not isinstance(block_hash, str) or not _HASH.match(block_hash):
        return None
    return block, block_hash
