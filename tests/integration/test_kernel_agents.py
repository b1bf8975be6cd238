"""The kernel on real parts: SmolLM2 engine, all-MiniLM memory, embedded content store.

Agents run and their calls share the engine's batch; every call lands in a trace that is
re-readable by CID; a preempted generation resumes to exactly the tokens of an uninterrupted
one; agents never see each other's memory or files; errors reach the agent, nothing hangs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.chat import ChatAgent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.react import ReactAgent
from supernet.node.agents.registry import AgentRegistry
from supernet.node.agents.retrieval import RetrievalAgent
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.errors import AccessDeniedError
from supernet.node.kernel.kernel import KernelConfig
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.trace import to_json
from supernet.sdk.chain.receipts import trace_hash

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]

ALICE = "0x" + "a1" * 20
BOB = "0x" + "b0" * 20


class NotesAgent(Agent):
    """Test agent: memory and file operations chosen by the input."""

    agent_id = "notes"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        op = input["op"]
        if op == "remember":
            return await ctx.memory.add(input["text"])
        if op == "recall":
            return json.dumps([h.text for h in await ctx.memory.search(input["query"], k=3)])
        if op == "write":
            return await ctx.storage.put(input["path"], input["text"])
        if op == "read":
            return (await ctx.storage.get(input["path"], input.get("version"))).decode()
        raise ValueError(op)


class SpyAgent(NotesAgent):
    """The same code under another id: it must not see the notes agent's memory or files."""

    agent_id = "spy"


class ToolsAgent(Agent):
    """Test agent: one allowed tool call, one refused, one failing."""

    agent_id = "tools"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        product = await ctx.tools.call("calculator", {"expression": "17 * 23"})
        try:
            await ctx.tools.call("text", {"text": "x", "op": "upper"})
            refused = False
        except AccessDeniedError:
            refused = True
        await ctx.tools.call("calculator", {"expression": "1 / 0"})  # raises into run: the task fails
        return f"{product} {refused}"


class LongPromptAgent(Agent):
    """Test agent: a prompt longer than the engine's context."""

    agent_id = "long"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return (await ctx.llm.chat([{"role": "user", "content": "word " * 5000}], max_new_tokens=4)).text


def registry() -> AgentRegistry:
    reg = AgentRegistry()
    for cls in (ChatAgent, ReactAgent, RetrievalAgent, NotesAgent, SpyAgent, ToolsAgent, LongPromptAgent):
        reg.register(cls)
    return reg


def chat(task_id: str, text: str, n: int = 16, user: str = ALICE) -> TaskSpec:
    msgs = [{"role": "user", "content": text}]
    return TaskSpec(task_id, "chat", {"messages": msgs, "max_new_tokens": n}, user=user, fee=1)


async def test_chat_agents_share_the_batch_and_traces_read_back(make_kernel: Any, store_client: Any) -> None:
    kernel = await make_kernel(KernelConfig(policy="fair"), agents=registry())
    steps_before = kernel.engine.steps
    questions = ["What is the capital of France?", "Name three colors.", "What is 2 + 2?", "Say hello."]
    outcomes = await asyncio.gather(*(kernel.run_task(chat(f"c{i}", q)) for i, q in enumerate(questions)))
    assert [o.status for o in outcomes] == ["ok"] * 4, [o.error for o in outcomes]
    assert "Paris" in outcomes[0].output
    total_tokens = sum(o.llm_tokens for o in outcomes)
    assert kernel.engine.steps - steps_before < total_tokens  # decoded together, not one after another
    for o in outcomes:
        assert to_json(await store_client.get_dag(o.trace_cid)) == to_json(o.trace)
        assert o.trace_hash == "0x" + trace_hash(o.trace_cid).hex()
        [event] = o.trace["events"]
        assert event["kind"] == "llm" and event["model_id"] == kernel.model_id
        assert event["text"] == o.output and len(event["output_ids"]) == o.llm_tokens
        assert kernel.engine.tokenizer.decode(event["output_ids"], skip_special_tokens=True) == o.output
        assert o.trace["agent"]["code_hash"] == ChatAgent.code_hash()
    # The validator's check: a teacher-forced pass reproduces the recorded logprobs.
    event = outcomes[0].trace["events"][0]
    score = kernel.engine.score(event["prompt_ids"], event["output_ids"])
    assert score.logprobs == pytest.approx(event["logprobs"], abs=1e-3)


async def test_preempted_generations_resume_to_the_same_tokens(make_kernel: Any) -> None:
    prompts = ["Write a story about a robot.", "Explain how rain forms.", "List ten fruits."]
    plain = await make_kernel(KernelConfig(policy="fifo", max_active=1))
    alone = [await plain.run_task(chat(f"p{i}", p, n=20)) for i, p in enumerate(prompts)]
    await plain.stop()

    sliced = await make_kernel(KernelConfig(policy="rr", max_active=1, time_slice_tokens=3))
    together = await asyncio.gather(*(sliced.run_task(chat(f"p{i}", p, n=20)) for i, p in enumerate(prompts)))
    preemptions = [o.trace["events"][0]["preemptions"] for o in together]
    assert sum(preemptions) >= 3, preemptions
    assert sliced.scheduler.context.stats().restored >= 3
    for a, b in zip(alone, together, strict=True):
        assert b.trace["events"][0]["output_ids"] == a.trace["events"][0]["output_ids"]
        assert b.output == a.output


