"""Adversarial review: a failed task's memory and file writes are undone (`Dispatcher.release`).

The change marks the user's roots when a task takes the user's namespace lock and, when the task
does not succeed, reverts every namespace under ``user/`` to them before the lock goes to the next
task of the user. Each finding was proven as a test first; all are ``test_defence_*`` now: the three
that worked (a detached write outliving the revert, or landing in the user's next task; a stop
leaving the persisted roots naming an unpinned root) were closed after the review, as their
docstrings say.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel import kernel as kernel_module
from supernet.node.kernel.access import NodePolicy, namespace_of
from supernet.node.kernel.kernel import Kernel, KernelConfig
from supernet.node.kernel.syscalls import TaskSpec
from supernet.node.kernel.trace import TraceTooLargeError
from supernet.sdk.agents.errors import KernelStoppedError

from tests.embedder import SharedMiniLM
from tests.unit.test_failed_task_writes import Journal
from tests.unit.test_validator_attacks import DictStore, registry, signed_task, verify
from tests.unit.test_validator_attacks3 import FakeEngine, NoEmbedder, clean, stand_in_kernel

ALICE = "0x" + "a1" * 20
BOB = ALICE + "ff"  # a user id whose text starts with Alice's whole address
GHOST_DELAY_S = 0.3


class SlowEmbedder(SharedMiniLM):
    """The real embedder; a text starting with ``ghost`` takes a while to embed. On a real node
    this needs no help: `MiniLMEmbedder.embed` runs every embedding in one worker thread, so a few
    dozen detached adds of 8192-character texts queue there for well over a task's end."""

    async def embed(self, texts: list[str]) -> Any:
        if any(t.startswith("ghost") for t in texts):
            await asyncio.sleep(GHOST_DELAY_S)
        return await super().embed(texts)


class Ghost(Agent):
    """Writes a note, leaves a memory write running in a task of its own, and fails at once."""

    agent_id = "ghost"
    description = "Writes, detaches a slow memory write, fails."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("note.txt", "ghost note")  # takes the user's namespace lock
        ctx_task = asyncio.get_running_loop().create_task(ctx.memory.add("ghost entry"))
        _keep.append(ctx_task)
        for _ in range(3):  # the detached add passes the lock check and starts embedding
            await asyncio.sleep(0)
        if input.get("fail", True):
            raise RuntimeError("failed, with a write still in flight")
        return "ok"


_keep: list[asyncio.Task[Any]] = []


class Recaller(Agent):
    """An ordinary memory agent: remembers a fact, thinks a while (a model call), recalls it."""

    agent_id = "recaller"
    description = "Remembers, thinks, recalls."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.memory.add(str(input["fact"]))
        await asyncio.sleep(2 * GHOST_DELAY_S)  # on the node only: the replay answers from the trace
        hits = await ctx.memory.search("fact", k=8)
        return "|".join(sorted(h.text for h in hits))


class Writer(Agent):
    """Writes a file and a memory in its own namespace, and succeeds."""

    agent_id = "writer"
    description = "Writes and succeeds."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("w.txt", "w")
        await ctx.memory.add("w")
        return "written"


class Parent(Agent):
    """Calls the journal agent (which writes in its own namespace), then fails."""

    agent_id = "parent"

    calls_agents = ("journal",)
    description = "Calls journal, then fails."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.agents.call("journal", {"text": "child wrote"})
        raise RuntimeError("the parent failed after its child wrote")


AGENTS = (Journal, Ghost, Recaller, Writer, Parent)


def spec(n: int, agent: str, task_input: Any, user: str = ALICE, timeout_s: float = 60.0) -> TaskSpec:
    return TaskSpec(f"0x{n:064x}", agent, task_input, user=user, fee=1, timeout_s=timeout_s)


async def read(kernel: Kernel, n: int, user: str = ALICE) -> str:
    out = await kernel.run_task(spec(n, "journal", {"read": True}, user=user))
    assert out.status == "ok", out.error
    return out.output


