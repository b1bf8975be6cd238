"""The kernel's task slots: at most ``max_concurrent_tasks`` tasks run at once, and a task waiting
for another task of its user, or for its user's confirmation, gives its slot up.

A task takes its user's namespace lock at its first memory or file syscall and keeps it to its end
(`supernet.node.kernel.dispatch.Dispatcher`). If the tasks queued behind that lock kept their
slots, one user's memory tasks would fill every slot while the first waits (on a confirmation, on
the model), and no other user's task would start: a user could stall the node for everyone.
The same holds for tasks paused for their user's confirmation of an irreversible tool call (up to
``confirmation_timeout_s`` each). Giving the slot up while waiting, and taking one again after,
keeps the slots for tasks that can run. The slot is the task's: it is given up only while none of
the task's syscalls runs (an agent's concurrent LLM call keeps it), and any syscall of a task without
its slot takes one first, so a task never works slotless. It cannot deadlock: a task holding a slot
never waits for a lock it does not hold while holding it.

>>> async def demo():
...     slots = TaskSlots(1)
...     async with slots.hold() as held, slots.running(held):
...         async with slots.away(held):
...             async with slots.hold():  # another task runs meanwhile
...                 pass
...     return slots.free
>>> import asyncio; asyncio.run(demo())
1
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field


@dataclass
class Slot:
    """One task's claim on a slot.

    Attributes:
        held: Whether the task has a slot right now.
        running: The task's syscalls in flight that are not waiting for another task or the user.
    """

    held: bool = False
    running: int = 0
    closed: bool = False  # the task ended: a syscall it left running takes no slot any more
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)  # one taker at a time


class TaskSlots:
    """``n`` slots shared by the kernel's tasks."""

    def __init__(self, n: int) -> None:
        self._sem = asyncio.Semaphore(n)

    @property
    def free(self) -> int:
        """Slots no task holds."""
        return self._sem._value  # asyncio.Semaphore keeps its count here; no public accessor

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[Slot]:
        """Run a task in a slot (waiting for one), released at the end if it holds one then."""
        await self._sem.acquire()
        slot = Slot(held=True)
        try:
            yield slot
        finally:
            slot.closed = True
            if slot.held:
                slot.held = False
                self._sem.release()

    @asynccontextmanager
    async def running(self, slot: Slot | None) -> AsyncIterator[None]:
        """Around one syscall of the task: it runs in the task's slot (taken back first if the task
        gave it up while another of its syscalls waits)."""
        if slot is None:
            yield
            return
        await self._take(slot)
        slot.running += 1
        try:
            yield
        finally:
            slot.running -= 1

    @asynccontextmanager
    async def away(self, slot: Slot | None) -> AsyncIterator[None]:
        """Around a syscall's wait for another task or for the user: the task gives its slot up if
        none of its other syscalls is running, and the syscall takes one back after the wait, however
        the wait ended (a cancelled syscall's task may go on: an agent's own timeout)."""
        if slot is None:
            yield
            return
        slot.running -= 1
        if slot.running == 0 and slot.held:
            slot.held = False
            self._sem.release()
        try:
            yield
        finally:
            await self._take(slot)
            slot.running += 1

    async def _take(self, slot: Slot) -> None:
        async with slot.lock:
            if slot.held or slot.closed:
                return
            await self._sem.acquire()
            if slot.closed:  # the task ended while this syscall waited for a slot
                self._sem.release()
            else:
                slot.held = True
