"""A task's memory and file writes take effect with its result.

A task that failed (the agent raised, ran past its timeout, was aborted, or its trace could not be
saved) has no receipt, yet its writes used to stay: the user's next task started from files and
memories no receipted task made (and that no validator could follow back to one). One task of a
user at a time holds the user's namespaces, so the kernel now notes the user's roots when a task
takes them and puts them back if the task does not succeed, before the next task of the user
starts (`Dispatcher.release`).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.syscalls import TaskSpec

from tests.embedder import SharedMiniLM
from tests.unit.test_validator_attacks3 import stand_in_kernel

ALICE = "0x" + "a1" * 20


class Journal(Agent):
    """Writes a note and a memory, then fails or hangs if asked to; ``{"read": true}`` reports both."""

    agent_id = "journal"
    description = "Writes, maybe fails, or reads back."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if input.get("read"):
            try:
                note = (await ctx.storage.get("note.txt")).decode()
            except FileNotFoundError:
                note = "-"
            hits = await ctx.memory.search("anything", k=8)
            if input.get("fail"):
                raise RuntimeError("read, then failed")
            return f"{note}|{sorted(h.text for h in hits)}"
        await ctx.storage.put("note.txt", input["text"])
        await ctx.memory.add(input["text"])
        if input.get("slow"):
            await asyncio.sleep(input["slow"])
        if input.get("fail"):
            raise RuntimeError("the agent failed after writing")
        if input.get("hang"):
            await asyncio.sleep(60)
        return "written"


def spec(n: int, task_input: dict[str, Any], timeout_s: float = 60.0) -> TaskSpec:
    return TaskSpec(f"0x{n:064x}", "journal", task_input, user=ALICE, fee=1, timeout_s=timeout_s)


async def test_a_failed_tasks_writes_are_undone(tmp_path: Path) -> None:
    async with stand_in_kernel(tmp_path / "store", (Journal,), embedder=SharedMiniLM()) as kernel:
        first = await kernel.run_task(spec(1, {"text": "kept"}))
        assert first.status == "ok"
        roots = kernel.namespace_roots()
        failed = await kernel.run_task(spec(2, {"text": "failed", "fail": True}))
        # (a timeout that leaves its writes time to run on a loaded machine: they must be undone)
        timed_out = await kernel.run_task(spec(3, {"text": "timed out", "hang": True}, timeout_s=5.0))
        assert (failed.status, timed_out.status) == ("error", "timeout")
        assert failed.trace["events"][0]["kind"] == "storage.put"  # it did write, then failed
        read = await kernel.run_task(spec(4, {"read": True}))
        assert read.output == "kept|['kept']"  # only the successful task's writes
        assert kernel.namespace_roots()["memory"] == roots["memory"]
        assert kernel.namespace_roots()["storage"] == roots["storage"]
        pinned = set(await kernel.store.pin_ls("all"))
        undone = {e["root"] for o in (failed, timed_out) for e in o.trace["events"] if "root" in e}
        assert len(undone) == 4 and not undone & pinned  # the undone roots unpinned
        assert {*roots["memory"].values(), *roots["storage"].values()} <= pinned  # the kept ones pinned
        later = await kernel.run_task(spec(5, {"text": "later"}))  # and the user goes on from there
        assert later.status == "ok"
        assert (await kernel.run_task(spec(6, {"read": True}))).output == "later|['kept', 'later']"


async def test_a_users_first_failed_task_leaves_no_namespace(tmp_path: Path) -> None:
    async with stand_in_kernel(tmp_path / "store", (Journal,), embedder=SharedMiniLM()) as kernel:
        failed = await kernel.run_task(spec(1, {"text": "failed", "fail": True}))
        assert failed.status == "error"
        assert kernel.namespace_roots()["memory"] == {} and kernel.namespace_roots()["storage"] == {}
        assert (await kernel.run_task(spec(2, {"read": True}))).output == "-|[]"
