"""An ``int8-weights`` node checked in its own format (real model, fused kernel, chain).

int8-weights is float16-weights arithmetic over weights on an int8 grid (`supernet.node.llm.int8`),
so the validator re-scores it with its float16-weights kernels over the grid's weights and holds
it to the tight same-format bound. The rational cheat of the format pair, computing in int8 (half
the bytes per token) but selling the work under the float16-weights id, moves every call's
logprobs far outside that bound and is caught; a steered near-tie is caught as for float16-weights.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from supernet.sdk.chain.receipts import trace_cid
from supernet.sdk.models import served_model_id
from test_validator_precision import QUESTIONS, steer_one_near_tie, token_findings, verdicts
from validator_fixtures import VNet

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

INT8W = "int8-weights"
FP16W = "float16-weights"


@pytest_asyncio.fixture(loop_scope="session")
async def int8w_kernel(vnet: VNet) -> AsyncIterator[Any]:
    async with vnet.format_kernel(INT8W) as kernel:
        yield kernel


async def test_an_honest_int8_weights_node_is_judged_in_its_own_format(
    vnet: VNet, int8w_kernel: Any, fp32_validator_scorer: Any
) -> None:
    vnet.faults()
    batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32, kernel=int8w_kernel)
    trace = await vnet.store.get_dag(trace_cid(receipts[0].trace_hash))
    assert trace["engine"] == {"device": "cpu", "dtype": INT8W}
    found = await verdicts(vnet, batch_id, receipts, None, fp32_validator_scorer)
    assert all(v.ok for v in found), [sorted(v.checks) for v in found]
    decider = fp32_validator_scorer.for_compute(INT8W)
    assert decider.dtype == INT8W and decider.stats.rows > 0, "not re-scored in the node's format"
    assert decider.model.fused_decoder is None  # the validator's own kernels, not the node's


async def test_a_steered_near_tie_of_an_int8_weights_node_is_caught(
    vnet: VNet, int8w_kernel: Any, fp32_validator_scorer: Any
) -> None:
    vnet.faults()
    steered: list[tuple[int, int]] = []
    steer = steer_one_near_tie(fp32_validator_scorer.for_compute(INT8W), steered)
    batch_id, receipts = await vnet.run_batch(
        QUESTIONS, max_new_tokens=32, kernel=int8w_kernel, edit_trace=steer
    )
    assert steered, "no near-tied greedy token in these answers: the test needs other questions"
    assert token_findings(await verdicts(vnet, batch_id, receipts, None, fp32_validator_scorer)) == steered


async def test_int8_work_sold_under_the_float16_weights_id_is_caught(
    vnet: VNet, fp32_validator_scorer: Any
) -> None:
    """Compute in int8-weights but serve the float16-weights id and write it into the trace, so
    nothing claims the cheaper format: the grid moves the logprobs outside the exact bound."""
    from supernet.node.llm import LLMEngine

    vnet.faults()
    engine = LLMEngine.load("smollm2-135m", compute=INT8W, max_batch=4, max_seq_len=1024)
    engine.compute, engine.model_id = FP16W, served_model_id(vnet.loaded.model_id, FP16W)
    async with vnet.other_kernel(engine) as kernel:
        batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32, kernel=kernel)
    trace = await vnet.store.get_dag(trace_cid(receipts[0].trace_hash))
    assert trace["engine"] == {"device": "cpu", "dtype": FP16W}
    found = await verdicts(vnet, batch_id, receipts, None, fp32_validator_scorer)
    assert all(not v.ok for v in found), [sorted(v.checks) for v in found]
    assert all(any(c.startswith("llm") for c in v.checks) for v in found), [sorted(v.checks) for v in found]
