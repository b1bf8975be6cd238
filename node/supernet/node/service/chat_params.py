"""Which OpenAI chat parameters this node honours, and a 400 naming any other one.

The ``chat`` agent runs one greedy-or-sampled generation on text messages; what it cannot do
exactly — and a validator could not re-check — is refused, never silently ignored:

* ``n`` > 1: one task is one generation (send n requests);
* ``tools`` / ``tool_choice`` that are malformed, or a ``tool_choice`` naming a function not in
  ``tools`` (tool calling itself is honoured: `supernet.node.agents.tool_calls`), ``tools``
  together with a ``response_format`` other than text, the legacy ``functions`` /
  ``function_call``;
* ``response_format`` other than ``text``, ``json_object`` or ``json_schema``, or a schema that
  gives no grammar (``json_schema`` and ``json_object`` are honoured by constrained decoding:
  `supernet.node.llm.grammar`, which validators re-apply);
* ``presence_penalty`` / ``frequency_penalty`` other than 0, ``logit_bias``: the sampler has none;
* ``top_logprobs`` > 5: alternatives come from a teacher-forced pass that keeps 5 per position;
* content parts other than ``text`` (images, audio), and any field this API does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from supernet.node.agents.tool_calls import ToolSpecError, tool_mode, tools_response_format
from supernet.node.llm.grammar import TEXT_FORMATS, GrammarError, check_grammar, grammar_of
from supernet.node.service.errors import BadRequestError
from supernet.node.service.schemas import ChatCompletionCreate

MAX_TOP_LOGPROBS = 5
"""Alternatives per token the scoring pass keeps (``supernet.node.llm.scoring.score``'s top_k)."""


class UnsupportedParameterError(BadRequestError):
    """A chat parameter this node cannot honour (``param`` names it, as OpenAI's errors do)."""

    code = "unsupported_parameter"


@dataclass(frozen=True)
class ChatPlan:
    """What the answer must do beyond running the agent."""

    stop: tuple[str, ...]
    logprobs: bool
    top_logprobs: int
    include_usage: bool
    tools: Any = None
    """The request's ``tools`` when the reply may be a tool call (``tool_choice`` not "none")."""


_WHY = {
    "functions": "the legacy function calling; send `tools`",
    "function_call": "the legacy function calling; send `tool_choice`",
    "logit_bias": "the sampler applies no logit bias",
    "modalities": "text only",
    "audio": "text only",
}


def _refuse(param: str, why: str) -> UnsupportedParameterError:
    return UnsupportedParameterError(f"`{param}` is not supported by this node: {why}", param=param)


def _check_messages(body: ChatCompletionCreate) -> None:
    for i, m in enumerate(body.messages):
        where = f"messages[{i}]"
        extra = m.model_extra or {}
        for name in ("function_call", "audio"):
            if name in extra:
                raise _refuse(f"{where}.{name}", "no legacy function calls or audio")
        if m.role == "tool" and not isinstance(extra.get("tool_call_id"), str):
            raise BadRequestError(f"{where}.tool_call_id is missing", param=f"{where}.tool_call_id")
        if "tool_calls" in extra:
            _check_tool_calls(extra["tool_calls"], m.role, where)
        if m.content is None and not (m.role == "assistant" and extra.get("tool_calls")):
            raise BadRequestError(f"{where}.content is missing", param=f"{where}.content")
        if isinstance(m.content, list):
            for j, part in enumerate(m.content):
                if part.type != "text" or part.text is None:
                    raise _refuse(f"{where}.content[{j}]", f"only text parts are read, not {part.type!r}")


def _check_tool_calls(calls: Any, role: str, where: str) -> None:
    """An assistant's earlier ``tool_calls``: each ``{"id", "type": "function", "function":
    {"name", "arguments"}}`` (rendered into the prompt as the JSON call it was)."""
    if role != "assistant":
        raise BadRequestError(
            f"{where}.tool_calls: only assistant messages have them", param=f"{where}.tool_calls"
        )
    ok = isinstance(calls, list) and all(
        isinstance(c, dict)
        and c.get("type", "function") == "function"
        and isinstance(c.get("function"), dict)
        and isinstance(c["function"].get("name"), str)
        for c in calls
    )
    if not ok:
        raise BadRequestError(
            f"{where}.tool_calls must be an array of function calls with a name", param=f"{where}.tool_calls"
        )


def _check_tools(body: ChatCompletionCreate) -> Any:
    """The request's tools if the reply may call one (else None); a 400 naming what is wrong."""
    tools, choice = body.tools, body.tool_choice
    try:
        mode, _ = tool_mode(tools, choice)
        response_format = tools_response_format(tools, choice)
    except ToolSpecError as exc:
        raise BadRequestError(str(exc), param=exc.param) from None
    if mode == "none":
        return None
    if body.response_format is not None and body.response_format.get("type") not in TEXT_FORMATS:
        raise _refuse("response_format", "a reply that may be a tool call has no other format")
    try:
        check_grammar(grammar_of(response_format) or "")
    except GrammarError as exc:
        raise BadRequestError(f"`tools`: {exc}", param="tools") from None
    return tools


def _check_response_format(response_format: dict[str, Any] | None) -> None:
    """A 400 naming ``response_format`` unless it is text or gives a grammar that compiles."""
    if response_format is None or response_format.get("type") in TEXT_FORMATS:
        return
    if response_format.get("type") not in ("json_object", "json_schema"):
        raise _refuse("response_format", "only text, json_object and json_schema")
    try:
        grammar = grammar_of(response_format)
        if grammar is not None:
            check_grammar(grammar)
    except GrammarError as exc:
        raise BadRequestError(f"`response_format`: {exc}", param="response_format") from None


def chat_plan(body: ChatCompletionCreate) -> ChatPlan:
    """Check ``body`` against what this node honours.

    Raises:
        UnsupportedParameterError: the first parameter it cannot honour (400, ``param`` names it).
        BadRequestError: an inconsistent request (two different token limits, a message without
            content).
    """
    for name in sorted(body.model_extra or {}):
        raise _refuse(name, _WHY.get(name, "unknown to this node's chat API (docs/node.md)"))
    if body.n not in (None, 1):
        raise _refuse("n", "one task is one generation; send n requests")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) not in (None, 0):
            raise _refuse(name, "the sampler applies no penalties")
    _check_response_format(body.response_format)
    tools = _check_tools(body)
    if (body.top_logprobs or 0) > MAX_TOP_LOGPROBS:
        raise _refuse("top_logprobs", f"at most {MAX_TOP_LOGPROBS} alternatives per token are scored")
    if body.top_logprobs is not None and not body.logprobs:
        raise BadRequestError("`top_logprobs` needs `logprobs: true`", param="top_logprobs")
    both = (body.max_tokens, body.max_completion_tokens)
    if None not in both and both[0] != both[1]:
        raise BadRequestError(
            "`max_tokens` and `max_completion_tokens` differ; send one", param="max_completion_tokens"
        )
    _check_messages(body)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    return ChatPlan(
        stop=stop,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs or 0,
        include_usage=include_usage,
        tools=tools,
    )
