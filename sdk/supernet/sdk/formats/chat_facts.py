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


def logprob_entry(token: str, logprob: float | None) -> dict[str, Any]:
    """One entry of OpenAI's ``logprobs.content`` (or of its ``top_logprobs``), without alternatives."""
    return {"token": token, "logprob": logprob_value(logprob), "bytes": list(token.encode())}


def token_logprobs(tokenizer: Any, facts: CallFacts, content: str) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content``: one entry per token of ``content``, in order, the i-th
    carrying the trace's i-th recorded log-probability (`logprob_value`).

    A token's text is what it adds to the decoded text (the node's streaming rule), so the entries
    concatenate to ``content``; tokens past it (a stop string, the end-of-turn token) are left out.
    """
    out: list[dict[str, Any]] = []
    ids: list[int] = []
    text = ""
    for token_id, logprob in zip(facts.output_ids, facts.logprobs, strict=False):
        if len(text) >= len(content):
            break
        ids.append(token_id)
        decoded = tokenizer.decode(ids, skip_special_tokens=True) if tokenizer is not None else text
        piece = decoded[len(text) :] if decoded.startswith(text) else ""
        text = decoded
        piece = piece[: max(0, len(content) - (len(text) - len(piece)))]
        out.append({**logprob_entry(piece, logprob), "top_logprobs": []})
    return out
