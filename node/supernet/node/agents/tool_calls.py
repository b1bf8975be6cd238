"""OpenAI tool calling on a model without tool support in its chat template: the prompt, the
grammar and the reply, each a pure function of the signed input.

SmolLM2's chat template knows only ``role`` and ``content``, so the tools reach the model as a
system message this module writes (`tools_prompt`), and the reply is constrained by a grammar
built from the tools (`tools_response_format`: the kernel's ``tool_call`` format, which it turns
into the call's grammar with `supernet.node.llm.grammar.grammar_of`). Everything here depends only
on the chat agent's input (``messages``, ``tools``, ``tool_choice``: all inside the signed input),
so a validator's replay of the agent rebuilds the same messages and the same grammar and checks
them against the trace, and its grammar walk checks every token of a tool call exactly. Schemas
are written with sorted keys, so the prompt and the grammar do not depend on how the input's
keys were ordered in transit or in the store.

The rules (docs/node.md "Tool calling"):

* A tool call is the compact JSON ``{"name":N,"arguments":A}`` (``name`` first), ``N`` one of
  the offered tools and ``A`` valid against that tool's ``parameters`` schema (a missing schema
  is ``{"type": "object"}``). Tool names are OpenAI's: 1-64 letters, digits, ``_`` or ``-``.
* ``tool_choice`` ``"required"``: the reply is one such call; a named function
  (``{"type": "function", "function": {"name": N}}``): a call of ``N``; ``"auto"`` (the default
  when tools are given): either text that does not start with ``{`` or one call; ``"none"``: text,
  the tools are not listed in the prompt.
* An assistant message's ``tool_calls`` are rendered as those JSON calls (one a line) after its
  content; a ``tool`` message as a ``user`` message
  ``<tool_response name=... id=...>\\n{content}\\n</tool_response>``.

>>> tools = [{"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}]
>>> tools_response_format(tools, "required")
{'type': 'tool_call', 'tools': [{'name': 'add', 'parameters': {'type': 'object'}}], 'text': False}
>>> parse_tool_call('{"name":"add","arguments":{"a":1}}', tools)
('add', {'a': 1})
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from supernet.node.llm.grammar import TOOL_CALL, TOOL_NAME

TOOLS_PREAMBLE = (
    "You can call functions. To call one, reply with only a JSON object "
    '{"name": <function name>, "arguments": <arguments object>} and nothing else. '
    "The functions:"
)


class ToolSpecError(ValueError):
    """``tools`` / ``tool_choice`` that do not describe a usable tool call (``param`` names where)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _functions(tools: Any) -> list[Mapping[str, Any]]:
    if not isinstance(tools, list) or not tools:
        raise ToolSpecError("`tools` must be a non-empty array of functions", "tools")
    out: list[Mapping[str, Any]] = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(tool, Mapping) or tool.get("type") != "function" or not isinstance(fn, Mapping):
            raise ToolSpecError(
                f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}", f"tools[{i}]"
            )
        if not isinstance(fn.get("name"), str) or not TOOL_NAME.fullmatch(fn["name"]):
            raise ToolSpecError(
                f"tools[{i}].function.name must be 1-64 letters, digits, _ or -", f"tools[{i}].function.name"
            )
        if not isinstance(fn.get("parameters", {}), Mapping):
            raise ToolSpecError(
                f"tools[{i}].function.parameters must be a JSON schema object",
                f"tools[{i}].function.parameters",
            )
        out.append(fn)
    names = [fn["name"] for fn in out]
    if len(set(names)) != len(names):
        raise ToolSpecError("`tools` names a function twice", "tools")
    return out


