"""`TaskStream`: a paid task's answer as an async iterator of text pieces.

>>> stream = client.stream("Tell me a story.")     # doctest: +SKIP
>>> async for piece in stream:                      # doctest: +SKIP
...     print(piece, end="")
>>> stream.result.task_id                           # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from supernet.sdk.client.types import ClientError, PreparedTask, TaskResult, parse
from supernet.sdk.formats.trace import MAX_TRACE_BYTES
from supernet.sdk.node_api import TaskPublic

if TYPE_CHECKING:
    from supernet.sdk.client.client import Client

T = TypeVar("T")

FOLLOW_WITHIN_S = 900.0
"""Longest a client follows one task (its stream, then polling its state): `Client.wait`'s bound.
A node that streams, pings or stays "running" for ever must not hold the user's call for ever."""

CHECKED_AGENTS = frozenset({"chat"})
"""Agents whose streamed text is their answer (one LLM call whose reply is the output), so the
client checks the two agree (`stream_problem`). Other agents stream every LLM call of the task
(steps, tool calls): their stream is progress, not the answer; only the output is committed."""


def _align(streamed: str, output: str) -> tuple[int, int] | None:
    """How far ``streamed`` and ``output`` agree from their start: ``(i, j)`` characters of each,
    stopping when either ends; None on a differing character. A run of k U+FFFD in the stream
    (a character whose bytes were split across tokens when it was streamed) stands for 1..k
    characters of the output, none of them ASCII: a split character is a multi-byte one, so the
    run never hides a word of ASCII text."""
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
        wide = 0  # how many of the next k output characters could have been split
        while wide < k and j + wide < len(output) and not output[j + wide].isascii():
            wide += 1
        if wide == 0 and output[j] != "\ufffd":
            return None
        if i == len(streamed):
            return i, j + max(wide, 1)
        for m in range(1, max(wide, 1) + 1):
            if j + m == len(output) or output[j + m] == streamed[i]:
                j += m
                break
        else:
            return None
    return i, j


