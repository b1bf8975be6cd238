"""The base class of agents, and how an agent is identified: id and code hash.

The code hash is what a user signs (the task's ``agentHash``) and what a validator checks before
it re-runs the agent: sha256 (:func:`bundle_hash`) of the agent's *source bundle*:

- an agent that sets ``bundle_package`` (every agent installed from a package: the node's loader
  sets it to the entry point's top-level package when the class does not): every file under that
  package's directory, keyed ``<package>/<relative path>`` (the ``.pyc`` files of its
  ``__pycache__`` directories left out), so any change to any module or data file of the package
  changes the hash; a package holding what the hash could not cover is refused (`package_bundle`);
- otherwise (the node's built-in agents): the source of the class's own module and of each module
  named in ``bundle_modules``, keyed by module name.

The hash is the base class's rule, whatever a subclass says: the node's registry computes it with
`code_hash_of` (a class overriding ``code_hash`` or ``source_bundle`` is refused by the loader).

>>> class Echo(Agent):
...     agent_id = "echo"
...     async def run(self, ctx, input):
...         return str(input)
>>> Echo.code_hash().startswith("0x") and len(Echo.code_hash()) == 66
True
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import stat
import sys
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from supernet.sdk.agents.context import AgentContext

__all__ = ["Agent", "bundle_hash", "code_hash_of", "package_bundle"]

_COMPILED_SUFFIXES = (".pyc", ".pyo")


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


def package_bundle(package: str) -> dict[str, bytes]:
    """Every file of the installed top-level package (or single module) ``package``, by
    ``<package>/<path>``; found without importing it, so a bundle can be checked before its code runs.

    The ``.pyc`` files in its ``__pycache__`` directories are left out (the node's loader never
    reads them: `supernet.node.agents.packages` points ``sys.pycache_prefix`` elsewhere); anything
    else there, a symbolic link or a file that is not a regular one anywhere in the package would
    be imported (or read) past the hash, so such a package has no bundle.

    Raises:
        ImportError: No such package, it has no one directory (a namespace package), or it holds a
            compiled module outside ``__pycache__`` (``x.pyc``: Python imports it without a
            source, so code the hash does not cover would run under it), anything but ``.pyc``
            files in a ``__pycache__`` directory (``import pkg.__pycache__.mod`` runs a source
            there), a symbolic link (Python imports through one; its target is not the package's)
            or a file that is not a regular one (a device, a pipe, a socket).
    """
    if "." in package:
        raise ImportError(f"{package!r} is not a top-level package")
    spec = importlib.util.find_spec(package)
    if spec is None:
        raise ImportError(f"no installed package {package!r}")
    locations = list(spec.submodule_search_locations or [])
    if not locations:  # a single module
        if spec.origin is None or not spec.has_location:
            raise ImportError(f"{package!r} has no source file")
        origin = Path(spec.origin)
        if not stat.S_ISREG(os.stat(origin).st_mode):
            raise ImportError(f"{package!r} is not a regular file: {origin}")
        return {f"{package}/{origin.name}": origin.read_bytes()}
    if len(locations) != 1 or spec.origin is None:  # a namespace package spans directories
        raise ImportError(f"{package!r} is a namespace package: it has no one source bundle")
    root = Path(locations[0])
    bundle: dict[str, bytes] = {}
    for folder, dirs, files in os.walk(root, onerror=_unreadable, followlinks=False):
        base = Path(folder)
        in_cache = base.name == "__pycache__"
        for name in sorted(dirs + files):
            path = base / name
            rel = path.relative_to(root).as_posix()
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise ImportError(f"{package!r} holds a symbolic link: {rel} (Python imports through it)")
            if stat.S_ISDIR(mode):
                if in_cache:
                    raise ImportError(f"{package!r} holds a directory in a __pycache__ directory: {rel}")
                continue
            if not stat.S_ISREG(mode):
                raise ImportError(f"{package!r} holds a file that is not a regular one: {rel}")
            if in_cache:
                if path.suffix != ".pyc":  # compiled modules: never read (a private prefix)
                    raise ImportError(f"{package!r} holds a file other than bytecode in __pycache__: {rel}")
                continue
            if path.suffix in _COMPILED_SUFFIXES:
                raise ImportError(f"{package!r} holds a compiled module without its source: {rel}")
            bundle[f"{package}/{rel}"] = path.read_bytes()
    return bundle


def _unreadable(exc: OSError) -> None:
    raise ImportError(f"a directory of the package cannot be read: {exc}") from exc


def _source_bundle(cls: type[Agent]) -> dict[str, bytes]:
    """`Agent.source_bundle` as the base class defines it (what `code_hash_of` hashes)."""
    if cls.bundle_package is not None:
        return package_bundle(cls.bundle_package)
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


def code_hash_of(cls: type[Agent]) -> str:
    """The code hash of the agent class ``cls`` by the base class's rule, whatever ``cls``
    overrides: what the node's registry records and a validator looks code up by."""
    return bundle_hash(_source_bundle(cls))


class Agent(ABC):
    """An agent: ``run`` gets the task's context and input, returns the answer text.

    Subclasses set ``agent_id`` (the name users ask for), ``description`` (one line) and
    ``input_schema`` (the JSON schema of the input; the node lists both in ``GET /v1/node``).
    A packaged agent sets ``bundle_package`` to its top-level package (the node's loader does it
    otherwise); a built-in one may list extra modules its behaviour depends on in
    ``bundle_modules`` so those count in the code hash. An agent that calls other agents
    (``ctx.agents.call``) names them in ``calls_agents`` (``"*"``: any agent the node runs): the
    node's profile of the agent lists as callable only those, and the ones they may call in turn,
    so a user signs (and the validators must hold) the code of the agents a task can reach, not of
    every agent the node runs; a call of an agent its task's profile does not list is refused. A
    fresh instance runs each task: keep no state between tasks on the instance.
    """

    agent_id: ClassVar[str]
    description: ClassVar[str] = ""
    input_schema: ClassVar[Mapping[str, Any]] = {}
    bundle_modules: ClassVar[tuple[str, ...]] = ()
    bundle_package: ClassVar[str | None] = None
    calls_agents: ClassVar[tuple[str, ...] | Literal["*"]] = ()

    @abstractmethod
    async def run(self, ctx: AgentContext, input: Any) -> str:
        """Do the task; every LLM, tool, memory and storage access goes through ``ctx``."""

    @classmethod
    def source_bundle(cls) -> dict[str, bytes]:
        """The agent's source files: its package's (``bundle_package``), or its own module's and
        ``bundle_modules``' by module name."""
        return _source_bundle(cls)

    @classmethod
    def code_hash(cls) -> str:
        """sha256 of the agent's source bundle, ``0x`` hex (the signed task's ``agentHash``)."""
        return code_hash_of(cls)
