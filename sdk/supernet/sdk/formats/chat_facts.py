"""What an OpenAI answer reports beside its text, derived from the task's trace: one rule for the
node that writes the answer (`supernet.node.service.chat_result`, `supernet.node.service.routes_chat`)
and the drop-in that checks it (`supernet.sdk.openai_compat.answer_facts`).

``usage``, ``finish_reason`` and ``logprobs`` come from the trace's LLM events (token ids in and
out, finish reason, the chosen tokens' log-probabilities): the record validators re-check and the
signed receipt commits to (``traceHash``), so the answer never states something the receipt does
not commit to, and a client that reads the trace derives the same facts by the same functions.
``top_logprobs`` (alternatives the model did not pick) are not in a trace.

>>> from supernet.sdk.formats.trace import Trace, example_dag
>>> facts = call_facts_of(Trace.from_dag(example_dag()))
>>> facts.usage(), finish_reason(facts, stopped=False), [logprob_value(lp) for lp in facts.logprobs]
({'prompt_tokens': 2, 'completion_tokens': 1, 'total_tokens': 3}, 'stop', [-0.5])
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from supernet.sdk.formats.trace import LlmEvent, Trace

NO_LOGPROB = -9999.0
"""Reported for a token whose recorded log-probability is null (a NaN: JSON has none)."""

TOOL_CALLS = "tool_calls"
"""The finish reason of an answer that is a tool call."""


@dataclass(frozen=True)
class CallFacts:
    """The task's LLM work as its trace records it."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    logprobs: tuple[float | None, ...]

    def usage(self) -> dict[str, int]:
        """OpenAI's ``usage`` object."""
        total = self.prompt_tokens + self.completion_tokens
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": total,
        }


def call_facts_of(trace: Trace) -> CallFacts | None:
    """The facts of ``trace`` (None when it records no LLM call): the tokens of every call, and the
    finish reason, token ids and log-probabilities of the last one (the chat agent makes one call;
    its answer is the last one's text)."""
    calls = [e for e in trace.events if isinstance(e, LlmEvent)]
    if not calls:
        return None
    last = calls[-1]
    return CallFacts(
        prompt_tokens=sum(len(c.prompt_ids) for c in calls),
        completion_tokens=sum(len(c.output_ids) for c in calls),
        finish_reason=last.finish_reason,
        prompt_ids=last.prompt_ids,
        output_ids=last.output_ids,
        logprobs=last.logprobs,
    )


def finish_reason(facts: CallFacts | None, stopped: bool, tool_call: bool = False) -> str:
    """``tool_calls`` when the answer is a tool call, ``stop`` when a stop string or the
    end-of-turn token ended the answer, ``length`` when the token limit did (``stopped``: the
    answer was cut at one of the request's stop strings)."""
    if tool_call:
        return TOOL_CALLS
    if stopped or facts is None:
        return "stop"
    return "length" if facts.finish_reason == "length" else "stop"


def logprob_value(logprob: float | None) -> float:
    """The log-probability an answer reports for a recorded one (`NO_LOGPROB` for a null)."""
    return NO_LOGPROB if logprob is None else logprob


def logprob_entry(token: str | bytes, logprob: float | None) -> dict[str, Any]:
    """One entry of OpenAI's ``logprobs.content`` (or of its ``top_logprobs``), without alternatives:
    ``token`` as text (its UTF-8 the entry's ``bytes``) or as a token's own bytes (the entry's
    ``token`` their decoding, U+FFFD for a character the token holds only part of)."""
    raw = token if isinstance(token, bytes) else token.encode()
    text = token.decode("utf-8", "replace") if isinstance(token, bytes) else token
    return {"token": text, "logprob": logprob_value(logprob), "bytes": list(raw)}


