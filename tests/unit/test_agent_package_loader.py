"""Agents from packages, without a model: the SDK's agent ABI, the entry-point loader and its
refusals (import errors, id collisions, changed code), the ``[agents]`` config, ``GET /v1/node``.

Packages here are written into a temporary directory and reached through hand-made entry points
(the loader's ``entry_points`` argument), so nothing is installed; the example package installed
by ``make setup`` is run on the real kernel in tests/integration/test_agent_packages.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from node_fixtures import FAKE_AGENT_HASH, FAKE_PROFILE, FakeNode
from pydantic import ValidationError
from supernet.node.agents.packages import AllowedAgent, PackageLoad, load_installed
from supernet.node.agents.registry import AgentRegistry, default_registry
from supernet.node.kernel.errors import AgentNotAllowedError
from supernet.node.service.config import NodeSettings
from supernet.sdk.agents import ENTRY_POINT_GROUP, Agent, bundle_hash, package_bundle

AGENT_SOURCE = """
from supernet.sdk.agents import Agent

from {package}.helper import suffix


class Hello(Agent):
    agent_id = "{agent_id}"
    description = "Says hello."
    input_schema = {{"type": "string"}}

    async def run(self, ctx, input):
        return "hello " + str(input) + suffix()
"""


def write_package(root: Path, package: str, agent_id: str = "hello", *, broken: bool = False) -> Path:
    """A package ``package`` under ``root``: an agent module and a helper module."""
    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "helper.py").write_text("def suffix():\n    return '!'\n")
    source = AGENT_SOURCE.format(package=package, agent_id=agent_id)
    if broken:
        source = "raise RuntimeError('this package is broken')\n" + source
    (pkg / "agent.py").write_text(textwrap.dedent(source))
    return pkg


def entry_point(name: str, package: str) -> metadata.EntryPoint:
    return metadata.EntryPoint(name=name, value=f"{package}.agent:Hello", group=ENTRY_POINT_GROUP)


@pytest.fixture()
def packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Any:
    """Factory of importable packages with names unique to this test (modules are cached)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    stem = "pkg_" + request.node.name.replace("[", "_").replace("]", "_").replace("-", "_")
    made: list[str] = []

    def make(agent_id: str = "hello", *, broken: bool = False) -> tuple[str, Path]:
        name = f"{stem}_{len(made)}"
        made.append(name)
        return name, write_package(tmp_path, name, agent_id, broken=broken)

    yield make
    for name in made:
        for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
            del sys.modules[mod]


def by_id(loads: list[PackageLoad]) -> dict[str, PackageLoad]:
    return {load.agent_id: load for load in loads}


def test_the_agent_abi_needs_no_torch_and_is_the_kernels() -> None:
    code = (
        "import sys, supernet.sdk.agents as a; "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('supernet.node')]; "
        "assert not bad, bad; print(len(a.__all__))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    import supernet.sdk.agents as abi
    from supernet.node.agents import Agent as NodeAgent
    from supernet.node.agents.context import AgentContext
    from supernet.node.kernel import errors, syscalls, tools

    assert NodeAgent is abi.Agent and AgentContext is abi.AgentContext
    assert syscalls.LLMChat is abi.LLMChat and syscalls.ChatResult is abi.ChatResult
    assert errors.KernelError is abi.KernelError and errors.ToolError is abi.ToolError
    assert tools.ToolSpec is abi.ToolSpec
    for cls in default_registry().list():  # the built-ins are written against the same ABI
        assert issubclass(cls.cls, abi.Agent) and cls.input_schema


