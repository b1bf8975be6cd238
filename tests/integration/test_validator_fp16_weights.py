"""A ``float16-weights`` node (the CPU default) checked in its own format (real model, kernel, chain).

The validator here is a float32 one, as configured on a validator that predates the format: the
signed model id names ``float16-weights`` (`supernet.sdk.models`), so it loads the same weights in
that format on first use (`ModelScorer.for_compute`) and judges the node with float32's tight
tolerance, which holds because decode and re-score of this format agree to ~2e-5 whatever the
batch (docs/benchmarks/formats.md). A cross-format check would have to allow for the weights'
rounding (|Δlogprob| up to 0.01, near-tie flips), the freedom a steering node looks for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from supernet.node.llm.scoring import Tolerance
from supernet.sdk.chain.receipts import trace_cid
from test_validator_precision import QUESTIONS, steer_one_near_tie, token_findings, verdicts
from validator_fixtures import VNet

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

FP16W = "float16-weights"


@pytest_asyncio.fixture(loop_scope="session")
async def fp16w_kernel(vnet: VNet) -> AsyncIterator[Any]:
    async with vnet.format_kernel(FP16W) as kernel:
        yield kernel


async def test_an_honest_fp16_weights_node_is_judged_in_its_own_format(
    vnet: VNet, fp16w_kernel: Any, fp32_validator_scorer: Any
) -> None:
    vnet.faults()
    batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32, kernel=fp16w_kernel)
    trace = await vnet.store.get_dag(trace_cid(receipts[0].trace_hash))
    assert trace["engine"] == {"device": "cpu", "dtype": FP16W}
    found = await verdicts(vnet, batch_id, receipts, None, fp32_validator_scorer)
    assert all(v.ok for v in found), [sorted(v.checks) for v in found]
    assert sum(v.llm_calls for v in found) == 2 * len(QUESTIONS)
    decider = fp32_validator_scorer.for_compute(FP16W)  # loaded by that check, and kept
    assert decider is not fp32_validator_scorer and decider.dtype == FP16W
    assert decider.stats.rows > 0, "the calls were not re-scored in the node's format"
    assert fp32_validator_scorer.for_compute(FP16W) is decider
    assert decider.for_compute(FP16W) is decider


async def test_a_steered_near_tie_of_an_fp16_weights_node_is_caught(
    vnet: VNet, fp16w_kernel: Any, fp32_validator_scorer: Any
) -> None:
    """The rational cheat of the format: swap a greedy token for a runner-up a few tenths of a nat
    below it. Judged in the node's own format with the tight bound, it is a token finding at the
    steered position; under the looser bounds a cross-format check needs, it passes."""
    vnet.faults()
    steered: list[tuple[int, int]] = []
    steer = steer_one_near_tie(fp32_validator_scorer.for_compute(FP16W), steered)
    batch_id, receipts = await vnet.run_batch(
        QUESTIONS, max_new_tokens=32, kernel=fp16w_kernel, edit_trace=steer
    )
    assert steered, "no near-tied greedy token in these answers: the test needs other questions"
    assert token_findings(await verdicts(vnet, batch_id, receipts, None, fp32_validator_scorer)) == steered
    loose = await verdicts(vnet, batch_id, receipts, Tolerance.bf16(), fp32_validator_scorer)
    assert token_findings(loose) == [], "the loose bounds were expected to let the steered token through"


async def test_cheats_of_an_fp16_weights_node_are_caught(
    vnet: VNet, fp16w_kernel: Any, fp32_validator_scorer: Any
) -> None:
    for kind, check in (("tokens", "llm.token"), ("truncate", "llm"), ("answer", "replay")):
        vnet.faults(**{kind: 1.0})
        try:
            batch_id, receipts = await vnet.run_batch(QUESTIONS[:3], max_new_tokens=32, kernel=fp16w_kernel)
        finally:
            vnet.faults()
        found = await verdicts(vnet, batch_id, receipts, None, fp32_validator_scorer)
        assert all(not v.ok for v in found), (kind, [sorted(v.checks) for v in found])
        assert any(c.startswith(check) for v in found for c in v.checks), (
            kind,
            [sorted(v.checks) for v in found],
        )


async def test_a_float32_id_does_not_let_a_node_pass_fp16_weights_off_as_float32(
    vnet: VNet, fp16w_kernel: Any, fp32_validator_scorer: Any
) -> None:
    """The node computes in float16-weights but writes ``float32`` as its engine format: the
    format is read from the signed id, so the false claim is itself a finding."""
    vnet.faults()

    def claim_float32(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        return {**trace, "engine": {"device": "cpu", "dtype": "float32"}}

    batch_id, receipts = await vnet.run_batch(
        QUESTIONS[:2], max_new_tokens=16, kernel=fp16w_kernel, edit_trace=claim_float32
    )
    found = await verdicts(vnet, batch_id, receipts, None, fp32_validator_scorer)
    for v in found:
        claims = [f for f in v.findings if f.check.value == "trace" and f.claimed == "float32"]
        assert claims and claims[0].expected == FP16W, [f.message for f in v.findings]


async def test_fp16_weights_work_sold_under_the_float32_id_is_caught(
    vnet: VNet, fp32_validator_scorer: Any
) -> None:
    """The rational cheat between formats: compute in float16-weights (half the bytes read per
    token) but serve the float32 id and write ``float32`` into the trace, so nothing claims the
    cheaper format. The weights' rounding moves every call's logprobs by ≥ 1.7e-3 and its
    fingerprints by ≥ 5.6e-4 relative (docs/benchmarks/exact_pairs.md), outside the same-format
    tolerance; the former float32 bounds (0.02 nat, 1 %) let such calls through unless a near-tie
    flipped a greedy token."""
    from supernet.node.llm import LLMEngine

    vnet.faults()
    engine = LLMEngine.load("smollm2-135m", compute=FP16W, max_batch=4, max_seq_len=1024)
    engine.compute, engine.model_id = "float32", vnet.kernel.model_id  # the dearer product's id
    async with vnet.other_kernel(engine) as kernel:
        batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32, kernel=kernel)
    trace = await vnet.store.get_dag(trace_cid(receipts[0].trace_hash))
    assert trace["engine"] == {"device": "cpu", "dtype": "float32"}
    assert all("0x" + r.model_id.hex() == vnet.kernel.model_id for r in receipts)

    found = await verdicts(vnet, batch_id, receipts, None, fp32_validator_scorer)
    assert all(not v.ok for v in found), [sorted(v.checks) for v in found]
    flagged_calls = {(v.index, f.call) for v in found for f in v.findings if f.check.value.startswith("llm")}
    assert len(flagged_calls) == sum(v.llm_calls for v in found) == 2 * len(QUESTIONS)

    former = Tolerance(
        logprob_atol=0.02, hidden_rtol=0.01, hidden_atol=0.01, selection_margin=0.01, sample_margin=0.01
    )
    passed_before = await verdicts(vnet, batch_id, receipts, former, fp32_validator_scorer)
    assert any(v.ok for v in passed_before), "the former bounds were expected to let some of it through"
