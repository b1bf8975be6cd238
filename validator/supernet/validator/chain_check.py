"""Re-checking a recorded ``chain_read`` against the validator's own view of the protocol's chain.

A node's read is pinned to a final block whose number and hash its result names
(`supernet.node.kernel.chain_read`). So the validator needs no trust in the node's RPC: it checks
that the hash is its own chain's block at that number, re-reads the same thing at that hash and
compares. A read runs before its receipt is signed, so before its batch is committed: a pinned
block at or past the batch's commit block is a finding, decided with no RPC at all (a node that
names a block beyond every head would otherwise be "not final here" forever). A block not final
here yet, or a chain this validator cannot read now, makes the receipt unverifiable *on this side*
(`OwnSide`: checked again while its window is open), never an accusation nor a final verdict.
Failures are held to the tool's own words (the moment's) or to what the arguments alone cause.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from supernet.node.kernel.chain_read import (
    CHAIN_READ_GAS,
    CHAIN_UNREACHABLE,
    EVM_HALTS,
    MAX_PIN_AGE_S,
    NOT_FINAL,
    STALE_FINAL,
    STALE_FINAL_S,
    block_ref,
    check_arguments,
    connected,
    pin_target,
    pinned_result,
    read_at,
)
from supernet.node.kernel.errors import ToolError
from supernet.validator.evidence import Check, Finding, OwnSide
from supernet.validator.trace_view import ToolCall

CHAIN_READ = "chain_read"


class ChainView:
    """The validator's reads of the protocol's chain over its own RPC (a connection per check)."""

    def __init__(self, rpc_url: str) -> None:
        self.rpc_url = rpc_url

    def connect(self) -> contextlib.AbstractAsyncContextManager[Any]:
        """An ``AsyncWeb3`` on the RPC, its HTTP session closed on exit (the node tool's own)."""
        return connected(self.rpc_url)


def _arguments_error(
    validate: Callable[[str, Mapping[str, Any]], None], args: Mapping[str, Any]
) -> str | None:
    """The error the arguments alone make any ``chain_read`` fail with, as a trace records it."""
    try:
        validate(CHAIN_READ, args)
        check_arguments(args)
    except ToolError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _moment(error: str, timeout: bool, args: Mapping[str, Any]) -> bool | None:
    """For an environmental failure: whether it is in the tool's own words (``timeout``: the error
    is exactly the tool's timeout at the protocol's limit); None: not one. "Not final" is the
    tool's word only for the very block the arguments ask for (never for ``latest``)."""
    kind, _, text = error.partition(": ")
    if kind == "ToolTimeoutError":
        return timeout
    if kind == "ToolUnavailableError":
        if text == CHAIN_UNREACHABLE:
            return True
        try:
            asked = pin_target(args)
        except ToolError:
            return False
        if asked is None:  # a read of the head: refused while finality stalls, in these words
            return text == STALE_FINAL.format(seconds=STALE_FINAL_S)
        return text == NOT_FINAL.format(block=asked)
    return None


async def check_chain_read(
    call: ToolCall,
    validate: Callable[[str, Mapping[str, Any]], None],
    chain: ChainView | None,
    timed_out: bool,
    commit_block: int | None = None,
) -> tuple[Finding | None, bool, OwnSide | None]:
    """One recorded ``chain_read``: (its finding, whether it was re-read, why it is unverifiable,
    always `OwnSide`). ``commit_block``: the block its batch was committed in, where known."""
    if call.error is not None:
        moment = _moment(call.error, timed_out, call.args)
        if moment is not None:  # the RPC's moment: not re-run, but only in the tool's words
            return (
                (None if moment else _finding(call, "a failure in words the tool never uses", None)),
                False,
                None,
            )
        expected = _arguments_error(validate, call.args)
        if expected != call.error:  # a protocol node reads its chain: only the arguments fail a read
            return _finding(call, "a failure its arguments do not cause", expected), False, None
        return None, False, None
    pin = pinned_result(call.result)
    if pin is None or _arguments_error(validate, call.args) is not None:
        return (
            _finding(call, "a result that is not a read pinned to a block", "{block, block_hash, value}"),
            False,
            None,
        )
    block, block_hash = pin
    asked = pin_target(call.args)
    if asked is not None and asked != block:
        return _finding(call, f"read at block {block}, not the block {asked} asked for", asked), False, None
    if commit_block is not None and block >= commit_block:
        what = f"read at block {block}, not before its batch's commit (block {commit_block})"
        return _finding(call, what, None), False, None
    if chain is None:
        return None, False, OwnSide(f"tool call {call.call} (chain_read) needs a chain RPC to be re-read")
    try:
        async with chain.connect() as w3:
            if block > int((await w3.eth.get_block("finalized"))["number"]):
                return None, False, OwnSide(f"tool call {call.call} read block {block}, not final here yet")
            header = await w3.eth.get_block(block)
            _, canonical = block_ref(header)
            if canonical != block_hash:
                return _finding(call, f"block {block} of this chain is {canonical}", canonical), True, None
            if asked is None and commit_block is not None:  # a tag read: pinned by the node
                # measured to the block before the commit: the last the node can have seen at its
                # read, so a chain that halted between the read and the commit does not age the
                # pin (the node's own check bounds the lag of the head it read to STALE_FINAL_S)
                before = await w3.eth.get_block(max(commit_block - 1, block))
                age = int(before["timestamp"]) - int(header["timestamp"])
                if age > MAX_PIN_AGE_S:
                    what = f"the final head pinned {age} s before its batch's commit, past {MAX_PIN_AGE_S} s"
                    return _finding(call, what, None), False, None
            try:
                again = await read_at(w3, call.args, block, block_hash)
            except Exception as exc:
                if any(words in str(exc).lower() for words in EVM_HALTS):  # the chain's answer
                    what = (
                        f"a value for a call that halts at that block (with its {CHAIN_READ_GAS} gas): "
                        f"{type(exc).__name__}: {exc}"
                    )
                    return _finding(call, what, None), True, None
                raise
    except Exception as exc:  # this validator's RPC, not the node's fault
        return (
            None,
            False,
            OwnSide(f"tool call {call.call} (chain_read) could not be re-read here: {type(exc).__name__}"),
        )
    if _canon(again) != _canon(call.result):
        return _finding(call, "another result when re-read at its block", again), True, None
    return None, True, None


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _finding(call: ToolCall, what: str, expected: Any) -> Finding:
    claimed = call.error if call.error is not None else call.result
    return Finding(Check.TOOL, f"tool chain_read: {what}", call=call.call, expected=expected, claimed=claimed)
