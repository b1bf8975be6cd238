"""Agents from installed packages: the ``supernet.agents`` entry-point group.

A package declares each agent as ``<agent id> = "<module>:<Class>"`` in the group. The node
imports only the entry points the operator allows (``[agents] allow = [{id, code_hash}]``), and
registers one only if:

- its id is not a built-in's or another registered agent's (checked before anything is imported);
- its distribution (when installed with a ``RECORD``) installs nothing importable outside the
  entry point's top-level package: no second top-level module or package, no ``.pth`` file that
  runs code (a ``.pth`` of paths only, as an editable install writes, is allowed), so the package's
  files are every file of it Python imports (`distribution_problem`);
- its code hash (every file of its top-level package, see :mod:`supernet.sdk.agents.base`; a
  package holding links, special files or sources under ``__pycache__`` has none) is the one the
  operator allowed, checked on the files *before* the package is imported, so code that changed
  since it was allowed never runs (and again after the import); the log names both hashes;
- it imports (an entry point that raises is logged and skipped: the node still starts), with
  bytecode read from and written to a fresh private directory (`_private_bytecode`);
- it is an :class:`~supernet.sdk.agents.Agent` subclass whose ``agent_id`` is the entry point's
  name, whose ``bundle_package`` (if set) is the entry point's top-level package, and which does
  not override ``code_hash`` or ``source_bundle`` (the registry computes the hash itself).

A registered packaged agent is re-hashed whenever a task (or a replay) starts it
(`AgentRegistry.check_unchanged`): an in-place upgrade is refused until the node restarts.

>>> AllowedAgent(id="example", code_hash="0x" + "ab" * 32).code_hash[:4]
'0xab'
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from supernet.node.agents.base import Agent
from supernet.sdk.agents import ENTRY_POINT_GROUP, bundle_hash, package_bundle

if TYPE_CHECKING:
    from supernet.node.agents.registry import AgentRegistry

log = logging.getLogger(__name__)

_HASH = re.compile(r"^0x[0-9a-f]{64}$")
_AGENT_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")  # the API's agent ids (``TaskCreate.agent``)


class AllowedAgent(BaseModel):
    """One packaged agent the operator runs: its id and the code hash it must have."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=_AGENT_ID.pattern, description="The entry point's name (the agent id).")
    code_hash: str = Field(description="0x + 64 hex: the agent's code hash (`supernet node agents`).")

    @field_validator("code_hash")
    @classmethod
    def _hash(cls, value: str) -> str:
        value = value.lower()
        if not _HASH.match(value):
            raise ValueError("code_hash is 0x followed by 64 hex digits")
        return value


LoadStatus = Literal[
    "loaded", "listed", "not_allowed", "import_error", "invalid", "collision", "hash_mismatch"
]
"""``listed``: read from its files by `describe_installed`, not imported."""


@dataclass(frozen=True)
class PackageLoad:
    """What became of one installed entry point."""

    agent_id: str
    entry_point: str
    status: LoadStatus
    detail: str = ""
    code_hash: str | None = None


def installed_entry_points(group: str = ENTRY_POINT_GROUP) -> list[metadata.EntryPoint]:
    """The installed entry points of ``group``, by name."""
    return sorted(metadata.entry_points(group=group), key=lambda ep: (ep.name, ep.value))


def load_installed(
    registry: AgentRegistry,
    allow: Iterable[AllowedAgent] | None,
    entry_points: Sequence[metadata.EntryPoint] | None = None,
) -> list[PackageLoad]:
    """Register the installed packaged agents ``allow`` names (``None``: every installed one, at
    its installed code hash, not pinned: the registry's own allow list still applies).

    Never raises for a bad package: each outcome is logged and returned.
    """
    pins = None if allow is None else {a.id: a.code_hash for a in allow}
    eps = installed_entry_points() if entry_points is None else list(entry_points)
    eps = list({(ep.name, ep.value): ep for ep in eps}.values())  # one distribution seen twice on the path
    outcomes: list[PackageLoad] = []
    names = [ep.name for ep in eps]
    ambiguous = {n for n in names if names.count(n) > 1}  # two packages claim it: neither is run
    for ep in eps:
        outcome = _load_one(registry, ep, pins, ambiguous)
        outcomes.append(outcome)
        if outcome.status == "loaded":
            log.info("agent %r loaded from %s (code hash %s)", ep.name, ep.value, outcome.code_hash)
        elif outcome.status == "not_allowed":
            log.debug("agent %r installed (%s) but not allowed in [agents] allow", ep.name, ep.value)
        else:
            log.error("agent %r from %s refused (%s): %s", ep.name, ep.value, outcome.status, outcome.detail)
    for missing in sorted(set(pins or ()) - {ep.name for ep in eps}):
        log.error("agent %r is allowed in [agents] allow but no installed package provides it", missing)
    return outcomes


