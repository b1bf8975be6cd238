"""The agent registry: which agents this node runs, by id and code hash.

Agents are Python classes installed with the node: the built-ins (chat, react, retrieval), and
agents from installed packages, found through the ``supernet.agents`` entry-point group
(:mod:`supernet.node.agents.packages`). The kernel never downloads or runs code a task sends.
The operator allows built-ins by id or by code hash (``[engine] agents``) and packaged agents by
id *and* code hash (``[agents] allow``); a task that names another agent, or pins a code hash
that differs from the installed one, is refused.

>>> registry = default_registry(allowed=["chat"])
>>> registry.get("chat").agent_id
'chat'
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from supernet.node.agents.base import Agent
from supernet.node.kernel.errors import AgentNotAllowedError
from supernet.sdk.agents.base import code_hash_of

if TYPE_CHECKING:
    from supernet.node.agents.packages import AllowedAgent, PackageLoad

BUILTIN_IDS = ("chat", "react", "retrieval")
"""Ids of the node's built-in agents: no package may take one."""

RACY_NS = 100_000_000
"""A package whose newest entry changed less than this long ago (ns) is re-hashed at every check:
a write within one tick of the file system's clock could leave its stat signature as it was (as
git's "racily clean" entries)."""

Signature = tuple[tuple[str, int, int, int, int, int], ...]
"""(path, mode, inode, size, mtime_ns, ctime_ns) of a package's every entry."""


