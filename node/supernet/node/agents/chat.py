"""The chat agent: one LLM call on the user's messages (what ``/v1/chat/completions`` runs).

Input: a string (one user message), or ``{"messages": [...], "max_new_tokens": n,
"temperature": t, "top_p": p, "seed": s, "stop": [strings], "response_format": {...}}`` (a single
``stop`` string is a list of one; at most `MAX_STOP_STRINGS` of `MAX_STOP_CHARS` characters).
Generation ends at the first stop string, so the node spends no tokens past it. A
``response_format`` of type ``json_schema`` or ``json_object`` constrains the reply to that JSON
(the kernel's grammar mask, `supernet.node.llm.grammar`).

``tools`` and ``tool_choice`` (OpenAI's shapes) make a tool-calling reply: the tools are listed in
a system message, ``tool`` messages and assistant ``tool_calls`` are rendered as text, and the
reply is constrained to a tool call (or, for ``"auto"``, text or a tool call) by the grammar
`supernet.node.agents.tool_calls` derives from them. The output is the reply's text (a tool call
is its JSON); the OpenAI route turns it into ``tool_calls``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.tool_calls import render_messages, tools_response_format
from supernet.sdk.formats.trace import MAX_STOP_CHARS, MAX_STOP_STRINGS  # the protocol's, re-exported

DEFAULT_MAX_NEW_TOKENS = 128
_STOP_STRING = {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS}


class ChatAgent(Agent):
    """Answers a chat with the node's model."""

    agent_id = "chat"
    description = "One reply of the node's model to a chat."
    input_schema: ClassVar[Mapping[str, Any]] = {
        "oneOf": [
            {"type": "string", "description": "One user message."},
            {
                "type": "object",
                "required": ["messages"],
                "properties": {
                    "messages": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["role"],
                            "properties": {
                                "role": {"type": "string"},
                                "content": {"type": ["string", "null"]},
                                "tool_calls": {"type": "array"},
                            },
                        },
                    },
                    "max_new_tokens": {"type": "integer", "minimum": 1},
                    "temperature": {"type": "number", "minimum": 0},
                    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                    "seed": {"type": "integer"},
                    "stop": {
                        "oneOf": [
                            _STOP_STRING,
                            {"type": "array", "maxItems": MAX_STOP_STRINGS, "items": _STOP_STRING},
                        ]
                    },
                    "response_format": {"type": "object", "required": ["type"]},
                    "tools": {"type": "array", "minItems": 1},
                    "tool_choice": {"oneOf": [{"type": "string"}, {"type": "object"}]},
                },
                # A reply that may be a tool call is constrained by the tools' grammar: it takes no
                # other response_format (the agent refuses it; refused at admission instead).
                "if": {
                    "required": ["tools", "response_format"],
                    "properties": {"tool_choice": {"not": {"const": "none"}}},
                },
                "then": {"properties": {"response_format": {"properties": {"type": {"const": "text"}}}}},
            },
        ]
    }
    # the prompt a tool chat sends and the grammar of its calls (tool_calls, and the grammar
    # constants it builds them from) are the agent's behaviour: they count in its code hash
    bundle_modules = ("supernet.node.agents.tool_calls", "supernet.node.llm.grammar")

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if isinstance(input, str):
            messages: list[Any] = [{"role": "user", "content": input}]
            options: dict[str, Any] = {}
        elif isinstance(input, dict) and isinstance(input.get("messages"), list) and input["messages"]:
            messages = input["messages"]
            options = {k: input[k] for k in ("max_new_tokens", "temperature", "top_p", "seed") if k in input}
            stop = input.get("stop")
            if stop is not None:
                options["stop"] = [stop] if isinstance(stop, str) else list(stop)
            if input.get("response_format") is not None:
                options["response_format"] = input["response_format"]
            messages = render_messages(messages, input.get("tools"), input.get("tool_choice"))
            tool_format = tools_response_format(input.get("tools"), input.get("tool_choice"))
            if tool_format is not None:
                if options.get("response_format", {}).get("type", "text") != "text":
                    raise ValueError("a chat whose reply may be a tool call takes no other response_format")
                options["response_format"] = tool_format
        else:
            raise ValueError('chat input is a string or {"messages": [{"role": ..., "content": ...}, ...]}')
        options.setdefault("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        reply = await ctx.llm.chat(messages, **options)
        return reply.text