def _load_one(
    registry: AgentRegistry,
    ep: metadata.EntryPoint,
    pins: dict[str, str] | None,
    ambiguous: set[str],
    imports: bool = True,
) -> PackageLoad:
    def outcome(status: LoadStatus, detail: str = "", code_hash: str | None = None) -> PackageLoad:
        return PackageLoad(ep.name, f"{ep.name} = {ep.value}", status, detail, code_hash)

    if pins is not None and ep.name not in pins:
        return outcome("not_allowed")  # never imported: the operator did not ask for it
    from supernet.node.agents.registry import BUILTIN_IDS

    if not _AGENT_ID.match(ep.name):
        return outcome("invalid", f"{ep.name!r} is not an agent id (lowercase letters, digits, _ . -)")
    if ep.name in BUILTIN_IDS or registry.has(ep.name):
        return outcome("collision", f"agent id {ep.name!r} is already taken (a built-in or registered agent)")
    if ep.name in ambiguous:
        return outcome("collision", f"more than one installed package declares agent id {ep.name!r}")
    top = ep.module.split(".")[0]
    if (problem := distribution_problem(ep, top)) is not None:
        return outcome("invalid", problem)
    try:  # from the files, before the package's code runs: changed code is never imported
        before = bundle_hash(package_bundle(top))
    except Exception as exc:
        return outcome("invalid", f"its package {top!r} cannot be read: {type(exc).__name__}: {exc}")
    if pins is not None and before != pins[ep.name]:
        return _mismatch(outcome, before, pins[ep.name])
    if not imports:
        return outcome("listed", code_hash=before)
    _private_bytecode()
    try:
        cls = ep.load()
    except Exception as exc:  # an operator's package must not stop the node
        return outcome("import_error", f"{type(exc).__name__}: {exc}")
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        return outcome("invalid", f"{ep.value} is not a supernet.sdk.agents.Agent subclass")
    named = getattr(cls, "agent_id", None)
    if named != ep.name:
        return outcome("invalid", f"its agent_id {named!r} is not the entry point's name")
    if overridden := _overrides_hash(cls):
        return outcome("invalid", f"{overridden}: the registry computes an agent's code hash itself")
    if cls.bundle_package is None:
        cls.bundle_package = top  # the hash covers the whole top-level package
    elif cls.bundle_package != top:
        return outcome("invalid", f"its bundle_package {cls.bundle_package!r} is not its package {top!r}")
    try:
        info = registry.register(cls, package=f"{ep.name} = {ep.value}", pinned=pins is not None)
    except ValueError as exc:
        return outcome("collision", str(exc))
    except Exception as exc:
        return outcome("invalid", f"its source bundle cannot be read: {type(exc).__name__}: {exc}")
    if info.code_hash != before:  # changed while it was being imported: never served
        registry.unregister(ep.name)
        return _mismatch(outcome, info.code_hash, before if pins is None else pins[ep.name])
    return outcome("loaded", code_hash=info.code_hash)


def _overrides_hash(cls: type[Agent]) -> str | None:
    """Which class in ``cls``'s ancestry overrides ``code_hash`` or ``source_bundle`` (a package
    choosing its own registered hash, e.g. a built-in's), if any."""
    for klass in cls.__mro__:
        if klass is Agent:
            return None
        for name in ("code_hash", "source_bundle"):
            if name in vars(klass):
                return f"{klass.__qualname__} overrides {name}"
    return None