async def test_memory_and_files_are_isolated_between_agents_and_users(
    make_kernel: Any, store_client: Any
) -> None:
    kernel = await make_kernel(agents=registry())

    async def run(task_id: str, agent: str, user: str, **input: Any) -> Any:
        return await kernel.run_task(TaskSpec(task_id, agent, input, user=user))

    secret = "The vault code is 4711."
    added = await run("m1", "notes", ALICE, op="remember", text=secret)
    await run("m2", "notes", ALICE, op="remember", text="Bananas are yellow.")
    found = await run("m3", "notes", ALICE, op="recall", query="What is the vault code?")
    assert json.loads(found.output)[0] == secret
    for task_id, agent, user in (("s1", "spy", ALICE), ("s2", "notes", BOB)):
        assert json.loads((await run(task_id, agent, user, op="recall", query="vault code")).output) == []

    # Every write is a new root CID linking the previous one; the trace names them.
    [ev] = added.trace["events"]
    assert ev["kind"] == "memory.add" and ev["prev_root"] is None
    root = await store_client.get_dag(str(ev["root"]))
    assert [str(c) for c in root["entries"]] == [added.output]
    roots = kernel.namespace_roots()["memory"]
    assert len(roots) == 1 and next(iter(roots.values())) != str(ev["root"])

    v1 = await run("f1", "notes", ALICE, op="write", path="notes/todo.txt", text="first")
    await run("f2", "notes", ALICE, op="write", path="notes/todo.txt", text="second")
    assert (await run("f3", "notes", ALICE, op="read", path="notes/todo.txt")).output == "second"
    assert (
        await run("f4", "notes", ALICE, op="read", path="notes/todo.txt", version=v1.output)
    ).output == "first"
    assert v1.output in await store_client.pin_ls("all")
    spy = await run("f5", "spy", ALICE, op="read", path="notes/todo.txt")
    assert spy.status == "error" and "FileNotFoundError" in (spy.error or "")
    other_version = await run("f6", "spy", ALICE, op="write", path="notes/todo.txt", text="mine")
    stolen = await run("f7", "notes", BOB, op="read", path="notes/todo.txt", version=other_version.output)
    assert stolen.status == "error"


async def test_tool_calls_are_checked_recorded_and_errors_reach_the_agent(make_kernel: Any) -> None:
    kernel = await make_kernel(
        KernelConfig(node_policy=NodePolicy(allowed_tools=frozenset({"calculator"}))), agents=registry()
    )
    outcome = await kernel.run_task(TaskSpec("t1", "tools", "go", user=ALICE))
    assert outcome.status == "error" and "division by zero" in (outcome.error or "")
    kinds = [(e["kind"], e.get("name") or e.get("syscall")) for e in outcome.trace["events"]]
    assert kinds == [("tool", "calculator"), ("error", "tool"), ("tool", "calculator")]
    ok, refused, failed = outcome.trace["events"]
    assert ok["result"] == 391 and ok["deterministic"] is True and ok["error"] is None
    assert "AccessDeniedError" in refused["error"]
    assert failed["result"] is None and "division by zero" in failed["error"]
    assert [(e.action, e.allowed) for e in kernel.audit_log("t1")] == [
        ("tool", True),
        ("tool", False),
        ("tool", True),
    ]


async def test_engine_errors_reach_the_agent_and_nothing_hangs(make_kernel: Any) -> None:
    kernel = await make_kernel(agents=registry())
    async with asyncio.timeout(60):
        bad, good = await asyncio.gather(
            kernel.run_task(TaskSpec("l1", "long", "", user=ALICE)),
            kernel.run_task(chat("l2", "Say hi.", n=4)),
        )
    assert bad.status == "error" and "LLMError" in (bad.error or "")
    assert good.status == "ok"
    assert kernel.scheduler.active == 0 and kernel.scheduler.waiting == 0


async def test_react_and_retrieval_agents_finish_within_bounds(make_kernel: Any) -> None:
    kernel = await make_kernel(agents=registry())
    react = await kernel.run_task(TaskSpec("r1", "react", {"question": "What is 17 * 23?", "max_steps": 2}))
    assert react.status == "ok" and react.output
    assert 1 <= sum(e["kind"] == "llm" for e in react.trace["events"]) <= 3
    facts = {"remember": ["Supernet nodes stake tokens.", "Validators re-check sampled jobs."]}
    retrieval = await kernel.run_task(
        TaskSpec(
            "q1", "retrieval", {**facts, "question": "Who re-checks jobs?", "max_new_tokens": 24}, user=ALICE
        )
    )
    assert retrieval.status == "ok"
    kinds = [e["kind"] for e in retrieval.trace["events"]]
    assert kinds == ["memory.add", "memory.add", "memory.search", "llm"]
    prompt = retrieval.trace["events"][-1]["messages"][-1]["content"]
    assert "Validators re-check sampled jobs." in prompt
