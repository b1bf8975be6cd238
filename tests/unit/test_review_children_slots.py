"""An adversarial review of two changes: the signed profile's table of callable agents (the replay
holds every ``agent.call`` to its entry) and the kernel's task slots given up while a task waits
for its user's namespace lock or confirmation (`supernet.node.kernel.slots`).

Each attack was proven as a test first. ``test_defence_*``: the attack fails; the three that worked
were closed after the review (their docstrings say how each worked and what closed it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import NodePolicy, PrivilegeGroup
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.slots import TaskSlots
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.tools import Tool, ToolSpec
from supernet.sdk.chain.receipts import canonical_input
from supernet.sdk.formats.profile import AgentProfile
from supernet.sdk.formats.trace import Trace

from tests.unit.test_profile_attacks import (
    EMBEDDER,
    MINE,
    CalcDelegator,
    honest_run,
    kernel_of,
    started_kernel,
)
from tests.unit.test_validator_attacks import USER, DictStore, registry, signed_task, verify
from tests.unit.test_validator_attacks3 import FakeEngine, clean, stand_in_kernel

ALICE, BOB = "0x" + "a1" * 20, "0x" + "b0" * 20

# -- children -------------------------------------------------------------------------------------------


class Outer(Agent):
    """Hands its input to ``calc-delegator``, which hands it to ``calc`` (a grandchild)."""

    agent_id = "outer"

    calls_agents = ("calc-delegator",)
    description = "Delegates to calc-delegator."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return await ctx.agents.call("calc-delegator", input)


NESTED = (*MINE, Outer)


def nested_kernel(store_dir: Path, policy: NodePolicy | None = None) -> AbstractAsyncContextManager[Kernel]:
    """A started kernel of `NESTED` under ``policy`` on an embedded store in ``store_dir``."""
    return stand_in_kernel(store_dir, NESTED, policy=policy, embedder=EMBEDDER)


def without_agents(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "agents"}


async def test_defence_a_trace_without_agents_runs_no_agent_call(tmp_path: Path) -> None:
    """Was an attack: a cheating node listed ``calc-delegator`` with an *empty* table of callable
    agents (the user signs it), narrowed the child ``calc`` to no tools, ran the task and committed
    the trace *without* its ``agents`` field. A missing table hashes as an empty one, and the replay,
    seeing no table, fell back to the old rule (a child's capabilities no more than its caller's):
    the degraded answer of a call of an unlisted agent verified clean. The replay now reads a
    missing table as the empty one it hashes as: every agent call of such a trace diverges."""
    starve = NodePolicy(groups=(PrivilegeGroup("no-tools", frozenset({"calc"}), tools=()),))
    task_input = {"expr": "6 * 7"}
    async with started_kernel(tmp_path / "cheat", starve) as kernel:
        spec = TaskSpec(
            task_id="0x" + "00" * 32, agent_id="calc-delegator", input=task_input, user=USER.address
        )
        probe = dict((await kernel.run_task(spec)).trace)
    # the profile the node advertised: the real agent, limits and tools, and no callable agent
    advertised = AgentProfile.of_trace(Trace.from_dag(without_agents(probe)))
    assert advertised.agents == () and advertised.hash() != kernel_of(starve).profile("calc-delegator").hash()
    req, task_id = signed_task(CalcDelegator, task_input, advertised.hash())
    async with started_kernel(tmp_path / "cheat2", starve) as kernel:
        spec = TaskSpec(
            task_id=task_id, agent_id="calc-delegator", input=task_input, user=USER.address, fee=100
        )
        cheat = without_agents(dict((await kernel.run_task(spec)).trace))
    assert cheat["output"].startswith("could not compute")  # the degraded answer
    assert any(e["kind"] == "agent.call" for e in cheat["events"])  # a call of an unlisted agent
    for doc in (cheat, {**cheat, "agents": []}):  # without its table, or with the empty one
        verdict = await verify(DictStore(), req, task_id, doc, agents=MINE)
        assert not verdict.ok and [f.check.value for f in verdict.findings] == ["replay"], verdict.findings
        assert "which the signed profile does not list" in verdict.findings[0].message
    # a profile signed before tables (no "agents" key) is not what a table-less trace hashes to
    legacy = {k: v for k, v in advertised.to_json().items() if k != "agents"}
    assert "0x" + hashlib.sha256(canonical_input(legacy)).hexdigest() != advertised.hash()


async def test_defence_a_trace_dropping_the_table_of_a_listing_profile_is_caught(tmp_path: Path) -> None:
    """A node cannot drop the table to fall back to the old check when the signed profile lists
    callable agents (every honest node's of an agent that calls others does): the profile hash
    recomputed from the trace is then another one (a TRACE finding)."""
    task_input = {"expr": "6 * 7"}
    req, task_id, honest = await honest_run(tmp_path, CalcDelegator, task_input)
    assert honest["agents"]
    verdict = await verify(DictStore(), req, task_id, without_agents(honest), agents=MINE)
    assert not verdict.ok and "trace" in {f.check.value for f in verdict.findings}, verdict.findings


async def test_defence_a_grandchild_narrowed_by_its_callers_group_replays_clean(tmp_path: Path) -> None:
    """Depth 2: ``outer`` -> ``calc-delegator`` -> ``calc``, with ``calc-delegator`` in a group
    without tools and ``calc`` unrestricted. The grandchild keeps only what its caller (the child)
    has: no calculator (its answer is degraded); the node and the replay apply the same rule, so the
    honest trace replays clean, and a trace giving the grandchild its own entry's tools (more than
    its caller had) diverges."""
    policy = NodePolicy(groups=(PrivilegeGroup("no-tools", frozenset({"calc-delegator"}), tools=()),))
    profile = Kernel(
        FakeEngine(), None, KernelConfig(node_policy=policy), agents=registry(NESTED), embedder=EMBEDDER
    ).profile("outer")
    assert next(a for a in profile.agents if a.id == "calc").tools  # calc itself keeps its tools
    task_input = {"expr": "6 * 7"}
    req, task_id = signed_task(Outer, task_input, profile.hash())
    async with nested_kernel(tmp_path / "store", policy) as kernel:
        spec = TaskSpec(
            task_id=task_id,
            agent_id="outer",
            input=task_input,
            user=USER.address,
            fee=100,
            agent_hash=profile.hash(),
        )
        outcome = await kernel.run_task(spec)
    honest = dict(outcome.trace)
    calls = [e for e in honest["events"] if e["kind"] == "agent.call"]
    assert [c["agent"]["id"] for c in calls] == ["calc-delegator", "calc"] and calls[1]["tools"] == []
    assert outcome.output.startswith("could not compute")
    assert clean(await verify(DictStore(), req, task_id, honest, agents=NESTED))
    # a node claiming the grandchild had the calculator (its entry's tools, not its caller's)
    forged_events = [
        {**e, "tools": ["calculator"]} if e["kind"] == "agent.call" and e["agent"]["id"] == "calc" else e
        for e in honest["events"]
    ]
    verdict = await verify(DictStore(), req, task_id, {**honest, "events": forged_events}, agents=NESTED)
    assert not verdict.ok and [f.check.value for f in verdict.findings] == ["replay"], verdict.findings


# -- slots ----------------------------------------------------------------------------------------------

EVENTS: dict[str, asyncio.Event] = {}
RUNNING: set[str] = set()


class LockHolder(Agent):
    """Writes the user's file (taking the user's namespace lock), then waits for the test."""

    agent_id = "lock-holder"
    description = "Writes a file and waits."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("a.txt", "held")
        await EVENTS["hold"].wait()
        return "held"


class Impatient(Agent):
    """Gives a file write a short deadline (``asyncio.wait_for``, as agents do around a slow
    syscall), then does its real work (the test's stand-in for LLM calls) without the file."""

    agent_id = "impatient"
    description = "Writes a file if it can do so quickly, then works."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ctx.storage.put("b.txt", str(input)), 0.05)
        RUNNING.add(str(input))
        await EVENTS["work"].wait()  # long work, as an LLM call would be
        RUNNING.discard(str(input))
        return "worked"


