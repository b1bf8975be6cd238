"""A user's tasks queued behind the user's namespace lock do not hold the kernel's task slots.

The kernel runs at most ``max_concurrent_tasks`` tasks, and one task of a user at a time uses the
user's memory and files (from its first such syscall to its end). Tasks of that user queued behind
the lock used to keep their slots: one user's memory tasks filled every slot while the first
waited (on its user's confirmation, on the model), and no other user's task started. Now a task
gives its slot up while it waits for the lock (`supernet.node.kernel.slots`).
"""

from __future__ import annotations

import asyncio
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.kernel.errors import ConfirmationRequiredError
from supernet.node.kernel.slots import TaskSlots
from supernet.node.kernel.syscalls import TaskSpec
from supernet.sdk.chain.eip712 import Confirmation, sign_confirmation

from tests.unit.test_kernel_access_groups import DOMAIN, OWNER, REGISTERED, SEND, _pausing
from tests.unit.test_kernel_access_groups import spec as access_spec
from tests.unit.test_validator_attacks3 import stand_in_kernel

ALICE, BOB = "0x" + "a1" * 20, "0x" + "b0" * 20
HOLD = asyncio.Event()


class Holder(Agent):
    """Writes the user's file, then waits for the test (a task waiting for its user's confirmation
    of a payment, holding the user's lock all the while)."""

    agent_id = "holder"
    description = "Writes a file and waits."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("a.txt", "held")
        await HOLD.wait()
        return "held"


class Writer(Agent):
    """Writes the user's file."""

    agent_id = "writer"
    description = "Writes a file."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        await ctx.storage.put("b.txt", str(input))
        return "written"


class Plain(Agent):
    """Uses neither memory nor files."""

    agent_id = "plain"
    description = "Echoes."

    async def run(self, ctx: AgentContext, input: Any) -> str:
        return str(input)


def spec(n: int, agent: str, user: str, timeout_s: float = 60.0) -> TaskSpec:
    return TaskSpec(
        task_id=f"0x{n:064x}", agent_id=agent, input=f"x{n}", user=user, fee=1, timeout_s=timeout_s
    )


async def test_one_users_queued_tasks_leave_the_slots_to_other_users(tmp_path: Path) -> None:
    HOLD.clear()
    async with stand_in_kernel(tmp_path / "store", (Holder, Writer, Plain), max_concurrent_tasks=2) as kernel:
        holder = kernel.submit(spec(1, "holder", ALICE))
        await asyncio.sleep(0.05)  # it holds Alice's lock and one slot
        writers = [kernel.submit(spec(2 + i, "writer", ALICE)) for i in range(3)]  # queue on the lock
        stuck = kernel.submit(spec(9, "writer", ALICE, timeout_s=0.3))  # gives up while queued
        await asyncio.sleep(0.05)
        bob = await asyncio.wait_for(kernel.submit(spec(10, "plain", BOB)).outcome(), 5)
        assert bob.status == "ok" and bob.output == "x10"  # ran while Alice's tasks queue
        gone = await stuck.outcome()
        assert gone.status == "timeout", gone.error
        assert not holder.done() and not any(w.done() for w in writers)
        HOLD.set()
        outcomes = [await run.outcome() for run in (holder, *writers)]
        assert [o.status for o in outcomes] == ["ok"] * 4, [o.error for o in outcomes]
        after = await asyncio.wait_for(kernel.submit(spec(11, "writer", ALICE)).outcome(), 5)
        assert after.status == "ok"  # the timed-out waiter left Alice's lock usable
        assert kernel._slots.free == 2  # every slot back: none lost, none released twice


async def test_a_task_paused_for_its_users_confirmation_gives_its_slot_up() -> None:
    """The same for a tool call waiting for the user's signed confirmation (up to
    ``confirmation_timeout_s``): the slot is free meanwhile, and taken again after, whether the
    confirmation came or not (the agent goes on either way)."""
    slots = TaskSlots(1)
    for timeout, confirmed in ((5.0, True), (0.1, False)):
        access, seen = _pausing(timeout)
        s = access_spec()
        async with slots.hold() as slot:

            async def syscall(slot: Any = slot, access: Any = access, s: Any = s) -> None:
                async with slots.running(slot):  # as the dispatcher runs each syscall
                    caps = access.capabilities(s, REGISTERED)
                    await access.authorize_tool(s, caps, SEND, {"amount": 1}, partial(slots.away, slot))

            call = asyncio.create_task(syscall())
            for _ in range(500):  # the watcher is a plain callback: poll for its pending call
                if seen:
                    break
                await asyncio.sleep(0.01)
            assert slots.free == 1 and not slot.held  # paused: another task may run
            async with slots.hold():
                pass
            if confirmed:
                key = seen[0].action_hash
                conf = Confirmation(bytes.fromhex(s.task_id[2:]), bytes.fromhex(key[2:]))
                access.confirm(s.task_id, key, sign_confirmation(conf, DOMAIN, OWNER))
                await call
            else:
                with pytest.raises(ConfirmationRequiredError):
                    await call
            assert slot.held and slots.free == 0  # running again, in a slot
        assert slots.free == 1
