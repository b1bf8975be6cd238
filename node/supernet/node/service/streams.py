"""In-memory fan-out of generated text to event-stream subscribers.

Each running task has a :class:`TokenStream`: the executor pushes text pieces, any number of
subscribers iterate them (a late subscriber first gets what was already produced). Named events
other than text (``confirmation_required``: a tool call waits for its user) travel in the same
order as :class:`StreamEvent` items (:meth:`TokenStream.push_event`). A stream ends with
:meth:`TokenStream.close`. Streams live only in memory: after a restart a finished
task's output is served from the database instead.

>>> hub = StreamHub()
>>> s = hub.open("t1"); s.push("Hel"); s.push("lo"); s.close()
>>> [p async for p in hub.get("t1").subscribe()]  # doctest: +SKIP
['Hel', 'lo']
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


async def until(pieces: AsyncGenerator[T, None], deadline: float) -> AsyncGenerator[T, None]:
    """``pieces`` until they end, or ``TimeoutError`` at ``deadline`` (event-loop time): the
    deadline bounds each wait for the next piece, never the reader's time across a ``yield``. A
    connection is a resource a peer must not hold forever (``api.max_stream_s``). Closing it
    (``contextlib.aclosing``) closes ``pieces``, so a reader that leaves unsubscribes at once."""
    loop = asyncio.get_running_loop()
    try:
        while True:
            try:
                piece = await asyncio.wait_for(anext(pieces), deadline - loop.time())
            except StopAsyncIteration:
                return
            yield piece
    finally:
        await pieces.aclose()


@dataclass(frozen=True)
class StreamEvent:
    """A named event of a task's stream besides its text (sent as SSE ``event`` with JSON data)."""

    event: str
    data: Mapping[str, Any]


class TokenStream:
    """The text pieces of one task, replayable and live."""

    def __init__(self) -> None:
        self._pieces: list[str | StreamEvent] = []
        self._closed = False
        self._changed = asyncio.Condition()
        self._waiters = 0

    def push(self, piece: str) -> None:
        """Append a piece and wake subscribers (call from the event loop)."""
        if self._closed or not piece:
            return
        self._pieces.append(piece)
        self._notify()

    def push_event(self, event: str, data: Mapping[str, Any]) -> None:
        """Append a named event (e.g. ``confirmation_required``) and wake subscribers."""
        if self._closed:
            return
        self._pieces.append(StreamEvent(event, dict(data)))
        self._notify()

    def close(self) -> None:
        """Mark the stream finished."""
        self._closed = True
        self._notify()

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        if self._waiters:
            asyncio.get_running_loop().create_task(wake())

    @property
    def closed(self) -> bool:
        """True once the task finished producing text."""
        return self._closed

    def _ready(self, sent: int) -> bool:
        return self._closed or sent < len(self._pieces)

    async def subscribe(self) -> AsyncGenerator[str, None]:
        """Yield every text piece, from the first, until the stream is closed."""
        async for piece in self.subscribe_all():
            if isinstance(piece, str):
                yield piece

    async def subscribe_all(self) -> AsyncGenerator[str | StreamEvent, None]:
        """Yield every piece (text, or a :class:`StreamEvent`), from the first, until the stream
        is closed."""
        sent = 0
        while True:
            while sent < len(self._pieces):
                sent += 1
                yield self._pieces[sent - 1]
            if self._closed:
                return
            async with self._changed:
                self._waiters += 1
                try:
                    await self._changed.wait_for(partial(self._ready, sent))
                finally:
                    self._waiters -= 1


class StreamHub:
    """Streams of the tasks this process is running (dropped a while after they end)."""

    def __init__(self, keep: int = 1024) -> None:
        self._streams: dict[str, TokenStream] = {}
        self._keep = keep

    def open(self, task_id: str) -> TokenStream:
        """Create (or return) the stream of ``task_id``."""
        stream = self._streams.get(task_id)
        if stream is None:
            stream = self._streams[task_id] = TokenStream()
            self._prune()
        return stream

    def get(self, task_id: str) -> TokenStream | None:
        """The stream of ``task_id`` if this process has one."""
        return self._streams.get(task_id)

    def _prune(self) -> None:
        if len(self._streams) <= self._keep:
            return
        for tid in [t for t, s in self._streams.items() if s.closed][: len(self._streams) - self._keep]:
            del self._streams[tid]
