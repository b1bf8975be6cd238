"""``calc-explain``: one calculator call, then one LLM call about its result.

Input: an arithmetic expression, or ``{"expression": "...", "max_new_tokens": n}``. The answer is
``"<expression> = <value>. <the model's sentence>"``; a calculator error is part of the answer
(``"<expression>: <error>"``), with no LLM call. Deterministic as the replay requires: no clock,
randomness or I/O of its own, only ``ctx`` syscalls (the model's sampling is the protocol's).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from supernet.sdk.agents import Agent, AgentContext, ToolError

from supernet_example_agent.prompts import SYSTEM, explain

DEFAULT_MAX_NEW_TOKENS = 32


class CalcExplainAgent(Agent):
    """Evaluates an expression with the calculator tool and has the model explain the result."""

    agent_id = "calc-explain"
    description = "Evaluates an arithmetic expression with the calculator tool, then explains the result."
    input_schema: ClassVar[Mapping[str, Any]] = {
        "oneOf": [
            {"type": "string", "minLength": 1, "description": "An arithmetic expression."},
            {
                "type": "object",
                "required": ["expression"],
                "properties": {
                    "expression": {"type": "string", "minLength": 1},
                    "max_new_tokens": {"type": "integer", "minimum": 1, "maximum": 128},
                },
                "additionalProperties": False,
            },
        ]
    }
    bundle_package = "supernet_example_agent"

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if isinstance(input, str):
            expression, max_new_tokens = input, DEFAULT_MAX_NEW_TOKENS
        elif isinstance(input, dict) and isinstance(input.get("expression"), str):
            expression = input["expression"]
            max_new_tokens = int(input.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS))
        else:
            raise ValueError('calc-explain input is an expression or {"expression": "..."}')
        try:
            value = await ctx.tools.call("calculator", {"expression": expression})
        except ToolError as exc:  # recorded as an error event; the replay raises the same one
            return f"{expression}: {exc}"
        reply = await ctx.llm.chat(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": explain(expression, str(value))},
            ],
            max_new_tokens=max_new_tokens,
        )
        return f"{expression} = {value}. {reply.text.strip()}"
