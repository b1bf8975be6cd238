"""The OpenAI drop-in's answer check, applied to a response as it is read.

A node answers a chat completion with a ``supernet`` field (the last chunk of a stream carries it)
holding the task's whole output and its signed receipt (the document of
``GET /v1/tasks/{id}/receipt``). `CheckedStream` runs `supernet.sdk.client.answer.check_answer` on
them and the answer's text or tool call before the caller has the answer: a plain completion is
held until it is whole; an event stream passes every event through as it comes and holds only its
``[DONE]`` until the answer checked, so a bad answer raises `AnswerMismatchError` inside the
caller's loop, after the text shown so far (as `supernet.sdk.client.Client.stream` checks a stream
at its end) (tests/integration/test_review_openai_gateway.py, tests/unit/test_openai_answer_check.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
from supernet.sdk.client.answer import (
    AnswerMismatchError,
    CheckedAnswer,
    SignedCall,
    check_answer,
    parse_json,
)
from supernet.sdk.client.types import ClientError

__all__ = ["AnswerMismatchError", "CheckedStream"]


class _Answer:
    """What one response carried, gathered as it is read. ``odd`` names anything the check cannot
    vouch for (a second choice, an event the caller's SSE parser might read otherwise): the answer
    then fails closed."""

    def __init__(self) -> None:
        self.text: list[str] = []
        self.tool: tuple[str, str] | None = None
        self.proof: Any = None
        self.error = False
        self.odd: str | None = None

    def add_completion(self, doc: Any) -> None:
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            self.odd = self.odd or "a completion without exactly one choice"
            return
        message = choices[0].get("message") or {}
        self.text.append(message.get("content") or "")
        self._tool(message.get("tool_calls"))
        self.proof = doc.get("supernet")

    def add_chunk(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            self.odd = self.odd or "an event whose data is not a JSON object"
            return
        if "error" in doc:
            self.error = True
            if "".join(self.text).strip():  # text was shown: a failure now would leave it unchecked
                self.odd = self.odd or "an error after the text it streamed"
            return
        for choice in doc.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index") != 0:
                self.odd = self.odd or "a chunk of another choice than the one asked for"
                continue
            delta = choice.get("delta") or {}
            self.text.append(delta.get("content") or "")
            self._tool(delta.get("tool_calls"))
        if "supernet" in doc:
            self.proof = doc["supernet"]

    def _tool(self, calls: Any) -> None:
        if not calls:
            return
        if self.tool is not None or len(calls) != 1:
            self.odd = self.odd or "more than one tool call"
        function = calls[0].get("function") or {}
        self.tool = (str(function.get("name")), str(function.get("arguments")))


class CheckedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A chat completion response's body, checked by `check_answer` as it is read.

    An event stream is read strictly, in the one shape the node sends (``data: <json>`` lines, each
    its own event, ``\r\n`` or ``\n`` line ends, ``:`` comments): an event with two ``data``
    lines, an ``event``/``id``/``retry`` field or a bare ``\r`` could be read otherwise by the
    caller's own SSE parser than here, so it fails the answer rather than let text past the check.

    Args:
        inner: the response's own stream.
        call: what the user signed.
        event_stream: whether the body is ``text/event-stream`` (else one JSON completion).
        on_result: called once with the checked answer, or with the error (then raised too).
        content_type: the response's; one that is not the asked form fails the answer.
    """

    def __init__(
        self,
        inner: Any,
        call: SignedCall,
        event_stream: bool,
        on_result: Callable[[CheckedAnswer | Exception], None],
        content_type: str = "",
    ) -> None:
        self.inner, self.call, self.event_stream, self.on_result = inner, call, event_stream, on_result
        self._answer, self._buffer, self._done = _Answer(), b"", False
        asked = "text/event-stream" if event_stream else "application/json"
        if not content_type.startswith(asked):
            self._answer.odd = f"a {content_type or 'untyped'} body where {asked} was asked for"
        self._data_lines = 0  # ``data`` lines of the event being read

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.inner:
            yield from self._feed(piece)
        yield from self._end()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self.inner:
            for out in self._feed(piece):
                yield out
        for out in self._end():
            yield out

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _feed(self, piece: bytes) -> Iterator[bytes]:
        self._buffer += piece
        if not self.event_stream:
            return
        # whole lines only; an event's lines go out as they come, ``[DONE]`` after the check
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._line(line.removesuffix(b"\r"))
            yield line + b"\n"

    def _line(self, line: bytes) -> None:
        answer = self._answer
        if b"\r" in line:
            answer.odd = answer.odd or "a bare carriage return in the event stream"
        elif not line:
            self._data_lines = 0  # the event ends
        elif line.startswith(b":"):
            pass  # a comment (the node's keep-alive pings)
        elif line.startswith(b"data:"):
            self._data_lines += 1
            payload = line[5:].removeprefix(b" ")
            if self._data_lines > 1:
                answer.odd = answer.odd or "an event with more than one data line"
            elif payload == b"[DONE]":
                self._finish()
            else:
                answer.add_chunk(parse_json(payload.decode("utf-8", "replace")))
        else:
            answer.odd = answer.odd or f"an event stream line the node does not send: {line[:40]!r}"

    def _end(self) -> Iterator[bytes]:
        if not self.event_stream:
            self._answer.add_completion(parse_json(self._buffer.decode("utf-8", "replace")))
        elif self._buffer:
            self._answer.odd = self._answer.odd or "an event stream that ends inside a line"
        self._finish()
        if self._buffer:
            yield self._buffer
            self._buffer = b""

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        answer = self._answer
        if answer.error and answer.odd is None:  # the node reported a failed task: the caller sees why
            self.on_result(ClientError(f"task {self.call.task_id} failed at the node"))
            return
        try:
            if answer.odd is not None:
                raise AnswerMismatchError(f"task {self.call.task_id}: the answer holds {answer.odd}")
            checked = check_answer(self.call, answer.proof, "".join(answer.text), answer.tool)
        except AnswerMismatchError as exc:
            self.on_result(exc)
            raise
        self.on_result(checked)