def stat_signature(package: str) -> Signature | None:
    """The stat signature of the installed top-level package (or single module) ``package``: every
    entry under it (files, directories, links, ``__pycache__`` included), read with ``lstat``,
    nothing opened; ``None`` when it cannot be read whole (then the files are hashed). The inode
    and ctime see a replaced file or a rewrite that kept size and mtime (``rsync -a``): a user
    cannot set ctime back."""

    def entry(path: Path) -> tuple[str, int, int, int, int, int]:
        st = os.lstat(path)
        return (str(path), st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def fail(exc: OSError) -> None:
        raise exc

    try:
        spec = importlib.util.find_spec(package)
        if spec is None:
            return None
        locations = list(spec.submodule_search_locations or [])
        if not locations:
            return (entry(Path(spec.origin)),) if spec.origin is not None and spec.has_location else None
        if len(locations) != 1:
            return None
        root = Path(locations[0])
        entries = [entry(root)]
        for folder, dirs, files in os.walk(root, onerror=fail, followlinks=False):
            entries += [entry(Path(folder) / name) for name in sorted(dirs + files)]
        return tuple(entries)
    except (OSError, ImportError, ValueError):
        return None


@dataclass(frozen=True)
class AgentInfo:
    """A registered agent.

    Attributes:
        package: The entry point it came from (``"name = module:Class"``); ``None`` for a built-in.
    """

    agent_id: str
    code_hash: str
    description: str
    cls: type[Agent]
    package: str | None = None

    @property
    def input_schema(self) -> Mapping[str, Any]:
        """JSON schema of the agent's input (``{}``: any JSON value)."""
        return self.cls.input_schema


class AgentRegistry:
    """Registered agents, filtered by the operator's allow list.

    Args:
        allowed: Agent ids or code hashes (``0x…``) the operator runs; ``None`` allows every
            registered agent. Agents registered with ``pinned=True`` (packaged agents whose code
            hash the operator named) are allowed whatever this says.
    """

    def __init__(self, allowed: Iterable[str] | None = None) -> None:
        self._allowed = None if allowed is None else {a.lower() for a in allowed}
        self._agents: dict[str, AgentInfo] = {}
        self._pinned: set[str] = set()
        # a packaged agent's stat signature when its files last hashed to its registered code hash
        self._unchanged: dict[str, tuple[type[Agent], Signature]] = {}
        self._lock = threading.Lock()  # nodes check from worker threads and the event loop

    def register(self, cls: type[Agent], *, package: str | None = None, pinned: bool = False) -> AgentInfo:
        """Register an agent class (its code hash is computed now, by the base class's rule:
        `code_hash_of`, never the class's own ``code_hash``, which a package could override to
        pose as another agent's code).

        Args:
            package: The entry point it came from, for listings and logs.
            pinned: The operator allowed exactly this id and code hash (a packaged agent).

        Raises:
            ValueError: Another class already has this id.
        """
        existing = self._agents.get(cls.agent_id)
        if existing is not None and existing.cls is not cls:
            raise ValueError(f"agent id {cls.agent_id!r} is already registered")
        info = AgentInfo(cls.agent_id, code_hash_of(cls), cls.description, cls, package)
        self._agents[cls.agent_id] = info
        if pinned:
            self._pinned.add(cls.agent_id)
        return info

    def unregister(self, agent_id: str) -> None:
        """Forget the agent ``agent_id`` (the loader's, for a package that changed as it loaded)."""
        self._agents.pop(agent_id, None)
        self._pinned.discard(agent_id)
        with self._lock:
            self._unchanged.pop(agent_id, None)

    def has(self, agent_id: str) -> bool:
        """Whether an agent ``agent_id`` is registered (allowed or not)."""
        return agent_id in self._agents

    def is_allowed(self, info: AgentInfo) -> bool:
        """Whether the operator runs ``info``."""
        if info.agent_id in self._pinned:
            return True
        return self._allowed is None or bool({info.agent_id.lower(), info.code_hash} & self._allowed)

    def get(self, agent_id: str, code_hash: str | None = None, *, check_files: bool = True) -> AgentInfo:
        """The allowed agent ``agent_id``, checked against ``code_hash`` when given, and (a packaged
        agent, unless ``check_files`` is false) against its files now (`check_unchanged`): every
        task and agent call starts here. Listings (``GET /v1/node``'s agent cards, profiles) pass
        ``check_files=False``: they name the registered hash, and a changed package is refused
        when a task starts.

        Raises:
            AgentNotAllowedError: Unknown, not allowed, another code hash, or its package changed
                since it was registered.
        """
        info = self._agents.get(agent_id)
        if info is None or not self.is_allowed(info):
            raise AgentNotAllowedError(f"this node does not run agent {agent_id!r}; it runs {self.ids()}")
        if code_hash is not None and code_hash.lower() != info.code_hash:
            raise AgentNotAllowedError(
                f"agent {agent_id!r} here has code hash {info.code_hash}, not {code_hash}"
            )
        if check_files:
            self.check_unchanged(info)
        return info

    def check_unchanged(self, info: AgentInfo) -> None:
        """Refuse a packaged agent whose package's files no longer hash to its registered code hash
        (an in-place upgrade of a running node or validator, ``pip install -U``): the modules it
        imports lazily, and the data files it reads, would be the new ones under the old hash.
        Built-ins (no ``bundle_package``) are the node's own modules, imported at start.

        The files are hashed again only when the package's stat signature (`stat_signature`: every
        entry's path, inode, size, mtime and ctime) differs from the one they last hashed right
        under, or changed within `RACY_NS` of that check: a task start (and ``GET /v1/node``) no
        longer reads a package carrying megabytes of data each time.

        Raises:
            AgentNotAllowedError: The package changed, or can no longer be read as a bundle.
        """
        package = info.cls.bundle_package
        if package is None:
            return
        before = stat_signature(package)
        with self._lock:
            seen = self._unchanged.get(info.agent_id)
        if before is not None and seen == (info.cls, before):
            return
        try:
            now = code_hash_of(info.cls)
        except Exception as exc:
            now = f"none ({type(exc).__name__}: {exc})"
        if now != info.code_hash:
            with self._lock:
                self._unchanged.pop(info.agent_id, None)
            raise AgentNotAllowedError(
                f"agent {info.agent_id!r}: its package changed since it was loaded at code hash "
                f"{info.code_hash} (now {now}); restart to load the new version under a new pin"
            )
        newest = max((max(e[4], e[5]) for e in before or ()), default=0)
        if before is not None and stat_signature(package) == before and time.time_ns() - newest > RACY_NS:
            with self._lock:  # the files hashed right under a signature that held still throughout
                self._unchanged[info.agent_id] = (info.cls, before)

    def by_code_hash(self, code_hash: str) -> list[AgentInfo]:
        """The allowed agents whose code hash is ``code_hash``, by id (none: no such code here).

        A validator looks a task's agent up by the hash the user signed: the id in a trace is the
        node's word, so it must not decide whether the code is replayed. The hash is that of the
        agent's source bundle, so agents sharing a module or package share it: then only the id
        tells them apart, and it must be one of theirs.
        """
        wanted = code_hash.lower()
        found = [i for i in self._agents.values() if i.code_hash == wanted and self.is_allowed(i)]
        return sorted(found, key=lambda i: i.agent_id)

    def installed(self, agent_id: str) -> AgentInfo | None:
        """The agent registered as ``agent_id``, allowed or not (``None``: no such agent here)."""
        return self._agents.get(agent_id)

    def ids(self) -> list[str]:
        """Ids of the allowed agents."""
        return sorted(a.agent_id for a in self._agents.values() if self.is_allowed(a))

    def list(self) -> list[AgentInfo]:
        """The allowed agents."""
        return [self._agents[i] for i in self.ids()]


def default_registry(
    allowed: Iterable[str] | None = None,
    packages: Iterable[AllowedAgent] | None = (),
) -> AgentRegistry:
    """A registry with the built-in agents (chat, react, retrieval) under the allow list, and the
    packaged agents ``packages`` allows.

    Args:
        allowed: Built-in agent ids or code hashes the operator runs (``None``: all three).
        packages: Packaged agents the operator allows, each by id and code hash (the default,
            none: no package is imported); ``None`` loads every installed one at its installed
            code hash (a validator's view: the signed ``agentHash`` is checked at each replay).
    """
    registry = AgentRegistry(allowed)
    for cls in builtin_agents():
        registry.register(cls)
    wanted = None if packages is None else tuple(packages)
    if wanted is None or wanted:
        load_packages(registry, wanted)
    return registry


def builtin_agents() -> tuple[type[Agent], ...]:
    """The node's built-in agent classes."""
    from supernet.node.agents.chat import ChatAgent
    from supernet.node.agents.react import ReactAgent
    from supernet.node.agents.retrieval import RetrievalAgent

    return (ChatAgent, ReactAgent, RetrievalAgent)


def load_packages(registry: AgentRegistry, packages: Iterable[AllowedAgent] | None) -> list[PackageLoad]:
    """Register the installed packaged agents ``packages`` allows (see
    :func:`supernet.node.agents.packages.load_installed`)."""
    from supernet.node.agents.packages import load_installed

    return load_installed(registry, packages)
