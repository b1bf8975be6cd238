"""The base class of agents, and how an agent is identified: id and code hash.

The agent ABI lives in the SDK (:mod:`supernet.sdk.agents.base`, no torch needed); this module
re-exports it so the node's built-in agents and packaged ones share one base class and one
code-hash rule.

>>> class Echo(Agent):
...     agent_id = "echo"
...     async def run(self, ctx, input):
...         return str(input)
>>> Echo.code_hash().startswith("0x") and len(Echo.code_hash()) == 66
True
"""

from supernet.sdk.agents.base import Agent, bundle_hash, package_bundle

__all__ = ["Agent", "bundle_hash", "package_bundle"]