def roots_of(kernel: Kernel) -> tuple[dict[str, str], dict[str, str]]:
    """The live roots (a running task's writes included, which `Kernel.namespace_roots` holds back)."""
    return kernel.memory.roots.snapshot(), kernel.storage.roots.snapshot()


def events(outcome: Any, kind: str) -> list[dict[str, Any]]:
    return [e for e in outcome.trace["events"] if e["kind"] == kind]


# -- attacks ------------------------------------------------------------------------------------------


async def test_defence_a_detached_write_is_waited_for_recorded_and_undone(tmp_path: Path) -> None:
    """Was an attack: a failed task's write survived. The agent started a memory write in a task of
    its own (``create_task(ctx.memory.add(...))``) that was still embedding when the agent raised;
    `release` reverted what had been committed so far and handed the lock on, and the detached add
    then committed on top, outside the lock, in no trace. The kernel now waits for a task's
    syscalls in flight (`Dispatcher.settle`) before it builds the trace and keeps or undoes the
    writes: the detached add is in the failed task's trace, and undone with the rest."""
    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        failed = await kernel.run_task(spec(1, "ghost", {}))
        assert failed.status == "error"
        assert roots_of(kernel) == ({}, {})
        await asyncio.sleep(2 * GHOST_DELAY_S)  # nothing lands late
        assert roots_of(kernel) == ({}, {})
        assert len(events(failed, "memory.add")) == 1  # the detached write, in the task's trace
        _keep.clear()


async def test_defence_a_detached_write_cannot_land_in_the_users_next_task(tmp_path: Path) -> None:
    """Was an attack on an honest node: the user's task 1 (agent ``recaller``) added a memory, left a
    second, slow add running in a task of its own, and failed; the lock went to the user's task 2
    (an ordinary signed request: add a fact, think, search), and task 1's detached add committed in
    the middle of task 2, on top of task 2's root: task 2's search read a root its own add did not
    make, and the validator's replay reported the honest node. The kernel now waits for task 1's
    syscalls before the lock moves on: task 2 verifies clean and never sees the failed task's
    entry."""

    class GhostRecaller(Recaller):
        async def run(self, ctx: AgentContext, input: Any) -> str:
            if input.get("ghost"):
                await ctx.memory.add("a fact, the user's first")  # takes the lock
                _keep.append(asyncio.get_running_loop().create_task(ctx.memory.add("ghost fact")))
                for _ in range(3):
                    await asyncio.sleep(0)
                raise RuntimeError("failed, with a write still in flight")
            return await super().run(ctx, input)

    GhostRecaller.agent_id = "recaller"
    agents = (Journal, Ghost, GhostRecaller, Writer, Parent)
    config = KernelConfig(node_policy=NodePolicy())
    profile = Kernel(FakeEngine(), None, config, agents=registry(agents), embedder=NoEmbedder())
    agent_hash = profile.profile("recaller").hash()
    task_input = {"fact": "the fact"}
    req, task_id = signed_task(GhostRecaller, task_input, agent_hash)
    from tests.unit.test_validator_attacks import USER

    async with stand_in_kernel(tmp_path / "store", agents, embedder=SlowEmbedder()) as kernel:
        ghost = await kernel.run_task(spec(1, "recaller", {"ghost": True}, user=USER.address))
        assert ghost.status == "error"
        honest = await kernel.run_task(
            TaskSpec(task_id, "recaller", task_input, user=USER.address, fee=100, agent_hash=agent_hash)
        )
        _keep.clear()
    assert honest.status == "ok"
    assert "ghost fact" not in honest.output and "the user's first" not in honest.output
    verdict = await verify(DictStore(), req, task_id, honest.trace, agents=agents)
    assert clean(verdict), verdict.findings


