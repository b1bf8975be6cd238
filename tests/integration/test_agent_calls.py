"""Agent-to-agent calls on real parts: a parent agent runs the shipped ``chat`` agent (and others)
as a child task on the same kernel (SmolLM2 engine, all-MiniLM memory, embedded store).

The child's events are inline in the parent's trace between ``agent.call`` and ``agent.return``;
its LLM calls are charged to the parent's budgets (a parent whose budget is spent cannot call);
calls nest at most `MAX_AGENT_CALL_DEPTH` deep and never in a cycle; the child runs in its own
namespace under no more than the parent's tools. The validator's replay re-runs the child too: an
honest trace replays clean, and a fabricated child output, a dropped child LLM call or another
child agent each diverge at that syscall; the child's LLM calls are visible to the scorer.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.react import ReactAgent
from supernet.node.agents.registry import AgentRegistry
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.errors import BudgetExceededError, KernelError
from supernet.node.kernel.kernel import KernelConfig
from supernet.node.kernel.replay import ReplayResult, ReplayUnavailable, replay
from supernet.node.kernel.syscalls import MAX_AGENT_CALL_DEPTH, TaskSpec
from supernet.node.kernel.trace import MAX_TRACE_EVENTS
from supernet.sdk.formats.trace import Trace
from supernet.validator.replay_check import check_replay
from supernet.validator.trace_view import parse_trace

from tests.integration.test_kernel_agents import ALICE, registry

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


class DelegateAgent(Agent):
    """Test parent: optionally one LLM call of its own, then an agent call, then a summary call."""

    agent_id = "delegate"

    calls_agents = "*"  # the agent its input names

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if input.get("first_llm"):
            await ctx.llm.chat([{"role": "user", "content": "Say yes."}], max_new_tokens=2)
        try:
            answer = await ctx.agents.call(input.get("agent", "chat"), input["child_input"])
        except KernelError as exc:
            return f"refused: {type(exc).__name__}: {exc}"
        if not input.get("summarize"):
            return answer
        reply = await ctx.llm.chat(
            [{"role": "user", "content": f"In three words: {answer}"}], max_new_tokens=6
        )
        return json.dumps({"child": answer, "summary": reply.text})


class RelayAgent(Agent):
    """Test agent: calls the first agent of ``path`` with the rest of it (``chat`` at the end)."""

    agent_id = "relay-a"

    calls_agents = "*"  # the next agent of its path

    async def run(self, ctx: AgentContext, input: Any) -> str:
        path = input["path"]
        if not path:
            return "end"
        nxt = path[0]
        try:
            out = await ctx.agents.call(nxt, {"path": path[1:]} if nxt != "chat" else "Say hi.")
        except KernelError as exc:
            return f"{self.agent_id}!{type(exc).__name__}: {exc}"
        return f"{self.agent_id}>{out}"


class RelayB(RelayAgent):
    agent_id = "relay-b"


class RelayC(RelayAgent):
    agent_id = "relay-c"


class FillAgent(Agent):
    """Test child: calculator calls until the kernel refuses one (the trace is full)."""

    agent_id = "fill"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        n = 0
        while True:
            try:
                await ctx.tools.call("calculator", {"expression": "1 + 1"})
            except BudgetExceededError as exc:
                return f"{n} {exc}"
            n += 1


def call_registry() -> AgentRegistry:
    reg = registry()
    for cls in (DelegateAgent, RelayAgent, RelayB, RelayC, FillAgent):
        reg.register(cls)
    return reg


CHAT_INPUT = {"messages": [{"role": "user", "content": "Name a colour."}], "max_new_tokens": 8}


async def record(kernel: Any, store: Any, spec: TaskSpec) -> dict[str, Any]:
    outcome = await kernel.run_task(spec)
    doc: dict[str, Any] = await store.get_dag(outcome.trace_cid)
    assert Trace.from_dag(doc).to_dag() == doc  # the node writes exactly the one format
    return doc


async def replayed(doc: dict[str, Any], agent: type[Agent], kernel: Any) -> ReplayResult:
    return await replay(doc, agent, kernel.engine.tokenizer, agents=call_registry())


def kinds(doc: dict[str, Any]) -> list[str]:
    return [e["kind"] for e in doc["events"]]


def divergence_at(result: ReplayResult) -> list[int | None]:
    return [d.index for d in result.divergences]


@pytest.fixture()
async def delegate_trace(make_kernel: Any, store_client: Any) -> tuple[Any, dict[str, Any], Any]:
    kernel = await make_kernel(agents=call_registry())
    spec = TaskSpec(
        "0x" + "a7" * 32, "delegate", {"child_input": CHAT_INPUT, "summarize": True}, user=ALICE, fee=5
    )
    outcome = await kernel.run_task(spec)
    doc: dict[str, Any] = await store_client.get_dag(outcome.trace_cid)
    return kernel, doc, outcome


async def test_parent_runs_chat_as_a_child_traced_and_charged(delegate_trace: Any) -> None:
    kernel, doc, outcome = delegate_trace
    assert doc["status"] == "ok", doc["error"]
    assert kinds(doc) == ["agent.call", "llm", "agent.return", "llm"]
    call, child_llm, ret, own_llm = doc["events"]
    chat_hash = kernel.agents.get("chat").code_hash
    assert call["agent"] == {"id": "chat", "code_hash": chat_hash} and call["depth"] == 1
    assert call["input"] == CHAT_INPUT and call["memory"] and call["storage"]
    assert call["tools"] == sorted(t["name"] for t in doc["tools"])  # the parent's tools, no more
    assert child_llm["messages"] == CHAT_INPUT["messages"] and child_llm["index"] == 0
    assert ret == {
        "kind": "agent.return",
        "agent": "chat",
        "output": child_llm["text"],
        "status": "ok",
        "error": None,
    }
    assert own_llm["index"] == 1  # one counter for the task: the child's call is the parent's call 0
    assert json.loads(doc["output"])["child"] == child_llm["text"]
    # cost in the parent task: one task, one fee, the child's tokens counted in it
    assert doc["agent"]["id"] == "delegate" and doc["fee"] == 5
    assert outcome.llm_tokens == len(child_llm["output_ids"]) + len(own_llm["output_ids"])
    # the child's LLM calls are visible to the validator's scorer like the parent's
    assert [c.call for c in parse_trace(doc).llm_calls] == [1, 3]
    audit = kernel.audit_log("0x" + "a7" * 32)
    assert any(e.action == "agent.call" and e.target == "chat" and e.allowed for e in audit)


async def test_honest_agent_call_replays_clean(delegate_trace: Any) -> None:
    kernel, doc, _ = delegate_trace
    result = await replayed(doc, DelegateAgent, kernel)
    assert result.divergences == [], [(d.index, d.message) for d in result.divergences]
    assert result.output == doc["output"] and len(result.events) == len(doc["events"])
    outcome = await check_replay(Trace.from_dag(doc), call_registry(), kernel.engine.tokenizer)
    assert outcome.findings == () and outcome.unverifiable is None


async def test_cheats_on_the_child_diverge_at_that_syscall(delegate_trace: Any) -> None:
    kernel, honest, _ = delegate_trace

    def edited(change: Any) -> dict[str, Any]:
        doc = copy.deepcopy(honest)
        change(doc["events"])
        return doc

    def fabricated_output(events: list[dict[str, Any]]) -> None:  # the parent got a made-up answer
        events[2]["output"] = "Purple, obviously."

    def dropped_child_llm(events: list[dict[str, Any]]) -> None:  # the child's model work skipped
        del events[1]

    def wrong_child(events: list[dict[str, Any]]) -> None:  # another agent ran as the child
        events[0]["agent"] = {"id": "react", "code_hash": ReactAgent.code_hash()}

    def wider_caps(events: list[dict[str, Any]]) -> None:  # a tool the parent's request lacks
        events[0]["tools"] = [*events[0]["tools"], "no_such_tool"]

    def other_chat_version(events: list[dict[str, Any]]) -> None:  # a built-in is the protocol's code
        events[0]["agent"]["code_hash"] = "0x" + "ee" * 32

    cases = (
        (fabricated_output, 2),
        (dropped_child_llm, 1),
        (wrong_child, 0),
        (wider_caps, 0),
        (other_chat_version, 0),
    )
    for change, index in cases:
        result = await replayed(edited(change), DelegateAgent, kernel)
        assert divergence_at(result) == [index], (change.__name__, [d.message for d in result.divergences])
    # a validator without the child agent installed cannot replay it: unverifiable, not accused
    bare = AgentRegistry()
    bare.register(DelegateAgent)
    with pytest.raises(ReplayUnavailable):
        await replay(honest, DelegateAgent, kernel.engine.tokenizer, agents=bare)
    outcome = await check_replay(Trace.from_dag(honest), bare, kernel.engine.tokenizer)
    assert outcome.findings == () and outcome.unverifiable and "chat" in outcome.unverifiable


async def test_budget_is_shared_and_a_spent_parent_cannot_call(make_kernel: Any, store_client: Any) -> None:
    kernel = await make_kernel(KernelConfig(node_policy=NodePolicy(max_llm_calls=1)), agents=call_registry())
    spent = await record(
        kernel,
        store_client,
        TaskSpec("0x" + "b1" * 32, "delegate", {"first_llm": True, "child_input": CHAT_INPUT}, user=ALICE),
    )
    assert kinds(spent) == ["llm", "error"]
    assert spent["events"][1]["syscall"] == "agent.call"
    assert spent["output"].startswith("refused: BudgetExceededError")
    # the child spends the parent's one LLM call: the parent's own call after it is refused
    shared = await record(
        kernel,
        store_client,
        TaskSpec("0x" + "b2" * 32, "delegate", {"child_input": CHAT_INPUT, "summarize": True}, user=ALICE),
    )
    assert kinds(shared) == ["agent.call", "llm", "agent.return", "error"]
    assert shared["status"] == "error" and shared["error"].startswith("BudgetExceededError")
    # a child whose own call is refused fails, and the parent sees AgentCallError
    starved = await record(
        kernel,
        store_client,
        TaskSpec("0x" + "b3" * 32, "relay-a", {"path": ["chat"]}, user=ALICE),
    )
    assert kinds(starved) == ["agent.call", "llm", "agent.return"]
    for doc, agent in ((spent, DelegateAgent), (shared, DelegateAgent), (starved, RelayAgent)):
        result = await replayed(doc, agent, kernel)
        assert result.divergences == [], [(d.index, d.message) for d in result.divergences]
    forged = copy.deepcopy(spent)  # a refusal the limits do not give: the replay itself refuses
    forged["events"][0] = {"kind": "error", "syscall": "llm", "error": "BudgetExceededError: x", "call": {}}
    assert 0 in divergence_at(await replayed(forged, DelegateAgent, kernel))


async def test_depth_and_cycles_are_refused(make_kernel: Any, store_client: Any) -> None:
    kernel = await make_kernel(agents=call_registry())
    deep = await record(
        kernel,
        store_client,
        TaskSpec("0x" + "c1" * 32, "relay-a", {"path": ["relay-b", "relay-c", "chat"]}, user=ALICE),
    )
    assert MAX_AGENT_CALL_DEPTH == 2
    assert kinds(deep) == ["agent.call", "agent.call", "error", "agent.return", "agent.return"]
    assert [e.get("depth") for e in deep["events"][:2]] == [1, 2]
    assert deep["events"][2]["syscall"] == "agent.call"
    assert deep["output"].startswith("relay-a>relay-b>relay-c!AccessDeniedError") and "deep" in deep["output"]

    cycle = await record(
        kernel,
        store_client,
        TaskSpec("0x" + "c2" * 32, "relay-a", {"path": ["relay-b", "relay-a"]}, user=ALICE),
    )
    assert kinds(cycle) == ["agent.call", "error", "agent.return"]
    assert "relay-a -> relay-b -> relay-a" in cycle["output"]
    selfcall = await record(
        kernel, store_client, TaskSpec("0x" + "c3" * 32, "relay-a", {"path": ["relay-a"]}, user=ALICE)
    )
    assert kinds(selfcall) == ["error"] and "cycle" in selfcall["output"]
    unknown = await record(
        kernel, store_client, TaskSpec("0x" + "c4" * 32, "relay-a", {"path": ["nobody"]}, user=ALICE)
    )
    assert kinds(unknown) == ["error"] and "AgentNotAllowedError" in unknown["output"]
    for doc in (deep, cycle, selfcall, unknown):
        result = await replayed(doc, RelayAgent, kernel)
        assert result.divergences == [], [(d.index, d.message) for d in result.divergences]


async def test_child_runs_in_its_own_namespace_under_the_parents_tools(
    make_kernel: Any, store_client: Any
) -> None:
    kernel = await make_kernel(agents=call_registry())
    spec = TaskSpec(
        "0x" + "d1" * 32,
        "delegate",
        {"agent": "notes", "child_input": {"op": "remember", "text": "The parcel is blue."}},
        user=ALICE,
        tools=frozenset({"calculator"}),
    )
    doc = await record(kernel, store_client, spec)
    assert kinds(doc) == ["agent.call", "memory.add", "agent.return"]
    assert doc["events"][0]["tools"] == ["calculator"]
    assert doc["events"][1]["namespace"] == f"{ALICE.lower()}/notes"  # the child's memory, not the parent's
    assert (await replayed(doc, DelegateAgent, kernel)).divergences == []
    # the child's tools are the parent's: "text" is refused to it, and its failure reaches the parent
    failing = await record(
        kernel,
        store_client,
        TaskSpec(
            "0x" + "d2" * 32,
            "delegate",
            {"agent": "tools", "child_input": "go"},
            user=ALICE,
            tools=frozenset({"calculator"}),
        ),
    )
    assert kinds(failing) == ["agent.call", "tool", "error", "tool", "agent.return"]
    assert failing["events"][2]["error"].startswith("AccessDeniedError")
    assert failing["events"][-1]["status"] == "error"
    assert failing["output"].startswith("refused: AgentCallError: agent tools failed: ToolError")
    result = await replayed(failing, DelegateAgent, kernel)
    assert result.divergences == [], [(d.index, d.message) for d in result.divergences]


async def test_a_child_that_fills_the_trace_still_returns(make_kernel: Any, store_client: Any) -> None:
    policy = NodePolicy(max_tool_calls=4 * MAX_TRACE_EVENTS)
    kernel = await make_kernel(KernelConfig(node_policy=policy), agents=call_registry())
    spec = TaskSpec("0x" + "e1" * 32, "relay-a", {"path": ["relay-b", "fill"]}, user=ALICE)
    doc = await record(kernel, store_client, spec)
    assert doc["status"] == "ok", doc["error"]
    assert len(doc["events"]) == MAX_TRACE_EVENTS  # each open call kept a slot for its agent.return
    assert kinds(doc)[:2] == ["agent.call", "agent.call"] and kinds(doc)[-2:] == ["agent.return"] * 2
    assert doc["output"].startswith(f"relay-a>relay-b>{MAX_TRACE_EVENTS - 4} ")
    result = await replayed(doc, RelayAgent, kernel)
    assert result.divergences == [], [(d.index, d.message) for d in result.divergences]
