"""The parts of an execution trace a validator re-checks, read through the one trace format.

`parse_trace` reads a document with `supernet.sdk.formats.trace.Trace.from_dag` (strict: every
field of ``supernet/trace/v1``, nothing else, each of its type) and flattens its LLM and tool
calls into the rows the checks work on. A trace that is not well-formed is malformed, which is
itself a fault of the node.

>>> from supernet.sdk.formats.trace import example_dag
>>> t = parse_trace(example_dag())
>>> t.llm_calls[0].output_ids, t.llm_calls[0].call
((3,), 0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supernet.sdk.formats.fields import FormatError
from supernet.sdk.formats.profile import AgentProfile, profile_hash_or_reason
from supernet.sdk.formats.trace import LlmEvent, ToolEvent, trace_from_block
from supernet.sdk.formats.trace import Trace as TraceDoc
from supernet.sdk.store.errors import InvalidBlockError


class MalformedTrace(ValueError):
    """The trace does not have the shape verification needs."""


@dataclass(frozen=True)
class LLMCall:
    """One recorded LLM call.

    Attributes:
        call: index of the event in the trace's ``events``.
        model_id: model the call claims (``0x`` hex); the trace's model when not per call.
        prompt_ids: templated prompt token ids.
        output_ids: generated token ids.
        logprobs: claimed log-probability of each output token.
        fingerprints: claimed activation fingerprints (engine-defined shape), or None.
        temperature: 0 for greedy.
        top_p: nucleus mass.
        seed: counter-based RNG key.
        max_new_tokens: the output budget.
        stop_token_ids: tokens that end a generation (None: the model's EOS tokens).
        finish_reason: ``"stop"`` or ``"length"``.
        text: the decoded reply the agent saw, if recorded.
        stop_strings: stop strings of the call (the text is cut before the first one).
        grammar: a constrained call's grammar (its tokens obey its mask), else None.
    """

    call: int
    model_id: str
    prompt_ids: tuple[int, ...]
    output_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    fingerprints: Any
    temperature: float
    top_p: float
    seed: int
    max_new_tokens: int
    stop_token_ids: tuple[int, ...] | None
    finish_reason: str
    text: str | None
    stop_strings: tuple[str, ...] = ()
    grammar: str | None = None


@dataclass(frozen=True)
class ToolCall:
    """One recorded tool call."""

    call: int
    name: str
    args: Mapping[str, Any]
    result: Any
    error: str | None
    deterministic: bool


@dataclass(frozen=True)
class Trace:
    """A parsed trace: the typed document (``doc``) and its calls as the checks read them."""

    doc: TraceDoc
    task_id: str
    agent_id: str
    agent_hash: str  # of the profile the trace ran under (code, limits, tools): the signed agentHash
    model_id: str
    input: Any
    output: str
    status: str
    llm_calls: tuple[LLMCall, ...]
    tool_calls: tuple[ToolCall, ...]


def _llm(i: int, ev: LlmEvent) -> LLMCall:
    p = ev.params
    return LLMCall(
        call=i,
        model_id=ev.model_id,
        prompt_ids=ev.prompt_ids,
        output_ids=ev.output_ids,
        logprobs=tuple(float("nan") if x is None else x for x in ev.logprobs),
        fingerprints=ev.fingerprints,
        temperature=p.temperature,
        top_p=p.top_p,
        seed=p.seed,
        max_new_tokens=p.max_new_tokens,
        stop_token_ids=p.stop_token_ids,
        finish_reason=ev.finish_reason,
        text=ev.text,
        stop_strings=p.stop,
        grammar=p.grammar,
    )


def parse_trace_block(block: bytes) -> Trace:
    """Parse a trace block as the node committed it: at most `MAX_TRACE_BYTES` (a larger one
    could never be posted in an availability answer, so committing it is the node's fault).

    Raises:
        MalformedTrace: over the cap, not dag-cbor, or not a well-formed trace.
    """
    try:
        return parse_trace(trace_from_block(block))
    except (FormatError, InvalidBlockError) as exc:
        raise MalformedTrace(f"malformed trace: {exc}") from None


def parse_trace(doc: Any) -> Trace:
    """Parse a trace document.

    Raises:
        MalformedTrace: not a well-formed ``supernet/trace/v1`` document (the message names the field).
    """
    try:
        typed = doc if isinstance(doc, TraceDoc) else TraceDoc.from_dag(doc)
    except FormatError as exc:
        raise MalformedTrace(f"malformed trace: {exc}") from None
    events = typed.events
    return Trace(
        doc=typed,
        task_id=typed.task_id,
        agent_id=typed.agent.id,
        agent_hash=profile_hash_or_reason(AgentProfile.of_trace(typed)),
        model_id=typed.model_id,
        input=typed.input,
        output=typed.output,
        status=typed.status,
        llm_calls=tuple(_llm(i, e) for i, e in enumerate(events) if isinstance(e, LlmEvent)),
        tool_calls=tuple(
            ToolCall(i, e.name, e.args, e.result, e.error, e.deterministic)
            for i, e in enumerate(events)
            if isinstance(e, ToolEvent)
        ),
    )
