"""Structured output under verification: constrained LLM calls on the real model, node kernel and
validator (fixtures in tests/validator_fixtures.py; the probe agent's two LLM calls, one greedy and
one sampled, both carry the task's ``response_format``).

An honest constrained call is never flagged (the validator re-applies the grammar's mask when it
re-derives the tokens); a node that ignores the mask, or a trace edited to a token outside the
grammar with logprobs and fingerprints made consistent, is caught at that token.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import pytest
import pytest_asyncio
from supernet.node.llm.scoring import Tolerance
from supernet.validator.evidence import Check
from supernet.validator.grammar_check import check_grammar
from supernet.validator.llm_check import check_scores
from supernet.validator.scoring import ModelScorer
from supernet.validator.trace_view import parse_trace
from supernet.validator.verifier import score_calls
from validator_fixtures import VNet

pytestmark = [pytest.mark.anvil, pytest.mark.model, pytest.mark.slow]

SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 24},
        "confidence": {"type": "integer", "minimum": 0, "maximum": 10},
    },
    "required": ["answer", "confidence"],
    "additionalProperties": False,
}
FORMAT = {"type": "json_schema", "json_schema": {"name": "reply", "schema": SCHEMA}}
QUESTIONS = ["Name a fruit.", "What is the capital of Italy?"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def honest(vnet: VNet) -> AsyncIterator[tuple[int, list[dict[str, Any]]]]:
    """One honest batch of constrained tasks: (batch id, their traces)."""
    traces: list[dict[str, Any]] = []

    def keep(i: int, trace: dict[str, Any]) -> dict[str, Any]:
        traces.append(trace)
        return trace

    vnet.faults()
    batch_id, _ = await vnet.run_batch(QUESTIONS, max_new_tokens=48, response_format=FORMAT, edit_trace=keep)
    yield batch_id, traces


async def test_constrained_calls_obey_the_schema_and_record_the_grammar(
    honest: tuple[int, list[dict[str, Any]]],
) -> None:
    _, traces = honest
    for doc in traces:
        calls = parse_trace(doc).llm_calls
        assert len(calls) == 2 and all(c.grammar for c in calls)
        for call in calls:
            assert call.finish_reason == "stop"
            jsonschema.validate(json.loads(call.text or ""), SCHEMA)


async def test_honest_constrained_batch_is_not_flagged(vnet: VNet, validator_factory: Any) -> None:
    vnet.faults()  # a batch of this test: the validator follows the chain from the test's start
    batch_id, receipts = await vnet.run_batch(QUESTIONS, max_new_tokens=48, response_format=FORMAT)
    async with validator_factory(0, challenge=False) as v:
        await v.step()
        checks = v.db.checks(batch_id)
    assert len(checks) == len(receipts) and all(c.ok for c in checks), [c.kinds for c in checks]


async def test_the_mask_is_needed_and_applied(vnet: VNet, honest: tuple[int, list[dict[str, Any]]]) -> None:
    """Without the grammar's mask the honest greedy call would look like a wrong token; with it,
    every margin is zero."""
    scorer = ModelScorer.from_loaded(vnet.loaded)
    greedy = parse_trace(honest[1][0]).llm_calls[0]
    assert greedy.temperature == 0.0
    [masked] = score_calls(scorer, [greedy])
    assert masked.margins is not None and max(masked.margins) == 0.0
    [free] = score_calls(scorer, [dataclasses.replace(greedy, grammar=None)])
    assert free.margins is not None and max(free.margins) > Tolerance().selection_margin


async def test_out_of_grammar_token_with_consistent_logprobs_is_caught(
    vnet: VNet, honest: tuple[int, list[dict[str, Any]]]
) -> None:
    """The greedy call's first token replaced by the model's own unconstrained choice, logprobs and
    fingerprints re-scored so the model checks pass: only the grammar can tell, and it does."""
    scorer = ModelScorer.from_loaded(vnet.loaded)
    honest_call = parse_trace(honest[1][0]).llm_calls[0]
    [free] = score_calls(scorer, [dataclasses.replace(honest_call, grammar=None)])
    free_first = free.top_tokens[0][0][0]  # what the model says first without the grammar
    assert free_first != honest_call.output_ids[0]
    edited = dataclasses.replace(honest_call, output_ids=(free_first, *honest_call.output_ids[1:]))
    [rescored] = score_calls(scorer, [dataclasses.replace(edited, grammar=None)])
    edited = dataclasses.replace(edited, logprobs=rescored.logprobs, fingerprints=None)
    found = check_grammar(edited, scorer.tokenizer, scorer.vocab_size, scorer.eos_ids)
    assert [(f.check, f.position, f.claimed) for f in found] == [(Check.LLM_TOKEN, 0, free_first)]
    # the model checks alone (no grammar) accept that first token: it is the model's own argmax
    unconstrained = dataclasses.replace(edited, grammar=None)
    model_only = check_scores(unconstrained, score_calls(scorer, [unconstrained])[0], Tolerance())
    assert not [f for f in model_only if f.position == 0 and f.check != Check.LLM_MODEL]


async def test_node_ignoring_the_mask_is_caught(vnet: VNet, validator_factory: Any) -> None:
    """A node whose engine drops the grammar (records it, generates freely): everything else in its
    receipts is consistent, and the grammar walk flags the first free token."""
    from supernet.node.llm import LLMEngine

    class MaskIgnoringEngine(LLMEngine):
        def submit(
            self, prompt_ids: Any, params: Any = None, request_id: Any = None, resume: Any = None
        ) -> Any:
            if params is not None:
                params = dataclasses.replace(params, grammar=None)
            return super().submit(prompt_ids, params, request_id, resume)

    loaded = vnet.loaded
    engine = MaskIgnoringEngine(
        loaded.model, loaded.tokenizer, loaded.model_id, max_batch=4, max_seq_len=1024
    )
    async with vnet.other_kernel(engine) as kernel:
        batch_id, _ = await vnet.run_batch(
            QUESTIONS[:1], max_new_tokens=24, response_format=FORMAT, kernel=kernel
        )
    async with validator_factory(1, challenge=False) as v:
        await v.step()
        [check] = v.db.checks(batch_id)
    assert not check.ok and "llm.token" in check.kinds.split(","), check.kinds
    doc = await vnet.store.get_dag(check.evidence_cid)
    assert any("grammar" in f["message"] for f in doc["findings"]), doc["findings"]
