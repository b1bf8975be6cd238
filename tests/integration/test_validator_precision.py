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
from supernet.sdk.models import served_model_id
from supernet.validator.tool_check import RegistryRunner
from supernet.validator.verifier import Verifier, load_manifest
from validator_fixtures import VNet, probe_registry

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

QUESTIONS = ["Name a fruit.", "Describe the sea.", "Write a haiku about rain.", "Tell me a fun fact."]


@pytest_asyncio.fixture(loop_scope="session")
async def bf16_kernel(vnet: VNet) -> AsyncIterator[Any]:
    """The node's kernel on a bfloat16 copy of the model (same weights, another served id)."""
    from supernet.node.llm import LLMEngine
    from supernet.node.llm.loader import load_model

    loaded = load_model("smollm2-135m", dtype=torch.bfloat16, max_positions=1024)
    assert loaded.model_id == vnet.loaded.model_id  # the weights id names the weights alone
    engine = LLMEngine(loaded.model, loaded.tokenizer, loaded.model_id, max_batch=4, max_seq_len=1024)
    assert engine.model_id == served_model_id(loaded.model_id, "bfloat16") != vnet.kernel.model_id
    async with vnet.other_kernel(engine) as kernel:
        yield kernel


def steer_one_near_tie(exact: Any, steered: list[tuple[int, int]]) -> Any:
    """A trace edit for `VNet.run_batch`: in the first greedy call with a near-tied greedy token
    (0.05-0.35 nat above the runner-up), swap that token for the runner-up, claim the runner-up's
    own logprob and cut the call there; records (task, position) in ``steered``."""
    from supernet.validator.trace_view import parse_trace
    from supernet.validator.verifier import score_calls

    def steer(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        if steered:
            return trace
        call = parse_trace(trace).llm_calls[0]  # the greedy call
        scores = score_calls(exact, [call])[0]
        for j, top in enumerate(scores.top_tokens):
            (best, lp1), (runner, lp2) = top[0], top[1]
            if best == call.output_ids[j] and 0.05 < lp1 - lp2 < 0.35 and best not in exact.eos_ids:
                steered.append((i, j))
                e = dict(trace["events"][call.call])
                e["output_ids"] = [*e["output_ids"][:j], runner]  # cut after it: later tokens stay honest
                e["logprobs"] = [*e["logprobs"][:j], lp2]
                e["fingerprints"] = [f for f in e["fingerprints"] if f["index"] <= j]
                e["finish_reason"] = "length"
                e["params"] = {**e["params"], "max_new_tokens": j + 1}
                events = list(trace["events"])
                events[call.call] = e
                return {**trace, "events": events}
        return trace

    return steer


def token_findings(verdicts: list[Any]) -> list[tuple[int, int | None]]:
    """(receipt, position) of every greedy-token finding."""
    return [(v.index, f.position) for v in verdicts for f in v.findings if f.check.value == "llm.token"]


async def verdicts(
    vnet: VNet, batch_id: int, receipts: list[Any], tolerance: Tolerance | None, scorer: Any = None
) -> list[Any]:
    """Verdicts of a validator scoring with ``scorer`` (default: the fixture's float32 model)."""
    from supernet.validator.scoring import ModelScorer

    manifest = await load_manifest(
        vnet.store, vnet.manifests[batch_id], ReceiptTree(receipts).root, len(receipts)
    )
    scorer = scorer or ModelScorer.from_loaded(vnet.loaded)  # fp32, as a CPU validator ran
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


@pytest.fixture(scope="module")
def bf16_screen() -> Any:
    """A bfloat16 scorer of the same weights: the screen of a validator on a bf16-capable CPU."""
    from supernet.validator.scoring import ModelScorer

    return ModelScorer.load("smollm2-135m", dtype="bfloat16")


class OneFormat:
    """A scorer that offers no other format: a verifier then decides with it alone (without this
    a bf16 scorer would load the node's own format to decide, `ModelScorer.for_compute`)."""

    def __init__(self, scorer: Any) -> None:
        self._scorer = scorer

    def __getattr__(self, name: str) -> Any:
        if name == "for_compute":
            raise AttributeError(name)
        return getattr(self._scorer, name)


async def screened(
    vnet: VNet, batch_id: int, receipts: list[Any], screen: Any, arbiter: bool, **extra: Any
) -> list[Any]:
    """Verdicts of a validator scoring with ``screen``, with the float32 arbiter or, without it,
    with the screen's own bf16 verdicts (``extra``: more `Verifier` arguments)."""
    from supernet.validator.scoring import ModelScorer

    manifest = await load_manifest(
        vnet.store, vnet.manifests[batch_id], ReceiptTree(receipts).root, len(receipts)
    )
    verifier = Verifier(
        vnet.store,
        screen if arbiter else OneFormat(screen),
        RegistryRunner(vnet.store),
        vnet.contracts.domain,
        "0xv",
        agents=probe_registry(),
        arbiter=ModelScorer.from_loaded(vnet.loaded) if arbiter else None,
        **extra,
    )
    return await verifier.verify_many(batch_id, vnet.node.address, range(len(receipts)), manifest)


async def test_an_honest_fp32_node_passes_a_bf16_screen_with_its_arbiter(
    vnet: VNet, bf16_screen: Any
) -> None:
    vnet.faults()
    batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32)
    found = await screened(vnet, batch_id, receipts, bf16_screen, arbiter=True)
    assert all(v.ok for v in found), [sorted(v.checks) for v in found]
    assert sum(v.llm_calls for v in found) == 2 * len(QUESTIONS)