def test_a_package_hash_covers_every_file_of_the_package(packages: Any) -> None:
    name, pkg = packages()
    registry = AgentRegistry()
    [load] = load_installed(registry, None, [entry_point("hello", name)])
    assert load.status == "loaded" and load.code_hash == bundle_hash(package_bundle(name))
    assert sorted(package_bundle(name)) == [f"{name}/__init__.py", f"{name}/agent.py", f"{name}/helper.py"]
    info = registry.get("hello", load.code_hash)
    assert info.package == f"hello = {name}.agent:Hello" and info.input_schema == {"type": "string"}
    # A helper module (not the agent's own) changes: another hash. Caches do not count.
    (pkg / "__pycache__").mkdir(exist_ok=True)
    (pkg / "__pycache__" / "x.pyc").write_bytes(b"junk")
    assert info.cls.code_hash() == load.code_hash
    (pkg / "helper.py").write_text("def suffix():\n    return '?'\n")
    assert info.cls.code_hash() != load.code_hash
    (pkg / "prompt.txt").write_text("data files count too")
    assert bundle_hash(package_bundle(name)) == info.cls.code_hash()


def test_only_allowed_ids_at_their_hash_are_loaded(packages: Any, caplog: pytest.LogCaptureFixture) -> None:
    good, _ = packages("hello")
    changed, changed_dir = packages("changed")
    never, _ = packages("never", broken=True)  # not allowed: must not even be imported
    hashes = {"hello": bundle_hash(package_bundle(good)), "changed": bundle_hash(package_bundle(changed))}
    reviewed = hashes["changed"]  # what the operator allowed; then the package changes on disk
    (changed_dir / "helper.py").write_text("import os\n\ndef suffix():\n    return os.environ['SECRET']\n")
    hashes["changed"] = bundle_hash(package_bundle(changed))
    allow = [
        AllowedAgent(id="hello", code_hash=hashes["hello"]),
        AllowedAgent(id="changed", code_hash=reviewed),
        AllowedAgent(id="absent", code_hash="0x" + "cd" * 32),
    ]
    registry = AgentRegistry(allowed=["chat"])
    eps = [entry_point("hello", good), entry_point("changed", changed), entry_point("never", never)]
    with caplog.at_level(logging.DEBUG, logger="supernet.node.agents.packages"):
        loads = by_id(load_installed(registry, allow, eps))
    assert {k: v.status for k, v in loads.items()} == {
        "hello": "loaded",
        "changed": "hash_mismatch",
        "never": "not_allowed",
    }
    assert never not in sys.modules and changed not in sys.modules  # changed code never ran
    assert loads["changed"].code_hash == hashes["changed"]
    assert registry.ids() == ["hello"]  # pinned: allowed whatever [engine] agents says
    with pytest.raises(AgentNotAllowedError):
        registry.get("changed")
    with pytest.raises(AgentNotAllowedError, match="code hash"):
        registry.get("hello", "0x" + "ab" * 32)
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("'changed'" in m and hashes["changed"] in m and reviewed in m for m in errors)
    assert any("'absent'" in m and "no installed package" in m for m in errors)


def test_a_package_that_raises_at_import_is_skipped_and_logged(
    packages: Any, caplog: pytest.LogCaptureFixture
) -> None:
    broken, _ = packages("broken", broken=True)
    good, _ = packages("hello")
    registry = default_registry()  # the built-ins
    with caplog.at_level(logging.ERROR, logger="supernet.node.agents.packages"):
        loads = by_id(
            load_installed(registry, None, [entry_point("broken", broken), entry_point("hello", good)])
        )
    assert loads["broken"].status == "import_error" and "this package is broken" in loads["broken"].detail
    assert loads["hello"].status == "loaded"
    assert registry.ids() == ["chat", "hello", "react", "retrieval"]
    assert any("'broken'" in r.getMessage() and "import_error" in r.getMessage() for r in caplog.records)


