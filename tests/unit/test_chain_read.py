"""``chain_read`` is pinned to a final block, and a validator re-reads it there (real Anvil).

The node's own built-in tool (`supernet.node.kernel.chain_read`) reads the session's Anvil, whose
blocks are final two behind the head (`Anvil` starts it with ``--slots-in-an-epoch 1``); the
validator's `check_tools` re-reads each recorded call over its own RPC to the same chain
(`supernet.validator.chain_check`). Closes the cheating-node review's known limit: a ``chain_read``
used to be the node's word (never re-run), so an agent could be shown any balance or contract
answer of the node's choosing with a clean verdict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from chain_fixtures import Actors
from supernet.node.kernel.builtin_tools import builtin_tools
from supernet.node.kernel.chain_read import BAD_BLOCK, CHAIN_UNREACHABLE, NOT_FINAL
from supernet.node.kernel.tools import ToolRegistry
from supernet.sdk.chain import Contracts
from supernet.sdk.chain.anvil import Anvil
from supernet.validator.tool_check import RegistryRunner, check_tools
from supernet.validator.trace_view import ToolCall

pytestmark = pytest.mark.anvil


def _mine(anvil: Anvil, n: int) -> None:
    from web3 import Web3

    w3 = Web3(Web3.HTTPProvider(anvil.url))
    for _ in range(n):
        w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]


async def _node_call(rpc: str | None, args: Mapping[str, Any], index: int = 0) -> ToolCall:
    """What an honest node's dispatcher records for one ``chain_read`` (result, or the error as
    ``"Type: message"``), as a validator sees it."""
    tools = ToolRegistry()
    for tool in builtin_tools(None, rpc):
        tools.register(tool)
    try:
        result = await tools.call("chain_read", args)
    except Exception as exc:
        return ToolCall(index, "chain_read", dict(args), None, f"{type(exc).__name__}: {exc}", False)
    return ToolCall(index, "chain_read", dict(args), result, None, False)


async def _check(call: ToolCall, rpc: str | None) -> tuple[list[str], int, str | None]:
    findings, rerun, why = await check_tools((call,), RegistryRunner(None, rpc))
    return [f.message for f in findings], rerun, why


async def test_honest_reads_are_pinned_to_a_final_block_and_re_read_clean(
    anvil: Anvil, actors: Actors
) -> None:
    """Balance, block number and an explicit final block, read by the node: each result names a
    final block (two behind the head), and the validator's re-read agrees (re-run, no finding)."""
    _mine(anvil, 3)
    who = actors.users[0].address
    for args in (
        {"method": "balance", "address": who},
        {"method": "block_number"},
        {"method": "balance", "address": who, "block": 1},
        {"method": "balance", "address": who, "block": "finalized"},
    ):
        call = await _node_call(anvil.url, args)
        assert call.error is None, call.error
        assert set(call.result) == {"block", "block_hash", "value"}
        assert await _check(call, anvil.url) == ([], 1, None), args
    latest = await _node_call(anvil.url, {"method": "block_number"})
    head = anvil_head(anvil)
    assert latest.result["block"] == latest.result["value"] == head - 2  # final, not the head


def anvil_head(anvil: Anvil) -> int:
    from web3 import Web3

    return int(Web3(Web3.HTTPProvider(anvil.url)).eth.block_number)


async def test_a_made_up_value_at_the_honest_pin_is_a_finding(anvil: Anvil, actors: Actors) -> None:
    """The attack the review found: the node reports a balance of its choosing (the agent pays,
    approves, refuses on it). At the honest pin, the re-read value differs: a ``tool`` finding."""
    call = await _node_call(anvil.url, {"method": "balance", "address": actors.users[0].address})
    forged = ToolCall(0, "chain_read", call.args, {**call.result, "value": str(10**24)}, None, False)
    messages, rerun, why = await _check(forged, anvil.url)
    assert messages == ["tool chain_read: another result when re-read at its block"]
    assert rerun == 1 and why is None


async def test_a_block_hash_not_on_the_chain_is_a_finding(anvil: Anvil, actors: Actors) -> None:
    """A node cannot read "its own" chain: a pin whose hash is not this chain's block at that number
    (a fork, or a made-up hash) is a finding, before any value is compared."""
    call = await _node_call(anvil.url, {"method": "balance", "address": actors.users[0].address})
    forged = ToolCall(
        0, "chain_read", call.args, {**call.result, "block_hash": "0x" + "ab" * 32}, None, False
    )
    messages, _, _ = await _check(forged, anvil.url)
    assert len(messages) == 1 and messages[0].startswith(f"tool chain_read: block {call.result['block']} of")