async def test_a_steered_greedy_token_inside_the_bf16_bounds_is_caught_by_the_arbiter(
    vnet: VNet, bf16_screen: Any
) -> None:
    """A rational cheat the bf16 pair's bounds cannot see: the node swaps a greedy token for the
    runner-up where the two are within a few tenths of a nat (and claims the runner-up's own
    logprob). A bf16 validator alone accepts that token (its greedy bound must absorb bf16 near-tie
    flips, 0.6); with the float32 arbiter deciding what the screen doubts, it is a token finding."""
    from supernet.validator.scoring import ModelScorer

    vnet.faults()
    steered: list[tuple[int, int]] = []  # (task, position) of the one steered token
    steer = steer_one_near_tie(ModelScorer.from_loaded(vnet.loaded), steered)
    batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32, edit_trace=steer)
    assert steered, "no near-tied greedy token in these answers: the test needs other questions"
    task, j = steered[0]

    alone = token_findings(await screened(vnet, batch_id, receipts, bf16_screen, arbiter=False))
    decided = token_findings(await screened(vnet, batch_id, receipts, bf16_screen, arbiter=True))
    assert alone == [], "the bf16 bounds alone were expected to let the steered token through"
    assert decided == [(task, j)]


async def test_a_node_cannot_claim_a_looser_precision_than_the_id_the_user_signed(vnet: VNet) -> None:
    """The float32 node steers a near-tied greedy token and writes ``bfloat16`` as its engine dtype,
    hoping for the bf16 pair's 0.6-nat greedy bound. The precision is read from the signed model id
    (`supernet.sdk.models`), so the validator holds it to float32's bound and also reports the
    false dtype claim."""
    from supernet.validator.scoring import ModelScorer

    vnet.faults()
    steered: list[tuple[int, int]] = []
    steer = steer_one_near_tie(ModelScorer.from_loaded(vnet.loaded), steered)

    def steer_and_claim_bf16(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        return {**steer(i, trace), "engine": {"device": "cpu", "dtype": "bfloat16"}}

    batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=32, edit_trace=steer_and_claim_bf16)
    assert steered, "no near-tied greedy token in these answers: the test needs other questions"
    found = await verdicts(vnet, batch_id, receipts, None)
    assert token_findings(found) == steered
    for v in found:
        claims = [f for f in v.findings if f.check.value == "trace" and f.claimed == "bfloat16"]
        assert claims and claims[0].expected == "float32", [f.message for f in v.findings]