def stops_of(task_input: Any) -> list[str]:
    """A chat input's ``stop`` strings (none for any other input)."""
    stop = task_input.get("stop") if isinstance(task_input, dict) else None
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [s for s in stop if isinstance(s, str)]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``text`` before the earliest stop string, and whether one was found: the node's rule for an
    OpenAI answer's text (`supernet.node.service.routes_chat`) and the drop-in's check of it."""
    cuts = [i for i in (text.find(s) for s in stops if s) if i != -1]
    return (text[: min(cuts)], True) if cuts else (text, False)


def stream_matches(streamed: str, content: str) -> bool:
    """Whether the joined text of a stream is ``content`` (an OpenAI answer's text): verbatim,
    but for U+FFFD runs standing for characters split across tokens (`_align`) and whitespace at
    the end. No stop string is cut here: the caller read the stream as it came."""
    at = _align(streamed, content)
    if at is None:
        return False
    i, j = at
    return not streamed[i:].strip() and not content[j:].strip("\ufffd")


class StopCutter:
    """What the user is shown of a chat stream: the text up to the first ``stop`` string, never
    past it. A piece's text is held back while it could be the start of a stop string, and shown
    once it cannot (or at the end, `flush`). The node cuts its output at the same place, so what
    is shown is what its receipt commits; text a node streams after a stop (however it splits its
    pieces) is never shown (tests/unit/test_review_client_verify2.py). The node's OpenAI-compatible
    stream sends through the same cutter."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self._text, self._shown, self._cut = "", 0, False

    def feed(self, piece: str) -> str:
        """The text of ``piece`` (and of earlier held-back text) that can be shown now."""
        if self._cut:
            return ""
        self._text += piece
        start = max(0, self._shown - self._longest)
        found = [i for i in (self._text.find(s, start) for s in self._stops) if i != -1]
        if found:
            self._cut = True
            return self._show(min(found))
        hold = max(
            (k for s in self._stops for k in range(1, len(s)) if self._text.endswith(s[:k])),
            default=0,
        )
        return self._show(len(self._text) - hold)

    def flush(self) -> str:
        """At the stream's end: what was held back (it never became a stop string)."""
        return "" if self._cut else self._show(len(self._text))

    @property
    def shown(self) -> str:
        """Everything shown so far."""
        return self._text[: self._shown]

    @property
    def stopped(self) -> bool:
        """Whether a stop string was found (nothing more will be shown)."""
        return self._cut

    def _show(self, upto: int) -> str:
        out = self._text[self._shown : max(upto, self._shown)]
        self._shown = max(upto, self._shown)
        return out


def shown_cutter(agent: str, task_input: Any) -> StopCutter:
    """The cutter of what a stream of ``agent`` shows (its input's stop strings; none for an agent
    whose stream is progress, not the answer)."""
    return StopCutter(stops_of(task_input) if agent in CHECKED_AGENTS else [])


def stream_problem(
    agent: str, task_input: Any, pieces: Sequence[str], output: str, *, complete: bool = True
) -> str | None:
    """None if the text a node streamed for a task agrees with its committed output, else why not.

    The rule (an honest node's, docs/interfaces.md "Streaming"): for a `CHECKED_AGENTS` agent,
    what the user is shown of the streamed ``pieces`` (cut at the first of the input's ``stop``
    strings, `StopCutter`) is the output, then at most whitespace; a run of U+FFFD in the stream
    stands for characters split across tokens, and the output may end in U+FFFD the stream never
    showed (an incomplete last character). A stream that ended early (``complete`` false) must be a
    start of the output. Other agents are not checked (None).
    """
    if agent not in CHECKED_AGENTS:
        return None
    cutter = shown_cutter(agent, task_input)
    shown = "".join(cutter.feed(p) for p in pieces) + cutter.flush()
    at = _align(shown, output)
    if at is not None:
        i, j = at
        if i == len(shown) and not complete:
            return None
        if not shown[i:].strip() and not output[j:].strip("\ufffd"):
            return None
    return (
        f"the node streamed {shown[:120]!r}{'...' if len(shown) > 120 else ''} but its committed "
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


class StreamBound:
    """What following one task's stream may take: at most the signed profile's token budget of
    text pieces (``max_llm_tokens``: an honest node streams one piece per generated token, or the
    finished output as one piece), at most `MAX_TRACE_BYTES` of text (all of it is generated text,
    which fits the task's trace), and `FOLLOW_WITHIN_S` from the start, stream and polling
    together. Past any of them the client stops following, with a `ClientError` naming the node:
    the task stays accepted, for `Client.verify` (or `Client.task`) later."""

    def __init__(self, p: PreparedTask, within_s: float = FOLLOW_WITHIN_S) -> None:
        self.p, self.within_s = p, within_s
        self.max_pieces = p.limits.max_llm_tokens if p.limits is not None else None
        self.pieces = self.size = 0
        self.deadline = asyncio.get_running_loop().time() + within_s

    def take(self, text: str) -> str:
        """``text``, one streamed piece, counted (raises past the bound, before it is kept)."""
        self.pieces += 1
        self.size += len(text.encode("utf-8", "surrogatepass"))
        too_many = self.max_pieces is not None and self.pieces > self.max_pieces
        if too_many or self.size > MAX_TRACE_BYTES:
            raise self._stopped(
                f"streamed {self.pieces} pieces ({self.size} bytes) of text, more than the signed "
                f"profile lets the task generate ({self.max_pieces} tokens, {MAX_TRACE_BYTES} bytes)"
            )
        return text

    def left(self) -> float:
        """Seconds left to follow the task."""
        return max(0.0, self.deadline - asyncio.get_running_loop().time())

    async def events(self, source: AsyncGenerator[T, None]) -> AsyncGenerator[T, None]:
        """``source``'s items until it ends; raises at the deadline (the wait for each item is
        bounded, never the caller's time between them)."""
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self.deadline):
                        item = await anext(source)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise self.unfinished() from None
                yield item
        finally:
            await source.aclose()

    async def polled(self, client: Client) -> TaskPublic:
        """The task's state once its stream ended before the task did ("pending"): polled for the
        time left, raising if the task has not ended by then."""
        final = await client.wait(self.p.task_id, self.p.node.url, within_s=self.left())
        if final.status not in ("done", "failed", "refused"):
            raise self.unfinished()
        return final

    def unfinished(self) -> ClientError:
        """The error of a task not finished when the follow's time is up."""
        return self._stopped(f"did not finish the task within {self.within_s:g} s of following it")

    def _stopped(self, what: str) -> ClientError:
        p = self.p
        return ClientError(
            f"node {p.node.address} at {p.node.url} {what}: stopped following task {p.task_id} (it was "
            f"accepted and its voucher sent; `supernet task verify {p.task_id}` checks its receipt later)"
        )


_LINE_END = re.compile(r"\r\n|\r|\n")


async def sse_events(text: AsyncIterator[str], what: str, bound: int) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` of a ``text/event-stream`` read as ``text`` chunks (the WHATWG rules:
    lines end with CR, LF or CRLF; ``data`` lines of one event are joined by LF; a blank line ends
    the event; ``:`` lines are comments, such as pings). A line, or an event's data, longer than
    ``bound`` characters is refused (`ClientError`): no honest event is, and nothing the node sends
    makes the client hold more."""
    rest, event, size = "", "", 0
    data: list[str] = []
    ended = False
    stream = aiter(text)
    while not ended:
        try:
            rest += await anext(stream)
            held = rest.endswith("\r")  # maybe the first half of a CRLF
        except StopAsyncIteration:  # a CR held back at the very end ends its line after all
            ended, held = True, False
        *lines, rest = _LINE_END.split(rest[:-1] if held else rest)
        rest += "\r" if held else ""
        if len(rest) > bound:
            raise ClientError(
                f"{what}: an event stream line over {bound} characters: not read", malformed=True
            )
        for line in lines:
            if not line:
                if data:
                    yield event or "message", "\n".join(data)
                event, data, size = "", [], 0
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "data":
                data.append(value)
                size += len(value) + 1
                if size > bound:
                    raise ClientError(
                        f"{what}: an event's data over {bound} characters: not read", malformed=True
                    )
            elif field == "event":
                event = value


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
        cutter = shown_cutter(p.agent, p.input)
        bound = StreamBound(p)
        events = bound.events(self._client.stream_events(p.node.url, p.task_id))
        async with contextlib.aclosing(events):
            async for event, data in events:
                if event == "token":
                    pieces.append(bound.take(str(data.get("text", ""))))
                    if shown := cutter.feed(pieces[-1]):
                        yield shown
                elif event in ("done", "error"):
                    final = parse(TaskPublic, data, f"{p.node.url} {event} event")
                    break
        if rest := cutter.flush():
            yield rest
        complete = final is not None
        if final is None:  # the stream ended early ("pending"): the task's state says the rest
            final = await bound.polled(self._client)
        result = self._client._finish(p, final)
        if result is None:
            raise ClientError(f"task {p.task_id} {final.status}: {final.error}")
        result = await self._client.checked(p, result)  # the output is the receipt's
        check_stream(p, pieces, final, complete=complete)  # and the stream the output: else no result
        self.result = result
