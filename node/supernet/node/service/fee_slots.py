"""The worker's task slots, handed out by fee: the first place a task waits reads what it paid.

Tasks wait for one of `TaskWorker`'s slots before the kernel sees them, and with the default
sizes (16 worker slots, a 16-sequence LLM batch) a one-call task never waits anywhere else: a
semaphore there, woken in arrival order, made an offer above the price buy nothing while the node
billed it in full (tests/unit/test_review_chat_and_scheduling.py). A freed slot goes to the waiting
task with the highest priority (its fee, under the `fair` policy), ties in arrival order.

>>> async def demo():
...     slots, order = FeeSlots(1), []
...     async def task(name, fee):
...         async with slots.slot(fee):
...             order.append(name)
...     async with slots.slot(0):  # the one slot is busy while both arrive
...         waiting = [asyncio.create_task(task("cheap", 1)), asyncio.create_task(task("rich", 100))]
...         await asyncio.sleep(0)
...     await asyncio.gather(*waiting)
...     return order
>>> import asyncio; asyncio.run(demo())
['rich', 'cheap']
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class FeeSlots:
    """``n`` slots; a freed one goes to the highest ``priority`` waiting, ties first come."""

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("at least one slot")
        self._free = n
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []  # (-priority, arrival, grant)
        self._arrivals = itertools.count()

    @property
    def free(self) -> int:
        """Slots no task holds."""
        return self._free

    @property
    def waiting(self) -> int:
        """Tasks waiting for a slot."""
        return sum(1 for *_, grant in self._waiting if not grant.done())

    @asynccontextmanager
    async def slot(self, priority: int = 0) -> AsyncIterator[None]:
        """Hold a slot for the block, waiting behind every higher ``priority`` (and earlier equal)."""
        if self._free > 0 and not self.waiting:
            self._free -= 1
        else:
            grant: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (-priority, next(self._arrivals), grant))
            try:
                await grant
            except asyncio.CancelledError:
                if grant.done() and not grant.cancelled():
                    self._release()  # granted as it was cancelled: the slot passes on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            *_, grant = heapq.heappop(self._waiting)
            if not grant.done():  # a waiter cancelled meanwhile left its grant cancelled
                grant.set_result(None)
                return
        self._free += 1
