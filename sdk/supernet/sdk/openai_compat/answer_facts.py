"""The OpenAI drop-in's check of what an answer reports beside its text, against the task's trace.

An answer's ``finish_reason``, ``usage`` and ``logprobs`` are facts of the task's LLM call, which
its trace records; the signed receipt commits to that trace (``traceHash``). Once the text passed
`supernet.sdk.client.answer.check_answer` (so the receipt, and the trace CID it names, are the
signed task's), `TraceStore` reads that trace from the content store the way `Client.verify` does
(`supernet.sdk.store.StoreClient.get_dag`, which re-hashes the block against its CID; at most
`MAX_TRACE_BYTES`; the user's own store, else the node's advertised one), checks it against the
receipt by `Client.verify`'s own checks (`supernet.sdk.client.verify.check_receipt` with the
trace), and `facts_problem` derives the facts by the node's own rule
(`supernet.sdk.formats.chat_facts`) and names any the answer states otherwise. A trace that
cannot be read fails the answer (tests/unit/test_openai_answer_facts.py,
tests/integration/test_review_openai_gateway2.py, tests/integration/test_review_openai_gateway3.py).

Every reported log-probability is the trace's, token by token, in order, for every token the
answer spans (`least_span`), where they were asked for; the entries' ``bytes`` together are the
answer's. What stays the node's word: the ``top_logprobs`` alternatives (not in a trace: a scoring
pass after generation), and where the answer's bytes are split between the entries (the client
holds no tokenizer): the count is exact for an answer that is the call's whole text; one cut at a
stop string may show fewer entries, at most one fewer for each byte the cut removed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from supernet.sdk.client.answer import NOT_YET, SignedCall, no_batch
from supernet.sdk.client.streaming import CHECKED_AGENTS, cut_at_stop, stops_of
from supernet.sdk.client.verify import check_receipt
from supernet.sdk.formats.chat_facts import (
    CallFacts,
    call_facts_of,
    finish_reason,
    logprob_value,
)
from supernet.sdk.formats.trace import MAX_TRACE_BYTES, Trace
from supernet.sdk.store import StoreClient

__all__ = ["ShownFacts", "TraceStore", "TraceUnreadableError", "facts_problem", "trace_problem"]

TRACE_READ_TIMEOUT_S = 30.0
"""Seconds one trace read may take in all (as `Client.verify`'s)."""


class TraceUnreadableError(Exception):
    """The trace a receipt names could not be read from the content store."""


@dataclass(frozen=True)
class TraceStore:
    """Where the drop-in reads a task's trace: the content store at ``url`` over ``transport``
    (None: the network), then, where that read fails, the one at ``fallback`` over
    ``fallback_transport``: the user's own store (``store_url``, ``$SUPERNET_STORE_URL``) and the
    node's advertised ``storeUrl``. Where a block comes from does not matter to the check: it is
    re-hashed against the CID the signed receipt names (`StoreClient.get_dag`)."""

    url: str
    transport: httpx.AsyncBaseTransport | None = None
    fallback: str | None = None
    fallback_transport: httpx.AsyncBaseTransport | None = None

    @property
    def urls(self) -> list[str]:
        """The stores read, in order (at most two)."""
        return [self.url] + ([self.fallback] if self.fallback and self.fallback != self.url else [])

    async def read(self, cid: str) -> Any:
        """The decoded trace block at ``cid`` (re-hashed against it), at most `MAX_TRACE_BYTES`:
        from the first store, else the fallback; at most these two reads, within one deadline
        (`TRACE_READ_TIMEOUT_S` for both).

        Raises:
            TraceUnreadableError: no store could be reached, held the block, or sent it (another
                or a larger block, or none within the deadline).
        """
        sources = [(self.url, self.transport), (self.fallback, self.fallback_transport)]
        failed: list[str] = []
        try:
            async with asyncio.timeout(TRACE_READ_TIMEOUT_S):
                for url, transport in sources[: len(self.urls)]:
                    assert url is not None
                    try:
                        return await _read_block(url, transport, cid)
                    except Exception as exc:  # StoreError, a CID that is none, a transport's own failure
                        failed.append(f"{url}: {type(exc).__name__}: {exc}")
        except TimeoutError:
            failed.append(f"no block within {TRACE_READ_TIMEOUT_S} s")
        raise TraceUnreadableError("; ".join(failed))

    def read_sync(self, cid: str) -> Any:
        """`read`, for a synchronous caller: on a thread of its own with its own event loop, so it
        works whether or not the caller's thread runs one."""
        with ThreadPoolExecutor(1, thread_name_prefix="supernet-trace") as pool:
            return pool.submit(asyncio.run, self.read(cid)).result()


async def _read_block(url: str, transport: httpx.AsyncBaseTransport | None, cid: str) -> Any:
    async with StoreClient(
        url,
        timeout=TRACE_READ_TIMEOUT_S,
        max_block_size=MAX_TRACE_BYTES,  # no committed trace is larger (`trace_from_block`)
        transport=transport,
    ) as store:
        return await store.get_dag(cid)


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
        onchain_batch=no_batch,
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
    required, once: a completion's, or the one chunk of a stream that carries it; the ``logprobs``
    are required where the signed input asked for them and the trace records them."""
    facts = call_facts_of(Trace.from_dag(trace_doc))  # read and sized by `trace_problem` first
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
    if not shown.logprobs:
        asked = isinstance(call.task_input, dict) and call.task_input.get("logprobs") is True
        if asked and facts is not None and facts.logprobs:
            return "no logprobs where the signed input asks for them and the trace records them"
        return None  # none asked for (the node reports none)
    return _logprobs_problem(facts, output, content, shown.logprobs, stops)


def least_span(facts: CallFacts, output: str, content: str, stops: Sequence[str] = ()) -> int:
    """The fewest recorded tokens the answer ``content`` (``output`` cut at a stop string) can span
    (`chat_facts.spanned`, the node's count), known without a tokenizer: all of the call's ``n``
    tokens but those after the answer's last byte, and, where the drop-in cut the answer at a stop
    string, but those holding the bytes cut off (at least one each). After the answer, a ``stop``
    call ends on the text-free end-of-turn token, or on the tokens of a stop string (``stops``:
    the signed ones), which the kernel cut from the text it recorded, each holding at least one of
    its bytes (tests/unit/test_review_framing6.py). So an answer that is the call's whole text is
    spanned exactly; a cut one within the bytes the cut removed."""
    n = min(len(facts.output_ids), len(facts.logprobs))
    after = 0
    if facts.finish_reason == "stop":
        after = max([1, *(len(s.encode()) for s in stops)])
    least = n - after - (len(output.encode()) - len(content.encode()))
    return max(least, 1 if content else 0)


def _logprobs_problem(
    facts: CallFacts | None, output: str, content: str, shown: Sequence[Any], stops: Sequence[str] = ()
) -> str | None:
    """Why the ``logprobs`` objects ``shown`` are not the trace's: each ``{"content": [...]}``,
    their entries together one per recorded token the answer spans, from the first (at least
    `least_span`, never more than the call's tokens), the i-th entry's ``logprob`` the trace's i-th
    (`logprob_value`), its ``token`` its ``bytes``' decoding, and the entries' ``bytes`` together
    the answer's (its UTF-8, read as the tokenizer reads bytes: U+FFFD for an invalid part)."""
    entries: list[Any] = []
    for doc in shown:
        if not isinstance(doc, dict) or set(doc) != {"content"} or not isinstance(doc["content"], list):
            return f"logprobs {_short(doc)} in another form than the node's"
        entries += doc["content"]
    if facts is None:
        return "logprobs where the trace records no LLM call"
    recorded = [logprob_value(lp) for lp in facts.logprobs[: len(facts.output_ids)]]
    if len(entries) > len(recorded):
        return f"{len(entries)} logprobs for an answer of {len(recorded)} recorded tokens"
    joined = bytearray()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or set(entry) != {"token", "logprob", "bytes", "top_logprobs"}:
            return f"logprobs entry {i} in another form than the node's: {_short(entry)}"
        token, value, raw = entry["token"], entry["logprob"], entry["bytes"]
        if not isinstance(raw, list) or not all(type(b) is int and 0 <= b < 256 for b in raw):
            return f"logprobs entry {i}: bytes that are not bytes: {_short(raw)}"
        if not isinstance(token, str) or token != bytes(raw).decode("utf-8", "replace"):
            return f"logprobs entry {i}: bytes that are not its token's"
        if not isinstance(entry["top_logprobs"], list):
            return f"logprobs entry {i}: top_logprobs that are no list"
        if isinstance(value, bool) or not isinstance(value, int | float) or value != recorded[i]:
            return f"logprob {value!r} for token {i} where the trace records {recorded[i]!r}"
        joined += bytes(raw)
    if joined.decode("utf-8", "replace") != content:
        return f"logprobs whose bytes spell {_short(joined.decode('utf-8', 'replace'))}, not the answer"
    least = least_span(facts, output, content, stops)
    if len(entries) < least:
        return f"{len(entries)} logprobs for an answer spanning at least {least} recorded tokens"
    return None


def _exact(value: Any) -> str:
    """``value`` as canonical JSON: ``1`` and ``true``, or ``1`` and ``1.0``, are other facts."""
    return json.dumps(value, sort_keys=True)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:120] + "..."
