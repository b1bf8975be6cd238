"""`TaskStream`: a paid task's answer as an async iterator of text pieces.

>>> stream = client.stream("Tell me a story.")     # doctest: +SKIP
>>> async for piece in stream:                      # doctest: +SKIP
...     print(piece, end="")
>>> stream.result.task_id                           # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from supernet.sdk.client.types import ClientError, PreparedTask, TaskResult, parse
from supernet.sdk.node_api import TaskPublic

if TYPE_CHECKING:
    from supernet.sdk.client.client import Client

CHECKED_AGENTS = frozenset({"chat"})
"""Agents whose streamed text is their answer (one LLM call whose reply is the output), so the
client checks the two agree (`stream_problem`). Other agents stream every LLM call of the task
(steps, tool calls): their stream is progress, not the answer; only the output is committed."""


def _align(streamed: str, output: str) -> tuple[int, int] | None:
    """How far ``streamed`` and ``output`` agree from their start: ``(i, j)`` characters of each,
    stopping when either ends; None on a differing character. A run of k U+FFFD in the stream
    (a character whose bytes were split across tokens when it was streamed) stands for 1..k
    characters of the output."""
    i = j = 0
    while i < len(streamed) and j < len(output):
        if streamed[i] != "\ufffd":
            if streamed[i] != output[j]:
                return None
            i, j = i + 1, j + 1
            continue
        k = 0
        while i < len(streamed) and streamed[i] == "\ufffd":
            i, k = i + 1, k + 1
        if i == len(streamed):
            return i, min(len(output), j + k)
        for m in range(1, k + 1):
            if j + m <= len(output) and (j + m == len(output) or output[j + m] == streamed[i]):
                j += m
                break
        else:
            return None
    return i, j


def _stops(task_input: Any) -> list[str]:
    stop = task_input.get("stop") if isinstance(task_input, dict) else None
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]


def _stop_cut(rest: str, last_piece: str, stops: list[str]) -> bool:
    """Whether ``rest`` (what was streamed after the output) is what an honest node's stop cut
    leaves: a stop string, completed by the last piece streamed, then at most the rest of that
    piece (or only whitespace). Text streamed in later pieces was never the model's answer."""
    if not rest.strip():
        return True
    for stop in stops:
        if stop and rest.startswith(stop):
            after = rest[len(stop) :]
            if not after.strip() or len(after) < len(last_piece):  # the stop ends in the last piece
                return True
    return False


def stream_problem(
    agent: str, task_input: Any, pieces: Sequence[str], output: str, *, complete: bool = True
) -> str | None:
    """None if the text a node streamed for a task agrees with its committed output, else why not.

    The rule (an honest node's, docs/interfaces.md "Streaming"): for a `CHECKED_AGENTS` agent, the
    streamed ``pieces`` joined start with the output; what follows it is only whitespace, or one of
    the input's ``stop`` strings completed by the last piece (the node cuts the output at the first
    stop string, after streaming the token that completed it, and streams nothing after it). A
    stream that ended early (``complete`` false) must be a start of the output. Other agents are
    not checked (None). A plain string is read as one piece per character (the strictest reading).
    """
    if agent not in CHECKED_AGENTS:
        return None
    streamed = "".join(pieces)
    at = _align(streamed, output)
    if at is not None:
        i, j = at
        if j == len(output):
            if _stop_cut(streamed[i:], pieces[-1] if len(pieces) else "", _stops(task_input)):
                return None
        elif not complete and i == len(streamed):
            return None
    return (
        f"the node streamed {streamed[:120]!r}{'...' if len(streamed) > 120 else ''} but its committed "
        f"output is {output[:120]!r}{'...' if len(output) > 120 else ''}"
    )


def check_stream(p: PreparedTask, pieces: Sequence[str], final: TaskPublic, *, complete: bool = True) -> None:
    """Raise if a done task's streamed text is not its committed output (`stream_problem`).

    Raises:
        ClientError: the node showed the user one text and committed another.
    """
    if final.status != "done":
        return
    problem = stream_problem(p.agent, p.input, pieces, final.output or "", complete=complete)
    if problem is not None:
        raise ClientError(
            f"task {p.task_id}: node {p.node.address} streamed text that is not the output its receipt "
            f"commits ({problem}); do not trust what was streamed (the task was charged: keep this "
            "error as evidence)"
        )


class TaskStream:
    """Submitted when iteration starts; ``result`` is set once the answer is complete.

    Raises (while iterating):
        ClientError: no node, a refusal, or a failed task (as `Client.submit_task`), or text
            streamed that is not the committed output (`check_stream`; ``result`` stays None).
    """

    def __init__(self, client: Client, task_input: str | dict[str, Any], options: dict[str, Any]) -> None:
        self._client, self._input, self._options = client, task_input, options
        self.task_id: str | None = None
        self.result: TaskResult | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        p = await self._client._submit(self._input, **self._options)
        self.task_id = p.task_id
        final: TaskPublic | None = None
        pieces: list[str] = []
        async for event, data in self._client.stream_events(p.node.url, p.task_id):
            if event == "token":
                pieces.append(str(data["text"]))
                yield pieces[-1]
            elif event in ("done", "error"):
                final = parse(TaskPublic, data, f"{p.node.url} {event} event")
                break
        complete = final is not None
        if final is None:  # the stream ended early ("pending"): the task's state says the rest
            final = await self._client.task(p.task_id, p.node.url)
        result = self._client._finish(p, final)
        if result is None:
            raise ClientError(f"task {p.task_id} {final.status}: {final.error}")
        check_stream(p, pieces, final, complete=complete)  # no result if they disagree
        self.result = result
