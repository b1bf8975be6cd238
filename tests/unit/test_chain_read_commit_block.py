"""A recorded ``chain_read`` is judged by its batch's commit block before any RPC is asked
(`supernet.validator.chain_check`, docs/validator.md "Chain reads").

A read runs before its receipt is signed, so before its batch is committed: a result pinned at or
past the batch's commit block is a finding, whatever this validator's RPC says or whether it has
one. Anything else it cannot re-read now is its own state (`OwnSide`): a local failure, checked
again while the window is open, never a final "unverifiable" (the review's HIGH finding,
`tests/unit/test_review_rational_node2.py`: a node pinned its lie past every final block and every
validator recorded the receipt as checked).
"""

from __future__ import annotations

from typing import Any

import pytest
from chain_fixtures import Actors
from supernet.node.agents.registry import AgentRegistry
from supernet.sdk.chain.anvil import Anvil, mine
from supernet.sdk.formats.manifest import BatchManifest
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Manifest, Verifier, load_manifest

from tests.unit.test_review_rational_node2 import (
    VALIDATOR,
    BalanceOracle,
    chain_read_record,
    doc,
    honest_read,
    limits,
    signed,
)
from tests.unit.test_validator_attacks import DOMAIN, MODEL_ID, NODE, DictStore, StandInScorer, commit_entry

ADDRESS = "0x" + "5a" * 20
ARGS = {"method": "balance", "address": ADDRESS}


async def _verdict(rpc: str | None, result: dict[str, Any], commit_block: int | None, tools_rpc: str) -> Any:
    tools = [chain_read_record(tools_rpc)]
    lim = limits(4)
    task_input = {"address": ADDRESS}
    req, task_id = signed(BalanceOracle, task_input, tools, lim, MODEL_ID)
    event = {"kind": "tool", "name": "chain_read", "args": ARGS, "deterministic": False, "result": result}
    event["error"] = None
    trace = doc(BalanceOracle, task_id, task_input, [event], f"balance {result['value']}", tools, lim)
    store = DictStore()
    agents = AgentRegistry()
    agents.register(BalanceOracle)
    entry = commit_entry(store, req, task_id, trace)
    verifier = Verifier(store, StandInScorer(), RegistryRunner(store, rpc), DOMAIN, VALIDATOR, agents=agents)
    return await verifier.verify(1, NODE.address, 0, Manifest({0: entry}, commit_block=commit_block))


@pytest.mark.anvil
async def test_a_read_pinned_at_or_past_the_commit_block_is_a_finding_with_or_without_an_rpc(
    anvil: Anvil, actors: Actors
) -> None:
    honest = await honest_read(anvil.url, ARGS)
    committed = honest["block"] + 5  # the batch came after the read, as every honest batch does
    mine(anvil.web3(), 8)  # the commit's block exists (its timestamp bounds the pin's age)
    ok = await _verdict(anvil.url, honest, committed, anvil.url)
    assert ok.ok and ok.unverifiable is None, (ok.findings, ok.unverifiable)
    for pinned in (committed, committed + 10**6):
        lie = {
            **honest,
            "block": pinned,
            "block_hash": "0x" + "ab" * 32,
            "value": type(honest["value"])(10**21),
        }
        for rpc in (anvil.url, None):  # decided before any RPC: a validator without one judges it too
            verdict = await _verdict(rpc, lie, committed, anvil.url)
            assert [f.check.value for f in verdict.findings] == ["tool"], (pinned, rpc, verdict)
            assert "not before its batch's commit" in verdict.findings[0].message


@pytest.mark.anvil
async def test_what_this_validator_cannot_re_read_is_a_local_failure(anvil: Anvil, actors: Actors) -> None:
    """No RPC here, or a block not final here yet below the commit block: checked again later."""
    honest = await honest_read(anvil.url, ARGS)
    no_rpc = await _verdict(None, honest, honest["block"] + 5, anvil.url)
    assert not no_rpc.findings and "needs a chain RPC" in str(no_rpc.unverifiable)
    assert no_rpc.local_failure
    ahead = {**honest, "block": honest["block"] + 3, "block_hash": "0x" + "cd" * 32}
    not_yet = await _verdict(anvil.url, ahead, None, anvil.url)  # commit block unknown: not judged
    assert not not_yet.findings and "not final here yet" in str(not_yet.unverifiable)
    assert not_yet.local_failure


async def test_a_loaded_manifest_carries_its_commit_block(anvil: Anvil) -> None:
    """The batch's commit block travels with its manifest (`load_manifest`, the challenger's
    loads): the entry of a batch read from the store is judged against it."""
    honest = await honest_read(anvil.url, ARGS)
    tools = [chain_read_record(anvil.url)]
    lim = limits(4)
    req, task_id = signed(BalanceOracle, {"address": ADDRESS}, tools, lim, MODEL_ID)
    event = {"kind": "tool", "name": "chain_read", "args": ARGS, "deterministic": False, "error": None}
    lie = {**honest, "block": honest["block"] + 10**6, "block_hash": "0x" + "ab" * 32, "value": 7}
    trace = doc(
        BalanceOracle, task_id, {"address": ADDRESS}, [{**event, "result": lie}], "balance 7", tools, lim
    )
    store = DictStore()
    sealed = BatchManifest.seal(NODE.address, [commit_entry(store, req, task_id, trace)])
    manifest = await load_manifest(store, store.put(sealed.to_dag()), sealed.root, 1, honest["block"] + 2)
    assert manifest.commit_block == honest["block"] + 2
    agents = AgentRegistry()
    agents.register(BalanceOracle)
    verifier = Verifier(store, StandInScorer(), RegistryRunner(store, None), DOMAIN, VALIDATOR, agents=agents)
    verdict = await verifier.verify(1, NODE.address, 0, manifest)
    assert [f.check.value for f in verdict.findings] == ["tool"], verdict
