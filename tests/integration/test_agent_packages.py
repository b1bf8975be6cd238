"""The example agent package (examples/agents/supernet-example-agent, installed by ``make setup``)
on real parts: the node's loader finds it through the ``supernet.agents`` entry point, pins it by
code hash, the real kernel runs it (a calculator call and an LLM call on SmolLM2), and the
validator's replay check re-runs it against the trace with no finding. A request pinning another
code hash (the package changed after the user signed) is refused by the kernel, and a trace of
another code hash is unverifiable to the validator, never replayed with the wrong code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from supernet.node.agents.packages import AllowedAgent, installed_entry_points
from supernet.node.agents.registry import default_registry
from supernet.node.kernel.errors import AgentNotAllowedError
from supernet.node.kernel.replay import replay
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.formats.trace import AgentRef, Trace
from supernet.validator.replay_check import check_replay

from tests.integration.test_kernel_agents import ALICE

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def pin() -> AllowedAgent:
    """What the operator puts in ``[agents] allow`` (``python -m supernet.node.agents.packages``)."""
    eps = [ep for ep in installed_entry_points() if ep.name == "calc-explain"]
    assert eps, "examples/agents/supernet-example-agent is not installed (make setup installs it)"
    return AllowedAgent(id="calc-explain", code_hash=eps[0].load().code_hash())


async def test_the_example_package_runs_on_the_kernel_and_replays(
    make_kernel: Any, store_client: Any, pin: AllowedAgent
) -> None:
    node_agents = default_registry(allowed=["chat"], packages=[pin])
    kernel = await make_kernel(agents=node_agents)
    validator_agents = default_registry(packages=None)  # a validator: every installed agent
    assert validator_agents.get("calc-explain").code_hash == pin.code_hash
    cases = [
        ("0x" + "a7" * 32, "(17 + 3) * 4", "(17 + 3) * 4 = 80. ", ["tool", "llm"]),
        # a failing calculator call: the agent answers with the error, no LLM call
        ("0x" + "a8" * 32, {"expression": "1 / 0", "max_new_tokens": 8}, "1 / 0: ", ["tool"]),
    ]
    for task_id, task_input, prefix, kinds in cases:
        signed = kernel.profile("calc-explain").hash()  # the pinned code, under this node's limits
        spec = TaskSpec(task_id, "calc-explain", task_input, user=ALICE, fee=1, agent_hash=signed)
        outcome = await kernel.run_task(spec)
        assert outcome.status == "ok", outcome.error
        assert outcome.output.startswith(prefix), outcome.output
        doc: dict[str, Any] = await store_client.get_dag(outcome.trace_cid)
        assert [e["kind"] for e in doc["events"]] == kinds
        assert doc["agent"]["id"] == "calc-explain" and doc["agent"]["code_hash"] == pin.code_hash
        # The node's replay, and the validator's check on the same installed package.
        result = await replay(doc, node_agents.get("calc-explain").cls, kernel.engine.tokenizer)
        assert result.divergences == [] and result.output == doc["output"]
        checked = await check_replay(Trace.from_dag(doc), validator_agents, kernel.engine.tokenizer)
        assert checked.unverifiable is None and checked.findings == (), checked
        if kinds[-1] == "llm":
            cheat = {**doc, "output": "(17 + 3) * 4 = 81. Trust me."}
            caught = await check_replay(Trace.from_dag(cheat), validator_agents, kernel.engine.tokenizer)
            assert caught.findings, "a made-up answer must be a replay finding"
            honest_trace = doc

    # The user signed another version of the package: the node refuses the task, and a validator
    # with this version installed calls such a trace unverifiable instead of replaying other code.
    signed_earlier = "0x" + "5e" * 32
    earlier_profile = dataclasses.replace(
        kernel.profile("calc-explain"), agent=AgentRef("calc-explain", signed_earlier)
    ).hash()
    with pytest.raises(AgentNotAllowedError, match="not the signed"):
        await kernel.run_task(
            TaskSpec("0x" + "a9" * 32, "calc-explain", "2 + 2", user=ALICE, agent_hash=earlier_profile)
        )
    other = {**honest_trace, "agent": {**honest_trace["agent"], "code_hash": signed_earlier}}
    checked = await check_replay(Trace.from_dag(other), validator_agents, kernel.engine.tokenizer)
    assert checked.unverifiable is not None and "code hash" in checked.unverifiable
