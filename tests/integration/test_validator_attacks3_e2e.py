"""The third adversarial review's attack that needs the real model (SmolLM2, the node's kernel,
the whole `Verifier` with a float32 `ModelScorer`), closed since.

A node chose the trace's ``limits`` (its operator policy, recorded in the trace and re-applied by
the replay) per task, and nothing bound them to the signed request: the node ran one task under
``max_new_tokens = 1``, every LLM call stopped after one token with an honest ``length`` finish
(the replay re-derives exactly that budget from the recorded limits), and the receipt verified
clean at a fraction of the model work. The signed ``agentHash`` is now the hash of the agent's
profile (code, limits, tools), which a validator recomputes from the trace.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.chat import ChatAgent
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.kernel import KernelConfig

from tests.integration.test_user_framing_attacks import honest_verdict, registry

pytestmark = [pytest.mark.model, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def scorer(smollm2_dir: Path) -> Any:
    """A validator's float32 scorer (its own load of the model)."""
    from supernet.validator.scoring import ModelScorer

    return ModelScorer.load(str(smollm2_dir), dtype="float32", device="cpu")


def clean(verdict: Any) -> bool:
    return verdict.ok and verdict.findings == () and verdict.unverifiable is None


async def test_self_chosen_max_new_tokens_is_caught(make_kernel: Any, store_client: Any, scorer: Any) -> None:
    question = "Name the three primary colours of paint, in one sentence."
    honest_kernel = await make_kernel(agents=registry())
    signed = honest_kernel.profile(ChatAgent.agent_id).hash()  # what the node lists, and the user signs
    honest_trace, honest = await honest_verdict(honest_kernel, store_client, scorer, ChatAgent, question)
    assert clean(honest), honest.findings  # control: the signed profile's answer
    await honest_kernel.stop()

    starved_kernel = await make_kernel(
        KernelConfig(node_policy=NodePolicy(max_new_tokens=1)), agents=registry()
    )
    trace, verdict = await honest_verdict(starved_kernel, store_client, scorer, ChatAgent, question, signed)
    llm = [e for e in trace["events"] if e["kind"] == "llm"]
    assert trace["limits"]["max_new_tokens"] == 1
    assert all(len(e["output_ids"]) == 1 and e["finish_reason"] == "length" for e in llm)
    assert verdict.llm_calls == len(llm) >= 1  # the calls themselves replay and score clean ...
    assert not verdict.ok and verdict.unverifiable is None  # ... but they ran under another profile
    assert [f.message for f in verdict.findings] == [
        "trace agent profile hash does not match the receipt / signed request"
    ], verdict.findings
    honest_llm = [e for e in honest_trace["events"] if e["kind"] == "llm"]
    assert sum(len(e["output_ids"]) for e in honest_llm) > 5 * sum(len(e["output_ids"]) for e in llm)
