"""A bf16 node checked by an fp32 validator (real model in both precisions, real kernel and chain).

Traces record the engine's dtype; the validator picks the tolerance of the (node, validator)
precision pair. With the fp32 tolerance an honest bf16 node would be accused (rounding moves its
logprobs by more than 0.02); with the pair's it is not, and a cheat is still caught. The
calibration over >= 500 honest calls per mixed pair is `scripts/bench_precision.py`
(docs/benchmarks/precision.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import torch
from supernet.node.llm.scoring import Tolerance
from supernet.sdk.chain.merkle import ReceiptTree
from supernet.sdk.chain.receipts import trace_cid
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Verifier, load_manifest
from validator_fixtures import VNet, probe_registry

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

QUESTIONS = ["Name a fruit.", "Describe the sea.", "Write a haiku about rain.", "Tell me a fun fact."]


@pytest_asyncio.fixture(loop_scope="session")
async def bf16_kernel(vnet: VNet) -> AsyncIterator[Any]:
    """The node's kernel on a bfloat16 copy of the model (same weights, same model id)."""
    from supernet.node.kernel.kernel import Kernel
    from supernet.node.llm import LLMEngine
    from supernet.node.llm.loader import load_model

    loaded = load_model("smollm2-135m", dtype=torch.bfloat16, max_positions=1024)
    assert loaded.model_id == vnet.loaded.model_id  # the id names the weights, not the compute dtype
    engine = LLMEngine(loaded.model, loaded.tokenizer, loaded.model_id, max_batch=4, max_seq_len=1024)
    kernel = Kernel(engine, vnet.store, agents=vnet.kernel.agents, faults=vnet.injector)
    await kernel.setup()
    try:
        yield kernel
    finally:
        await kernel.stop()


async def verdicts(vnet: VNet, batch_id: int, receipts: list[Any], tolerance: Tolerance | None) -> list[Any]:
    from supernet.validator.scoring import ModelScorer

    manifest = await load_manifest(
        vnet.store, vnet.manifests[batch_id], ReceiptTree(receipts).root, len(receipts)
    )
    scorer = ModelScorer.from_loaded(vnet.loaded)  # fp32, as a CPU validator runs
    verifier = Verifier(
        vnet.store,
        scorer,
        RegistryRunner(vnet.store),
        vnet.contracts.domain,
        "0xv",
        tolerance,
        probe_registry(),
    )
    return await verifier.verify_many(batch_id, vnet.node.address, range(len(receipts)), manifest)


async def test_bf16_node_is_judged_with_the_pair_tolerance(vnet: VNet, bf16_kernel: Any) -> None:
    vnet.faults()
    batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=24, kernel=bf16_kernel)
    trace = await vnet.store.get_dag(trace_cid(receipts[0].trace_hash))
    assert trace["engine"] == {"device": "cpu", "dtype": "bfloat16"}
    paired = await verdicts(vnet, batch_id, receipts, None)
    assert all(v.ok for v in paired), [sorted(v.checks) for v in paired]
    strict = await verdicts(vnet, batch_id, receipts, Tolerance())  # as if the node were fp32
    assert any(not v.ok for v in strict), "the fp32 tolerance would have accused the honest bf16 node"


async def test_cheats_of_a_bf16_node_are_still_caught(vnet: VNet, bf16_kernel: Any) -> None:
    # Under the bf16 pair tolerance a token drawn with another seed can fall inside the selection
    # margin, so the sampled-token check finds a wrong seed per call with high probability, not
    # certainty: three tasks of 48 tokens; every faulty receipt must still be flagged (the replay
    # finds the recorded seed is not the protocol's) and the sampled-token check must fire too.
    for kind, check in (("tokens", "llm.token"), ("seed", "llm.sample"), ("answer", "replay")):
        vnet.faults(**{kind: 1.0})
        try:
            batch_id, receipts = await vnet.run_batch(QUESTIONS[:3], max_new_tokens=48, kernel=bf16_kernel)
        finally:
            vnet.faults()
        found = await verdicts(vnet, batch_id, receipts, None)
        assert all(not v.ok for v in found), (kind, [sorted(v.checks) for v in found])
        assert any(check in v.checks for v in found), (kind, [sorted(v.checks) for v in found])
