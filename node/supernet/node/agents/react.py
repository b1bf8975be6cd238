"""The ReAct agent: reason, call tools, observe, answer (Thought / Action / Action Input lines).

Input: a question string, or ``{"question": "...", "max_steps": n}``. Each step is one LLM
call that stops at ``Observation:``; the tool's result (or error) is fed back as the
observation. The loop is bounded by ``max_steps``; a model that never gives a
``Final Answer:`` gets one last call without tools, so the task always ends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.react_parse import coerce_args, parse_step
from supernet.node.kernel.errors import BudgetExceededError, KernelError

DEFAULT_MAX_STEPS = 4
MAX_OBSERVATION_CHARS = 600
STEP_TOKENS = 96

PROMPT = """Answer the question. You can use these tools:
{tools}

Use exactly this format:
Thought: what to do next
Action: one tool name from [{names}]
Action Input: the tool's arguments as JSON
Observation: the tool's result (given to you)
Final Answer: the answer

Example:
Question: What is 12 * 5?
Thought: I need to multiply.
Action: calculator
Action Input: {{"expression": "12 * 5"}}
Observation: 60
Final Answer: 60

Question: {question}
Thought:"""
STOPS = ("Observation:", "\nQuestion:")  # small models go on to invent the next question


class ReactAgent(Agent):
    """Uses the node's tools step by step to answer a question."""

    agent_id = "react"
    description = "Answers a question with tools (ReAct: Thought, Action, Observation)."
    input_schema: ClassVar[Mapping[str, Any]] = {
        "oneOf": [
            {"type": "string", "minLength": 1, "description": "The question."},
            {
                "type": "object",
                "required": ["question"],
                "properties": {
                    "question": {"type": "string", "minLength": 1},
                    "max_steps": {"type": "integer", "minimum": 1},
                },
            },
        ]
    }
    bundle_modules = ("supernet.node.agents.react_parse",)

    async def run(self, ctx: AgentContext, input: Any) -> str:
        question = input if isinstance(input, str) else (input or {}).get("question")
        if not question:
            raise ValueError('react input is a question or {"question": "...", "max_steps": n}')
        max_steps = (
            int(input.get("max_steps", DEFAULT_MAX_STEPS)) if isinstance(input, dict) else DEFAULT_MAX_STEPS
        )
        specs = {s.name: s for s in ctx.tools.available}
        tools = "\n".join(f"- {s.name}: {s.description}" for s in specs.values()) or "- (none)"
        messages = [
            {"role": "user", "content": PROMPT.format(tools=tools, names=", ".join(specs), question=question)}
        ]
        for _ in range(max(1, max_steps)):
            reply = await ctx.llm.chat(messages, max_new_tokens=STEP_TOKENS, stop=STOPS)
            step = parse_step(reply.text, list(specs))
            if step.final_answer is not None:
                return step.final_answer
            if step.action is None:
                if reply.text.strip():  # no format at all: the model answered directly
                    return reply.text.strip().split("\n\n")[0]
                break
            observation = await self._act(ctx, step.action, step.action_input, specs[step.action].parameters)
            messages.append({"role": "assistant", "content": reply.text.strip()})
            messages.append({"role": "user", "content": f"Observation: {observation}"})
        messages.append({"role": "user", "content": "Give the final answer now, in one sentence."})
        try:
            reply = await ctx.llm.chat(messages, max_new_tokens=STEP_TOKENS, stop=STOPS)
        except BudgetExceededError:
            return "I could not finish within this task's budget."
        final = parse_step(reply.text, []).final_answer
        return final if final is not None else reply.text.strip()

    @staticmethod
    async def _act(ctx: AgentContext, tool: str, raw_args: str | None, schema: Any) -> str:
        """Run one tool call; errors become the observation so the model can correct itself."""
        try:
            result = await ctx.tools.call(tool, coerce_args(raw_args, schema))
        except (KernelError, ValueError) as exc:
            return f"Error: {exc}"
        text = result if isinstance(result, str) else json.dumps(result)
        return text[:MAX_OBSERVATION_CHARS]
