"""A review of the chained-roots replay, the per-user namespace lock and TaskAbort.

Each test is a problem the review found in the first version of those changes (each failed
then): a memory.add whose new root was not checked, a task deadlocking on its own user lock, a
syscall after a task's end keeping the user's lock for good, and a TaskAbort an agent swallowed
with ``gather(return_exceptions=True)``. Helpers and agents come from
tests/unit/test_validator_attacks*.py.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.access import namespace_of
from supernet.node.kernel.syscalls import TaskSpec

from tests.embedder import SharedMiniLM
from tests.unit.test_validator_attacks import (
    USER,
    DictStore,
    fabricated_memory,
    verify,
)
from tests.unit.test_validator_attacks3 import (
    AGENTS,
    Rememberer,
    ShortEngine,
    clean,
    node_task,
    node_trace,
    stand_in_kernel,
)

# -- (1) memory.add's new root is not chained like storage.put's ---------------------------------------


async def test_memory_add_new_root_is_checked_like_a_put(tmp_path: Path) -> None:
    """The agent stores the user's fact and recalls it in the same task. The node keeps the add's
    honest ``prev_root`` (so nothing about the task's first root is in question) but records the
    add's new ``root`` as a memory root it made up (labelled with the task's namespace) listing a
    made-up entry, and the search on that root. The replay chains the search to the add's recorded
    ``root`` but never checks that this root is the previous one with the added entry (a
    storage.put's root is checked, `_check_append`), so the node answers from made-up memories
    after the task's own write: the claimed "every write chains" property does not hold for memory."""
    task_input = {"fact": "The launch code is 1234."}
    req, task_id = node_task(Rememberer, task_input)
    honest = await node_trace(tmp_path, Rememberer, task_input, task_id, embedder=SharedMiniLM())
    assert [e["kind"] for e in honest["events"]] == ["memory.add", "memory.search"]
    assert honest["events"][0]["prev_root"] is None  # the task's own first write: no outside root
    store = DictStore()
    assert clean(await verify(store, req, task_id, honest, agents=AGENTS))  # control

    ns = namespace_of(USER.address, "rememberer")
    blocks, root, hit = fabricated_memory(ns, "The launch code is 0000.")
    cheat = copy.deepcopy(honest)
    cheat["events"][0].update(root=root)  # the add's new root: made up (prev_root stays honest)
    cheat["events"][1].update(root=root, hits=[hit])
    cheat["witness"] = {**cheat["witness"], "blocks": [*cheat["witness"]["blocks"], *blocks]}
    cheat["output"] = "The launch code is 0000."
    verdict = await verify(store, req, task_id, cheat, agents=AGENTS)
    assert not verdict.ok, "a made-up memory root after the task's own add verifies clean"


# -- (2) the per-user lock and a task's concurrent syscalls -----------------------------------------------


class Holder(Agent):
    """Writes the user's note and keeps the user's namespaces for a while (a long model call)."""

    agent_id = "holder"
    description = "Writes a note, then works a while."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("notes.txt", "x")
        await asyncio.sleep(0.3)
        return "held"


class Gatherer(Agent):
    """Reads two of the user's files at once (two syscalls in flight in one task)."""

    agent_id = "gatherer"
    description = "Reads two files concurrently."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        got = await asyncio.gather(ctx.storage.list(), ctx.storage.list(), return_exceptions=True)
        return str(len(got))


async def _run_two_users_tasks(tmp_path: Path, timeout_s: float, hold: bool = True) -> tuple[Any, Any]:
    async with stand_in_kernel(tmp_path / "store", (Holder, Gatherer)) as kernel:
        other = USER.address if hold else "0x" + "88" * 20  # control: another user's task
        first = kernel.submit(
            TaskSpec(task_id="0x" + "01" * 32, agent_id="holder", input="a", user=other, fee=1)
        )
        await asyncio.sleep(0.05)  # the holder has the user's lock now
        second = kernel.submit(
            TaskSpec(
                task_id="0x" + "02" * 32, agent_id="gatherer", input="b", user=USER.address, fee=1,
                timeout_s=timeout_s,
            )
        )  # fmt: skip
        a = await first.outcome()
        b = await second.outcome()
    return a, b


async def test_concurrent_syscalls_of_one_task_do_not_deadlock_on_the_users_lock(tmp_path: Path) -> None:
    """Task 2 makes two storage syscalls at once while task 1 of the same user holds the user's
    lock. Both of task 2's syscalls see ``root.namespaces is None`` and wait on the lock; the
    first gets it (for the whole task), the second waits for the task's own end, which waits for
    it: task 2 hangs until its timeout (and every later task of the user queues behind it)."""
    a, b = await _run_two_users_tasks(tmp_path / "control", timeout_s=2.0, hold=False)
    assert a.status == "ok" and b.status == "ok", (b.status, b.error)  # control: no contention
    a, b = await _run_two_users_tasks(tmp_path, timeout_s=2.0)
    assert a.status == "ok"
    assert b.status == "ok", (b.status, b.error)


# -- (3) a syscall after the task's end takes the user's lock for good -------------------------------------


class Spawner(Agent):
    """Leaves a storage write running after it returns (e.g. a fire-and-forget log write)."""

    agent_id = "spawner"
    description = "Returns at once; a background write follows."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        async def later() -> None:
            await asyncio.sleep(0.05)
            try:
                await ctx.storage.put("log.txt", "done")
            except BaseException:
                pass

        asyncio.get_running_loop().create_task(later())
        return "spawned"


class Writer(Agent):
    agent_id = "writer"
    description = "Writes a note."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("notes.txt", str(input))
        return "written"


async def test_a_syscall_after_the_tasks_end_does_not_hold_the_users_lock_forever(tmp_path: Path) -> None:
    """A syscall that reaches the dispatcher after its task ended (``Kernel._execute`` already
    called ``release``) takes the user's lock and stores it on the finished task's state: nobody
    ever releases it, and every later task of that user that touches memory or files hangs."""
    async with stand_in_kernel(tmp_path / "store", (Spawner, Writer)) as kernel:
        first = await kernel.run_task(
            TaskSpec(task_id="0x" + "03" * 32, agent_id="spawner", input="a", user=USER.address, fee=1)
        )
        assert first.status == "ok"
        await asyncio.sleep(0.2)  # the background write ran
        second = await kernel.run_task(
            TaskSpec(
                task_id="0x" + "04" * 32, agent_id="writer", input="b", user=USER.address, fee=1,
                timeout_s=1.0,
            )
        )  # fmt: skip
    assert second.status == "ok", (second.status, second.error)


# -- (4) TaskAbort turned into a value by asyncio.gather(return_exceptions=True) ---------------------------


class GatherChat(Agent):
    """Asks the model through gather(return_exceptions=True) and falls back on any failure."""

    agent_id = "gather-chat"
    description = "Summarizes with a fallback."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        (reply,) = await asyncio.gather(
            ctx.llm.chat([{"role": "user", "content": str(input)}], max_new_tokens=16), return_exceptions=True
        )
        return "fallback" if isinstance(reply, BaseException) else reply.text


async def test_an_engine_shortfall_cannot_become_a_fallback_answer_through_gather(tmp_path: Path) -> None:
    """`TaskAbort` is a BaseException so that an agent cannot turn an engine failure into a fallback
    answer with a receipt; ``asyncio.gather(..., return_exceptions=True)`` hands it to the agent as a
    value, the task ends "ok" with the fallback, and its trace lacks the LLM call (no event is
    recorded for a TaskAbort): the node signs a receipt whose trace every replay rejects."""
    async with stand_in_kernel(tmp_path / "store", (GatherChat,), engine=ShortEngine()) as kernel:
        out = await kernel.run_task(
            TaskSpec(task_id="0x" + "05" * 32, agent_id="gather-chat", input="hello there", user=USER.address)
        )
    assert out.status == "error", (out.status, out.output, [e["kind"] for e in out.trace["events"]])
