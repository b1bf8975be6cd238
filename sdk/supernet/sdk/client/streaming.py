"""`TaskStream`: a paid task's answer as an async iterator of text pieces.

>>> stream = client.stream("Tell me a story.")     # doctest: +SKIP
>>> async for piece in stream:                      # doctest: +SKIP
...     print(piece, end="")
>>> stream.result.task_id                           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from supernet.sdk.client.types import ClientError, TaskResult, parse
from supernet.sdk.node_api import TaskPublic

if TYPE_CHECKING:
    from supernet.sdk.client.client import Client


class TaskStream:
    """Submitted when iteration starts; ``result`` is set once the answer is complete.

    Raises (while iterating):
        ClientError: no node, a refusal, or a failed task (as `Client.submit_task`).
    """

    def __init__(self, client: Client, task_input: str | dict[str, Any], options: dict[str, Any]) -> None:
        self._client, self._input, self._options = client, task_input, options
        self.task_id: str | None = None
        self.result: TaskResult | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        p = await self._client._submit(self._input, **self._options)
        self.task_id = p.task_id
        final: TaskPublic | None = None
        async for event, data in self._client.stream_events(p.node.url, p.task_id):
            if event == "token":
                yield str(data["text"])
            elif event in ("done", "error"):
                final = parse(TaskPublic, data, f"{p.node.url} {event} event")
                break
        if final is None:  # the stream ended early ("pending"): the task's state says the rest
            final = await self._client.task(p.task_id, p.node.url)
        self.result = self._client._finish(p, final)
        if self.result is None:
            raise ClientError(f"task {p.task_id} {final.status}: {final.error}")