async def test_defence_stop_persists_the_roots_it_left(tmp_path: Path) -> None:
    """Was a bug: `KernelExecutor._save_roots` runs after each task's outcome, so it can persist
    another task's in-flight roots (user B finishes while user A's task is between its write and
    its end). When the node then stopped, `Kernel.stop` cancelled A's task and reverted it
    (unpinning A's in-flight root), but nothing saved the roots again: the roots file named a root
    the store no longer pinned. `KernelExecutor.close` now saves the roots after the kernel stops,
    and a running task's writes are not persisted before its receipt is stored at all
    (`Kernel.namespace_roots`: docs/validator.md, "Where a task's roots come from")."""
    from supernet.node.service.db import Database
    from supernet.node.service.kernel_executor import KernelExecutor

    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        db = Database.open(tmp_path / "node.sqlite3")
        executor = KernelExecutor(kernel, "stand-in", 1, db)
        run = kernel.submit(spec(1, "journal", {"text": "in flight", "hang": True}))
        for _ in range(200):
            if kernel.memory.roots.root(namespace_of(ALICE, "journal")) is not None:
                break
            await asyncio.sleep(0.01)
        executor._save_roots()  # what another task's outcome saves meanwhile
        assert namespace_of(ALICE, "journal") not in saved_roots(db)["memory"]
        in_flight = kernel.memory.roots.root(namespace_of(ALICE, "journal"))
        assert in_flight in set(await kernel.store.pin_ls("all"))
        await executor.close()  # the node shuts down: the task is cancelled and reverted
        with pytest.raises(KernelStoppedError):
            await run.outcome()
        assert roots_of(kernel) == ({}, {})
        assert in_flight not in set(await kernel.store.pin_ls("all"))
        assert saved_roots(Database.open(tmp_path / "node.sqlite3"))["memory"] == {}  # no longer named


def saved_roots(db: Any) -> Any:
    saved = db.load_roots()
    assert saved is not None
    return saved.roots


# -- defences -----------------------------------------------------------------------------------------


async def test_defence_other_users_concurrent_writes_survive(tmp_path: Path) -> None:
    """Alice's failing task reverts ``alice/`` only: Bob (whose id starts with Alice's whole address)
    writes while Alice's task holds her lock and fails; Bob's writes stay. The revert prefix ends in
    ``/`` and `namespace_of` is ``user.lower()/agent``, so one user's prefix never covers another's
    namespaces (a user id cannot contain ``/`` and still be an address)."""
    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        alice = kernel.submit(spec(1, "journal", {"text": "alice", "slow": 0.2, "fail": True}))
        await asyncio.sleep(0.05)
        bob = await kernel.run_task(spec(2, "journal", {"text": "bob"}, user=BOB))
        assert bob.status == "ok"
        assert (await alice.outcome()).status == "error"
        assert await read(kernel, 3, BOB) == "bob|['bob']"
        assert await read(kernel, 4) == "-|[]"


async def test_defence_a_users_tasks_take_turns_so_a_revert_hits_only_its_own_writes(tmp_path: Path) -> None:
    """The prefix ``user/`` covers all of the user's agents, but the lock is per user (lowercased):
    a second task of Alice (other agent id, other case of her address) waits for the failing one to
    release, and starts from the reverted roots. Its own writes are kept."""
    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        failing = kernel.submit(spec(1, "journal", {"text": "failing", "slow": 0.2, "fail": True}))
        await asyncio.sleep(0.05)
        other = kernel.submit(spec(2, "writer", {}, user=ALICE.upper().replace("0X", "0x")))
        assert (await failing.outcome()).status == "error"
        assert (await other.outcome()).status == "ok"
        memory, storage = roots_of(kernel)
        assert set(storage) == set(memory) == {namespace_of(ALICE, "writer")}


async def test_defence_a_childs_namespace_is_reverted_too(tmp_path: Path) -> None:
    """A child agent writes in ``user/child``; the parent fails: the child's writes go too (one
    prefix covers them)."""
    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        out = await kernel.run_task(spec(1, "parent", {}))
        assert out.status == "error"
        assert [e["kind"] for e in out.trace["events"]][:3] == ["agent.call", "storage.put", "memory.add"]
        assert roots_of(kernel) == ({}, {})