def slot_spec(n: int, agent: str, user: str) -> TaskSpec:
    return TaskSpec(task_id=f"0x{n:064x}", agent_id=agent, input=f"x{n}", user=user, fee=1, timeout_s=30.0)


async def wait_until(cond: Any) -> None:
    for _ in range(500):  # up to 5 s
        if cond():
            return
        await asyncio.sleep(0.01)


async def test_defence_a_syscall_cancelled_while_away_takes_its_slot_back(tmp_path: Path) -> None:
    """Was an attack: `TaskSlots.away` did not take a slot back when the wait was *cancelled* ("the
    task is ending"), but the cancellation may be the agent's own, of one syscall
    (``asyncio.wait_for(ctx.storage.put(...), t)``): the agent went on without a slot. A user
    holding their own lock with one task and sending many tasks of such an agent had them all
    working at once past ``max_concurrent_tasks`` (2 slots, 6 tasks working). A syscall now takes
    its task's slot back however its wait ends: with 2 slots, the holder and one more work."""
    EVENTS.clear()
    EVENTS.update(hold=asyncio.Event(), work=asyncio.Event())
    RUNNING.clear()
    async with stand_in_kernel(tmp_path / "store", (LockHolder, Impatient), max_concurrent_tasks=2) as kernel:
        holder = kernel.submit(slot_spec(1, "lock-holder", ALICE))
        await asyncio.sleep(0.05)  # it holds Alice's lock and a slot
        runs = [kernel.submit(slot_spec(2 + i, "impatient", ALICE)) for i in range(5)]
        await wait_until(lambda: len(RUNNING) == 1)
        await asyncio.sleep(0.3)  # every other write has timed out by now
        assert len(RUNNING) == 1 and kernel._slots.free == 0  # one works beside the holder, no more
        EVENTS["work"].set()
        EVENTS["hold"].set()
        outcomes = [await r.outcome() for r in (holder, *runs)]
        assert [o.status for o in outcomes] == ["ok"] * 6, [o.error for o in outcomes]
        assert kernel._slots.free == 2  # no leak, no double release