def token_logprobs(tokenizer: Any, facts: CallFacts, content: str) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content`` for the answer ``content``: one entry per recorded token the
    answer spans (`spanned`), in order, the i-th carrying the trace's i-th log-probability
    (`logprob_value`), the token's own bytes (`token_pieces`; the last cut where a stop string cut
    the answer) and their decoding as its ``token``. So the entries' ``bytes`` concatenate to the
    answer's (its UTF-8, wherever the answer is valid UTF-8), which the drop-in checks, and a
    token that ends inside a character keeps its exact bytes (OpenAI's contract).
    """
    n = min(len(facts.output_ids), len(facts.logprobs))
    pieces = token_pieces(tokenizer, facts.output_ids[:n], content)
    end = byte_end(b"".join(pieces), content)
    out: list[dict[str, Any]] = []
    at = 0
    for piece, logprob in zip(pieces[: spanned(facts, pieces, end)], facts.logprobs, strict=False):
        piece = piece[: max(0, end - at)]
        at += len(piece)
        out.append({**logprob_entry(piece, logprob), "top_logprobs": []})
    return out


def token_pieces(tokenizer: Any, ids: Sequence[int], content: str = "") -> list[bytes]:
    """Each token's own bytes: the tokenizer's (``token_bytes``: byte-level pipelines,
    `supernet.node.llm.tokenizer.Tokenizer`); else what each token adds to the decoded text (a
    token that leaves it ending in U+FFFD, perhaps a part of a character, adds nothing until one
    completes it); without a tokenizer (an executor that has none, as tests' FAKE one), the last
    token holds ``content`` whole: the text cannot be split, and its entries still span it."""
    if tokenizer is None:
        return [*(b"" for _ in ids[:-1]), content.encode()] if ids else []
    own = getattr(tokenizer, "token_bytes", None)
    pieces = own(list(ids)) if own is not None else None
    if pieces is not None:
        return list(pieces)
    out: list[bytes] = []
    shown = b""
    for i in range(1, len(ids) + 1):
        text = str(tokenizer.decode(list(ids[:i]), skip_special_tokens=True)).encode()
        if (text.endswith(_REPLACEMENT) and i < len(ids)) or not text.startswith(shown):
            out.append(b"")  # a character in part (its bytes come with the token completing it)
            continue
        out.append(text[len(shown) :])
        shown = text
    return out


def byte_end(raw: bytes, content: str) -> int:
    """How many bytes of ``raw`` (the tokens' bytes) the answer ``content`` spans: the least prefix
    whose UTF-8 decoding (U+FFFD for each invalid part, as the tokenizer decodes) is ``content``;
    ``content``'s UTF-8 length, at most ``len(raw)``, where no prefix is (another text)."""
    end = len(content.encode())
    if raw[:end].decode("utf-8", "replace") == content:
        return end  # the answer is valid UTF-8 where the tokens say so (nearly always)
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    chars, end = 0, len(raw)
    for i in range(len(raw)):
        chars += len(decoder.decode(raw[i : i + 1]))
        if chars >= len(content):
            end = i + 1 if chars == len(content) else i  # past it: a pending part was flushed
            break
    if raw[:end].decode("utf-8", "replace") == content:
        return end
    return min(len(raw), len(content.encode()))


def spanned(facts: CallFacts, pieces: Sequence[bytes], end: int) -> int:
    """How many of the call's recorded tokens (their bytes ``pieces``) the answer spans, which ends
    at byte ``end`` of them. The answer is the call's whole text: every token, but the text-free
    token that ended a ``stop`` call (the end-of-turn token); a stop string cut it: the tokens up
    to the one holding its last byte, and the text-free tokens right after it (a special token
    the model drew before the stop string), so that every token left after the answer holds a
    byte of the stop string. The drop-in, which has no tokenizer, checks the count against the
    trace and the signed stop strings (`supernet.sdk.openai_compat.answer_facts.least_span`)."""
    if end >= sum(len(p) for p in pieces):
        ends_on_stop = facts.finish_reason == "stop" and bool(pieces) and not pieces[-1]
        return len(pieces) - 1 if ends_on_stop else len(pieces)
    at = 0
    for i, piece in enumerate(pieces):
        at += len(piece)
        if at >= end:
            if not end:
                return 0
            last = i + 1
            while last < len(pieces) and not pieces[last]:
                last += 1
            return last
    return len(pieces)


_REPLACEMENT = "\ufffd".encode()