async def test_defence_a_failed_read_only_task_changes_nothing(tmp_path: Path) -> None:
    """A task that takes the lock, only reads, and fails: roots and pins are as before."""
    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        assert (await kernel.run_task(spec(1, "journal", {"text": "kept"}))).status == "ok"
        before, pins = roots_of(kernel), set(await kernel.store.pin_ls("all"))
        failed = await kernel.run_task(spec(2, "journal", {"read": True, "fail": True}))
        assert failed.status == "error"
        assert roots_of(kernel) == before and set(await kernel.store.pin_ls("all")) >= pins
        assert await read(kernel, 3) == "kept|['kept']"


async def test_defence_a_task_cancelled_by_stop_is_reverted(tmp_path: Path) -> None:
    """`Kernel.stop` cancels a task between its writes and its end: `_execute`'s ``except
    BaseException`` reverts (the store is still open) before re-raising."""
    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        assert (await kernel.run_task(spec(1, "journal", {"text": "kept"}))).status == "ok"
        before = roots_of(kernel)
        run = kernel.submit(spec(2, "journal", {"text": "cancelled", "hang": True}))
        for _ in range(500):
            if roots_of(kernel)[0] != before[0]:
                break
            await asyncio.sleep(0.01)
        assert roots_of(kernel) != before
        await kernel.stop()
        with pytest.raises(KernelStoppedError):
            await run.outcome()
        assert roots_of(kernel) == before
        assert set(before[0].values()) | set(before[1].values()) <= set(await kernel.store.pin_ls("all"))


async def test_defence_a_trace_too_large_to_save_reverts(tmp_path: Path, monkeypatch: Any) -> None:
    """The agent succeeded and wrote, but its trace cannot be saved (no receipt): reverted."""

    async def too_large(*args: Any, **kwargs: Any) -> Any:
        raise TraceTooLargeError("too large")

    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        monkeypatch.setattr(kernel_module, "save_trace", too_large)
        with pytest.raises(TraceTooLargeError):
            await kernel.run_task(spec(1, "journal", {"text": "unsaved"}))
        assert roots_of(kernel) == ({}, {})
        monkeypatch.undo()
        assert await read(kernel, 2) == "-|[]"


async def test_defence_a_reverted_entry_in_the_working_set_is_not_found(tmp_path: Path) -> None:
    """`MemoryManager._sets` keeps the failed task's entry resident (keyed by content CID), but a
    search lists entries from the namespace's current root only: the reverted entry is not found."""
    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        assert (await kernel.run_task(spec(1, "journal", {"text": "kept"}))).status == "ok"
        failed = await kernel.run_task(spec(2, "journal", {"text": "undone", "fail": True}))
        entry = str(events(failed, "memory.add")[0]["entry"])
        assert kernel.memory.is_resident(namespace_of(ALICE, "journal"), entry)
        assert await read(kernel, 3) == "kept|['kept']"


async def test_defence_reverted_blocks_are_no_longer_granted(tmp_path: Path) -> None:
    """The ownership grants of a reverted task's blocks are withdrawn with its writes
    (`OwnershipIndex.revoke`): they were benign (the user's own bytes) but accumulated in the
    persisted grants index, which every task's end writes whole, so unbilled tasks grew it for free
    (tests/unit/test_review_aios_kernel.py). No other user ever gains a grant."""
    async with stand_in_kernel(tmp_path / "store", AGENTS, embedder=SlowEmbedder()) as kernel:
        failed = await kernel.run_task(spec(1, "journal", {"text": "undone", "fail": True}))
        put = events(failed, "storage.put")[0]
        ns = namespace_of(ALICE, "journal")
        assert not kernel.access.owned.owns(ns, str(put["cid"]))
        assert not kernel.access.owned.owns(namespace_of(BOB, "journal"), str(put["cid"]))
        kept = await kernel.run_task(spec(2, "journal", {"text": "kept"}))  # a task that succeeds
        assert kept.status == "ok", kept.error
        assert kernel.access.owned.owns(ns, str(events(kept, "storage.put")[0]["cid"]))
