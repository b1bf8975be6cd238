"""The agent registry: which agents this node runs, by id and code hash.

Agents are Python classes installed with the node (built-ins, or the operator's own
packages); the kernel never downloads or runs code a task sends. The operator allows
agents by id or by code hash; a task that names another agent, or pins a code hash that
differs from the installed one, is refused.

>>> registry = default_registry(allowed=["chat"])
>>> registry.get("chat").agent_id
'chat'
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from supernet.node.agents.base import Agent
from supernet.node.kernel.errors import AgentNotAllowedError


@dataclass(frozen=True)
class AgentInfo:
    """A registered agent."""

    agent_id: str
    code_hash: str
    description: str
    cls: type[Agent]


class AgentRegistry:
    """Registered agents, filtered by the operator's allow list.

    Args:
        allowed: Agent ids or code hashes (``0x…``) the operator runs; ``None`` allows every
            registered agent.
    """

    def __init__(self, allowed: Iterable[str] | None = None) -> None:
        self._allowed = None if allowed is None else {a.lower() for a in allowed}
        self._agents: dict[str, AgentInfo] = {}

    def register(self, cls: type[Agent]) -> AgentInfo:
        """Register an agent class (its code hash is computed now).

        Raises:
            ValueError: Another class already has this id.
        """
        existing = self._agents.get(cls.agent_id)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"agent id {cls.agent_id!r} is already registered")
        info = AgentInfo(cls.agent_id, cls.code_hash(), cls.description, cls)
        self._agents[cls.agent_id] = info
        return info

    def is_allowed(self, info: AgentInfo) -> bool:
        """Whether the operator runs ``info``."""
        return self._allowed is None or bool({info.agent_id.lower(), info.code_hash} & self._allowed)

    def get(self, agent_id: str, code_hash: str | None = None) -> AgentInfo:
        """The allowed agent ``agent_id``, checked against ``code_hash`` when given.

        Raises:
            AgentNotAllowedError: Unknown, not allowed, or another code hash.
        """
        info = self._agents.get(agent_id)
        if info is None or not self.is_allowed(info):
            raise AgentNotAllowedError(f"this node does not run agent {agent_id!r}; it runs {self.ids()}")
        if code_hash is not None and code_hash.lower() != info.code_hash:
            raise AgentNotAllowedError(
                f"agent {agent_id!r} here has code hash {info.code_hash}, not {code_hash}"
            )
        return info

    def ids(self) -> list[str]:
        """Ids of the allowed agents."""
        return sorted(a.agent_id for a in self._agents.values() if self.is_allowed(a))

    def list(self) -> list[AgentInfo]:
        """The allowed agents."""
        return [self._agents[i] for i in self.ids()]


def default_registry(allowed: Iterable[str] | None = None) -> AgentRegistry:
    """A registry with the built-in agents (chat, react, retrieval) under the allow list."""
    from supernet.node.agents.chat import ChatAgent
    from supernet.node.agents.react import ReactAgent
    from supernet.node.agents.retrieval import RetrievalAgent

    registry = AgentRegistry(allowed)
    for cls in (ChatAgent, ReactAgent, RetrievalAgent):
        registry.register(cls)
    return registry
