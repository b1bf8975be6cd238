"""What an OpenAI answer reports beyond the text, read from the task's own trace.

``usage``, ``finish_reason`` and ``logprobs`` come from the trace's LLM events (token ids in and
out, finish reason, the chosen tokens' log-probabilities): the record validators re-check, so the
answer never states something the receipt does not commit to. ``top_logprobs`` (alternatives the
model did not pick) are not in a trace: they come from one teacher-forced pass of the node's model
over the prompt and the answer (the scoring validators run), after generation.

``stop`` strings end the answer where the first one starts (the stop string is not returned). The
``chat`` agent does not pass them to the model yet, so the model generates on to its token limit
and the node cuts the verified output; the text is the same either way (each token depends only on
those before it, sampling included: the RNG is keyed by seed and position), but the tokens after
the cut are spent and counted in ``usage``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import LlmEvent, Trace
from supernet.sdk.store import StoreError

log = logging.getLogger(__name__)

NO_LOGPROB = -9999.0
"""Reported for a token whose recorded log-probability is null (a NaN: JSON has none)."""


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


async def call_facts(store: Any, trace_cid: str | None) -> CallFacts | None:
    """The facts of the trace at ``trace_cid`` in the node's store (None when it cannot be read)."""
    if store is None or trace_cid is None:
        return None
    try:
        trace = Trace.from_dag(await store.get_dag(trace_cid))
    except (StoreError, FormatError, ValueError) as exc:
        log.warning("trace %s unreadable for a chat answer: %s", trace_cid, exc)
        return None
    calls = [e for e in trace.events if isinstance(e, LlmEvent)]
    if not calls:
        return None
    last = calls[-1]  # the chat agent makes one call; its answer is the last one's text
    return CallFacts(
        prompt_tokens=sum(len(c.prompt_ids) for c in calls),
        completion_tokens=sum(len(c.output_ids) for c in calls),
        finish_reason=last.finish_reason,
        prompt_ids=last.prompt_ids,
        output_ids=last.output_ids,
        logprobs=last.logprobs,
    )


def finish_reason(facts: CallFacts | None, stopped: bool) -> str:
    """``stop`` when a stop string or the end-of-turn token ended the answer, ``length`` when the
    token limit did."""
    if stopped or facts is None:
        return "stop"
    return "length" if facts.finish_reason == "length" else "stop"


def _entry(token: str, logprob: float | None) -> dict[str, Any]:
    value = NO_LOGPROB if logprob is None else logprob
    return {"token": token, "logprob": value, "bytes": list(token.encode())}


def token_logprobs(tokenizer: Any, facts: CallFacts, content: str) -> list[dict[str, Any]]:
    """OpenAI's ``logprobs.content``: one entry per token of ``content``, in order.

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
        out.append({**_entry(piece, logprob), "top_logprobs": []})
    return out


async def add_alternatives(engine: Any, facts: CallFacts, entries: list[dict[str, Any]], k: int) -> None:
    """Fill each entry's ``top_logprobs`` with the ``k`` likeliest tokens at its position, best
    first, from one teacher-forced pass over the prompt and the answer's tokens."""
    if not entries or k <= 0:
        return
    scores = await engine.ascore(facts.prompt_ids, facts.output_ids[: len(entries)])
    for entry, top in zip(entries, scores.top_tokens, strict=True):
        entry["top_logprobs"] = [_entry(engine.tokenizer.decode([t]), lp) for t, lp in top[:k]]