class SyscallGatherer(Agent):
    """Writes a file while a tool call does its real work (``asyncio.gather`` of two syscalls)."""

    agent_id = "syscall-gatherer"
    description = "Writes a file while a tool works."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await asyncio.gather(
            ctx.storage.put("c.txt", str(input)), ctx.tools.call("slow-work", {"id": str(input)})
        )
        return "worked"


def slow_work_tool() -> Tool:
    """A tool whose call is the task's long work (an LLM call would be), until the test says so."""

    async def work(args: Any) -> str:
        RUNNING.add(args["id"])
        await EVENTS["work"].wait()
        RUNNING.discard(args["id"])
        return "done"

    return Tool(ToolSpec("slow-work", "Works until told.", {"type": "object"}, timeout_s=30.0), work)


class Gatherer(Agent):
    """Writes a file and does its real work at the same time (``asyncio.gather``)."""

    agent_id = "gatherer"
    description = "Writes a file while it works."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        async def work() -> None:
            RUNNING.add(str(input))
            await EVENTS["work"].wait()  # long work, as an LLM call would be
            RUNNING.discard(str(input))

        await asyncio.gather(ctx.storage.put("c.txt", str(input)), work())
        return "worked"


async def test_defence_a_task_keeps_its_slot_while_another_of_its_syscalls_runs(tmp_path: Path) -> None:
    """Was an attack: the slot is the *task's*, but `away` was entered by one syscall: while a
    task's file write waited for its user's lock without the slot, the task's other, concurrent
    syscalls (an LLM call in ``asyncio.gather``) went on, and a user had 6 tasks at work on a
    2-slot kernel. A task now gives its slot up only while none of its syscalls runs, and any of
    its syscalls takes one first; and an agent's syscalls take turns (`Dispatcher.handle`), so
    the tool call waits behind the file write that waits for the lock: no task works past it."""
    EVENTS.clear()
    EVENTS.update(hold=asyncio.Event(), work=asyncio.Event())
    RUNNING.clear()
    async with stand_in_kernel(
        tmp_path / "store", (LockHolder, SyscallGatherer), max_concurrent_tasks=2
    ) as kernel:
        kernel.tools.register(slow_work_tool())
        holder = kernel.submit(slot_spec(1, "lock-holder", ALICE))
        await asyncio.sleep(0.05)  # it holds Alice's lock and a slot
        runs = [kernel.submit(slot_spec(2 + i, "syscall-gatherer", ALICE)) for i in range(5)]
        await asyncio.sleep(0.3)
        assert len(RUNNING) == 0  # every gatherer's tool call waits its turn behind its file write
        EVENTS["hold"].set()
        EVENTS["work"].set()
        outcomes = [await r.outcome() for r in (holder, *runs)]
        assert [o.status for o in outcomes] == ["ok"] * 6, [o.error for o in outcomes]
        assert kernel._slots.free == 2


async def test_defence_tasks_all_confirmed_at_once_take_turns_and_cancelled_ones_leak_nothing() -> None:
    """Many tasks of a user waiting (without slots) for confirmations that all come at once: each
    takes a slot again before it goes on, so at most ``n`` run at a time; tasks cancelled while
    waiting, or while waiting to take a slot again, leave every slot free at the end."""
    slots = TaskSlots(2)
    confirmed = asyncio.Event()
    inside, most = 0, 0

    async def task() -> None:
        nonlocal inside, most
        async with slots.hold() as slot, slots.running(slot):  # one syscall, as the dispatcher runs it
            async with slots.away(slot):
                await confirmed.wait()
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0.01)
            inside -= 1

    tasks = [asyncio.create_task(task()) for _ in range(8)]
    await wait_until(lambda: slots.free == 2 and all(not t.done() for t in tasks))
    confirmed.set()
    await asyncio.gather(*tasks)
    assert most == 2 and slots.free == 2
    # cancelled while away, and while waiting for a slot back
    confirmed.clear()
    tasks = [asyncio.create_task(task()) for _ in range(6)]
    await asyncio.sleep(0.02)
    for t in tasks[:3]:
        t.cancel()
    async with slots.hold(), slots.hold():  # both slots taken: the others wait to take one back
        confirmed.set()
        await asyncio.sleep(0.02)
        for t in tasks[3:5]:
            t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert [t.cancelled() for t in tasks] == [True] * 5 + [False] and slots.free == 2
