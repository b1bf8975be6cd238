"""Agent replay on real parts: the real kernel records a trace, the replay re-runs the same agent
class against it as a tape (SmolLM2 tokenizer, all-MiniLM memory, embedded store).

Honest traces of every shipped agent, and of agents using memory, files, refused and failing tool
calls, replay with no divergence. Each way a node could make a trace that is consistent with its
receipt but not with what the agent does is a divergence naming the syscall: a made-up answer, a
dropped, added or reordered call, another prompt, another memory entry or search result, another
file version, a budget error the limits do not give, a chosen seed. The trace carries every block
its replay reads (its ``witness``): replay never asks a store, so a node cannot withhold a linked
block to make it unverifiable; a block missing from the witness, or altered in it, is a divergence.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.chat import ChatAgent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.react import ReactAgent
from supernet.node.agents.retrieval import RetrievalAgent
from supernet.node.kernel.access import NodePolicy
from supernet.node.kernel.errors import BudgetExceededError
from supernet.node.kernel.kernel import KernelConfig
from supernet.node.kernel.replay import MalformedContext, ReplayResult, check_seed, replay
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.trace import MAX_TRACE_EVENTS
from supernet.sdk.formats.trace import Trace, witness_reads
from supernet.sdk.store.cids import compute_cid, encode_dag

from tests.integration.test_kernel_agents import ALICE, NotesAgent, ToolsAgent, registry

pytestmark = [pytest.mark.model, pytest.mark.timeout(600)]


async def record(kernel: Any, store: Any, spec: TaskSpec) -> dict[str, Any]:
    """Run ``spec`` on the kernel; the trace as validators read it (from the store, by CID)."""
    outcome = await kernel.run_task(spec)
    doc: dict[str, Any] = await store.get_dag(outcome.trace_cid)
    return doc


async def replayed(doc: dict[str, Any], agent: Any, kernel: Any, store: Any) -> ReplayResult:
    return await replay(doc, agent, kernel.engine.tokenizer)


def messages(result: ReplayResult) -> list[tuple[int | None, str]]:
    return [(d.index, d.message) for d in result.divergences]


async def test_honest_traces_of_every_agent_replay_exactly(make_kernel: Any, store_client: Any) -> None:
    kernel = await make_kernel(agents=registry())
    cases = [
        (ChatAgent, TaskSpec("0x" + "c1" * 32, "chat", "Name a colour.", user=ALICE)),
        (ReactAgent, TaskSpec("0x" + "c2" * 32, "react", {"question": "What is 17 * 23?", "max_steps": 2})),
        (
            RetrievalAgent,
            TaskSpec(
                "0x" + "c3" * 32,
                "retrieval",
                {"remember": ["Validators re-check jobs.", "Nodes stake."], "question": "Who re-checks?"},
                user=ALICE,
            ),
        ),
        (
            NotesAgent,
            TaskSpec("0x" + "c4" * 32, "notes", {"op": "write", "path": "a.txt", "text": "v1"}, user=ALICE),
        ),
        (NotesAgent, TaskSpec("0x" + "c5" * 32, "notes", {"op": "read", "path": "a.txt"}, user=ALICE)),
        (NotesAgent, TaskSpec("0x" + "c6" * 32, "notes", {"op": "recall", "query": "stake"}, user=ALICE)),
    ]
    for agent, spec in cases:
        doc = await record(kernel, store_client, spec)
        assert doc["status"] == "ok", doc["error"]
        result = await replayed(doc, agent, kernel, store_client)
        assert result.divergences == [], (spec.agent_id, messages(result))
        assert result.output == doc["output"] and len(result.events) == len(doc["events"])
        assert check_seed(doc) is None
        assert Trace.from_dag(doc).to_dag() == doc  # the node writes exactly the one format


async def test_refused_and_failing_tool_calls_replay_to_the_same_failure(
    make_kernel: Any, store_client: Any
) -> None:
    kernel = await make_kernel(
        KernelConfig(node_policy=NodePolicy(allowed_tools=frozenset({"calculator"}))), agents=registry()
    )
    doc = await record(kernel, store_client, TaskSpec("0x" + "d1" * 32, "tools", "go", user=ALICE))
    assert doc["status"] == "error" and [e["kind"] for e in doc["events"]] == ["tool", "error", "tool"]
    result = await replayed(doc, ToolsAgent, kernel, store_client)
    assert result.divergences == [] and result.status == "error" and result.error == doc["error"]


@pytest.fixture()
async def react_trace(make_kernel: Any, store_client: Any) -> tuple[Any, dict[str, Any]]:
    kernel = await make_kernel(agents=registry())
    spec = TaskSpec("0x" + "e1" * 32, "react", {"question": "What is 6 * 7?", "max_steps": 2}, user=ALICE)
    doc = await record(kernel, store_client, spec)
    assert any(e["kind"] == "llm" for e in doc["events"])
    return kernel, doc


async def test_cheats_with_a_consistent_trace_diverge(react_trace: Any, store_client: Any) -> None:
    kernel, honest = react_trace
    llm_at = next(i for i, e in enumerate(honest["events"]) if e["kind"] == "llm")

    def edited(change: Any) -> dict[str, Any]:
        doc = copy.deepcopy(honest)
        change(doc)
        return doc

    def answer(doc: dict[str, Any]) -> None:
        doc["output"] = "The answer is 41."

    def skip(doc: dict[str, Any]) -> None:
        doc["events"] = [e for e in doc["events"] if e["kind"] != "llm"]

    def prompt(doc: dict[str, Any]) -> None:
        ev = doc["events"][llm_at]
        ev["messages"][-1]["content"] = ev["messages"][-1]["content"][:40]
        ev["prompt_ids"] = kernel.engine.tokenizer.apply_chat_template(
            ev["messages"], add_generation_prompt=True
        )

    def params(doc: dict[str, Any]) -> None:
        doc["events"][llm_at]["params"]["max_new_tokens"] = 3

    def text(doc: dict[str, Any]) -> None:
        doc["events"][llm_at]["text"] = "Final Answer: 41"

    def extra(doc: dict[str, Any]) -> None:
        doc["events"].append(copy.deepcopy(doc["events"][llm_at]))

    def budget(doc: dict[str, Any]) -> None:
        doc["events"][llm_at] = {
            "kind": "error",
            "syscall": "llm",
            "error": "BudgetExceededError: spent",
            "call": {},
        }

    def chosen_seed(doc: dict[str, Any]) -> None:
        doc["seed"] += 1

    expected_index = {
        answer: None,
        skip: llm_at,
        prompt: llm_at,
        params: llm_at,
        text: llm_at,
        extra: len(honest["events"]),
        budget: llm_at,
    }
    for change, index in expected_index.items():
        result = await replayed(edited(change), ReactAgent, kernel, store_client)
        assert result.divergences, change.__name__
        assert index in [d.index for d in result.divergences], (change.__name__, messages(result))
    seeded = edited(chosen_seed)
    assert check_seed(seeded) is not None
    assert (await replayed(seeded, ReactAgent, kernel, store_client)).divergences  # other seeds recorded


async def test_memory_and_files_are_checked_against_their_blocks(make_kernel: Any, store_client: Any) -> None:
    kernel = await make_kernel(agents=registry())

    async def notes(n: int, **input: Any) -> dict[str, Any]:
        return await record(
            kernel, store_client, TaskSpec("0x" + f"{n:02x}" * 32, "notes", input, user=ALICE)
        )

    added = await notes(1, op="remember", text="The vault code is 4711.")
    other = await notes(2, op="remember", text="Bananas are yellow.")
    recall = await notes(3, op="recall", query="vault code")
    v1 = await notes(4, op="write", path="f.txt", text="first")
    await notes(5, op="write", path="f.txt", text="second")
    read = await notes(6, op="read", path="f.txt")
    for doc in (added, other, recall, read):
        assert (await replayed(doc, NotesAgent, kernel, store_client)).divergences == []

    lie = copy.deepcopy(added)  # the entry written is another text's block
    lie["events"][0]["entry"] = other["events"][0]["entry"]
    assert [d.index for d in (await replayed(lie, NotesAgent, kernel, store_client)).divergences] == [0]

    outside = copy.deepcopy(recall)  # a "hit" that is not in the searched root (carried by the witness)
    foreign = {"type": "supernet/memory-entry", "text": "x", "metadata": {}}
    outside["events"][0]["hits"][0] = foreign_link(compute_cid(encode_dag(foreign), "dag-cbor"))
    outside["witness"]["blocks"].append(encode_dag(foreign))
    assert [d.index for d in (await replayed(outside, NotesAgent, kernel, store_client)).divergences] == [0]

    stale = copy.deepcopy(read)  # an older version than the root's latest
    stale["events"][0]["cid"] = v1["events"][0]["cid"]
    stale["output"] = "first"
    assert 0 in [d.index for d in (await replayed(stale, NotesAgent, kernel, store_client)).divergences]

    raw = copy.deepcopy(added)  # an "entry" that is a raw block: not a memory entry
    raw["events"][0]["entry"] = foreign_link(await store_client.put_block(b"not a memory entry"))
    assert [d.index for d in (await replayed(raw, NotesAgent, kernel, store_client)).divergences] == [0]


async def test_a_trace_carries_every_block_its_replay_reads(make_kernel: Any, store_client: Any) -> None:
    """Withholding a linked block cannot make a trace unverifiable: the trace is self-contained."""
    kernel = await make_kernel(agents=registry())

    async def notes(n: int, **input: Any) -> dict[str, Any]:
        return await record(
            kernel, store_client, TaskSpec("0x" + f"{0x40 + n:02x}" * 32, "notes", input, user=ALICE)
        )

    await notes(1, op="remember", text="The vault code is 4711.")
    recall = await notes(2, op="recall", query="vault code")
    await notes(3, op="write", path="g.txt", text="content")
    read = await notes(4, op="read", path="g.txt")
    # exactly what replay reads, nothing the node chose to add
    for doc in (recall, read):
        reads = witness_reads(Trace.from_dag(doc).events)
        assert len(doc["witness"]["blocks"]) + len(doc["witness"]["files"]) == len(reads) > 0
    assert (await replayed(read, NotesAgent, kernel, store_client)).divergences == []

    # a node that drops a block from the witness (to withhold it) diverges at the syscall reading it
    for doc, form in ((recall, "blocks"), (read, "files")):
        dropped = copy.deepcopy(doc)
        dropped["witness"][form].pop()
        divergences = (await replayed(dropped, NotesAgent, kernel, store_client)).divergences
        assert [d.index for d in divergences] == [0] and "witness lacks" in divergences[0].message

    # an altered block is keyed by the CID of what it holds, so it does not stand in for the real one
    altered = copy.deepcopy(read)
    altered["witness"]["files"][0] = b"something else"
    assert [d.index for d in (await replayed(altered, NotesAgent, kernel, store_client)).divergences] == [0]

    # a witness that is not one is a malformed trace
    for bad in (None, {"blocks": "x", "files": []}, {"blocks": [b"\xff\xff"], "files": []}):
        broken = copy.deepcopy(read)
        broken["witness"] = bad
        with pytest.raises(MalformedContext):
            await replayed(broken, NotesAgent, kernel, store_client)


class SpinnerAgent(Agent):
    """Test agent: searches its (empty) memory until the kernel refuses."""

    agent_id = "spinner"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        n = 0
        try:
            while True:
                await ctx.memory.search("anything", k=1)
                n += 1
        except BudgetExceededError:
            return str(n)


async def test_the_kernel_records_at_most_max_trace_events(make_kernel: Any, store_client: Any) -> None:
    agents = registry()
    agents.register(SpinnerAgent)
    kernel = await make_kernel(agents=agents)
    doc = await record(kernel, store_client, TaskSpec("0x" + "f1" * 32, "spinner", "", user=ALICE))
    assert doc["status"] == "ok" and len(doc["events"]) == MAX_TRACE_EVENTS
    assert doc["output"] == str(MAX_TRACE_EVENTS)
    assert (await replayed(doc, SpinnerAgent, kernel, store_client)).divergences == []


def foreign_link(cid: str) -> Any:
    from supernet.sdk.store.cids import link

    return link(cid)


async def test_a_task_whose_trace_is_over_the_protocol_cap_fails_clearly(
    make_kernel: Any, store_client: Any
) -> None:
    """A trace over MAX_TRACE_BYTES could not be posted in an availability answer (B7): the kernel
    does not save it, the task fails and no receipt is signed. The default file limit leaves room."""
    from supernet.node.kernel.trace import TraceTooLargeError
    from supernet.sdk.formats.trace import MAX_TRACE_BYTES

    kernel = await make_kernel(
        KernelConfig(node_policy=NodePolicy(max_file_bytes=2 * MAX_TRACE_BYTES)), agents=registry()
    )
    spec = TaskSpec(
        "0x" + "f2" * 32, "notes", {"op": "write", "path": "big", "text": "x" * MAX_TRACE_BYTES}, user=ALICE
    )
    with pytest.raises(TraceTooLargeError, match="trace limit"):
        await kernel.run_task(spec)
    # the default file limit leaves room for the witness: a file at the limit fits
    kernel = await make_kernel(agents=registry())
    limit = NodePolicy().max_file_bytes
    spec = TaskSpec(
        "0x" + "f3" * 32, "notes", {"op": "write", "path": "big", "text": "y" * limit}, user=ALICE
    )
    doc = await record(kernel, store_client, spec)
    assert doc["status"] == "ok" and doc["witness"]["files"] == [b"y" * limit]
    assert len(encode_dag(doc)) <= MAX_TRACE_BYTES
