"""A validator checks the tasks of a node that serves two model ids (real Anvil, store, model, kernel).

The node's kernel has two LLM cores: SmolLM2-135M in float32 and the same weights in bfloat16 (two
served ids, `supernet.sdk.models`). One batch holds a task of each; the validator (float32, as on a
CPU) scores every call of both, judging each by the precision of the id its user signed (the
pair tolerance for the bf16 one), and flags neither; a cheat under the second model is still caught.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import torch
from supernet.sdk.chain.receipts import trace_cid
from supernet.sdk.formats.trace import LlmEvent, Trace
from supernet.sdk.models import served_model_id
from validator_fixtures import VNet

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

QUESTIONS = ["Name a fruit.", "Describe the sea."]


@pytest_asyncio.fixture(loop_scope="session")
async def two_models(vnet: VNet) -> AsyncIterator[Any]:
    """A kernel with two LLM cores: the fixture's float32 weights and a bfloat16 copy of them."""
    from supernet.node.llm import LLMEngine
    from supernet.node.llm.loader import load_model

    fp32 = LLMEngine(
        vnet.loaded.model, vnet.loaded.tokenizer, vnet.loaded.model_id, max_batch=4, max_seq_len=1024
    )
    loaded = load_model("smollm2-135m", dtype=torch.bfloat16, max_positions=1024)
    bf16 = LLMEngine(loaded.model, loaded.tokenizer, loaded.model_id, max_batch=4, max_seq_len=1024)
    async with vnet.other_kernel([fp32, bf16]) as kernel:
        assert kernel.model_ids == [
            served_model_id(vnet.loaded.model_id, "float32"),
            served_model_id(vnet.loaded.model_id, "bfloat16"),
        ]
        yield kernel


async def test_a_task_of_each_model_is_verified_with_no_false_positive(
    vnet: VNet, validator_factory: Any, two_models: Any
) -> None:
    vnet.faults()
    ids = two_models.model_ids
    batch_id, receipts = await vnet.run_batch(QUESTIONS, kernel=two_models, models=ids)
    assert ["0x" + r.model_id.hex() for r in receipts] == ids
    for receipt, model_id, dtype in zip(receipts, ids, ("float32", "bfloat16"), strict=True):
        trace = Trace.from_dag(await vnet.store.get_dag(trace_cid(receipt.trace_hash)))
        assert trace.engine.dtype == dtype  # each task ran on its own model's core
        assert {e.model_id for e in trace.events if isinstance(e, LlmEvent)} == {model_id}
    events: list[Any] = []
    async with validator_factory(0, events=events) as v:
        await v.step()
        checks = v.db.checks(batch_id)
    assert [c.ok for c in checks] == [True, True], [c.kinds for c in checks]
    verdicts = sorted((e.data for e in events if e.kind == "verdict"), key=lambda d: d["index"])
    assert [d["index"] for d in verdicts] == [0, 1]  # sampling rate 1: both receipts
    assert all(d["ok"] and d["unverifiable"] is None for d in verdicts), verdicts  # scored, not skipped
    for d in verdicts:
        evidence = await vnet.store.get_dag(d["evidence"])
        assert evidence["fraud"] is False and evidence["llmCalls"] == 2
    assert not [e for e in events if e.kind == "challenge"]


async def test_a_cheat_under_the_second_model_is_still_caught(
    vnet: VNet, validator_factory: Any, two_models: Any
) -> None:
    ids = two_models.model_ids
    plan: list[dict[str, float]] = [{}, {"answer": 1.0}]  # the bf16 task returns an answer of its own
    batch_id, _ = await vnet.run_batch(QUESTIONS, kernel=two_models, models=ids, fault_plan=plan)
    events: list[Any] = []
    async with validator_factory(1, events=events) as v:
        await v.step()
        checks = v.db.checks(batch_id)
    assert [c.ok for c in checks] == [True, False], [c.kinds for c in checks]
    assert "replay" in checks[1].kinds
