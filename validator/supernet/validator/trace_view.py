"""The parts of an execution trace a validator re-checks (``supernet/trace/v1``).

Parsing is strict about what verification needs and ignores the rest (memory and storage events
are addressed by CID, so their content is fixed by the trace itself). A trace that lacks a
needed field is malformed, which is itself a fault of the node.

>>> t = parse_trace({"type": "supernet/trace/v1", "task_id": "0x01", "model_id": "0x02",
...                  "agent": {"id": "chat", "code_hash": "0xab"}, "input": "hi", "output": "yo", "events": [
...                  {"kind": "llm", "prompt_ids": [1, 2], "output_ids": [3], "logprobs": [-0.5],
...                   "temperature": 0.0, "seed": 0, "max_new_tokens": 4, "finish_reason": "stop"}]})
>>> t.llm_calls[0].output_ids, t.llm_calls[0].call
((3,), 0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from supernet.node.kernel.trace import MAX_TRACE_EVENTS, TRACE_TYPE


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
    """A parsed trace."""

    task_id: str
    agent_id: str
    agent_hash: str
    model_id: str
    input: Any
    output: str
    status: str
    llm_calls: tuple[LLMCall, ...]
    tool_calls: tuple[ToolCall, ...]


def _get(d: Mapping[str, Any], *names: str, default: Any = ...) -> Any:
    for n in names:
        if n in d:
            return d[n]
    if default is ...:
        raise MalformedTrace(f"missing field {names[0]!r}")
    return default


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple) or not all(
        isinstance(x, int) and not isinstance(x, bool) for x in value
    ):
        raise MalformedTrace(f"{what} must be a list of integers")
    return tuple(value)


def _params(ev: Mapping[str, Any]) -> Mapping[str, Any]:
    nested = ev.get("params") or ev.get("sampling")
    return nested if isinstance(nested, Mapping) else ev


def _llm(i: int, ev: Mapping[str, Any], trace_model: str) -> LLMCall:
    p = _params(ev)
    stops = _get(p, "stop_token_ids", default=None)
    logprobs = _get(ev, "logprobs", default=())
    if not isinstance(logprobs, list | tuple):
        raise MalformedTrace(f"event {i}: logprobs must be a list")
    return LLMCall(
        call=i,
        model_id=str(_get(ev, "model_id", default=trace_model)),
        prompt_ids=_ints(_get(ev, "prompt_ids"), f"event {i} prompt_ids"),
        output_ids=_ints(_get(ev, "output_ids"), f"event {i} output_ids"),
        logprobs=tuple(float("nan") if x is None else float(x) for x in logprobs),
        fingerprints=_get(ev, "fingerprints", default=None),
        temperature=float(_get(p, "temperature", default=0.0)),
        top_p=float(_get(p, "top_p", default=1.0)),
        seed=int(_get(p, "seed", default=0)),
        max_new_tokens=int(_get(p, "max_new_tokens")),
        stop_token_ids=None if stops is None else _ints(stops, f"event {i} stop_token_ids"),
        finish_reason=str(_get(ev, "finish_reason")),
        text=_get(ev, "text", default=None),
        stop_strings=tuple(str(x) for x in _get(p, "stop", "stop_strings", default=()) or ()),
    )


def _tool(i: int, ev: Mapping[str, Any]) -> ToolCall:
    args = _get(ev, "args", "arguments")
    if not isinstance(args, Mapping):
        raise MalformedTrace(f"event {i}: tool args must be an object")
    return ToolCall(
        call=i,
        name=str(_get(ev, "name", "tool")),
        args=args,
        result=_get(ev, "result", default=None),
        error=_get(ev, "error", default=None),
        deterministic=bool(_get(ev, "deterministic")),
    )


def parse_trace(doc: Any) -> Trace:
    """Parse a trace document.

    Raises:
        MalformedTrace: wrong type tag or a missing / mistyped field.
    """
    if not isinstance(doc, Mapping) or doc.get("type") != TRACE_TYPE:
        raise MalformedTrace(f"not a {TRACE_TYPE} document")
    agent = _get(doc, "agent")
    if not isinstance(agent, Mapping):
        raise MalformedTrace("agent must be an object")
    model = str(_get(doc, "model_id"))
    events = _get(doc, "events")
    if not isinstance(events, list):
        raise MalformedTrace("events must be a list")
    if len(events) > MAX_TRACE_EVENTS:  # the kernel never records more: bound the work up front
        raise MalformedTrace(f"{len(events)} events, more than the {MAX_TRACE_EVENTS} a kernel records")
    llm: list[LLMCall] = []
    tools: list[ToolCall] = []
    for i, ev in enumerate(events):
        if not isinstance(ev, Mapping):
            raise MalformedTrace(f"event {i} is not an object")
        try:
            if ev.get("kind") == "llm":
                llm.append(_llm(i, ev, model))
            elif ev.get("kind") == "tool":
                tools.append(_tool(i, ev))
        except MalformedTrace:
            raise
        except (TypeError, ValueError, OverflowError) as exc:  # e.g. float("hot"): the node's doing
            raise MalformedTrace(f"event {i}: {type(exc).__name__}: {exc}") from exc
    output = _get(doc, "output")
    return Trace(
        task_id=str(_get(doc, "task_id")),
        agent_id=str(_get(agent, "id")),
        agent_hash=str(_get(agent, "code_hash")),
        model_id=model,
        input=_get(doc, "input"),
        output=output if isinstance(output, str) else "",
        status=str(_get(doc, "status", default="ok")),
        llm_calls=tuple(llm),
        tool_calls=tuple(tools),
    )
