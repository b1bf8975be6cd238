"""The base class of agents, and how an agent is identified: id and code hash.

>>> class Echo(Agent):
...     agent_id = "echo"
...     async def run(self, ctx, input):
...         return str(input)
>>> Echo.code_hash().startswith("0x") and len(Echo.code_hash()) == 66
True
"""

from __future__ import annotations

import hashlib
import inspect
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from supernet.node.agents.context import AgentContext


def bundle_hash(files: Mapping[str, bytes]) -> str:
    """sha256 of a source bundle: for each file by name, ``name NUL size(8 bytes BE) bytes``.

    The encoding is unambiguous (names and sizes delimit the contents), so two different
    bundles never share a hash by concatenation tricks.
    """
    digest = hashlib.sha256()
    for name in sorted(files):
        data = files[name]
        digest.update(name.encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    return "0x" + digest.hexdigest()


class Agent(ABC):
    """An agent: ``run`` gets the task's context and input, returns the answer text.

    Subclasses set ``agent_id`` (the name users ask for) and may list extra modules their
    behaviour depends on in ``bundle_modules`` so those count in the code hash. A fresh
    instance runs each task: keep no state between tasks on the instance.
    """

    agent_id: ClassVar[str]
    description: ClassVar[str] = ""
    bundle_modules: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    async def run(self, ctx: AgentContext, input: Any) -> str:
        """Do the task; every LLM, tool, memory and storage access goes through ``ctx``."""

    @classmethod
    def source_bundle(cls) -> dict[str, bytes]:
        """The agent's source files by module name: its own module and ``bundle_modules``."""
        names = (cls.__module__, *cls.bundle_modules)
        bundle: dict[str, bytes] = {}
        for name in names:
            module = sys.modules.get(name)
            path = inspect.getsourcefile(module) if module is not None else None
            if path is None:
                bundle[name] = inspect.getsource(cls).encode() if name == cls.__module__ else b""
            else:
                bundle[name] = Path(path).read_bytes()
        return bundle

    @classmethod
    def code_hash(cls) -> str:
        """sha256 of the agent's source bundle, ``0x`` hex (the signed task's ``agentHash``)."""
        return bundle_hash(cls.source_bundle())