def test_a_package_cannot_take_a_built_in_or_another_packages_id(packages: Any) -> None:
    chat_pkg, _ = packages("chat")
    first, _ = packages("twin")
    second, _ = packages("twin")
    mismatched, _ = packages("inner-id")
    registry = default_registry()
    chat_hash = registry.get("chat").code_hash
    eps = [
        entry_point("chat", chat_pkg),
        entry_point("twin", first),
        entry_point("twin", second),
        entry_point("outer-id", mismatched),
        entry_point("Chat", chat_pkg),
    ]
    loads = load_installed(registry, None, eps)
    assert [(x.agent_id, x.status) for x in loads] == [
        ("chat", "collision"),
        ("twin", "collision"),  # two packages claim one id: neither runs
        ("twin", "collision"),
        ("outer-id", "invalid"),
        ("Chat", "invalid"),  # not an agent id: never shadows "chat" in a case-blind allow list
    ]
    assert registry.get("chat").code_hash == chat_hash and registry.get("chat").package is None
    assert chat_pkg not in sys.modules  # refused before its code ran
    assert registry.ids() == ["chat", "react", "retrieval"] and first not in sys.modules


def test_default_registry_loads_nothing_unless_asked(packages: Any) -> None:
    assert default_registry().ids() == ["chat", "react", "retrieval"]
    assert default_registry(allowed=["chat"], packages=[]).ids() == ["chat"]


def test_the_example_package_is_installed_and_pinned_by_its_hash() -> None:
    from supernet.node.agents.packages import installed_entry_points

    eps = [ep for ep in installed_entry_points() if ep.name == "calc-explain"]
    assert eps, "examples/agents/supernet-example-agent is not installed (make setup installs it)"
    cls = eps[0].load()
    assert issubclass(cls, Agent) and cls.bundle_package == "supernet_example_agent"
    pin = AllowedAgent(id="calc-explain", code_hash=cls.code_hash())
    registry = default_registry(allowed=["chat"], packages=[pin])
    assert registry.ids() == ["calc-explain", "chat"]
    assert registry.get("calc-explain", pin.code_hash).description.startswith("Evaluates")
    stale = AllowedAgent(id="calc-explain", code_hash="0x" + "00" * 32)
    assert default_registry(allowed=["chat"], packages=[stale]).ids() == ["chat"]


def test_agents_config_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h = "0x" + "Ab" * 32
    toml = tmp_path / "node.toml"
    toml.write_text(f'[agents]\nallow = [{{ id = "calc-explain", code_hash = "{h}" }}]\n')
    settings = NodeSettings.load(toml, data_dir=tmp_path)
    assert settings.agents.allow == [AllowedAgent(id="calc-explain", code_hash=h.lower())]
    assert NodeSettings.load(None, data_dir=tmp_path).agents.allow == []
    monkeypatch.setenv("SUPERNET_AGENTS__ALLOW", f'[{{"id": "x", "code_hash": "{h}"}}]')
    assert NodeSettings.load(None, data_dir=tmp_path).agents.allow[0].id == "x"
    for bad in ({"id": "x", "code_hash": "0x12"}, {"id": "Bad Id", "code_hash": h}, {"id": "x"}):
        with pytest.raises(ValidationError):
            AllowedAgent.model_validate(bad)


async def test_node_info_lists_agents_with_description_and_schema(fake_node: FakeNode) -> None:
    info = (await fake_node.http.get("/v1/node")).json()
    assert info["agents"] == {"chat": FAKE_AGENT_HASH}
    code_hash = FAKE_PROFILE.agent.code_hash
    assert info["agentCards"] == [
        {"id": "chat", "codeHash": code_hash, "agentHash": FAKE_AGENT_HASH, "profile": FAKE_PROFILE.to_json(),
         "description": "", "inputSchema": {}, "package": None}
    ]  # fmt: skip
    schema = {"type": "string"}
    cards = [
        {"id": "chat", "codeHash": code_hash, "agentHash": FAKE_AGENT_HASH, "profile": FAKE_PROFILE.to_json(),
         "description": "Chat.", "inputSchema": schema},
        {"id": "ghost", "codeHash": "0x" + "11" * 32, "agentHash": "0x" + "11" * 32, "profile": None,
         "description": "not run here", "inputSchema": {}},
    ]  # fmt: skip
    fake_node.executor.agent_cards = lambda: cards  # type: ignore[method-assign]
    info = (await fake_node.http.get("/v1/node")).json()
    assert info["agentCards"] == [{**cards[0], "package": None}]