def tool_mode(tools: Any, tool_choice: Any) -> tuple[str, tuple[str, ...]]:
    """``("none" | "auto" | "required", the names a call may use)`` for a request; no tools is
    ``("none", ())``.

    Raises:
        ToolSpecError: malformed tools, a ``tool_choice`` without tools, or one naming a function
            that is not among them.
    """
    if tools is None:
        if tool_choice not in (None, "none"):
            raise ToolSpecError("`tool_choice` needs `tools`", "tool_choice")
        return "none", ()
    names = tuple(fn["name"] for fn in _functions(tools))
    choice = "auto" if tool_choice is None else tool_choice
    if choice in ("none", "auto", "required"):
        return choice, names
    fn = choice.get("function") if isinstance(choice, Mapping) else None
    if not isinstance(choice, Mapping) or choice.get("type") != "function" or not isinstance(fn, Mapping):
        raise ToolSpecError(
            '`tool_choice` is "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
            "tool_choice",
        )
    if fn.get("name") not in names:
        raise ToolSpecError(
            f"`tool_choice` names function {fn.get('name')!r}, which is not in `tools`", "tool_choice"
        )
    return "required", (str(fn["name"]),)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def tools_prompt(tools: Any) -> str:
    """The system text that lists the tools: the preamble, then one line per function (its name,
    description and parameters schema as compact JSON)."""
    lines = [TOOLS_PREAMBLE]
    for fn in _functions(tools):
        about = (
            f',"description":{_compact(fn["description"])}' if isinstance(fn.get("description"), str) else ""
        )
        params = _compact(fn.get("parameters", {"type": "object"}))
        lines.append(f'{{"name":{_compact(fn["name"])}{about},"parameters":{params}}}')
    return "\n".join(lines)


def _arguments(call: Any) -> Any:
    fn = call.get("function") if isinstance(call, Mapping) else None
    raw = fn.get("arguments") if isinstance(fn, Mapping) else None
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw if raw is not None else {}


def call_text(name: Any, arguments: Any) -> str:
    """A tool call as the model writes it (the grammar's form: ``name`` first, compact)."""
    return f'{{"name":{_compact(name)},"arguments":{_compact(arguments)}}}'


def _rendered(message: Mapping[str, Any]) -> dict[str, str]:
    role, content = message.get("role"), message.get("content")
    text = content if isinstance(content, str) else ""
    if role == "tool":
        name = f" name={_compact(message['name'])}" if isinstance(message.get("name"), str) else ""
        ref = (
            f" id={_compact(message.get('tool_call_id'))}" if message.get("tool_call_id") is not None else ""
        )
        return {"role": "user", "content": f"<tool_response{name}{ref}>\n{text}\n</tool_response>"}
    calls = message.get("tool_calls") if role == "assistant" else None
    if isinstance(calls, list) and calls:
        rendered = [
            call_text((c.get("function") or {}).get("name"), _arguments(c))
            for c in calls
            if isinstance(c, Mapping)
        ]
        text = "\n".join([text, *rendered] if text else rendered)
    return {"role": str(role), "content": text}


def render_messages(messages: Sequence[Any], tools: Any, tool_choice: Any) -> list[dict[str, str]]:
    """The messages the model reads: tool results and earlier calls as text, and (unless
    ``tool_choice`` is ``"none"``) the tool list as the first system message (after the caller's
    own system text, when the conversation opens with one)."""
    out = [_rendered(m) if isinstance(m, Mapping) else m for m in messages]
    mode, _ = tool_mode(tools, tool_choice)
    if mode == "none":
        return out
    listing = tools_prompt(tools)
    if out and out[0].get("role") == "system":
        out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{listing}"}
    else:
        out.insert(0, {"role": "system", "content": listing})
    return out


def tools_response_format(tools: Any, tool_choice: Any) -> dict[str, Any] | None:
    """The kernel's ``tool_call`` ``response_format`` whose grammar constrains the reply (None for
    ``"none"``): the tools a call may use, and whether text is an alternative (``"auto"``)."""
    mode, names = tool_mode(tools, tool_choice)
    if mode == "none":
        return None
    offered = [
        {"name": fn["name"], "parameters": fn.get("parameters", {"type": "object"})}
        for fn in _functions(tools)
        if fn["name"] in names
    ]
    return {"type": TOOL_CALL, "tools": offered, "text": mode == "auto"}


def parse_tool_call(text: str, tools: Any) -> tuple[str, Any] | None:
    """``(name, arguments)`` when ``text`` is one tool call of an offered function, else None."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    names = {fn["name"] for fn in _functions(tools)}
    if not isinstance(doc, dict) or set(doc) != {"name", "arguments"} or doc["name"] not in names:
        return None
    return doc["name"], doc["arguments"]
