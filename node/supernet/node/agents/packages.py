"""Agents from installed packages: the ``supernet.agents`` entry-point group.

A package declares each agent as ``<agent id> = "<module>:<Class>"`` in the group. The node
imports only the entry points the operator allows (``[agents] allow = [{id, code_hash}]``), and
registers one only if:

- its id is not a built-in's or another registered agent's (checked before anything is imported);
- its code hash (every file of its top-level package, see :mod:`supernet.sdk.agents.base`) is the
  one the operator allowed, checked on the files *before* the package is imported, so code that
  changed since it was allowed never runs (and again after the import); the log names both hashes;
- it imports (an entry point that raises is logged and skipped: the node still starts);
- it is an :class:`~supernet.sdk.agents.Agent` subclass whose ``agent_id`` is the entry point's
  name, and whose ``bundle_package`` (if set) is the entry point's top-level package.

>>> AllowedAgent(id="example", code_hash="0x" + "ab" * 32).code_hash[:4]
'0xab'
"""

from __future__ import annotations

import logging
import re
import sys
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


LoadStatus = Literal["loaded", "not_allowed", "import_error", "invalid", "collision", "hash_mismatch"]


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
    registry: AgentRegistry, ep: metadata.EntryPoint, pins: dict[str, str] | None, ambiguous: set[str]
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
    if pins is not None:  # checked before the package's code runs: changed code is never imported
        try:
            before = bundle_hash(package_bundle(top))
        except Exception as exc:
            return outcome("invalid", f"its package {top!r} cannot be read: {type(exc).__name__}: {exc}")
        if before != pins[ep.name]:
            return _mismatch(outcome, before, pins[ep.name])
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
    if cls.bundle_package is None:
        cls.bundle_package = top  # the hash covers the whole top-level package
    elif cls.bundle_package != top:
        return outcome("invalid", f"its bundle_package {cls.bundle_package!r} is not its package {top!r}")
    try:
        code_hash = cls.code_hash()
    except Exception as exc:
        return outcome("invalid", f"its source bundle cannot be read: {type(exc).__name__}: {exc}")
    if pins is not None and pins[ep.name] != code_hash:  # changed while it was being imported
        return _mismatch(outcome, code_hash, pins[ep.name])
    try:
        registry.register(cls, package=f"{ep.name} = {ep.value}", pinned=pins is not None)
    except ValueError as exc:
        return outcome("collision", str(exc), code_hash)
    return outcome("loaded", code_hash=code_hash)


def _private_bytecode() -> None:
    """Read and write compiled modules in a directory of this user's only (``sys.pycache_prefix``),
    never in a package's ``__pycache__``: a ``.pyc`` there runs in place of its source (a crafted
    one passes Python's own checks), and the code hash covers sources only. Python then compiles a
    package from the very sources the hash covers."""
    if sys.pycache_prefix is None:
        prefix = Path.home() / ".cache" / "supernet" / "pycache"
        prefix.mkdir(parents=True, exist_ok=True, mode=0o700)
        sys.pycache_prefix = str(prefix)


def _mismatch(outcome: Callable[..., PackageLoad], installed: str, allowed: str) -> PackageLoad:
    detail = (
        f"installed code hash {installed} is not the allowed {allowed} "
        "(the package changed since it was allowed; update [agents] allow only after reviewing it)"
    )
    return outcome("hash_mismatch", detail, installed)


def describe_installed() -> list[PackageLoad]:
    """Every installed packaged agent with its code hash, as ``[agents] allow`` would need it
    (imports each one; nothing is registered anywhere)."""
    from supernet.node.agents.registry import AgentRegistry

    return load_installed(AgentRegistry(), None)


def main() -> None:
    """``python -m supernet.node.agents.packages``: the installed agents, ready for ``[agents] allow``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    loads = describe_installed()
    if not loads:
        print(f"no installed package declares agents (entry-point group {ENTRY_POINT_GROUP!r})")
    for load in loads:
        if load.status == "loaded":
            print(f'{{ id = "{load.agent_id}", code_hash = "{load.code_hash}" }}  # {load.entry_point}')
        else:
            print(f"# {load.agent_id}: {load.status}: {load.detail}")


if __name__ == "__main__":
    main()
