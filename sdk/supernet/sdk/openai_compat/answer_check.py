"""The OpenAI drop-in's answer check, applied to a response as it is read.

A node answers a chat completion with a ``supernet`` field (the last chunk of a stream carries it)
holding the task's whole output and its signed receipt (the document of
``GET /v1/tasks/{id}/receipt``). `CheckedStream` runs `supernet.sdk.client.answer.check_answer` on
them and the answer's text or tool call before the caller has the answer: a plain completion is
held until it is whole; an event stream passes every event through as it comes and holds only its
``[DONE]`` until the answer checked, so a bad answer raises `AnswerMismatchError` inside the
caller's loop, after the text shown so far (as `supernet.sdk.client.Client.stream` checks a stream
at its end) (tests/integration/test_review_openai_gateway.py, tests/unit/test_openai_answer_check.py).
Once the text passed, what the answer states beside it (``finish_reason``, ``usage``,
``logprobs``) is checked at the same place against the trace the receipt names, read from the
content store (`supernet.sdk.openai_compat.answer_facts`): a difference, or a trace that cannot
be read, fails the answer the same way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
from supernet.sdk.client.answer import (
    AnswerForm,
    AnswerMismatchError,
    CheckedAnswer,
    SignedCall,
    check_answer,
    parse_json,
)
from supernet.sdk.client.types import ClientError
from supernet.sdk.openai_compat.answer_facts import (
    ShownFacts,
    TraceStore,
    TraceUnreadableError,
    facts_problem,
    trace_problem,
)

__all__ = ["AnswerMismatchError", "CheckedStream"]


_FIELDS = frozenset({"role", "content", "tool_calls"})
"""What a message or a delta of the node's answer holds: anything else (``refusal``, ``audio``)
the caller could read would be unchecked."""


MAX_CHARS_PER_TOKEN = 1024
"""Most characters one generated token decodes to, with a wide margin (byte-level BPE tokens are
tens of bytes): what bounds a streamed answer by the signed token limit."""

MIN_ANSWER_CHARS = 16_384
"""An answer may always be this long (short limits, long tokens)."""

DEFAULT_TOKENS = 4096
"""The token limit assumed when the signed input sets none (the node's API allows at most this)."""


MAX_USAGES = 2
"""Most ``usage`` objects an answer may state (the node states one: a completion's, or a stream's
usage chunk); each is checked against the trace, and more fail the answer as they arrive."""


def signed_tokens(task_input: Any) -> int:
    """The most tokens an answer to ``task_input`` can hold: its signed ``max_new_tokens``, at most
    (and where it sets none) `DEFAULT_TOKENS`."""
    tokens = task_input.get("max_new_tokens") if isinstance(task_input, dict) else None
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens <= 0:
        tokens = DEFAULT_TOKENS
    return min(tokens, DEFAULT_TOKENS)


def answer_bound(task_input: Any) -> int:
    """The most characters (text and tool arguments) an answer to ``task_input`` can hold: an
    answer past it is no answer to what was signed, and holding it would let a node stream into
    the caller's memory without end (tests/integration/test_review_openai_gateway2.py)."""
    return max(MIN_ANSWER_CHARS, signed_tokens(task_input) * MAX_CHARS_PER_TOKEN)


def body_bound(chars: int) -> int:
    """Most bytes a body (or one event-stream line) holding an answer of ``chars`` characters can
    take: the text twice (the message and the proof's output), each character at most 6 bytes as
    JSON, and 64 KiB for the envelope and the signed receipt. Bytes past it fail the answer before
    more are read: a line or a body that never ends holds no more than this."""
    return 12 * chars + 65_536


class _Answer:
    """What one response carried, gathered as it is read. ``odd`` names anything the check cannot
    vouch for (a second choice, a field or an event the caller's parser might read otherwise): the
    answer then fails closed.

    What it holds is bounded by the signed token limit as it arrives (``tokens``; ``bound``: the
    characters it allows, `answer_bound`): the text and tool arguments (`_grow`), and the facts
    beside them (`_stated`, `_finish_reason`, `_usage`, `_label`): ``logprobs`` entries at most
    one a token (an empty ``logprobs`` object counts as one), at most one ``finish_reason`` and
    `MAX_USAGES` ``usage`` objects, the stream lines holding them at most `body_bound` bytes
    together, and one ``id``. Past any of these the answer fails at once, before more is read
    (tests/integration/test_review_openai_gateway3.py)."""

    def __init__(self, bound: int = MIN_ANSWER_CHARS, tokens: int = DEFAULT_TOKENS) -> None:
        self.bound, self.size = bound, 0
        self.tokens = tokens
        self.entries = 0  # logprobs entries held (`_stated`)
        self.fact_bytes, self.fact_bound = 0, body_bound(bound)  # the stream lines holding facts
        self.text: list[str] = []
        self.tool: tuple[str, str] | None = None
        self.proof: Any = None
        self.error = False
        self.odd: str | None = None
        self.ids: set[str] = set()  # the reply's ``id`` (every chunk's): must be the signed task's
        self.facts = ShownFacts()  # finish_reason, usage, logprobs: checked against the trace

    def flag(self, why: str) -> None:
        self.odd = self.odd or why

    def add_completion(self, doc: Any) -> None:
        if isinstance(doc, dict):
            self._label(doc.get("id"))
        choices = doc.get("choices") if isinstance(doc, dict) else None
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            self.flag("a completion without exactly one choice")
            return
        self._part(choices[0].get("message"))
        self.facts.finishes.append(choices[0].get("finish_reason"))  # required: null is a value too
        self._stated(choices[0], doc)
        self.proof = doc.get("supernet")

    def add_chunk(self, doc: Any, size: int = 0) -> None:
        """A stream's chunk ``doc``, read from a line of ``size`` bytes."""
        if not isinstance(doc, dict):
            self.flag("an event whose data is not a JSON object")
            return
        choices = doc.get("choices")
        if "id" in doc:
            self._label(doc["id"])
        held = len(self.facts.finishes), len(self.facts.usages), len(self.facts.logprobs)
        if "error" in doc:
            # the node's failure report, as the caller's client reads one: a truthy error, no text
            if not doc["error"] or choices or "".join(self.text).strip():
                self.flag("an error key beside an answer")
            self.error = True
            return
        if choices is None or choices == []:
            pass  # the usage chunk
        elif not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            self.flag("a chunk without exactly one choice")
            return
        elif choices[0].get("index") != 0:
            self.flag("a chunk of another choice than the one asked for")
        else:
            self._part(choices[0].get("delta"))
            if choices[0].get("finish_reason") is not None:
                self._finish_reason(choices[0]["finish_reason"])
            self._stated(choices[0], doc)
        if doc.get("usage") is not None and not choices:
            self._usage(doc["usage"])  # the usage chunk (`_stated` reads the others)
        if "supernet" in doc:
            self.proof = doc["supernet"]
        if held != (len(self.facts.finishes), len(self.facts.usages), len(self.facts.logprobs)):
            self.fact_bytes += size
            if self.fact_bytes > self.fact_bound:
                self.flag(f"facts past {self.fact_bound} bytes, more than the signed token limit allows")

    def _label(self, task_id: Any) -> None:
        """The reply's ``id`` (every chunk's): one, the signed task's (`CheckedStream._finish`)."""
        self.ids.add(str(task_id).lower())
        if len(self.ids) > 1:
            self.flag(f"chunks labelled {sorted(self.ids)}")

    def _finish_reason(self, reason: Any) -> None:
        if self.facts.finishes:
            said = ", ".join(repr(f) for f in [*self.facts.finishes, reason])
            self.flag(f"finish_reason {said}: more than one")
            return
        self.facts.finishes.append(reason)

    def _usage(self, usage: Any) -> None:
        if len(self.facts.usages) >= MAX_USAGES:
            self.flag(f"more than {MAX_USAGES} usage objects")
            return
        self.facts.usages.append(usage)

    def _stated(self, choice: dict[str, Any], doc: dict[str, Any]) -> None:
        """The ``logprobs`` of ``choice`` and the ``usage`` of ``doc``, where they are set."""
        logprobs = choice.get("logprobs")
        if logprobs is not None:
            entries = logprobs.get("content") if isinstance(logprobs, dict) else None
            self.entries += max(1, len(entries)) if isinstance(entries, list) else 1
            if self.entries > self.tokens:
                self.flag(f"logprobs for more than the {self.tokens} tokens the signed token limit allows")
                return
            self.facts.logprobs.append(logprobs)
        if doc.get("usage") is not None:
            self._usage(doc["usage"])

    def _part(self, part: Any) -> None:
        """A message or a delta: its text and its tool call."""
        if not isinstance(part, dict) or not set(part) <= _FIELDS:
            self.flag("a message with fields the answer does not have")
            return
        content = part.get("content")
        if content is not None and not isinstance(content, str):
            self.flag("a message whose content is not text")
            return
        if content:  # an empty delta holds nothing (a node may send as many as it likes)
            self.text.append(content)
            self._grow(len(content))
        calls = part.get("tool_calls")
        if not calls:
            return
        if self.tool is not None or not isinstance(calls, list) or len(calls) != 1:
            self.flag("more than one tool call")
            return
        function = calls[0].get("function") if isinstance(calls[0], dict) else None
        if not isinstance(function, dict):
            self.flag("a tool call without a function")
            return
        self.tool = (str(function.get("name")), str(function.get("arguments")))
        self._grow(len(self.tool[1]))

    def _grow(self, chars: int) -> None:
        """Count ``chars`` more of the answer (text or tool arguments) against `answer_bound`."""
        self.size += chars
        if self.size > self.bound:
            self.flag(f"more than the {self.bound} characters the signed token limit allows")


class CheckedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A chat completion response's body, checked by `check_answer` as it is read.

    An event stream is read strictly, in the one shape the node sends (``data: <json>`` lines, each
    its own event, ``\\r\\n`` or ``\\n`` line ends, ``:`` comments): an event with two ``data``
    lines, an ``event``/``id``/``retry`` field or a bare ``\\r`` could be read otherwise by the
    caller's own SSE parser than here, so it fails the answer rather than let text past the check.
    The check runs where the caller's client stops reading: at any data starting with ``[DONE]``
    (only the exact ``[DONE]`` passes). A body the node encoded (``Content-Encoding``; the flow
    asks for none) fails at once: the caller's client would decode what this reads raw. An answer
    whose text passed is then held there until its ``finish_reason``, ``usage`` and ``logprobs``
    are checked against the trace its receipt names (`answer_facts`), read from ``trace`` (in the
    caller's event loop when it reads asynchronously, else on a thread of its own).

    Args:
        inner: the response's own stream.
        call: what the user signed.
        event_stream: whether the body is ``text/event-stream`` (else one JSON completion).
        on_result: called once with the checked answer, or with the error (then raised too).
        headers: the response's; a ``Content-Type`` that is not the asked form, or any
            ``Content-Encoding`` but identity, fails the answer.
        trace: the content store holding the node's traces (None: none is known, and an answer
            whose facts cannot be checked fails).
    """

    def __init__(
        self,
        inner: Any,
        call: SignedCall,
        event_stream: bool,
        on_result: Callable[[CheckedAnswer | Exception], None],
        headers: httpx.Headers | None = None,
        trace: TraceStore | None = None,
    ) -> None:
        self.inner, self.call, self.event_stream, self.on_result = inner, call, event_stream, on_result
        self.trace = trace
        bound = answer_bound(call.task_input)
        self._answer, self._buffer, self._done = _Answer(bound, signed_tokens(call.task_input)), b"", False
        self._held: CheckedAnswer | None = None  # text checked, facts not yet (`_facts`)
        self._byte_bound = body_bound(bound)
        self._data_lines = 0  # ``data`` lines of the event being read
        headers = headers if headers is not None else httpx.Headers()
        asked = "text/event-stream" if event_stream else "application/json"
        content_type = headers.get("content-type", "")
        if not content_type.startswith(asked):
            self._answer.flag(f"a {content_type or 'untyped'} body where {asked} was asked for")
        if headers.get("content-encoding", "identity").strip().lower() != "identity":
            self._answer.flag(f"a body encoded {headers['content-encoding']!r}")

    def __iter__(self) -> Iterator[bytes]:
        for piece in self.inner:
            for out in self._feed(piece):
                if isinstance(out, bytes):
                    yield out
                else:
                    self._facts(self._read_sync())
        for out in self._end():
            if isinstance(out, bytes):
                yield out
            else:
                self._facts(self._read_sync())

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for piece in self.inner:
            for out in self._feed(piece):
                if isinstance(out, bytes):
                    yield out
                else:
                    self._facts(await self._read())
        for out in self._end():
            if isinstance(out, bytes):
                yield out
            else:
                self._facts(await self._read())

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def _feed(self, piece: bytes) -> Iterator[bytes | _ReadTrace]:
        if self._answer.odd is not None and not self._done:
            self._finish()  # fails at once: nothing of an answer that cannot be checked goes out
        self._buffer += piece
        if not self.event_stream:
            self._bounded()
            return
        # whole lines only; an event's lines go out as they come, its end after the check
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            self._line(line.removesuffix(b"\r"))
            if self._held is not None:
                yield READ_TRACE  # the facts are checked before the end goes out
            yield line + b"\n"
        self._bounded()

    def _bounded(self) -> None:
        """Fail at once when what is held (a plain body, a stream's unfinished line) is past
        `body_bound`: nothing the node sends makes the caller hold more."""
        if len(self._buffer) > self._byte_bound:
            self._answer.flag(
                f"a body past {self._byte_bound} bytes, more than the signed token limit allows"
            )
            self._finish()

    def _line(self, line: bytes) -> None:
        answer = self._answer
        if b"\r" in line:
            answer.flag("a bare carriage return in the event stream")
        elif not line:
            self._data_lines = 0  # the event ends
        elif line.startswith(b":"):
            pass  # a comment (the node's keep-alive pings)
        elif line.startswith(b"data:"):
            self._data_lines += 1
            payload = line[5:].removeprefix(b" ")
            if self._data_lines > 1:
                answer.flag("an event with more than one data line")
            elif payload.startswith(b"[DONE]"):  # where the caller's client stops reading
                if payload != b"[DONE]":
                    answer.flag(f"an inexact end of stream {payload[:20]!r}")
                self._finish()
            else:
                answer.add_chunk(parse_json(payload.decode("utf-8", "replace")), len(line))
        else:
            answer.flag(f"an event stream line the node does not send: {line[:40]!r}")
        if answer.odd is not None:
            self._finish()

    def _end(self) -> Iterator[bytes | _ReadTrace]:
        if not self.event_stream:
            self._answer.add_completion(parse_json(self._buffer.decode("utf-8", "replace")))
        elif self._buffer:
            self._answer.flag("an event stream that ends inside a line")
        self._finish()
        if self._held is not None:
            yield READ_TRACE
        if self._buffer:
            yield self._buffer
            self._buffer = b""

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        answer, task = self._answer, self.call.task_id
        try:
            if answer.odd is not None:
                raise AnswerMismatchError(f"task {task}: the answer holds {answer.odd}")
            if answer.ids - {task.lower()}:  # `Client.verify(reply.id)` and the claims read it
                raise AnswerMismatchError(f"task {task}: the answer is labelled {sorted(answer.ids)}")
            if answer.error:  # the node reported a failed task (the caller's client raises on it)
                failed = ClientError(f"task {task} failed at the node")
                self.on_result(failed)
                raise failed
            form: AnswerForm = "stream" if self.event_stream else "plain"
            checked = check_answer(self.call, answer.proof, "".join(answer.text), answer.tool, form)
        except AnswerMismatchError as exc:
            self.on_result(exc)
            raise
        except ClientError:
            raise
        except Exception as exc:  # an answer the check cannot even read is no answer
            mismatch = AnswerMismatchError(f"task {task}: the answer cannot be checked: {exc}")
            self.on_result(mismatch)
            raise mismatch from exc
        self._held = checked  # its facts next, against the trace (`_facts`)

    def _trace_cid(self) -> str:
        assert self._held is not None
        return self._held.receipt.traceCid  # the receipt's, which its ``traceHash`` binds

    def _read_sync(self) -> Any:
        """The held answer's trace document, or why it could not be read."""
        if self.trace is None:
            return _NO_STORE
        try:
            return self.trace.read_sync(self._trace_cid())
        except TraceUnreadableError as exc:
            return exc

    async def _read(self) -> Any:
        """`_read_sync`, in the caller's event loop."""
        if self.trace is None:
            return _NO_STORE
        try:
            return await self.trace.read(self._trace_cid())
        except TraceUnreadableError as exc:
            return exc

    def _facts(self, trace_doc: Any) -> None:
        """Check the held answer's ``finish_reason``, ``usage`` and ``logprobs`` against its trace
        (``trace_doc``, or why it could not be read): the answer passes only if they are the
        trace's (`answer_facts.facts_problem`)."""
        checked, self._held = self._held, None
        assert checked is not None
        answer, task = self._answer, self.call.task_id
        cid = checked.receipt.traceCid
        try:
            if trace_doc is _NO_STORE:
                raise AnswerMismatchError(
                    f"task {task}: the node names no content store to read its trace {cid} from (pass "
                    "store_url): the answer's finish_reason, usage and logprobs cannot be checked"
                )
            if isinstance(trace_doc, TraceUnreadableError):
                where = " or ".join(self.trace.urls) if self.trace else "?"
                raise AnswerMismatchError(
                    f"task {task}: the trace {cid} its receipt names cannot be read from {where} "
                    f"({trace_doc}): the answer's finish_reason, usage and logprobs cannot be checked"
                )
            receipt_doc = checked.receipt.model_dump(mode="json")
            problem = trace_problem(self.call, receipt_doc, checked.output, trace_doc)
            if problem is not None:
                raise AnswerMismatchError(f"task {task}: the trace {cid} fails its receipt: {problem}")
            problem = facts_problem(
                self.call, checked.output, trace_doc, answer.facts, answer.tool is not None
            )
            if problem is not None:
                raise AnswerMismatchError(
                    f"task {task}: the answer states what its trace does not: {problem}"
                )
        except AnswerMismatchError as exc:
            self.on_result(exc)
            raise
        except Exception as exc:  # a trace the check cannot even read holds no facts
            mismatch = AnswerMismatchError(f"task {task}: the answer's facts cannot be checked: {exc}")
            self.on_result(mismatch)
            raise mismatch from exc
        self.on_result(checked)


class _ReadTrace:
    """What `CheckedStream`'s parser yields where an answer's facts are due: its reader (sync or
    async) reads the trace there, before anything more goes out."""


READ_TRACE = _ReadTrace()
_NO_STORE = object()
