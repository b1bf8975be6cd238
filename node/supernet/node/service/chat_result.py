"""What an OpenAI answer reports beyond the text, read from the task's own trace.

``usage``, ``finish_reason`` and ``logprobs`` come from the trace's LLM events by the rule of
`supernet.sdk.formats.chat_facts` (`call_facts_of`, `finish_reason`, `token_logprobs`), which the
SDK's OpenAI drop-in runs on the same trace to check the answer: the record validators re-check,
so the answer never states something the receipt does not commit to. ``top_logprobs``
(alternatives the model did not pick) are not in a trace: they come from one teacher-forced pass of
the node's model over the prompt and the answer (the scoring validators run), after generation.

``stop`` strings end the answer where the first one starts (the stop string is not returned). The
``chat`` agent passes them to the kernel, whose stop watcher ends the call on the token that
completes one and records the text cut before it (`dispatch._StopWatcher.final_text`): the call's
last tokens are then the stop string's, not the end-of-turn token (what the drop-in's count of
``logprobs`` entries allows for: `answer_facts.least_span`).
"""

from __future__ import annotations

import logging
from typing import Any

from supernet.sdk.formats.chat_facts import (
    NO_LOGPROB,
    CallFacts,
    call_facts_of,
    finish_reason,
    logprob_entry,
    token_logprobs,
    token_pieces,
)
from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.trace import Trace
from supernet.sdk.store import StoreError

__all__ = [
    "NO_LOGPROB",
    "CallFacts",
    "add_alternatives",
    "call_facts",
    "finish_reason",
    "token_logprobs",
]

log = logging.getLogger(__name__)


async def call_facts(store: Any, trace_cid: str | None) -> CallFacts | None:
    """The facts of the trace at ``trace_cid`` in the node's store (None when it cannot be read)."""
    if store is None or trace_cid is None:
        return None
    try:
        trace = Trace.from_dag(await store.get_dag(trace_cid))
    except (StoreError, FormatError, ValueError) as exc:
        log.warning("trace %s unreadable for a chat answer: %s", trace_cid, exc)
        return None
    return call_facts_of(trace)


async def add_alternatives(engine: Any, facts: CallFacts, entries: list[dict[str, Any]], k: int) -> None:
    """Fill each entry's ``top_logprobs`` with the ``k`` likeliest tokens at its position, best
    first, from one teacher-forced pass over the prompt and the answer's tokens (each with its own
    bytes, as the entries: `supernet.sdk.formats.chat_facts.token_pieces`)."""
    if not entries or k <= 0:
        return
    scores = await engine.ascore(facts.prompt_ids, facts.output_ids[: len(entries)])
    for entry, top in zip(entries, scores.top_tokens, strict=True):
        entry["top_logprobs"] = [
            logprob_entry(token_pieces(engine.tokenizer, [t])[0], lp) for t, lp in top[:k]
        ]
