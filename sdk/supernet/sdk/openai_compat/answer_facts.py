"""The OpenAI drop-in's check of what an answer reports beside its text, against the task's trace.

An answer's ``finish_reason``, ``usage`` and ``logprobs`` are facts of the task's LLM call, which
its trace records; the signed receipt commits to that trace (``traceHash``). Once the text passed
`supernet.sdk.client.answer.check_answer` (so the receipt, and the trace CID it names, are the
signed task's), `TraceStore` reads that trace from the content store the way `Client.verify` does
(`supernet.sdk.store.StoreClient.get_dag`, which re-hashes the block against its CID; at most
`MAX_TRACE_BYTES`), checks it against the receipt by `Client.verify`'s own checks
(`supernet.sdk.client.verify.check_receipt` with the trace), and `facts_problem` derives the facts
by the node's own rule (`supernet.sdk.formats.chat_facts`) and names any the answer states
otherwise. A trace that cannot be read fails the answer (tests/unit/test_openai_answer_facts.py,
tests/integration/test_review_openai_gateway2.py).

What stays the node's word: the ``top_logprobs`` alternatives (not in a trace: a scoring pass after
generation), and how ``logprobs.content`` splits the text into token strings (the client holds no
tokenizer); every reported log-probability is the trace's, token by token, in order.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from supernet.sdk.client.answer import NOT_YET, SignedCall
from supernet.sdk.client.streaming import CHECKED_AGENTS, cut_at_stop, stops_of
from supernet.sdk.client.verify import check_receipt
from supernet.sdk.formats.chat_facts import (
    CallFacts,
    call_facts_of,
    finish_reason,
    logprob_value,
)
from supernet.sdk.formats.trace import MAX_TRACE_BYTES, Trace, trace_from_block
from supernet.sdk.store import StoreClient
from supernet.sdk.store.cids import encode_dag

__all__ = ["ShownFacts", "TraceStore", "TraceUnreadableError", "facts_problem", "trace_problem"]

TRACE_READ_TIMEOUT_S = 30.0
"""Seconds one trace read may take in all (as `Client.verify`'s)."""


class TraceUnreadableError(Exception):
    """The trace a receipt names could not be read from the content store."""


@dataclass(frozen=True)
class TraceStore:
    """Where the drop-in reads a task's trace: the content store at ``url`` (the node's advertised
    ``storeUrl``, or the user's own), over ``transport`` (None: the network)."""

    url: str
    transport: httpx.AsyncBaseTransport | None = None

    async def read(self, cid: str) -> Any:
        """The decoded trace block at ``cid`` (re-hashed against it), at most `MAX_TRACE_BYTES`.

        Raises:
            TraceUnreadableError: the store cannot be reached, lacks the block, or sends another
                or a larger one.
        """
        try:
            async with StoreClient(
                self.url,
                timeout=TRACE_READ_TIMEOUT_S,
                max_block_size=MAX_TRACE_BYTES,  # no committed trace is larger (`trace_from_block`)
                transport=self.transport,
            ) as store:
                return await store.get_dag(cid)
        except Exception as exc:  # StoreError, a CID that is none, a transport's own failure
            raise TraceUnreadableError(f"{type(exc).__name__}: {exc}") from exc

    def read_sync(self, cid: str) -> Any:
        """`read`, for a synchronous caller: on a thread of its own with its own event loop, so it
        works whether or not the caller's thread runs one."""
        with ThreadPoolExecutor(1, thread_name_prefix="supernet-trace") as pool:
            return pool.submit(asyncio.run, self.read(cid)).result()


@dataclass
class ShownFacts:
    """What an answer states beside its text, gathered as it is read.

    ``finishes``: a plain completion's ``finish_reason`` (null included), a stream's non-null ones;
    ``usages``: every non-null ``usage`` object; ``logprobs``: every non-null ``logprobs`` object
    of the choice, in order (a stream may spread them over chunks)."""

    finishes: list[Any] = field(default_factory=list)
    usages: list[Any] = field(default_factory=list)
    logprobs: list[Any] = field(default_factory=list)


def trace_problem(call: SignedCall, receipt_doc: dict[str, Any], output: str, trace_doc: Any) -> str | None:
    """Why ``trace_doc`` is not the trace the signed receipt ``receipt_doc`` commits for ``call``
    (None: it is): `Client.verify`'s checks of a fetched trace (its format within
    `MAX_TRACE_BYTES`, every field it shares with the receipt, its output, the agent profile and
    the request signed)."""
    request = call.request
    report = check_receipt(
        {**receipt_doc, "batch": None},  # the commit is `Client.verify`'s, as in `check_answer`
        task_id=call.task_id,
        user=request.user,
        node=request.node,
        task_input=call.task_input,
        output=output,
        onchain_batch=_no_batch,
        trace_loaded=True,
        trace_doc=trace_doc,
        request=request,
    )
    failed = [c for c in report.failed() if c.name not in NOT_YET]
    if not failed:
        return None
    return "; ".join(f"{c.name} ({c.detail})" if c.detail else c.name for c in failed)


def facts_problem(
    call: SignedCall, output: str, trace_doc: Any, shown: ShownFacts, tool_call: bool
) -> str | None:
    """What of ``shown`` the trace does not hold (None: all of it is the trace's), derived by the
    node's rule (`supernet.sdk.formats.chat_facts`) from the trace, the committed ``output`` and the
    signed input's stop strings (``tool_call``: the answer is a tool call). The ``finish_reason`` is
    required, once: a completion's, or the one chunk of a stream that carries it."""
    facts = call_facts_of(_trace(trace_doc))
    stops = stops_of(call.task_input) if call.agent in CHECKED_AGENTS else []
    content, stopped = cut_at_stop(output, stops)
    want = finish_reason(facts, stopped, tool_call=tool_call)
    if shown.finishes != [want]:
        said = ", ".join(repr(f) for f in shown.finishes) or "none"
        return f"finish_reason {said} where the trace gives {want!r}"
    usage = facts.usage() if facts is not None else None
    for reported in shown.usages:
        if _exact(reported) != _exact(usage):
            return f"usage {_short(reported)} where the trace gives {usage}"
    return _logprobs_problem(facts, content, shown.logprobs)


def _logprobs_problem(facts: CallFacts | None, content: str, shown: Sequence[Any]) -> str | None:
    """Why the ``logprobs`` objects ``shown`` are not the trace's: each ``{"content": [...]}``,
    their entries together one per answer token from the first (at least one for a non-empty
    answer, none for an empty one, never more than the call's output tokens), the i-th entry's
    ``logprob`` the trace's i-th (`logprob_value`), its ``bytes`` its ``token``'s UTF-8."""
    if not shown:
        return None  # none reported (not asked, or the node could not read its trace)
    entries: list[Any] = []
    for doc in shown:
        if not isinstance(doc, dict) or set(doc) != {"content"} or not isinstance(doc["content"], list):
            return f"logprobs {_short(doc)} in another form than the node's"
        entries += doc["content"]
    if facts is None:
        return "logprobs where the trace records no LLM call"
    recorded = [logprob_value(lp) for lp in facts.logprobs]
    if len(entries) > len(recorded) or bool(entries) != bool(content):
        return f"{len(entries)} logprobs for an answer of {len(recorded)} recorded tokens"
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"token", "logprob", "bytes", "top_logprobs"}:
            return f"logprobs entry {i} in another form than the node's: {_short(entry)}"
        token, value = entry["token"], entry["logprob"]
        if not isinstance(token, str) or entry["bytes"] != list(token.encode()):
            return f"logprobs entry {i}: bytes that are not its token's"
        if not isinstance(entry["top_logprobs"], list):
            return f"logprobs entry {i}: top_logprobs that are no list"
        if isinstance(value, bool) or not isinstance(value, int | float) or value != recorded[i]:
            return f"logprob {value!r} for token {i} where the trace records {recorded[i]!r}"
    return None


def _trace(trace_doc: Any) -> Trace:
    return trace_from_block(encode_dag(trace_doc))


def _exact(value: Any) -> str:
    """``value`` as canonical JSON: ``1`` and ``true``, or ``1`` and ``1.0``, are other facts."""
    return json.dumps(value, sort_keys=True)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:120] + "..."


def _no_batch(batch_id: int) -> tuple[str, bytes, int]:
    raise AssertionError(f"the answer check reads no batch (asked for {batch_id})")
