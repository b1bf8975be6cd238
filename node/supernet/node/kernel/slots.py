"""The kernel's task slots: at most ``max_concurrent_tasks`` tasks run at once, and a task waiting
for another task of its user, or for its user's confirmation, gives its slot up.

A task takes its user's namespace lock at its first memory or file syscall and keeps it to its end
(`supernet.node.kernel.dispatch.Dispatcher`). If the tasks queued behind that lock kept their
slots, one user's memory tasks would fill every slot while the first waits (on a confirmation, on
the model), and no other user's task would start: a user could stall the node for everyone.
The same holds for tasks paused for their user's confirmation of an irreversible tool call (up to
``confirmation_timeout_s`` each). Giving the slot up while waiting, and taking one again after,
keeps the slots for tasks that can run. It cannot deadlock: a task holding a slot never waits for
a lock it does not hold while holding it.

>>> async def demo():
...     slots = TaskSlots(1)
...     async with slots.hold() as held:
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
from dataclasses import dataclass


@dataclass
class Slot:
    """One task's claim on a slot (``held``: whether it has one right now)."""

    held: bool = False


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
        """Run a task in a slot (waiting for one), released at the end unless it is away."""
        await self._sem.acquire()
        slot = Slot(held=True)
        try:
            yield slot
        finally:
            if slot.held:
                slot.held = False
                self._sem.release()

    @asynccontextmanager
    async def away(self, slot: Slot | None) -> AsyncIterator[None]:
        """Give ``slot`` up around a wait for another task or for the user, and take a slot again
        after it, also when the wait fails (a confirmation that never came: the agent goes on). A
        cancelled task does not take one again (it is ending, and `hold` has nothing to release)."""
        if slot is None or not slot.held:
            yield
            return
        slot.held = False
        self._sem.release()
        try:
            yield
        except Exception:
            await self._take(slot)
            raise
        await self._take(slot)

    async def _take(self, slot: Slot) -> None:
        await self._sem.acquire()
        slot.held = True
