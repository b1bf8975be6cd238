"""The node's agents: the registry, agents from packages, and the built-ins: chat, react (tools),
retrieval (memory).

``Agent`` and ``AgentContext`` are the agent ABI of the SDK (:mod:`supernet.sdk.agents`, no torch),
re-exported here; agent packages import them from the SDK.

>>> from supernet.node.agents import Agent, AgentContext
>>> class Shout(Agent):
...     agent_id = "shout"
...     async def run(self, ctx: AgentContext, input: str) -> str:
...         reply = await ctx.llm.chat([{"role": "user", "content": input}], max_new_tokens=32)
...         return reply.text.upper()
"""

from supernet.node.agents.base import Agent, bundle_hash
from supernet.node.agents.context import AgentContext
from supernet.node.agents.registry import AgentInfo, AgentRegistry, default_registry

__all__ = ["Agent", "AgentContext", "AgentInfo", "AgentRegistry", "bundle_hash", "default_registry"]