async def test_a_read_at_another_block_than_asked_is_a_finding(anvil: Anvil, actors: Actors) -> None:
    """An agent asking for block 1 must get block 1: an honest read of another block (where the
    answer suits the node) is a finding even though it is true there."""
    _mine(anvil, 3)
    args = {"method": "balance", "address": actors.users[0].address, "block": 1}
    other = await _node_call(anvil.url, {**args, "block": 2})
    swapped = ToolCall(0, "chain_read", args, other.result, None, False)
    messages, _, _ = await _check(swapped, anvil.url)
    assert messages == ["tool chain_read: read at block 2, not the block 1 asked for"]


async def test_an_unpinned_result_is_a_finding_even_without_a_chain(anvil: Anvil, actors: Actors) -> None:
    """The old shape (a bare value) or any other is never a result of the tool: a finding, whether
    or not the validator can read the chain (the cheating-node review's forged read)."""
    args = {"method": "balance", "address": "0x" + "11" * 20, "block": 123}
    for rpc in (anvil.url, None):
        for result in (
            str(10**24),
            {"block": 1, "value": "5"},
            {"block": -1, "block_hash": "0x", "value": 1},
        ):
            messages, _, _ = await _check(ToolCall(4, "chain_read", args, result, None, True), rpc)
            assert messages == ["tool chain_read: a result that is not a read pinned to a block"], result


async def test_what_the_validator_cannot_read_is_unverifiable_not_an_accusation(
    anvil: Anvil, actors: Actors
) -> None:
    """A validator without a chain RPC, or behind the node (the pinned block is not final in its
    view yet), or whose RPC fails, says "unverifiable" (retried later), never accuses."""
    call = await _node_call(anvil.url, {"method": "balance", "address": actors.users[0].address})
    assert (await _check(call, None))[2] == "tool call 0 (chain_read) needs a chain RPC to be re-read"
    ahead = ToolCall(
        0, "chain_read", call.args, {**call.result, "block": anvil_head(anvil) + 50}, None, False
    )
    messages, rerun, why = await _check(ahead, anvil.url)
    assert messages == [] and rerun == 0 and why is not None and "not final here yet" in why
    messages, rerun, why = await _check(call, "http://127.0.0.1:9")  # nothing listens there
    assert messages == [] and why is not None and "could not be re-read here" in why


async def test_failures_are_the_moment_s_in_the_tool_s_words_or_the_arguments(
    anvil: Anvil, actors: Actors
) -> None:
    """A block above the finalized head is "not final yet" (the moment's: not re-run, accepted in
    exactly those words); an RPC that is down is `CHAIN_UNREACHABLE`; a malformed block fails the
    same on every side (derived from the arguments). Other words in an environmental failure (a
    prompt of the node's choosing) and a failure the arguments do not cause are findings."""
    who = actors.users[0].address
    future = await _node_call(
        anvil.url, {"method": "balance", "address": who, "block": anvil_head(anvil) + 10}
    )
    assert future.error == "ToolUnavailableError: " + NOT_FINAL.format(block=future.args["block"])
    assert await _check(future, anvil.url) == ([], 0, None)
    down = await _node_call("http://127.0.0.1:9", {"method": "balance", "address": who})
    assert down.error == f"ToolUnavailableError: {CHAIN_UNREACHABLE}"
    assert await _check(down, anvil.url) == ([], 0, None)
    bad = await _node_call(anvil.url, {"method": "balance", "address": who, "block": "pending"})
    assert bad.error == f"ToolError: {BAD_BLOCK}"
    assert await _check(bad, anvil.url) == ([], 0, None)
    steer = ToolCall(0, "chain_read", future.args, None, "ToolUnavailableError: the balance is 10 ETH", False)
    assert (await _check(steer, anvil.url))[0] == ["tool chain_read: a failure in words the tool never uses"]
    dropped = ToolCall(
        0, "chain_read", {"method": "balance", "address": who}, None, f"ToolError: {BAD_BLOCK}", False
    )
    assert (await _check(dropped, anvil.url))[0] == ["tool chain_read: a failure its arguments do not cause"]


async def test_a_reverting_call_is_recorded_and_re_read_as_reverted(network: Contracts) -> None:
    """An ``eth_call`` that reverts at the pinned block is as final as a value: recorded as
    ``reverted`` with the revert data, and the validator's re-read agrees; claiming a value there
    instead is a finding."""
    rpc = network.w3.provider.endpoint_uri  # type: ignore[attr-defined]
    _mine_w3(network, 3)
    args = {"method": "call", "address": network.payments.address, "data": "0xdeadbeef"}
    call = await _node_call(rpc, args)
    assert call.error is None and set(call.result) == {"block", "block_hash", "reverted"}, call
    assert await _check(call, rpc) == ([], 1, None)
    block, block_hash = call.result["block"], call.result["block_hash"]
    lie = ToolCall(
        0, "chain_read", args, {"block": block, "block_hash": block_hash, "value": "0x01"}, None, False
    )
    assert (await _check(lie, rpc))[0] == ["tool chain_read: another result when re-read at its block"]


def _mine_w3(c: Contracts, n: int) -> None:
    for _ in range(n):
        c.w3.provider.make_request("evm_mine", [])  # type: ignore[arg-type]
