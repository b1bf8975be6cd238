"""The user's own check that a node showed a task its latest memory and files
(`supernet.sdk.client.freshness`): validators prove a task's first root was written by the user's
committed tasks, not that it is the latest one. Traces come from the node's real kernel on an
embedded store; the client's state is its real state file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.client.freshness import check_latest, namespace_roots
from supernet.sdk.client.state import ClientState
from supernet.sdk.formats.trace import Trace

from tests.unit.test_validator_attacks import NODE, USER
from tests.unit.test_validator_attacks3 import AGENTS, Notes, node_task, stand_in_kernel

FRESH = (True, "1 namespace(s)")


async def run_notes(kernel: Any, text: str) -> tuple[str, Trace]:
    req, task_id = node_task(Notes, {"text": text})
    spec = TaskSpec(
        task_id=task_id,
        agent_id="notes",
        input={"text": text},
        user=USER.address,
        fee=100,
        agent_hash="0x" + req.agent_hash.hex(),
    )
    outcome = await kernel.run_task(spec)
    assert outcome.output == text, outcome.error
    return task_id, Trace.from_dag(outcome.trace)


async def test_a_stale_root_is_caught_and_honest_orders_are_not(tmp_path: Path) -> None:
    """Three tasks of one user, each sent after the one before finished. An honest node starts
    each from the last one's root; a node that puts the namespace back to where the first task left
    it (memory the second task wrote, hidden from the third) is caught by the client."""
    state = ClientState.open(tmp_path / "client")
    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        a, trace_a = await run_notes(kernel, "first")
        after_a = kernel.storage.roots.snapshot()
        b, trace_b = await run_notes(kernel, "second")
        get = kernel.store.get_dag
        assert await check_latest(state.roots, NODE.address, a, 1.0, 2.0, trace_a, get) == (
            True,
            "1 namespace(s)",
        )
        assert await check_latest(state.roots, NODE.address, b, 3.0, 4.0, trace_b, get) == FRESH
        for root in after_a.values():  # the cheat: the second task's write is not shown
            await kernel.store.pin_add(root)
        kernel.storage.roots.restore(after_a)
        c, trace_c = await run_notes(kernel, "third")
        ok, detail = await check_latest(state.roots, NODE.address, c, 5.0, 6.0, trace_c, get) or (True, "")
    assert not ok and f"task {b}" in detail, detail
    (first_c, _), (_, last_a) = namespace_roots(trace_c).popitem()[1], namespace_roots(trace_a).popitem()[1]
    assert first_c == last_a  # a root the user's own committed task wrote: validators accept it
    state.save()  # what the client saw survives a restart
    again = ClientState.open(tmp_path / "client")
    assert again.roots == state.roots and next(iter(again.roots.values())).task == c


async def test_writes_by_another_device_in_between_are_not_stale(tmp_path: Path) -> None:
    """The same user's other device ran a task between two of this client's: the later task
    starts from a root written on top of the one this client saw, which is fresh. A task sent
    before the earlier one finished is not judged against it (they may run in either order)."""
    state = ClientState.open(tmp_path / "client")
    async with stand_in_kernel(tmp_path / "store", AGENTS) as kernel:
        get = kernel.store.get_dag
        a, trace_a = await run_notes(kernel, "mine")
        await check_latest(state.roots, NODE.address, a, 1.0, 2.0, trace_a, get)
        await run_notes(kernel, "from my phone")  # not this client's: never checked here
        c, trace_c = await run_notes(kernel, "mine again")
        assert await check_latest(state.roots, NODE.address, c, 5.0, 6.0, trace_c, get) == (
            True,
            "1 namespace(s)",
        )
        snapshot = dict(state.roots)
        kernel.storage.roots.restore({})  # a stale (empty) namespace, but the task was sent early
        d, trace_d = await run_notes(kernel, "sent before the last one finished")
        assert await check_latest(state.roots, NODE.address, d, 5.5, 7.0, trace_d, get) == (
            True,
            "1 namespace(s)",
        )
    assert snapshot != state.roots  # the newest finished task's roots are remembered
