"""The retrieval agent: answers from the agent's memory (retrieval-augmented generation).

Input: a question string, or ``{"remember": ["fact", ...], "question": "...", "k": 3}``.
Facts to remember are added first (each a memory write, a new root CID); then the ``k``
closest memories go into the prompt as context.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from supernet.node.agents.base import Agent
from supernet.node.agents.context import AgentContext

SYSTEM = "Answer the question using only the notes. If the notes do not say, answer that you do not know."


class RetrievalAgent(Agent):
    """Remembers facts per user and answers questions from them."""

    agent_id = "retrieval"
    description = "Remembers facts and answers questions from its memory."
    input_schema: ClassVar[Mapping[str, Any]] = {
        "oneOf": [
            {"type": "string", "description": "A question, answered from what it remembers."},
            {
                "type": "object",
                "properties": {
                    "remember": {"type": "array", "items": {"type": "string"}},
                    "question": {"type": "string"},
                    "k": {"type": "integer", "minimum": 1},
                    "max_new_tokens": {"type": "integer", "minimum": 1},
                },
            },
        ]
    }

    async def run(self, ctx: AgentContext, input: Any) -> str:
        if isinstance(input, str):
            input = {"question": input}
        if not isinstance(input, dict):
            raise ValueError('retrieval input is a question or {"remember": [...], "question": "..."}')
        for fact in input.get("remember", []):
            await ctx.memory.add(str(fact))
        question = input.get("question")
        if not question:
            return f"Remembered {len(input.get('remember', []))} notes."
        hits = await ctx.memory.search(str(question), k=int(input.get("k", 3)))
        notes = "\n".join(f"- {h.text}" for h in hits) or "- (no notes)"
        reply = await ctx.llm.chat(
            [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Notes:\n{notes}\n\nQuestion: {question}"},
            ],
            max_new_tokens=int(input.get("max_new_tokens", 96)),
        )
        return reply.text