def distribution_problem(ep: metadata.EntryPoint, top: str) -> str | None:
    """Why the distribution installing ``ep`` cannot be served under the code hash of its top-level
    package ``top`` (``None``: it can, or it has no ``RECORD`` to tell).

    The code hash covers the files of ``top``, so every file the distribution's ``RECORD`` installs
    in the site directory must be one of them: a second top-level module or package (say
    ``<top>_prompts.py``, imported by the agent) would change freely under the pin, and a ``.pth``
    file with an ``import`` line runs its code at every interpreter start, before any check. Left
    aside: the distribution's own metadata (``*.dist-info``), files installed outside the site
    directory (``../``: scripts, data files; never imported from it), ``__pycache__`` bytecode (never
    read: `_private_bytecode`) and ``.pth`` files of paths only (how an editable install puts its
    source directory on ``sys.path``; the package is then hashed there)."""
    dist = ep.dist
    files = dist.files if dist is not None else None
    if dist is None or files is None:
        return None
    for file in files:
        parts = file.parts
        if not parts or parts[0] == ".." or parts[0].endswith(".dist-info") or "__pycache__" in parts:
            continue
        if len(parts) == 1 and parts[0].endswith(".pth"):
            try:
                text = Path(str(dist.locate_file(file))).read_text(errors="replace")
            except OSError as exc:
                return f"its distribution installs {file}, which cannot be read: {exc}"
            if any(line.startswith(("import ", "import\t")) for line in text.splitlines()):
                return f"its distribution installs {file}, a .pth file that runs code at interpreter start"
            continue
        name = parts[0]
        if len(parts) == 1:  # a top-level module: ``top.py``, or an extension ``top.cpython-311-….so``
            name = name.split(".")[0]
        if name != top:
            return (
                f"its distribution installs {file} outside its package {top!r} (a second top-level "
                "module or package, which its code hash would not cover)"
            )
    return None


def _private_bytecode() -> None:
    """Read and write compiled modules in a fresh directory of this user's only
    (``sys.pycache_prefix``), one per packaged agent loaded, removed when the process ends; never in
    a package's ``__pycache__``: a ``.pyc`` there runs in place of its source (a crafted one passes
    Python's own checks), and the code hash covers sources only. A cache kept across loads (or
    processes) holds timestamp-checked bytecode, which a same-size edit keeping the mtime (``rsync
    -a``, ``tar``, ``COPY``) would run under the new source's hash; a fresh one holds only what was
    compiled since the hash was checked, from those very sources (later edits are refused by
    `AgentRegistry.check_unchanged`)."""
    parent = Path.home() / ".cache" / "supernet" / "pycache"
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    prefix = tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=parent)  # mode 0700
    atexit.register(shutil.rmtree, prefix, ignore_errors=True)
    sys.pycache_prefix = prefix


def _mismatch(outcome: Callable[..., PackageLoad], installed: str, allowed: str) -> PackageLoad:
    detail = (
        f"installed code hash {installed} is not the allowed {allowed} "
        "(the package changed since it was allowed; update [agents] allow only after reviewing it)"
    )
    return outcome("hash_mismatch", detail, installed)


def describe_installed(entry_points: Sequence[metadata.EntryPoint] | None = None) -> list[PackageLoad]:
    """Every installed packaged agent with its code hash, as ``[agents] allow`` would need it
    (status ``listed``), computed from its files as the pinned load checks them *before* importing:
    nothing is imported (a package nobody reviewed runs no code in the operator's shell) and
    nothing is registered. What needs the import (the class's ``agent_id``) is checked by the
    pinned load."""
    from supernet.node.agents.registry import AgentRegistry

    eps = installed_entry_points() if entry_points is None else list(entry_points)
    eps = list({(ep.name, ep.value): ep for ep in eps}.values())
    names = [ep.name for ep in eps]
    ambiguous = {n for n in names if names.count(n) > 1}
    return [_load_one(AgentRegistry(), ep, None, ambiguous, imports=False) for ep in eps]


def main() -> None:
    """``python -m supernet.node.agents.packages``: the installed agents, ready for ``[agents] allow``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    loads = describe_installed()
    if not loads:
        print(f"no installed package declares agents (entry-point group {ENTRY_POINT_GROUP!r})")
    for load in loads:
        if load.status in ("loaded", "listed"):
            print(f'{{ id = "{load.agent_id}", code_hash = "{load.code_hash}" }}  # {load.entry_point}')
        else:
            print(f"# {load.agent_id}: {load.status}: {load.detail}")


if __name__ == "__main__":
    main()
