"""The ReAct agent: reason, call tools, observe, answer (Thought / Action / Action Input lines).

Input: a question string, or ``{"question": "...", "max_steps": n}``. Each step is one LLM
call that stops at ``Observation:``; the tool's result (or error) is fed back as the
observation, cut to its share of the context (`observation_bytes`). The loop is bounded by
``max_steps`` and by the context; a model that never gives a ``Final Answer:`` gets one last call
without tools, so the task always ends.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext
from supernet.node.agents.react_parse import coerce_args, parse_step
from supernet.node.kernel.errors import BudgetExceededError, KernelError, LLMError
from supernet.sdk.formats.trace import MAX_CONTEXT_TOKENS

DEFAULT_MAX_STEPS = 4
MAX_STEPS = 64
"""The most steps an input may ask: more than the context holds (each takes at least
`LATER_STEP_TOKENS` + `MIN_OBSERVATION_BYTES` of its 2,048 tokens), a bound the schema states."""
STEP_TOKENS = 96
TURN_TOKENS = 16
"""Most tokens a chat template adds around one message (role markers, newlines; SmolLM2's: 5),
with room for a reply that encodes to a few more tokens than the model generated."""
MIN_OBSERVATION_BYTES = 64
"""The least an observation is planned to hold: the steps are planned down to what the context
holds at this share rather than cut to nothing."""
OBSERVATION = "Observation: "
FINAL = "Give the final answer now, in one sentence."
FINAL_TOKENS = len(FINAL.encode()) + 2 * TURN_TOKENS + STEP_TOKENS
"""What the final call needs: its question, its turn and the assistant's, and its answer."""
LATER_STEP_TOKENS = STEP_TOKENS + 2 * TURN_TOKENS + len(OBSERVATION.encode())
"""What a later step adds besides its observation: its reply, and the turns of both."""

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
                    "max_steps": {"type": "integer", "minimum": 1, "maximum": MAX_STEPS},
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
        steps = max(1, max_steps)
        for done in range(1, steps + 1):
            reply = await ctx.llm.chat(messages, max_new_tokens=STEP_TOKENS, stop=STOPS)
            step = parse_step(reply.text, list(specs))
            if step.final_answer is not None:
                return step.final_answer
            if step.action is None:
                if reply.text.strip():  # no format at all: the model answered directly
                    return reply.text.strip().split("\n\n")[0]
                break
            observation = await self._act(ctx, step.action, step.action_input, specs[step.action].parameters)
            # the tokens the context holds once this reply is in it (the model's reply counted by
            # the ids it generated): the observation gets its share of the rest
            used = len(reply.prompt_ids) + len(reply.output_ids) + TURN_TOKENS
            shown = cut_utf8(observation, observation_bytes(used, steps - done))
            messages.append({"role": "assistant", "content": reply.text.strip()})
            messages.append({"role": "user", "content": f"{OBSERVATION}{shown}"})
            used += TURN_TOKENS + len(OBSERVATION.encode()) + len(shown.encode("utf-8", "surrogatepass"))
            if used + LATER_STEP_TOKENS + MIN_OBSERVATION_BYTES + FINAL_TOKENS > MAX_CONTEXT_TOKENS:
                break  # no room for another step: answer from what was observed
        messages.append({"role": "user", "content": FINAL})
        try:
            reply = await ctx.llm.chat(messages, max_new_tokens=STEP_TOKENS, stop=STOPS)
        except BudgetExceededError:
            return "I could not finish within this task's budget."
        except LLMError as exc:  # a context the steps filled after all (the kernel's refusal)
            if "-token context" not in str(exc):
                raise
            return "I could not finish within the model's context."
        final = parse_step(reply.text, []).final_answer
        return final if final is not None else reply.text.strip()

    @staticmethod
    async def _act(ctx: AgentContext, tool: str, raw_args: str | None, schema: Any) -> str:
        """Run one tool call; errors become the observation so the model can correct itself."""
        try:
            result = await ctx.tools.call(tool, coerce_args(raw_args, schema))
        except (KernelError, ValueError) as exc:
            return f"Error: {exc}"
        return result if isinstance(result, str) else json.dumps(result)


def observation_bytes(used: int, later: int) -> int:
    """The UTF-8 bytes an observation may hold when the context holds ``used`` tokens and up to
    ``later`` steps may follow: what `MAX_CONTEXT_TOKENS` has left after the final call
    (`FINAL_TOKENS`), the later steps' replies and turns (`LATER_STEP_TOKENS`) and this one's turn,
    shared equally by this observation and the later ones (the steps are planned down to as many
    as leave each `MIN_OBSERVATION_BYTES`). A byte-level BPE token covers at least one byte, so an
    observation of ``n`` bytes is at most ``n`` tokens whatever its text: a cap in characters was
    not (600 characters of plane 16 are 2,400 SmolLM2 tokens, more than the whole context)."""
    spare = MAX_CONTEXT_TOKENS - used - FINAL_TOKENS - TURN_TOKENS - len(OBSERVATION.encode())
    # the most shares that leave each MIN_OBSERVATION_BYTES: (spare - (s - 1) * L) // s >= M holds
    # exactly for s <= (spare + L) / (M + L). In closed form: a user's max_steps of 2**53 counted
    # down one share at a time held the node's event loop for years (a review's HIGH finding)
    fitting = (spare + LATER_STEP_TOKENS) // (MIN_OBSERVATION_BYTES + LATER_STEP_TOKENS)
    shares = max(1, min(later + 1, fitting))
    return max(0, (spare - (shares - 1) * LATER_STEP_TOKENS) // shares)


def cut_utf8(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, at a character boundary."""
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text
    end = limit
    while end > 0 and data[end] & 0xC0 == 0x80:  # a continuation byte: inside a character
        end -= 1
    return data[:end].decode("utf-8", "surrogatepass")
